"""The DarkSHINE reference simulator: contract, reproducibility and the physics it must carry."""

import numpy as np
import pytest

from ddsim_gan import detectors
from ddsim_gan.detectors import ConditionError


@pytest.fixture(scope="module")
def ecal():
    return detectors.get("darkshine")


@pytest.fixture(scope="module")
def events(ecal):
    return ecal.simulate(3000, seed=11)


def test_registry_returns_one_described_detector(ecal):
    assert detectors.get("darkshine") is ecal
    assert "darkshine" in detectors.names()
    assert ecal.condition_names == ("E_total",)
    assert ecal.sample_shape == (20, 20, 11)
    assert ecal.units == {"E_total": "MeV", "samples": "MeV"}
    with pytest.raises(KeyError, match="known detectors"):
        detectors.get("no-such-detector")


def test_simulate_shapes_dtypes_and_units(events, ecal):
    conditions, samples = events
    assert conditions.shape == (3000, 1) and conditions.dtype == np.float32
    assert samples.shape == (3000, 20, 20, 11) and samples.dtype == np.float32
    low, high = ecal.condition_ranges[0]
    assert conditions.min() >= low and conditions.max() <= high
    assert np.isfinite(samples).all() and samples.min() >= 0


def test_same_seed_same_showers_other_seed_other_showers(ecal):
    a = ecal.simulate(50, seed=5)
    b = ecal.simulate(50, seed=5)
    c = ecal.simulate(50, seed=6)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_readout_threshold_and_sparsity(events, ecal):
    _, samples = events
    hits = samples[samples > 0]
    assert hits.min() >= ecal.threshold
    occupancy = (samples > 0).reshape(len(samples), -1).mean(axis=1)
    assert np.median(occupancy) < 0.03  # a few dozen of 4400 crystals fire


def test_total_energy_follows_the_condition_with_readout_smearing(events):
    conditions, samples = events
    ratio = samples.reshape(len(samples), -1).sum(axis=1) / conditions[:, 0]
    assert 0.98 < ratio.mean() < 1.0  # threshold losses make it slightly low
    assert 0.002 < ratio.std() < 0.03  # but it does fluctuate


def test_longitudinal_profile_peaks_early_and_moves_deeper_with_energy(events):
    conditions, samples = events
    layers = samples.sum(axis=(1, 2))
    assert np.argmax(layers.mean(axis=0)) in (1, 2)  # t_max ~ 6 X0 = 7 cm at 8 GeV
    depth = (layers * np.arange(11)).sum(axis=1) / layers.sum(axis=1)
    energy = conditions[:, 0]
    assert depth[energy > 7000].mean() > depth[(energy > 300) & (energy < 1500)].mean()


def test_recoil_electron_is_deflected_more_at_low_energy(events):
    conditions, samples = events
    profile_x = samples.sum(axis=(2, 3))
    centre_x = (profile_x * np.arange(20)).sum(axis=1) / profile_x.sum(axis=1)
    energy = conditions[:, 0]
    high, mid = centre_x[energy > 7000], centre_x[(energy > 1000) & (energy < 3000)]
    assert 9.6 < high.mean() < 10.6  # 1.5 cm deflection at 8 GeV
    assert mid.mean() > high.mean() + 0.5 and mid.std() > 2 * high.std()


def test_simulate_at_reproduces_requested_conditions(ecal):
    energies = np.array([[500.0], [4000.0], [7900.0]], dtype=np.float32)
    samples = ecal.simulate_at(np.repeat(energies, 200, axis=0), seed=1)
    totals = samples.reshape(3, 200, -1).sum(axis=2).mean(axis=1)
    np.testing.assert_allclose(totals, energies[:, 0], rtol=0.03)


def test_bad_conditions_name_the_problem(ecal):
    with pytest.raises(ConditionError, match=r"expected \(N, 1\)"):
        ecal.simulate_at(np.ones((4, 2)))
    bad = np.full((5, 1), 1000.0)
    bad[3] = np.nan
    with pytest.raises(ConditionError, match="row 3"):
        ecal.simulate_at(bad)
    with pytest.raises(ConditionError, match="outside the simulated range"):
        ecal.check_conditions([[1.0e5]], check_range=True)
