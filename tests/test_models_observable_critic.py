"""The second critic on the shower observables (ObservableCriticGAN) at a tiny size: it learns to
tell showers apart by an observable with a bounded slope, its score reaches the generator, its
weights are its own, and the GAN survives a .keras round trip and goes on training."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import MiniCalo, tiny_conditional_gan


def _observable_gan(weight=1.0, seed=0):
    from ddsim_gan.models.observable_critic import with_observable_critic
    from ddsim_gan.models.penalties import ShowerMomentPenalty

    keras.utils.set_random_seed(seed)       # the critic's initial weights, whatever ran before
    detector = MiniCalo()
    conditions, samples = detector.simulate(256, seed=seed)
    gan = tiny_conditional_gan("components", seed=seed)
    observables = ShowerMomentPenalty.for_detector(detector, weight=0.0, hits=True)
    gan = with_observable_critic(gan, observables, samples, conditions, weight=weight,
                                 hidden=(16, 16))
    gan.compile(generator_optimizer=keras.optimizers.Adam(1e-3),
                critic_optimizer=keras.optimizers.Adam(1e-3),
                observable_critic_optimizer=keras.optimizers.Adam(3e-3), jit_compile=False)
    return gan, conditions, samples


def test_standardization_is_that_of_the_reference_observables():
    gan, conditions, samples = _observable_gan()
    real = gan.sample_transform(tf.constant(samples))
    values = gan.standardized_observables(real, tf.constant(conditions)).numpy()
    assert values.shape == (len(samples), 2 * 2 + 3 + 1)   # centre, width per axis; layers; hits
    np.testing.assert_allclose(values.mean(axis=0), 0.0, atol=1e-3)
    spread = values.std(axis=0)
    np.testing.assert_allclose(spread[spread > 0.5], 1.0, rtol=1e-3)


def test_the_critic_learns_a_layer_shift_with_a_bounded_slope():
    gan, conditions, samples = _observable_gan()
    shifted = samples.copy()                  # a tenth of layer 0's energy moved to layer 1
    shifted[..., 1] += 0.1 * samples[..., 0]
    shifted[..., 0] *= 0.9
    c = tf.constant(conditions[:128])
    encoded = gan.condition_encoder(c)
    real = gan.sample_transform(tf.constant(samples[:128]))
    fake = gan.sample_transform(tf.constant(shifted[:128]))
    before = [w.numpy().copy() for w in gan.observable_critic.trainable_variables]
    for _ in range(300):
        gan.update_observable_critic(c, encoded, real, fake)
    assert any(not np.allclose(a, w.numpy()) for a, w in
               zip(before, gan.observable_critic.trainable_variables))
    real_values = gan.standardized_observables(real, c)
    fake_values = gan.standardized_observables(fake, c)
    gap = float(tf.reduce_mean(gan._observable_scores(real_values, encoded, training=False))
                - tf.reduce_mean(gan._observable_scores(fake_values, encoded, training=False)))
    # W1 <= the mean distance of the paired showers: a critic of slope about 1 finds most of
    # it, and little more (the gradient penalty is a soft bound)
    distance = float(tf.reduce_mean(tf.norm(real_values - fake_values, axis=1)))
    assert 0.3 * distance < gap <= 1.3 * distance, (gap, distance)


def test_the_generator_gets_the_critic_score_and_not_its_weights():
    gan, conditions, _ = _observable_gan(weight=2.0)
    c = tf.constant(conditions[:32])
    encoded = gan.condition_encoder(c)
    with tf.GradientTape() as tape:
        fake = gan.generate_normalized(encoded, c, training=True)
        step = gan._step_tensors(c, encoded, fake, fake, gan.generator_optimizer)
        terms = gan._penalty_terms("generator", step)
        weight, term = terms["observable_critic"]
    assert weight == 2.0
    gradients = tape.gradient(term, gan.generator.trainable_variables)
    assert any(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in gradients)
    own = {id(v) for v in gan.observable_critic.trainable_variables}
    assert not own & {id(v) for v in gan.critic.trainable_variables}
    assert not own & {id(v) for v in gan.generator.trainable_variables}
    assert "observable_critic" not in gan._penalty_terms("critic", step)


def test_round_trip_and_training_goes_on(tmp_path):
    gan, conditions, samples = _observable_gan()
    data = tf.data.Dataset.from_tensor_slices((conditions, samples)).repeat().batch(
        32, drop_remainder=True)
    history = gan.fit(data, epochs=1, steps_per_epoch=3, verbose=0)
    assert {"observable_critic", "observable_wasserstein",
            "observable_critic_loss"} <= set(history.history)
    assert np.isfinite(history.history["observable_critic_loss"]).all()
    path = tmp_path / "gan.keras"
    gan.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded).__name__ == "ObservableCriticGAN"
    assert loaded.observable_mean == gan.observable_mean
    assert loaded.observable_critic_optimizer is not loaded.critic_optimizer
    np.testing.assert_allclose(loaded.generate(conditions[:16], seed=4),
                               gan.generate(conditions[:16], seed=4), rtol=1e-5, atol=1e-5)
    for a, b in zip(loaded.observable_critic.get_weights(), gan.observable_critic.get_weights()):
        np.testing.assert_array_equal(a, b)
    loaded.fit(data, epochs=1, steps_per_epoch=2, verbose=0)


def test_the_standardization_must_fit_the_critic():
    from ddsim_gan.models.observable_critic import (ObservableCriticGAN,
                                                    observable_critic_network)

    gan = tiny_conditional_gan("components")
    network = observable_critic_network(8, gan.condition_encoder.output_width, (4,))
    with pytest.raises(ValueError, match="8 numbers"):
        ObservableCriticGAN(gan.generator, gan.critic, gan.condition_encoder,
                            gan.sample_transform, gan.latent_dim, observables=object(),
                            observable_critic=network, observable_mean=np.zeros(5),
                            output_head=gan.output_head)


def test_the_auxiliary_regressor_gan_gets_one_too(tmp_path):
    from ddsim_gan.models.auxiliary import build_auxiliary_gan, metric_batch_map
    from ddsim_gan.models.observable_critic import with_observable_critic
    from ddsim_gan.models.penalties import ShowerMomentPenalty

    detector = MiniCalo()
    conditions, samples = detector.simulate(256, seed=1)

    def layer_share(s, c):
        return s[..., 0].sum(axis=(1, 2)) / np.maximum(s.sum(axis=(1, 2, 3)), 1e-9)

    gan = build_auxiliary_gan(detector, conditions, samples, layer_share(samples, conditions),
                              energy_condition="E", generator_hidden=(16,), critic_hidden=(16,),
                              regressor_hidden=(16, 8), critic_steps=2, seed=0)
    gan = with_observable_critic(gan, ShowerMomentPenalty.for_detector(detector, weight=0.0),
                                 samples, conditions, hidden=(8,))
    assert type(gan).__name__ == "AuxiliaryObservableCriticGAN"
    gan.compile(regressor_optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    data = tf.data.Dataset.from_tensor_slices((conditions, samples)).repeat().batch(
        32, drop_remainder=True).map(metric_batch_map(layer_share, 1, detector.sample_shape))
    history = gan.fit(data, epochs=1, steps_per_epoch=2, validation_data=data,
                      validation_steps=1, verbose=0)
    assert {"regressor_loss", "observable_wasserstein"} <= set(history.history)
    assert history.history["val_observable_critic"][0] != 0.0      # validation sees it too
    path = tmp_path / "aux.keras"
    gan.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.regressor_optimizer is not None and loaded.observable_critic_optimizer
    loaded.fit(data, epochs=1, steps_per_epoch=1, verbose=0)


def test_the_second_critic_cannot_share_an_optimizer():
    from ddsim_gan.models.observable_critic import with_observable_critic
    from ddsim_gan.models.penalties import ShowerMomentPenalty

    detector = MiniCalo()
    conditions, samples = detector.simulate(64, seed=2)
    gan = with_observable_critic(tiny_conditional_gan("components"),
                                 ShowerMomentPenalty.for_detector(detector), samples, conditions,
                                 hidden=(4,))
    shared = keras.optimizers.Adam(1e-3)
    with pytest.raises(ValueError, match="observable critic needs its own optimizer"):
        gan.compile(generator_optimizer=keras.optimizers.Adam(1e-3), critic_optimizer=shared,
                    observable_critic_optimizer=shared)


def test_layer_shares_and_logs_by_hand():
    """ShowerObservablesWithShares: the base observables, then each layer's share of the event's
    energy and log(1 + E_layer / unit), on two showers written by hand."""
    from ddsim_gan.models.observable_critic import ShowerObservablesWithShares
    from ddsim_gan.models.penalties import ShowerMomentPenalty

    detector = MiniCalo()
    showers = np.zeros((2,) + detector.sample_shape, np.float32)
    showers[0, 1, 1] = [60.0, 30.0, 10.0]          # 100 MeV over the three layers
    showers[1, 2, 2, 1] = 7.0                        # only the middle layer
    base = ShowerMomentPenalty.for_detector(detector, weight=0.0, hits=True)
    extended = ShowerObservablesWithShares.for_detector(detector, weight=0.0, hits=True,
                                                        log_unit=2.0)
    plain = base.observables(tf.constant(showers)).numpy()
    values = extended.observables(tf.constant(showers)).numpy()
    assert values.shape == (2, plain.shape[1] + 2 * 3)
    np.testing.assert_allclose(values[:, :plain.shape[1]], plain)
    np.testing.assert_allclose(values[:, -6:-3], [[0.6, 0.3, 0.1], [0.0, 1.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(values[:, -3:], np.log1p(np.array(
        [[60.0, 30.0, 10.0], [0.0, 7.0, 0.0]]) / 2.0), rtol=1e-6)
    with pytest.raises(ValueError, match="log_unit"):
        ShowerObservablesWithShares.for_detector(detector, weight=0.0, log_unit=0.0)


def test_hottest_cell_shares_by_hand():
    """ShowerObservablesWithConcentration: the shares' observables, then per layer the share
    of its energy in its hottest cell (0 for an empty layer)."""
    from ddsim_gan.models.observable_critic import (ShowerObservablesWithConcentration,
                                                    ShowerObservablesWithShares)

    detector = MiniCalo()
    showers = np.zeros((2,) + detector.sample_shape, np.float32)
    showers[0, 1, 1] = [60.0, 30.0, 10.0]
    showers[0, 2, 1, 0] = 40.0                       # layer 1: 60 of 100 MeV in its hottest
    showers[0, 3, 3, 2] = 30.0                       # layer 3: 30 of 40 MeV
    showers[1, 2, 2, 1] = 7.0                        # only the middle layer
    shares = ShowerObservablesWithShares.for_detector(detector, weight=0.0, hits=True)
    extended = ShowerObservablesWithConcentration.for_detector(detector, weight=0.0, hits=True)
    before = shares.observables(tf.constant(showers)).numpy()
    values = extended.observables(tf.constant(showers)).numpy()
    assert values.shape == (2, before.shape[1] + 3)
    np.testing.assert_allclose(values[:, :before.shape[1]], before)
    np.testing.assert_allclose(values[:, -3:], [[0.6, 1.0, 0.75], [0.0, 1.0, 0.0]], atol=1e-6)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(extended))
    assert type(again) is ShowerObservablesWithConcentration


def test_a_critic_on_layer_shares_survives_the_round_trip(tmp_path):
    from ddsim_gan.models.observable_critic import (ShowerObservablesWithShares,
                                                    with_observable_critic)

    detector = MiniCalo()
    conditions, samples = detector.simulate(128, seed=1)
    observables = ShowerObservablesWithShares.for_detector(detector, weight=0.0, hits=True,
                                                           log_unit=3.0)
    gan = with_observable_critic(tiny_conditional_gan("components", seed=1), observables,
                                 samples, conditions, hidden=(8,))
    assert len(gan.observable_mean) == 2 * 2 + 3 + 1 + 2 * 3
    path = tmp_path / "gan.keras"
    gan.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.observables) is ShowerObservablesWithShares
    assert loaded.observables.log_unit == 3.0
    real = tf.constant(samples[:8])
    np.testing.assert_allclose(loaded.observables.observables(real).numpy(),
                               observables.observables(real).numpy(), rtol=1e-6)
