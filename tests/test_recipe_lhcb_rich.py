"""End to end: the LHCb RICH recipe on a tiny preset, its seed-001 bar, report and export."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

TINY = ["--quick", "--n-train", "4000", "--n-test", "1000", "--n-val", "1000", "--n-bar", "6000",
        "--library-size", "4000", "--epochs", "1", "--steps-per-epoch", "4", "--batch-size",
        "128", "--no-jit"]


def _run(out, *options):
    completed = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "lhcb_rich_gan.py"), *TINY, *options,
         "--output-dir", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def rich_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("rich_tiny"))


@pytest.fixture(scope="module")
def rich_standardized_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("rich_tiny_standardized"), "--model", "standardized",
                "--no-plots")


def test_bar_in_metrics_and_report(rich_run):
    metrics = json.loads((rich_run / "metrics.json").read_text())
    rows = {m["name"]: m for m in metrics["metrics"]}
    assert rows["efficiency_ratio_max_dev"]["bar"] == 0.03
    assert {"W1/sigma:RichDLLk", "KL:RichDLLbt", "classifier_auc"} <= set(rows)
    bar = metrics["efficiency_bar"]
    # 5 species x 27 (P, eta, nSPDHits) bins x 5 DLLs x 5 cuts
    assert bar["n_ratios"] == 5 * 27 * 5 * 5 and bar["quantiles"] == [10, 25, 50, 75, 90]
    assert bar["max_error"] == pytest.approx(0.03 / 3.29)
    assert bar["excluded_bins"] and {"group", "bin", "n_ref", "n_gen", "n_train",
                                     "reason"} <= set(bar["excluded_bins"][0])
    # tested where a perfect model of the training tracks resolves 3 %: fewer ratios than the
    # bar's tracks alone would test, counted beside it
    assert 0 <= bar["n_tested"] <= bar["strict"]["n_tested"] <= bar["n_ratios"]
    assert bar["floor"]["n_tested"] == bar["library"]["n_tested"] == bar["n_tested"]
    assert bar["floor"]["n_failed"] == 0                # a second simulation passes its tests
    assert bar["library"]["n_ratios"] == bar["n_ratios"]
    report = (rich_run / "report.md").read_text()
    assert "Efficiency ratios (seed 001's metric)" in report and "Bins with untested" in report
    assert "bar's tracks alone: failed, max" in report
    assert "library (k=10)" in report
    maps = sorted((rich_run / "plots" / "efficiency").glob("efficiency_*.png"))
    assert len(maps) == 25                              # one per species and DLL
    assert [r["name"] for r in metrics["comparison"]["rows"]] == ["GAN", "library (k=10)"]


@pytest.mark.parametrize("model", ["quantile", "standardized"])
def test_export_serves_dlls_with_exact_threshold_ties(model, request):
    import tensorflow as tf

    run = request.getfixturevalue("rich_run" if model == "quantile" else "rich_standardized_run")
    assert json.loads((run / "run.json").read_text())["model"] == model
    assert (run / ("chain.json" if model == "standardized" else "model.keras")).is_file()
    version = run / "saved_models" / "lhcb_rich_gan" / "1"
    model = tf.saved_model.load(str(version))
    conditions = np.array([[5.0, 3.0, 200.0, 3.0], [12.0, 3.0, 200.0, 4.0],
                           [80.0, 4.0, 500.0, 2.0]] * 10, np.float32)
    serve = model.signatures["serving_default"]
    a = serve(conditions=tf.constant(conditions), seed=tf.constant(7, tf.int64))["samples"]
    b = serve(conditions=tf.constant(conditions), seed=tf.constant(7, tf.int64))["samples"]
    a, b = a.numpy(), b.numpy()
    assert a.shape == (30, 5) and np.isfinite(a).all() and (a == b).all()
    below_kaon = conditions[:, 0] < 9.3
    below_proton = conditions[:, 0] < 17.7
    assert (a[below_kaon, 2] == a[below_kaon, 4]).all()     # RichDLLk == RichDLLbt
    assert (a[below_proton, 3] == a[below_proton, 4]).all()  # RichDLLp == RichDLLbt
    assert (a[~below_kaon, 2] != a[~below_kaon, 4]).any()


def test_the_exported_sampler_is_quantile_mapped_and_the_generator_alone_kept(rich_run):
    import keras

    import ddsim_gan.models  # noqa: F401  (registers the layers)

    mapped = keras.saving.load_model(rich_run / "generator.keras", compile=False)
    alone = keras.saving.load_model(rich_run / "generator_alone.keras", compile=False)
    from model_families import recipe_module

    from ddsim_gan import detectors
    from ddsim_gan.models.grid_quantiles import GridQuantileHead

    rich = recipe_module("lhcb_rich_gan")
    quantile_map = mapped.get_layer("quantile_map")
    assert quantile_map.n_features == 5
    assert quantile_map.node_maps.kernel_width == list(rich.QUANTILE_MAP_WIDTH)
    map_momentum = quantile_map.node_maps.grid[0][1]
    np.testing.assert_allclose(map_momentum,
                               rich.quantile_map_grid(detectors.get("lhcb_rich"))[0][1])
    head = next(layer for layer in mapped.layers if isinstance(layer, GridQuantileHead))
    assert len(map_momentum) > len(head.grid[0][1])            # finer in P than the head's
    assert "quantile_map" not in [layer.name for layer in alone.layers]
    conditions = np.array([[20.0, 3.0, 200.0, k] for k in range(5)] * 200, np.float32)
    noise = np.random.default_rng(0).standard_normal((1000, 16)).astype(np.float32)
    a, b = (np.asarray(s.predict([conditions, noise], verbose=0)) for s in (mapped, alone))
    assert np.isfinite(a).all() and not np.array_equal(a, b)
    metrics = json.loads((rich_run / "metrics.json").read_text())
    bar = metrics["efficiency_bar"]
    assert bar["generator_alone"]["n_ratios"] == bar["n_ratios"]
    assert json.loads((rich_run / "run.json").read_text())["quantile_map"] is True
    assert "| GAN without the quantile map |" in (rich_run / "report.md").read_text()


def test_each_species_has_its_own_dll_table(rich_run):
    """The quantile model's head maps a raw number through the species' own inverse CDF: raw 0
    is each species' median DLLe in the training tracks, so an electron's is far above a
    pion's from the first step on."""
    import keras

    import ddsim_gan.models.heads  # noqa: F401  (registers the head)

    sampler = keras.saving.load_model(rich_run / "generator_alone.keras", compile=False)
    head = sampler.get_layer("threshold_ties")
    assert type(head).__name__ == "GridRingTiesHead"       # the defaults: --tables grid
    assert (head.category_index, head.n_categories) == (3, 5)
    # 4 000 tracks fill no node of the full grid: every node holds its species' table
    conditions = np.array([[20.0, 3.0, 200.0, k] for k in range(5)], np.float32)
    medians = np.asarray(head([np.zeros((5, 5), np.float32), conditions]))[:, 0]
    electron, muon, pion = medians[:3]
    assert electron > pion + 2.0 and len(set(np.round(medians, 3))) >= 4


def test_bad_options_are_refused(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "lhcb_rich_gan.py"), "--quick", "--n-bar", "0",
         "--output-dir", str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert completed.returncode != 0 and "--n-bar = 0" in completed.stderr
    assert "Traceback" not in completed.stderr
