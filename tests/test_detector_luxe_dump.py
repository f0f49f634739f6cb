"""The LUXE beam-dump reference simulator: contract, reproducibility and the features it must carry."""

import numpy as np
import pytest

from ddsim_gan import detectors
from ddsim_gan.detectors import ConditionError

PHOTON, ELECTRON, POSITRON, NEUTRON = range(4)


@pytest.fixture(scope="module")
def dump():
    return detectors.get("luxe_dump")


@pytest.fixture(scope="module")
def particles(dump):
    return dump.simulate(200_000, seed=21)


def of(dump, species, n=50_000, seed=0):
    """``n`` particles of one species: columns x, y, p, phi_p, theta, t."""
    return dump.simulate_at(np.full((n, 1), species), seed=seed)


def test_registry_returns_one_described_detector(dump):
    assert detectors.get("luxe_dump") is dump
    assert "luxe_dump" in detectors.names()
    assert dump.condition_names == ("species",)
    assert dump.conditions[0].labels == ("photon", "electron", "positron", "neutron")
    assert dump.sample_shape == (6,) and dump.axes is None and not dump.non_negative
    assert dump.units == {"species": "", "x": "mm", "y": "mm", "p": "MeV", "phi_p": "rad",
                          "theta": "rad", "t": "ns"}
    assert dump.INNER_RADIUS_MM == 100.0


def test_simulate_shapes_dtypes_and_ranges(particles, dump):
    conditions, samples = particles
    assert conditions.shape == (200_000, 1) and conditions.dtype == np.float32
    assert samples.shape == (200_000, 6) and samples.dtype == np.float32
    assert np.isfinite(samples).all()
    x, y, p, phi, theta, t = samples.T
    assert (p > 0).all() and (t > 0).all()
    assert phi.min() >= -np.pi and phi.max() <= np.pi
    assert theta.min() >= 0 and theta.max() <= np.pi
    assert (x < 0).any() and (y < 0).any() and (phi < 0).any()


def test_species_abundances_photons_dominate_neutrons_many(particles, dump):
    counts = np.bincount(particles[0][:, 0].astype(int), minlength=4) / len(particles[0])
    np.testing.assert_allclose(counts, dump.SPECIES_FRACTIONS, atol=0.005)
    assert counts[PHOTON] > counts[NEUTRON] > counts[ELECTRON] > counts[POSITRON]


