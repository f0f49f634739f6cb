"""The in-graph NNLS solver against scipy.optimize.nnls, and the NNLS penalty and spectrum."""

import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import nnls as scipy_nnls

from ddsim_gan.models.nnls import nnls
from ddsim_gan.models.penalties import NNLSPenalty, StepTensors, soft_histogram
from ddsim_gan.models.spectrum import ConditionSpectrum


def _problems(seed, count):
    rng = np.random.default_rng(seed)
    for trial in range(count):
        m = int(rng.integers(8, 40))
        n = int(rng.integers(2, min(m, 25)))          # m > n: full column rank, unique solution
        if trial % 2:
            a = rng.standard_normal((m, n))
            b = rng.standard_normal(m)
        else:                                           # response-matrix-like: non-negative
            a = np.abs(rng.standard_normal((m, n)))
            b = a @ np.clip(rng.standard_normal(n), 0, None) + 0.01 * rng.standard_normal(m)
        yield a, b


@pytest.mark.parametrize("seed", [0, 1])
def test_solutions_match_scipy_on_random_problems(seed):
    solve = tf.function(nnls, reduce_retracing=True)
    for a, b in _problems(seed, 20):
        x, residual = solve(a, b)
        expected, expected_residual = scipy_nnls(a, b)
        np.testing.assert_allclose(x.numpy(), expected, atol=1e-8)
        np.testing.assert_allclose(residual.numpy(), expected_residual, rtol=1e-8, atol=1e-10)
        assert (x.numpy() >= 0).all()


def test_underdetermined_problems_reach_scipys_residual():
    rng = np.random.default_rng(3)
    for _ in range(10):
        a, b = rng.standard_normal((6, 14)), rng.standard_normal(6)
        x, residual = nnls(a, b)
        assert (x.numpy() >= 0).all()
        assert residual.numpy() <= scipy_nnls(a, b)[1] + 1e-8


def test_soft_histogram_tends_to_numpy_histogram():
    values = np.random.default_rng(0).normal(5.0, 2.0, 5000)
    edges = np.linspace(-2, 12, 29)
    soft = soft_histogram(tf.constant(values), edges, bandwidth=1e-4)[:, 0].numpy()
    hard, _ = np.histogram(values, edges)
    np.testing.assert_allclose(soft, hard, atol=1.0)


def _step(conditions, real_totals, fake_totals):
    """A step whose 'samples' are one cell holding the total energy (identity transform)."""
    as_tensor = lambda t: tf.constant(np.asarray(t, np.float32)[:, None])  # noqa: E731
    return StepTensors(conditions=as_tensor(conditions), encoded=None, real=as_tensor(real_totals),
                       fake=as_tensor(fake_totals), critic=None, to_physical=lambda x: x)


def test_nnls_penalty_vanishes_for_a_faithful_response_and_has_gradients():
    rng = np.random.default_rng(1)
    penalty = NNLSPenalty(np.linspace(0, 8000, 9), np.linspace(0, 8400, 22), weight=1.0)
    conditions = rng.uniform(0, 8000, 4000)
    faithful = penalty(_step(conditions, conditions, conditions)).numpy()
    shifted = penalty(_step(conditions, conditions, 0.6 * conditions)).numpy()
    assert faithful < 0.1 * shifted

    fake = tf.Variable(np.float32(0.6 * conditions)[:, None])
    step = _step(conditions, conditions, 0.6 * conditions)
    with tf.GradientTape() as tape:
        step.fake = fake * 1.0
        value = penalty(step)
    gradient = tape.gradient(value, fake).numpy()
    assert np.isfinite(gradient).all() and np.abs(gradient).sum() > 0


def test_condition_spectrum_unfolds_an_unknown_spectrum():
    """The sampling half of NNLS + CGAN: recover p(E) from observed totals through the response."""
    rng = np.random.default_rng(2)
    edges = np.linspace(0, 8000, 17)
    true_weights = rng.dirichlet(np.ones(16))
    truth = ConditionSpectrum(edges, true_weights)
    observed_conditions = truth.sample(40_000, seed=3)[:, 0]

    def response(conditions):          # a detector with 3 % resolution and 2 % loss
        return 0.98 * conditions[:, 0] * (1 + 0.03 * rng.standard_normal(len(conditions)))

    observed = response(observed_conditions[:, None])
    fitted = ConditionSpectrum.fit(response, observed, edges, np.linspace(0, 8400, 43),
                                   n_per_bin=3000, seed=4)
    assert np.abs(fitted.weights - truth.weights).sum() < 0.1
    resampled = fitted.sample(40_000, seed=5)
    assert abs(resampled.mean() - observed_conditions.mean()) < 0.02 * observed_conditions.mean()


def test_spectrum_round_trips_through_json(tmp_path):
    spectrum = ConditionSpectrum([0, 1, 2, 4], [0.2, 0.0, 0.8], residual=0.1)
    spectrum.save(tmp_path / "spectrum.json")
    loaded = ConditionSpectrum.load(tmp_path / "spectrum.json")
    np.testing.assert_array_equal(loaded.weights, spectrum.weights)
    np.testing.assert_array_equal(loaded.edges, spectrum.edges)
    with pytest.raises(ValueError, match="non-negative weights"):
        ConditionSpectrum([0, 1, 2], [0.0, 0.0])
