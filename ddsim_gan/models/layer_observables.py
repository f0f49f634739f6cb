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
import tensorflow as tf

from .penalties import ConservationPenalty, GroupedLayerPenalty

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
    """

    def __init__(self, layer_axis: int = 0, hit_fraction: float = 0.05,
                 temperature: float = 0.05):
        self.layer_axis = int(layer_axis)
        self.hit_fraction = float(hit_fraction)
        self.temperature = float(temperature)
        self._energy = GroupedLayerPenalty("layer_energy", layer_axis=self.layer_axis)
        self._occupancy = GroupedLayerPenalty("layer_occupancy", layer_axis=self.layer_axis,
                                              hit_fraction=self.hit_fraction,
                                              temperature=self.temperature)
        self._hits = ConservationPenalty("nhits", hit_fraction=self.hit_fraction)

    def observables(self, physical, conditions=None):
        """``[n, 2 L + 2]`` (``conditions`` unused: the critic sees them beside)."""
        cells = tf.nn.relu(tf.cast(physical, tf.float32))
        energy = self._energy.quantity_per_event(cells)
        total = tf.reduce_sum(energy, axis=1, keepdims=True)
        hits = self._hits.quantity_per_event(cells)[:, None]
        return tf.concat([tf.math.log1p(energy), self._occupancy.quantity_per_event(cells),
                          tf.math.log1p(total), tf.math.log1p(hits)], axis=1)

    def get_config(self):
        return {"layer_axis": self.layer_axis, "hit_fraction": self.hit_fraction,
                "temperature": self.temperature}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"
