"""The LHCb RICH reference simulator: contract, reproducibility and the physics it must carry."""

import numpy as np
import pytest
from scipy import stats

from ddsim_gan import detectors
from ddsim_gan.detectors import ConditionError
from ddsim_gan.detectors.lhcb_rich import cherenkov_threshold

E, MU, PI, K, P = range(5)
DLLE, DLLMU, DLLK, DLLP, DLLBT = range(5)


@pytest.fixture(scope="module")
def rich():
    return detectors.get("lhcb_rich")


@pytest.fixture(scope="module")
def tracks(rich):
    return rich.simulate(20000, seed=11)


def at(rich, momentum, eta, hits, species, n=4000, seed=0):
    """DLLs of ``n`` tracks with the same conditions."""
    conditions = np.tile(np.array([[momentum, eta, hits, species]], np.float32), (n, 1))
    return rich.simulate_at(conditions, seed=seed)


def iqr(x):
    return np.subtract(*np.percentile(x, [75, 25]))


def test_registry_returns_one_described_detector(rich):
    assert detectors.get("lhcb_rich") is rich
    assert "lhcb_rich" in detectors.names()
    assert rich.condition_names == ("P", "eta", "nSPDHits", "species")
    assert rich.conditions[3].labels == ("e", "mu", "pi", "K", "p")
    assert rich.sample_shape == (5,) and rich.axes is None and not rich.non_negative
    assert rich.units == {"P": "GeV/c", "eta": "", "nSPDHits": "", "species": "",
                          "RichDLLe": "", "RichDLLmu": "", "RichDLLk": "", "RichDLLp": "",
                          "RichDLLbt": ""}


def test_thresholds_are_the_design_numbers():
    masses = np.array([0.1395704, 0.493677, 0.9382721])
    np.testing.assert_allclose(cherenkov_threshold(masses, 1.0014), [2.64, 9.33, 17.7], rtol=0.01)
    np.testing.assert_allclose(cherenkov_threshold(masses, 1.0005), [4.41, 15.6, 29.7], rtol=0.01)


def test_simulate_shapes_dtypes_and_condition_spectrum(tracks, rich):
    conditions, samples = tracks
    assert conditions.shape == (20000, 4) and conditions.dtype == np.float32
    assert samples.shape == (20000, 5) and samples.dtype == np.float32
    assert np.isfinite(samples).all() and (samples < 0).any()
    ranges = rich.condition_ranges
    assert (conditions >= ranges[:, 0]).all() and (conditions <= ranges[:, 1]).all()
    momentum, _, hits, species = conditions.T
    np.testing.assert_array_equal(hits, np.round(hits))
    np.testing.assert_array_equal(species, np.round(species))
    assert np.median(momentum) == pytest.approx(np.sqrt(2.0 * 150.0), rel=0.05)  # log-uniform
    assert stats.skew(hits) > 0.5 and 200 < hits.mean() < 360
    fractions = np.bincount(species.astype(int), minlength=5) / len(species)
    assert fractions[PI] > 0.65
    assert fractions[PI] > fractions[K] > fractions[P] > fractions[E] > fractions[MU]


def test_same_seed_same_dlls_other_seed_other_dlls(rich):
    a = rich.simulate(500, seed=5)
    b = rich.simulate(500, seed=np.random.SeedSequence(5))
    c = rich.simulate(500, seed=6)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_below_kaon_threshold_k_p_and_bt_tie_and_kaons_form_a_spike(rich):
    below = [at(rich, 6.0, 3.5, 200, species, seed=species) for species in (PI, K)]
    for dll in below:  # K and p give no ring in either radiator: their likelihoods are identical
        np.testing.assert_array_equal(dll[:, DLLK], dll[:, DLLP])
        np.testing.assert_array_equal(dll[:, DLLK], dll[:, DLLBT])
    pions, kaons = below
    assert np.median(kaons[:, DLLK]) > 5 > -5 > np.median(pions[:, DLLK])
    above = at(rich, 30.0, 3.5, 200, K, seed=7)
    assert iqr(kaons[:, DLLK]) < 0.45 * iqr(above[:, DLLK])  # the spike
    assert iqr(kaons[:, DLLK]) < 0.35 * iqr(pions[:, DLLK])


def test_above_threshold_kaons_separate_from_pions(rich):
    kaons, pions = at(rich, 30.0, 3.5, 200, K, seed=1), at(rich, 30.0, 3.5, 200, PI, seed=2)
    gap = np.median(kaons[:, DLLK]) - np.median(pions[:, DLLK])
    assert gap > 3.0 * max(iqr(kaons[:, DLLK]), iqr(pions[:, DLLK]))
    assert np.mean(kaons[:, DLLK] > 0) > 0.9 and np.mean(pions[:, DLLK] > 0) < 0.05
    assert not np.array_equal(kaons[:, DLLK], kaons[:, DLLP])  # K radiates, p does not


def test_no_ring_means_exactly_zero(rich):
    hadrons = at(rich, 2.3, 3.5, 300, PI, n=500)  # below every hadron threshold
    assert (hadrons[:, [DLLK, DLLP, DLLBT]] == 0).all() and (hadrons[:, DLLMU] != 0).any()
    outside = at(rich, 40.0, 5.3, 300, K, n=500)  # beyond both acceptances
    assert (outside == 0).all()


def test_resolution_degrades_with_occupancy_and_at_the_acceptance_edge(rich):
    def separation(eta, hits):
        kaons = at(rich, 30.0, eta, hits, K, seed=3)[:, DLLK]
        pions = at(rich, 30.0, eta, hits, PI, seed=4)[:, DLLK]
        misid = np.mean(pions > 0)
        return (np.median(kaons) - np.median(pions)) / (iqr(kaons) + iqr(pions)), misid

    quiet, busy, edge = separation(3.5, 50), separation(3.5, 900), separation(2.0, 50)
    assert busy[0] < 0.85 * quiet[0] and busy[1] > 1.5 * quiet[1]
    assert edge[0] < 0.6 * quiet[0]


def test_heavy_tails(rich):
    for species in (PI, K):
        dll = at(rich, 30.0, 3.5, 500, species, n=8000, seed=species)[:, DLLK]
        assert stats.kurtosis(dll) > 1.0
        robust_sigma = np.subtract(*np.percentile(dll, [84.13, 15.87])) / 2
        outside = np.mean(np.abs(dll - np.median(dll)) > 3 * robust_sigma)
        assert outside > 3 * 0.0027  # Gaussian: 0.27 %


def test_bad_conditions_name_the_problem(rich):
    with pytest.raises(ConditionError, match=r"expected \(N, 4\)"):
        rich.simulate_at(np.ones((4, 3)))
    good = np.tile(np.array([[10.0, 3.0, 200.0, PI]]), (5, 1))
    bad = good.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ConditionError, match="row 3"):
        rich.simulate_at(bad)
    bad = good.copy()
    bad[2, 3] = 2.5
    with pytest.raises(ConditionError, match="row 2.*species"):
        rich.simulate_at(bad)
    bad = good.copy()
    bad[1, 0] = -1.0
    with pytest.raises(ConditionError, match="row 1.*P must be"):
        rich.simulate_at(bad)
    with pytest.raises(ConditionError, match="outside the simulated range"):
        rich.check_conditions([[500.0, 3.0, 100.0, 2.0]], check_range=True)
