"""tools/siw_populations.py: per-species, per-population layer occupancy."""

import numpy as np
import pytest

from conftest import ROOT
from model_families import script_module


def _tool():
    return script_module(ROOT / "tools" / "siw_populations.py", "siw_populations")


def test_tracks_and_showers_are_counted_apart():
    samples = np.zeros((4, 3, 2, 2), np.float32)
    samples[:2, :, 0, 0] = 1.0                    # two pion tracks, 1 MIP in every layer
    samples[1, 2, 0, 0] = 0.0                     # the second misses layer 3
    samples[2:, 0, 0, 0] = 100.0                  # two pion showers
    samples[2, 1, 1, 1] = 10.0                    # the first also hits layer 2
    conditions = np.array([[10.0, 1.0]] * 4, np.float32)
    table = _tool().occupancy_table(conditions, samples, split_mip=50.0)
    assert set(table) == {(1, "tracks"), (1, "showers")}
    n, occupancy = table[1, "tracks"]
    assert n == 2 and occupancy == pytest.approx([1.0, 1.0, 0.5])
    n, occupancy = table[1, "showers"]
    assert n == 2 and occupancy == pytest.approx([1.0, 0.5, 0.0])


def test_the_bar_per_layer_with_its_binomial_error():
    reference = np.zeros((400, 2), bool)
    reference[:200, 0] = True                     # layer 1 hit in half of the events
    reference[:, 1] = True                        # layer 2 always
    generated = reference.copy()
    generated[:20, 0] = False                     # 10 % fewer layer-1 hits
    ref, gen, deviation, error = _tool().bar_deviation(reference, generated)
    np.testing.assert_allclose(ref, [0.5, 1.0])
    np.testing.assert_allclose(gen, [0.45, 1.0])
    np.testing.assert_allclose(deviation, [0.1, 0.0], atol=1e-12)
    # sqrt(0.45 * 0.55 / 400 + 0.9**2 * 0.25 / 400) / 0.5: the error of one 400-event draw
    assert error[0] == pytest.approx(0.0672, abs=1e-3) and error[1] == 0.0


def test_a_run_without_a_generator_is_named(tmp_path):
    with pytest.raises(SystemExit, match="generator.keras"):
        _tool().main([str(tmp_path)])
