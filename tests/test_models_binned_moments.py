"""The per-bin moment penalty (DarkSide-20k's binned bar as a training term)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ddsim_gan.models.binned_moments import BinnedMomentPenalty
from ddsim_gan.models.penalties import StepTensors


def _step(conditions, real, fake, to_physical=lambda x: x):
    return StepTensors(tf.constant(conditions, tf.float32), None, tf.constant(real, tf.float32),
                       tf.constant(fake, tf.float32), None, to_physical=to_physical)


def _events(rng, n=4000):
    energy = rng.uniform(0.0, 20.0, n)
    kind = rng.integers(0, 2, n).astype(float)
    previous = rng.normal(size=n)
    return np.stack([energy, kind, previous], axis=1)


def _halves_by_hand(real, fake, rows):
    """(d_m^A d_m^B + d_s^A d_s^B) / mean of the halves' real variances, one group, one column."""
    index = np.flatnonzero(rows)
    parts = [index[index % 2 == 0], index[index % 2 == 1]]
    dm = [fake[p].mean() - real[p].mean() for p in parts]
    ds = [fake[p].std() - real[p].std() for p in parts]
    variance = np.mean([real[p].var() for p in parts])
    return (dm[0] * dm[1] + ds[0] * ds[1]) / variance


def test_matching_distributions_cost_only_their_sampling_noise():
    rng = np.random.default_rng(0)
    conditions = _events(rng)
    real = conditions[:, :1] * (1 + conditions[:, 1:2]) + rng.normal(size=(4000, 1))
    fake = conditions[:, :1] * (1 + conditions[:, 1:2]) + rng.normal(size=(4000, 1))
    penalty = BinnedMomentPenalty([0, 10, 20], category_index=1, n_categories=2)
    # 4 groups of ~500 events per half: each difference scatters by ~ 1/sqrt(500) of s
    assert abs(float(penalty(_step(conditions, real, fake)))) < 0.005


def test_a_width_error_in_one_bin_is_seen_by_hand():
    rng = np.random.default_rng(1)
    conditions = _events(rng)
    real = rng.normal(size=(4000, 1))
    fake = real.copy()
    group = (conditions[:, 0] >= 10) & (conditions[:, 1] == 1)
    fake[group] *= 1.2                             # 20 % too wide in one of the four groups
    penalty = BinnedMomentPenalty([0, 10, 20], category_index=1, n_categories=2)
    expected = _halves_by_hand(real[:, 0], fake[:, 0], group) / 4
    assert float(penalty(_step(conditions, real, fake))) == pytest.approx(expected, rel=1e-3)
    assert expected == pytest.approx(0.2 ** 2 / 4, rel=0.1)


def test_the_halves_remove_the_pull_towards_narrow_outputs():
    """With one sample the mean term of k events averages d_m^2 + 2 s^2 / k > 0 for identical
    distributions; with two halves it averages zero."""
    rng = np.random.default_rng(4)
    conditions = np.zeros((40, 3))
    conditions[:, 0] = 5.0
    values = [float(BinnedMomentPenalty([0, 10], min_count=5)(_step(
        conditions, rng.normal(size=(40, 1)), rng.normal(size=(40, 1))))) for _ in range(300)]
    assert abs(np.mean(values)) < 3 * np.std(values) / np.sqrt(len(values))
    assert min(values) < 0 < max(values)


def test_correlation_with_the_previous_output_is_matched_per_bin():
    rng = np.random.default_rng(2)
    conditions = _events(rng)
    independent = rng.normal(size=(4000, 1))
    correlated = -0.6 * conditions[:, 2:3] + 0.8 * independent
    penalty = BinnedMomentPenalty([0, 20], paired_start=2, min_count=10)
    without_pairs = BinnedMomentPenalty([0, 20], min_count=10)
    step = _step(conditions, correlated, independent)
    # same marginal (unit normal), correlation -0.6 against 0: the term is about 0.36
    assert abs(float(without_pairs(step))) < 0.01
    assert float(penalty(step)) == pytest.approx(0.36, abs=0.05)


def test_small_groups_are_left_out_and_the_gradient_follows_the_width():
    conditions = np.zeros((9, 3))
    conditions[:8, 0] = np.arange(8) + 1.0         # 8 events in [0, 10), 4 per half
    conditions[8, 0] = 15.0                        # one lone event in [10, 20)
    real = np.array([[-2.0], [-2.0], [-1.0], [-1.0], [1.0], [1.0], [2.0], [2.0], [100.0]])
    start = 0.5 * real
    start[8] = -100.0
    fake = tf.Variable(start.astype(np.float32))
    penalty = BinnedMomentPenalty([0, 10, 20], min_count=3)
    with tf.GradientTape() as tape:
        value = penalty(StepTensors(tf.constant(conditions, tf.float32), None,
                                    tf.constant(real, tf.float32), fake, None, lambda x: x))
    expected = _halves_by_hand(real[:8, 0], start[:8, 0], np.ones(8, bool))
    assert float(value) == pytest.approx(expected, rel=1e-4)
    gradient = tape.gradient(value, fake).numpy()[:, 0]
    assert gradient[8] == 0                        # the lone event costs nothing
    # descending the gradient moves the events of the too-narrow bin outwards
    assert np.all(gradient[:2] > 0) and np.all(gradient[6:8] < 0)


