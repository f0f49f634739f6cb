"""The auxiliary-regressor GAN at a tiny size (seed 001, LHCb ECAL): its regressor learns a
metric computed in NumPy, its prediction reaches the critic and carries the generator's gradient,
it survives a .keras round trip; the no-regressor ablation; the impact-point encoder."""

import numpy as np
import pytest
import tensorflow as tf

import keras

from ddsim_gan.detectors import get as get_detector


def _fraction_left(samples, conditions):
    """A metric computed in NumPy only: the energy fraction in the first half along x."""
    samples = np.asarray(samples, np.float64)
    total = samples.sum(axis=(1, 2, 3))
    return np.where(total > 0, samples[:, :2].sum(axis=(1, 2, 3)) / np.maximum(total, 1e-9), 0.5)


def _dataset(conditions, samples, batch, metric=None, shape=None, n_conditions=1):
    from ddsim_gan.models.auxiliary import metric_batch_map

    data = tf.data.Dataset.from_tensor_slices((conditions, samples)).repeat().batch(
        batch, drop_remainder=True)
    if metric is not None:
        data = data.map(metric_batch_map(metric, n_conditions, shape))
    return data


@pytest.fixture(scope="module")
def aux_gan(mini_calo, mini_data):
    from ddsim_gan.models.auxiliary import build_auxiliary_gan

    conditions, samples = mini_data
    keras.utils.set_random_seed(0)
    gan = build_auxiliary_gan(mini_calo, conditions, samples,
                              _fraction_left(samples, conditions), energy_condition="E",
                              generator_hidden=(16,), critic_hidden=(16,),
                              regressor_hidden=(32, 16), critic_steps=2, seed=0)
    gan.compile(regressor_optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    return gan


def test_regressor_learns_the_numpy_metric(aux_gan, mini_calo, mini_data):
    conditions, samples = mini_data
    truth = _fraction_left(samples, conditions)
    before = np.mean((aux_gan.predict_metric(conditions, samples) - truth) ** 2) / truth.var()
    history = aux_gan.fit(_dataset(conditions, samples, 64, _fraction_left,
                                   mini_calo.sample_shape),
                          epochs=1, steps_per_epoch=60, verbose=0)
    predicted = aux_gan.predict_metric(conditions, samples)
    after = np.mean((predicted - truth) ** 2) / truth.var()
    assert np.isfinite(history.history["regressor_loss"]).all()
    assert before > 0.9 and after < 0.75, (before, after)     # mean squared error / variance
    assert np.corrcoef(predicted, truth)[0, 1] > 0.5
    assert {"regressor_loss", "critic_loss", "gradient_penalty"} <= set(history.history)


def test_regressor_feature_reaches_the_critic(aux_gan, mini_data):
    conditions, samples = mini_data
    encoded = aux_gan.condition_encoder(tf.constant(conditions[:8]))
    real = aux_gan.sample_transform(tf.constant(samples[:8]))
    feature = aux_gan.regressor([real, encoded])
    scores = aux_gan.critic([real, encoded, feature])
    shifted = aux_gan.critic([real, encoded, feature + 1.0])
    assert not np.allclose(scores, shifted)           # the critic reads the feature
    np.testing.assert_allclose(aux_gan._critic_scores(real, encoded, training=False), scores,
                               rtol=1e-5, atol=1e-6)
    # the generator's gradient flows through the regressor into its weights
    with tf.GradientTape() as tape:
        fake = aux_gan.generate_normalized(encoded, tf.constant(conditions[:8]))
        via_regressor = tf.reduce_sum(aux_gan.regressor([fake, encoded]))
    grads = tape.gradient(via_regressor, aux_gan.generator.trainable_variables)
    assert any(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)
    # critic and generator updates leave the regressor's weights alone: they are not theirs
    regressor_ids = {id(v) for v in aux_gan.regressor.trainable_variables}
    assert not regressor_ids & {id(v) for v in aux_gan.critic.trainable_variables}
    assert not regressor_ids & {id(v) for v in aux_gan.generator.trainable_variables}


def test_auxiliary_gan_keras_round_trip(aux_gan, mini_data, tmp_path):
    from ddsim_gan.models import load_generator

    conditions, samples = mini_data
    aux_gan.save(tmp_path / "model.keras")
    aux_gan.sampler.save(tmp_path / "generator.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert type(loaded).__name__ == "AuxiliaryRegressorGAN"
    np.testing.assert_allclose(loaded.predict_metric(conditions[:32], samples[:32]),
                               aux_gan.predict_metric(conditions[:32], samples[:32]),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.generate(conditions[:16], seed=3),
                               aux_gan.generate(conditions[:16], seed=3), rtol=1e-5, atol=1e-5)
    assert loaded.target_scale == aux_gan.target_scale
    sampler = load_generator(tmp_path / "generator.keras")
    noise = np.random.default_rng(0).standard_normal((4, aux_gan.latent_dim)).astype("float32")
    np.testing.assert_allclose(sampler.predict([conditions[:4], noise], verbose=0),
                               aux_gan.sampler.predict([conditions[:4], noise], verbose=0),
                               rtol=1e-5, atol=1e-5)
    # the loaded GAN keeps training (its regressor optimizer came back too)
    loaded.fit(_dataset(conditions, samples, 64, _fraction_left, samples.shape[1:]), epochs=1,
               steps_per_epoch=1, verbose=0)


def test_auxiliary_gan_refuses_batches_without_targets(aux_gan, mini_data):
    conditions, samples = mini_data
    with pytest.raises(ValueError, match="metric_batch_map"):
        aux_gan.fit(_dataset(conditions, samples, 64), epochs=1, steps_per_epoch=1, verbose=0)


def test_no_regressor_ablation_is_a_plain_gan(mini_calo, mini_data):
    from ddsim_gan.models.auxiliary import build_auxiliary_gan
    from ddsim_gan.models.gan import ConditionalGAN

    conditions, samples = mini_data
    gan = build_auxiliary_gan(mini_calo, conditions, samples, regressor=False,
                              generator_hidden=(8,), critic_hidden=(8,), critic_steps=2)
    assert type(gan) is ConditionalGAN and len(gan.critic.inputs) == 2
    with pytest.raises(ValueError, match="train_targets"):
        build_auxiliary_gan(mini_calo, conditions, samples, regressor=True)


def test_impact_point_encoder_matches_the_detector(tmp_path):
    from ddsim_gan.data.geometry_encoders import ImpactPointEncoder

    detector = get_detector("lhcb_ecal")
    conditions = detector.sample_conditions(256, seed=5)
    encoder = ImpactPointEncoder.for_detector(detector).adapt(conditions)
    derived = np.asarray(encoder.derived(conditions))
    np.testing.assert_allclose(derived[:, 8:10], detector.impact_point(conditions), atol=1e-3)
    slope = np.hypot(derived[:, 6], derived[:, 7])
    np.testing.assert_allclose(derived[:, 10], slope, rtol=1e-5)
    np.testing.assert_allclose(np.hypot(derived[:, 11], derived[:, 12]), 1.0, rtol=1e-5)
    # offsets along and across the direction: a rotation of the impact offset
    np.testing.assert_allclose(np.hypot(derived[:, 13], derived[:, 14]),
                               np.hypot(derived[:, 8], derived[:, 9]), atol=1e-3)
    np.testing.assert_allclose(derived[:, 6], conditions[:, 3] / conditions[:, 5], rtol=1e-6)
    encoded = np.asarray(encoder(conditions))
    assert encoded.shape == (256, 15) and encoder.n_inputs == 6
    np.testing.assert_allclose(encoded.mean(axis=0), 0.0, atol=1e-4)
    # saved inside a model, it comes back with its fitted standardization
    inputs = keras.Input((6,))
    model = keras.Model(inputs, encoder(inputs))
    model.save(tmp_path / "encoder.keras")
    reloaded = keras.saving.load_model(tmp_path / "encoder.keras")
    np.testing.assert_allclose(reloaded.predict(conditions, verbose=0), encoded, atol=1e-5)
    with pytest.raises(ValueError, match="expected"):
        ImpactPointEncoder.for_detector(get_detector("mpd_tpc"))
