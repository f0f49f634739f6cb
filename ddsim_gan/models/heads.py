"""Output heads for vector detectors: Gaussian generator units -> physical units, with structure.

A :class:`~ddsim_gan.models.gan.ConditionalGAN` with an ``output_head`` hands the head the
generator's raw output and the physical conditions, and takes the head's output as the physical
sample (the critic then sees ``sample_transform`` of it). The heads here start from
:class:`QuantileHead`: the generator works in the Gaussian units of a quantile transform, the head
maps them back through the inverse empirical CDF (the same map as
:class:`~ddsim_gan.data.preprocessing.QuantileTransform`'s inverse, so point masses stay exact),
then imposes what the detector guarantees and a generator would only approximate:

* :class:`ThresholdTieHead`: below a Cherenkov threshold a particle hypothesis gives no ring, so
  its likelihood *is* the "below threshold" likelihood and the two DLLs are equal, exactly
  (seed 001; DESIGN.md "RICH Cherenkov thresholds");
* :class:`~ddsim_gan.models.regions.RegionHead`: particles of one region stay in it (seed 004).

``keras.ops`` only: the heads load under every Keras backend.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ..data.preprocessing import QuantileTransform

_PACKAGE = "ddsim_gan"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantileHead(keras.layers.Layer):
    """``[raw (N, n) Gaussian units, conditions] -> physical (N, n)`` by the inverse CDF of the
    training samples (adapt with :meth:`adapt`), then :meth:`constrain`.

    Given ``category_index`` (a categorical condition column, e.g. the particle species) and
    ``n_categories``, each category gets its own table, adapted on its own samples (a category
    absent from them takes the table of all): a raw N(0, 1) number then maps to every
    category's own distribution, so the generator learns only what the categories' CDFs do not
    already give (the LUXE generator with one table drew the outer electrons' momenta at a
    median of 8.7 MeV against 3.2, the region's mixture of species right and each species
    wrong; docs/luxe_split_wgan.md)."""

    def __init__(self, n_features=1, n_quantiles=1000, epsilon=1e-4, category_index=None,
                 n_categories=1, **kwargs):
        super().__init__(**kwargs)
        self.n_features = int(n_features)
        self.n_quantiles = int(n_quantiles)
        self.epsilon = float(epsilon)
        self.category_index = None if category_index is None else int(category_index)
        self.n_categories = 1 if category_index is None else int(n_categories)
        if self.n_categories < 1:
            raise ValueError(f"QuantileHead: n_categories = {n_categories}, expected >= 1")
        self.quantiles = QuantileTransform(self.n_features, self.n_quantiles, self.epsilon,
                                           name="quantiles", dtype=self.dtype_policy)
        self.category_quantiles = [
            QuantileTransform(self.n_features, self.n_quantiles, self.epsilon,
                              name=f"quantiles_{k}", dtype=self.dtype_policy)
            for k in range(self.n_categories if self.category_index is not None else 0)]

    @property
    def input_units(self) -> int:
        """Width of the generator output this head expects."""
        return self.n_features

    def adapt(self, samples, conditions=None):
        """The tables from physical ``samples`` (and, per category, from the rows of each
        category in ``conditions``, needed then)."""
        samples = np.asarray(samples, np.float64).reshape(len(samples), self.n_features)
        self.quantiles.adapt(samples)
        if self.category_quantiles:
            if conditions is None:
                raise ValueError("QuantileHead with categories: adapt needs the conditions")
            category = np.rint(np.asarray(conditions, np.float64)[:, self.category_index])
            for k, table in enumerate(self.category_quantiles):
                rows = category == k
                table.adapt(samples[rows] if rows.any() else samples)
        return self

    def free_samples(self, samples, conditions):
        """``samples`` (float64, ``[N, n]``) with NaN wherever :meth:`constrain` imposes the
        value; none here."""
        return np.array(samples, np.float64).reshape(len(samples), self.n_features)

    def build(self, input_shape):
        # the quantile tables are created in __init__; nothing depends on the input shape
        for table in (self.quantiles, *self.category_quantiles):
            if not table.built:
                table.build(None)
        self.built = True

    def constrain(self, samples, conditions):
        """Physical samples -> physical samples that respect the detector; identity here."""
        return samples

    def invert(self, raw, conditions):
        """Gaussian units -> physical units by the (category's) inverse CDF."""
        if not self.category_quantiles:
            return self.quantiles(raw, inverse=True)
        category = ops.round(conditions[:, self.category_index])[:, None]
        samples = self.category_quantiles[0](raw, inverse=True)
        for k, table in enumerate(self.category_quantiles[1:], start=1):
            samples = ops.where(category == k, table(raw, inverse=True), samples)
        return samples

    def call(self, inputs):
        raw, conditions = inputs
        raw, conditions = ops.cast(raw, "float32"), ops.cast(conditions, "float32")
        return self.constrain(self.invert(raw, conditions), conditions)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], self.n_features)

    def get_config(self):
        config = {**super().get_config(), "n_features": self.n_features,
                  "n_quantiles": self.n_quantiles, "epsilon": self.epsilon}
        if self.category_index is not None:
            config.update(category_index=self.category_index, n_categories=self.n_categories)
        return config