def test_same_seed_same_particles_other_seed_other_particles(dump):
    a = dump.simulate(2000, seed=5)
    b = dump.simulate(2000, seed=5)
    c = dump.simulate(2000, seed=6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_region_of_splits_at_the_inner_radius(dump):
    samples = np.zeros((4, 6), dtype=np.float32)
    samples[:, 0] = [0.0, 99.0, 100.0, -80.0]
    samples[:, 1] = [0.0, 0.0, 0.0, -80.0]
    np.testing.assert_array_equal(dump.region_of(samples), [0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"expected \(N, 6\)"):
        dump.region_of(np.zeros((3, 5)))


def test_dense_inner_core_sparse_halo_and_species_mix_per_region(particles, dump):
    conditions, samples = particles
    species = conditions[:, 0].astype(int)
    region = dump.region_of(samples)
    inner = region == 0
    assert 0.3 < inner.mean() < 0.5
    radius = np.hypot(samples[:, 0], samples[:, 1])
    inner_density = inner.sum() / (np.pi * 100.0 ** 2)
    halo_density = ((radius > 500) & (radius < 900)).sum() / (np.pi * (900.0 ** 2 - 500.0 ** 2))
    assert inner_density > 100 * halo_density > 0  # a dense core and a sparse but present halo
    mix_inner = np.bincount(species[inner], minlength=4) / inner.sum()
    mix_outer = np.bincount(species[~inner], minlength=4) / (~inner).sum()
    assert mix_inner[PHOTON] > 0.75 and mix_outer[PHOTON] < 0.55
    assert mix_outer[NEUTRON] > 4 * mix_inner[NEUTRON]


def test_backscattered_particles_cross_the_plane_backwards(particles):
    conditions, samples = particles
    species = conditions[:, 0].astype(int)
    backwards = samples[:, 4] > np.pi / 2
    assert 0.1 < backwards.mean() < 0.35
    assert backwards[species == NEUTRON].mean() > 2 * backwards[species == PHOTON].mean()
    # Back-scattered photons are Compton-degraded: none above m_e / 1.3 but the 511 keV line.
    p = samples[backwards & (species == PHOTON), 2]
    assert (p[np.abs(p - 0.511) > 0.02] < 0.394).all()
    assert (np.abs(p - 0.511) < 0.01).mean() > 0.1


def test_sharp_edges_frame_and_aperture(particles, dump):
    _, samples = particles
    x, y = samples[:, 0], samples[:, 1]
    assert np.abs(x).max() <= dump.PLANE_HALF_MM and np.abs(y).max() <= dump.PLANE_HALF_MM
    assert np.abs(x).max() > 0.99 * dump.PLANE_HALF_MM  # the frame is filled up to its edge
    half_x, half_y = dump.APERTURE_HALF_MM
    band = np.abs(x) < half_x - 50
    just_inside = (band & (np.abs(y) > half_y - 10) & (np.abs(y) <= half_y)).sum()
    just_outside = (band & (np.abs(y) > half_y) & (np.abs(y) <= half_y + 10)).sum()
    assert just_inside > 8 * just_outside > 0
    band = np.abs(y) < half_y - 20
    just_inside = (band & (np.abs(x) > half_x - 10) & (np.abs(x) <= half_x)).sum()
    just_outside = (band & (np.abs(x) > half_x) & (np.abs(x) <= half_x + 10)).sum()
    assert just_inside > 8 * just_outside > 0


def test_field_shaped_dump_sweeps_charged_core_by_charge(dump):
    for species, sign in ((ELECTRON, 1.0), (POSITRON, -1.0)):
        x, _, p, *_ = of(dump, species, 20_000).T
        fast = (p > 2000.0) & (p < 4000.0)  # only the core reaches such momenta: x = 147 mm GeV / p
        assert fast.mean() > 0.05
        shift = sign * x[fast]
        assert (shift > 0).mean() > 0.93
        np.testing.assert_allclose(np.median(shift * p[fast]), 147_000.0, rtol=0.1)


def test_heavy_tailed_momenta_and_neutrons_arrive_late(dump):
    photons, neutrons = of(dump, PHOTON), of(dump, NEUTRON)
    p1, p99 = np.percentile(photons[:, 2], [1, 99])
    assert p99 / p1 > 1e4
    assert np.median(neutrons[:, 5]) > 10 * np.median(photons[:, 5])
    slow = neutrons[:, 2] < 1.0  # below ~0.5 keV kinetic energy
    assert slow.mean() > 0.1 and np.min(neutrons[slow, 5]) > 1000.0
    fast_photon_time = np.median(photons[photons[:, 4] < 0.1, 5])
    assert 9.0 < fast_photon_time < 12.0  # 3 m from the dump face at c
    # Later neutrons are slower: time anti-correlates with momentum.
    assert np.corrcoef(np.log(neutrons[:, 2]), np.log(neutrons[:, 5]))[0, 1] < -0.5


def test_bad_conditions_name_the_problem(dump):
    with pytest.raises(ConditionError, match=r"expected \(N, 1\)"):
        dump.simulate_at(np.ones((4, 2)))
    bad = np.zeros((5, 1))
    bad[3] = np.nan
    with pytest.raises(ConditionError, match="row 3"):
        dump.simulate_at(bad)
    for value in (4.0, 1.5, -1.0):
        bad = np.zeros((5, 1))
        bad[2] = value
        with pytest.raises(ConditionError, match=r"row 2 has species = .*expected one of 0 \(photon\)"):
            dump.simulate_at(bad)
