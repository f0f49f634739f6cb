"""Layer-wise factorized generator and critic for calorimeter images with a layer axis.

A dense generator spends most of its work in its last matrix, hidden -> all cells (512 x 4400
for DarkSHINE). Here the trunk emits a short code per layer and one decoder, shared by all
layers, turns each code into that layer's cells; the critic mirrors it with one shared encoder
per layer. Showers change width and position from layer to layer but are built from the same
few spatial patterns, which the shared matrices learn once. For DarkSHINE this cuts the cost of
the cell matrices about eight-fold (issue 7: "layer-wise factorized generators"), so more
training steps fit in the same budget. Keras layers and ``keras.ops`` only.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

from .networks import critic_precision

_PACKAGE = "ddsim_gan"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CellBias(keras.layers.Layer):
    """A trainable bias per output unit, so the factorized decoder can still start from the
    mean shower (its shared matrix has one bias per cell of a layer, not per cell)."""

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="bias")

    def call(self, x):
        return x + ops.cast(self.bias, x.dtype)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NoisyCells(keras.layers.Layer):
    """s_i = mu_i + exp(log_sigma_i) n_i with n_i ~ N(0, 1) one per cell and event: the cell's
    own random chance to fire (like StyleGAN's per-pixel noise inputs, T. Karras et al.,
    arXiv:1812.04948), its mean mu set by the network and its spread learned per cell."""

    def build(self, input_shapes):
        self.log_sigma = self.add_weight(shape=(input_shapes[0][-1],), initializer="zeros",
                                         name="log_sigma")

    def call(self, inputs):
        mu, noise = inputs
        return mu + ops.exp(ops.cast(self.log_sigma, mu.dtype)) * ops.cast(noise, mu.dtype)

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Columns(keras.layers.Layer):
    """Columns ``start:stop`` of a ``[N, width]`` tensor."""

    def __init__(self, start, stop, **kwargs):
        super().__init__(**kwargs)
        self.start, self.stop = int(start), int(stop)

    def call(self, x):
        return x[:, self.start:self.stop]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.stop - self.start)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


def _layer_first(sample_shape, layer_axis):
    """Axis order putting the layer axis first, and the order that undoes it."""
    order = [layer_axis] + [a for a in range(len(sample_shape)) if a != layer_axis]
    inverse = [order.index(a) for a in range(len(sample_shape))]
    return order, inverse


def layerwise_generator(latent_dim, condition_width, sample_shape, layer_axis, hidden=(512, 512),
                        layer_code=64, cell_noise=False, name="generator"):
    """``[noise, encoded conditions]`` -> ``prod(sample_shape) + 1`` float32 units: cell logits in
    the sample's own flattening order, then one response unit (for ``EnergyShareHead``).

    With ``cell_noise`` the noise input is ``latent_dim + prod(sample_shape)`` wide, the extra
    part one normal number per cell, and the output has ``prod(sample_shape)`` more units: the
    :class:`NoisyCells` scattered-deposit scores (``EnergyShareHead(scattered_scale=...)``).
    """
    order, inverse = _layer_first(sample_shape, layer_axis)
    n_layers = sample_shape[layer_axis]
    n_cells = math.prod(sample_shape)
    per_layer = n_cells // n_layers
    noise = keras.Input((latent_dim + (n_cells if cell_noise else 0),), name="noise")
    conditions = keras.Input((condition_width,), name="encoded_conditions")
    trunk_noise = Columns(0, latent_dim)(noise) if cell_noise else noise
    x = layers.Concatenate()([trunk_noise, conditions])
    for i, units in enumerate(hidden):
        x = layers.LeakyReLU(0.2)(layers.Dense(units, name=f"dense_{i}")(x))
    codes = layers.Reshape((n_layers, layer_code))(layers.Dense(n_layers * layer_code,
                                                                name="layer_codes")(x))
    cells = layers.Dense(per_layer, dtype="float32", name="layer_decoder")(
        layers.LeakyReLU(0.2)(codes))
    cells = layers.Reshape(tuple(sample_shape[a] for a in order), dtype="float32")(cells)
    cells = layers.Permute(tuple(i + 1 for i in inverse), dtype="float32")(cells)
    logits = CellBias(dtype="float32", name="output_bias")(layers.Flatten(dtype="float32")(cells))
    response = layers.Dense(1, dtype="float32", name="response")(x)
    pieces = [logits, response]
    if cell_noise:
        mu = layers.Dense(per_layer, dtype="float32", name="scatter_decoder",
                          bias_initializer=keras.initializers.Constant(-3.5))(
            layers.LeakyReLU(0.2)(codes))
        mu = layers.Reshape(tuple(sample_shape[a] for a in order), dtype="float32")(mu)
        mu = layers.Flatten(dtype="float32")(
            layers.Permute(tuple(i + 1 for i in inverse), dtype="float32")(mu))
        pieces.append(NoisyCells(dtype="float32", name="scatter_noise")(
            [mu, Columns(latent_dim, latent_dim + n_cells)(noise)]))
    out = layers.Concatenate(dtype="float32", name="logits_and_response")(pieces)
    return keras.Model([noise, conditions], out, name=name)


@critic_precision
def layerwise_critic(sample_shape, condition_width, layer_axis, hidden=(512, 256), layer_code=64,
                     features=None, name="critic"):
    """``[normalized sample, encoded conditions]`` -> score, one shared encoder per layer."""
    order, _ = _layer_first(sample_shape, layer_axis)
    n_layers = sample_shape[layer_axis]
    sample = keras.Input(tuple(sample_shape), name="sample")
    conditions = keras.Input((condition_width,), name="encoded_conditions")
    per_layer = layers.Reshape((n_layers, -1))(
        layers.Permute(tuple(a + 1 for a in order))(sample))
    codes = layers.LeakyReLU(0.2)(layers.Dense(layer_code, name="layer_encoder")(per_layer))
    pieces = [layers.Flatten()(codes), conditions]
    for feature in (features if isinstance(features, (list, tuple)) else [features]):
        if feature is not None:
            pieces.append(feature(sample))
    x = layers.Concatenate()(pieces)
    for i, units in enumerate(hidden):
        x = layers.LeakyReLU(0.2)(layers.Dense(units, name=f"dense_{i}")(x))
    score = layers.Dense(1, dtype="float32", name="score")(x)
    return keras.Model([sample, conditions], score, name=name)
