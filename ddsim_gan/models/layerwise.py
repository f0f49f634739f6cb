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

_PACKAGE = "ddsim_gan"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CellBias(keras.layers.Layer):
    """A trainable bias per output unit, so the factorized decoder can still start from the
    mean shower (its shared matrix has one bias per cell of a layer, not per cell)."""

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="bias")

    def call(self, x):
        return x + ops.cast(self.bias, x.dtype)


def _layer_first(sample_shape, layer_axis):
    """Axis order putting the layer axis first, and the order that undoes it."""
    order = [layer_axis] + [a for a in range(len(sample_shape)) if a != layer_axis]
    inverse = [order.index(a) for a in range(len(sample_shape))]
    return order, inverse


def layerwise_generator(latent_dim, condition_width, sample_shape, layer_axis, hidden=(512, 512),
                        layer_code=64, name="generator"):
    """``[noise, encoded conditions]`` -> ``prod(sample_shape) + 1`` float32 units: cell logits in
    the sample's own flattening order, then one response unit (for ``EnergyShareHead``)."""
    order, inverse = _layer_first(sample_shape, layer_axis)
    n_layers = sample_shape[layer_axis]
    per_layer = math.prod(sample_shape) // n_layers
    noise = keras.Input((latent_dim,), name="noise")
    conditions = keras.Input((condition_width,), name="encoded_conditions")
    x = layers.Concatenate()([noise, conditions])
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
    out = layers.Concatenate(dtype="float32", name="logits_and_response")([logits, response])
    return keras.Model([noise, conditions], out, name=name)


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
