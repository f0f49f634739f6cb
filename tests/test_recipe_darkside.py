"""End to end: the DarkSide-20k chain recipe on a tiny preset, its report (W1, the binned bar,
the library row) and its SavedModel served by a process that never imports ddsim_gan."""

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

RECIPE = ROOT / "recipes" / "darkside_argan.py"
TINY = ["--quick", "--no-jit", "--n-train", "4000", "--n-test", "1000", "--n-moments", "6000",
        "--library-size", "4000", "--epochs", "1", "--steps-per-epoch", "10", "--batch-size",
        "128", "--no-plots"]


@pytest.fixture(scope="module")
def chain_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("darkside_chain")
    completed = subprocess.run([sys.executable, str(RECIPE), *TINY, "--output-dir", str(out)],
                               capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return out


def test_chain_run_reports_the_bar_and_the_library(chain_run):
    metrics = json.loads((chain_run / "metrics.json").read_text())
    rows = {m["name"]: m for m in metrics["metrics"]}
    for name in ("S1", "S2", "f200"):
        assert rows[f"W1/sigma:{name}"]["bar"] == 0.05
        assert rows[f"worst_mean_dev:{name}"]["bar"] == 0.03
        assert rows[f"worst_width_dev:{name}"]["bar"] == 0.03
        assert rows[f"worst_mean_dev:{name}"]["floor"] is not None
    assert rows["worst_corr_diff:S1-S2"]["bar"] == 0.05
    assert metrics["model"] == "chain"
    assert set(metrics["conditional_moments"]["worst"]) == {
        "GAN chain", "second reference simulation (floor)", "library (k=10)"}
    assert [r["name"] for r in metrics["comparison"]["rows"]] == ["GAN chain", "library (k=10)"]
    assert all(r["samples_per_second"] > 0 for r in metrics["comparison"]["rows"])
    report = (chain_run / "report.md").read_text()
    assert "## Binned moments" in report and "## Generators compared" in report
    run = json.loads((chain_run / "run.json").read_text())
    assert run["links"] == ["S1", "S2", "f200"] and run["model"] == "chain"
    for name in ("generator.keras", "link_S1.keras", "link_S2.keras", "link_f200.keras",
                 "chain.json"):
        assert (chain_run / name).is_file(), name


def test_more_evaluation_events_reuse_the_trained_links(chain_run, tmp_path):
    """The same command with only --n-moments changed evaluates the trained chain again."""
    import shutil

    out = tmp_path / "again"
    shutil.copytree(chain_run, out)
    argv = [a if a != "6000" else "8000" for a in TINY]
    completed = subprocess.run([sys.executable, str(RECIPE), *argv, "--output-dir", str(out)],
                               capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert completed.stdout.count("reloaded from") == 3 and "---- link" not in completed.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["conditional_moments"]["n_events"] == 8000


def test_a_link_is_reused_only_when_its_training_was_the_same():
    from model_families import recipe_module

    module = recipe_module("darkside_argan")
    state = {"settings": {"epochs": 36, "n_train": 500, "n_moments": 10}, "seed": 1,
             "n_links": 3, "previous": "standardize", "train_energy_margin": 20.0}
    assert module.same_training(state, state)
    assert module.same_training(state, {**state, "settings": {**state["settings"],
                                                               "n_moments": 40}})
    assert not module.same_training(state, {**state, "settings": {**state["settings"],
                                                                   "epochs": 54}})
    assert not module.same_training(state, {**state, "train_energy_margin": 40.0})
    saved_before_the_margin = {key: value for key, value in state.items()
                               if key != "train_energy_margin"}
    assert not module.same_training(saved_before_the_margin, state)
    assert not module.same_training(None, state)


SERVE = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    model = tf.saved_model.load(sys.argv[1])
    serve = model.signatures["serving_default"]
    conditions = tf.constant([[5.0, 0.0], [100.0, 0.0], [235.0, 1.0]] * 10, tf.float32)
    a = serve(conditions=conditions, seed=tf.constant(42, tf.int64))["samples"].numpy()
    b = serve(conditions=conditions, seed=tf.constant(42, tf.int64))["samples"].numpy()
    c = serve(conditions=conditions, seed=tf.constant(43, tf.int64))["samples"].numpy()
    ops = {op.type for f in model.serve.concrete_functions for op in f.graph.get_operations()}
    print(json.dumps({"shape": a.shape, "same": bool((a == b).all()),
                      "differs": bool((a != c).any()), "finite": bool(np.isfinite(a).all()),
                      "f200_max": float(a[:, 2].max()), "min": float(a.min()),
                      "ddsim_gan_loaded": "ddsim_gan" in sys.modules,
                      "py_ops": sorted(o for o in ops if "PyFunc" in o)}))
""")


def test_chain_savedmodel_serves_without_the_package(chain_run, tmp_path):
    version = chain_run / "saved_models" / "darkside_argan" / "1"
    assert (version / "assets.extra" / "generator.keras").is_file()
    script = tmp_path / "serve.py"
    script.write_text(SERVE)
    completed = subprocess.run([sys.executable, "-I", str(script), str(version)],
                               capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["shape"] == [30, 3]
    assert result["same"] and result["differs"] and result["finite"]
    assert result["min"] >= 0.0 and result["f200_max"] <= 1.0
    assert not result["ddsim_gan_loaded"] and result["py_ops"] == []


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "130"], "multiple of"),
    (["--n-moments", "0"], "--n-moments"),
    (["--model", "vae"], "invalid choice"),
])
def test_bad_options_are_rejected_before_any_work(argv, message, tmp_path):
    completed = subprocess.run([sys.executable, str(RECIPE), "--quick", *argv, "--output-dir",
                                str(tmp_path)], capture_output=True, text=True, timeout=120,
                               cwd=ROOT)
    assert completed.returncode != 0
    assert message in completed.stderr and "Traceback" not in completed.stderr


def test_training_energies_widen_above_the_evaluated_range():
    import numpy as np

    from ddsim_gan import detectors
    from ddsim_gan.recipe import RecipeData
    from model_families import recipe_module

    module = recipe_module("darkside_argan")
    detector = detectors.get("darkside")
    conditions, samples = detector.simulate(2300, seed=1)
    data = RecipeData(conditions, samples, conditions[:10], samples[:10], samples[:10], "ref")
    assert module.widen_training_energies(detector, data, 0.0, seed=0) is data
    wider = module.widen_training_energies(detector, data, 20.0, seed=0)
    extra = wider.train_conditions[2300:]
    assert len(extra) == 200 and len(wider.train_samples) == 2500    # same density per keV
    np.testing.assert_array_equal(wider.train_conditions[:2300], conditions)
    assert extra[:, 0].min() > 235.0 and extra[:, 0].max() <= 255.0
    assert set(np.unique(extra[:, 1])) == {0.0, 1.0}
    # the added recoils are the simulator's: S2 of ER keeps rising with energy
    top_er = wider.train_samples[2300:][extra[:, 1] == 1, 1].mean()
    assert top_er > samples[(conditions[:, 1] == 1) & (conditions[:, 0] > 200), 1].mean()
    assert wider.test_conditions is data.test_conditions
