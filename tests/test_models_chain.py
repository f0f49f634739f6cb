"""The auto-regressive chain (DarkSide-20k): assembly, order, teacher forcing, saving, seeds; and
the pieces it needs: conditional standardization, the one-sided penalty, the soft clip."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from ddsim_gan import detectors
from ddsim_gan.data.preprocessing import ConditionalStandardize, ConditionEncoder
from ddsim_gan.models.chain import AutoregressiveChain, NoiseSlice
from ddsim_gan.models.networks import SoftClip
from ddsim_gan.models.penalties import GradientPenalty, LipschitzPenalty, StepTensors

TINY = dict(latent_dim=2, generator_hidden=(16,), critic_hidden=(16,), critic_steps=2,
            n_knots=4, n_quantiles=64)


@pytest.fixture(scope="module")
def darkside_data():
    return detectors.get("darkside").simulate(3000, seed=0)


@pytest.fixture(scope="module")
def chain(darkside_data):
    return AutoregressiveChain.for_detector(detectors.get("darkside"), *darkside_data, seed=1,
                                            **TINY)


def test_chain_assembles_one_model_with_links_in_order(chain):
    assert chain.output_names == ("S1", "S2", "f200")
    assert chain.widths == [1, 1, 1] and chain.latent_dim == 6
    # link i sees the detector's 2 conditions and the i columns before it
    assert [link.condition_encoder.n_inputs for link in chain.links] == [2, 3, 4]
    sampler = chain.sampler
    assert [tuple(t.shape) for t in sampler.inputs] == [(None, 2), (None, 6)]
    assert tuple(sampler.outputs[0].shape) == (None, 3)
    assert [layer.name for layer in sampler.layers if layer.name.startswith("link_")] == [
        "link_S1", "link_S2", "link_f200"]


def test_sampler_returns_three_physical_columns_in_order(chain, darkside_data):
    conditions, samples = darkside_data
    generated = chain.generate(conditions[:500], seed=3)
    assert generated.shape == (500, 3) and np.isfinite(generated).all()
    # each column within its own training range (S1 ~ 10^2 PE, S2 ~ 10^4 PE, f200 in [0, 1])
    low, high = samples.min(axis=0), samples.max(axis=0)
    assert (generated >= low - 1e-3 * np.abs(low)).all()
    assert (generated <= high + 1e-3 * np.abs(high)).all()
    assert np.median(generated[:, 1]) > 10 * np.median(generated[:, 0]) > 10
    assert generated[:, 2].max() <= 1.0


def test_link_data_uses_the_real_previous_outputs(chain, darkside_data):
    conditions, samples = darkside_data
    link_conditions, target = chain.link_data(conditions, samples, 2)
    np.testing.assert_array_equal(link_conditions[:, :2], conditions)
    np.testing.assert_array_equal(link_conditions[:, 2:], samples[:, :2])
    # the target is f200 standardized at its conditions: invertible back to the real f200
    encoded = chain.links[2].condition_encoder(link_conditions)
    back = keras.ops.convert_to_numpy(chain.standardizers[2]([target, encoded], inverse=True))
    inside = (samples[:, 2] > 0.05) & (samples[:, 2] < 0.95)
    np.testing.assert_allclose(back[inside, 0], samples[inside, 2], atol=2e-2)


def test_later_links_see_the_earlier_outputs(chain, darkside_data):
    conditions = darkside_data[0][:200]
    noise = np.random.default_rng(0).standard_normal((200, 6)).astype("float32")
    base = chain.sampler.predict([conditions, noise], verbose=0)
    s1_noise = noise.copy()
    s1_noise[:, 0:2] += 1.0  # only the S1 link's noise
    moved = chain.sampler.predict([conditions, s1_noise], verbose=0)
    assert np.abs(moved[:, 0] - base[:, 0]).mean() > 0  # S1 changed...
    assert np.abs(moved[:, 1] - base[:, 1]).mean() > 0  # ...and S2, which is conditioned on it
    f200_noise = noise.copy()
    f200_noise[:, 4:6] += 1.0  # only the f200 link's noise
    moved = chain.sampler.predict([conditions, f200_noise], verbose=0)
    np.testing.assert_array_equal(moved[:, :2], base[:, :2])
    assert np.abs(moved[:, 2] - base[:, 2]).mean() > 0
    # the S2 link itself responds to its S1 input at fixed (E, type) and noise
    link = chain.sampler.get_layer("link_S2")
    rows = np.array([[50.0, 1.0, 150.0], [50.0, 1.0, 350.0]], "float32")
    out = link.predict([rows, np.zeros((2, 2), "float32")], verbose=0)
    assert out[0, 0] != out[1, 0]


def test_generation_is_reproducible_with_a_seed(chain, darkside_data):
    conditions = darkside_data[0][:100]
    a, b = chain.generate(conditions, seed=5), chain.generate(conditions, seed=5)
    np.testing.assert_array_equal(a, b)
    assert (chain.generate(conditions, seed=6) != a).any()


def test_keras_round_trip_of_the_sampler_and_the_chain(chain, darkside_data, tmp_path):
    conditions = darkside_data[0][:64]
    noise = np.random.default_rng(1).standard_normal((64, 6)).astype("float32")
    expected = chain.sampler.predict([conditions, noise], verbose=0)
    chain.save(tmp_path)
    loaded = keras.saving.load_model(tmp_path / "generator.keras")
    np.testing.assert_allclose(loaded.predict([conditions, noise], verbose=0), expected,
                               rtol=1e-6)
    again = AutoregressiveChain.load(tmp_path)
    assert again.output_names == chain.output_names
    np.testing.assert_allclose(again.generate(conditions, seed=2),
                               chain.generate(conditions, seed=2), rtol=1e-6)
    with pytest.raises(FileNotFoundError, match="chain.json"):
        AutoregressiveChain.load(tmp_path / "nowhere")


def test_a_single_gan_is_a_chain_with_one_link(darkside_data):
    single = AutoregressiveChain.for_detector(detectors.get("darkside"), *darkside_data,
                                              groups=[(0, 1, 2)], **TINY)
    assert single.output_names == ("S1_S2_f200",) and single.widths == [3]
    assert single.generate(darkside_data[0][:10], seed=0).shape == (10, 3)
    with pytest.raises(ValueError, match="in order"):
        AutoregressiveChain.for_detector(detectors.get("darkside"), *darkside_data,
                                         groups=[(1,), (0, 2)], **TINY)


def test_each_link_encodes_its_previous_outputs_as_asked(darkside_data):
    conditions, samples = darkside_data
    chain = AutoregressiveChain.for_detector(
        detectors.get("darkside"), conditions, samples,
        previous=("quantile", "standardize", "quantile"), **TINY)
    s1 = np.sort(samples[:, 0])
    link_conditions = np.column_stack([np.full((len(s1), 2), conditions[0]), s1])
    # the S2 link sees S1 standardized: affine in S1, slope 1 / std(S1)
    s2_column = keras.ops.convert_to_numpy(chain.links[1].condition_encoder(link_conditions))[:, -1]
    slope, intercept = np.polyfit(s1, s2_column, 1)
    np.testing.assert_allclose(slope, 1.0 / s1.std(), rtol=1e-4)
    np.testing.assert_allclose(intercept, -s1.mean() / s1.std(), atol=1e-4)
    assert np.abs(s2_column - (slope * s1 + intercept)).max() < 1e-4
    # the f200 link sees S1 Gaussianized: about standard normal over the training sample
    f200_columns = keras.ops.convert_to_numpy(chain.links[2].condition_encoder(
        np.column_stack([conditions, samples[:, :2]])))[:, -2]
    assert abs(f200_columns.mean()) < 0.05 and abs(f200_columns.std() - 1.0) < 0.1
    assert np.all(np.diff(keras.ops.convert_to_numpy(chain.links[2].condition_encoder(
        np.column_stack([link_conditions, np.full(len(s1), samples[0, 1])])))[:, -2]) >= 0)
    with pytest.raises(ValueError, match="3 links but 2 encodings"):
        AutoregressiveChain.for_detector(detectors.get("darkside"), conditions, samples,
                                         previous=("quantile", "standardize"), **TINY)
    with pytest.raises(ValueError, match="previous outputs are encoded by one of"):
        AutoregressiveChain.for_detector(detectors.get("darkside"), conditions, samples,
                                         previous="log", **TINY)


def test_an_output_constraint_ties_columns_and_survives_saving(tmp_path):
    from ddsim_gan.models.heads import ThresholdTies

    detector = detectors.get("lhcb_rich")
    conditions, samples = detector.simulate(3000, seed=0)
    ties = ThresholdTies(5, [(3, 4, 0, 17.7)], name="constraint")
    single = AutoregressiveChain.for_detector(detector, conditions, samples,
                                              groups=[(0, 1, 2, 3, 4)], space="quantile",
                                              constraint=ties, **TINY)
    generated = single.generate(conditions, seed=4)
    below = conditions[:, 0] <= 17.7
    assert below.any() and (~below).any()
    np.testing.assert_array_equal(generated[below, 3], generated[below, 4])
    assert np.mean(generated[~below, 3] == generated[~below, 4]) < 0.5
    single.save(tmp_path)
    again = AutoregressiveChain.load(tmp_path)
    assert again.constraint is not None and again.constraint.ties == ties.ties
    np.testing.assert_allclose(again.generate(conditions, seed=4), generated, rtol=1e-6)
    with pytest.raises(ValueError, match="name the output constraint 'constraint'"):
        AutoregressiveChain.for_detector(detector, conditions, samples, groups=[(0, 1, 2, 3, 4)],
                                         constraint=ThresholdTies(5, [], name="ties"), **TINY)


def test_a_link_trains_on_real_previous_values(chain, darkside_data):
    link = chain.links[1]
    conditions, target = chain.link_data(*darkside_data, 1)
    link.compile(generator_optimizer=keras.optimizers.Adam(1e-3, 0.5, 0.9),
                 critic_optimizer=keras.optimizers.Adam(1e-3, 0.5, 0.9))
    logs = link.train_step((tf.constant(conditions[:64]), tf.constant(target[:64])))
    assert set(logs) >= {"critic_loss", "generator_loss", "lipschitz_penalty"}
    assert all(np.isfinite(float(v)) for v in logs.values())


def test_noise_slice():
    layer = NoiseSlice(2, 5)
    x = np.arange(12, dtype="float32").reshape(2, 6)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), x[:, 2:5])
    assert NoiseSlice.from_config(layer.get_config()).stop == 5
    with pytest.raises(ValueError, match="start < stop"):
        NoiseSlice(3, 3)


# ---- the pieces ------------------------------------------------------------------------------
@pytest.mark.parametrize("space", ["linear", "quantile"])
def test_conditional_standardize_centres_and_scales_each_condition(space):
    rng = np.random.default_rng(0)
    n = 20_000
    energy = rng.uniform(1.0, 3.0, n)
    kind = rng.integers(0, 2, n)
    previous = rng.normal(size=n)
    x = 10 * energy + 5 * kind + (1 + kind) * previous + energy * rng.normal(size=n)
    conditions = np.stack([energy, kind, previous], axis=1).astype("float32")
    encoder = ConditionEncoder([0, 2, 0]).adapt(conditions)
    encoded = keras.ops.convert_to_numpy(encoder(conditions))
    layer = ConditionalStandardize.for_encoder(encoder, 1, n_knots=6, n_quantiles=200,
                                               space=space)
    assert (layer.knot_column, layer.category_groups, layer.linear_columns) == (0, [[1, 2]], [3])
    layer.adapt(x[:, None], encoded)
    r = keras.ops.convert_to_numpy(layer([x[:, None].astype("float32"), encoded]))[:, 0]
    for low in (1.0, 2.0):
        for k in (0, 1):
            cell = (energy >= low) & (energy < low + 1) & (kind == k)
            assert abs(r[cell].mean()) < 0.1 and 0.85 < r[cell].std() < 1.15
    back = keras.ops.convert_to_numpy(layer([r[:, None], encoded], inverse=True))[:, 0]
    inside = (x > np.quantile(x, 0.01)) & (x < np.quantile(x, 0.99))
    np.testing.assert_allclose(back[inside], x[inside], atol=0.05)
    # beyond the training range the inverse clamps (no value a detector never produced)
    far = keras.ops.convert_to_numpy(layer([np.float32([[1e3], [-1e3]]), encoded[:2]],
                                           inverse=True))[:, 0]
    np.testing.assert_allclose(far, [x.max(), x.min()], rtol=1e-5)
    assert ConditionalStandardize.from_config(layer.get_config()).get_config() == \
        layer.get_config()
    with pytest.raises(ValueError, match="continuous"):
        ConditionalStandardize.for_encoder(ConditionEncoder([2]), 1)


def test_the_width_model_is_the_same_at_any_scale_of_the_samples():
    # a pulse-shape fraction: residual widths 0.1 down to 0.01 (f200 from low to high energy);
    # an absolute floor under the squared residuals had widened the small ones
    rng = np.random.default_rng(2)
    n = 40_000
    energy = rng.uniform(0.0, 1.0, n)
    width = 0.1 * 10.0 ** -energy
    conditions = energy[:, None].astype("float32")
    encoder = ConditionEncoder([0]).adapt(conditions)
    encoded = keras.ops.convert_to_numpy(encoder(conditions))
    for scale in (1.0, 1e4):
        x = scale * (0.5 + width * rng.normal(size=n))
        layer = ConditionalStandardize.for_encoder(encoder, 1, n_knots=8, space="linear")
        layer.adapt(x[:, None], encoded)
        r = keras.ops.convert_to_numpy(layer([x[:, None].astype("float32"), encoded]))[:, 0]
        for low in (0.0, 0.45, 0.9):
            cell = (energy >= low) & (energy < low + 0.1)
            assert 0.95 < r[cell].std() < 1.05, (scale, low, r[cell].std())


def test_additive_knots_follow_a_step_in_a_second_condition():
    # the mean and width jump where eta crosses 3 (a ring leaving the acceptance): linear in
    # eta the model misses the step, with additive hats in eta it centres and scales both sides
    rng = np.random.default_rng(1)
    n = 40_000
    energy, eta, kind = rng.uniform(1, 3, n), rng.uniform(2, 4, n), rng.integers(0, 2, n)
    step = eta > 3.0
    x = 10 * energy + kind + 4 * step + (1 + 2 * step) * rng.normal(size=n)
    conditions = np.stack([energy, eta, kind], axis=1).astype("float32")
    encoder = ConditionEncoder([0, 0, 2]).adapt(conditions)
    encoded = keras.ops.convert_to_numpy(encoder(conditions))

    def residuals(**options):
        layer = ConditionalStandardize.for_encoder(encoder, 1, n_knots=4, space="linear",
                                                   **options)
        layer.adapt(x[:, None], encoded)
        r = keras.ops.convert_to_numpy(layer([x[:, None].astype("float32"), encoded]))[:, 0]
        return layer, r

    _, linear = residuals()
    layer, additive = residuals(additive_conditions=(1,), n_additive_knots=16)
    assert layer.additive_columns == [1] and layer.n_basis == 4 * 2 * 2 + 16 * 2
    away = np.abs(eta - 3.0) > 0.15        # the hats bridge the step over one knot spacing
    for side in (step & away, ~step & away):
        assert abs(additive[side].mean()) < 0.05 and 0.9 < additive[side].std() < 1.1
    # linear in eta: off by about a tenth of a width in the mean and 15 % in the width
    assert min(abs(linear[side].mean()) for side in (step & away, ~step & away)) > 0.08
    assert linear[~step & away].std() < 0.9
    back = keras.ops.convert_to_numpy(layer([additive[:, None], encoded], inverse=True))[:, 0]
    np.testing.assert_allclose(back, x, rtol=1e-4, atol=1e-3)
    restored = ConditionalStandardize.from_config(layer.get_config())
    assert restored.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="additive conditions \\[2\\] are not continuous"):
        ConditionalStandardize.for_encoder(encoder, 1, additive_conditions=(2,))



def test_moments_without_the_basis_equal_the_basis_times_the_coefficients():
    # sampling regroups phi(c) @ W to skip building phi: same numbers, every kind of block
    rng = np.random.default_rng(3)
    n = 500
    conditions = np.stack([rng.uniform(1, 3, n), rng.integers(0, 3, n), rng.uniform(2, 4, n),
                           rng.integers(0, 2, n), rng.normal(size=n)], axis=1).astype("float32")
    encoder = ConditionEncoder([0, 3, 0, 2, 0]).adapt(conditions)
    encoded = keras.ops.convert_to_numpy(encoder(conditions))
    layer = ConditionalStandardize.for_encoder(encoder, 2, n_knots=5, space="linear",
                                               additive_conditions=(2,), n_additive_knots=7)
    layer.adapt(rng.normal(size=(n, 2)), encoded)
    assert layer.n_basis == 5 * 6 * 3 + 7 * 6
    coef = rng.normal(size=(layer.n_basis, 3)).astype("float32")
    dense = keras.ops.convert_to_numpy(layer.features(encoded)) @ coef
    regrouped = keras.ops.convert_to_numpy(layer._project(encoded, coef))
    np.testing.assert_allclose(regrouped, dense, rtol=1e-5, atol=1e-5)

def _linear_critic_step(weights):
    w = tf.constant(weights, tf.float32)
    real = tf.random.stateless_normal([16, len(weights)], seed=[1, 2])
    fake = tf.random.stateless_normal([16, len(weights)], seed=[3, 4])
    return StepTensors(conditions=None, encoded=None, real=real, fake=fake,
                       critic=lambda x, _: tf.reduce_sum(x * w, axis=1, keepdims=True),
                       to_physical=lambda x: x, seed_generator=keras.random.SeedGenerator(0))


def test_lipschitz_penalty_is_one_sided():
    penalty = LipschitzPenalty(weight=10.0)
    assert float(penalty(_linear_critic_step([0.0]))) == pytest.approx(0.0, abs=1e-6)
    assert float(penalty(_linear_critic_step([0.6]))) == pytest.approx(0.0, abs=1e-6)
    assert float(penalty(_linear_critic_step([2.0]))) == pytest.approx(1.0, abs=1e-5)
    # the two-sided penalty charges a flat critic: the barrier that traps a 1D critic
    assert float(GradientPenalty()(_linear_critic_step([0.0]))) == pytest.approx(1.0, abs=1e-5)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(penalty))
    assert isinstance(restored, LipschitzPenalty) and restored.weight == 10.0


def test_soft_clip_stays_inside_its_bound():
    layer = SoftClip(3.7)
    x = np.array([-100.0, -10.0, 0.0, 0.5, 10.0, 100.0], "float32")
    y = keras.ops.convert_to_numpy(layer(x))
    assert np.abs(y).max() <= 3.7 and np.abs(y[[1, 4]]).max() < 3.7
    assert y[2] == 0 and abs(y[3] - 0.5) < 0.01


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_chain_sampler_runs_under_jax(chain, darkside_data, tmp_path):
    chain.sampler.save(tmp_path / "generator.keras")
    script = textwrap.dedent(f"""
        import keras, numpy as np
        import ddsim_gan.models
        model = keras.saving.load_model({str(tmp_path / 'generator.keras')!r})
        out = model.predict([np.float32([[50.0, 0.0], [50.0, 1.0]]), np.zeros((2, 6), 'float32')],
                            verbose=0)
        assert keras.backend.backend() == "jax" and out.shape == (2, 3), out.shape
    """)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               env={**os.environ, "KERAS_BACKEND": "jax"}, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
