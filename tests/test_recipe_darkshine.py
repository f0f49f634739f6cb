"""End to end: the DarkSHINE recipe in quick mode, its outputs, and its SavedModel served
by a process that never imports ddsim_gan."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_quick_run_writes_metrics_model_and_export(quick_run):
    metrics = json.loads((quick_run / "metrics.json").read_text())
    names = {m["name"] for m in metrics["metrics"]}
    assert {"W1/sigma:E_total", "KL:E_total", "energy_centre_mean_shift_x", "classifier_auc",
            "W1/sigma:n_hits"} <= names
    assert all(m["floor"] is None or m["floor"] < 0.2 for m in metrics["metrics"]
               if m["name"].startswith("W1/sigma"))
    assert metrics["nnls_spectrum"]["residual"] >= 0
    for name in ("generator.keras", "model.keras", "spectrum.json", "report.md", "run.json"):
        assert (quick_run / name).is_file(), name
    version = quick_run / "saved_models" / "darkshine_nnls_cgan" / "1"
    assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()
    assert (version / "assets.extra" / "generator.keras").is_file()
    # physics metrics and sample images for TensorBoard, written during training
    assert list((quick_run / "logs" / "physics").glob("events.out.tfevents*"))
    # the monitored best epoch is on disk, and the run says which generator it kept
    assert (quick_run / "best_generator.keras").is_file()
    chosen = json.loads((quick_run / "run.json").read_text())["chosen_generator"]
    assert chosen == "final" or chosen.startswith("best epoch ")


def test_quick_run_resamples_and_reports_the_generator_alone(quick_run):
    import keras

    import ddsim_gan.models  # noqa: F401  (registers the layers)

    metrics = json.loads((quick_run / "metrics.json").read_text())
    resampling = metrics["resampling"]
    assert resampling["n_candidates"] == 16 and resampling["clip"] == 5.0
    assert resampling["events_per_class"] == 6_144   # a twentieth of 150 000, at most n_train
    # the quick mode caps the classifier test (its 2-minute budget) and says so
    auc = next(m for m in metrics["metrics"] if m["name"] == "classifier_auc")
    assert auc["extra"]["epochs_run"] <= 20 and "converged" in auc["extra"]
    assert 0.5 <= resampling["validation_auc"] <= 1.0
    alone = {m["name"] for m in resampling["generator_alone"]}
    # the quick mode leaves out the classifier of the generator alone (its 2-minute budget)
    assert {"W1/sigma:E_total", "energy_centre_mean_shift_x", "FPD"} <= alone
    assert "## Resampling" in (quick_run / "report.md").read_text()
    sampler = keras.saving.load_model(quick_run / "generator.keras")
    alone_model = keras.saving.load_model(quick_run / "generator_alone.keras")
    width = alone_model.inputs[1].shape[-1]
    assert sampler.inputs[1].shape[-1] == 16 * width + 16   # 16 candidates' noise + the choice
    extra = quick_run / "saved_models" / "darkshine_nnls_cgan" / "1" / "assets.extra"
    assert (extra / "generator_alone.keras").is_file()


SERVE = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    model = tf.saved_model.load(sys.argv[1])
    serve = model.signatures["serving_default"]
    conditions = tf.constant([[500.0], [4000.0], [7900.0]] * 20, tf.float32)
    a = serve(conditions=conditions, seed=tf.constant(42, tf.int64))["samples"].numpy()
    b = serve(conditions=conditions, seed=tf.constant(42, tf.int64))["samples"].numpy()
    c = serve(conditions=conditions, seed=tf.constant(43, tf.int64))["samples"].numpy()
    spectrum = model.signatures["sample_spectrum"](n=tf.constant(10, tf.int64),
                                                   seed=tf.constant(1, tf.int64))
    outside = tf.constant([[100.0], [4000.0], [9000.0]], tf.float32)
    in_range = serve(conditions=outside, seed=tf.constant(1, tf.int64))["in_range"].numpy()
    ops = {op.type for f in model.serve.concrete_functions for op in f.graph.get_operations()}
    print(json.dumps({"shape": a.shape, "same": bool((a == b).all()),
                      "differs": bool((a != c).any()), "finite": bool(np.isfinite(a).all()),
                      "min": float(a.min()), "ddsim_gan_loaded": "ddsim_gan" in sys.modules,
                      "spectrum_shapes": [spectrum["conditions"].shape.as_list(),
                                          spectrum["samples"].shape.as_list()],
                      "py_ops": sorted(o for o in ops if "PyFunc" in o),
                      "in_range": in_range.tolist()}))
""")


