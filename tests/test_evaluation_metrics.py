"""Metrics against hand-computed values and scipy on small samples."""

import json

import numpy as np
import pytest
from scipy import stats

from ddsim_gan.evaluation import metrics as M


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def test_wasserstein_matches_scipy_and_shift(rng):
    a, b = rng.normal(size=3000), rng.exponential(size=2000)
    assert M.wasserstein_1d(a, b) == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-10)
    ref, gen = rng.normal(0, 2, 20000), rng.normal(0, 2, 20000) + 0.6
    assert M.wasserstein_over_sigma(ref, gen) == pytest.approx(0.3, abs=0.03)


def test_ks_matches_scipy(rng):
    a, b = rng.normal(size=500), rng.normal(0.2, 1, 300)
    assert M.ks_statistic(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic)
    ints_a, ints_b = rng.integers(0, 5, 400), rng.integers(0, 6, 300)   # with ties
    assert M.ks_statistic(ints_a, ints_b) == pytest.approx(stats.ks_2samp(ints_a, ints_b).statistic)


def test_separation_power_limits(rng):
    a = rng.normal(size=1000)
    assert M.separation_power(a, a.copy()) == pytest.approx(0.0)
    assert M.separation_power(a, a + 100.0) == pytest.approx(1.0)
    assert M.separation_power(a, a - 100.0) == pytest.approx(1.0)
    # hand-computed: h1 = (1/2, 1/2), h2 = (1, 0) -> ½[(½)²/(3/2) + (½)²/(½)] = 1/3
    assert M.separation_power([0.2, 0.7], [0.2, 0.3], bins=np.array([0, 0.5, 1.0])) \
        == pytest.approx(1 / 3)


def test_kl_and_js(rng):
    a = rng.normal(size=2000)
    assert M.binned_kl(a, a.copy()) == pytest.approx(0.0, abs=1e-9)
    assert M.binned_js(a, a.copy()) == pytest.approx(0.0, abs=1e-9)
    assert 0 < M.binned_js(a, a + 100) <= np.log(2) + 1e-12
    assert M.binned_js(a, a + 100) == pytest.approx(np.log(2), rel=1e-3)
    b = rng.normal(0.5, 1, 2000)
    assert 0 < M.binned_js(a, b) < M.binned_kl(a, b) < np.inf
    # hand-computed with given edges and no pseudo-count
    p, q = np.array([0.25, 0.75]), np.array([0.5, 0.5])
    ref, gen = [0.1, 0.6, 0.7, 0.8], [0.1, 0.2, 0.6, 0.7]
    edges = np.array([0.0, 0.5, 1.0])
    assert M.binned_kl(ref, gen, edges, epsilon=0) == pytest.approx(np.sum(p * np.log(p / q)))


def test_shared_edges_cover_both_samples():
    edges = M.shared_edges(np.arange(10.0), np.array([-5.0, 20.0]), bins=5)
    assert edges[0] == -5.0 and edges[-1] > 20.0
    assert np.histogram(np.arange(10.0), edges)[0].sum() == 10
    assert len(M.shared_edges(np.ones(50), np.ones(50))) == 2       # constant sample


def test_efficiency_ratios_identical_and_shifted(rng):
    values = rng.normal(size=20000)
    index = rng.integers(0, 4, 20000)
    same = M.efficiency_ratios(values, values, index, index)
    assert same["ratio"].shape == (4, 5)
    np.testing.assert_allclose(same["ratio"], 1.0)
    np.testing.assert_allclose(same["eff_ref"], [[0.9, 0.75, 0.5, 0.25, 0.1]] * 4, atol=0.01)
    other = rng.normal(size=20000)
    indep = M.efficiency_ratios(values, other, index, index)
    assert np.all(np.abs(indep["ratio"] - 1) < 5 * indep["error"] + 1e-12)
    shifted = M.efficiency_ratios(values, other + 0.5, index, index)
    assert np.all(shifted["ratio"] > 1.0)
    packed = np.stack([values, index], 1)
    assert M.efficiency_mean_deviation(packed, packed) == pytest.approx(0.0)


def test_fpd(rng):
    ref, gen = rng.normal(size=(6000, 4)), rng.normal(size=(6000, 4))
    value, error = M.frechet_physics_distance(ref, gen, num_points=5, num_batches=5)
    assert error >= 0 and value <= max(3 * error, 1e-3)
    shifted, shifted_error = M.frechet_physics_distance(ref, gen + 0.5, num_points=5,
                                                        num_batches=5)
    assert shifted > 0.5 and shifted > 5 * shifted_error   # |Δμ|² = 4·0.25 = 1 (unit σ)
    assert shifted == pytest.approx(1.0, abs=0.15)
    # the Fréchet distance of two Gaussians, by hand: equal covariances -> |Δμ|²
    assert M.frechet_distance(np.zeros(2), np.eye(2), np.ones(2), np.eye(2)) == pytest.approx(2.0)
    assert M.frechet_distance(np.zeros(1), np.eye(1), np.zeros(1), 4 * np.eye(1)) \
        == pytest.approx(1.0)   # (σ1 − σ2)² = (1 − 2)²


