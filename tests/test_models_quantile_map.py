"""GridQuantileMap: a trained generator's raw output mapped onto the reference's, per condition;
GridQuantileHead.cdf, the inverse of its tables, that the map and the refinements stand on."""

import importlib.util

import keras
import numpy as np
import pytest
from scipy import stats
from scipy.special import erfinv, ndtr

from ddsim_gan.models.grid_quantiles import GridQuantileHead
from ddsim_gan.models.quantile_map import GridQuantileMap, quantile_mapped_sampler

LOG_P = (0, np.geomspace(1.0, 100.0, 9).tolist(), True)


def _momenta(n, seed):
    rng = np.random.default_rng(seed)
    return np.exp(rng.uniform(0.0, np.log(100.0), n))[:, None].astype(np.float32)


def test_cdf_inverts_the_interpolated_tables():
    momentum = _momenta(100_000, 0)
    samples = (2.0 * np.log(momentum) + np.random.default_rng(1).gamma(2.0, size=momentum.shape))
    head = GridQuantileHead(1, grid=[LOG_P]).adapt(samples.astype(np.float32), momentum)
    raw = np.random.default_rng(2).uniform(-2.5, 2.5, (2000, 1)).astype(np.float32)
    where = _momenta(2000, 3)
    physical = head.invert(keras.ops.convert_to_tensor(raw), keras.ops.convert_to_tensor(where))
    uniform = np.asarray(head.cdf(physical, keras.ops.convert_to_tensor(where)))
    np.testing.assert_allclose(uniform, ndtr(raw), atol=2e-3)
    # the PIT of the training samples through their own tables is not quite uniform (a node's
    # table is wider than the law at the node: too few PIT values in the tails); through
    # refined tables it is
    one_stage = stats.kstest(head.probability_transform(samples, momentum)[:, 0], "uniform")
    refined = GridQuantileHead(1, grid=[LOG_P], refinements=2).adapt(samples, momentum)
    refined_ks = stats.kstest(refined.probability_transform(samples, momentum)[:, 0], "uniform")
    assert one_stage.statistic > 0.03 and refined_ks.statistic < 0.01


def test_a_point_mass_spreads_over_its_run_of_levels():
    momentum = _momenta(100_000, 0)
    zero = np.random.default_rng(5).random(momentum.shape) < 0.3
    samples = np.where(zero, 0.0, 1.0 + np.random.default_rng(6).exponential(size=zero.shape))
    head = GridQuantileHead(1, grid=[LOG_P]).adapt(samples.astype(np.float32), momentum)
    pit = head.probability_transform(samples, momentum, np.random.default_rng(7))[:, 0]
    assert stats.kstest(pit, "uniform").statistic < 0.02
    assert pit[zero[:, 0]].max() < 0.33 and pit[~zero[:, 0]].min() > 0.27
    middle = head.probability_transform(samples[:1000], momentum[:1000])[:, 0]  # no draws
    assert np.ptp(middle[zero[:1000, 0]]) < 0.05      # the run's middle, about 0.15
    assert np.nanmean(middle[zero[:1000, 0]]) == pytest.approx(0.15, abs=0.03)


def _biased_generator_data(n=200_000, seed=0):
    """Reference raw units z ~ N(0, 1) in two correlated features; the 'generator' is off by a
    shift growing with log P, too narrow at high P, with the same correlation."""
    rng = np.random.default_rng(seed)
    momentum = _momenta(n, seed)
    log_p = np.log(momentum[:, 0]) / np.log(100.0)
    mixing = np.linalg.cholesky([[1.0, 0.7], [0.7, 1.0]])
    reference = rng.standard_normal((n, 2)) @ mixing.T
    generated = (rng.standard_normal((n, 2)) @ mixing.T) * (1.0 - 0.4 * log_p[:, None]) \
        + 0.5 * log_p[:, None]
    return momentum, generated, reference


def test_the_map_gives_the_reference_distribution_at_every_condition_and_keeps_the_copula():
    momentum, generated, reference = _biased_generator_data()
    quantile_map = GridQuantileMap(2, grid=[LOG_P]).adapt(generated, reference, momentum)
    test_momentum, test_generated, _ = _biased_generator_data(60_000, seed=1)
    mapped = np.asarray(quantile_map([test_generated.astype(np.float32), test_momentum]))
    for low, high in ((1.0, 3.0), (8.0, 12.0), (50.0, 100.0)):
        rows = (test_momentum[:, 0] >= low) & (test_momentum[:, 0] < high)
        for f in range(2):
            assert abs(test_generated[rows, f].mean()) > 0.1 or high < 5   # off before
            assert mapped[rows, f].mean() == pytest.approx(0.0, abs=0.04)
            assert mapped[rows, f].std() == pytest.approx(1.0, abs=0.05)
        rank_before = stats.spearmanr(test_generated[rows, 0], test_generated[rows, 1])[0]
        rank_after = stats.spearmanr(mapped[rows, 0], mapped[rows, 1])[0]
        assert rank_after == pytest.approx(rank_before, abs=0.02)


