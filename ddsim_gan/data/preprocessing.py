"""Invertible preprocessing as Keras layers, saved inside the models that use them.

The GAN trains on normalized numbers; the exported generator takes physical conditions and returns
physical units because these layers are part of it. Every layer uses ``keras.ops`` only, so a saved
generator runs under the TensorFlow, JAX and PyTorch backends alike.

``layer(x)`` is the forward map (physical -> normalized) and ``layer(x, inverse=True)`` its inverse;
in a functional model the same layer instance can serve both directions.
"""

from __future__ import annotations

import numpy as np
import keras
from keras import ops

_PACKAGE = "ddsim_gan"


class InvertibleTransform(keras.layers.Layer):
    """Base class: subclasses implement ``forward`` and ``inverse``."""

    def call(self, inputs, inverse=False):
        return self.inverse(inputs) if inverse else self.forward(inputs)

    def forward(self, x):
        raise NotImplementedError

    def inverse(self, y):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LogScale(InvertibleTransform):
    """y = log1p(x / scale) / norm and x = scale * expm1(norm * y).

    Maps 0 to 0 (empty cells stay empty) and compresses energies spanning decades; ``norm`` makes
    the largest expected value come out near 1. Defined for x > -scale; used for x >= 0.
    """

    def __init__(self, scale=1.0, norm=1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.norm = float(norm)

    def forward(self, x):
        return ops.log1p(ops.divide(x, self.scale)) / self.norm

    def inverse(self, y):
        return self.scale * ops.expm1(y * self.norm)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "norm": self.norm}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Standardize(InvertibleTransform):
    """y = (x - mean) / std per feature (last axes given by ``feature_shape``), fitted by ``adapt``."""

    def __init__(self, feature_shape=(1,), **kwargs):
        super().__init__(**kwargs)
        self.feature_shape = tuple(int(d) for d in feature_shape)
        self.mean = self.add_weight(shape=self.feature_shape, initializer="zeros",
                                    trainable=False, name="mean")
        self.std = self.add_weight(shape=self.feature_shape, initializer="ones",
                                   trainable=False, name="std")

    def adapt(self, data):
        data = np.asarray(data, dtype=np.float64)
        std = data.std(axis=0)
        self.mean.assign(data.mean(axis=0).astype("float32"))
        # A constant feature keeps unit scale instead of dividing by zero.
        self.std.assign(np.where(std > 0, std, 1.0).astype("float32"))
        return self

    def forward(self, x):
        return (x - ops.cast(self.mean, x.dtype)) / ops.cast(self.std, x.dtype)

    def inverse(self, y):
        return y * ops.cast(self.std, y.dtype) + ops.cast(self.mean, y.dtype)

    def get_config(self):
        return {**super().get_config(), "feature_shape": list(self.feature_shape)}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConditionEncoder(keras.layers.Layer):
    """Physical conditions -> network inputs.

    Continuous columns are optionally log-transformed (for conditions spanning decades, such as
    momenta and energies) and standardized; categorical columns (index into the labels) become
    one-hot vectors. ``adapt`` fits the standardization on training conditions.

    Args:
        n_categories: per column, the number of categories, or 0 for a continuous column.
        log: per column, whether to take the logarithm first (continuous columns only).
    """

    def __init__(self, n_categories, log=None, **kwargs):
        super().__init__(**kwargs)
        self.n_categories = [int(k) for k in n_categories]
        self.log = [bool(flag) for flag in (log or [False] * len(self.n_categories))]
        n_continuous = sum(k == 0 for k in self.n_categories)
        self.mean = self.add_weight(shape=(max(n_continuous, 1),), initializer="zeros",
                                    trainable=False, name="mean")
        self.std = self.add_weight(shape=(max(n_continuous, 1),), initializer="ones",
                                   trainable=False, name="std")

    @classmethod
    def for_detector(cls, detector, **kwargs):
        """Encoder with one-hot categorical conditions and logs where a range spans > x20."""
        n_categories = [len(c.labels) if c.is_categorical else 0 for c in detector.conditions]
        log = [not c.is_categorical and c.low > 0 and c.high / c.low > 20
               for c in detector.conditions]
        return cls(n_categories, log, **kwargs)

    @property
    def n_inputs(self):
        return len(self.n_categories)

    @property
    def output_width(self):
        return sum(k if k else 1 for k in self.n_categories)

    def _continuous(self, conditions):
        columns = [ops.log(conditions[:, i]) if self.log[i] else conditions[:, i]
                   for i, k in enumerate(self.n_categories) if k == 0]
        return ops.stack(columns, axis=1) if columns else None

    def adapt(self, conditions):
        continuous = self._continuous(ops.convert_to_tensor(np.asarray(conditions, "float32")))
        if continuous is not None:
            values = ops.convert_to_numpy(continuous).astype(np.float64)
            std = values.std(axis=0)
            self.mean.assign(values.mean(axis=0).astype("float32"))
            self.std.assign(np.where(std > 0, std, 1.0).astype("float32"))
        return self

    def call(self, conditions):
        continuous = self._continuous(conditions)
        if continuous is not None:
            continuous = (continuous - self.mean) / self.std
        pieces, c = [], 0
        for i, k in enumerate(self.n_categories):
            if k:
                index = ops.cast(ops.round(conditions[:, i]), "int32")
                pieces.append(ops.one_hot(index, k, dtype=conditions.dtype))
            else:
                pieces.append(continuous[:, c:c + 1])
                c += 1
        return ops.concatenate(pieces, axis=1) if len(pieces) > 1 else pieces[0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_width)

    def get_config(self):
        return {**super().get_config(), "n_categories": self.n_categories, "log": self.log}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class HardThreshold(keras.layers.Layer):
    """Zero every value below ``threshold``: the readout threshold, applied in the model's units.

    The gradient passes unchanged where the value survives, so sparse outputs stay trainable.
    """

    def __init__(self, threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        self.threshold = float(threshold)

    def call(self, x):
        return x * ops.cast(x >= self.threshold, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}
