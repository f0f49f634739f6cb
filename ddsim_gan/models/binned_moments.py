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
    ``category_index``, by the category, one of ``n_categories``); for every group g holding at
    least ``min_count`` events and every output column q (physical units of the GAN's samples),

        P = mean_{g, q} [ ((m_fake - m_real)^2 + (s_fake - s_real)^2) / s_real^2 ]
            + mean_{g, q, p} (rho_fake(q, p) - rho_real(q, p))^2,

    m, s the group's mean and standard deviation of q, rho its correlation with the condition
    columns ``paired_start``: (for a link of an auto-regressive chain: the outputs of the links
    before it, so the S2 link learns the S1-S2 correlation of every bin). Real and generated
    events share their conditions. The moments of a group of k events scatter by about
    1 / sqrt(k) of s from batch to batch; their expectation, which the gradient follows, is the
    bin's. ``space="normalized"`` takes q in the network's units (e.g. Gaussianized by a
    quantile transform: heavy-tailed features then weigh by their bulk, not their tails);
    the default, "physical", in physical units. A categorical condition alone (LUXE's species)
    is binned by ``edges`` at the half-integers.
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
    def _group_moments(members, counts, columns):
        """Per group: mean ``[G, k]``, second moment ``[G, k]``."""
        safe = tf.maximum(counts, 1.0)[:, None]
        mean = global_batch_sum(tf.matmul(members, columns, transpose_a=True)) / safe
        second = global_batch_sum(tf.matmul(members, tf.square(columns), transpose_a=True)) / safe
        return mean, second

    def __call__(self, step):
        conditions = tf.cast(step.conditions, tf.float32)
        members = self.membership(conditions)
        counts = global_batch_sum(tf.reduce_sum(members, axis=0))
        used = tf.cast(counts >= self.min_count, tf.float32)[:, None]               # [G, 1]
        n_used = tf.maximum(tf.reduce_sum(used), 1.0)

        def flat(samples):
            x = step.to_physical(samples) if self.space == "physical" else samples
            x = tf.cast(x, tf.float32)
            return tf.reshape(x, [tf.shape(x)[0], -1])

        real, fake = flat(step.real), flat(step.fake)
        mean_r, second_r = self._group_moments(members, counts, real)
        mean_f, second_f = self._group_moments(members, counts, fake)
        std_r = tf.sqrt(tf.nn.relu(second_r - mean_r ** 2) + 1e-12)
        std_f = tf.sqrt(tf.nn.relu(second_f - mean_f ** 2) + 1e-12)
        variance = tf.stop_gradient(tf.square(std_r)) + 1e-12
        terms = (tf.square(mean_f - mean_r) + tf.square(std_f - std_r)) / variance
        k = tf.cast(tf.shape(real)[1], tf.float32)
        penalty = tf.reduce_sum(terms * used) / (n_used * k)
        if self.paired_start is None or conditions.shape[1] <= self.paired_start:
            return penalty
        paired = conditions[:, self.paired_start:]
        mean_p, second_p = self._group_moments(members, counts, paired)
        std_p = tf.sqrt(tf.nn.relu(second_p - mean_p ** 2) + 1e-12)

        def correlation(x, mean_x, std_x):                                   # [G, k, m]
            safe = tf.maximum(counts, 1.0)[:, None, None]
            cross = global_batch_sum(tf.einsum("ng,nk,nm->gkm", members, x, paired)) / safe
            covariance = cross - mean_x[:, :, None] * mean_p[:, None, :]
            return covariance / (std_x[:, :, None] * std_p[:, None, :] + 1e-12)

        mismatch = tf.square(correlation(fake, mean_f, std_f) - correlation(real, mean_r, std_r))
        m = tf.cast(tf.shape(paired)[1], tf.float32)
        return penalty + tf.reduce_sum(mismatch * used[:, :, None]) / (n_used * k * m)

    def get_config(self):
        return {**super().get_config(), "edges": self.edges,
                "condition_index": self.condition_index, "category_index": self.category_index,
                "n_categories": self.n_categories, "paired_start": self.paired_start,
                "min_count": self.min_count, "space": self.space}
