"""Conditional quantile mapping of a trained generator's raw output onto the reference's.

A generator whose output head is a :class:`~ddsim_gan.models.grid_quantiles.GridQuantileHead`
emits raw numbers r that the head maps to physical units. The reference samples have raw units
of their own, z = Phi^-1(F_head(x | c)), their probability integral transform through the
head's tables (RingTies: on the free entries only). Where the generator is right, r and z have
one distribution at every condition. After training, this map makes each feature's
distribution at every condition the reference's while keeping the generator's dependence
between the features (its copula):

    r' = Q_z( F_r(r | c) | c ),

F_r the CDF of the generator's raw output and Q_z the quantile function of the reference's raw
units, both :class:`GridQuantileHead` tables on one grid, with one kernel, fitted at the same
conditions (the training tracks'). Each node's table mixes the distributions over its
footprint and comes out wider than the one at the node; here both tables are widened alike
where the two distributions are alike, so the widenings cancel to first order, which the
tables on their own cannot do. This is quantile mapping (H. A. Panofsky and G. W. Brier, "Some
Applications of Statistics to Meteorology", 1968; as a conditional bias correction, A. J.
Cannon, S. R. Sobie and T. Q. Murdock, J. Climate 28 (2015) 6938), conditioned by the grid.
LHCb RICH, the model shipped on 2026-12-07, 2 million bar tracks: 41 failed efficiency ratios
as it is, 1 mapped (docs/lhcb_rich_gan.md).

Fitted after training on data, like the DarkSHINE resampling stage; the generator is unchanged
and kept (``generator_alone.keras``). ``keras.ops`` only: the mapped sampler is one ``.keras``
model ``[conditions, noise] -> samples`` and loads under every backend.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops
from scipy.special import ndtri

from .grid_quantiles import GridQuantileHead

_PACKAGE = "ddsim_gan"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GridQuantileMap(keras.layers.Layer):
    """``[raw (N, n) generator units, physical conditions] -> raw (N, n)``: r' = Q_z(F_r(r | c)
    | c) (module docstring). ``grid``, ``n_levels``, ``min_weight``, ``kernel_width``,
    ``category_index``, ``n_categories`` as :class:`GridQuantileHead`, shared by both tables;
    adapt with :meth:`adapt`."""

    def __init__(self, n_features=1, grid=(), n_levels=51, min_weight=20.0, kernel_width=0.8,
                 category_index=None, n_categories=1, epsilon=1e-4, **kwargs):
        super().__init__(**kwargs)
        options = dict(grid=grid, n_levels=n_levels, min_weight=min_weight,
                       kernel_width=kernel_width, category_index=category_index,
                       n_categories=n_categories, epsilon=epsilon, dtype=self.dtype_policy)
        self.generated = GridQuantileHead(n_features, name="generated", **options)
        self.reference = GridQuantileHead(n_features, name="reference", **options)
        self.n_features = self.generated.n_features
        self.epsilon = float(epsilon)

    def adapt(self, generated_raw, reference_raw, conditions):
        """Both tables at the same ``conditions``; NaN entries (e.g. tied DLLs) are left out.
        Give both NaN in the same places, so that every node is filled in both or in none."""
        generated_raw = np.asarray(generated_raw, np.float64)
        reference_raw = np.asarray(reference_raw, np.float64)
        if generated_raw.shape != reference_raw.shape or len(conditions) != len(generated_raw):
            raise ValueError(f"GridQuantileMap.adapt: generated {generated_raw.shape}, reference "
                             f"{reference_raw.shape} and {len(conditions)} conditions differ")
        self.generated.adapt(generated_raw, conditions)
        self.reference.adapt(reference_raw, conditions)
        return self

    def build(self, input_shape):
        for table in (self.generated, self.reference):
            if not table.built:
                table.build(None)
        self.built = True

    def call(self, inputs):
        raw, conditions = inputs
        raw, conditions = ops.cast(raw, "float32"), ops.cast(conditions, "float32")
        uniform = ops.clip(self.generated.cdf(raw, conditions), self.epsilon, 1.0 - self.epsilon)
        return self.reference.invert(np.sqrt(2.0) * ops.erfinv(2.0 * uniform - 1.0), conditions)

    def compute_output_shape(self, input_shapes):
        return tuple(input_shapes[0])

    def get_config(self):
        table = self.generated
        return {**super().get_config(), "n_features": self.n_features, "grid": table.grid,
                "n_levels": table.n_levels, "min_weight": table.min_weight,
                "kernel_width": table.kernel_width, "category_index": table.category_index,
                "n_categories": table.n_categories, "epsilon": self.epsilon}


def free_entries(head, samples, conditions):
    """``samples`` as float64 with NaN where ``head`` imposes the value (a
    :class:`~ddsim_gan.models.heads.RingTiesHead`'s tied DLLs), else unchanged."""
    return (head.free_samples(samples, conditions) if hasattr(head, "free_samples")
            else np.array(samples, np.float64))


def quantile_mapped_sampler(sampler, conditions, samples, *, kernel_width=0.8, seed=0,
                            batch_size=65_536, name="quantile_map", grid=None):
    """Fit a :class:`GridQuantileMap` between the raw output of ``sampler`` (a Keras model
    ``[conditions, noise] -> samples`` ending in a :class:`GridQuantileHead`, e.g.
    ``gan.sampler`` or a loaded ``generator.keras``) and the raw units of the reference
    ``samples`` at ``conditions`` (the training tracks); return the sampler with the map
    between the generator and the head (it shares their layers) and the map (layer ``name``;
    a sampler mapped before may be mapped again under another name). ``grid``: the map's
    own grid axes (as :class:`GridQuantileHead`'s), the head's by default."""
    heads = [layer for layer in sampler.layers if isinstance(layer, GridQuantileHead)]
    if len(heads) != 1:
        raise ValueError("quantile_mapped_sampler: the sampler needs one GridQuantileHead as "
                         f"its output head, found {len(heads)}")
    head = heads[0]
    conditions_in, noise_in = sampler.inputs
    raw = head.input[0]
    conditions = np.asarray(conditions, np.float32)
    reference = free_entries(head, samples, conditions)
    rng = np.random.default_rng(seed)
    uniform = head.probability_transform(reference, conditions, rng)
    reference_raw = ndtri(np.clip(uniform, head.epsilon, 1.0 - head.epsilon))
    noise = rng.standard_normal((len(conditions), int(noise_in.shape[-1]))).astype(np.float32)
    generated_raw = keras.Model([conditions_in, noise_in], raw).predict(
        [conditions, noise], batch_size=batch_size, verbose=0).astype(np.float64)
    generated_raw[np.isnan(reference_raw)] = np.nan
    quantile_map = GridQuantileMap(
        head.n_features, grid=head.grid if grid is None else grid, n_levels=head.n_levels,
        min_weight=head.min_weight,
        kernel_width=kernel_width, category_index=head.category_index,
        n_categories=head.n_categories, epsilon=head.epsilon, name=name,
        dtype="float32").adapt(generated_raw, reference_raw, conditions)
    mapped = head([quantile_map([raw, conditions_in]), conditions_in])
    return keras.Model([conditions_in, noise_in], mapped, name="sampler"), quantile_map
