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
"""

from __future__ import annotations

import itertools

import keras
import numpy as np
from keras import ops

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
        kernel_width: the half-width h of the tent weights, in node spacings, in (0, 1].
        n_features, n_quantiles, epsilon, category_index, n_categories: as
            :class:`QuantileHead` (its tables are the fallback).
    """

    def __init__(self, n_features=1, n_quantiles=1000, epsilon=1e-4, grid=(), n_levels=101,
                 min_weight=200.0, kernel_width=1.0, **kwargs):
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
        self.kernel_width = float(kernel_width)
        if not 0 < self.kernel_width <= 1:
            raise ValueError(f"GridQuantileHead: kernel_width = {kernel_width}, expected in "
                             "(0, 1] node spacings")
        self.axis_sizes = [len(nodes) for _, nodes, _ in self.grid]
        self.strides = [int(np.prod(self.axis_sizes[d + 1:])) for d in range(len(self.grid))]
        self.n_nodes = int(np.prod(self.axis_sizes))
        n_tables = self.n_categories * self.n_nodes
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
        the tent-weighted samples; NaN entries are left out of their column."""
        if conditions is None:
            raise ValueError("GridQuantileHead.adapt needs the conditions (the grid positions)")
        super().adapt(samples, conditions)
        samples = np.asarray(samples, np.float64).reshape(len(samples), self.n_features)
        conditions = np.asarray(conditions, np.float64)
        positions = np.stack(self._positions(conditions, np), axis=1)
        category = self._category(conditions, np)
        levels = np.linspace(0.0, 1.0, self.n_levels)
        tables = np.empty((self.n_categories, self.n_nodes, self.n_levels, self.n_features))
        self.fallback_nodes = 0
        nodes = np.array(list(itertools.product(*map(range, self.axis_sizes))), np.float64)
        for k in range(self.n_categories):
            rows = category == k
            where, values = positions[rows], samples[rows]
            filled = np.zeros((self.n_nodes, self.n_features), bool)
            for node, index in enumerate(nodes):
                weight = np.prod(np.maximum(0.0, 1.0 - np.abs(where - index) / self.kernel_width),
                                 axis=1)
                near = weight > 0
                for f in range(self.n_features):
                    usable = near & ~np.isnan(values[:, f])
                    if weight[usable].sum() >= self.min_weight:
                        filled[node, f] = True
                        tables[k, node, :, f] = weighted_quantiles(
                            values[usable, f], weight[usable], levels)
            self._fill_empty_nodes(tables[k], filled, nodes, self._category_table(k, levels))
        self.grid_tables.assign(tables.reshape(-1).astype("float32"))
        return self

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
    def invert(self, raw, conditions):
        last = self.n_levels - 1
        level = ops.clip(0.5 * (1.0 + ops.erf(raw / np.sqrt(2.0))), 0.0, 1.0) * last
        low_level = ops.clip(ops.floor(level), 0, last - 1)
        fraction = level - low_level
        low_level = ops.cast(low_level, "int32")
        positions = self._positions(conditions, ops)
        lower = [ops.cast(ops.clip(ops.floor(p), 0, max(n - 2, 0)), "int32")
                 for p, n in zip(positions, self.axis_sizes)]
        offsets = [p - ops.cast(j, p.dtype) for p, j in zip(positions, lower)]
        base = ops.cast(self._category(conditions, ops), "int32") * self.n_nodes
        features = ops.arange(self.n_features, dtype="int32")[None, :]
        result = 0.0
        for corner in itertools.product((0, 1), repeat=len(self.grid)):
            node, weight = base, 1.0
            for d, step in enumerate(corner):
                n = self.axis_sizes[d]
                node = node + ops.minimum(lower[d] + step, n - 1) * self.strides[d]
                weight = weight * (offsets[d] if step else 1.0 - offsets[d])
            start = (node[:, None] * self.n_levels + low_level) * self.n_features + features
            low = ops.take(self.grid_tables, start)
            high = ops.take(self.grid_tables, start + self.n_features)
            result = result + weight[:, None] * (low + fraction * (high - low))
        return result

    def get_config(self):
        return {**super().get_config(), "grid": self.grid, "n_levels": self.n_levels,
                "min_weight": self.min_weight, "kernel_width": self.kernel_width}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GridRingTiesHead(RingTiesHead, GridQuantileHead):
    """:class:`~ddsim_gan.models.heads.RingTiesHead`'s imposed zeros and ties on
    :class:`GridQuantileHead`'s tables (fitted, as the ring ties', on the free rows only)."""


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GridThresholdTieHead(ThresholdTieHead, GridQuantileHead):
    """:class:`~ddsim_gan.models.heads.ThresholdTieHead`'s ties on :class:`GridQuantileHead`'s
    tables."""
