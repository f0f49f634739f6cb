"""Per-cell noise of the calorimeter generators' logits, and its per-layer sharpened variant.

:class:`CellNoise` adds a learned per-cell scale times a standard normal to each cell's logit
(the sampling fluctuations of a silicon cell, :mod:`ddsim_gan.models.calorimeter`).
:class:`SharpenedCellNoise` also sharpens each layer's softmax per event (one cell per MIP
crossing), and :func:`fit_layer_sharpness` finds its starting controls from the data.
Keras 3 layers and ``keras.ops`` only.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

_PACKAGE = "ddsim_gan"

#: starting spread of the per-cell logit noise (CellNoise); SharpenedCellNoise scales it
INITIAL_CELL_SIGMA = 0.3


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CellNoise(keras.layers.Layer):
    """``[head input (n, m + 1), noise (n, m)]`` -> the head input with
    logit_i + exp(log_sigma_i) noise_i on its first m units (the response unit untouched).
    ``log_sigma`` is a trainable per-cell vector starting at log(``initial_sigma``)."""

    def __init__(self, initial_sigma=INITIAL_CELL_SIGMA, **kwargs):
        super().__init__(**kwargs)
        self.initial_sigma = float(initial_sigma)

    def build(self, input_shapes):
        cells = int(input_shapes[1][-1])
        self.log_sigma = self.add_weight(
            shape=(cells,), name="log_sigma",
            initializer=keras.initializers.Constant(math.log(self.initial_sigma)))

    def call(self, inputs):
        head, noise = inputs
        head = ops.cast(head, "float32")
        cells = ops.shape(noise)[1]
        noisy = head[:, :cells] + ops.exp(ops.cast(self.log_sigma, "float32")) * ops.cast(
            noise, "float32")
        return ops.concatenate([noisy, head[:, cells:]], axis=1)

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def get_config(self):
        return {**super().get_config(), "initial_sigma": self.initial_sigma}


#: the noise gain at which INITIAL_CELL_SIGMA x gain is Gumbel's spread (1.28)
GUMBEL_NOISE_GAIN = math.log(1.28 / INITIAL_CELL_SIGMA)
CONTROL_BOUND = 3.0                        # |log sharpness|, |log noise gain| stay below this


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SharpenedCellNoise(CellNoise):
    """:class:`CellNoise` whose noise and sharpness the network sets per event and layer:
    ``[head input (n, m + 1), noise (n, m), controls (n, 2 L)]`` -> the head input with layer
    l's logits a = logit + g_l sigma_i noise_i replaced by

        M_l + log_softmax_l(beta_l a),   M_l = logsumexp over the layer of a,

    so the layer keeps its share of the event's energy (M_l) while its cells share it more
    (beta_l > 1) or less (beta_l < 1) unevenly; log beta_l and log g_l are the controls, each
    bounded by ``CONTROL_BOUND`` through a tanh. beta = g = 1 is :class:`CellNoise`.

    Why: a MIP crossing of a SiW layer puts its 1 MIP in one cell, wherever the beam spot put
    the particle, and the layer reads one hit. A generator continuous in its latent draws the
    crossing's position smeared over the spot (the shipped SiW model: 5-7 cells sharing a
    track layer's energy, top cell under the 0.5 MIP threshold in 12 % of track layers, which
    then read empty). With beta large and g near Gumbel's spread (``GUMBEL_NOISE_GAIN``) the
    softmax of noisy logits is a Gumbel-max draw of one cell from the mean profile
    (E. Jang, S. Gu, B. Poole, arXiv:1611.01144, with a normal in place of the Gumbel)."""

    def __init__(self, sample_shape, initial_sigma=INITIAL_CELL_SIGMA, **kwargs):
        super().__init__(initial_sigma, **kwargs)
        self.sample_shape = tuple(int(d) for d in sample_shape)

    def call(self, inputs):
        head, noise, controls = inputs
        head = ops.cast(head, "float32")
        controls = CONTROL_BOUND * ops.tanh(ops.cast(controls, "float32") / CONTROL_BOUND)
        n_layers = self.sample_shape[0]
        per_layer = math.prod(self.sample_shape[1:])
        cells = n_layers * per_layer
        log_sharpness = controls[:, :n_layers, None]
        noise_gain = ops.exp(controls[:, n_layers:, None])
        sigma = ops.reshape(ops.exp(ops.cast(self.log_sigma, "float32")), (n_layers, per_layer))
        noise = ops.reshape(ops.cast(noise, "float32"), (-1, n_layers, per_layer))
        logits = ops.reshape(head[:, :cells], (-1, n_layers, per_layer))
        noisy = logits + noise_gain * sigma * noise
        layer_mass = ops.logsumexp(noisy, axis=-1, keepdims=True)
        sharpened = layer_mass + ops.log_softmax(ops.exp(log_sharpness) * noisy, axis=-1)
        return ops.concatenate([ops.reshape(sharpened, (-1, cells)), head[:, cells:]], axis=1)

    def get_config(self):
        return {**super().get_config(), "sample_shape": list(self.sample_shape)}


def readout_top_share(layer_values, threshold=0.0):
    """Per event, for cells ``[n, m]`` of one layer read out above ``threshold``: whether any
    cell is read out, and the hottest read-out cell's share of the read-out energy (NaN where
    none is)."""
    read = np.where(layer_values >= threshold, layer_values, 0.0)
    total = read.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total > 0, np.where(total > 0, read.max(axis=1) / total, np.nan)


def fit_layer_sharpness(log_shares, layer_energies, reference_layers, threshold, noise_sigma,
                        rng, sharpness_grid=(1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 10.0),
                        cell_sigma=INITIAL_CELL_SIGMA):
    """Starting controls of :class:`SharpenedCellNoise` for one population, layer by layer.

    ``log_shares`` [L, m]: the population's mean shower (the untrained generator's logits),
    ``layer_energies`` [n, L] its events' read-out layer energies, ``reference_layers`` [n, L,
    m] their read-out cells, ``noise_sigma`` [L] the readout noise. For each beta of the grid
    (noise gain tied to it, log g = GUMBEL_NOISE_GAIN (1 - 1/beta): no change at beta = 1,
    Gumbel-max as beta grows) the events' layer energies are shared by the sharpened noisy
    softmax, noise is added, and the readout applied; the beta kept per layer makes the
    fraction of events with a read-out cell and the median share of the hottest cell closest
    to the reference's (sum of both absolute differences). Returns (log beta, log g), each [L]."""
    n_layers = log_shares.shape[0]
    log_sharpness, log_gain = np.zeros(n_layers), np.zeros(n_layers)
    for layer in range(n_layers):
        hit, share = readout_top_share(reference_layers[:, layer], threshold)
        if not hit.any():
            continue
        target = (hit.mean(), np.nanmedian(share))
        energies = layer_energies[:, layer:layer + 1]
        # the same draws for every beta: the choice compares betas, not draws
        cell_draws, readout_draws = rng.standard_normal((2, len(energies), log_shares.shape[1]))
        best = np.inf
        for beta in sharpness_grid:
            gain = GUMBEL_NOISE_GAIN * (1.0 - 1.0 / beta)
            noisy = log_shares[layer] + np.exp(gain) * cell_sigma * cell_draws
            noisy = beta * (noisy - noisy.max(axis=1, keepdims=True))
            shares = np.exp(noisy) / np.exp(noisy).sum(axis=1, keepdims=True)
            values = energies * shares + noise_sigma[layer] * readout_draws
            drawn_hit, drawn_share = readout_top_share(values, threshold)
            drawn_share = np.nanmedian(drawn_share) if drawn_hit.any() else 0.0
            distance = abs(drawn_hit.mean() - target[0]) + abs(drawn_share - target[1])
            if distance < best - 1e-3:
                best, log_sharpness[layer], log_gain[layer] = distance, np.log(beta), gain
    return log_sharpness, log_gain
