"""Inverse-CDF tables that follow the continuous conditions: a grid of tables, interpolated.

:class:`~ddsim_gan.models.heads.QuantileHead` maps the generator's Gaussian units through one
inverse CDF per category (species): a raw N(0, 1) number is that species' DLL distribution over
all momenta, and the generator has to learn how the distribution changes with P, eta and the
occupancy: below a Cherenkov threshold it is a spike, above it a broad peak. Here each category
has tables at the nodes of a grid in chosen condition columns (log P, eta, nSPDHits), and the
inverse CDF at a track's conditions is the multilinear interpolation of its corner nodes'
quantile functions,

    F^-1(u | c) = sum over corners v of  w_v(c) F_v^-1(u),   w_v = prod_d (1 - |p_d(c) - v_d|),

p_d the track's position on axis d in node units. Averaging quantile functions (not CDFs) is
the displacement interpolation of the corner distributions (the Wasserstein-2 barycentre in
one dimension; e.g. Read, NIM A 425 (1999) 357, "Linear interpolation of histograms"): a peak
that moves with P moves, rather than fading out at one node and in at the next. Each node's
table is the weighted quantile function of the training samples around it, with tent weights
prod_d max(0, 1 - |p_d - v_d| / h) over h = ``kernel_width`` node spacings: h = 1 lets every
sample count towards the 2^d nodes around it, but widens each node's distribution by how much
it changes over two spacings; a narrower h trades that widening for noise (the LHCb RICH
recipe uses 0.6; docs/lhcb_rich_gan.md). The generator then only learns what the
interpolated tables do not already give: the output it should give is close to N(0, 1) at
every condition, the conditional shape carried by data rather than by weights.

A node whose tent weights add up to less than ``min_weight`` (a corner of the grid no track
reaches, e.g. low P at high eta) takes the table of the nearest node that has enough.

Interpolated tables are biased where the distribution changes fast with the conditions: a node's
table is the quantile function of the mixture over its footprint, wider than the distribution at
the node. ``refinements`` stages correct that with the same grid, iterating the Gaussianization:
stage s + 1 is fitted on the probability integral transform of the training samples through
stages 0..s, in Gaussian units, z = Phi^-1(F_s(... | c)); where stage s is right, those are
N(0, 1) at every condition and the next stage is the identity, where it is too wide they are
narrower than N(0, 1) and the next stage narrows it. A sample is then

    x = F_0^-1( F_1^-1( ... F_S^-1(raw | c) ... | c) | c),

each F_s^-1 the interpolated tables of stage s (an iterative Gaussianization in the sense of
Chen & Gopinath, "Gaussianization", NIPS 2000, with the conditions as the tables' index). A point
mass (a flat run of a table) gets a uniformly random PIT within its run, so the later stages
see continuous values. LHCb RICH, i.i.d. N(0, 1) input, the full preset's 1 M training tracks:
259 failed efficiency ratios with one stage, 80 with two, 55 with three (docs/lhcb_rich_gan.md).
"""

from __future__ import annotations

import itertools

import keras
import numpy as np
from keras import ops
from scipy.special import ndtri as _ndtri

from .heads import QuantileHead, RingTiesHead, ThresholdTieHead

_PACKAGE = "ddsim_gan"


def weighted_quantiles(values, weights, levels):
    """Quantiles of ``values`` with ``weights`` at ``levels`` in [0, 1]: the piecewise-linear
    inverse of the midpoint CDF (Hazen's plotting position, what ``np.quantile`` uses up to the
    end points); ties stay ties, so a point mass is a flat run of the table."""
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    cumulative = np.cumsum(weights)
    positions = (cumulative - 0.5 * weights) / cumulative[-1]
    return np.interp(levels, positions, values)


