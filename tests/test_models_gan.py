"""ConditionalGAN: the training step, its penalties, reproducibility, saving and reloading."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ddsim_gan.data import dataset_from_arrays
from ddsim_gan.models.builders import build_conditional_gan
from ddsim_gan.models.gan import ConditionalGAN
from ddsim_gan.models.penalties import ConservationPenalty, GradientPenalty, StepTensors


def _gan(detector, data, seed=0, **kwargs):
    conditions, samples = data
    options = dict(max_value=None if "train_samples" in kwargs else float(samples.max()),
                   latent_dim=8, generator_hidden=(32,),
                   critic_hidden=(32,), critic_steps=2, seed=seed)
    gan = build_conditional_gan(detector, conditions, **{**options, **kwargs})
    gan.compile(generator_optimizer=keras.optimizers.Adam(1e-3, 0.5, 0.9),
                critic_optimizer=keras.optimizers.Adam(1e-3, 0.5, 0.9))
    return gan


def _fit(gan, data, steps=3, seed=0):
    dataset = dataset_from_arrays(*data, batch_size=64, seed=seed, repeat=True)
    return gan.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)


def _linear_critic_step(weights):
    """A critic D(x) = w . x: its gradient norm is |w| everywhere."""
    w = tf.constant(weights, tf.float32)
    real = tf.random.stateless_normal([16, len(weights)], seed=[1, 2])
    fake = tf.random.stateless_normal([16, len(weights)], seed=[3, 4])
    return StepTensors(conditions=None, encoded=None, real=real, fake=fake,
                       critic=lambda x, _: tf.reduce_sum(x * w, axis=1, keepdims=True),
                       to_physical=lambda x: x, seed_generator=keras.random.SeedGenerator(0))


def test_gradient_penalty_is_zero_for_unit_slope_and_one_for_slope_two():
    penalty = GradientPenalty(weight=10.0)
    assert abs(float(penalty(_linear_critic_step([0.6, 0.8])))) < 1e-6
    assert abs(float(penalty(_linear_critic_step([1.2, 1.6]))) - 1.0) < 1e-5


def test_gradient_penalty_is_finite_for_a_flat_critic():
    """The keras-io example takes sqrt without epsilon: NaN gradients at zero slope."""
    kernel = tf.Variable([[0.0], [0.0]])
    step = _linear_critic_step([0.0, 0.0])
    step.critic = lambda x, _: tf.matmul(x, kernel)
    with tf.GradientTape() as tape:
        value = GradientPenalty()(step)
    assert float(value) == pytest.approx(1.0, abs=1e-5)
    assert np.isfinite(tape.gradient(value, kernel).numpy()).all()


def test_conservation_penalties_measure_sum_e_and_soft_nhits():
    real = tf.constant([[10.0, 0.0, 0.0, 0.0], [4.0, 4.0, 0.0, 0.0]])
    fake = tf.constant([[10.0, 10.0, 0.0, 0.0], [4.0, 4.0, 0.1, 0.0]])
    step = StepTensors(None, None, real, fake, None, to_physical=lambda x: x)
    energy = ConservationPenalty("sum_E")
    assert float(energy(step)) == pytest.approx(((28.1 / 2 - 9.0) / 9.0) ** 2, rel=1e-5)
    hits = ConservationPenalty("nhits", temperature=1e-3)
    np.testing.assert_allclose(hits.quantity_per_event(fake).numpy(), [2.0, 2.0], atol=1e-3)
    assert float(hits(step)) == pytest.approx((4 / 2 - 1.5) ** 2 / 1.5 ** 2, rel=1e-3)
    with pytest.raises(ValueError, match="sum_E"):
        ConservationPenalty("energy")


def test_nhits_is_the_exact_count_with_the_soft_gradient():
    # a cell just under the cut (4.9 % of the peak) counts 0 however wide the soft step
    fake = tf.Variable([[100.0, 4.9, 6.0, 0.0]])
    wide = ConservationPenalty("nhits", temperature=0.05)
    with tf.GradientTape() as tape:
        count = wide.quantity_per_event(fake)
    assert count.numpy().tolist() == [2.0]
    gradient = tape.gradient(count, fake).numpy()[0]
    assert gradient[1] > 0 and gradient[2] > 0        # more energy there: more hits


def test_one_optimizer_instance_for_both_networks_is_refused(mini_calo, mini_data):
    gan = build_conditional_gan(mini_calo, mini_data[0], max_value=100.0, latent_dim=4,
                                generator_hidden=(8,), critic_hidden=(8,))
    shared = keras.optimizers.Adam()
    with pytest.raises(ValueError, match="separate optimizer"):
        gan.compile(generator_optimizer=shared, critic_optimizer=shared)


def test_training_updates_both_networks_and_logs_every_term(mini_calo, mini_data):
    gan = _gan(mini_calo, mini_data, extra_penalties=[ConservationPenalty("sum_E", 0.1)])
    before_g = [w.numpy().copy() for w in gan.generator.trainable_weights]
    before_c = [w.numpy().copy() for w in gan.critic.trainable_weights]
    history = _fit(gan, mini_data).history
    assert set(history) >= {"critic_loss", "generator_loss", "wasserstein", "gradient_penalty",
                            "conservation_sum_E"}
    assert all(np.isfinite(v[-1]) for v in history.values())
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(before_g, gan.generator.weights))
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(before_c, gan.critic.weights))


def test_one_generator_pass_serves_all_critic_steps(mini_calo, mini_data):
    """The generator is fixed during the critic updates: a step generates the critic's fakes
    for all its chunks at once, then once more (with gradient) for its own update."""
    gan = _gan(mini_calo, mini_data, critic_steps=4)
    passes = []
    generate = gan.generate_normalized
    gan.generate_normalized = lambda *args, **kwargs: passes.append(1) or generate(*args,
                                                                                 **kwargs)
    conditions, samples = mini_data
    before = [w.numpy().copy() for w in gan.critic.trainable_weights]
    gan.train_step((tf.constant(conditions[:64]), tf.constant(samples[:64])))
    assert len(passes) == 2
    assert gan.critic_optimizer.iterations.numpy() == 4
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(before, gan.critic.weights))


def test_same_seed_same_training(mini_calo, mini_data):
    weights = []
    for _ in range(2):
        keras.utils.set_random_seed(7)
        gan = _gan(mini_calo, mini_data, seed=7)
        _fit(gan, mini_data, seed=7)
        weights.append([w.numpy() for w in gan.generator.weights])
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_sampler_returns_physical_units_above_threshold(mini_calo, mini_data):
    gan = _gan(mini_calo, mini_data)
    conditions = mini_data[0][:100]
    samples = gan.generate(conditions, seed=3)
    assert samples.shape == (100, 4, 4, 3) and samples.dtype == np.float32
    assert samples.min() >= 0 and np.isfinite(samples).all()
    positive = samples[samples > 0]
    assert positive.size == 0 or positive.min() >= mini_calo.threshold * (1 - 1e-5)
    np.testing.assert_array_equal(samples, gan.generate(conditions, seed=3))
    assert not np.array_equal(samples, gan.generate(conditions, seed=4))


def test_save_reload_and_continue_training(mini_calo, mini_data, tmp_path):
    gan = _gan(mini_calo, mini_data, extra_penalties=[ConservationPenalty("nhits", 0.5)])
    _fit(gan, mini_data, steps=2)
    gan.save(tmp_path / "gan.keras")
    loaded = keras.saving.load_model(tmp_path / "gan.keras")
    assert isinstance(loaded, ConditionalGAN)
    assert [type(p).__name__ for p in loaded.penalties] == ["GradientPenalty",
                                                            "ConservationPenalty"]
    assert loaded.generator_optimizer is not loaded.critic_optimizer
    conditions = mini_data[0][:50]
    np.testing.assert_allclose(loaded.generate(conditions, seed=1), gan.generate(conditions, seed=1),
                               rtol=1e-6)
    np.testing.assert_allclose(loaded.generator_optimizer.iterations.numpy(),
                               gan.generator_optimizer.iterations.numpy())
    history = _fit(loaded, mini_data, steps=2).history
    assert np.isfinite(history["generator_loss"][-1])
    assert int(loaded.generator_optimizer.iterations.numpy()) == 4


def test_sampler_saved_alone_reloads_with_its_preprocessing(mini_calo, mini_data, tmp_path):
    gan = _gan(mini_calo, mini_data)
    gan.sampler.save(tmp_path / "generator.keras")
    sampler = keras.saving.load_model(tmp_path / "generator.keras")
    noise = np.random.default_rng(0).standard_normal((20, gan.latent_dim)).astype(np.float32)
    conditions = mini_data[0][:20]
    np.testing.assert_allclose(sampler.predict([conditions, noise], verbose=0),
                               gan.sampler.predict([conditions, noise], verbose=0), rtol=1e-6)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_with_float32_variables(mini_calo, mini_data, policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        gan = _gan(mini_calo, mini_data)
        history = _fit(gan, mini_data, steps=3).history
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert all(np.isfinite(v[-1]) for v in history.values())
    assert all(w.dtype == "float32" for w in gan.generator.weights + gan.critic.weights)
    if policy == "mixed_float16":
        assert isinstance(gan.critic_optimizer, keras.optimizers.LossScaleOptimizer)
        # tensorflow#48662: a gradient penalty must not drive the loss scale down to 1
        assert float(gan.critic_optimizer.dynamic_scale) > 1.0


def test_energy_share_head_conserves_energy_and_applies_the_threshold(mini_calo, mini_data):
    from ddsim_gan.models.networks import EnergyShareHead

    head = EnergyShareHead((2, 3), energy_index=0, log_response=np.log(0.5), threshold=1.0)
    logits = np.float32([[5.0, 5.0, 0.0, 0.0, 0.0, -9.0, 0.0],      # last column: rho
                         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, np.log(2.0)]])
    energy = np.float32([[100.0], [12.0]])
    cells = keras.ops.convert_to_numpy(head([logits, energy]))
    assert cells.shape == (2, 2, 3)
    # 50 * 1/(2e^5+3) < threshold: the small cells read zero, their energy goes to the others
    np.testing.assert_allclose(cells[0].ravel()[:2], 25.0, rtol=1e-5)
    assert (cells[0].ravel()[2:] == 0).all()
    response = 0.5 * np.exp(3 * np.tanh(np.log(2.0) / 3))           # rho is soft-clipped to +-3
    np.testing.assert_allclose(cells[1], np.full((2, 3), 12.0 * response / 6), rtol=1e-5)

    gan = _gan(mini_calo, mini_data, energy_condition="E", train_samples=mini_data[1])
    conditions = mini_data[0][:200]
    totals = gan.generate(conditions, seed=0).reshape(200, -1).sum(axis=1)
    ratio = totals / conditions[:, 0]
    assert np.all(ratio < np.exp(3.0) * 1.05) and np.all(ratio > 0)   # bounded response
    assert gan.output_head is not None and gan.generator.output.shape[-1] == 4 * 4 * 3 + 1
