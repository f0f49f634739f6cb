"""Generator and critic builders: Keras 3 layers and ``keras.ops`` only (they run on any backend).

Networks work in normalized units: the generator maps ``[noise, encoded conditions]`` to a
normalized sample, the critic maps ``[normalized sample, encoded conditions]`` to a score. The
:class:`~ddsim_gan.models.gan.ConditionalGAN` owns the preprocessing layers that translate to and
from physical units.

Dense networks are the default: on GPUs and CPUs alike they run at the full matrix-multiply rate,
while transposed convolutions on 20x20x11 images do not (issue 7's measurements).
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

_PACKAGE = "ddsim_gan"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ShowerFeatures(keras.layers.Layer):
    """Physics features of an image, computed in-graph so the critic sees them directly.

    Following CaloGAN (M. Paganini et al., arXiv:1705.02355: energy sums fed to the
    discriminator), a critic that sees log total energy, log energy per layer and the energy
    centre and width along each lateral axis can compare them with the conditions at once,
    instead of having to learn sums over thousands of cells.

    Args:
        scale, norm: the :class:`~ddsim_gan.data.preprocessing.LogScale` that normalized the
            sample (inverted here to get energies).
        layer_axis: index of the longitudinal axis within one sample, or ``None``.
        lateral_axes: indices of the lateral axes within one sample.
    """

    def __init__(self, scale, norm, layer_axis=None, lateral_axes=(), **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.norm = float(norm)
        self.layer_axis = None if layer_axis is None else int(layer_axis)
        self.lateral_axes = tuple(int(a) for a in lateral_axes)

    def call(self, normalized):
        energy = self.scale * ops.expm1(ops.cast(normalized, "float32") * self.norm)
        rank = len(energy.shape)
        all_axes = tuple(range(1, rank))
        total = ops.sum(energy, axis=all_axes)
        features = [ops.log1p(total / self.scale)[:, None] / self.norm]
        if self.layer_axis is not None:
            other = tuple(a for a in all_axes if a != self.layer_axis + 1)
            per_layer = ops.sum(energy, axis=other)
            features.append(ops.log1p(per_layer / self.scale) / self.norm)
        for axis in self.lateral_axes:
            size = energy.shape[axis + 1]
            other = tuple(a for a in all_axes if a != axis + 1)
            profile = ops.sum(energy, axis=other)
            coordinate = (ops.arange(size, dtype="float32") - (size - 1) / 2.0) / size
            weight = profile / (total[:, None] + 1e-6)
            centre = ops.sum(weight * coordinate, axis=1)
            spread = ops.sum(weight * ops.square(coordinate[None, :] - centre[:, None]), axis=1)
            features += [centre[:, None] * 4.0, ops.sqrt(spread + 1e-8)[:, None] * 10.0]
        return ops.concatenate(features, axis=1)

    def compute_output_shape(self, input_shape):
        width = 1 + 2 * len(self.lateral_axes)
        if self.layer_axis is not None:
            width += input_shape[self.layer_axis + 1]
        return (input_shape[0], width)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "norm": self.norm,
                "layer_axis": self.layer_axis, "lateral_axes": list(self.lateral_axes)}

    @classmethod
    def for_detector(cls, detector, scale, norm):
        axes = list(detector.axes or ())
        longitudinal = [i for i, a in enumerate(axes) if a in ("layer", "time", "z")]
        lateral = [i for i, a in enumerate(axes) if a not in ("layer", "time", "z")]
        return cls(scale, norm, longitudinal[0] if longitudinal else None, lateral,
                   name="shower_features")


def dense_generator(latent_dim, condition_width, sample_shape, hidden=(512, 512),
                    output_activation="relu", name="generator"):
    """``[noise (latent_dim), encoded conditions]`` -> normalized sample of ``sample_shape``.

    The output layer computes in float32 so that a mixed-precision policy never hands
    half-precision samples to the penalties or the inverse transform.
    """
    noise = keras.Input((latent_dim,), name="noise")
    conditions = keras.Input((condition_width,), name="encoded_conditions")
    x = layers.Concatenate()([noise, conditions])
    for i, units in enumerate(hidden):
        x = layers.Dense(units, name=f"dense_{i}")(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Dense(math.prod(sample_shape), name="output_dense")(x)
    x = layers.Activation(output_activation, dtype="float32", name="output_activation")(x)
    x = layers.Reshape(tuple(sample_shape), dtype="float32")(x)
    return keras.Model([noise, conditions], x, name=name)


def dense_critic(sample_shape, condition_width, hidden=(512, 256), features=None,
                 name="critic"):
    """``[normalized sample, encoded conditions]`` -> score (float32, no activation).

    No batch normalization: the gradient penalty is defined per event (arXiv:1704.00028, sec. 4).
    ``features`` (e.g. :class:`ShowerFeatures`) adds physics summaries next to the raw cells.
    """
    sample = keras.Input(tuple(sample_shape), name="sample")
    conditions = keras.Input((condition_width,), name="encoded_conditions")
    pieces = [layers.Flatten()(sample), conditions]
    if features is not None:
        pieces.append(features(sample))
    x = layers.Concatenate()(pieces)
    for i, units in enumerate(hidden):
        x = layers.Dense(units, name=f"dense_{i}")(x)
        x = layers.LeakyReLU(0.2)(x)
    score = layers.Dense(1, dtype="float32", name="score")(x)
    return keras.Model([sample, conditions], score, name=name)
