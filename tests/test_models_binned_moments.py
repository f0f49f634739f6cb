"""The per-bin moment penalty (DarkSide-20k's binned bar as a training term)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ddsim_gan.models.binned_moments import BinnedMomentPenalty
from ddsim_gan.models.penalties import StepTensors


def _step(conditions, real, fake):
    return StepTensors(tf.constant(conditions, tf.float32), None, tf.constant(real, tf.float32),
                       tf.constant(fake, tf.float32), None, to_physical=lambda x: x)


def _events(rng, n=4000):
    energy = rng.uniform(0.0, 20.0, n)
    kind = rng.integers(0, 2, n).astype(float)
    previous = rng.normal(size=n)
    return np.stack([energy, kind, previous], axis=1)


def test_matching_distributions_cost_only_their_sampling_noise():
    rng = np.random.default_rng(0)
    conditions = _events(rng)
    real = (conditions[:, :1] * (1 + conditions[:, 1:2]) + rng.normal(size=(4000, 1)))
    fake = (conditions[:, :1] * (1 + conditions[:, 1:2]) + rng.normal(size=(4000, 1)))
    penalty = BinnedMomentPenalty([0, 10, 20], category_index=1, n_categories=2)
    # 4 groups of ~1000 events: mean and std each scatter by ~ 1/sqrt(1000) of s
    assert float(penalty(_step(conditions, real, fake))) < 0.01


def test_a_width_error_in_one_bin_is_seen_by_hand():
    rng = np.random.default_rng(1)
    conditions = _events(rng)
    noise = rng.normal(size=(4000, 1))
    real = noise.copy()
    fake = noise.copy()
    group = (conditions[:, 0] >= 10) & (conditions[:, 1] == 1)
    fake[group] *= 1.2                             # 20 % too wide in one of the four groups
    penalty = BinnedMomentPenalty([0, 10, 20], category_index=1, n_categories=2)
    r = real[group, 0]
    expected = ((1.2 * r.mean() - r.mean()) ** 2 + (0.2 * r.std()) ** 2) / r.var() / 4
    assert float(penalty(_step(conditions, real, fake))) == pytest.approx(expected, rel=1e-3)


def test_correlation_with_the_previous_output_is_matched_per_bin():
    rng = np.random.default_rng(2)
    conditions = _events(rng)
    independent = rng.normal(size=(4000, 1))
    correlated = -0.6 * conditions[:, 2:3] + 0.8 * independent
    penalty = BinnedMomentPenalty([0, 20], paired_start=2, min_count=10)
    without_pairs = BinnedMomentPenalty([0, 20], min_count=10)
    step = _step(conditions, correlated, independent)
    # same marginal (unit normal), correlation -0.6 against 0: the term is about 0.36
    assert float(without_pairs(step)) < 0.01
    assert float(penalty(step)) == pytest.approx(0.36, abs=0.05)


def test_small_groups_are_left_out_and_the_gradient_follows_the_width():
    conditions = np.array([[1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0], [15.0, 0, 0]])
    real = np.array([[0.0], [1.0], [2.0], [100.0]])
    fake = tf.Variable(np.array([[0.5], [1.0], [1.5], [-100.0]], np.float32))
    penalty = BinnedMomentPenalty([0, 10, 20], min_count=3)
    with tf.GradientTape() as tape:
        value = penalty(StepTensors(tf.constant(conditions, tf.float32), None,
                                    tf.constant(real, tf.float32), fake, None, lambda x: x))
    # only the first bin (3 events) counts; the lone event at 15 costs nothing
    std_r, std_f = np.std([0.0, 1.0, 2.0]), np.std([0.5, 1.0, 1.5])
    assert float(value) == pytest.approx((std_f - std_r) ** 2 / std_r ** 2, rel=1e-4)
    gradient = tape.gradient(value, fake).numpy()[:, 0]
    # descending the gradient moves the outer events of the too-narrow bin outwards
    assert gradient[0] > 0 > gradient[2] and gradient[3] == 0


def test_round_trip_and_bad_edges():
    penalty = BinnedMomentPenalty([5, 15, 25], category_index=1, n_categories=2, paired_start=2,
                                  weight=3.0)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(penalty))
    assert restored.get_config() == penalty.get_config()
    with pytest.raises(ValueError, match="increasing"):
        BinnedMomentPenalty([5, 5, 6])


def test_normalized_space_ignores_the_physical_transform():
    rng = np.random.default_rng(3)
    conditions = _events(rng)
    real = rng.normal(size=(4000, 2))
    step = StepTensors(tf.constant(conditions, tf.float32), None, tf.constant(real, tf.float32),
                       tf.constant(real, tf.float32) + 0.1, None,
                       to_physical=lambda x: tf.exp(10.0 * x))      # tails dominate physically
    normalized = BinnedMomentPenalty([0, 20], space="normalized")
    assert float(normalized(step)) == pytest.approx(0.01, rel=0.05)    # a 0.1 sigma shift
    with pytest.raises(ValueError, match="space"):
        BinnedMomentPenalty([0, 1], space="gaussian")