def _checked_ties(ties, n_features, owner):
    ties = [(int(t), int(s), int(c), float(v)) for t, s, c, v in ties]
    for target, source, _, _ in ties:
        if not (0 <= target < n_features and 0 <= source < n_features):
            raise ValueError(f"{owner}: tie {target} <- {source} outside the {n_features} "
                             "sample columns")
    return ties


def apply_threshold_ties(samples, conditions, ties, n_features):
    """``samples[:, target] = samples[:, source]`` wherever ``conditions[:, index] <= threshold``,
    for each ``(target, source, index, threshold)`` of ``ties``."""
    columns = [samples[:, j] for j in range(n_features)]
    for target, source, condition, threshold in ties:
        below = conditions[:, condition] <= threshold
        columns[target] = ops.where(below, samples[:, source], columns[target])
    return ops.stack(columns, axis=1)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ThresholdTies(keras.layers.Layer):
    """``[physical samples (N, n), physical conditions] -> samples`` with the columns of ``ties``
    copied below their thresholds: what :class:`ThresholdTieHead` imposes, for models whose
    physical samples come from elsewhere (the output constraint of an
    :class:`~ddsim_gan.models.chain.AutoregressiveChain`). ``ties`` as in
    :class:`ThresholdTieHead`."""

    def __init__(self, n_features=1, ties=(), **kwargs):
        super().__init__(**kwargs)
        self.n_features = int(n_features)
        self.ties = _checked_ties(ties, self.n_features, "ThresholdTies")

    def call(self, inputs):
        samples, conditions = inputs
        return apply_threshold_ties(ops.cast(samples, "float32"), ops.cast(conditions, "float32"),
                                    self.ties, self.n_features)

    def compute_output_shape(self, input_shapes):
        return tuple(input_shapes[0])

    def get_config(self):
        return {**super().get_config(), "n_features": self.n_features,
                "ties": [list(tie) for tie in self.ties]}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ThresholdTieHead(QuantileHead):
    """:class:`QuantileHead` whose columns copy another column below a threshold of a condition.

    ``ties`` lists ``(target, source, condition_index, threshold)``: wherever
    ``conditions[:, condition_index] <= threshold``, ``sample[:, target] = sample[:, source]``.
    For the LHCb RICH (seed 001): a hypothesis below its Cherenkov threshold in both radiators
    has exactly the likelihood of "below threshold", so RichDLLk == RichDLLbt for
    P <= m_K / sqrt(n^2 - 1) = 9.33 GeV/c and RichDLLp == RichDLLbt for P <= 17.7 GeV/c
    (C4F10, n = 1.0014, the radiator with the lower thresholds). The generator still emits every
    column; below the threshold the tied one is simply not used.
    """

    def __init__(self, n_features=1, ties=(), n_quantiles=1000, epsilon=1e-4, **kwargs):
        super().__init__(n_features, n_quantiles, epsilon, **kwargs)
        self.ties = _checked_ties(ties, self.n_features, "ThresholdTieHead")

    def constrain(self, samples, conditions):
        return apply_threshold_ties(samples, conditions, self.ties, self.n_features)

    def get_config(self):
        return {**super().get_config(), "ties": [list(tie) for tie in self.ties]}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RingTiesHead(QuantileHead):
    """:class:`QuantileHead` that imposes which hypotheses leave no Cherenkov ring.

    A hypothesis h expects no photons in radiator r when the track is below its threshold
    (P <= p_th(h, r)) or outside the radiator's acceptance (eta <= ``acceptance[r][0]`` or
    >= ``acceptance[r][1]``, where it is exactly zero). With no ring in every radiator its
    likelihood is that of "below threshold", so (seed 001's DLLs, all relative to the pion)

        no ring for h:     RichDLLh = RichDLLbt,
        no ring for pi:    RichDLLbt = log L_bt - log L_pi = 0,

    exactly, and both together put RichDLLh at 0. :class:`ThresholdTieHead`'s ties
    (P below the lower, C4F10 threshold) are the part of this that ignores the acceptance.
    ``hypotheses`` lists ``(column, [p_th per radiator])`` for the DLLs tied to the
    ``below_column``, ``pion_thresholds`` the pion's p_th per radiator.

    :meth:`adapt` fits each column's table on the rows where the column is free: a table that
    held the imposed zeros of RichDLLbt (P < 2.6 GeV/c, 6.6 % of the tracks) would let the
    generator draw that point mass above the threshold, too (the head before did: 10-12 %
    exact zeros in RichDLLk/p/bt against 6.6 %).
    """

    def __init__(self, n_features=1, hypotheses=(), below_column=4, pion_thresholds=(),
                 acceptance=(), momentum_index=0, eta_index=1, n_quantiles=1000,
                 epsilon=1e-4, **kwargs):
        super().__init__(n_features, n_quantiles, epsilon, **kwargs)
        self.acceptance = [[float(lo), float(hi)] for lo, hi in acceptance]
        self.hypotheses = [[int(column), [float(t) for t in thresholds]]
                           for column, thresholds in hypotheses]
        self.pion_thresholds = [float(t) for t in pion_thresholds]
        self.below_column = int(below_column)
        self.momentum_index, self.eta_index = int(momentum_index), int(eta_index)
        n_radiators = len(self.acceptance)
        columns = [c for c, _ in self.hypotheses] + [self.below_column]
        if not all(0 <= c < self.n_features for c in columns) or len(set(columns)) != len(
                columns):
            raise ValueError(f"RingTiesHead: columns {columns} must be distinct and within "
                             f"the {self.n_features} sample columns")
        if n_radiators == 0 or any(len(t) != n_radiators for _, t in self.hypotheses) or len(
                self.pion_thresholds) != n_radiators:
            raise ValueError(f"RingTiesHead: every hypothesis and the pion need one threshold "
                             f"per radiator ({n_radiators} acceptances given)")

    def no_ring(self, thresholds, conditions, xp=ops):
        """True where a hypothesis with these thresholds expects no photon in any radiator."""
        momentum = conditions[:, self.momentum_index]
        eta = conditions[:, self.eta_index]
        result = None
        for (low, high), threshold in zip(self.acceptance, thresholds):
            dark = xp.logical_or(momentum <= threshold,
                                 xp.logical_or(eta <= low, eta >= high))
            result = dark if result is None else xp.logical_and(result, dark)
        return result

    def constrain(self, samples, conditions):
        columns = [samples[:, j] for j in range(self.n_features)]
        below = ops.where(self.no_ring(self.pion_thresholds, conditions), 0.0,
                          columns[self.below_column])
        columns[self.below_column] = below
        for column, thresholds in self.hypotheses:
            columns[column] = ops.where(self.no_ring(thresholds, conditions), below,
                                        columns[column])
        return ops.stack(columns, axis=1)

    def adapt(self, samples, conditions=None):
        if conditions is None:
            raise ValueError("RingTiesHead.adapt needs the conditions (which rows are free)")
        return super().adapt(self.free_samples(samples, conditions), conditions)

    def free_samples(self, samples, conditions):
        """``samples`` (float64) with NaN wherever :meth:`constrain` imposes the value."""
        free = super().free_samples(samples, conditions)
        conditions = np.asarray(conditions, np.float64)
        free[self.no_ring(self.pion_thresholds, conditions, np), self.below_column] = np.nan
        for column, thresholds in self.hypotheses:
            free[self.no_ring(thresholds, conditions, np), column] = np.nan
        return free

    def get_config(self):
        return {**super().get_config(), "hypotheses": self.hypotheses,
                "below_column": self.below_column, "pion_thresholds": self.pion_thresholds,
                "acceptance": self.acceptance, "momentum_index": self.momentum_index,
                "eta_index": self.eta_index}
