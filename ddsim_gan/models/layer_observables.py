"""Per-layer observables of a sampling calorimeter, for the second critic on the observables.

Seed 003's numbers are per layer: the energy of every layer and whether it has a seed hit (a
cell above 5 % of the event's maximum). Their batch means are matched by the grouped penalties
(:class:`~ddsim_gan.models.penalties.GroupedLayerPenalty`), but a mean leaves the shape free:
10 GeV pions in the SiW-ECAL are two populations, about half crossing all 15 layers as a
minimum-ionizing track (sum_E about 20 MIP) and half showering from a depth drawn from the
nuclear interaction length (sum_E up to 400 MIP), and a generator that makes every pion an
average of the two has the right means and no event like the reference. A critic on these
numbers, event by event, sees the two populations
(:mod:`~ddsim_gan.models.observable_critic`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from .penalties import ConservationPenalty, GroupedLayerPenalty, categories

_PACKAGE = "ddsim_gan"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LayerHitObservables:
    """``observables(physical) -> [n, 2 L + 2]``: per event, for each of the L layers
    log(1 + E_l) (E_l in the detector's units, e.g. MIP) and the seed-hit indicator
    1[max cell of l > f max cell of the event], then log(1 + sum_E) and log(1 + nhits) with
    nhits the number of cells above f of the event's maximum (seed 003, f = ``hit_fraction``).
    Logs, because one species' layer energies span two orders of magnitude. The indicator and
    the count are exact, with the gradient of their soft versions (straight-through, as in
    :class:`~ddsim_gan.models.penalties.GroupedLayerPenalty` and
    :class:`~ddsim_gan.models.penalties.ConservationPenalty`).

    With ``group_index`` and per-category ``group_means`` and ``group_scales``
    (:meth:`fit_groups`) every column is standardized within its event's category g =
    round(conditions[:, group_index]): (q - mean_g) / max(scale_g, 0.02). Standardized over
    both species at once, the electrons' log sum_E spreads over 0.05 of a unit whose size is
    set by the gap between the species, and a critic bounded in slope in those units lets the
    electrons' energy resolution widen several-fold (SiW, 2026-12-05: 10-90 % of sum_E
    524-1472 MIP against 878-1015).
    """

    scale_floor = 0.02

    def __init__(self, layer_axis: int = 0, hit_fraction: float = 0.05,
                 temperature: float = 0.05, group_index=None, group_means=None,
                 group_scales=None):
        self.layer_axis = int(layer_axis)
        self.hit_fraction = float(hit_fraction)
        self.temperature = float(temperature)
        self.group_index = None if group_index is None else int(group_index)
        self.group_means = self.group_scales = None
        if group_means is not None or group_scales is not None:
            means, scales = np.asarray(group_means, float), np.asarray(group_scales, float)
            if self.group_index is None or means.ndim != 2 or means.shape != scales.shape:
                raise ValueError(f"{type(self).__name__}: group_means and group_scales need "
                                 f"group_index and the same [categories, columns] shape, got "
                                 f"{means.shape} and {scales.shape}")
            self.group_means = means.tolist()
            self.group_scales = np.maximum(scales, self.scale_floor).tolist()
        self._energy = GroupedLayerPenalty("layer_energy", layer_axis=self.layer_axis)
        self._occupancy = GroupedLayerPenalty("layer_occupancy", layer_axis=self.layer_axis,
                                              hit_fraction=self.hit_fraction,
                                              temperature=self.temperature)
        self._hits = ConservationPenalty("nhits", hit_fraction=self.hit_fraction)

    def raw_observables(self, physical):
        """``[n, 2 L + 2]``, before any standardization within categories."""
        cells = tf.nn.relu(tf.cast(physical, tf.float32))
        energy = self._energy.quantity_per_event(cells)
        total = tf.reduce_sum(energy, axis=1, keepdims=True)
        hits = self._hits.quantity_per_event(cells)[:, None]
        return tf.concat([tf.math.log1p(energy), self._occupancy.quantity_per_event(cells),
                          tf.math.log1p(total), tf.math.log1p(hits)], axis=1)

    def observables(self, physical, conditions=None):
        """``[n, 2 L + 2]``, standardized within categories where fitted (then ``conditions``,
        physical, are needed)."""
        values = self.raw_observables(physical)
        if self.group_means is None:
            return values
        if conditions is None:
            raise ValueError(f"{type(self).__name__}: standardizing within categories needs "
                             "the conditions")
        group = categories(conditions, self.group_index)
        means = tf.gather(tf.constant(self.group_means, tf.float32), group)
        scales = tf.gather(tf.constant(self.group_scales, tf.float32), group)
        return (values - means) / scales

    def fit_groups(self, samples, conditions, group_index: int, n_groups: int,
                   batch_size: int = 2048):
        """Fit ``group_means`` and ``group_scales`` on physical ``samples`` (a category absent
        from them gets mean 0, scale 1). Returns ``self``."""
        values, groups = [], []
        for start in range(0, len(samples), batch_size):
            values.append(self.raw_observables(tf.constant(
                np.asarray(samples[start:start + batch_size], np.float32))).numpy())
            groups.append(np.rint(np.asarray(conditions[start:start + batch_size],
                                             np.float64)[:, group_index]).astype(int))
        values, groups = np.concatenate(values).astype(np.float64), np.concatenate(groups)
        means = np.zeros((n_groups, values.shape[1]))
        scales = np.ones((n_groups, values.shape[1]))
        for g in range(n_groups):
            if np.any(groups == g):
                means[g], scales[g] = values[groups == g].mean(0), values[groups == g].std(0)
        self.group_index = int(group_index)
        self.group_means = means.tolist()
        self.group_scales = np.maximum(scales, self.scale_floor).tolist()
        return self

    def get_config(self):
        return {"layer_axis": self.layer_axis, "hit_fraction": self.hit_fraction,
                "temperature": self.temperature, "group_index": self.group_index,
                "group_means": self.group_means, "group_scales": self.group_scales}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"
