"""The layered-calorimeter GANs at a tiny size (seed 003, SiW-ECAL): dense and 3D convolutional
variants build, train a step and save; they start at each species' mean shower; the grouped
conservation penalty and the in-graph critic features against their NumPy definitions."""

import numpy as np
import pytest
import tensorflow as tf

import keras

from ddsim_gan.detectors import Condition, Detector, get as get_detector
from ddsim_gan.evaluation import observables as O


def _dataset(conditions, samples, batch):
    return tf.data.Dataset.from_tensor_slices((conditions, samples)).repeat().batch(
        batch, drop_remainder=True)


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


def _draws_by_seed_and_reloads(gan, conditions, tmp_path, tolerance):
    """The same seed draws the same non-negative showers, another seed others; the saved
    sampler reloads and gives the same samples for the same noise."""
    from ddsim_gan.models import load_generator

    generated = gan.generate(conditions[:8], seed=1)
    assert generated.shape == (8, 3, 8, 8) and (generated >= 0).all() and generated.sum() > 0
    np.testing.assert_array_equal(generated, gan.generate(conditions[:8], seed=1))
    assert not np.array_equal(generated, gan.generate(conditions[:8], seed=2))
    gan.sampler.save(tmp_path / "generator.keras")
    reloaded = load_generator(tmp_path / "generator.keras")
    noise = np.random.default_rng(0).standard_normal((2, gan.latent_dim)).astype("float32")
    np.testing.assert_allclose(reloaded.predict([conditions[:2], noise], verbose=0),
                               gan.sampler.predict([conditions[:2], noise], verbose=0),
                               rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("architecture", ["conv3d", "dense"])
def test_calorimeter_gan_builds_trains_a_step_and_saves(architecture, tmp_path):
    from ddsim_gan.models.calorimeter import build_calorimeter_gan
    from ddsim_gan.models.networks import SeedHitFeatures
    from ddsim_gan.models.penalties import GroupedConservationPenalty

    detector = TinyLayered()
    conditions, samples = detector.simulate(64, seed=0)
    gan = build_calorimeter_gan(
        detector, conditions, samples, energy_condition="E_beam", architecture=architecture,
        generator_hidden=(16, 16), generator_channels=(4, 2), critic_channels=(2, 4, 4),
        critic_hidden=(8,), critic_steps=2,
        critic_features=[lambda s, n: SeedHitFeatures(s, n, 0, name="seed_hits")],
        extra_penalties=[GroupedConservationPenalty("sum_E", group_index=1),
                         GroupedConservationPenalty("nhits", group_index=1)],
        readout_noise=np.array([0.1, 0.1, 0.2]).reshape(3, 1, 1))
    cells = 3 * 8 * 8
    # logits + response, then the readout noise passed through to the head
    assert gan.generator.output_shape == (None, 2 * cells + 1)
    assert gan.latent_dim == 64 + 2 * cells                   # per-cell and readout noise
    assert type(gan.output_head).__name__ == "NoisyEnergyShareHead"
    gan.compile(jit_compile=False)
    history = gan.fit(_dataset(conditions, samples, 32), epochs=1,
                      steps_per_epoch=1, verbose=0)
    assert all(np.isfinite(v[-1]) for v in history.history.values())
    assert {"conservation_sum_E", "conservation_nhits"} <= set(history.history)
    _draws_by_seed_and_reloads(gan, conditions, tmp_path, tolerance=1e-5)


def test_conv3d_resize_upsampling_builds_and_generates():
    from ddsim_gan.models.calorimeter import build_calorimeter_gan

    detector = TinyLayered()
    conditions, samples = detector.simulate(32, seed=0)
    gan = build_calorimeter_gan(detector, conditions, samples, energy_condition="E_beam",
                                architecture="conv3d", upsampling="resize",
                                generator_hidden=(8, 8), generator_channels=(2, 2),
                                critic_channels=(2, 2, 2), critic_hidden=(4,))
    assert "up_sampling3d" in " ".join(layer.name for layer in gan.generator.layers)
    assert gan.generate(conditions[:4]).shape == (4, 3, 8, 8)
    with pytest.raises(ValueError, match="upsampling"):
        build_calorimeter_gan(detector, conditions, samples, energy_condition="E_beam",
                              architecture="conv3d", upsampling="nearest")
    with pytest.raises(ValueError, match="architecture"):
        build_calorimeter_gan(detector, conditions, samples, energy_condition="E_beam",
                              architecture="graph")


@pytest.mark.parametrize("architecture", ["dense", "components"])
def test_calorimeter_gan_starts_at_each_species_mean_shower(architecture):
    from ddsim_gan.models.calorimeter import build_calorimeter_gan

    # the hidden layers' random start adds to the logits: seeded, because over initializer
    # seeds the species' energy ratio ranges over 0.84-1.18
    keras.utils.set_random_seed(1)
    detector = TinyLayered()
    conditions, samples = detector.simulate(400, seed=0)
    samples[conditions[:, 1] == 1] *= 0.2                     # "pions" deposit 5x less
    samples[conditions[:, 1] == 1, 0] *= 4.0                  # and start earlier
    gan = build_calorimeter_gan(detector, conditions, samples, energy_condition="E_beam",
                                generator_hidden=(8, 8), critic_hidden=(8,), cell_noise=False,
                                architecture=architecture)
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


def test_grouped_layer_penalty_matches_numpy_occupancy_and_layer_energy():
    from ddsim_gan.evaluation import observables as O
    from ddsim_gan.models.penalties import GroupedLayerPenalty, StepTensors

    detector = TinyLayered()
    conditions, real = detector.simulate(64, seed=3)
    _, fake = detector.simulate(64, seed=4)
    conditions[:, 1] = np.arange(64) % 2
    step = StepTensors(tf.constant(conditions), None, tf.constant(real), tf.constant(fake),
                       None, lambda x: x)
    species = conditions[:, 1].astype(int)

    def expected(q_real, q_fake):
        terms = [((q_fake[species == g].mean(0) - q_real[species == g].mean(0))
                  / q_real[species == g].mean(0)) ** 2 for g in (0, 1)]
        return float(np.mean(terms))

    occupancy = GroupedLayerPenalty("layer_occupancy", group_index=1, n_groups=2)
    hit_real, hit_fake = (O.layer_hit(x, 0).astype(float) for x in (real, fake))
    assert float(occupancy(step)) == pytest.approx(expected(hit_real, hit_fake), rel=1e-4)
    energy = GroupedLayerPenalty("layer_energy", group_index=1, n_groups=2)
    assert float(energy(step)) == pytest.approx(
        expected(real.sum(axis=(2, 3)), fake.sum(axis=(2, 3))), rel=1e-4)
    assert GroupedLayerPenalty.from_config(occupancy.get_config()).quantity == "layer_occupancy"
    with pytest.raises(ValueError, match="quantity"):
        GroupedLayerPenalty("sum_E")

    whole = GroupedLayerPenalty("layer_energy", group_index=None, n_groups=1)
    whole.fit_reference(real, conditions)
    reference = real.sum(axis=(2, 3)).mean(0)
    np.testing.assert_allclose(whole.reference_means, [reference], rtol=1e-5)
    assert float(whole(step)) == pytest.approx(float(np.mean(
        ((fake.sum(axis=(2, 3)).mean(0) - reference) / reference) ** 2)), rel=1e-4)
    assert GroupedLayerPenalty.from_config(whole.get_config()).group_index is None
    with pytest.raises(ValueError, match="n_groups must be 1"):
        GroupedLayerPenalty("layer_energy", group_index=None, n_groups=2)

def test_grouped_layer_occupancy_gradient_reaches_an_unhit_layer():
    """A layer whose hottest cell is far below the seed-hit cut is still pushed up."""
    from ddsim_gan.models.penalties import GroupedLayerPenalty, StepTensors

    real = np.zeros((2, 3, 2, 2), np.float32)
    real[:, 1, 0, 0] = 100.0
    real[:, 0, 0, 0] = 10.0                        # layer 0 hit in the reference
    fake = tf.Variable(real.copy())
    fake[:, 0, 0, 0].assign([1.0, 1.0])            # 1 % of the peak: not hit
    conditions = tf.constant([[10.0, 0.0], [10.0, 0.0]])
    penalty = GroupedLayerPenalty("layer_occupancy", group_index=1, n_groups=1)
    with tf.GradientTape() as tape:
        value = penalty(StepTensors(conditions, None, tf.constant(real), fake, None,
                                    lambda x: x))
    assert float(value) == pytest.approx(1.0 / 3.0)     # layer 0: (0 - 1)^2 / 1, 3 layers
    gradient = tape.gradient(value, fake).numpy()
    assert np.all(gradient[:, 0, 0, 0] < 0)              # more energy there lowers it


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
    # the floors (weights over total + scale, widths sqrt(var + 0.1^2)) move real clusters
    # (totals of hundreds of counts) by at most 0.5 %, and widths of half a pad by 2 %
    np.testing.assert_allclose(features[:, 0] * 8, m["mean_pad"] - 4.0, rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(features[:, 1] * 16, m["mean_time"] - 8.0, rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(features[:, 2] * 8 / 4, m["width_pad"], rtol=2.5e-2, atol=1e-3)
    np.testing.assert_allclose(features[:, 4], m["cov_pad_time"]
                               / (m["width_pad"] * m["width_time"]), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("layer", ["moments", "shower"])
def test_critic_features_have_finite_slopes_on_empty_images(layer):
    """An untrained generator emits near-empty images; with total + 1e-6 in the weights the
    features' input gradient reached 4.5e11 there (beyond float16, a cliff for the GP). With
    the floors, observed: 2e3 (shower features) and 2e4 (moments: the correlation's
    1 / (width_a width_b) at the width floor, on a one-cell image), under float16's 65504."""
    from ddsim_gan.models.networks import ImageMomentFeatures, ShowerFeatures

    norm = 8.0
    features = (ImageMomentFeatures(1.0, norm) if layer == "moments" else
                ShowerFeatures(1.0, norm, lateral_axes=(0, 1)))
    images = np.zeros((4, 8, 16), np.float32)
    images[1, 3, 7] = 1e-4                          # one faint cell
    images[2] = 1e-5                                # a faint uniform haze
    images[3, 2, 2], images[3, 5, 12] = 1e-4, 2e-4  # two faint cells far apart
    x = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = features(x)
    gradient = tape.gradient(out, x).numpy()
    assert np.all(np.isfinite(out.numpy()))
    assert np.max(np.abs(gradient)) < 6e4, np.max(np.abs(gradient))


def test_noisy_head_adds_the_nominal_noise_before_the_threshold():
    from ddsim_gan.models.calorimeter import NoisyEnergyShareHead

    shape = (2, 3, 3)
    cells = 18
    head = NoisyEnergyShareHead(shape, 0, 0.0, threshold=0.5, response_spread=1.0,
                                noise_sigma=np.array([0.0001, 1.0]).reshape(2, 1, 1))
    n = 4000
    raw = np.zeros((n, 2 * cells + 1), np.float32)
    raw[:, :cells] = -30.0
    raw[:, 0] = 0.0                                          # all the energy in cell (0, 0, 0)
    raw[:, cells + 1:] = np.random.default_rng(0).standard_normal((n, cells))
    out = np.asarray(head([raw, np.full((n, 1), 10.0, np.float32)]))
    assert out.shape == (n,) + shape
    np.testing.assert_allclose(out[:, 0, 0, 0], 10.0, atol=0.01)     # layer 0: noise 1e-4
    assert (out[:, 0].reshape(n, -1)[:, 1:] == 0).all()              # no noise hits there
    fired = (out[:, 1] > 0).mean()                                   # layer 1: sigma 1
    assert abs(fired - 0.3085) < 0.02                                # P(z > 0.5)
    assert (out[out > 0] >= 0.5).all()
    assert not head.trainable_weights                                # nominal, not learned
    restored = NoisyEnergyShareHead.from_config(head.get_config())
    np.testing.assert_allclose(np.asarray(restored([raw, np.full((n, 1), 10.0, np.float32)])),
                               out, atol=1e-6)


def test_noisy_head_threshold_band_lets_a_track_just_under_the_cut_come_back():
    """A crossing that deposits 0.4 MIP under a 0.5 MIP cut reads zero either way; only with
    the band does the gradient reach its logit (the SiW tracks' missing layers)."""
    from ddsim_gan.models.calorimeter import NoisyEnergyShareHead

    shape, cells = (1, 2, 2), 4
    raw = np.full((1, 2 * cells + 1), -30.0, np.float32)
    raw[0, :2] = [0.0, np.log(0.04 / 0.96)]          # 9.6 MIP and 0.4 MIP of 10
    raw[0, cells:] = 0.0                              # response exp(0); noise eta = 0
    for band, reaches in ((0.0, False), (0.5, True)):
        head = NoisyEnergyShareHead(shape, 0, 0.0, threshold=0.5, response_spread=1.0,
                                    noise_sigma=(1e-4,), threshold_band=band)
        logits = tf.Variable(raw)
        with tf.GradientTape() as tape:
            out = head([logits, tf.constant([[10.0]])])
            below = out[0, 0, 0, 1]
        np.testing.assert_allclose(out.numpy().ravel(), [9.6, 0.0, 0.0, 0.0], atol=1e-3)
        gradient = tape.gradient(below, logits).numpy()[0, 1]
        assert (abs(gradient) > 0.1) == reaches, (band, gradient)    # d(0.4 p)/dlogit ~ 0.38
        assert NoisyEnergyShareHead.from_config(head.get_config()).threshold_band == band


def test_grouped_penalty_with_reference_means_uses_them_as_denominators():
    from ddsim_gan.models.penalties import GroupedConservationPenalty, StepTensors

    conditions = tf.constant([[10.0, 0.0], [10.0, 0.0], [10.0, 1.0]])
    real = tf.constant([[2.0, 0.0], [4.0, 0.0], [1.0, 1.0]])      # sum_E: 2, 4 | 2
    fake = tf.constant([[3.0, 0.0], [3.3, 0.0], [1.0, 2.0]])      # sum_E: 3, 3.3 | 3
    step = StepTensors(conditions, None, real, fake, None, lambda x: x)
    penalty = GroupedConservationPenalty("sum_E", group_index=1, n_groups=2,
                                         reference_means=[[5.0], [4.0]])
    # group 0: (3.15 - 3) / 5; group 1: (3 - 2) / 4
    assert float(penalty(step)) == pytest.approx((0.03 ** 2 + 0.25 ** 2) / 2, rel=1e-5)
    again = GroupedConservationPenalty.from_config(penalty.get_config())
    assert again.reference_means == [[5.0], [4.0]]
    with pytest.raises(ValueError, match="reference_means"):
        GroupedConservationPenalty("sum_E", group_index=1, n_groups=2, reference_means=[[1.0]])


def test_grouped_layer_penalty_fit_reference_matches_numpy():
    from ddsim_gan.models.penalties import GroupedLayerPenalty

    detector = TinyLayered()
    conditions, samples = detector.simulate(100, seed=5)
    conditions[:, 1] = np.arange(100) % 3 == 0
    penalty = GroupedLayerPenalty("layer_energy", group_index=1, n_groups=2)
    penalty.fit_reference(samples, conditions, batch_size=32)
    species = conditions[:, 1].astype(int)
    expected = [samples[species == g].sum(axis=(2, 3)).mean(axis=0) for g in (0, 1)]
    np.testing.assert_allclose(penalty.reference_means, expected, rtol=1e-5)


def test_fixed_denominator_removes_the_low_bias_of_a_heavy_tailed_quantity():
    """At the true mean, the batch-mean denominator still pushes the generated mean down
    (its minimum lies at E[1/r] / E[1/r^2] < E[r]); the fixed reference denominator does not."""
    from ddsim_gan.models.penalties import GroupedConservationPenalty, StepTensors

    rng = np.random.default_rng(0)
    true_mean = float(np.exp(0.5 * 1.2 ** 2))                   # lognormal(0, 1.2)
    conditions = tf.zeros((64, 1))

    def mean_gradient(penalty):
        total = 0.0
        for _ in range(400):
            real = rng.lognormal(0.0, 1.2, (64, 1)).astype(np.float32)
            fake = tf.Variable(np.full((64, 1), true_mean, np.float32))
            with tf.GradientTape() as tape:
                value = penalty(StepTensors(conditions, None, tf.constant(real), fake, None,
                                            lambda x: x))
            total += float(tf.reduce_sum(tape.gradient(value, fake)))
        return total / 400

    batch = GroupedConservationPenalty("sum_E", group_index=0, n_groups=1)
    fixed = GroupedConservationPenalty("sum_E", group_index=0, n_groups=1,
                                       reference_means=[[true_mean]])
    pushed_down, unbiased = mean_gradient(batch), mean_gradient(fixed)
    assert pushed_down > 0.05                        # descending it lowers the generated mean
    assert abs(unbiased) < 0.3 * pushed_down


def test_discrete_latent_is_a_uniform_one_hot_of_the_first_normal():
    from ddsim_gan.models.calorimeter import DiscreteLatent

    z = np.random.default_rng(0).standard_normal((40_000, 3)).astype("float32")
    code = np.asarray(DiscreteLatent(4)(z))
    assert code.shape == (40_000, 4) and set(np.unique(code)) == {0.0, 1.0}
    np.testing.assert_array_equal(code.sum(axis=1), 1.0)
    np.testing.assert_allclose(code.mean(axis=0), 0.25, atol=0.01)     # equally likely
    # k is monotonic in z_0 (quartiles of the normal: -0.674, 0, 0.674); z_1, z_2 unused
    edges = np.array([-np.inf, -0.6745, 0.0, 0.6745, np.inf])
    np.testing.assert_array_equal(code.argmax(axis=1), np.digitize(z[:, 0], edges[1:-1]))
    with pytest.raises(ValueError, match="at least 2"):
        DiscreteLatent(1)


def test_discrete_latent_code_reaches_trunk_and_output_and_survives_saving(tmp_path):
    from ddsim_gan.models import load_generator
    from ddsim_gan.models.calorimeter import build_calorimeter_gan

    keras.utils.set_random_seed(1)
    detector = TinyLayered()
    conditions, samples = detector.simulate(200, seed=0)
    gan = build_calorimeter_gan(detector, conditions, samples, energy_condition="E_beam",
                                generator_hidden=(8, 8), critic_hidden=(8,),
                                discrete_latent=3)
    output = gan.generator.get_layer("output_dense")
    # trunk 8 + code 3 + code x conditions 3 x 3 + encoded conditions (E, one-hot species)
    width = gan.condition_encoder.output_width
    assert width == 3 and output.kernel.shape[0] == 8 + 3 + 3 * width + width
    # the species start is still on the conditions' rows: per species mean response kept
    generated = gan.generate(conditions, seed=0)
    for species in (0, 1):
        rows = conditions[:, 1] == species
        assert 0.8 < generated[rows].sum() / samples[rows].sum() < 1.2
    # same noise except the code's normal: different code, different shower
    kernel = np.asarray(output.kernel)
    kernel[8:11] = np.array([[0.0], [3.0], [-3.0]]) * np.ones((1, kernel.shape[1]))
    output.kernel.assign(kernel)
    noise = np.zeros((3, gan.latent_dim), "float32")
    noise[:, 0] = [-2.0, 0.0, 2.0]                       # codes 0, 1, 2
    cond = np.repeat(conditions[:1], 3, axis=0)
    raw = np.asarray(gan.generator([tf.constant(noise), gan.condition_encoder(cond)]))
    assert len({round(float(v), 3) for v in raw[:, -1]}) == 3    # the response moves with k
    gan.sampler.save(tmp_path / "generator.keras")
    reloaded = load_generator(tmp_path / "generator.keras")
    np.testing.assert_allclose(reloaded.predict([cond, noise], verbose=0),
                               gan.sampler.predict([cond, noise], verbose=0), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("codes,architecture", [(0, "dense"), (2, "dense"), (2, "components")])
def test_discrete_latent_starts_a_two_population_category_as_a_mixture(codes, architecture):
    """Half the pions are tracks (2 MIP in one corner cell per layer, 6 MIP in all), half
    showers (about 100 MIP): with two codes the untrained generator already draws both, each
    with its own pattern (the cells generator; the components start every code at the mean
    centre), without a code one population between them."""
    from ddsim_gan.models.calorimeter import build_calorimeter_gan

    keras.utils.set_random_seed(3)
    detector = TinyLayered()
    conditions, samples = detector.simulate(2000, seed=0)
    pions = np.flatnonzero(conditions[:, 1] == 1)
    tracks = pions[: len(pions) // 2]
    samples[tracks] = 0.0
    samples[tracks, :, 0, 0] = 2.0
    gan = build_calorimeter_gan(detector, conditions, samples, energy_condition="E_beam",
                                generator_hidden=(8, 8), critic_hidden=(8,),
                                discrete_latent=codes, architecture=architecture)
    generated = gan.generate(conditions, seed=1)
    totals = generated.reshape(len(generated), -1).sum(axis=1)
    low = totals[pions] < 15.0            # the geometric mean of the two is 24
    electrons = conditions[:, 1] == 0
    assert 0.8 < totals[electrons].mean() / samples[electrons].sum(axis=(1, 2, 3)).mean() < 1.25
    if not codes:
        assert low.mean() < 0.05
        return
    assert 0.4 < low.mean() < 0.6
    if architecture == "components":
        return
    corner = generated[pions][:, :, 0, 0].sum(axis=1) / np.maximum(totals[pions], 1e-9)
    assert np.median(corner[low]) > 0.8 and np.median(corner[~low]) < 0.1


@pytest.mark.parametrize("penalty_class", ["ConservationPenalty", "GroupedConservationPenalty"])
def test_halves_estimator_does_not_narrow_the_generated_spread(penalty_class):
    """Generated and real sum_E from the same two-population distribution (tracks at 20,
    showers at 200): the square of the batch-mean difference still has a gradient that narrows
    the generated spread (its expectation holds Var(Q) / n); the halves' product has none."""
    from ddsim_gan.models import penalties as P

    rng = np.random.default_rng(3)
    conditions = tf.zeros((64, 1))

    def sample(n):
        return np.where(rng.random(n) < 0.55, 20.0, 200.0) * rng.lognormal(0, 0.2, n)

    centre = np.float32((0.55 * 20.0 + 0.45 * 200.0) * np.exp(0.02))    # the true mean

    def mean_spread_gradient(penalty):
        total = 0.0
        for _ in range(300):
            real = tf.constant(sample(64).astype(np.float32)[:, None])
            draw = sample(64)
            spread = tf.Variable(1.0)                  # fake = centre + spread (draw - centre)
            with tf.GradientTape() as tape:
                fake = centre + spread * tf.constant((draw - centre).astype(np.float32)[:, None])
                value = penalty(P.StepTensors(conditions, None, real, fake, None, lambda x: x))
            total += float(tape.gradient(value, spread))
        return total / 300

    extra = {"group_index": 0, "n_groups": 1} if penalty_class.startswith("Grouped") else {}
    square = getattr(P, penalty_class)("sum_E", **extra)
    halves = getattr(P, penalty_class)("sum_E", estimator="halves", **extra)
    narrowing, unbiased = mean_spread_gradient(square), mean_spread_gradient(halves)
    assert narrowing > 0.01                    # descending it shrinks the generated spread
    assert abs(unbiased) < 0.25 * narrowing
    assert getattr(P, penalty_class).from_config(halves.get_config()).estimator == "halves"
    with pytest.raises(ValueError, match="estimator"):
        getattr(P, penalty_class)("sum_E", estimator="cube", **extra)


def test_grouped_halves_estimator_by_hand():
    from ddsim_gan.models.penalties import GroupedConservationPenalty, StepTensors

    # rows 0, 2, 4 are half A, rows 1, 3, 5 half B; group 1 only in half A: left out
    conditions = tf.constant([[0.0], [0.0], [0.0], [0.0], [1.0], [0.0]])
    real = tf.constant([[2.0], [2.0], [2.0], [2.0], [5.0], [2.0]])
    fake = tf.constant([[3.0], [1.0], [5.0], [2.0], [9.0], [3.0]])
    step = StepTensors(conditions, None, real, fake, None, lambda x: x)
    penalty = GroupedConservationPenalty("sum_E", group_index=0, n_groups=2,
                                         estimator="halves")
    # group 0: real mean 2; A = {3, 5} -> 4, B = {1, 2, 3} -> 2: (4 - 2)(2 - 2) / 4 = 0
    assert float(penalty(step)) == pytest.approx(0.0, abs=1e-7)
    fake = tf.constant([[3.0], [4.0], [5.0], [2.0], [9.0], [3.0]])     # B -> 3
    step = StepTensors(conditions, None, real, fake, None, lambda x: x)
    assert float(penalty(step)) == pytest.approx((4 - 2) * (3 - 2) / 4, rel=1e-6)


def test_energy_split_sees_populations_that_the_category_mean_hides():
    """Tracks that miss a layer and showers that over-hit it give the right occupancy over the
    category; split by sum_E, each population's term sees its own error."""
    from ddsim_gan.models.penalties import GroupedLayerPenalty, StepTensors

    def events(track_hits_layer_1, shower_hits_layer_1):
        x = np.zeros((4, 2, 1, 2), np.float32)
        x[:2, :, 0, 0] = 1.0                             # two tracks: 1 MIP per layer
        x[2:, 0, 0, 0] = 100.0                           # two showers, peak in layer 0
        x[:2, 1, 0, 0] = 1.0 if track_hits_layer_1 else 0.0
        x[2:, 1, 0, 1] = 10.0 if shower_hits_layer_1 else 1.0
        return x

    real = events(track_hits_layer_1=True, shower_hits_layer_1=False)
    real[1, 1, 0, 0], real[2, 1, 0, 1] = 0.0, 10.0       # one track misses, one shower hits
    fake = events(track_hits_layer_1=False, shower_hits_layer_1=True)
    conditions = tf.constant([[10.0, 1.0]] * 4)
    step = StepTensors(conditions, None, tf.constant(real), tf.constant(fake), None,
                       lambda x: x)
    whole = GroupedLayerPenalty("layer_occupancy", group_index=1, n_groups=2)
    assert float(whole(step)) == pytest.approx(0.0)      # layer 1: 2 of 4 hit in both
    split = GroupedLayerPenalty("layer_occupancy", group_index=1, n_groups=2,
                                energy_split=[None, 50.0])
    # tracks (group 2): layer 1 hit 0 against 0.5; showers (group 3): 1 against 0.5
    assert float(split(step)) == pytest.approx((1.0 + 1.0) / 4, rel=1e-5)
    fitted = GroupedLayerPenalty("layer_occupancy", group_index=1, n_groups=2,
                                 energy_split=[None, 50.0]).fit_reference(
        real, conditions.numpy())
    np.testing.assert_allclose(fitted.reference_means, [[0, 0], [0, 0], [1, 0.5], [1, 0.5]])
    again = GroupedLayerPenalty.from_config(fitted.get_config())
    assert again.energy_split == [None, 50.0] and again.n_rows == 4
    with pytest.raises(ValueError, match="energy_split"):
        GroupedLayerPenalty("layer_occupancy", n_groups=2, energy_split=[40.0])


def test_components_calorimeter_gan_trains_saves_and_draws_the_same_for_a_seed(tmp_path):
    """``architecture="components"``: parametric showers with the readout noise per layer,
    the dense critic and the grouped penalties; a step trains, the sampler saves and reloads."""
    from ddsim_gan.models.calorimeter import build_calorimeter_gan
    from ddsim_gan.models.components import ShowerComponentsHead
    from ddsim_gan.models.penalties import GroupedConservationPenalty

    detector = TinyLayered()
    conditions, samples = detector.simulate(64, seed=0)
    gan = build_calorimeter_gan(
        detector, conditions, samples, energy_condition="E_beam", architecture="components",
        generator_hidden=(16, 16), critic_hidden=(8,), critic_steps=2, discrete_latent=2,
        extra_penalties=[GroupedConservationPenalty("nhits", group_index=1)],
        readout_noise=np.array([0.1, 0.1, 0.2]).reshape(3, 1, 1))
    head = gan.output_head
    assert isinstance(head, ShowerComponentsHead) and head.noise_sigma == pytest.approx(
        [0.1, 0.1, 0.2])
    assert gan.latent_dim == 64 + 2 * 3 * 8 * 8      # the head's two normals per cell
    assert {"discrete_latent", "code_cross"} <= {layer.name for layer in gan.generator.layers}
    gan.compile(jit_compile=False)
    history = gan.fit(_dataset(conditions, samples, 32), epochs=1, steps_per_epoch=1, verbose=0)
    assert all(np.isfinite(v[-1]) for v in history.history.values())
    _draws_by_seed_and_reloads(gan, conditions, tmp_path, tolerance=1e-4)
    with pytest.raises(ValueError, match="layer_sharpness"):
        build_calorimeter_gan(detector, conditions, samples, energy_condition="E_beam",
                              architecture="components", layer_sharpness="learned")
