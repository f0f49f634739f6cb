"""End to end: the LUXE split-learning recipe on a tiny preset: per-region bars, per-epoch KL in
TensorBoard, one exported SavedModel for the mixture; the --no-split comparison table."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

TINY = ["--quick", "--n-train", "6000", "--n-test", "3000", "--n-val", "2000",
        "--library-size", "3000", "--epochs", "2", "--steps-per-epoch", "3", "--batch-size",
        "128", "--no-jit", "--no-plots"]


def _run(out, *extra):
    completed = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "luxe_split_wgan.py"), *TINY, *extra,
         "--output-dir", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return out


#: ns: the tiny preset's particles arrive at 10 ns and later
TIME_CUT = 10.05


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """One tiny run for the whole module (each run costs about a minute): the split by radius,
    with the inner region split again at ``TIME_CUT`` into prompt and delayed models, so the
    plain region split and the time split are both exercised."""
    return _run(tmp_path_factory.mktemp("luxe_split"), "--time-split", str(TIME_CUT),
                "--time-split-regions", "inner")


def test_region_bars_and_fractions(split):
    metrics = json.loads((split / "metrics.json").read_text())
    rows = {m["name"]: m for m in metrics["metrics"]}
    for region in ("inner", "outer"):
        for feature in ("x", "y", "p", "phi_p", "theta", "t"):
            assert rows[f"{region}/KL:{feature}"]["bar"] == 0.02
            assert rows[f"{region}/W1/sigma:{feature}"]["bar"] == 0.05
    assert rows["region_fraction_inner"]["bar"] == 0.01
    # per species, without a bar: the bars above see the mixture of species only
    for species in ("photon", "neutron"):
        row = rows[f"outer/KL:p:{species}"]
        assert row["bar"] is None and row["value"] >= 0 and row["extra"]["n"] >= 100
    # the regions are mixed in the reference proportions: fractions match (statistically)
    assert rows["region_fraction_inner"]["value"] < 4 * rows["region_fraction_inner"]["error"]
    assert metrics["mode"] == f"split, inner split at {TIME_CUT:g} ns"
    assert "inner max KL" in metrics["split_summary"]
    assert metrics["comparison"]["rows"][1]["name"] == "library"
    assert "## Split learning" in (split / "report.md").read_text()


def test_no_split_comparison_table(split):
    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        import luxe_split_wgan as recipe
    finally:
        sys.path.remove(str(ROOT / "recipes"))
    other = json.loads((split / "metrics.json").read_text())["split_summary"]
    mine = {**other, "inner max KL": {"value": 0.5, "feature": "y"}}
    lines = recipe.comparison_notes("no-split", mine, "split (run)", other)
    row = next(line for line in lines if line.startswith("| inner max KL"))
    assert "0.5 (y)" in row and f"{other['inner max KL']['value']:.4g}" in row
    assert lines[4].startswith("| quantity | no-split | split (run) |")


def test_kl_per_feature_logged_every_epoch_in_tensorboard(split):
    import tensorflow as tf

    for region in ("inner_prompt", "inner_delayed", "outer"):
        files = list((split / f"region_{region}" / "logs" / "physics").glob("events.out.*"))
        assert files, region
        tags = {}
        for record in tf.data.TFRecordDataset([str(f) for f in files]):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                tags.setdefault(value.tag, set()).add(event.step)
        for feature in ("x", "y", "p", "phi_p", "theta", "t"):
            assert tags[f"KL:{feature}"] == {0}      # one epoch per region in the tiny preset
        assert "monitor" in tags


def test_one_savedmodel_for_the_mixture(split):
    import tensorflow as tf

    version = split / "saved_models" / "luxe_split_wgan" / "1"
    info = json.loads((version / "assets.extra" / "ddsim_gan.json").read_text())
    assert info["latent_dim"] == 17 and info["n_conditions"] == 1   # 16 + the region choice
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    conditions = tf.constant(np.repeat(np.arange(4.0), 500)[:, None], tf.float32)
    samples = serve(conditions=conditions, seed=tf.constant(5, tf.int64))["samples"].numpy()
    again = serve(conditions=conditions, seed=tf.constant(5, tf.int64))["samples"].numpy()
    assert samples.shape == (2000, 6) and np.isfinite(samples).all() and (samples == again).all()
    fractions = json.loads((split / "regions.json").read_text())["fractions"]
    inner = np.hypot(samples[:, 0].astype(float), samples[:, 1].astype(float)) < 100.0
    for species in range(4):
        assert inner[species * 500:(species + 1) * 500].mean() == pytest.approx(
            fractions[species][0] + fractions[species][1], abs=0.1)     # prompt + delayed


def test_time_split_trains_prompt_and_delayed_models_and_mixes_them(split):
    """--time-split: the inner region's prompt and delayed particles get their own models, mixed
    in the training proportions; a prompt model cannot draw beyond the cut (its quantile table
    ends below it) nor a delayed one before it, so the generated fraction of inner particles
    beyond the cut per species is the mixture's choice."""
    import tensorflow as tf

    cut, out = TIME_CUT, split
    regions = json.loads((out / "regions.json").read_text())
    assert regions["names"] == ["inner_prompt", "inner_delayed", "outer"]
    for name in regions["names"]:
        assert (out / f"region_{name}.keras").is_file()
    fractions = np.asarray(regions["fractions"])
    assert fractions.shape == (4, 3) and np.allclose(fractions.sum(axis=1), 1.0)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == f"split, inner split at {cut:g} ns"
    assert {m["name"]: m for m in metrics["metrics"]}["inner/W1/sigma:t"]["bar"] == 0.05

    version = out / "saved_models" / "luxe_split_wgan" / "1"
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    n = 2000
    conditions = tf.constant(np.repeat(np.arange(4.0), n)[:, None], tf.float32)
    samples = serve(conditions=conditions, seed=tf.constant(3, tf.int64))["samples"].numpy()
    delayed = samples[:, 5] >= cut
    inner = np.hypot(samples[:, 0].astype(float), samples[:, 1].astype(float)) < 100.0
    for species in range(4):
        rows = slice(species * n, (species + 1) * n)
        for side, chosen in enumerate((inner & ~delayed, inner & delayed)):
            assert chosen[rows].mean() == pytest.approx(fractions[species, side],
                                                        abs=4 * np.sqrt(0.25 / n))


