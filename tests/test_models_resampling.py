"""Sampling-importance resampling by a classifier's density ratio (ddsim_gan.models.resampling)."""

import importlib.util

import keras
import numpy as np
import pytest

from ddsim_gan.models import resampling as R


def test_resampling_picks_each_candidate_with_probability_proportional_to_its_clipped_ratio():
    n, k = 40_000, 4
    log_ratio = np.array([0.0, np.log(3.0), -1.0, 10.0], np.float32)   # the last one clipped to 2
    candidates = np.tile(np.arange(k, dtype=np.float32), n)[:, None]     # candidate j holds j
    normals = np.random.default_rng(0).standard_normal((n, k)).astype(np.float32)
    layer = R.ImportanceResampling(k, clip=2.0)
    chosen = np.asarray(layer([candidates, np.tile(log_ratio, n)[:, None], normals]))[:, 0]
    weights = np.exp(np.clip(log_ratio, -2.0, 2.0))
    expected = weights / weights.sum()
    frequency = np.bincount(chosen.astype(int), minlength=k) / n
    np.testing.assert_allclose(frequency, expected, atol=4 * np.sqrt(expected / n).max())
    again = np.asarray(layer([candidates, np.tile(log_ratio, n)[:, None], normals]))[:, 0]
    np.testing.assert_array_equal(chosen, again)                        # the noise decides


def test_calorimeter_features_match_the_numpy_observables():
    rng = np.random.default_rng(1)
    shape = (5, 4, 3)                                                   # layers on the last axis
    cells = rng.exponential(2.0, (6,) + shape) * (rng.random((6,) + shape) < 0.4)
    cells[0] = 0.0                                                      # an empty event
    features = np.asarray(R.CalorimeterFeatures(shape, layer_axis=2, unit=2.0)(
        cells.astype(np.float32)))
    assert features.shape == (6, 3 * 3 + 6) and np.isfinite(features).all()
    layer_energy = cells.sum(axis=(1, 2))
    total = layer_energy.sum(axis=1)
    np.testing.assert_allclose(features[:, :3], np.log1p(layer_energy / 2.0), rtol=1e-5)
    np.testing.assert_allclose(features[1:, 3:6], layer_energy[1:] / total[1:, None], rtol=1e-5)
    hottest = cells.max(axis=(1, 2)) / np.maximum(layer_energy, 1e-6)
    np.testing.assert_allclose(features[:, 6:9], hottest, rtol=1e-5)
    np.testing.assert_allclose(features[:, 10], np.log1p((cells > 0).sum(axis=(1, 2, 3))),
                               rtol=1e-5)
    x = np.arange(5) - 2.0
    profile_x = cells.sum(axis=(2, 3))
    centre_x = (profile_x * x).sum(axis=1)[1:] / total[1:]
    width_x = np.sqrt((profile_x * x ** 2).sum(axis=1)[1:] / total[1:] - centre_x ** 2)
    np.testing.assert_allclose(features[1:, 11], centre_x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(features[1:, 12], width_x, rtol=1e-4, atol=1e-5)
    y = np.arange(4) - 1.5
    centre_y = (cells.sum(axis=(1, 3)) * y).sum(axis=1)[1:] / total[1:]
    np.testing.assert_allclose(features[1:, 13], centre_y, rtol=1e-4, atol=1e-5)


def test_condition_features_take_logs_and_one_hot_the_species():
    conditions = np.array([[10.0, 2.5, 3.0], [100.0, 4.0, 0.0]], np.float32)
    layer = R.ConditionFeatures(3, log_columns=[0], category_column=2, n_categories=5)
    out = np.asarray(layer(conditions))
    np.testing.assert_allclose(out, [[np.log(10.0), 2.5, 0, 0, 0, 1, 0],
                                     [np.log(100.0), 4.0, 1, 0, 0, 0, 0]], rtol=1e-6)
    with pytest.raises(ValueError, match="n_categories"):
        R.ConditionFeatures(3, category_column=2, n_categories=1)


def _shifted_sampler(shift):
    """x = y + shift + z: the reference of the test below, moved by ``shift``."""
    conditions, noise = keras.Input((1,), name="conditions"), keras.Input((1,), name="noise")
    dense = keras.layers.Dense(1, name="shift")
    out = dense(keras.layers.Concatenate()([conditions, noise]))
    dense.set_weights([np.ones((2, 1), np.float32), np.full((1,), shift, np.float32)])
    return keras.Model([conditions, noise], out)


def test_resampling_moves_a_shifted_generator_onto_the_reference(tmp_path):
    rng = np.random.default_rng(2)
    n = 12_000
    conditions = rng.uniform(0.0, 5.0, (n, 1)).astype(np.float32)
    reference = (conditions + rng.standard_normal((n, 1))).astype(np.float32)
    sampler = _shifted_sampler(0.5)
    event_features, condition_features = R.VectorFeatures([3.0]), R.ConditionFeatures(1)
    classifier, report = R.fit_ratio_classifier(
        sampler, event_features, condition_features, conditions, reference, seed=3, epochs=6,
        hidden=(32, 32))
    assert report["cross_entropy_after"] < report["cross_entropy_before"]
    assert 0.58 < report["validation_auc"] < 0.68      # N(0, 1) against N(0.5, 1): 0.638
    resampled = R.resampled_sampler(sampler, event_features, condition_features, classifier, 16)
    test_conditions = rng.uniform(0.0, 5.0, (8_000, 1)).astype(np.float32)
    noise = rng.standard_normal((8_000, 16 * 1 + 16)).astype(np.float32)
    drawn = np.asarray(resampled([test_conditions, noise]))
    residual = (drawn - test_conditions)[:, 0]
    plain = np.asarray(sampler([test_conditions, noise[:, :1]]))[:, 0] - test_conditions[:, 0]
    assert abs(plain.mean() - 0.5) < 0.05
    assert abs(residual.mean()) < 0.1 and abs(residual.std() - 1.0) < 0.1
    path = tmp_path / "resampled.keras"
    resampled.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(reloaded([test_conditions, noise])), drawn, rtol=1e-6)