def _node_quantiles(values, node, row, weight, levels, min_weight):
    """``(node, its weighted_quantiles table)`` for every node whose pairs weigh at least
    ``min_weight``: one sort of all (node, value, row) pairs instead of one per node; the row
    as the last key keeps ties in row order, as ``weighted_quantiles``' stable sort does."""
    order = np.lexsort((row, values, node))
    values, node, weight = values[order], node[order], weight[order]
    starts = np.flatnonzero(np.r_[True, node[1:] != node[:-1]])
    ends = np.r_[starts[1:], len(node)]
    cumulative = np.cumsum(weight)
    for start, end in zip(starts, ends):
        before = cumulative[start - 1] if start else 0.0
        segment = cumulative[start:end] - before
        if segment[-1] < min_weight:
            continue
        positions = (segment - 0.5 * weight[start:end]) / segment[-1]
        yield node[start], np.interp(levels, positions, values[start:end])


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GridQuantileHead(QuantileHead):
    """:class:`QuantileHead` with tables at the nodes of a grid in condition columns (per
    category), interpolated multilinearly in the conditions (module docstring).

    Args:
        grid: per axis ``(column, nodes, log)``: the condition column and its increasing node
            values, interpolated in log of the column where ``log`` (place nodes where the
            distribution has a kink, e.g. at Cherenkov thresholds); conditions beyond the end
            nodes take their tables.
        n_levels: quantile levels per node table (equally spaced in [0, 1]); a node holds some
            hundreds to thousands of samples, not the millions of the category table.
        min_weight: a node with less total weight than this takes the nearest filled node's
            table (its category's, where no node has enough).
        kernel_width: the half-width h of the tent weights, in node spacings, in (0, 1]: one
            value, or one per grid axis (narrow where the distribution bends between nodes,
            wide where it changes slowly and the tracks are better spent on less noise).
        refinements: extra stages of tables in Gaussian units, each fitted on the probability
            integral transform through the stages before it (module docstring); 0 = one stage.
        n_features, n_quantiles, epsilon, category_index, n_categories: as
            :class:`QuantileHead` (its tables are the fallback).
    """

    def __init__(self, n_features=1, n_quantiles=1000, epsilon=1e-4, grid=(), n_levels=101,
                 min_weight=200.0, kernel_width=1.0, refinements=0, **kwargs):
        super().__init__(n_features, n_quantiles, epsilon, **kwargs)
        self.grid = [[int(col), [float(v) for v in nodes], bool(log)]
                     for col, nodes, log in grid]
        if not self.grid:
            raise ValueError("GridQuantileHead: give at least one grid axis")
        for col, nodes, log in self.grid:
            if not nodes or np.any(np.diff(nodes) <= 0) or (log and nodes[0] <= 0):
                raise ValueError(f"GridQuantileHead: axis of column {col}: the nodes must "
                                 f"increase (and be > 0 on a log axis), got {nodes}")
        self.n_levels = int(n_levels)
        if self.n_levels < 2:
            raise ValueError(f"GridQuantileHead: n_levels = {n_levels}, expected >= 2")
        self.min_weight = float(min_weight)
        widths = np.ravel(np.asarray(kernel_width, np.float64))
        if widths.size not in (1, len(self.grid)) or not np.all((widths > 0) & (widths <= 1)):
            raise ValueError(f"GridQuantileHead: kernel_width = {kernel_width}, expected one "
                             f"value or one per grid axis ({len(self.grid)}), each in (0, 1] "
                             "node spacings")
        self.kernel_width = float(widths[0]) if widths.size == 1 else widths.tolist()
        self.refinements = int(refinements)
        if self.refinements < 0:
            raise ValueError(f"GridQuantileHead: refinements = {refinements}, expected >= 0")
        self.axis_sizes = [len(nodes) for _, nodes, _ in self.grid]
        self.strides = [int(np.prod(self.axis_sizes[d + 1:])) for d in range(len(self.grid))]
        self.n_nodes = int(np.prod(self.axis_sizes))
        n_tables = self.n_categories * self.n_nodes * (1 + self.refinements)
        self.stage_size = self.n_categories * self.n_nodes * self.n_levels * self.n_features
        self.grid_tables = self.add_weight(
            shape=(n_tables * self.n_levels * self.n_features,), trainable=False,
            name="grid_tables", initializer=keras.initializers.Constant(np.tile(
                np.repeat(np.linspace(-1.0, 1.0, self.n_levels), self.n_features), n_tables)))
        self.fallback_nodes = 0

    # ---- positions on the grid -----------------------------------------------------------
    def _positions(self, conditions, xp):
        """Per axis: the position in node units, clipped to the grid, ``[n]`` each."""
        positions = []
        for col, nodes, log in self.grid:
            value = conditions[:, col]
            if log:
                value, nodes = xp.log(xp.maximum(value, nodes[0] * 1e-6)), np.log(nodes)
            nodes = np.asarray(nodes, np.float64)
            if len(nodes) == 1:
                positions.append(value * 0.0)
            elif xp is np:
                positions.append(np.interp(value, nodes, np.arange(len(nodes), dtype=float)))
            else:
                knots = ops.convert_to_tensor(nodes.astype("float32"))
                lower = ops.clip(ops.searchsorted(knots, value, side="right") - 1, 0,
                                 len(nodes) - 2)
                low, high = ops.take(knots, lower), ops.take(knots, lower + 1)
                positions.append(ops.cast(lower, value.dtype)
                                 + ops.clip((value - low) / (high - low), 0.0, 1.0))
        return positions

    def _category(self, conditions, xp):
        if self.category_index is None:
            return xp.zeros_like(conditions[:, 0])
        return xp.clip(xp.round(conditions[:, self.category_index]), 0, self.n_categories - 1)

    # ---- fitting -------------------------------------------------------------------------
    def adapt(self, samples, conditions=None):
        """The category tables (:class:`QuantileHead`) and a table per node and category from
        the tent-weighted samples, then each refinement stage's on the probability integral
        transform through the stages before it; NaN entries are left out of their column."""
        if conditions is None:
            raise ValueError("GridQuantileHead.adapt needs the conditions (the grid positions)")
        super().adapt(samples, conditions)
        values = np.asarray(samples, np.float64).reshape(len(samples), self.n_features)
        conditions = np.asarray(conditions, np.float64)
        positions = np.stack(self._positions(conditions, np), axis=1)
        category = self._category(conditions, np).astype(int)
        self.fallback_nodes = 0
        stages = [self._fit_stage(values, positions, category, category_tables=True)]
        fallback_nodes = self.fallback_nodes
        rng = np.random.default_rng(0)     # the PIT's draws within point masses
        for _ in range(self.refinements):
            self._assign_stages(stages)
            uniform = self.probability_transform(values, conditions, rng, n_stages=len(stages))
            gaussian = _ndtri(np.clip(uniform, self.epsilon, 1.0 - self.epsilon))
            stages.append(self._fit_stage(gaussian, positions, category, category_tables=False))
        self.fallback_nodes = fallback_nodes
        self._assign_stages(stages)
        return self

    def _assign_stages(self, stages):
        """The stages fitted so far; the rest the identity (raw N(0, 1) levels)."""
        identity = np.broadcast_to(_ndtri(np.clip(np.linspace(0.0, 1.0, self.n_levels),
                                                  self.epsilon, 1.0 - self.epsilon))[:, None],
                                   stages[0].shape)
        stages = list(stages) + [identity] * (1 + self.refinements - len(stages))
        self.grid_tables.assign(np.stack(stages).reshape(-1).astype("float32"))

    def probability_transform(self, samples, conditions, rng=None, n_stages=None,
                              chunk=50_000):
        """NumPy in and out: the PIT u = F(x | c) of ``samples`` through the first ``n_stages``
        stages (all by default); each stage after the first sees Phi^-1 of the one before
        (:meth:`cdf`); NaN stays NaN. Within a point mass u is drawn uniformly from ``rng``
        (its middle without one)."""
        samples = np.asarray(samples, np.float64).reshape(len(samples), self.n_features)
        conditions = np.asarray(conditions, np.float32)
        result = np.full(samples.shape, np.nan)
        for start in range(0, len(samples), chunk):
            rows = slice(start, start + chunk)
            draws = (None if rng is None else
                     ops.convert_to_tensor(rng.uniform(size=samples[rows].shape), "float32"))
            result[rows] = np.asarray(self.cdf(
                ops.convert_to_tensor(np.nan_to_num(samples[rows]), "float32"),
                ops.convert_to_tensor(conditions[rows]), draws, n_stages))
        result[np.isnan(samples)] = np.nan
        return result

    def _fit_stage(self, values, positions, category, category_tables):
        """Tables ``[categories, nodes, levels, features]`` of ``values`` at every node."""
        levels = np.linspace(0.0, 1.0, self.n_levels)
        tables = np.empty((self.n_categories, self.n_nodes, self.n_levels, self.n_features))
        nodes = np.array(list(itertools.product(*map(range, self.axis_sizes))), np.float64)
        for k in range(self.n_categories):
            rows = category == k
            row, node, weight = self._tent_pairs(positions[rows])
            pair_values = values[rows][row]
            filled = np.zeros((self.n_nodes, self.n_features), bool)
            for f in range(self.n_features):
                usable = ~np.isnan(pair_values[:, f])
                for index, table in _node_quantiles(pair_values[usable, f], node[usable],
                                                     row[usable], weight[usable], levels,
                                                     self.min_weight):
                    filled[index, f] = True
                    tables[k, index, :, f] = table
            fallback = (self._category_table(k, levels) if category_tables else
                        np.repeat(_ndtri(np.clip(levels, self.epsilon, 1 - self.epsilon))[:, None],
                                  self.n_features, axis=1))
            self._fill_empty_nodes(tables[k], filled, nodes, fallback)
        return tables

    def _tent_pairs(self, where):
        """Every (row, node) with a positive tent weight, and that weight. With half-widths of
        at most one node spacing only the 2^axes corners of a row's grid cell can have one, so
        the fit costs rows x corners, not rows x nodes."""
        widths = np.broadcast_to(np.asarray(self.kernel_width, np.float64), (len(self.grid),))
        lower = [np.clip(np.floor(where[:, d]), 0, max(size - 2, 0)).astype(np.int64)
                 for d, size in enumerate(self.axis_sizes)]
        rows, nodes, weights = [], [], []
        for corner in itertools.product(*[(0, 1) if size > 1 else (0,)
                                          for size in self.axis_sizes]):
            node = np.zeros(len(where), np.int64)
            weight = np.ones(len(where))
            for d, step in enumerate(corner):
                index = lower[d] + step
                node += index * self.strides[d]
                weight *= np.maximum(0.0, 1.0 - np.abs(where[:, d] - index) / widths[d])
            near = np.flatnonzero(weight > 0)
            rows.append(near)
            nodes.append(node[near])
            weights.append(weight[near])
        return np.concatenate(rows), np.concatenate(nodes), np.concatenate(weights)

    def _fill_empty_nodes(self, tables, filled, nodes, category_table):
        """A node without enough samples takes the table of the nearest filled node (in node
        units): interpolating towards the category's table at the edge of the populated region
        would mix all momenta into its tracks; with no filled node at all, the category's."""
        for f in range(self.n_features):
            empty = np.flatnonzero(~filled[:, f])
            self.fallback_nodes += len(empty)
            if not filled[:, f].any():
                tables[:, :, f] = category_table[:, f]
                continue
            donors = np.flatnonzero(filled[:, f])
            for node in empty:
                distance = np.sum((nodes[donors] - nodes[node]) ** 2, axis=1)
                tables[node, :, f] = tables[donors[np.argmin(distance)], :, f]

    def _category_table(self, k, levels):
        table = (self.category_quantiles[k] if self.category_quantiles else self.quantiles)
        q = np.asarray(table.quantiles.numpy(), np.float64)
        grid = np.linspace(0.0, 1.0, len(q))
        return np.stack([np.interp(levels, grid, q[:, f]) for f in range(self.n_features)], 1)

    # ---- the map -------------------------------------------------------------------------
    def _corners(self, conditions):
        """Per corner of each row's grid cell: (index of its table's first level, weight)."""
        positions = self._positions(conditions, ops)
        lower = [ops.cast(ops.clip(ops.floor(p), 0, max(n - 2, 0)), "int32")
                 for p, n in zip(positions, self.axis_sizes)]
        offsets = [p - ops.cast(j, p.dtype) for p, j in zip(positions, lower)]
        base = ops.cast(self._category(conditions, ops), "int32") * self.n_nodes
        corners = []
        for corner in itertools.product((0, 1), repeat=len(self.grid)):
            node, weight = base, 1.0
            for d, step in enumerate(corner):
                node = node + ops.minimum(lower[d] + step, self.axis_sizes[d] - 1) * self.strides[d]
                weight = weight * (offsets[d] if step else 1.0 - offsets[d])
            corners.append((node[:, None] * self.n_levels, weight[:, None]))
        return corners

    def invert(self, raw, conditions):
        """Gaussian units -> physical units through the stages, the last refinement first."""
        corners = self._corners(conditions)
        result = raw
        for stage in range(self.refinements, -1, -1):
            result = self._invert_stage(result, corners, stage * self.stage_size)
        return result

    def _invert_stage(self, raw, corners, offset):
        last = self.n_levels - 1
        level = ops.clip(0.5 * (1.0 + ops.erf(raw / np.sqrt(2.0))), 0.0, 1.0) * last
        low_level = ops.clip(ops.floor(level), 0, last - 1)
        fraction = level - low_level
        low_level = ops.cast(low_level, "int32")
        features = ops.arange(self.n_features, dtype="int32")[None, :]
        result = 0.0
        for node_level, weight in corners:
            start = (node_level + low_level) * self.n_features + features + offset
            low = ops.take(self.grid_tables, start)
            high = ops.take(self.grid_tables, start + self.n_features)
            result = result + weight * (low + fraction * (high - low))
        return result

    def cdf(self, samples, conditions, tie_draws=None, n_stages=None):
        """The inverse of :meth:`invert` without its ties: u = F(x | c) in [0, 1] through stages
        0 .. ``n_stages`` - 1 (all by default), each later stage fed Phi^-1 of the one before.
        The interpolated quantile function is inverted piecewise linearly; within a flat run
        of it (a point mass) u is placed by ``tie_draws`` (uniform numbers shaped like
        ``samples``; the run's middle without them). ``keras.ops``; no gradient is needed."""
        corners = self._corners(conditions)
        n_stages = self.refinements + 1 if n_stages is None else int(n_stages)
        values, uniform = samples, None
        for stage in range(n_stages):
            if stage:
                values = np.sqrt(2.0) * ops.erfinv(
                    2.0 * ops.clip(uniform, self.epsilon, 1.0 - self.epsilon) - 1.0)
            uniform = self._cdf_stage(values, corners, stage * self.stage_size, tie_draws)
        return uniform

    def _cdf_stage(self, values, corners, offset, tie_draws):
        last = self.n_levels - 1
        levels = ops.arange(self.n_levels, dtype="int32")[None, :, None] * self.n_features
        features = ops.arange(self.n_features, dtype="int32")[None, None, :]
        quantiles = 0.0                                          # [n, levels, features]
        for node_level, weight in corners:
            index = node_level[:, :, None] * self.n_features + levels + features + offset
            quantiles = quantiles + weight[:, :, None] * ops.take(self.grid_tables, index)
        x = values[:, None, :]
        left = ops.sum(ops.cast(quantiles < x, "int32"), axis=1)
        right = ops.sum(ops.cast(quantiles <= x, "int32"), axis=1)
        below, above = ops.clip(left - 1, 0, last), ops.clip(left, 0, last)
        q_low = ops.take_along_axis(quantiles, below[:, None, :], axis=1)[:, 0]
        q_high = ops.take_along_axis(quantiles, above[:, None, :], axis=1)[:, 0]
        gap = q_high - q_low
        fraction = ops.where(gap > 0, (values - q_low) / ops.where(gap > 0, gap, 1.0), 0.5)
        uniform = (ops.cast(below, "float32") + ops.clip(fraction, 0.0, 1.0)) / last
        uniform = ops.where(left == 0, 0.0, ops.where(left > last, 1.0, uniform))
        draw = 0.5 if tie_draws is None else tie_draws
        tied = (ops.cast(left, "float32") + draw * ops.cast(right - 1 - left, "float32")) / last
        return ops.where(right - left > 1, tied, uniform)

    def get_config(self):
        return {**super().get_config(), "grid": self.grid, "n_levels": self.n_levels,
                "min_weight": self.min_weight, "kernel_width": self.kernel_width,
                "refinements": self.refinements}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GridRingTiesHead(RingTiesHead, GridQuantileHead):
    """:class:`~ddsim_gan.models.heads.RingTiesHead`'s imposed zeros and ties on
    :class:`GridQuantileHead`'s tables (fitted, as the ring ties', on the free rows only)."""


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GridThresholdTieHead(ThresholdTieHead, GridQuantileHead):
    """:class:`~ddsim_gan.models.heads.ThresholdTieHead`'s ties on :class:`GridQuantileHead`'s
    tables."""
