"""The per-layer observables of the SiW second critic against their NumPy definitions (seed 003's
hits), their gradient and serialization, and the recipe's optimizer for that critic."""

import numpy as np
import pytest
import tensorflow as tf

import keras

from ddsim_gan.evaluation import observables as O
from ddsim_gan.models.layer_observables import LayerHitObservables


def _showers(n=40, seed=0):
    rng = np.random.default_rng(seed)
    cells = rng.exponential(1.0, (n, 4, 6, 6)).astype(np.float32)
    cells *= rng.random((n, 4, 6, 6)) < 0.2                   # sparse, like the SiW layers
    cells[:, :, 3, 3] += rng.uniform(0.0, 60.0, (n, 4)).astype(np.float32)
    cells[: n // 4, 1:] = 0.0                                  # some layers empty
    return cells


def test_layer_observables_match_numpy():
    cells = _showers()
    values = LayerHitObservables(layer_axis=0).observables(tf.constant(cells)).numpy()
    assert values.shape == (40, 2 * 4 + 2)
    np.testing.assert_allclose(values[:, :4], np.log1p(cells.sum(axis=(2, 3))), rtol=1e-5)
    np.testing.assert_allclose(values[:, 4:8], O.layer_hit(cells, 0), atol=1e-6)
    np.testing.assert_allclose(values[:, 8], np.log1p(cells.sum(axis=(1, 2, 3))), rtol=1e-5)
    np.testing.assert_allclose(values[:, 9], np.log1p(O.seed_hit_count(cells)), rtol=1e-5)


def test_layer_observables_pass_a_gradient_to_the_cells_of_every_layer():
    cells = tf.Variable(_showers(8, seed=1))
    with tf.GradientTape() as tape:
        values = LayerHitObservables(layer_axis=0).observables(cells)
        score = tf.reduce_sum(values * tf.constant(np.linspace(-1, 1, 10), tf.float32))
    gradient = tape.gradient(score, cells).numpy()
    assert np.all(np.isfinite(gradient))
    assert np.all(np.abs(gradient).sum(axis=(0, 2, 3)) > 0)


def test_layer_observables_serialize():
    observables = LayerHitObservables(layer_axis=1, hit_fraction=0.1, temperature=0.02)
    again = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(observables))
    assert type(again) is LayerHitObservables
    assert again.get_config() == {"layer_axis": 1, "hit_fraction": 0.1, "temperature": 0.02,
                                  "group_index": None, "group_means": None,
                                  "group_scales": None}


def test_wgan_optimizers_give_the_second_critic_its_own_faster_rate():
    from ddsim_gan import recipe

    settings = {"epochs": 2, "steps_per_epoch": 10}
    plain = recipe.wgan_optimizers(settings, learning_rate=1e-3)
    assert "observable_critic_optimizer" not in plain
    optimizers = recipe.wgan_optimizers(settings, learning_rate=1e-3,
                                        observable_critic_lr_factor=5.0)
    rate = optimizers["observable_critic_optimizer"].learning_rate
    critic_rate = optimizers["critic_optimizer"].learning_rate
    assert float(rate) == pytest.approx(5.0 * float(critic_rate))
    with pytest.raises(SystemExit, match="lr-factor"):
        recipe.wgan_optimizers(settings, observable_critic_lr_factor=0.0)


def test_layer_observables_standardized_within_each_category():
    cells = _showers(60, seed=2)
    cells[1::2] *= 10.0                                       # a second, brighter species
    conditions = np.stack([np.full(60, 10.0), np.arange(60) % 2], 1).astype(np.float32)
    observables = LayerHitObservables(layer_axis=0).fit_groups(cells, conditions, 1, 2,
                                                               batch_size=16)
    values = observables.observables(tf.constant(cells), tf.constant(conditions)).numpy()
    raw = observables.raw_observables(tf.constant(cells)).numpy()
    for g in (0, 1):
        rows = conditions[:, 1] == g
        spread = np.maximum(raw[rows].std(0), LayerHitObservables.scale_floor)
        np.testing.assert_allclose(values[rows], (raw[rows] - raw[rows].mean(0)) / spread,
                                   rtol=1e-4, atol=1e-4)
    assert abs(values[:, 8].mean()) < 1e-4                    # log sum_E: the gap is gone
    again = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(observables))
    np.testing.assert_allclose(
        again.observables(tf.constant(cells), tf.constant(conditions)).numpy(), values)
    with pytest.raises(ValueError, match="conditions"):
        observables.observables(tf.constant(cells))
    with pytest.raises(ValueError, match="group_index"):
        LayerHitObservables(group_means=[[0.0]], group_scales=[[1.0]])
