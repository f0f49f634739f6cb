"""Generator and critic builders: Keras 3 layers and ``keras.ops`` only (they run on any backend).

Networks work in normalized units: the generator maps ``[noise, encoded conditions]`` to a
normalized sample, the critic maps ``[normalized sample, encoded conditions]`` to a score. The
:class:`~ddsim_gan.models.gan.ConditionalGAN` owns the preprocessing layers that translate to and
from physical units.

Dense networks are the default: on GPUs and CPUs alike they run at the full matrix-multiply rate,
while transposed convolutions on 20x20x11 images do not (issue 7's measurements).
"""

from __future__ import annotations

import functools
import math

import keras
from keras import layers, ops

_PACKAGE = "ddsim_gan"


def critic_precision(build):
    """Decorator of critic (and auxiliary regressor) builders: under ``mixed_float16`` the
    network is built in float32; otherwise it follows the global policy.

    The gradient penalty differentiates the critic's input gradient a second time, and float16
    ends at 65504: critics with steep input slopes (per-cell gradients up to 1e3 at
    initialization in the SiW conv3d critic) overflow at any loss scale. Measured with float16
    critics: the dynamic loss scale of the SiW critics fell from 2**15 to 2 (dense) and to 0
    (conv3d: no update left) within 25 steps. bfloat16 has float32's range, so under
    ``mixed_bfloat16`` critics stay in bfloat16. The generator, the network that is deployed,
    follows the policy in both. ``policy=`` overrides the rule.
    """
    @functools.wraps(build)
    def wrapper(*args, policy=None, **kwargs):
        current = keras.mixed_precision.global_policy().name
        chosen = policy or ("float32" if current == "mixed_float16" else current)
        keras.mixed_precision.set_global_policy(chosen)
        try:
            return build(*args, **kwargs)
        finally:
            keras.mixed_precision.set_global_policy(current)
    return wrapper


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ShowerFeatures(keras.layers.Layer):
    """Physics features of an image, computed in-graph so the critic sees them directly.

    Following CaloGAN (M. Paganini et al., arXiv:1705.02355: energy sums fed to the
    discriminator), a critic that sees log total energy, log energy per layer and the energy
    centre and width along each lateral axis, and (with ``hit_threshold``) a soft count of
    cells above the readout threshold, can compare them with the conditions at once,
    instead of having to learn sums over thousands of cells.

    Args:
        scale, norm: the :class:`~ddsim_gan.data.preprocessing.LogScale` that normalized the
            sample (inverted here to get energies).
        layer_axis: index of the longitudinal axis within one sample, or ``None``.
        lateral_axes: indices of the lateral axes within one sample.
        hit_threshold: readout threshold in physical units, or ``None`` for no hit count.
    """

    def __init__(self, scale, norm, layer_axis=None, lateral_axes=(), hit_threshold=None,
                 **kwargs):
        kwargs.setdefault("dtype", "float32")      # computed in float32 (critic_precision)
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.norm = float(norm)
        self.hit_threshold = None if not hit_threshold else float(hit_threshold)
        self.layer_axis = None if layer_axis is None else int(layer_axis)
        self.lateral_axes = tuple(int(a) for a in lateral_axes)

    def call(self, normalized):
        energy = self.scale * ops.expm1(ops.cast(normalized, "float32") * self.norm)
        rank = len(energy.shape)
        all_axes = tuple(range(1, rank))
        total = ops.sum(energy, axis=all_axes)
        features = [ops.log1p(total / self.scale)[:, None] / self.norm]
        if self.hit_threshold is not None:
            # Soft count of cells above the readout threshold, taken in normalized units: in
            # energy units the sigmoid's slope times expm1's would break the critic's Lipschitz
            # bound that the gradient penalty enforces.
            flat = ops.reshape(ops.cast(normalized, "float32"), (ops.shape(energy)[0], -1))
            cut = math.log1p(self.hit_threshold / self.scale) / self.norm
            soft_hits = ops.sum(ops.sigmoid((flat - cut) / (0.25 * cut)), axis=1)
            features.append(ops.log1p(soft_hits)[:, None] / math.log1p(flat.shape[1]))
        if self.layer_axis is not None:
            other = tuple(a for a in all_axes if a != self.layer_axis + 1)
            per_layer = ops.sum(energy, axis=other)
            features.append(ops.log1p(per_layer / self.scale) / self.norm)
        for axis in self.lateral_axes:
            size = energy.shape[axis + 1]
            other = tuple(a for a in all_axes if a != axis + 1)
            profile = ops.sum(energy, axis=other)
            coordinate = (ops.arange(size, dtype="float32") - (size - 1) / 2.0) / size
            # + scale, not + 1e-6: an empty image (an untrained generator's) keeps finite
            # slopes (see ImageMomentFeatures); real showers hold hundreds of scale units
            weight = profile / (total[:, None] + self.scale)
            centre = ops.sum(weight * coordinate, axis=1)
            spread = ops.sum(weight * ops.square(coordinate[None, :] - centre[:, None]), axis=1)
            # a width floor of 1 % of the image: smaller slopes on one-cell images (1e-8 gave
            # input gradients of 2e4, now 2e3); real showers' widths move by a few per mille
            features += [centre[:, None] * 4.0, ops.sqrt(spread + 1e-4)[:, None] * 10.0]
        return ops.concatenate(features, axis=1)

    def compute_output_shape(self, input_shape):
        width = 1 + 2 * len(self.lateral_axes) + (self.hit_threshold is not None)
        if self.layer_axis is not None:
            width += input_shape[self.layer_axis + 1]
        return (input_shape[0], width)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "norm": self.norm,
                "layer_axis": self.layer_axis, "lateral_axes": list(self.lateral_axes),
                "hit_threshold": self.hit_threshold}

    @classmethod
    def for_detector(cls, detector, scale, norm):
        axes = list(detector.axes or ())
        longitudinal = [i for i, a in enumerate(axes) if a in ("layer", "time", "z")]
        lateral = [i for i, a in enumerate(axes) if a not in ("layer", "time", "z")]
        return cls(scale, norm, longitudinal[0] if longitudinal else None, lateral,
                   hit_threshold=detector.threshold or None, name="shower_features")