def test_normalized_space_ignores_the_physical_transform():
    rng = np.random.default_rng(3)
    conditions = _events(rng)
    real = rng.normal(size=(4000, 2))
    step = _step(conditions, real, real + 0.1, to_physical=lambda x: tf.exp(10.0 * x))
    normalized = BinnedMomentPenalty([0, 20], space="normalized")
    assert float(normalized(step)) == pytest.approx(0.01, rel=0.05)    # a 0.1 sigma shift
    with pytest.raises(ValueError, match="space"):
        BinnedMomentPenalty([0, 1], space="gaussian")


def test_round_trip_and_bad_edges():
    penalty = BinnedMomentPenalty([5, 15, 25], category_index=1, n_categories=2, paired_start=2,
                                  weight=3.0)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(penalty))
    assert restored.get_config() == penalty.get_config()
    with pytest.raises(ValueError, match="increasing"):
        BinnedMomentPenalty([5, 5, 6])


def test_binned_observable_moments_see_a_dependence_the_batch_moments_miss():
    """Two halves of the condition range with their showers' centres swapped: the batch's
    observables keep their mean and spread, each bin's do not."""
    import keras

    from ddsim_gan.models.binned_moments import BinnedObservableMomentPenalty
    from ddsim_gan.models.penalties import ShowerMomentPenalty, StepTensors

    from conftest import MiniCalo

    detector = MiniCalo()
    rng = np.random.default_rng(3)
    n = 512
    conditions = np.sort(rng.uniform(100, 1000, (n, 1)).astype(np.float32), axis=0)
    _, samples = detector.simulate(n, seed=3)
    low = conditions[:, 0] < 550
    real = samples.copy()
    real[low] = np.roll(samples[low], 1, axis=1)     # low energies: one cell further along x
    swapped = samples.copy()
    swapped[~low] = np.roll(samples[~low], 1, axis=1)
    batch = ShowerMomentPenalty.for_detector(detector)
    binned = BinnedObservableMomentPenalty([100.0, 550.0, 1000.0], batch, weight=2.0)

    def step(fake):
        return StepTensors(tf.constant(conditions), None, tf.constant(real), tf.constant(fake),
                           None, to_physical=lambda x: x)

    same, wrong = float(binned(step(real))), float(binned(step(swapped)))
    assert abs(same) < 1e-6 and wrong > 0.1, (same, wrong)
    assert float(batch(step(swapped))) < 0.2 * wrong          # the batch moments barely move
    fake = tf.Variable(swapped)
    with tf.GradientTape() as tape:
        value = binned(StepTensors(tf.constant(conditions), None, tf.constant(real), fake,
                                   None, to_physical=lambda x: x))
    assert float(tf.reduce_sum(tf.abs(tape.gradient(value, fake)))) > 0
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(binned))
    assert again.edges == binned.edges and again.weight == 2.0
    assert float(again(step(swapped))) == pytest.approx(wrong, rel=1e-5)


# ---- the tail-fraction penalty (LUXE's slow arrivals) ----------------------------------------
def _tail_sample(rng, species, slow_fraction):
    """Normalized samples for the ``species`` [n, 1]: a bulk N(0, 0.5) in column 1, and for
    species 0 ``slow_fraction`` of events at N(2.8, 0.2) instead."""
    n = len(species)
    z = rng.normal(0.0, 0.5, n)
    slow = (species[:, 0] == 0) & (rng.uniform(size=n) < slow_fraction)
    z[slow] = rng.normal(2.8, 0.2, slow.sum())
    return np.stack([rng.normal(size=n), z], axis=1)


