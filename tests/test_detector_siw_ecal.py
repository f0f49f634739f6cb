"""The SiW-ECAL reference simulator: contract, reproducibility and the physics it must carry."""

import numpy as np
import pytest

from ddsim_gan import detectors
from ddsim_gan.detectors import ConditionError
from ddsim_gan.detectors.siw_ecal import SiWECAL


def _beam(n, energy_gev, species):
    conditions = np.zeros((n, 2), dtype=np.float32)
    conditions[:, 0] = energy_gev
    conditions[:, 1] = species
    return conditions


def _depth(samples):
    layers = samples.sum(axis=(2, 3))
    return (layers * np.arange(15)).sum(axis=1) / layers.sum(axis=1)


@pytest.fixture(scope="module")
def ecal():
    return detectors.get("siw_ecal")


@pytest.fixture(scope="module")
def electrons(ecal):
    return ecal.simulate_at(_beam(2000, 10.0, 0), seed=21)


@pytest.fixture(scope="module")
def pions(ecal):
    return ecal.simulate_at(_beam(2000, 10.0, 1), seed=22)


def test_registry_returns_one_described_detector(ecal):
    assert detectors.get("siw_ecal") is ecal
    assert "siw_ecal" in detectors.names()
    assert ecal.condition_names == ("E_beam", "species")
    assert ecal.conditions[1].labels == ("e-", "pi-")
    assert ecal.sample_shape == (15, 32, 32)
    assert ecal.axes == ("layer", "x", "y")
    assert ecal.cell_size[1:] == (5.0, 5.0) and 14.0 < ecal.cell_size[0] < 16.0
    assert ecal.units == {"E_beam": "GeV", "species": "", "samples": "MIP"}


def test_simulate_draws_the_seed_beam_with_valid_shapes(ecal):
    conditions, samples = ecal.simulate(400, seed=3)
    assert conditions.shape == (400, 2) and conditions.dtype == np.float32
    assert samples.shape == (400, 15, 32, 32) and samples.dtype == np.float32
    assert np.all(conditions[:, 0] == 10.0)  # the seed's 10 GeV beam
    assert set(np.unique(conditions[:, 1])) == {0.0, 1.0}
    assert 0.4 < conditions[:, 1].mean() < 0.6
    assert np.isfinite(samples).all() and samples.min() >= 0
    assert samples[samples > 0].min() >= ecal.threshold  # 0.5 MIP noise threshold


def test_same_seed_same_showers_other_seed_other_showers(ecal):
    a = ecal.simulate(40, seed=5)
    b = ecal.simulate(40, seed=5)
    c = ecal.simulate(40, seed=6)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    sequence = np.random.SeedSequence(7)
    np.testing.assert_array_equal(ecal.simulate(10, seed=sequence)[1],
                                  ecal.simulate(10, seed=np.random.SeedSequence(7))[1])


def test_electron_showers_are_sparse_and_peak_in_layers_4_to_7(electrons):
    layers = electrons.sum(axis=(2, 3)).mean(axis=0)
    assert np.argmax(layers) in (3, 4, 5, 6)  # t_max ~ 5.5 X0 of tungsten
    assert layers[0] < 0.05 * layers.max() and layers[-1] < 0.1 * layers.max()
    occupancy = (electrons > 0).reshape(len(electrons), -1).mean(axis=1)
    assert np.median(occupancy) < 0.02  # ~160 of 15 360 cells
    hottest = electrons.reshape(len(electrons), -1).max(axis=1)
    assert 30 < np.median(hottest) < 150  # the shower core in one 5 mm cell, in MIP


def test_first_layer_is_hit_in_a_sizeable_minority_of_events(ecal, electrons):
    seed_hits = ecal.hits(electrons)  # the seed's hits: above 5 % of the hottest cell
    layer0 = seed_hits[:, 0].any(axis=(1, 2)).mean()
    assert 0.15 < layer0 < 0.5
    assert seed_hits[:, 3].any(axis=(1, 2)).mean() > 0.99
    assert 25 < seed_hits.reshape(len(electrons), -1).sum(axis=1).mean() < 70
    # above the noise threshold the primary's own crossing is always there
    cells0 = (electrons[:, 0] > 0).reshape(len(electrons), -1).sum(axis=1)
    assert (cells0 >= 1).mean() > 0.98 and np.median(cells0) <= 2


def test_sum_energy_resolution_is_a_sampling_term(electrons):
    total = electrons.reshape(len(electrons), -1).sum(axis=1)
    assert 600 < total.mean() < 1400  # ~95 MIP per GeV
    stochastic = total.std() / total.mean() * np.sqrt(10.0)
    assert 0.15 < stochastic < 0.25


def test_energy_scales_and_the_shower_moves_deeper(ecal):
    low = ecal.simulate_at(_beam(400, 2.0, 0), seed=1)
    high = ecal.simulate_at(_beam(400, 20.0, 0), seed=2)
    ratio = high.sum(axis=(1, 2, 3)).mean() / low.sum(axis=(1, 2, 3)).mean()
    assert 8.5 < ratio < 10.5  # linear up to leakage
    assert _depth(high).mean() > _depth(low).mean() + 0.5


def test_pions_leave_a_mip_track_and_shower_deeper(pions, electrons):
    cells0 = (pions[:, 0] > 0).reshape(len(pions), -1).sum(axis=1)
    assert (cells0 == 1).mean() > 0.98  # a single cell in the first layer
    mip = pions[:, 0].reshape(len(pions), -1).max(axis=1)
    assert 0.95 < np.median(mip) < 1.2  # Landau: most probable 1 MIP, mean above
    per_layer = (pions > 0).sum(axis=(2, 3))
    through = (per_layer <= 1).all(axis=1).mean()  # no interaction in 72.8 mm of tungsten
    assert 0.35 < through < 0.6  # exp(-72.8 / 99.4) = 0.48
    assert _depth(pions).mean() > _depth(electrons).mean() + 1.0
    total = pions.reshape(len(pions), -1).sum(axis=1)
    assert np.percentile(total, 95) > 10 * np.median(total)  # heavy tail of hadronic showers
    assert np.median(total) < 0.1 * electrons.reshape(len(electrons), -1).sum(axis=1).mean()


def test_sample_conditions_can_spread_the_energy():
    spread = SiWECAL(beam_energy_gev=None, electron_fraction=1.0)
    conditions = spread.sample_conditions(500, seed=2)
    assert conditions[:, 0].min() >= 1.0 and conditions[:, 0].max() <= 20.0
    assert conditions[:, 0].std() > 3.0 and np.all(conditions[:, 1] == 0)


def test_bad_conditions_name_the_row(ecal):
    with pytest.raises(ConditionError, match=r"expected \(N, 2\)"):
        ecal.simulate_at(np.ones((4, 3)))
    bad = _beam(5, 10.0, 0)
    bad[3, 0] = np.nan
    with pytest.raises(ConditionError, match="row 3"):
        ecal.simulate_at(bad)
    bad = _beam(5, 10.0, 0)
    bad[2, 1] = 0.5
    with pytest.raises(ConditionError, match=r"row 2 .*species"):
        ecal.simulate_at(bad)
    bad = _beam(5, 10.0, 1)
    bad[4, 0] = -1.0
    with pytest.raises(ConditionError, match="row 4"):
        ecal.simulate_at(bad)
    with pytest.raises(ConditionError, match="outside the simulated range"):
        ecal.check_conditions([[50.0, 0.0]], check_range=True)