def dense_generator(latent_dim, condition_width, sample_shape, hidden=(512, 512),
                    output_activation="relu", output_units=None, name="generator"):
    """``[noise (latent_dim), encoded conditions]`` -> normalized sample of ``sample_shape``.

    With ``output_units`` the network instead ends in that many linear float32 units, the input
    of an output head (e.g. :class:`EnergyShareHead` wants ``prod(sample_shape) + 1``).
    The output layer computes in float32 so that a mixed-precision policy never hands
    half-precision samples to the penalties or the inverse transform.
    """
    noise = keras.Input((latent_dim,), name="noise")
    conditions = keras.Input((condition_width,), name="encoded_conditions")
    x = layers.Concatenate()([noise, conditions])
    for i, units in enumerate(hidden):
        x = layers.Dense(units, name=f"dense_{i}")(x)
        x = layers.LeakyReLU(0.2)(x)
    if output_units is not None:
        x = layers.Dense(int(output_units), dtype="float32", name="output_dense")(x)
        return keras.Model([noise, conditions], x, name=name)
    x = layers.Dense(math.prod(sample_shape), name="output_dense")(x)
    x = layers.Activation(output_activation, dtype="float32", name="output_activation")(x)
    x = layers.Reshape(tuple(sample_shape), dtype="float32")(x)
    return keras.Model([noise, conditions], x, name=name)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class EnergyShareHead(keras.layers.Layer):
    """Physical shower = total energy x energy fractions, so energy is conserved by construction.

    The generator emits ``n_cells`` logits and one response number rho; with E the physical
    condition ``energy_index`` (incident or deposited energy),

        sum_E = E exp(log_response + s tanh(rho / s)),   cell_i = sum_E softmax(logits)_i,

    then cells below the readout ``threshold`` are zeroed and the others rescaled to keep the
    sum. ``log_response`` is the mean log of
    sum_E / E in the training data (0 for a total-absorption ECAL conditioned on its deposit,
    the sampling fraction in MIP per GeV for SiW); ``response_spread`` s bounds how far one
    event's response may stray from it (a few times the spread seen in the training data: a
    calorimeter's response is bounded, and a critic only weakly notices a few-percent error
    in one number among thousands of cells). With ``scattered_scale`` > 0 the generator also
    emits one number s_i per cell, and cell i gets an extra deposit scattered_scale relu(s_i)
    (read out above the threshold, its energy taken from sum_E): isolated hits far from the
    core, such as nuclear fragments and noise, which a softmax over the cells spreads thinly
    instead of placing. Factorizing the shower into its energy and
    its normalized shape is how CaloFlow (C. Krause, D. Shih, arXiv:2106.05285) and
    FastCaloGAN's energy fractions (ATLAS, Comput. Softw. Big Sci. 6 (2022) 7) keep the energy
    response exact while the network learns the shape.
    """

    def __init__(self, sample_shape, energy_index=0, log_response=0.0, threshold=0.0,
                 response_spread=3.0, scattered_scale=0.0, **kwargs):
        super().__init__(**kwargs)
        self.sample_shape = tuple(int(d) for d in sample_shape)
        self.energy_index = int(energy_index)
        self.log_response = float(log_response)
        self.threshold = float(threshold)
        self.response_spread = float(response_spread)
        self.scattered_scale = float(scattered_scale)

    @property
    def input_units(self):
        cells = math.prod(self.sample_shape)
        return cells + 1 + (cells if self.scattered_scale else 0)

    def call(self, inputs):
        raw, conditions = inputs
        raw = ops.cast(raw, "float32")
        cells = math.prod(self.sample_shape)
        energy = ops.cast(conditions[:, self.energy_index:self.energy_index + 1], "float32")
        spread = self.response_spread
        rho = spread * ops.tanh(raw[:, cells:cells + 1] / spread)
        total = energy * ops.exp(self.log_response + rho)
        deposits = 0.0
        if self.scattered_scale:
            deposits = self.scattered_scale * ops.relu(raw[:, cells + 1:])
            deposits = deposits * ops.cast(deposits >= self.threshold, "float32")
            total = ops.relu(total - ops.sum(deposits, axis=-1, keepdims=True))
        shares = ops.softmax(raw[:, :cells], axis=-1)
        # Cells below the readout threshold read zero; the energy they would have held goes to
        # the cells that are read out, so the event's sum stays total (a full-absorption ECAL
        # conditioned on what it measured; its threshold losses are in log_response).
        shares = shares * ops.cast(total * shares >= self.threshold, "float32")
        shares = shares / ops.maximum(ops.sum(shares, axis=-1, keepdims=True), 1e-12)
        return ops.reshape(total * shares + deposits, (-1,) + self.sample_shape)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0],) + self.sample_shape

    def get_config(self):
        return {**super().get_config(), "sample_shape": list(self.sample_shape),
                "energy_index": self.energy_index, "log_response": self.log_response,
                "threshold": self.threshold, "response_spread": self.response_spread,
                "scattered_scale": self.scattered_scale}