def test_tail_fraction_penalty_by_hand_and_its_pull_on_a_dropped_tail():
    from ddsim_gan.models.binned_moments import TailFractionPenalty

    rng = np.random.default_rng(0)
    conditions = (rng.uniform(size=(4000, 1)) < 0.1).astype(float)     # species 1: 10 %
    real = _tail_sample(rng, conditions, 0.03)
    fake = _tail_sample(rng, conditions, 0.005)   # the generator dropped most of the tail
    penalty = TailFractionPenalty([-0.5, 0.5, 1.5], column=1, thresholds=[1.5, 2.5], width=0.3,
                                  min_count=8)
    value = float(penalty(_step(conditions, real, fake)))

    def fractions(z, rows):
        return 1.0 / (1.0 + np.exp(-(z[rows, None] - np.array([1.5, 2.5])) / 0.3))

    expected, index = [], np.arange(4000)
    for group in (0, 1):
        parts = [(conditions[:, 0] == group) & (index % 2 == h) for h in (0, 1)]
        d = [fractions(fake[:, 1], p).mean(0) - fractions(real[:, 1], p).mean(0) for p in parts]
        f = np.mean([fractions(real[:, 1], p).mean(0) for p in parts], axis=0)
        expected.append(d[0] * d[1] / (f * (1 - f) + 1e-3))
    np.testing.assert_allclose(value, np.mean(expected), rtol=1e-4)
    # species 0, 0.5 % against 3 % beyond the cuts: about 0.025^2 / 0.03 for each of its 2
    # cuts, averaged with species 1's two terms (both tails empty)
    assert 0.003 < value < 0.03
    # the gradient pushes the generated events just under the cut up, the bulk (4 widths
    # below the first cut) an order of magnitude less
    fake_t = tf.Variable(tf.constant(fake, tf.float32))
    with tf.GradientTape() as tape:
        loss = penalty(StepTensors(tf.constant(conditions, tf.float32), None,
                                   tf.constant(real, tf.float32), fake_t, None,
                                   to_physical=lambda x: x))
    grad = tape.gradient(loss, fake_t).numpy()[:, 1]
    species0 = conditions[:, 0] == 0
    near = species0 & (fake[:, 1] > 1.0) & (fake[:, 1] < 1.5)
    bulk = species0 & (np.abs(fake[:, 1]) < 0.3)
    assert near.sum() > 5 and (grad[near] < 0).all()
    assert np.abs(grad[bulk]).max() < 0.2 * np.abs(grad[near]).mean()
    # matching tails cost only noise; a config round trip keeps the penalty
    other = _tail_sample(rng, conditions, 0.03)
    assert abs(float(penalty(_step(conditions, real, other)))) < 0.2 * value
    again = TailFractionPenalty.from_config(penalty.get_config())
    assert float(again(_step(conditions, real, fake))) == pytest.approx(value)


def test_normalized_thresholds_match_the_quantile_transform():
    from ddsim_gan.data.preprocessing import QuantileTransform
    from ddsim_gan.models.binned_moments import normalized_thresholds

    rng = np.random.default_rng(1)
    t = np.concatenate([rng.normal(10.0, 0.3, 9700), 10 ** rng.uniform(3, 6, 300)])
    cuts = [1e3, 1e4, 1e5]
    transform = QuantileTransform(1).adapt(t[:, None])
    expected = keras.ops.convert_to_numpy(transform(np.array(cuts, "float32")[:, None]))[:, 0]
    np.testing.assert_allclose(normalized_thresholds(t, cuts), expected, atol=0.02)


class _Identity:
    """Observables that are the samples themselves (two numbers per event)."""

    def observables(self, physical, conditions):
        return physical

    def get_config(self):
        return {}


def test_binned_correlations_see_what_the_batch_and_the_moments_miss():
    """Opposite correlations in two bins (none over the batch) against none in either: every
    mean and spread agrees bin by bin, only the per-bin correlation term tells them apart."""
    from ddsim_gan.models.binned_moments import BinnedObservableMomentPenalty

    rng = np.random.default_rng(4)
    n = 4096
    conditions = rng.uniform(0.0, 2.0, (n, 1)).astype(np.float32)
    a, noise = rng.normal(size=n), rng.normal(size=n)
    sign = np.where(conditions[:, 0] < 1.0, 1.0, -1.0)
    real = np.stack([a, sign * 0.8 * a + 0.6 * noise], axis=1).astype(np.float32)
    fake = real.copy()
    for rows in (conditions[:, 0] < 1.0, conditions[:, 0] >= 1.0):   # decorrelate in each bin
        fake[rows, 1] = rng.permutation(fake[rows, 1])
    assert abs(np.corrcoef(real.T)[0, 1]) < 0.05

    def step(fake_values):
        return StepTensors(tf.constant(conditions), None, tf.constant(real), fake_values, None,
                           to_physical=lambda x: x)

    plain = BinnedObservableMomentPenalty([0.0, 1.0, 2.0], _Identity())
    with_corr = BinnedObservableMomentPenalty([0.0, 1.0, 2.0], _Identity(),
                                              correlation_weight=1.0)
    assert abs(float(plain(step(tf.constant(fake))))) < 0.01
    assert float(with_corr(step(tf.constant(real)))) == pytest.approx(0.0, abs=1e-6)
    # d_rho = -0.8 for the two off-diagonal entries of 2 x 2 in both bins: 0.64 / 2
    assert float(with_corr(step(tf.constant(fake)))) == pytest.approx(0.32, abs=0.04)
    variable = tf.Variable(fake)
    with tf.GradientTape() as tape:
        value = with_corr(step(variable))
    assert float(tf.reduce_sum(tf.abs(tape.gradient(value, variable)))) > 0
    assert with_corr.get_config()["correlation_weight"] == 1.0
