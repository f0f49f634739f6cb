"""Moments of the generated outputs matched bin by bin of a condition: the conditional bar of
issue 3 (DarkSide-20k: mean and width of S1, S2, f200 within 3 % and the S1-S2 correlation within
0.05 in every 10-keV bin per recoil type) as a training term."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from .penalties import Penalty, global_batch_sum

_PACKAGE = "ddsim_gan"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BinnedMomentPenalty(Penalty):
    """Feature matching per condition bin (T. Salimans et al., arXiv:1606.03498, sec. 3.1, taken
    bin by bin, with the outputs themselves as the features). Events of the global batch are
    grouped by the bin of condition ``condition_index`` in ``edges`` (and, given
    ``category_index``, by the category, one of ``n_categories``); for every group g and every
    output column q (the GAN's samples in ``space`` units),

        P = mean_{g, q} [ (d_m^A d_m^B + d_s^A d_s^B) / s_real^2 ]
            + mean_{g, q, p} d_rho^A(q, p) d_rho^B(q, p),

    with d_m = m_fake - m_real, d_s = s_fake - s_real and d_rho = rho_fake - rho_real the
    differences of the group's mean, standard deviation and correlation with the condition
    columns ``paired_start``: (for a link of an auto-regressive chain: the outputs of the links
    before it, so the S2 link learns the S1-S2 correlation of every bin), each computed on the
    two halves A and B of the batch (events of even and odd index) separately. Real and
    generated events share their conditions. Only groups with at least ``min_count`` events in
    each half count.

    Why two halves: a group of k events scatters its moments by about 1 / sqrt(k), and the
    square (m_fake - m_real)^2 of one sample has expectation d_m^2 + (s_fake^2 + s_real^2) / k,
    which a generator lowers by narrowing: with k = 20 events the minimum sits 5 % too narrow,
    beyond the DarkSide width bar (3 %). The product of two independent halves has expectation
    exactly d_m^2 (and d_s^2, d_rho^2 up to the same finite-sample bias in fake and real), so
    the gradient points at the bin's true moments; the price is a noisier estimate, and a
    value that can be negative in a single batch.

    ``space="normalized"`` takes q in the network's units (e.g. Gaussianized by a quantile
    transform: heavy-tailed features then weigh by their bulk, not their tails); the default,
    "physical", in physical units. A categorical condition alone (LUXE's species) is binned by
    ``edges`` at the half-integers.
    """

    side = "generator"
    name = "binned_moments"

    def __init__(self, edges, condition_index: int = 0, category_index=None,
                 n_categories: int = 1, paired_start=None, min_count: int = 8,
                 weight: float = 1.0, space: str = "physical"):
        super().__init__(weight)
        if space not in ("physical", "normalized"):
            raise ValueError(f"space must be 'physical' or 'normalized', got {space!r}")
        self.space = space
        self.edges = [float(e) for e in edges]
        if len(self.edges) < 2 or np.any(np.diff(self.edges) <= 0):
            raise ValueError(f"edges must be at least two increasing numbers, got {edges}")
        self.condition_index = int(condition_index)
        self.category_index = None if category_index is None else int(category_index)
        self.n_categories = int(n_categories) if category_index is not None else 1
        self.paired_start = None if paired_start is None else int(paired_start)
        self.min_count = int(min_count)

    def membership(self, conditions):
        """``[n, groups]`` one-hot group of every event (outside the edges: no group)."""
        value = tf.cast(conditions[:, self.condition_index], tf.float32)
        edges = tf.constant(self.edges, tf.float32)
        n_bins = len(self.edges) - 1
        bins = tf.searchsorted(edges, value, side="right") - 1
        inside = tf.logical_and(value >= self.edges[0], value <= self.edges[-1])
        bins = tf.clip_by_value(bins, 0, n_bins - 1)
        if self.category_index is not None:
            category = tf.cast(tf.round(tf.cast(conditions[:, self.category_index],
                                                tf.float32)), tf.int32)
            inside = tf.logical_and(inside, tf.logical_and(category >= 0,
                                                           category < self.n_categories))
            bins = category * n_bins + bins
        groups = n_bins * self.n_categories
        return tf.one_hot(bins, groups, dtype=tf.float32) * tf.cast(inside, tf.float32)[:, None]

    @staticmethod
    def group_moments(members, x, paired=None):
        """Per group (``members`` ``[n, G]``): count ``[G]``, mean and std ``[G, k]`` of ``x``
        ``[n, k]``, and its correlation ``[G, k, m]`` with ``paired`` ``[n, m]`` (or None)."""
        counts = global_batch_sum(tf.reduce_sum(members, axis=0))
        safe = tf.maximum(counts, 1.0)[:, None]

        def mean_std(values):
            mean = global_batch_sum(tf.matmul(members, values, transpose_a=True)) / safe
            second = global_batch_sum(tf.matmul(members, tf.square(values),
                                                transpose_a=True)) / safe
            return mean, tf.sqrt(tf.nn.relu(second - mean ** 2) + 1e-12)

        mean, std = mean_std(x)
        if paired is None:
            return counts, mean, std, None
        mean_p, std_p = mean_std(paired)
        cross = global_batch_sum(tf.einsum("ng,nk,nm->gkm", members, x, paired)) / safe[:, :, None]
        covariance = cross - mean[:, :, None] * mean_p[:, None, :]
        return counts, mean, std, covariance / (std[:, :, None] * std_p[:, None, :] + 1e-12)

    def features(self, samples, step):
        """``[n, k]``: the columns whose moments are matched, here the samples themselves."""
        x = step.to_physical(samples) if self.space == "physical" else samples
        x = tf.cast(x, tf.float32)
        return tf.reshape(x, [tf.shape(x)[0], -1])

    def variance_floor(self, real):
        """Added to each group's variance in the denominator (here only against 0 / 0)."""
        return 1e-12

    def __call__(self, step):
        conditions = tf.cast(step.conditions, tf.float32)
        members = self.membership(conditions)
        parity = tf.cast(tf.range(tf.shape(members)[0]) % 2, tf.float32)[:, None]
        real, fake = self.features(step.real, step), self.features(step.fake, step)
        paired = None
        if self.paired_start is not None and conditions.shape[1] > self.paired_start:
            paired = conditions[:, self.paired_start:]
        halves = []
        for half in (members * (1.0 - parity), members * parity):
            counts, *real_moments = self.group_moments(half, real, paired)
            _, *fake_moments = self.group_moments(half, fake, paired)
            halves.append((counts, real_moments, fake_moments))
        return self.combine(halves, real) + self.extra_terms(members, parity, real, fake)

    def extra_terms(self, members, parity, real, fake):
        """Further terms from the same groups (``members``), halves (``parity``) and features;
        none here."""
        return 0.0

    def combine(self, halves, real):
        """P (class docstring) from the two halves' ``(counts, real moments, fake moments)``,
        each moments being ``group_moments``' (mean, std, correlation or None)."""
        differences, used, variance = [], 1.0, 0.0
        for counts, (mean_r, std_r, rho_r), (mean_f, std_f, rho_f) in halves:
            used = used * tf.cast(counts >= self.min_count, tf.float32)[:, None]
            variance = variance + 0.5 * tf.stop_gradient(tf.square(std_r))
            differences.append((mean_f - mean_r, std_f - std_r,
                                None if rho_r is None else rho_f - rho_r))
        (dm_a, ds_a, dr_a), (dm_b, ds_b, dr_b) = differences
        k = tf.cast(tf.shape(real)[1], tf.float32)
        n_used = tf.maximum(tf.reduce_sum(used), 1.0)
        terms = (dm_a * dm_b + ds_a * ds_b) / (variance + self.variance_floor(real))
        penalty = tf.reduce_sum(terms * used) / (n_used * k)
        if dr_a is None:
            return penalty
        m = tf.cast(tf.shape(dr_a)[2], tf.float32)
        return penalty + tf.reduce_sum(dr_a * dr_b * used[:, :, None]) / (n_used * k * m)

    def get_config(self):
        return {**super().get_config(), "edges": self.edges,
                "condition_index": self.condition_index, "category_index": self.category_index,
                "n_categories": self.n_categories, "paired_start": self.paired_start,
                "min_count": self.min_count, "space": self.space}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BinnedObservableMomentPenalty(BinnedMomentPenalty):
    """:class:`BinnedMomentPenalty` on the shower observables of the samples instead of their
    cells: ``observables`` is an object whose ``observables(physical, conditions) -> [n, q]``
    computes them in TensorFlow, e.g. a :class:`~ddsim_gan.models.penalties.ShowerMomentPenalty`
    (its own weight unused). :class:`~ddsim_gan.models.penalties.ShowerMomentPenalty` matches
    the moments of the whole batch; a generator can meet those with the wrong dependence on the
    conditions (DarkSHINE: the energy centre's spread 1.5-2x too wide above 3 GeV and too
    narrow below, at the right overall mean and spread), which the same moments taken bin by
    bin of the condition do not allow.

    With ``correlation_weight`` c > 0 the observables' correlation matrix is matched bin by bin
    too, from the same two halves: P += c mean_{g, q, p} d_rho^A(q, p) d_rho^B(q, p), each
    correlation taken with the variances floored as in :meth:`variance_floor` (an observable
    that is zero in every event of a bin has no correlation to learn). A generator can meet
    the batch's correlations with the wrong ones inside each energy bin (DarkSHINE at 6-8 GeV:
    neighbouring late layers correlated 0.05 against 0.35).
    """

    name = "binned_observable_moments"

    def __init__(self, edges, observables=None, condition_index: int = 0,
                 min_count: int = 8, weight: float = 1.0, correlation_weight: float = 0.0):
        super().__init__(edges, condition_index=condition_index, min_count=min_count,
                         weight=weight, space="physical")
        if observables is None:
            raise ValueError("BinnedObservableMomentPenalty needs observables")
        self.observables = observables
        self.correlation_weight = float(correlation_weight)

    def extra_terms(self, members, parity, real, fake):
        """The per-bin correlation term (class docstring) when ``correlation_weight`` > 0."""
        if self.correlation_weight <= 0:
            return 0.0
        floor = self.variance_floor(real)
        differences, used = [], 1.0
        for half in (members * (1.0 - parity), members * parity):
            counts, rho_real = _floored_group_correlations(half, real, floor)
            _, rho_fake = _floored_group_correlations(half, fake, floor)
            used = used * tf.cast(counts >= self.min_count, tf.float32)[:, None, None]
            differences.append(rho_fake - rho_real)
        entries = tf.maximum(tf.reduce_sum(used), 1.0) * tf.cast(tf.shape(real)[1] ** 2,
                                                                 tf.float32)
        return self.correlation_weight * tf.reduce_sum(
            differences[0] * differences[1] * used) / entries

    def variance_floor(self, real):
        """A hundredth of each observable's variance over the whole batch: an observable that
        hardly varies within one bin (the last layer's energy at low energies, which is
        almost always zero) would otherwise weigh 1e12 times the others."""
        mean = tf.reduce_mean(real, axis=0)
        return tf.stop_gradient(0.01 * tf.reduce_mean(tf.square(real - mean), axis=0)) + 1e-12

    def features(self, samples, step):
        physical = tf.cast(step.to_physical(samples), tf.float32)
        return tf.cast(self.observables.observables(physical, step.conditions), tf.float32)

    def get_config(self):
        return {"weight": self.weight, "edges": self.edges,
                "condition_index": self.condition_index, "min_count": self.min_count,
                "correlation_weight": self.correlation_weight,
                "observables": keras.saving.serialize_keras_object(self.observables)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["observables"] = keras.saving.deserialize_keras_object(config["observables"])
        return cls(**config)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TailFractionPenalty(BinnedMomentPenalty):
    """The fraction of events beyond each of ``thresholds`` in output column ``column`` (in the
    network's normalized units), matched per group of a condition (``edges`` as
    :class:`BinnedMomentPenalty`):

        P = mean_{g, k} (f_fake^A - f_real^A)(f_fake^B - f_real^B) / (f_real (1 - f_real) + floor)

    with f the group's mean of sigmoid((z - z_k) / ``width``) over the batch half A or B (the
    two-halves product of :class:`BinnedMomentPenalty`, so the gradient points at the true
    fractions), normalized by the binomial variance of the real fraction, floored at ``floor``
    so a group without a tail (real fraction 0) still pulls a spurious generated one back.

    Why: a GAN drops a small population that lies apart from the bulk (mode dropping;
    I. Goodfellow, arXiv:1701.00160, sec. 5.1.1). LUXE's inner photons have 2.2 % of slow
    arrivals (t > 1 us, up to 1e6 ns) beside a bulk at 10 ns; the shipped generator drew 0.6 %,
    and that tail sets the inner W1 of t (0.064, bar 0.05). Means and widths in Gaussianized
    units (the moment penalty) weigh the tail by its bulk; a fraction beyond a cut between the
    two weighs it by its count. The width in normalized units gives the generated events
    near the cut a gradient across it (the occupancy indicator's reasoning, SiW).
    """

    name = "tail_fractions"

    def __init__(self, edges, column: int = 0, thresholds=(0.0,), width: float = 0.3,
                 floor: float = 1e-3, condition_index: int = 0, min_count: int = 8,
                 weight: float = 1.0):
        super().__init__(edges, condition_index=condition_index, min_count=min_count,
                         weight=weight, space="normalized")
        self.column = int(column)
        self.thresholds = [float(t) for t in np.ravel(thresholds)]
        if not self.thresholds:
            raise ValueError("TailFractionPenalty needs at least one threshold")
        if not width > 0 or not floor > 0:
            raise ValueError(f"width and floor must be positive, got {width}, {floor}")
        self.width, self.floor = float(width), float(floor)

    def features(self, samples, step):
        z = tf.cast(samples, tf.float32)[:, self.column:self.column + 1]
        return tf.sigmoid((z - tf.constant(self.thresholds, tf.float32)[None, :]) / self.width)

    def combine(self, halves, real):
        """P (class docstring): the group means of the indicators are the fractions."""
        differences, used, fraction = [], 1.0, 0.0
        for counts, (real_fraction, _, _), (fake_fraction, _, _) in halves:
            used = used * tf.cast(counts >= self.min_count, tf.float32)[:, None]
            fraction = fraction + 0.5 * tf.stop_gradient(real_fraction)
            differences.append(fake_fraction - real_fraction)
        variance = fraction * (1.0 - fraction) + self.floor
        terms = differences[0] * differences[1] / variance * used
        return tf.reduce_sum(terms) / tf.maximum(tf.reduce_sum(used) * len(self.thresholds), 1.0)

    def get_config(self):
        return {"weight": self.weight, "edges": self.edges, "column": self.column,
                "thresholds": self.thresholds, "width": self.width, "floor": self.floor,
                "condition_index": self.condition_index, "min_count": self.min_count}


def normalized_thresholds(values, thresholds, epsilon=1e-4) -> list[float]:
    """Physical ``thresholds`` of one feature in the units of a quantile transform adapted on
    ``values`` (the training data): Phi^-1 of the empirical CDF at each threshold."""
    from scipy.special import ndtri

    values = np.sort(np.asarray(values, np.float64).ravel())
    levels = np.searchsorted(values, np.ravel(thresholds), side="right") / len(values)
    return ndtri(np.clip(levels, epsilon, 1.0 - epsilon)).tolist()


def _floored_group_correlations(members, x, floor):
    """Per group (``members`` ``[n, G]``): count ``[G]`` and the correlation matrix ``[G, k, k]``
    of ``x`` ``[n, k]``, the variances in its denominator raised by ``floor`` ``[k]``."""
    counts = global_batch_sum(tf.reduce_sum(members, axis=0))
    safe = tf.maximum(counts, 1.0)[:, None]
    mean = global_batch_sum(tf.matmul(members, x, transpose_a=True)) / safe
    cross = global_batch_sum(tf.einsum("ng,nk,nm->gkm", members, x, x)) / safe[:, :, None]
    covariance = cross - mean[:, :, None] * mean[:, None, :]
    variance = tf.nn.relu(tf.linalg.diag_part(covariance)) + floor
    return counts, covariance / tf.sqrt(variance[:, :, None] * variance[:, None, :])