def test_kpd_unbiased_and_kernel_expansion(rng):
    x, y = rng.normal(size=(300, 3)), rng.normal(0.1, 1.2, size=(250, 3))
    for degree in (3, 4):
        kernel = lambda a, b: (a @ b.T / 3 + 1) ** degree   # noqa: E731
        kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
        direct = ((kxx.sum() - np.trace(kxx)) / (300 * 299)
                  + (kyy.sum() - np.trace(kyy)) / (250 * 249) - 2 * kxy.mean())
        assert M.mmd_poly_unbiased(x, y, degree) == pytest.approx(direct, rel=1e-9)
    wide = rng.normal(size=(40, 30))   # many features: the blocked kernel-matrix path
    kernel = (wide @ (wide + 1).T / 30 + 1) ** 3
    assert M._poly_kernel_sum(wide, wide + 1, 3) == pytest.approx(kernel.sum(), rel=1e-10)
    ref, gen = rng.normal(size=(4000, 5)), rng.normal(size=(4000, 5))
    value, error = M.kernel_physics_distance(ref, gen, batch_size=2000)
    assert abs(value) < max(3 * error, 0.01)
    shifted, _ = M.kernel_physics_distance(ref, gen + 1.0, batch_size=2000)
    assert shifted > 0.5


def test_compare_floor_error_and_bar(rng):
    ref, ref2 = rng.normal(size=3000), rng.normal(size=3000)
    gen = rng.normal(0.5, 1, 3000)
    result = M.compare("W1/sigma:x", M.wasserstein_over_sigma, ref, gen, ref2, n_bootstrap=10,
                       bar=0.2)
    assert result.value == pytest.approx(0.5, abs=0.06)
    assert result.floor < 0.1 and result.error > 0 and result.floor_error > 0
    assert result.passed is False
    good = M.compare("W1/sigma:x", M.wasserstein_over_sigma, ref, ref2, ref2, bar=0.2,
                     n_bootstrap=5)
    assert good.passed is True
    no_bar = M.compare("KS", M.ks_statistic, ref, gen, None, n_bootstrap=0)
    assert no_bar.passed is None and np.isnan(no_bar.floor)
    assert M.compare("x", M.ks_statistic, ref, gen, ref2, bar=0.9, higher_is_better=True,
                     n_bootstrap=0).passed is False
    as_dict = result.to_dict()
    json.dumps(as_dict)
    assert as_dict["name"] == "W1/sigma:x" and as_dict["bar"] == 0.2
    again = M.compare("W1/sigma:x", M.wasserstein_over_sigma, ref, gen, ref2, n_bootstrap=10,
                      bar=0.2)
    assert again.error == result.error            # reproducible with the same seed


def test_classifier_auc_and_jsd():
    from ddsim_gan.evaluation.classifier import auc_mann_whitney, classifier_two_sample_test

    rng = np.random.default_rng(7)
    pos, neg = rng.normal(1, 1, 400), rng.normal(0, 1, 300)
    auc, err = auc_mann_whitney(pos, neg)
    assert auc == pytest.approx(np.mean(pos[:, None] > neg[None, :]))
    assert 0 < err < 0.05
    same = classifier_two_sample_test(rng.normal(size=(3000, 6)), rng.normal(size=(3000, 6)))
    assert abs(same["auc"] - 0.5) < 4 * same["auc_error"] + 0.02
    assert same["jsd"] < 0.05 and same["n_test"] == 1800 and same["n_train"] == 4200
    # nothing to learn: the validation loss stops improving and ends the training, not the cap
    assert same["converged"] and 10 < same["epochs_run"] < 400
    different = classifier_two_sample_test(rng.normal(size=(3000, 6)),
                                           rng.normal(2.0, 1, size=(3000, 6)), epochs=5)
    assert different["auc"] > 0.9
    assert different["epochs_run"] == 5 and not different["converged"]
    assert 0.3 < different["jsd"] <= np.log(2)
    images = rng.exponential(size=(500, 4, 4, 2))                   # low-level input
    result = classifier_two_sample_test(images, images * 3, epochs=5)
    assert result["auc"] > 0.9


def test_empty_and_non_finite_samples_are_refused_with_the_index():
    from ddsim_gan.evaluation.metrics import wasserstein_over_sigma

    with pytest.raises(ValueError, match="ref: empty sample"):
        wasserstein_over_sigma([], [1.0])
    with pytest.raises(ValueError, match=r"gen: 2 non-finite values \(first at flattened index 1: nan"):
        wasserstein_over_sigma([1.0, 2.0, 3.0], [1.0, np.nan, np.inf])
