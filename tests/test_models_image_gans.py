"""Issue 4's models at tiny sizes: the auxiliary-regressor GAN (its regressor trains, its feature
reaches the critic, it survives a .keras round trip), the 3D convolutional GAN (builds, trains a
step, saves), and the in-graph features and encoders against their NumPy definitions."""

import numpy as np
import pytest
import tensorflow as tf

import keras

from ddsim_gan.detectors import Condition, Detector, get as get_detector
from ddsim_gan.evaluation import observables as O


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
    gan.compile(regressor_optimizer=keras.optimizers.Adam(3e-3), jit_compile=False)
    return gan


def test_regressor_learns_the_numpy_metric(aux_gan, mini_calo, mini_data):
    conditions, samples = mini_data
    truth = _fraction_left(samples, conditions)
    before = np.mean((aux_gan.predict_metric(conditions, samples) - truth) ** 2)
    history = aux_gan.fit(_dataset(conditions, samples, 64, _fraction_left,
                                   mini_calo.sample_shape),
                          epochs=1, steps_per_epoch=60, verbose=0)
    after = np.mean((aux_gan.predict_metric(conditions, samples) - truth) ** 2)
    assert np.isfinite(history.history["regressor_loss"]).all()
    assert after < 0.5 * before, (before, after)
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


class TinyLayered(Detector):
    """3 layers x 8 x 8 cells, (layer, x, y) like the SiW-ECAL; species as a second condition."""

    name = "tiny_layered"
    conditions = (Condition("E_beam", "GeV", 1.0, 20.0),
                  Condition("species", "", 0.0, 1.0, labels=("e-", "pi-")))
    sample_shape = (3, 8, 8)
    sample_unit = "MIP"
    axes = ("layer", "x", "y")
    cell_size = (15.0, 5.0, 5.0)
    threshold = 0.5

    def sample_conditions(self, n, seed=None):
        rng = np.random.default_rng(seed)
        return np.stack([np.full(n, 10.0), rng.integers(0, 2, n)], 1).astype(np.float32)

    def simulate_at(self, conditions, seed=None):
        rng = np.random.default_rng(seed)
        n = len(conditions)
        shape = np.zeros(self.sample_shape)
        shape[:, 3:5, 3:5] = [[[1.0]], [[4.0]], [[2.0]]]
        shape += 0.05
        fractions = rng.dirichlet(30 * shape.ravel(), n).reshape((n,) + self.sample_shape)
        samples = 10.0 * conditions[:, :1, None, None] * fractions
        return np.where(samples > self.threshold, samples, 0).astype(np.float32)


@pytest.mark.parametrize("architecture, upsampling",
                         [("conv3d", "transpose"), ("conv3d", "resize"), ("dense", None)])