def _biased_sampler():
    """A head fitted on x ~ N(2 log P, 1) behind a 'generator' whose raw output is 0.6 z + 0.4."""
    momentum = _momenta(200_000, 0)
    truth = 2.0 * np.log(momentum) + np.random.default_rng(1).standard_normal(momentum.shape)
    head = GridQuantileHead(1, grid=[LOG_P], name="head").adapt(truth.astype(np.float32), momentum)
    conditions_in, noise_in = keras.Input((1,), name="conditions"), keras.Input((1,), name="noise")
    biased = keras.layers.Dense(1, kernel_initializer=keras.initializers.Constant(0.6),
                                bias_initializer=keras.initializers.Constant(0.4))
    sampler = keras.Model([conditions_in, noise_in], head([biased(noise_in), conditions_in]))
    return sampler, momentum, truth


def test_the_mapped_sampler_corrects_a_biased_generator_and_reloads(tmp_path):
    sampler, momentum, truth = _biased_sampler()
    mapped, quantile_map = quantile_mapped_sampler(sampler, momentum, truth, seed=3)
    at = np.full((40_000, 1), 20.0, np.float32)
    noise = np.random.default_rng(4).standard_normal((40_000, 1)).astype(np.float32)
    before, after = (np.asarray(s.predict([at, noise], verbose=0))[:, 0] for s in (sampler, mapped))
    mean, width = 2.0 * np.log(20.0), 1.0
    assert abs(before.mean() - mean) > 0.3 and before.std() < 0.8 * width
    assert after.mean() == pytest.approx(mean, abs=0.05)
    assert after.std() == pytest.approx(width, rel=0.06)
    mapped.save(tmp_path / "mapped.keras")
    reloaded = keras.saving.load_model(tmp_path / "mapped.keras")
    np.testing.assert_array_equal(np.asarray(reloaded.predict([at[:500], noise[:500]], verbose=0)),
                                  after[:500, None])
    assert reloaded.get_layer("quantile_map").node_maps.kernel_width == 0.8


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_a_mapped_sampler_serves_and_loads_under_jax(tmp_path):
    """The map holds only standard ops: its SavedModel serves the Keras model's samples for the
    served noise, and its .keras file gives them under JAX."""
    import tensorflow as tf

    from ddsim_gan.export.savedmodel import export_savedmodel, serving_noise
    from conftest import samples_under_jax

    sampler, momentum, truth = _biased_sampler()
    mapped, _ = quantile_mapped_sampler(sampler, momentum[:50_000], truth[:50_000], seed=3)
    keras_file = tmp_path / "mapped.keras"
    mapped.save(keras_file)
    version = export_savedmodel(mapped, tmp_path / "models", "mapped", 1, latent_dim=1,
                                n_conditions=1, keras_file=keras_file)
    conditions = np.geomspace(1.0, 100.0, 64, dtype=np.float32)[:, None]
    noise = serving_noise(len(conditions), 1, 11).numpy()
    served = tf.saved_model.load(str(version)).signatures["serving_default"](
        conditions=tf.constant(conditions), seed=tf.constant(11, tf.int64))["samples"].numpy()
    expected = np.asarray(mapped([conditions, noise]))
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(samples_under_jax(keras_file, conditions, noise, tmp_path),
                               expected, rtol=1e-4, atol=1e-4)


def test_bad_input_to_the_map_is_refused():
    momentum, generated, reference = _biased_generator_data(1000)
    with pytest.raises(ValueError, match="differ"):
        GridQuantileMap(2, grid=[LOG_P]).adapt(generated[:10], reference, momentum)
    conditions, noise = keras.Input((1,)), keras.Input((1,))
    plain = keras.Model([conditions, noise], keras.layers.Dense(1)(
        keras.layers.Concatenate()([conditions, noise])))
    with pytest.raises(ValueError, match="one GridQuantileHead"):
        quantile_mapped_sampler(plain, momentum, generated[:, :1])


def test_a_generator_that_is_already_right_is_left_about_as_it_is():
    momentum, _, reference = _biased_generator_data(200_000)
    _, _, also_reference = _biased_generator_data(200_000, seed=9)    # a second draw of z
    quantile_map = GridQuantileMap(2, grid=[LOG_P]).adapt(also_reference, reference, momentum)
    tables = np.asarray(quantile_map.node_maps.grid_tables).reshape(9, 101, 2)
    raw_points = np.sqrt(2.0) * erfinv(2.0 * np.linspace(0.0, 1.0, 101)[10:91] - 1.0)
    np.testing.assert_allclose(tables[:, 10:91], np.broadcast_to(
        raw_points[None, :, None], (9, 81, 2)), atol=0.06)
