"""The LHCb ECAL reference simulator: contract, reproducibility and the physics it must carry."""

import numpy as np
import pytest

from ddsim_gan import detectors
from ddsim_gan.detectors import ConditionError
from ddsim_gan.evaluation import observables


def _tracks(n, slope_x=0.0, slope_y=0.0, pz=20.0, seed=0, spread_mm=10.0):
    """Electrons around (1000, -1000) mm, uniformly spread over one cell, at fixed slopes."""
    rng = np.random.default_rng(seed)
    conditions = np.zeros((n, 6), dtype=np.float32)
    conditions[:, 0] = 1000.0 + rng.uniform(-spread_mm, spread_mm, n)
    conditions[:, 1] = -1000.0 + rng.uniform(-spread_mm, spread_mm, n)
    conditions[:, 2] = 12_620.0 + conditions[:, 1] * np.tan(3.601e-3)  # on the tilted face
    conditions[:, 3] = slope_x * pz
    conditions[:, 4] = slope_y * pz
    conditions[:, 5] = pz
    return conditions


@pytest.fixture(scope="module")
def ecal():
    return detectors.get("lhcb_ecal")


@pytest.fixture(scope="module")
def events(ecal):
    return ecal.simulate(3000, seed=11)


def test_registry_returns_one_described_detector(ecal):
    assert detectors.get("lhcb_ecal") is ecal
    assert "lhcb_ecal" in detectors.names()
    assert ecal.condition_names == ("x", "y", "z", "px", "py", "pz")
    assert ecal.sample_shape == (30, 30)
    assert ecal.axes == ("x", "y") and ecal.cell_size == (20.0, 20.0)
    assert ecal.units == {"x": "mm", "y": "mm", "z": "mm", "px": "GeV/c", "py": "GeV/c",
                          "pz": "GeV/c", "samples": "MeV"}


def test_simulate_shapes_dtypes_and_ranges(events, ecal):
    conditions, samples = events
    assert conditions.shape == (3000, 6) and conditions.dtype == np.float32
    assert samples.shape == (3000, 30, 30) and samples.dtype == np.float32
    assert ecal.out_of_range_rows(conditions).size == 0
    assert np.isfinite(samples).all() and samples.min() >= 0
    assert samples[samples > 0].min() >= ecal.threshold
    # particles come from the interaction point: slopes follow the position
    assert np.corrcoef(conditions[:, 0], conditions[:, 3] / conditions[:, 5])[0, 1] > 0.9
    assert np.corrcoef(conditions[:, 1], conditions[:, 4] / conditions[:, 5])[0, 1] > 0.99
    occupancy = (samples > 0).reshape(len(samples), -1).mean(axis=1)
    assert np.median(occupancy) < 0.06  # a few dozen of 900 cells


def test_same_seed_same_showers_other_seed_other_showers(ecal):
    a = ecal.simulate(50, seed=5)
    b = ecal.simulate(50, seed=5)
    c = ecal.simulate(50, seed=6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_total_energy_scales_with_momentum_and_resolution_is_shashlik_like(events):
    conditions, samples = events
    momentum = np.sqrt((conditions[:, 3:] ** 2).sum(axis=1)) * 1000.0
    ratio = samples.reshape(len(samples), -1).sum(axis=1) / momentum
    assert 0.97 < ratio.mean() < 1.01  # calibrated MeV, small leakage and threshold losses
    low, high = momentum < 10_000, momentum > 50_000
    stochastic = ratio[low].std() * np.sqrt(momentum[low].mean() / 1000.0)
    assert 0.07 < stochastic < 0.13  # LHCb: (8.5-9.5) %/sqrt(E)
    assert ratio[high].std() < 0.5 * ratio[low].std()


def test_energy_centre_follows_the_sub_cell_impact_point(ecal):
    conditions = _tracks(400, seed=1)
    samples = ecal.simulate_at(conditions, seed=2)
    impact = ecal.impact_point(conditions)
    assert np.abs(impact).max() <= 10.0
    for axis in (0, 1):
        centre = observables.energy_centre(samples, axis, 20.0)
        assert np.corrcoef(impact[:, axis], centre)[0, 1] > 0.9
        assert 0.7 < np.polyfit(impact[:, axis], centre, 1)[0] < 1.5


def test_asymmetry_grows_with_the_angle_and_follows_the_direction(ecal):
    means = []
    for slope in (0.0, 0.05, 0.1, 0.2, 0.3):  # along (0.8, 0.6), in the plane of the face
        conditions = _tracks(400, 0.8 * slope, 0.6 * slope, seed=3)
        means.append(ecal.asymmetry(ecal.simulate_at(conditions, seed=4), conditions).mean())
    assert abs(means[0]) < 0.1
    assert np.all(np.diff(means[:4]) > 0.1)  # then it saturates: the core is on one side
    assert means[4] > 0.7

    conditions = _tracks(400, -0.2, 0.1, seed=5)
    samples = ecal.simulate_at(conditions, seed=6)
    assert ecal.asymmetry(samples, conditions).mean() > 0.5
    reversed_direction = conditions.copy()
    reversed_direction[:, 3:5] *= -1
    assert ecal.asymmetry(samples, reversed_direction).mean() < -0.5
    assert abs(ecal.asymmetry(samples, conditions, orthogonal=True).mean()) < 0.1
    shift = observables.energy_centre(samples, 0, 20.0) - ecal.impact_point(conditions)[:, 0]
    assert shift.mean() < -15.0  # the shower is displaced along -x, where px points


def test_asymmetry_over_the_reference_spectrum(events, ecal):
    conditions, samples = events
    asymmetry = ecal.asymmetry(samples, conditions)
    assert asymmetry.shape == (3000,) and np.all(np.abs(asymmetry) <= 1.0)
    tan_theta = np.hypot(conditions[:, 3], conditions[:, 4]) / conditions[:, 5]
    assert np.corrcoef(tan_theta, asymmetry)[0, 1] > 0.3
    assert asymmetry[tan_theta > 0.2].mean() > asymmetry[tan_theta < 0.08].mean() + 0.2
    with pytest.raises(ValueError, match="samples"):
        ecal.asymmetry(samples[:10], conditions[:11])


def test_bad_conditions_name_the_row(ecal):
    with pytest.raises(ConditionError, match=r"expected \(N, 6\)"):
        ecal.simulate_at(np.ones((4, 5)))
    bad = _tracks(5, 0.1, 0.0)
    bad[3, 4] = np.inf
    with pytest.raises(ConditionError, match=r"row 3, column 4 \(py\)"):
        ecal.simulate_at(bad)
    bad = _tracks(5)
    bad[2, 5] = -3.0
    with pytest.raises(ConditionError, match="row 2"):
        ecal.simulate_at(bad)
    with pytest.raises(ConditionError, match="outside the simulated range"):
        ecal.check_conditions(np.array([[0.0, 0.0, 12_620.0, 0.0, 0.0, 500.0]]),
                              check_range=True)