@keras.saving.register_keras_serializable(package=_PACKAGE)
class SoftClip(keras.layers.Layer):
    """y = bound * tanh(x / bound): a generator output that stays inside (-bound, bound).

    A :class:`~ddsim_gan.data.preprocessing.QuantileTransform` clamps its Gaussian units at
    ``|y| <= Phi^-1(1 - epsilon)`` (3.72 by default); a generator whose linear output wanders
    beyond the clamp gets no gradient back through the critic's physical round trip and stays
    there. Squashing the output into the invertible range keeps every value trainable, and is the
    identity to within 1 % for ``|x| < bound / 6``.
    """

    def __init__(self, bound=3.7, **kwargs):
        super().__init__(**kwargs)
        self.bound = float(bound)

    def call(self, x):
        return self.bound * ops.tanh(x / self.bound)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "bound": self.bound}


@critic_precision
def dense_critic(sample_shape, condition_width, hidden=(512, 256), features=None,
                 name="critic"):
    """``[normalized sample, encoded conditions]`` -> score (float32, no activation).

    No batch normalization: the gradient penalty is defined per event (arXiv:1704.00028, sec. 4).
    ``features`` (e.g. :class:`ShowerFeatures`, or a list of such layers) adds physics summaries
    next to the raw cells.
    """
    sample = keras.Input(tuple(sample_shape), name="sample")
    conditions = keras.Input((condition_width,), name="encoded_conditions")
    pieces = [layers.Flatten()(sample), conditions]
    for feature in (features if isinstance(features, (list, tuple)) else [features]):
        if feature is not None:
            pieces.append(feature(sample))
    x = layers.Concatenate()(pieces)
    for i, units in enumerate(hidden):
        x = layers.Dense(units, name=f"dense_{i}")(x)
        x = layers.LeakyReLU(0.2)(x)
    score = layers.Dense(1, dtype="float32", name="score")(x)
    return keras.Model([sample, conditions], score, name=name)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SeedHitFeatures(keras.layers.Layer):
    """Seed 003's hits, per layer, as critic features: a hit is a cell above ``fraction`` of the
    hottest cell of its event (5 %).

    With y the normalized cells (the :class:`~ddsim_gan.data.preprocessing.LogScale` of
    ``scale``, ``norm``), the hit cut of an event is c = log1p(fraction E_max / scale) / norm,
    E_max = scale expm1(norm max(y)); a cell's soft hit is sigmoid((y - c) / temperature), and per
    layer the features are

        log1p(sum of soft hits in the layer) / log1p(cells per layer),
        sigmoid((max of the layer's y - c) / temperature)   (a soft "the layer is hit"),

    so the critic sees the seed's nhits per layer and the per-layer occupancy (seed 003's 2D
    WGAN never hit layer 1) directly, as CaloGAN's critic sees energy sums (M. Paganini et al.,
    arXiv:1705.02355). Taken in normalized units, like :class:`ShowerFeatures`' soft count, so
    the slopes stay bounded for the gradient penalty. ``temperature`` is in normalized units
    (0.02 is about 1 MIP near the cut for a SiW shower).
    """

    def __init__(self, scale, norm, layer_axis=0, fraction=0.05, temperature=0.02, **kwargs):
        kwargs.setdefault("dtype", "float32")      # computed in float32 (critic_precision)
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.norm = float(norm)
        self.layer_axis = int(layer_axis)
        self.fraction = float(fraction)
        self.temperature = float(temperature)

    def call(self, normalized):
        y = ops.cast(normalized, "float32")
        rank = len(y.shape)
        layer = self.layer_axis + 1
        order = [0, layer] + [a for a in range(1, rank) if a != layer]
        per_layer = ops.reshape(ops.transpose(y, order), (ops.shape(y)[0], y.shape[layer], -1))
        peak = ops.max(ops.reshape(y, (ops.shape(y)[0], -1)), axis=1)
        peak_energy = self.scale * ops.expm1(peak * self.norm)
        cut = (ops.log1p(self.fraction * peak_energy / self.scale) / self.norm)[:, None]
        soft = ops.sigmoid((per_layer - cut[:, :, None]) / self.temperature)
        count = ops.log1p(ops.sum(soft, axis=2)) / math.log1p(per_layer.shape[2])
        hit = ops.sigmoid((ops.max(per_layer, axis=2) - cut) / self.temperature)
        return ops.concatenate([count, hit], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2 * input_shape[self.layer_axis + 1])

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "norm": self.norm,
                "layer_axis": self.layer_axis, "fraction": self.fraction,
                "temperature": self.temperature}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ImageMomentFeatures(keras.layers.Layer):
    """The Gaussian moments of a 2D image ``[a, b]`` as critic features (TPC-FastSim,
    A. Maevskiy et al., Eur. Phys. J. C 81 (2021) 599, judges its pad-response GAN by them):
    the charge-weighted mean and width along each axis, their correlation, and the log total.

    Cells are taken back to physical units through the
    :class:`~ddsim_gan.data.preprocessing.LogScale` (``scale``, ``norm``) and weighted by their
    value; coordinates are in cells, centred on the image. Outputs, per event: mean_a / n_a,
    mean_b / n_b, width_a / n_a, width_b / n_b (times 4), the correlation
    cov_ab / (width_a width_b), and log1p(total / scale) / norm.

    The weights are value / (total + ``scale``) and the widths sqrt(var + 0.1^2): for real
    clusters (totals of hundreds of ``scale`` units, widths from half a cell) that changes them
    by at most 2 %, but an empty or one-cell image (what an untrained generator emits) keeps
    finite slopes. With
    total + 1e-6 the critic's input gradient reached 4.5e11 there: beyond float16's range at
    any loss scale, and a cliff that the gradient penalty cannot smooth.
    """

    def __init__(self, scale, norm, **kwargs):
        kwargs.setdefault("dtype", "float32")      # computed in float32 (critic_precision)
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.norm = float(norm)

    def call(self, normalized):
        energy = self.scale * ops.expm1(ops.cast(normalized, "float32") * self.norm)
        n_a, n_b = energy.shape[1], energy.shape[2]
        total = ops.sum(energy, axis=(1, 2))
        safe = total + self.scale
        ca = ops.arange(n_a, dtype="float32") - (n_a - 1) / 2.0
        cb = ops.arange(n_b, dtype="float32") - (n_b - 1) / 2.0
        pa, pb = ops.sum(energy, axis=2), ops.sum(energy, axis=1)
        mean_a = ops.sum(pa * ca, axis=1) / safe
        mean_b = ops.sum(pb * cb, axis=1) / safe
        var_a = ops.sum(pa * ops.square(ca[None, :] - mean_a[:, None]), axis=1) / safe
        var_b = ops.sum(pb * ops.square(cb[None, :] - mean_b[:, None]), axis=1) / safe
        da = ca[None, :, None] - mean_a[:, None, None]
        db = cb[None, None, :] - mean_b[:, None, None]
        cov = ops.sum(energy * da * db, axis=(1, 2)) / safe
        width_a, width_b = ops.sqrt(var_a + 0.01), ops.sqrt(var_b + 0.01)
        return ops.stack([mean_a / n_a, mean_b / n_b, 4.0 * width_a / n_a, 4.0 * width_b / n_b,
                          cov / (width_a * width_b), ops.log1p(total / self.scale) / self.norm],
                         axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 6)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "norm": self.norm}
