"""tools/darkside_bin_draws.py: repeated draws of one DarkSide energy bin."""

import numpy as np
import pytest

from conftest import ROOT
from model_families import script_module


def _tool():
    return script_module(ROOT / "tools" / "darkside_bin_draws.py", "darkside_bin_draws")


def test_conditions_stay_in_the_bin_and_follow_the_spectrum():
    from ddsim_gan import detectors

    detector = detectors.get("darkside")
    conditions = _tool().bin_conditions(detector, 1, 225.0, 235.0, 3000, seed=0)
    assert conditions.shape == (3000, 2)
    assert (conditions[:, 1] == 1).all()
    assert conditions[:, 0].min() >= 225.0 and conditions[:, 0].max() < 235.0
    with pytest.raises(SystemExit, match="5-235 keV"):
        _tool().bin_conditions(detector, 1, 300.0, 310.0, 10, seed=0)
    beyond = _tool().bin_conditions(detector, 0, 245.0, 255.0, 1000, seed=0, uniform=True)
    assert (beyond[:, 1] == 0).all() and beyond[:, 0].min() >= 245.0
    assert beyond[:, 0].max() < 255.0 and beyond[:, 0].std() == pytest.approx(10 / 12**0.5, 0.1)


def test_deviations_and_their_average():
    tool = _tool()
    reference = np.array([[1.0, 10.0], [3.0, 30.0]])
    mean_dev, width_dev = tool.deviations(reference, reference * [1.1, 1.0] + [0.0, 5.0])
    np.testing.assert_allclose(mean_dev, [0.1, 0.25])
    np.testing.assert_allclose(width_dev, [0.1, 0.0], atol=1e-12)
    mean, error, spread = tool.summary([[0.01, 0.0], [0.03, 0.0]])
    np.testing.assert_allclose(mean, [0.02, 0.0])
    np.testing.assert_allclose(spread, [np.sqrt(2e-4), 0.0])
    np.testing.assert_allclose(error, spread / np.sqrt(2))


class SimulatorAsChain:
    """A "model" that is the reference simulator itself: its biases are the floor's."""

    def __init__(self, detector):
        self.detector = detector

    def generate(self, conditions, seed=0):
        return self.detector.simulate_at(conditions, seed + 1)


def test_the_bias_map_covers_every_bin_and_finds_no_bias_in_the_simulator(capsys):
    from types import SimpleNamespace

    from ddsim_gan import detectors

    detector = detectors.get("darkside")
    tool = _tool()
    tool.all_bins(detector, SimulatorAsChain(detector),
                  SimpleNamespace(draws=2, events=400, seed=3))
    lines = capsys.readouterr().out.splitlines()
    bins = [line for line in lines if line.startswith(("  NR", "  ER"))]
    assert len(bins) == 46 and "NR     5- 15" in bins[0] and "ER   225-235" in bins[-1]
    worst = {line.split(" bias|")[0]: float(line.split(": ")[1].split(" ")[0])
             for line in lines if line.startswith("largest")}
    assert len(worst) == 6
    # 400 events per draw: the widths scatter by about 5 %, the means by far less
    assert all(abs(value) < 0.2 for value in worst.values()), worst


def test_a_run_without_a_chain_is_named(tmp_path):
    with pytest.raises(SystemExit, match="chain.json"):
        _tool().main([str(tmp_path)])