def test_savedmodel_serves_without_the_package(quick_run, tmp_path):
    version = quick_run / "saved_models" / "darkshine_nnls_cgan" / "1"
    script = tmp_path / "serve.py"
    script.write_text(SERVE)
    # -I: isolated mode, so neither the working directory nor PYTHONPATH can supply ddsim_gan
    completed = subprocess.run([sys.executable, "-I", str(script), str(version)],
                               capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["shape"] == [60, 20, 20, 11]
    assert result["same"] and result["differs"] and result["finite"]
    assert result["min"] >= 0.0
    assert not result["ddsim_gan_loaded"] and result["py_ops"] == []
    assert result["spectrum_shapes"] == [[10, 1], [10, 20, 20, 11]]
    assert result["in_range"] == [False, True, False]     # trained on 200-8000 MeV


def test_export_tool_versions_and_refuses_to_overwrite(quick_run, tmp_path):
    tool = [sys.executable, str(ROOT / "tools" / "export_savedmodel.py"),
            "--run-dir", str(quick_run), "--base", str(tmp_path)]
    first = subprocess.run(tool, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert (tmp_path / "darkshine_nnls_cgan" / "1" / "saved_model.pb").is_file()
    refused = subprocess.run(tool + ["--version", "1", "--models-config"], capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode == 2 and "exists" in refused.stderr
    assert "Traceback" not in refused.stderr
    second = subprocess.run(tool + ["--models-config"], capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "darkshine_nnls_cgan").iterdir()) == ["1", "2"]
    config = (tmp_path / "models.config").read_text()
    assert 'name: "darkshine_nnls_cgan"' in config and "model_platform" in config
    missing = subprocess.run([*tool[:2], "--run-dir", str(tmp_path / "nothing")],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "generator.keras" in missing.stderr


def test_whole_gan_reloads_in_a_fresh_process_and_trains_on(quick_run, tmp_path):
    """model.keras ("to continue training") holds the critics, the optimizers and their
    learning-rate schedules: a new process loads it with ``load_gan`` and trains on."""
    script = tmp_path / "reload.py"
    script.write_text(textwrap.dedent("""
        import sys
        from ddsim_gan import detectors
        from ddsim_gan.models import load_gan
        gan = load_gan(sys.argv[1])
        before = gan.generator_optimizer.iterations.numpy()
        conditions, samples = detectors.get("darkshine").simulate(256, seed=5)
        gan.fit(conditions, samples, batch_size=256, epochs=1, verbose=0)
        print(type(gan).__name__, before, gan.generator_optimizer.iterations.numpy())
    """))
    completed = subprocess.run([sys.executable, str(script), str(quick_run / "model.keras")],
                               capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr[-3000:]
    name, before, after = completed.stdout.split()[-3:]
    assert name == "ObservableCriticGAN" and int(before) > 0 and int(after) == int(before) + 1


@pytest.mark.parametrize("option, value, message", [
    ("--components", "0", "--components = 0, expected at least 1"),
    ("--deflection-mev", "-1", "--deflection-mev = -1.0, expected >= 0"),
    ("--fragments-per-layer", "-1", "--fragments-per-layer = -1, expected >= 0"),
])
def test_bad_options_stop_before_any_work(option, value, message, tmp_path):
    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        import darkshine_nnls_cgan as recipe
    finally:
        sys.path.remove(str(ROOT / "recipes"))
    with pytest.raises(SystemExit, match=message):
        recipe.main(["--quick", "--output-dir", str(tmp_path / "run"), option, value])
    assert not (tmp_path / "run").exists()