def test_population_plan_and_index():
    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        import luxe_split_wgan as recipe
    finally:
        sys.path.remove(str(ROOT / "recipes"))
    from ddsim_gan import detectors

    detector = detectors.get("luxe_dump")
    assert [p.name for p in recipe.population_plan(detector)] == ["inner", "outer"]
    samples = np.array([[0, 0, 1, 0, 0, 10.0], [0, 0, 1, 0, 0, 2e5], [500, 0, 1, 0, 0, 999.0],
                        [0, 500, 1, 0, 0, 1000.0]], np.float32)
    plan = recipe.population_plan(detector, 1000.0, ("inner", "outer"))
    assert [p.name for p in plan] == ["inner_prompt", "inner_delayed", "outer_prompt",
                                      "outer_delayed"]
    assert sum(p.share for p in plan) == pytest.approx(1.0)
    assert recipe.population_index(plan, detector, samples).tolist() == [0, 1, 2, 3]
    plan = recipe.population_plan(detector, 1000.0)          # the inner region only
    assert [p.name for p in plan] == ["inner_prompt", "inner_delayed", "outer"]
    assert [p.share for p in plan] == pytest.approx([0.45, 0.05, 0.5])
    index = recipe.population_index(plan, detector, samples)
    assert index.tolist() == [0, 1, 2, 2]
    # a time split with a thin side is undone: the region is trained whole again
    assert recipe.join_thin_time_splits(plan, index, 1) == plan
    joined = recipe.join_thin_time_splits(plan, index, 2)
    assert [(p.name, p.share, p.t_min, p.t_max) for p in joined] == [
        ("inner", pytest.approx(0.5), -np.inf, np.inf), ("outer", 0.5, -np.inf, np.inf)]


def test_bad_options_are_refused(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "luxe_split_wgan.py"), "--quick",
         "--compare-run", str(tmp_path / "nothing"), "--output-dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert completed.returncode != 0 and "no metrics.json" in completed.stderr
    assert "Traceback" not in completed.stderr
    completed = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "luxe_split_wgan.py"), "--quick",
         "--time-split", "-5", "--output-dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert completed.returncode != 0 and "--time-split -5" in completed.stderr
    assert "Traceback" not in completed.stderr
