"""End to end: the LUXE split-learning recipe on a tiny preset (split, then --no-split beside it):
per-region bars, per-epoch KL in TensorBoard, one exported SavedModel for the mixture."""

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


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    split = _run(tmp_path_factory.mktemp("luxe_split"))
    plane = _run(tmp_path_factory.mktemp("luxe_plane"), "--no-split", "--compare-run",
                 str(split))
    return split, plane


def test_region_bars_fractions_and_comparison(runs):
    split, plane = runs
    metrics = json.loads((split / "metrics.json").read_text())
    rows = {m["name"]: m for m in metrics["metrics"]}
    for region in ("inner", "outer"):
        for feature in ("x", "y", "p", "phi_p", "theta", "t"):
            assert rows[f"{region}/KL:{feature}"]["bar"] == 0.02
            assert rows[f"{region}/W1/sigma:{feature}"]["bar"] == 0.05
    assert rows["region_fraction_inner"]["bar"] == 0.01
    # the regions are mixed in the reference proportions: fractions match (statistically)
    assert rows["region_fraction_inner"]["value"] < 4 * rows["region_fraction_inner"]["error"]
    assert metrics["mode"] == "split" and "inner max KL" in metrics["split_summary"]
    assert metrics["comparison"]["rows"][1]["name"] == "library"
    other = json.loads((plane / "metrics.json").read_text())
    assert other["mode"] == "no-split"
    report = (plane / "report.md").read_text()
    assert "## Split learning" in report and str(split) in report


def test_kl_per_feature_logged_every_epoch_in_tensorboard(runs):
    import tensorflow as tf

    split, _ = runs
    for region in ("inner", "outer"):
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


def test_one_savedmodel_for_the_mixture(runs):
    import tensorflow as tf

    split, plane = runs
    for run, latent in ((split, 17), (plane, 16)):
        version = run / "saved_models" / "luxe_split_wgan" / "1"
        info = json.loads((version / "assets.extra" / "ddsim_gan.json").read_text())
        assert info["latent_dim"] == latent and info["n_conditions"] == 1
        model = tf.saved_model.load(str(version))
        conditions = tf.constant(np.repeat(np.arange(4.0), 500)[:, None], tf.float32)
        serve = model.signatures["serving_default"]
        a = serve(conditions=conditions, seed=tf.constant(3, tf.int64))["samples"].numpy()
        b = serve(conditions=conditions, seed=tf.constant(3, tf.int64))["samples"].numpy()
        assert a.shape == (2000, 6) and np.isfinite(a).all() and (a == b).all()
    fractions = json.loads((split / "regions.json").read_text())["fractions"]
    version = split / "saved_models" / "luxe_split_wgan" / "1"
    samples = tf.saved_model.load(str(version)).signatures["serving_default"](
        conditions=conditions, seed=tf.constant(5, tf.int64))["samples"].numpy()
    inner = np.hypot(samples[:, 0].astype(float), samples[:, 1].astype(float)) < 100.0
    for species in range(4):
        assert inner[species * 500:(species + 1) * 500].mean() == pytest.approx(
            fractions[species][0], abs=0.1)


def test_bad_options_are_refused(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "luxe_split_wgan.py"), "--quick",
         "--compare-run", str(tmp_path / "nothing"), "--output-dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert completed.returncode != 0 and "no metrics.json" in completed.stderr
    assert "Traceback" not in completed.stderr
