"""tools/resample_generator.py: the resampling stage added to a generator exported before it."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def _resample_small(model, out, candidates):
    """The tool on small samples (3 000 training, 800 held-out events); it must succeed."""
    completed = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "resample_generator.py"), str(model),
         "--output-dir", str(out), "--n-train", "3000", "--n-test", "800", "--events", "1500",
         "--candidates", str(candidates)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed


def test_resampling_a_generator_gives_a_run_that_exports(quick_run, tmp_path):
    import shutil

    import tensorflow as tf

    # a run as the recipe leaves it without resampling: the quick run's generator alone
    alone = tmp_path / "alone_run"
    alone.mkdir()
    shutil.copyfile(quick_run / "generator_alone.keras", alone / "generator.keras")
    for name in ("run.json", "spectrum.json"):
        shutil.copyfile(quick_run / name, alone / name)
    out = tmp_path / "resampled"
    completed = _resample_small(alone, out, candidates=3)
    assert "| classifier_auc |" in completed.stdout
    report = json.loads((out / "resampling.json").read_text())
    assert report["n_candidates"] == 3 and report["events_per_class"] == 1500
    assert {"resampled", "generator alone"} == set(report["metrics"])
    run = json.loads((out / "run.json").read_text())
    assert run["recipe"] == "darkshine_nnls_cgan" and run["resampled_from"] == str(alone)
    assert (out / "spectrum.json").is_file() and (out / "generator_alone.keras").is_file()

    from ddsim_gan.export import export_run

    version = export_run(out, tmp_path / "models")
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    conditions = tf.constant([[500.0], [4000.0]] * 4, tf.float32)
    a = serve(conditions=conditions, seed=tf.constant(3, tf.int64))["samples"].numpy()
    b = serve(conditions=conditions, seed=tf.constant(3, tf.int64))["samples"].numpy()
    assert a.shape == (8, 20, 20, 11) and np.isfinite(a).all() and (a == b).all()
    info = json.loads((version / "assets.extra" / "ddsim_gan.json").read_text())
    import keras

    import ddsim_gan.models  # noqa: F401

    width = keras.saving.load_model(quick_run / "generator_alone.keras").inputs[1].shape[-1]
    assert info["latent_dim"] == 3 * width + 3                 # 3 candidates' noise + choice


def test_a_directory_without_a_generator_is_refused(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "resample_generator.py"), str(tmp_path),
         "--output-dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=300,
        cwd=ROOT)
    assert completed.returncode != 0 and "no generator.keras" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_a_resampled_run_gets_its_stage_replaced_not_stacked(quick_run, tmp_path):
    import keras

    import ddsim_gan.models  # noqa: F401

    out = tmp_path / "again"
    completed = _resample_small(quick_run, out, candidates=2)
    assert "resampled already: starting from its generator alone" in completed.stdout
    width = keras.saving.load_model(quick_run / "generator_alone.keras").inputs[1].shape[-1]
    sampler = keras.saving.load_model(out / "generator.keras")
    assert sampler.inputs[1].shape[-1] == 2 * width + 2    # 2 candidates of the generator alone
    assert (out / "generator_alone.keras").read_bytes() == \
        (quick_run / "generator_alone.keras").read_bytes()