def test_resampled_sampler_needs_two_candidates():
    sampler = _shifted_sampler(0.0)
    with pytest.raises(ValueError, match="at least 2"):
        R.resampled_sampler(sampler, R.VectorFeatures([1.0]), R.ConditionFeatures(1),
                            R.ratio_classifier(2, np.zeros(2), np.ones(2)), 1)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_a_resampled_calorimeter_sampler_serves_and_loads_under_jax(tmp_path):
    """The DarkSHINE kind of sampler (shower components), resampled: its SavedModel gives the
    Keras model's samples for the served noise, and its .keras file the same under JAX."""
    import tensorflow as tf

    from conftest import MiniCalo, samples_under_jax, tiny_conditional_gan
    from ddsim_gan.export.savedmodel import export_savedmodel, serving_noise

    detector = MiniCalo()
    sampler = tiny_conditional_gan("components").sampler
    features = R.CalorimeterFeatures(detector.sample_shape, layer_axis=2,
                                     unit=detector.threshold)
    n_inputs = 3 * 3 + 6 + 1
    keras.utils.set_random_seed(4)
    classifier = R.ratio_classifier(n_inputs, np.zeros(n_inputs), np.ones(n_inputs),
                                    hidden=(8,))
    resampled = R.resampled_sampler(sampler, features, R.ConditionFeatures(1, log_columns=[0]),
                                    classifier, 4)
    keras_file = tmp_path / "resampled.keras"
    resampled.save(keras_file)
    width = int(resampled.inputs[1].shape[-1])
    assert width == 4 * int(sampler.inputs[1].shape[-1]) + 4
    version = export_savedmodel(resampled, tmp_path / "models", "resampled", 1,
                                latent_dim=width, n_conditions=1, keras_file=keras_file)
    conditions = np.linspace(100.0, 1000.0, 32, dtype=np.float32)[:, None]
    noise = serving_noise(len(conditions), width, 11).numpy()
    served = tf.saved_model.load(str(version)).signatures["serving_default"](
        conditions=tf.constant(conditions), seed=tf.constant(11, tf.int64))["samples"].numpy()
    expected = np.asarray(resampled([conditions, noise]))
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6 * expected.max())
    np.testing.assert_allclose(samples_under_jax(keras_file, conditions, noise, tmp_path),
                               expected, rtol=1e-5, atol=1e-6 * expected.max())
