"""End-to-end report on DarkSHINE events: files written, bars decide pass/fail."""

import json

import numpy as np
import pytest

from ddsim_gan import detectors
from ddsim_gan.evaluation import evaluate, write_report


@pytest.fixture(scope="module")
def darkshine():
    detector = detectors.get("darkshine")
    conditions, ref = detector.simulate(2000, seed=1)
    ref2 = detector.simulate_at(conditions, seed=2)
    gen = detector.simulate_at(conditions, seed=3) * 1.05       # a 5 % miscalibrated "model"
    return detector, conditions, ref, gen, ref2


@pytest.fixture(scope="module")
def report(darkshine, tmp_path_factory):
    detector, conditions, ref, gen, ref2 = darkshine
    out = tmp_path_factory.mktemp("report")
    bars = {"W1/sigma:E_total": 0.01, "W1/sigma:centre_x": 0.5, "classifier_auc": 0.99,
            "energy_centre_mean_shift_x": 0.5}
    result = evaluate(detector, conditions, ref, gen, ref2, output_dir=out, bars=bars,
                      seed=0, n_bootstrap=5)
    return result, out


def test_report_files_and_metrics(report):
    result, out = report
    assert result["n_reference"] == 2000 and result["n_generated"] == 2000
    names = [m["name"] for m in result["metrics"]]
    for name in ("W1/sigma:E_total", "KL:E_layer_10", "separation_power:width_y", "KS:n_hits",
                 "energy_centre_mean_shift_y", "classifier_auc", "classifier_jsd", "FPD", "KPD"):
        assert name in names
    stored = json.loads((out / "metrics.json").read_text())
    assert [m["name"] for m in stored["metrics"]] == names
    markdown = (out / "report.md").read_text()
    assert "| metric | value ± error | floor ± error | bar | pass/fail |" in markdown
    assert "| W1/sigma:E_total |" in markdown and "**fail**" in markdown
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    for name in ("hist_E_total.png", "hist_E_layer_00.png", "longitudinal_profile.png",
                 "radial_profile.png", "average_images.png", "conditional_E_total.png"):
        assert name in plots
    assert all((out / "plots" / p).stat().st_size > 1000 for p in plots)


def test_report_pass_fail_follows_bars(report):
    result, _ = report
    by_name = {m["name"]: m for m in result["metrics"]}
    e_total = by_name["W1/sigma:E_total"]
    assert e_total["value"] > 0.01 and e_total["passed"] is False     # the 5 % scale is seen
    assert e_total["floor"] < e_total["value"]
    assert by_name["W1/sigma:centre_x"]["passed"] is True              # the shape is right
    assert by_name["energy_centre_mean_shift_x"]["passed"] is True
    assert by_name["classifier_auc"]["passed"] is True
    assert abs(by_name["classifier_auc"]["floor"] - 0.5) < 0.1
    assert by_name["KS:E_total"]["passed"] is None
    assert result["passed"] is False and result["failed"] == ["W1/sigma:E_total"]


def test_report_passes_reference_against_itself(darkshine, tmp_path):
    detector, conditions, ref, _, ref2 = darkshine
    result = evaluate(detector, conditions, ref[:1000], ref2[:1000], ref2[:1000],
                      bars={"W1/sigma:E_total": 0.2, "KS:n_hits": 0.2}, classifier=False,
                      plots=False, n_bootstrap=3)
    assert result["passed"] is True
    assert not any(m["name"] in ("FPD", "classifier_auc") for m in result["metrics"])
    paths = write_report(result, tmp_path)
    assert "PASSED" in open(paths["markdown"]).read()
    with pytest.raises(KeyError, match="W1/sigma:E_tot"):
        evaluate(detector, conditions, ref[:200], ref2[:200], None,
                 bars={"W1/sigma:E_tot": 0.1}, classifier=False, plots=False, n_bootstrap=0)


class _ToyVector(detectors.Detector):
    """A vector-output detector (like RICH/DarkSide): two numbers per event, one condition."""

    name = "toy_vector"
    conditions = (detectors.Condition("p", "GeV", 1.0, 10.0),)
    sample_shape = (2,)
    sample_names = ("S1", "S2")
    sample_units = ("PE", "ns")

    def sample_conditions(self, n, seed=None):
        return np.random.default_rng(seed).uniform(1, 10, (n, 1)).astype(np.float32)

    def simulate_at(self, conditions, seed=None):
        rng = np.random.default_rng(seed)
        p = np.asarray(conditions)[:, :1]
        return (rng.normal(size=(len(p), 2)) + np.hstack([p, 0.1 * p])).astype(np.float32)


def test_report_vector_detector_efficiencies(tmp_path):
    detector = _ToyVector()
    conditions, ref = detector.simulate(3000, seed=0)
    ref2 = detector.simulate_at(conditions, seed=1)
    gen = detector.simulate_at(conditions, seed=2) + np.array([0.0, 1.0], np.float32)
    result = evaluate(detector, conditions, ref, gen, ref2, output_dir=tmp_path, classifier=False,
                      n_bootstrap=3, bars={"efficiency_ratio_mean_dev:S1": 0.2,
                                           "efficiency_ratio_mean_dev:S2": 0.2})
    by_name = {m["name"]: m for m in result["metrics"]}
    assert set(by_name) >= {"W1/sigma:S1", "KL:S2", "efficiency_ratio_mean_dev:S1"}
    assert by_name["efficiency_ratio_mean_dev:S1"]["passed"] is True
    assert by_name["efficiency_ratio_mean_dev:S2"]["passed"] is False      # S2 shifted by 1 σ
    assert result["failed"] == ["efficiency_ratio_mean_dev:S2"]
    plots = {p.name for p in (tmp_path / "plots").glob("*.png")}
    assert {"hist_S1.png", "conditional_S2.png", "efficiency_S2.png"} <= plots
