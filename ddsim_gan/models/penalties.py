"""Penalties added to the critic or generator loss: one small object each.

Every penalty has a ``weight``, a ``side`` ("critic" or "generator") and is called with a
:class:`StepTensors` describing the current step; it returns the *unweighted* term (a float32
scalar), which the GAN logs under the penalty's ``name`` and adds as ``weight * term``. A penalty
knows nothing else about the GAN it is plugged into, so any model of the package can use it.

Penalties are computed in float32 even under a mixed-precision policy. Under a distribution
strategy each replica holds a slice of the global batch: batch-level statistics (the batch means
of the conservation penalties, the histograms of the NNLS penalty) are summed over the replicas
with :func:`global_batch_sum`, so every replica computes the penalty of the global batch, as one
device would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from .nnls import nnls

_PACKAGE = "ddsim_gan"


@dataclass
class StepTensors:
    """What a penalty may look at in one training step.

    ``real``/``fake`` are in the network's normalized units; ``to_physical`` maps them back to
    physical units (MeV...). ``critic(samples, encoded)`` evaluates the critic. ``loss_scale`` is
    the current dynamic loss scale under float16 training (1 otherwise).
    """

    conditions: tf.Tensor
    encoded: tf.Tensor
    real: tf.Tensor
    fake: tf.Tensor
    critic: Callable
    to_physical: Callable
    seed_generator: keras.random.SeedGenerator | None = None
    loss_scale: tf.Tensor | float = 1.0


class Penalty:
    """Base class: ``weight`` times :meth:`__call__` is added to the loss of ``side``."""

    side = "generator"
    name = "penalty"

    def __init__(self, weight: float = 1.0):
        self.weight = float(weight)

    def __call__(self, step: StepTensors) -> tf.Tensor:
        raise NotImplementedError

    def get_config(self):
        return {"weight": self.weight}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _per_event(tensor):
    return tf.reshape(tf.cast(tensor, tf.float32), [tf.shape(tensor)[0], -1])


def global_batch_sum(tensor):
    """``tensor`` (a sum over this replica's events) summed over all replicas in sync.

    The gradient of an all-reduce sum is an all-reduce sum of the gradients
    (``tf.distribute.ReplicaContext.all_reduce``), so with each replica's loss divided by the
    number of replicas and the replicas' gradients summed, the update is that of the penalty of
    the global batch. Outside a strategy (or with one replica) it is the identity.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tensor
    return context.all_reduce(tf.distribute.ReduceOp.SUM, tensor)


def categories(conditions, index):
    """``[n]`` int32: the categorical condition ``index`` of each event, rounded."""
    return tf.cast(tf.round(tf.cast(conditions[:, index], tf.float32)), tf.int32)


def _batch_mean(per_event):
    """Mean over the global batch of a per-event ``[n]`` quantity."""
    count = global_batch_sum(tf.cast(tf.shape(per_event)[0], per_event.dtype))
    return global_batch_sum(tf.reduce_sum(per_event)) / count


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GradientPenalty(Penalty):
    """WGAN-GP (I. Gulrajani et al., arXiv:1704.00028, eq. 3, Algorithm 1):

        GP = E[(sqrt(||grad_x D(x_hat)||^2 + epsilon) - 1)^2],
        x_hat = u x_real + (1 - u) x_fake,  u ~ U[0, 1] per event.

    ``epsilon`` keeps the square root differentiable at a zero gradient (the keras-io example
    has none and can produce NaN). Under float16 the inner gradient is taken of the critic output
    times the loss scale and divided back in float32, so small gradients do not underflow and the
    penalty cannot drive the dynamic loss scale down to 1 (tensorflow#48662).
    """

    side = "critic"
    name = "gradient_penalty"

    def __init__(self, weight: float = 10.0, epsilon: float = 1e-12):
        super().__init__(weight)
        self.epsilon = float(epsilon)

    def __call__(self, step):
        return tf.reduce_mean(tf.square(self.gradient_norms(step) - 1.0))

    def interpolation_weights(self, step, shape):
        """u ~ U[0, 1], one per event, from the model's seed generator."""
        return keras.random.uniform(shape, 0.0, 1.0, seed=step.seed_generator)

    def gradient_norms(self, step):
        """||grad_x D(x_hat)|| per event at random interpolates of real and fake."""
        batch = tf.shape(step.real)[0]
        shape = tf.concat([[batch], tf.ones([tf.rank(step.real) - 1], tf.int32)], axis=0)
        u = self.interpolation_weights(step, shape)
        real = tf.cast(step.real, tf.float32)
        fake = tf.cast(step.fake, tf.float32)
        interpolated = u * real + (1.0 - u) * fake
        scale = tf.cast(step.loss_scale, tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(interpolated)
            scores = tf.cast(step.critic(tf.cast(interpolated, step.real.dtype), step.encoded),
                             tf.float32)
            scaled = tf.reduce_sum(scores) * scale
        gradients = _per_event(tape.gradient(scaled, interpolated)) / scale
        return tf.sqrt(tf.reduce_sum(tf.square(gradients), axis=1) + self.epsilon)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LipschitzPenalty(GradientPenalty):
    """WGAN-LP, the one-sided gradient penalty (H. Petzka, A. Fischer, D. Lukovnikov,
    arXiv:1709.08894, eq. 8):

        LP = E[max(0, ||grad_x D(x_hat)|| - 1)^2],  x_hat as in :class:`GradientPenalty`.

    It only forbids slopes above 1. For a one-dimensional sample (one link of an auto-regressive
    chain) the two-sided penalty is a trap: grad_x D can only point up or down, and turning a
    critic that rises towards the generated samples into one that falls means passing through
    slope 0 on the whole segment between real and fake, which costs ``weight`` -- more than the
    critic gains when the samples are a few units apart. The generator then runs away to the
    edge of the range. Without the lower bound the critic can turn freely.
    """

    name = "lipschitz_penalty"

    def __call__(self, step):
        return tf.reduce_mean(tf.square(tf.nn.relu(self.gradient_norms(step) - 1.0)))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DriftPenalty(Penalty):
    """Keeps critic scores near zero (T. Karras et al., arXiv:1710.10196, sec. A.1):
    drift = E[D(x_real)^2]. Used with a small weight (0.001 in the paper)."""

    side = "critic"
    name = "drift_penalty"

    def __init__(self, weight: float = 1e-3):
        super().__init__(weight)

    def __call__(self, step):
        scores = tf.cast(step.critic(step.real, step.encoded), tf.float32)
        return tf.reduce_mean(tf.square(scores))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConservationPenalty(Penalty):
    """Conservation of an event-level quantity between real and generated batches (seed 003):

        P = ((mean_batch Q(x_fake) - mean_batch Q(x_real)) / mean_batch Q(x_real))^2

    with Q = sum_E (total energy, physical units) or nhits, the seed's hits: cells above
    ``hit_fraction`` f of the event's maximum. nhits is the exact count, with the gradient of
    the soft count sum_cells sigmoid((x - f max(x)) / (t max(x))), t = ``temperature``
    (straight-through). The soft count alone can be gamed: a generator that parks many cells
    just under the cut scores fractional hits the evaluation does not count (SiW, 2026-12-04:
    a soft count 6 % off in training was 42 % off counted exactly for pions).
    Real and generated events of a batch share their conditions, so batch means are comparable.

    ``estimator``: "square" is P above. Its expectation over batches is the squared difference
    of the means plus the variance of the generated batch mean, Var(Q) / n, so its gradient
    also narrows the generated distribution of Q: a spread-out or two-population quantity
    pays for its spread (SiW pions, tracks at 20 MIP and showers to 400: at weight 30 the
    narrowing term is worth about 0.7 of loss against a Wasserstein estimate of 1.5; removing
    it brought the means closer but did not split the pions' populations, 2026-12-05,
    docs/siw_ecal_wgangp.md). "halves" splits the generated events into
    two halves A and B (even and odd rows) and takes

        P = (mean_A Q(x_fake) - mean Q(x_real)) (mean_B Q(x_fake) - mean Q(x_real)) / S^2,

    whose expectation is the squared difference of the means with no variance of the
    generated means (A and B are independent), as in
    :class:`~ddsim_gan.models.binned_moments.BinnedMomentPenalty`. A single batch's value may
    be negative.
    """

    side = "generator"
    quantities = ("sum_E", "nhits")
    estimators = ("square", "halves")

    def __init__(self, quantity: str = "sum_E", weight: float = 1.0, hit_fraction: float = 0.05,
                 temperature: float = 0.01, estimator: str = "square"):
        if quantity not in self.quantities:
            raise ValueError(f"quantity must be one of {self.quantities}, got {quantity!r}")
        if estimator not in self.estimators:
            raise ValueError(f"estimator must be one of {self.estimators}, got {estimator!r}")
        super().__init__(weight)
        self.quantity = quantity
        self.hit_fraction = float(hit_fraction)
        self.temperature = float(temperature)
        self.estimator = estimator
        self.name = f"conservation_{quantity}"

    def quantity_per_event(self, physical):
        cells = _per_event(physical)
        if self.quantity == "sum_E":
            return tf.reduce_sum(cells, axis=1)
        peak = tf.reduce_max(cells, axis=1, keepdims=True) + 1e-12
        cut = self.hit_fraction * peak
        soft = tf.reduce_sum(tf.sigmoid((cells - cut) / (self.temperature * peak)), axis=1)
        hard = tf.reduce_sum(tf.cast(cells > cut, tf.float32), axis=1)
        return hard + soft - tf.stop_gradient(soft)

    def __call__(self, step):
        real = _batch_mean(self.quantity_per_event(step.to_physical(step.real)))
        fake = self.quantity_per_event(step.to_physical(step.fake))
        scale = tf.abs(real) + 1e-12
        if self.estimator == "square":
            return tf.square((_batch_mean(fake) - real) / scale)
        return ((_batch_mean(fake[0::2]) - real) * (_batch_mean(fake[1::2]) - real)
                / tf.square(scale))

    def get_config(self):
        return {**super().get_config(), "quantity": self.quantity,
                "hit_fraction": self.hit_fraction, "temperature": self.temperature,
                "estimator": self.estimator}


def soft_histogram(values, edges, bandwidth, weights=None):
    """Differentiable histogram: each value spreads over the bins as a Gaussian of width
    ``bandwidth``; bin m receives Phi((e_{m+1} - v) / h) - Phi((e_m - v) / h).

    ``weights`` ``[n, k]`` gives k histograms at once (``[m, k]`` result); default one.
    """
    values = tf.cast(values, tf.float64)[:, None]
    edges = tf.constant(np.asarray(edges, np.float64))[None, :]
    cdf = 0.5 * (1.0 + tf.math.erf((edges - values) / (bandwidth * np.sqrt(2.0))))
    per_bin = cdf[:, 1:] - cdf[:, :-1]
    if weights is None:
        return tf.reduce_sum(per_bin, axis=0)[:, None]
    return tf.matmul(per_bin, tf.cast(weights, tf.float64), transpose_a=True)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NNLSPenalty(Penalty):
    """NNLS spectrum penalty of the DarkSHINE NNLS + CGAN (seed 002, as read in DESIGN.md).

    Columns of A are the generator's response: the soft histogram of the generated observable
    (total energy) for the events of condition bin k, normalized to unit sum; b is the soft
    histogram of the real observable of the batch, normalized to unit sum. With

        X* = argmin_{X >= 0} ||A X - b||^2   (solved in-graph, :func:`~ddsim_gan.models.nnls.nnls`)

    the penalty is ||A X* - b||^2. X* is held constant (envelope theorem: the derivative of the
    minimum with respect to A is the partial derivative at the optimum), gradients flow through A:
    the generator is pushed towards responses from which the observed spectrum can be unfolded.
    """

    side = "generator"
    name = "nnls_penalty"

    def __init__(self, condition_edges, observable_edges, weight: float = 1.0,
                 bandwidth: float = 0.5, condition_index: int = 0):
        super().__init__(weight)
        self.condition_edges = [float(e) for e in condition_edges]
        self.observable_edges = [float(e) for e in observable_edges]
        self.bandwidth = float(bandwidth)
        self.condition_index = int(condition_index)
        widths = np.diff(self.observable_edges)
        self._kernel_width = self.bandwidth * float(np.mean(widths))

    def response_matrix(self, conditions, observable):
        """A ``[M, K]``: normalized soft histograms of ``observable`` per condition bin."""
        condition = tf.cast(conditions[:, self.condition_index], tf.float64)
        edges = tf.constant(self.condition_edges, tf.float64)
        k = len(self.condition_edges) - 1
        bins = tf.clip_by_value(tf.searchsorted(edges, condition, side="right") - 1, 0, k - 1)
        membership = tf.one_hot(bins, k, dtype=tf.float64)
        histograms = soft_histogram(observable, self.observable_edges, self._kernel_width,
                                    membership)
        histograms = global_batch_sum(histograms)
        return histograms / tf.maximum(tf.reduce_sum(histograms, axis=0, keepdims=True), 1e-12)

    def __call__(self, step):
        fake_total = tf.reduce_sum(_per_event(step.to_physical(step.fake)), axis=1)
        real_total = tf.reduce_sum(_per_event(step.to_physical(step.real)), axis=1)
        matrix = self.response_matrix(step.conditions, fake_total)
        target = global_batch_sum(
            soft_histogram(real_total, self.observable_edges, self._kernel_width)[:, 0])
        target = target / tf.maximum(tf.reduce_sum(target), 1e-12)
        weights, _ = nnls(tf.stop_gradient(matrix), tf.stop_gradient(target))
        residual = tf.linalg.matvec(matrix, weights) - target
        return tf.cast(tf.reduce_sum(tf.square(residual)), tf.float32)

    def get_config(self):
        return {**super().get_config(), "condition_edges": self.condition_edges,
                "observable_edges": self.observable_edges, "bandwidth": self.bandwidth,
                "condition_index": self.condition_index}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GroupedConservationPenalty(ConservationPenalty):
    """:class:`ConservationPenalty` per category of a categorical condition (e.g. e- and pi- in
    one batch, whose sum_E differ by a factor 8, so that matching the mixed batch mean alone
    leaves each species off):

        P = mean over categories g present in the batch of
            ((mean_{g} Q(x_fake) - mean_{g} Q(x_real)) / mean_{g} Q(x_real))^2

    with g = round(conditions[:, ``group_index``]) in [0, ``n_groups``) (``group_index``
    None, ``n_groups`` 1: the whole batch, for a detector without categories). Real and generated
    events share their conditions, so each category's means are comparable (seed 003's penalty,
    taken category by category). ``estimator`` "halves" takes, per category, the product of the
    two generated halves' differences instead of the square (:class:`ConservationPenalty`);
    a category enters when both halves have events of it.

    The denominator: with ``reference_means`` (per category and column, the training set's
    means, :meth:`fit_reference`) it is that fixed number S_g, and the gradient
    2 (mean_g Q_fake - mean_g Q_real) / S_g^2 averages to zero where the generated mean equals
    the reference mean. With the real batch's own mean as denominator it does not: the gradient
    weighs batches with a low real mean by 1 / mean^2, and the minimum falls at
    E[1/r] / E[1/r^2] < E[r], below the true mean by about twice the squared relative
    spread of a batch mean. For SiW pions at 64 per batch that is 5 % low in sum_E and 10-23 %
    low in the layer energies (batch-to-batch spread 16-34 %), the 12 % the shipped model had.

    ``energy_split`` (one sum_E boundary per category, physical units; ``None`` for a category
    not split) splits each category g into two populations, events below and at or above the
    boundary, each with its own term: group 2 g + [sum_E >= split_g], assigned to real and
    generated events by their own sum_E (no gradient flows through the assignment). Matching
    the means within each population is a statement about conditional means that the
    category's mean cannot make: SiW pions are tracks (sum_E 16-28 MIP) and showers, and a
    generator whose tracks miss layers while its showers hit them too often has the right
    per-layer occupancy over all pions (2026-12-06, docs/siw_ecal_wgangp.md).
    """

    def __init__(self, quantity: str = "sum_E", weight: float = 1.0, group_index: int = 0,
                 n_groups: int = 2, hit_fraction: float = 0.05, temperature: float = 0.01,
                 reference_means=None, estimator: str = "square", energy_split=None):
        super().__init__(quantity, weight, hit_fraction, temperature, estimator)
        self.floor = 1e-12                  # of the denominator
        self.group_index = None if group_index is None else int(group_index)
        if self.group_index is None and int(n_groups) != 1:
            raise ValueError(f"{self.name}: without a group_index every event is one group; "
                             f"n_groups must be 1, got {n_groups}")
        self.n_groups = int(n_groups)
        self.energy_split = None
        if energy_split is not None:
            if len(energy_split) != self.n_groups:
                raise ValueError(f"{self.name}: energy_split needs one boundary (or None) per "
                                 f"category ({self.n_groups}), got {list(energy_split)}")
            self.energy_split = [None if b is None else float(b) for b in energy_split]
        self.reference_means = None
        if reference_means is not None:
            means = np.asarray(reference_means, np.float64)
            if means.ndim != 2 or means.shape[0] != self.n_rows or not np.all(
                    np.isfinite(means)):
                raise ValueError(f"{self.name}: reference_means must be finite, one row per "
                                 f"group ({self.n_rows}), got shape {means.shape}")
            self.reference_means = means.tolist()

    @property
    def n_rows(self):
        """Groups with a term: the categories, or twice as many with ``energy_split``."""
        return self.n_groups if self.energy_split is None else 2 * self.n_groups

    def groups(self, conditions, physical=None):
        """``[n]`` int32 group of each event: its category, or with ``energy_split``
        2 category + [sum_E of ``physical`` >= the category's boundary]."""
        category = (tf.zeros_like(conditions[:, 0], tf.int32) if self.group_index is None
                    else categories(conditions, self.group_index))
        if self.energy_split is None:
            return category
        boundary = tf.gather(tf.constant(
            [np.inf if b is None else b for b in self.energy_split], tf.float32), category)
        energy = tf.reduce_sum(_per_event(physical), axis=1)
        return 2 * category + tf.cast(tf.stop_gradient(energy) >= boundary, tf.int32)

    def fit_reference(self, samples, conditions, batch_size: int = 2048):
        """Set ``reference_means`` to each category's mean of Q over the physical training
        ``samples`` and their ``conditions`` (the batches are drawn from them, so a category
        absent here, whose mean is 0, never enters the penalty). Returns ``self``."""
        sums = np.zeros((self.n_rows, 0))
        counts = np.zeros(self.n_rows)
        for start in range(0, len(samples), batch_size):
            physical = tf.constant(np.asarray(samples[start:start + batch_size], np.float32))
            q = self.quantity_per_event(physical).numpy()
            q = q.reshape(len(q), -1).astype(np.float64)
            group = self.groups(tf.constant(
                np.asarray(conditions[start:start + batch_size], np.float32)), physical).numpy()
            if sums.shape[1] == 0:
                sums = np.zeros((self.n_rows, q.shape[1]))
            for g in range(self.n_rows):
                sums[g] += q[group == g].sum(axis=0)
                counts[g] += np.sum(group == g)
        self.reference_means = (sums / np.maximum(counts, 1.0)[:, None]).tolist()
        return self

    def __call__(self, step):
        def per_event(samples):                            # [n, columns of Q], [n, G]
            physical = step.to_physical(samples)
            q = self.quantity_per_event(physical)
            members = tf.one_hot(self.groups(step.conditions, physical), self.n_rows,
                                 dtype=tf.float32)
            return tf.reshape(q, [tf.shape(q)[0], -1]), members

        def means(q, rows):                                # [G, columns], [G]
            counts = global_batch_sum(tf.reduce_sum(rows, axis=0))
            sums = global_batch_sum(tf.matmul(rows, q, transpose_a=True))
            return sums / tf.maximum(counts, 1.0)[:, None], counts

        real, counts = means(*per_event(step.real))
        scale = tf.abs(real) if self.reference_means is None else tf.abs(
            tf.constant(self.reference_means, tf.float32))
        scale = tf.stop_gradient(tf.maximum(scale, self.floor))
        fake, members = per_event(step.fake)
        if self.estimator == "square":
            generated, fake_counts = means(fake, members)
            present = tf.cast((counts > 0) & (fake_counts > 0), tf.float32)
            relative = tf.square((generated - real) / scale)
        else:                                              # the class docstring's halves
            (first, count_a), (second, count_b) = (means(fake[0::2], members[0::2]),
                                                   means(fake[1::2], members[1::2]))
            present = tf.cast((counts > 0) & (count_a > 0) & (count_b > 0), tf.float32)
            relative = (first - real) * (second - real) / tf.square(scale)
        relative = relative * present[:, None]
        columns = tf.cast(tf.shape(relative)[1], tf.float32)
        return tf.reduce_sum(relative) / tf.maximum(tf.reduce_sum(present) * columns, 1.0)

    def get_config(self):
        return {**super().get_config(), "group_index": self.group_index,
                "n_groups": self.n_groups, "reference_means": self.reference_means,
                "energy_split": self.energy_split}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GroupedLayerPenalty(GroupedConservationPenalty):
    """:class:`GroupedConservationPenalty` of a per-layer quantity Q_l, every layer l a term:

        P = mean over categories g present and layers l of
            ((mean_{g} Q_l(x_fake) - mean_{g} Q_l(x_real)) / mean_{g} Q_l(x_real))^2

    ``quantity`` "layer_occupancy": Q_l = 1 if layer l has a seed hit (a cell above
    ``hit_fraction`` of the event's maximum, seed 003), else 0; the batch mean is the layer's
    occupancy, the number seed 003's 2D WGAN got wrong ("layer 1 never hit"). Its value is the
    exact indicator, its gradient that of sigmoid((max_l x - f max x) / (t max x)), t =
    ``temperature`` (straight-through: a wide t reaches layers far from the cut).
    "layer_energy": Q_l = the energy of layer l (the longitudinal profile's mean; the layers'
    sum is sum_E). The relative form is the bar's (issue 4: every layer's occupancy within 5 %).
    """

    quantities = ("layer_occupancy", "layer_energy")

    def __init__(self, quantity: str = "layer_occupancy", weight: float = 1.0,
                 group_index: int = 0, n_groups: int = 2, layer_axis: int = 0,
                 hit_fraction: float = 0.05, temperature: float = 0.05,
                 reference_means=None, estimator: str = "square", energy_split=None):
        super().__init__(quantity, weight, group_index, n_groups, hit_fraction, temperature,
                         reference_means, estimator, energy_split)
        # a layer no reference event of the batch hits would divide by zero: 2 % is the floor
        self.floor = 0.02 if quantity == "layer_occupancy" else 1e-12
        self.layer_axis = int(layer_axis)
        self.name = f"grouped_{quantity}"

    def quantity_per_event(self, physical):
        cells = tf.cast(physical, tf.float32)
        rank = len(cells.shape)
        layer = self.layer_axis + 1
        order = [0, layer] + [a for a in range(1, rank) if a != layer]
        per_layer = tf.reshape(tf.transpose(cells, order),
                               [tf.shape(cells)[0], cells.shape[layer], -1])     # [n, L, cells]
        if self.quantity == "layer_energy":
            return tf.reduce_sum(per_layer, axis=2)
        peak = tf.reduce_max(per_layer, axis=[1, 2])[:, None] + 1e-12
        layer_peak = tf.reduce_max(per_layer, axis=2)
        soft = tf.sigmoid((layer_peak - self.hit_fraction * peak) / (self.temperature * peak))
        hard = tf.cast(layer_peak > self.hit_fraction * peak, tf.float32)
        return hard + soft - tf.stop_gradient(soft)

    def get_config(self):
        return {**super().get_config(), "layer_axis": self.layer_axis}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ShowerMomentPenalty(Penalty):
    """Feature matching on the shower observables a physicist compares (Salimans et al.,
    arXiv:1606.03498, sec. 3.1, with the observables in place of critic features): for every
    observable q of the batch (energy centre and width along each transverse axis, in cells,
    the energy of every layer and, given ``hit_threshold``, the number of hits)

        P = mean_q [ ((mean q_fake - mean q_real)^2 + (std q_fake - std q_real)^2) / var q_real ]

    in the units of the real batch's spread, so each term is a squared shift of the kind W1/sigma
    measures. Real and generated events of a batch share their conditions. The CaloGAN critic
    *sees* these observables, but a critic bounded in slope pushes their means only weakly; a
    direct term closes a mean offset of a fraction of a cell that the adversarial loss leaves.

    The hit count is the exact count of cells above zero (the readout has zeroed those below
    ``hit_threshold``) with the gradient of the soft count sum sigmoid((E - t/2) / (t/4))
    (straight-through); a cell held at zero by a hard threshold passes no gradient, so the term
    needs a generator whose readout lets some through (the components' ``threshold_band``).

    ``centre_weight`` c adds c * sum_axes (mean centre_fake - mean centre_real)^2 in cells^2:
    a mean shift of a tenth of a cell, the DarkSHINE bar, is a few hundredths of the centre's
    spread, which the normalized term above barely weighs. ``correlation_weight`` r adds
    r * mean_{i<j} (rho_fake_ij - rho_real_ij)^2 over the observables' correlation matrix: the
    marginals alone leave the joint distribution, which a classifier two-sample test sees, free.
    """

    side = "generator"
    name = "shower_moments"

    def __init__(self, sample_shape, transverse_axes, layer_axis=None, weight: float = 1.0,
                 hit_threshold=None, centre_weight: float = 0.0,
                 correlation_weight: float = 0.0):
        super().__init__(weight)
        self.correlation_weight = float(correlation_weight)
        self.centre_weight = float(centre_weight)
        self.sample_shape = [int(n) for n in sample_shape]
        self.transverse_axes = [int(a) for a in transverse_axes]
        self.layer_axis = None if layer_axis is None else int(layer_axis)
        self.hit_threshold = None if not hit_threshold else float(hit_threshold)

    @classmethod
    def for_detector(cls, detector, weight: float = 1.0, hits: bool = False,
                     centre_weight: float = 0.0, correlation_weight: float = 0.0, **options):
        """``hits``: also match the hit count above ``detector.threshold``; ``options`` go to
        the constructor (a subclass's own)."""
        from ..evaluation.observables import layer_axis, spatial_axes

        threshold = detector.threshold if hits else None
        if hits and not threshold > 0:
            raise ValueError(f"{detector.name}: the hit-count term needs a readout threshold "
                             f"> 0, got {threshold}")
        return cls(detector.sample_shape, spatial_axes(detector), layer_axis(detector), weight,
                   hit_threshold=threshold, centre_weight=centre_weight,
                   correlation_weight=correlation_weight, **options)

    def hit_count(self, cells):
        """``[n]``: the number of cells above zero, with the soft count's gradient."""
        flat = tf.reshape(cells, [tf.shape(cells)[0], -1])
        t = self.hit_threshold
        soft = tf.reduce_sum(tf.sigmoid((flat - 0.5 * t) / (0.25 * t)), axis=1)
        hard = tf.reduce_sum(tf.cast(flat > 0.0, tf.float32), axis=1)
        return hard + soft - tf.stop_gradient(soft)

    def observables(self, physical, conditions=None):
        """``[n, q]``: centre and width (cells) per transverse axis, the layer energies, the hits
        (``conditions``, physical, for subclasses whose observables depend on them)."""
        cells = tf.nn.relu(tf.cast(physical, tf.float32))
        rank = len(self.sample_shape)
        total = tf.reduce_sum(cells, axis=list(range(1, rank + 1))) + 1e-6
        columns = []
        for axis in self.transverse_axes:
            n = self.sample_shape[axis]
            others = [1 + a for a in range(rank) if a != axis]
            profile = tf.reduce_sum(cells, axis=others)                          # [n_events, n]
            position = tf.constant(np.arange(n) - (n - 1) / 2.0, tf.float32)
            centre = tf.linalg.matvec(profile, position) / total
            second = tf.linalg.matvec(profile, position ** 2) / total
            columns += [centre, tf.sqrt(tf.nn.relu(second - centre ** 2) + 1e-6)]
        columns = tf.stack(columns, axis=1)
        if self.layer_axis is not None:
            others = [1 + a for a in range(rank) if a != self.layer_axis]
            columns = tf.concat([columns, tf.reduce_sum(cells, axis=others)], axis=1)
        if self.hit_threshold is not None:
            columns = tf.concat([columns, self.hit_count(cells)[:, None]], axis=1)
        return columns

    def __call__(self, step):
        real = self.observables(step.to_physical(step.real), step.conditions)
        fake = self.observables(step.to_physical(step.fake), step.conditions)

        def moments(q):
            count = global_batch_sum(tf.cast(tf.shape(q)[0], tf.float32))
            mean = global_batch_sum(tf.reduce_sum(q, axis=0)) / count
            covariance = (global_batch_sum(tf.matmul(q, q, transpose_a=True)) / count
                          - mean[:, None] * mean[None, :])
            std = tf.sqrt(tf.nn.relu(tf.linalg.diag_part(covariance)) + 1e-12)
            return mean, std, covariance / (std[:, None] * std[None, :] + 1e-12)

        (mean_real, std_real, corr_real), (mean_fake, std_fake, corr_fake) = (moments(real),
                                                                              moments(fake))
        variance = tf.stop_gradient(tf.square(std_real)) + 1e-6
        penalty = tf.reduce_mean((tf.square(mean_fake - mean_real)
                                  + tf.square(std_fake - std_real)) / variance)
        if self.correlation_weight:
            n = tf.shape(corr_real)[0]
            pairs = tf.linalg.band_part(tf.ones([n, n]), 0, -1) - tf.eye(n)   # i < j
            mismatch = tf.reduce_sum(pairs * tf.square(corr_fake - corr_real))
            penalty += self.correlation_weight * mismatch / tf.reduce_sum(pairs)
        if self.centre_weight:
            centres = [2 * k for k in range(len(self.transverse_axes))]
            shift = tf.gather(mean_fake - mean_real, centres)
            penalty += self.centre_weight * tf.reduce_sum(tf.square(shift))
        return penalty

    def get_config(self):
        return {**super().get_config(), "sample_shape": self.sample_shape,
                "transverse_axes": self.transverse_axes, "layer_axis": self.layer_axis,
                "hit_threshold": self.hit_threshold, "centre_weight": self.centre_weight,
                "correlation_weight": self.correlation_weight}
