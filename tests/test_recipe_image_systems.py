"""End to end: the SiW-ECAL, LHCb ECAL and MPD TPC recipes in a tiny preset (a subprocess each),
their seed metrics, reports and exports, and the side-by-side table of runs."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

TINY = ["--quick", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "32",
        "--hidden", "16", "--no-plots", "--no-jit"]


def _run(recipe, out, *extra):
    completed = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / recipe), *TINY, "--output-dir", str(out),
         *extra], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


def _names(metrics):
    return {m["name"]: m for m in metrics["metrics"]}


def _exported(out, name):
    version = out / "saved_models" / name / "1"
    return (version / "saved_model.pb").is_file() and (
        version / "assets.extra" / "generator.keras").is_file()


def test_siw_ecal_recipe_tiny_run(tmp_path):
    out = tmp_path / "siw"
    metrics = _run("siw_ecal_wgangp.py", out, "--n-train", "256", "--n-test", "128",
                   "--model", "conservation")
    names = _names(metrics)
    assert metrics["model"] == "conservation"
    for name, bar in [("mean_rel_dev:sum_E", 0.02), ("mean_rel_dev:nhits_seed", 0.03),
                      ("occupancy_rel_dev:layer_00", 0.05), ("occupancy_rel_dev:layer_14", 0.05)]:
        assert names[name]["bar"] == bar and names[name]["value"] is not None
        assert names[name]["floor"] is not None
    assert "occupancy_ref" in names["occupancy_rel_dev:layer_00"]["extra"]
    assert {"mean_rel_dev:sum_E[e-]", "W1/sigma:nhits_seed", "classifier_auc"} <= set(names)
    rows = metrics["comparison"]["rows"]
    assert [r["name"] for r in rows] == ["GAN (conservation)", "shower library (k=10)"]
    assert "occupancy_rel_dev:max" in rows[1]["values"]
    assert _exported(out, "siw_ecal_wgangp")
    # the side-by-side table of runs
    table = subprocess.run([sys.executable, str(ROOT / "tools" / "compare_runs.py"), str(out),
                            str(out / "metrics.json"), "--output", str(tmp_path / "t.md")],
                           capture_output=True, text=True, timeout=60)
    assert table.returncode == 0, table.stderr
    text = (tmp_path / "t.md").read_text()
    assert "| mean_rel_dev:sum_E |" in text and "conservation" in text
    missing = subprocess.run([sys.executable, str(ROOT / "tools" / "compare_runs.py"),
                              str(tmp_path / "nothing")], capture_output=True, text=True)
    assert missing.returncode == 2 and "metrics.json" in missing.stderr


def test_lhcb_ecal_recipe_tiny_run(tmp_path):
    out = tmp_path / "lhcb"
    metrics = _run("lhcb_ecal_aux_gan.py", out, "--n-train", "512", "--n-test", "256")
    names = _names(metrics)
    assert metrics["model"] == "aux_regressor"
    assert names["W1/sigma:asymmetry"]["bar"] == 0.05
    for axis in ("centre_x", "centre_y", "width_x", "width_y"):
        assert names[f"W1/sigma:{axis}"]["bar"] == 0.05
    assert {"regressor_rms_error/sigma:reference", "regressor_rms_error/sigma:generated",
            "W1/sigma:asymmetry_transverse"} <= set(names)
    assert "regressor_loss" in metrics["settings"]["final_losses"]
    assert _exported(out, "lhcb_ecal_aux_gan")


def test_mpd_tpc_recipe_tiny_run(tmp_path):
    out = tmp_path / "mpd"
    metrics = _run("mpd_tpc_gan.py", out, "--n-train", "1024", "--n-test", "512")
    names = _names(metrics)
    moments = ["mean_pad", "mean_time", "width_pad", "width_time", "cov_pad_time", "total"]
    for moment in moments:
        assert names[f"W1/sigma:{moment}"]["bar"] == 0.05
        for condition in ("crossing_angle", "dip_angle", "drift_length", "pad_coordinate"):
            row = names[f"binned_mean_dev:{moment}|{condition}"]
            assert row["bar"] == 0.03 and len(row["extra"]["mean_ref"]) == 5
    assert _exported(out, "mpd_tpc_gan")


def test_siw_seed_plots_per_species(tmp_path):
    """The SiW seed plots: occupancy and seed hits per layer, and sum_E per species (where
    the pions' track and shower populations show), one PNG each, none for an absent species."""
    from ddsim_gan import config, detectors

    module = config.load_recipe("siw_ecal_wgangp")
    detector = detectors.get("siw_ecal")
    conditions, ref = detector.simulate(40, seed=1)
    gen = detector.simulate_at(conditions, seed=2)
    paths = module.seed_plots(detector, conditions, ref, gen, str(tmp_path))
    names = {p.rsplit("/", 1)[-1] for p in paths}
    assert {"hist_nhits_seed.png", "occupancy_per_layer_all.png", "hist_sum_E_e.png",
            "hist_sum_E_pi.png", "seed_hits_per_layer_pi.png"} <= names
    assert all((tmp_path / name).stat().st_size > 1000 for name in names)
    electrons = conditions[:, 1] == 0
    paths = module.seed_plots(detector, conditions[electrons], ref[electrons], gen[electrons],
                              str(tmp_path / "e_only"))
    assert not any("_pi" in p for p in paths)


def test_siw_components_generator_is_refused_for_the_3d_variant():
    from ddsim_gan import config

    module = config.load_recipe("siw_ecal_wgangp")
    with pytest.raises(ValueError, match="--generator cells"):
        module.build_model("conv3d", detector=None, data=None, generator="components")