def test_calorimeter_gan_builds_trains_a_step_and_saves(architecture, upsampling, tmp_path):
    from ddsim_gan.models import load_generator
    from ddsim_gan.models.calorimeter import build_calorimeter_gan
    from ddsim_gan.models.networks import SeedHitFeatures
    from ddsim_gan.models.penalties import GroupedConservationPenalty

    detector = TinyLayered()
    conditions, samples = detector.simulate(64, seed=0)
    gan = build_calorimeter_gan(
        detector, conditions, samples, energy_condition="E_beam", architecture=architecture,
        generator_hidden=(16, 16), generator_channels=(4, 2), critic_channels=(2, 4, 4),
        critic_hidden=(8,), upsampling=upsampling or "transpose", critic_steps=2,
        critic_features=[lambda s, n: SeedHitFeatures(s, n, 0, name="seed_hits")],
        extra_penalties=[GroupedConservationPenalty("sum_E", group_index=1),
                         GroupedConservationPenalty("nhits", group_index=1)])
    cells = 3 * 8 * 8
    assert gan.generator.output_shape == (None, cells + 1)
    assert gan.latent_dim == 64 + cells                       # per-cell noise
    gan.compile(jit_compile=False)
    history = gan.fit(_dataset(conditions, samples, 32, n_conditions=2), epochs=1,
                      steps_per_epoch=1, verbose=0)
    assert all(np.isfinite(v[-1]) for v in history.history.values())
    assert {"conservation_sum_E", "conservation_nhits"} <= set(history.history)
    generated = gan.generate(conditions[:8], seed=1)
    assert generated.shape == (8, 3, 8, 8) and (generated >= 0).all() and generated.sum() > 0
    np.testing.assert_array_equal(generated, gan.generate(conditions[:8], seed=1))
    assert not np.array_equal(generated, gan.generate(conditions[:8], seed=2))
    gan.sampler.save(tmp_path / "generator.keras")
    reloaded = load_generator(tmp_path / "generator.keras")
    noise = np.random.default_rng(0).standard_normal((2, gan.latent_dim)).astype("float32")
    np.testing.assert_allclose(reloaded.predict([conditions[:2], noise], verbose=0),
                               gan.sampler.predict([conditions[:2], noise], verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_calorimeter_gan_starts_at_each_species_mean_shower():
    from ddsim_gan.models.calorimeter import build_calorimeter_gan

    detector = TinyLayered()
    conditions, samples = detector.simulate(400, seed=0)
    samples[conditions[:, 1] == 1] *= 0.2                     # "pions" deposit 5x less
    gan = build_calorimeter_gan(detector, conditions, samples, energy_condition="E_beam",
                                generator_hidden=(8, 8), critic_hidden=(8,), cell_noise=False)
    generated = gan.generate(conditions, seed=0)
    for species in (0, 1):
        rows = conditions[:, 1] == species
        ratio = generated[rows].sum() / samples[rows].sum()
        assert 0.8 < ratio < 1.2, (species, ratio)
        layers_ref = samples[rows].sum(axis=(0, 2, 3)) / samples[rows].sum()
        layers_gen = generated[rows].sum(axis=(0, 2, 3)) / generated[rows].sum()
        np.testing.assert_allclose(layers_gen, layers_ref, atol=0.1)


def test_grouped_conservation_penalty_by_hand():
    from ddsim_gan.models.penalties import GroupedConservationPenalty, StepTensors

    conditions = tf.constant([[10.0, 0.0], [10.0, 0.0], [10.0, 1.0]])
    real = tf.constant([[2.0, 0.0], [4.0, 0.0], [1.0, 1.0]])      # sum_E: 2, 4 | 2
    fake = tf.constant([[3.0, 0.0], [3.3, 0.0], [1.0, 2.0]])      # sum_E: 3, 3.3 | 3
    step = StepTensors(conditions, None, real, fake, None, lambda x: x)
    penalty = GroupedConservationPenalty("sum_E", group_index=1, n_groups=3)
    # group 0: (3.15 - 3) / 3 = 0.05; group 1: (3 - 2) / 2 = 0.5; group 2 absent
    assert float(penalty(step)) == pytest.approx((0.05 ** 2 + 0.5 ** 2) / 2, rel=1e-5)
    assert GroupedConservationPenalty.from_config(penalty.get_config()).n_groups == 3


def test_seed_hit_features_match_numpy():
    from ddsim_gan.data.preprocessing import LogScale
    from ddsim_gan.models.networks import SeedHitFeatures

    detector = TinyLayered()
    _, samples = detector.simulate(16, seed=2)
    norm = float(np.log1p(samples.max()))
    layer = SeedHitFeatures(1.0, norm, layer_axis=0, temperature=1e-4)
    features = np.asarray(layer(LogScale(1.0, norm)(tf.constant(samples))))
    assert features.shape == (16, 6)
    counts = O.seed_hits(samples).sum(axis=(2, 3))
    np.testing.assert_allclose(features[:, :3], np.log1p(counts) / np.log1p(64), atol=1e-3)
    np.testing.assert_allclose(features[:, 3:], O.layer_hit(samples, 0), atol=1e-3)


def test_image_moment_features_match_numpy():
    from ddsim_gan.data.preprocessing import LogScale
    from ddsim_gan.models.networks import ImageMomentFeatures

    detector = get_detector("mpd_tpc")
    conditions, samples = detector.simulate(32, seed=4)
    norm = float(np.log1p(samples.max()))
    features = np.asarray(ImageMomentFeatures(1.0, norm)(LogScale(1.0, norm)(
        tf.constant(samples))))
    m = O.gaussian_moments(samples)              # cells: centres at i + 1/2
    np.testing.assert_allclose(features[:, 0] * 8, m["mean_pad"] - 4.0, atol=1e-3)
    np.testing.assert_allclose(features[:, 1] * 16, m["mean_time"] - 8.0, atol=1e-3)
    np.testing.assert_allclose(features[:, 2] * 8 / 4, m["width_pad"], atol=1e-3)
    np.testing.assert_allclose(features[:, 4], m["cov_pad_time"]
                               / (m["width_pad"] * m["width_time"]), atol=1e-3)


def test_impact_point_encoder_matches_the_detector(tmp_path):
    from ddsim_gan.data.geometry_encoders import ImpactPointEncoder

    detector = get_detector("lhcb_ecal")
    conditions = detector.sample_conditions(256, seed=5)
    encoder = ImpactPointEncoder.for_detector(detector).adapt(conditions)
    derived = np.asarray(encoder.derived(conditions))
    np.testing.assert_allclose(derived[:, 8:], detector.impact_point(conditions), atol=1e-3)
    np.testing.assert_allclose(derived[:, 6], conditions[:, 3] / conditions[:, 5], rtol=1e-6)
    encoded = np.asarray(encoder(conditions))
    assert encoded.shape == (256, 10) and encoder.n_inputs == 6
    np.testing.assert_allclose(encoded.mean(axis=0), 0.0, atol=1e-4)
    # saved inside a model, it comes back with its fitted standardization
    inputs = keras.Input((6,))
    model = keras.Model(inputs, encoder(inputs))
    model.save(tmp_path / "encoder.keras")
    reloaded = keras.saving.load_model(tmp_path / "encoder.keras")
    np.testing.assert_allclose(reloaded.predict(conditions, verbose=0), encoded, atol=1e-5)
    with pytest.raises(ValueError, match="expected"):
        ImpactPointEncoder.for_detector(get_detector("mpd_tpc"))
