"""Conditional WGAN-GPs for layered calorimeters with sparse cells (seed 003, SiW-ECAL), dense or
3D convolutional, sharing one output design.

Generator: ``[noise, encoded conditions] -> prod(shape) + 1`` units for an
:class:`~ddsim_gan.models.networks.EnergyShareHead` (sum_E = E x bounded response, cells = sum_E
x softmax(logits), cells under the readout threshold zeroed), with three additions:

* **per-cell noise** (``cell_noise=True``): the latent vector is ``latent_dim`` numbers for the
  network plus one standard normal per cell, added to that cell's logit with a learned per-cell
  scale (:class:`CellNoise`). A softmax of noisy logits gives each cell an independent
  log-normal fluctuation, the analogue of the sampling (Landau, crossing-count) fluctuations of
  a silicon cell, which a network fed 64 latent numbers cannot produce for thousands of cells;
  injecting noise per output unit is StyleGAN's answer to the same problem (T. Karras et al.,
  arXiv:1812.04948, sec. 3.2). The serving signature is unchanged: it draws ``latent_dim``
  normals (now 64 + cells) from the seed;
* **conditions next to the output**: the output layer sees the encoded conditions beside the
  last hidden layer, and starts where the data is: per category of every categorical condition
  (e- / pi-) the logits start at the log of that category's mean shower and the response unit
  at that category's mean log(sum_E / E) (:func:`start_at_category_means`), so the untrained
  generator already draws each species' average shower with its energy;
* (optional) a **per-layer sharpness** of the cells' softmax (:class:`SharpenedCellNoise`,
  ``layer_sharpness="data"`` or ``"learned"``), so a MIP crossing can put its energy in one
  cell, set per category and code from the data (and held there, or trained on from there);
* (optional) a **discrete latent code** (:class:`DiscreteLatent`, ``discrete_latent=K``) for
  species that are a mixture of populations (pions: tracks and showers);
* (3D variant) **3D convolutions** between the dense trunk and the logits
  (:func:`conv3d_logits`).

Critics: :func:`~ddsim_gan.models.networks.dense_critic` (cells flattened) or
:func:`conv3d_critic`, both with physics features beside the cells.

The 3D variant (seed 003's "IDEA #3": ConvTranspose3D and Conv3D) upsamples laterally with
``Conv3DTranspose`` (kernel (3, 4, 4), strides (1, 2, 2); the default, the seed's choice) or with
``UpSampling3D`` + 3x3x3 ``Conv3D`` (``upsampling="resize"``, no checkerboard pattern).
Measured with TensorFlow 2.21 on this 2-core CPU (SiW size, batch 128, critic and gradient
penalty included, another training running):

* both build and train; issue 7's ``std::bad_alloc`` while building a plain Conv3DTranspose
  generator is not reproduced with these layers;
* without XLA a train step takes 1.8 s (transpose) or 3.5 s (resize), against 1.0 s for the
  dense model (with XLA); **with XLA (``jit_compile=True``) the resize variant's step takes
  77 s** (first step 88 s): XLA:CPU has no fast path for 3D convolutions and their second
  derivatives (the gradient penalty). Train the 3D variant with ``jit_compile=False`` (the SiW
  recipe does). Grappler then logs a harmless ``remapper failed: INVALID_ARGUMENT: Mutation::
  Apply error`` for the transpose variant's critic gradient (the step runs and is correct).

Keras 3 layers and ``keras.ops`` only, as every network of the package.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

from ..data.preprocessing import ConditionEncoder, LogScale
from . import networks
from .cell_noise import CellNoise, SharpenedCellNoise, fit_layer_sharpness

_PACKAGE = "ddsim_gan"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NoiseSplit(keras.layers.Layer):
    """``[n, k + b m]`` -> ``[n, k]``, then ``b`` blocks ``[n, m]``: the network's latent
    numbers, then the per-cell noise blocks (``sizes`` = (k, m, m, ...))."""

    def __init__(self, sizes, **kwargs):
        super().__init__(**kwargs)
        self.sizes = [int(k) for k in (sizes if np.ndim(sizes) else [sizes])]

    def call(self, noise):
        edges = np.cumsum([0] + self.sizes)
        return tuple(noise[:, a:b] for a, b in zip(edges[:-1], edges[1:]))

    def compute_output_shape(self, input_shape):
        return tuple((input_shape[0], k) for k in self.sizes)

    def get_config(self):
        return {**super().get_config(), "sizes": self.sizes}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DiscreteLatent(keras.layers.Layer):
    """The first latent normal z_0 as a one-hot code of ``components`` equally likely values,
    k = floor(K Phi(z_0)) (Phi the normal CDF): a discrete latent variable drawn from the
    same noise vector, so the serving signature and its seed are unchanged.

    A generator that is continuous in a normal latent turns it into two separated populations
    only through a steep fold it rarely learns: 10 GeV pions in the SiW-ECAL are 55 % tracks
    (sum_E 16-24 MIP) and 45 % showers (up to 400 MIP), and the continuous generator drew
    every pion at 77-159 MIP (2026-12-05). Given K codes, each with its own weights into the
    trunk and the output, the network can assign codes to populations (mixture weights in
    steps of 1/K, refined by the continuous latent); the idea of a discrete latent code beside
    the continuous one is InfoGAN's (X. Chen et al., arXiv:1606.03657), without its
    mutual-information term. Measured on the SiW pions with K = 8 at the full preset, from
    random weights, the network did not use it: one population again, 74-162 MIP
    (docs/siw_ecal_wgangp.md). The generator now crosses the code with the conditions
    (:class:`CodeConditionCross`) and starts each (category, code) at one slice of that
    category's events (:func:`start_at_category_means`), so it starts as a mixture; with K = 8
    the trained pions stay two populations (50 % below 40 MIP against 55 %, FPD 8.7 -> 4.4;
    2.7 with the per-layer penalties taken per population, the shipped SiW model), though the
    SiW occupancy bars are not all met (docs/siw_ecal_wgangp.md).
    """

    def __init__(self, components: int, **kwargs):
        super().__init__(**kwargs)
        if int(components) < 2:
            raise ValueError(f"DiscreteLatent: components must be at least 2, got {components}")
        self.components = int(components)

    def call(self, z):
        uniform = 0.5 * (1.0 + ops.erf(ops.cast(z[:, 0], "float32") / math.sqrt(2.0)))
        code = ops.clip(ops.floor(uniform * self.components), 0, self.components - 1)
        return ops.one_hot(ops.cast(code, "int32"), self.components, dtype="float32")

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.components)

    def get_config(self):
        return {**super().get_config(), "components": self.components}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CodeConditionCross(keras.layers.Layer):
    """``[code [n, K], encoded conditions [n, C]] -> [n, K C]``, column ``k C + j`` = code_k x
    condition_j: an output weight per (code, condition), so code k can mean one population for
    the pions and another for the electrons."""

    def call(self, inputs):
        code, conditions = inputs
        crossed = code[:, :, None] * conditions[:, None, :]
        return ops.reshape(crossed, (-1, code.shape[-1] * conditions.shape[-1]))

    def compute_output_shape(self, input_shapes):
        (n, k), (_, c) = input_shapes
        return (n, k * c)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CellBias(keras.layers.Layer):
    """x + b with one trainable bias per input unit (the per-cell offset of the logits)."""

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(int(input_shape[-1]),), initializer="zeros",
                                    name="bias")

    def call(self, x):
        return x + ops.cast(self.bias, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


def read_out(values, threshold, band=0.0):
    """The readout threshold: cells below ``threshold`` read zero. With ``band`` b > 0 the
    gradient passes straight through (as if there were no cut) for cells in
    [(1 - b) threshold, threshold): the hard cut alone lets the gradient remove a hit, never
    bring one back (a straight-through estimator; Bengio, Leonard and Courville,
    arXiv:1308.3432). The forward value is the hard cut either way."""
    read = ops.where(values >= threshold, values, 0.0)
    if band <= 0:
        return read
    in_band = ops.logical_and(values >= threshold * (1.0 - band), values < threshold)
    return read + ops.cast(in_band, "float32") * (values - ops.stop_gradient(values))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NoisyEnergyShareHead(networks.EnergyShareHead):
    """:class:`~ddsim_gan.models.networks.EnergyShareHead` plus the readout's electronic noise:

        cell_i = sum_E softmax(logits)_i + sigma_l(i) eta_i,  zeroed below the threshold,

    with eta a per-cell standard normal that the generator passes through after the logits and
    the response (input units: cells + 1 + cells) and sigma the detector's nominal noise level
    (as measured in pedestal runs; a fixed weight of the head), one per entry of
    ``noise_sigma`` (broadcast over the sample: one per layer, shape (layers, 1, 1), or one for
    all cells). Isolated noise hits far from the
    shower (about one per LHCb event, a few per hundred SiW events) move the energy widths and
    hit counts; a softmax cannot produce them from noise-free cells, because cells below the
    threshold get no gradient. Noise is added before the threshold, as in the detector.
    ``threshold_band`` > 0 passes the gradient through the threshold for cells just below it
    (:func:`read_out`): a track crossing a layer just under the cut can then be pulled back up.
    """

    def __init__(self, sample_shape, energy_index=0, log_response=0.0, threshold=0.0,
                 response_spread=3.0, noise_sigma=(1.0,), threshold_band=0.0, **kwargs):
        super().__init__(sample_shape, energy_index, log_response, threshold, response_spread,
                         **kwargs)
        self.threshold_band = float(threshold_band)
        self.noise_sigma = np.asarray(noise_sigma, np.float32).tolist()
        shape = np.shape(self.noise_sigma)
        self.log_noise = self.add_weight(
            shape=shape, name="log_noise", trainable=False,
            initializer=keras.initializers.Constant(np.log(np.asarray(noise_sigma, np.float32))))

    @property
    def input_units(self):
        return 2 * math.prod(self.sample_shape) + 1

    def call(self, inputs):
        raw, conditions = inputs
        raw = ops.cast(raw, "float32")
        cells = math.prod(self.sample_shape)
        energy = ops.cast(conditions[:, self.energy_index:self.energy_index + 1], "float32")
        spread = self.response_spread
        rho = spread * ops.tanh(raw[:, cells:cells + 1] / spread)
        total = energy * ops.exp(self.log_response + rho)
        shower = ops.reshape(total * ops.softmax(raw[:, :cells], axis=-1),
                             (-1,) + self.sample_shape)
        eta = ops.reshape(raw[:, cells + 1:], (-1,) + self.sample_shape)
        values = shower + ops.exp(ops.cast(self.log_noise, "float32")) * eta
        return read_out(values, self.threshold, self.threshold_band)

    def get_config(self):
        return {**super().get_config(), "noise_sigma": self.noise_sigma,
                "threshold_band": self.threshold_band}


def conv3d_logits(trunk, sample_shape, channels=(16, 8), upsampling="transpose"):
    """Per-cell logits ``[n, prod(shape)]`` from a dense trunk through 3D convolutions:
    Dense -> (L, X/4, Y/4, c0) -> 2 lateral x2 upsamplings (Conv3DTranspose or UpSampling3D +
    Conv3D) -> Conv3D 1x1x1 -> flatten -> per-cell bias."""
    if upsampling not in ("resize", "transpose"):
        raise ValueError(f"upsampling must be 'resize' or 'transpose', got {upsampling!r}")
    depth, nx, ny = (int(d) for d in sample_shape)
    if nx % 4 or ny % 4:
        raise ValueError(f"conv3d_logits: lateral sizes {nx} x {ny} must be divisible by 4")
    c0 = int(channels[0])
    x = layers.Dense(depth * (nx // 4) * (ny // 4) * c0, name="dense_seed")(trunk)
    x = layers.LeakyReLU(0.2)(x)
    x = layers.Reshape((depth, nx // 4, ny // 4, c0))(x)
    for i, width in enumerate(channels):
        if upsampling == "resize":
            x = layers.UpSampling3D((1, 2, 2))(x)
            x = layers.Conv3D(int(width), 3, padding="same", name=f"conv_{i}")(x)
        else:
            x = layers.Conv3DTranspose(int(width), (3, 4, 4), strides=(1, 2, 2), padding="same",
                                       name=f"conv_{i}")(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Conv3D(1, 1, dtype="float32", name="conv_out")(x)
    return CellBias(dtype="float32", name="cell_bias")(layers.Flatten(dtype="float32")(x))


def cell_generator(latent_dim, condition_width, sample_shape, *, hidden=(256, 512),
                   cell_noise=True, readout_noise=False, architecture="dense", channels=(16, 8),
                   upsampling="transpose", discrete_latent=0, layer_sharpness=False,
                   name="generator"):
    """``[noise (latent_dim [+ cells] [+ cells]), encoded conditions]`` -> ``cells + 1``
    float32 units (logits and the response), the input of an ``EnergyShareHead`` (module
    docstring), followed with ``readout_noise`` by ``cells`` standard normals passed through
    for a :class:`NoisyEnergyShareHead`.

    ``architecture`` "dense": the logits and the response come from one Dense layer on
    [last hidden layer, conditions] (named ``output_dense``); "conv3d": the logits come from
    :func:`conv3d_logits` on the last hidden layer, the response from a Dense on
    [last hidden layer, conditions] (``response``), the categorical starts go into the
    ``cell_bias`` then only through the conditions' path of ``response``.

    ``discrete_latent`` K > 1 adds a :class:`DiscreteLatent` code of K values (from the first
    latent normal) to the trunk's input, and beside the conditions at the output the code and
    its :class:`CodeConditionCross` with the conditions (``[hidden, code, cross, conditions]``).

    ``layer_sharpness`` (needs ``cell_noise``): a Dense layer ``sharpness`` on the same input as
    the output emits per layer a log sharpness and a log noise gain for
    :class:`SharpenedCellNoise` (zero kernel: the untrained generator is the one without, until
    :func:`start_at_category_means` starts them per category and code).
    """
    if layer_sharpness and not cell_noise:
        raise ValueError("cell_generator: layer_sharpness needs cell_noise")
    cells = math.prod(sample_shape)
    sizes = [latent_dim] + [cells] * (int(cell_noise) + int(readout_noise))
    noise = keras.Input((sum(sizes),), name="noise")
    conditions = keras.Input((condition_width,), name="encoded_conditions")
    blocks = list(NoiseSplit(sizes, name="noise_split")(noise)) if len(sizes) > 1 else [noise]
    z = blocks.pop(0)
    per_cell = blocks.pop(0) if cell_noise else None
    readout = blocks.pop(0) if readout_noise else None
    # the conditions stay last at the output: start_at_category_means finds them there
    code = [DiscreteLatent(discrete_latent, name="discrete_latent")(z)] if discrete_latent else []
    x = layers.Concatenate()([z, *code, conditions])
    for i, units in enumerate(hidden):
        x = layers.LeakyReLU(0.2)(layers.Dense(int(units), name=f"dense_{i}")(x))
    if code:
        code.append(CodeConditionCross(name="code_cross")([code[0], conditions]))
    with_conditions = layers.Concatenate()([x, *code, conditions])
    if architecture == "dense":
        out = layers.Dense(cells + 1, dtype="float32", name="output_dense")(with_conditions)
    elif architecture == "conv3d":
        logits = conv3d_logits(x, sample_shape, channels, upsampling)
        response = layers.Dense(1, dtype="float32", name="response")(with_conditions)
        out = layers.Concatenate(dtype="float32", name="head_input")([logits, response])
    else:
        raise ValueError(f"architecture must be 'dense' or 'conv3d', got {architecture!r}")
    if layer_sharpness:
        controls = layers.Dense(2 * int(sample_shape[0]), dtype="float32", name="sharpness",
                                kernel_initializer="zeros")(with_conditions)
        out = SharpenedCellNoise(sample_shape, dtype="float32", name="cell_noise")(
            [out, per_cell, controls])
    elif cell_noise:
        out = CellNoise(dtype="float32", name="cell_noise")([out, per_cell])
    if readout_noise:                    # passed through to a NoisyEnergyShareHead
        out = layers.Concatenate(dtype="float32", name="with_readout_noise")([out, readout])
    return keras.Model([noise, conditions], out, name=name)


def start_at_category_means(generator, encoder, detector, conditions, samples,
                            energy_condition, log_response, readout_noise=0.0,
                            fit_events=512, seed=0, head=None) -> None:
    """Start the generator at the mean shower and mean response of every category.

    For a components generator (:func:`~ddsim_gan.models.components.component_generator`,
    its ``head`` given) "the mean shower" is every component's longitudinal profile: the
    categories' and codes' rows start the components' layer logits at their mean layer
    fractions (the bias stays at :func:`~ddsim_gan.models.components.initial_parameters`).

    Bias of the logits: log of the mean energy fraction per cell (all events). For each
    categorical condition, the weights from its one-hot input to the output: per category, the
    log of that category's mean fractions minus the overall ones (logits, dense architecture
    only) and its mean log(sum_E / E) minus ``log_response`` (response unit). The one-hot inputs
    are the last ``condition_width`` rows of the output kernel (the conditions are concatenated
    after the hidden layer).

    With a discrete latent code of K values (:class:`DiscreteLatent`), each category's events
    are cut into K equal-population slices of sum_E, and the rows of (code k, category) of the
    :class:`CodeConditionCross` start at slice k's mean fractions and mean response relative to
    the category's. The K codes being equally likely, the untrained generator draws the
    category's sum_E distribution as a K-step mixture (the SiW pions start with tracks and
    showers), which training then refines.

    With :class:`SharpenedCellNoise` (a ``sharpness`` layer), the same rows of that layer start
    at :func:`fit_layer_sharpness` of the category (and of each slice, relative to its
    category) on up to ``fit_events`` of its events, ``readout_noise`` being the head's noise
    (one value or one per layer)."""
    flat = np.asarray(samples, np.float64).reshape(len(samples), -1)
    totals = flat.sum(axis=1)
    fractions = flat / np.maximum(totals, 1e-12)[:, None]
    index = detector.condition_names.index(energy_condition)
    energy = np.asarray(conditions, np.float64)[:, index]

    names = [layer.name for layer in generator.layers]
    components = "component_params" in names
    if components:
        if head is None:
            raise ValueError("start_at_category_means: a components generator needs its head")
        from .components import hottest_cell_shares, layer_fractions, layer_logit_parameters

        per_layer = layer_fractions(head, samples)
        track = hottest_cell_shares(head, samples)

    def log_mean(rows):
        """The output columns but the response that start ``rows``' mean shower: per cell the
        centred log of its mean energy fraction, or every component's layer logits."""
        if components:
            return layer_logit_parameters(head, per_layer[rows].mean(axis=0),
                                          track[rows].mean())[:-1]
        mean = fractions[rows].mean(axis=0)
        start = np.log(mean + 1e-6 * mean.max())
        return start - start.mean()

    def log_ratio(rows):
        useful = rows & (totals > 0) & (energy > 0)
        return float(np.log(totals[useful] / energy[useful]).mean()) if useful.any() else 0.0

    everything = np.ones(len(flat), bool)
    base = log_mean(everything)
    dense = "output_dense" in names or components
    if dense:
        out = generator.get_layer("component_params" if components else "output_dense")
        if not components:               # the components' bias is initial_parameters'
            out.bias.assign(np.append(base, 0.0).astype("float32"))
        kernel = np.asarray(out.kernel)
        response_column = -1
    else:
        generator.get_layer("cell_bias").bias.assign(base.astype("float32"))
        out = generator.get_layer("response")
        kernel = np.asarray(out.kernel)
        response_column = 0
    width = encoder.output_width
    first = kernel.shape[0] - width            # conditions come after the last hidden layer
    codes = generator.get_layer("discrete_latent").components if "code_cross" in names else 0

    def slices_by_total(rows, k_codes):
        """``k_codes`` boolean masks: ``rows`` cut into equal-population slices of sum_E."""
        members = np.flatnonzero(rows)
        order = members[np.argsort(totals[members], kind="stable")]
        for chosen in np.array_split(order, k_codes):
            part = np.zeros(len(flat), bool)
            part[chosen] = True
            yield part

    sharpness = generator.get_layer("sharpness") if "sharpness" in names else None
    if sharpness is not None:
        sharp_kernel = np.asarray(sharpness.kernel)
        n_layers = int(detector.sample_shape[0])
        cells_by_layer = np.asarray(samples, np.float64).reshape(len(samples), n_layers, -1)
        noise = np.broadcast_to(np.ravel(np.asarray(readout_noise, np.float64)), (n_layers,))
        rng = np.random.default_rng(seed)

    def controls(rows):
        chosen = np.flatnonzero(rows)
        if len(chosen) > fit_events:
            chosen = rng.choice(chosen, fit_events, replace=False)
        cells = cells_by_layer[chosen]
        fitted = fit_layer_sharpness(log_mean(rows).reshape(n_layers, -1), cells.sum(axis=2),
                                     cells, detector.threshold, noise, rng)
        return np.concatenate(fitted)

    column = 0
    for c, condition in enumerate(detector.conditions):
        if not condition.is_categorical:
            column += 1
            continue
        for k in range(len(condition.labels)):
            rows = np.rint(np.asarray(conditions)[:, c]) == k
            row = first + column + k
            if rows.any():
                kernel[row, response_column] = log_ratio(rows) - log_response
                if dense:
                    kernel[row, :-1] = log_mean(rows) - base
                if sharpness is not None:
                    category_controls = controls(rows)
                    sharp_kernel[row] = category_controls
                for code, part in enumerate(slices_by_total(rows, codes) if codes else ()):
                    if not part.any():
                        continue
                    row = first - codes * width + code * width + column + k
                    kernel[row, response_column] = log_ratio(part) - log_ratio(rows)
                    if dense:
                        kernel[row, :-1] = log_mean(part) - log_mean(rows)
                    if sharpness is not None:
                        sharp_kernel[row] = controls(part) - category_controls
        column += len(condition.labels)
    out.kernel.assign(kernel.astype("float32"))
    if sharpness is not None:
        sharpness.kernel.assign(sharp_kernel.astype("float32"))


def _components_generator(detector, train_samples, encoder, latent_dim, hidden, energy_index,
                          log_response, response_spread, readout_noise, threshold_band,
                          discrete_latent, n_components):
    """A :func:`~ddsim_gan.models.components.component_generator` and its
    :class:`~ddsim_gan.models.components.ShowerComponentsHead` for a layered calorimeter: the
    learned response of :func:`cell_generator`'s head, the readout noise per layer; at the
    start the first component is the primary's track (one cell per layer, its share of the
    energy from the data per category and code: :func:`start_at_category_means`), the others
    deposit in spots of twice the threshold (for the SiW-ECAL one MIP: a silicon cell's
    energy comes in charged-particle crossings)."""
    from . import components

    layer_axis = detector.axes.index("layer") if "layer" in (detector.axes or ()) else 0
    noise = np.ravel(0.0 if readout_noise is None else readout_noise).astype(float)
    head = components.ShowerComponentsHead(    # it checks one noise value or one per layer
        detector.sample_shape, layer_axis, detector.cell_size, n_components, energy_index,
        log_response, detector.threshold, response_spread,
        float(noise[0]) if noise.size == 1 else noise, 0.0, threshold_band,
        name="energy_share", dtype="float32")
    generator = components.component_generator(latent_dim, encoder.output_width, head,
                                               hidden=hidden, discrete_latent=discrete_latent)
    generator.get_layer("component_params").bias.assign(
        components.initial_parameters(head, train_samples, spot_thresholds=2.0,
                                      track_component=True))
    return generator, head


@networks.critic_precision
def conv3d_critic(sample_shape, condition_width, *, channels=(8, 16, 32), hidden=256,
                  features=None, name="critic"):
    """``[normalized sample (layers, x, y), encoded conditions]`` -> score: strided Conv3D
    (lateral stride 2, depth stride 2 from the second block on), the physics ``features``
    (a layer or a list) beside the flattened maps, one dense layer. No normalization: the
    gradient penalty is per event."""
    sample = keras.Input(tuple(sample_shape), name="sample")
    conditions = keras.Input((condition_width,), name="encoded_conditions")
    x = layers.Reshape(tuple(sample_shape) + (1,))(sample)
    for i, width in enumerate(channels):
        strides = (1, 2, 2) if i == 0 else (2, 2, 2)
        x = layers.Conv3D(int(width), 3, strides=strides, padding="same", name=f"conv_{i}")(x)
        x = layers.LeakyReLU(0.2)(x)
    pieces = [layers.Flatten()(x), conditions]
    for feature in (features if isinstance(features, (list, tuple)) else [features]):
        if feature is not None:
            pieces.append(feature(sample))
    x = layers.Concatenate()(pieces)
    x = layers.LeakyReLU(0.2)(layers.Dense(int(hidden), name="dense_0")(x))
    score = layers.Dense(1, dtype="float32", name="score")(x)
    return keras.Model([sample, conditions], score, name=name)


def build_calorimeter_gan(detector, train_conditions, train_samples, *, energy_condition,
                          architecture="dense", cell_noise=True, latent_dim=64,
                          generator_hidden=(256, 512), critic_hidden=(256, 256),
                          generator_channels=(16, 8), critic_channels=(8, 16, 32),
                          upsampling="transpose", critic_steps=4, gradient_penalty=10.0,
                          log_scale=1.0, critic_features=(), extra_penalties=(),
                          readout_noise=None, threshold_band=0.0, discrete_latent=0,
                          layer_sharpness="none", n_components=3, seed=0):
    """A conditional WGAN-GP with an energy-sharing head for a layered calorimeter
    (module docstring): ``architecture`` "dense" or "conv3d" (generator and critic), or
    "components": ``n_components`` parametric showers rendered onto the cells
    (:mod:`~ddsim_gan.models.components`, whose narrow core puts a MIP crossing in one cell)
    with the dense critic.

    Preprocessing as :func:`~ddsim_gan.models.builders.build_conditional_gan` (``LogScale`` of
    the largest training cell, ``ConditionEncoder.for_detector``); the critic sees
    :class:`~ddsim_gan.models.networks.ShowerFeatures` and ``critic_features`` (layers, or
    functions ``(log_scale, norm) -> layer``); ``extra_penalties`` are added to the gradient
    penalty. ``critic_hidden`` is a tuple for the dense critic, its first entry is the dense
    width of the 3D one. ``readout_noise`` (the detector's nominal noise, one value or an array
    broadcast over the sample, e.g. per layer) makes the head a :class:`NoisyEnergyShareHead`,
    with ``threshold_band`` (its straight-through band below the readout threshold).
    ``discrete_latent`` K > 1 gives the generator a :class:`DiscreteLatent` code of K values;
    ``layer_sharpness`` "data" or "learned" gives its cell noise a per-layer sharpness
    (:class:`SharpenedCellNoise`) started from the data, held there ("data": the layer
    ``sharpness`` is not trained) or trained on ("learned"); "none" (or False) leaves it out.
    """
    sharpness_modes = ("none", "data", "learned")
    layer_sharpness = "none" if layer_sharpness in (False, None) else layer_sharpness
    if layer_sharpness not in sharpness_modes:
        raise ValueError(f"build_calorimeter_gan: layer_sharpness must be one of "
                         f"{sharpness_modes}, got {layer_sharpness!r}")
    from . import penalties as penalty_objects  # TensorFlow: imported when a GAN is built
    from .builders import fit_response
    from .gan import ConditionalGAN

    if architecture in ("conv3d", "components") and len(detector.sample_shape) != 3:
        raise ValueError(f"build_calorimeter_gan: detector {detector.name!r} has samples of "
                         f"shape {detector.sample_shape}; {architecture} needs (layers, x, y)")
    encoder = ConditionEncoder.for_detector(detector, name="condition_encoder", dtype="float32")
    encoder.adapt(train_conditions)
    norm = float(np.log1p(float(np.max(train_samples)) / log_scale))
    transform = LogScale(log_scale, norm, name="sample_transform", dtype="float32")
    mean, spread = fit_response(detector, train_conditions, train_samples, energy_condition)
    energy_index = detector.condition_names.index(energy_condition)
    if architecture == "components":
        if layer_sharpness != "none":
            raise ValueError("build_calorimeter_gan: the components generator has no cell "
                             "softmax to sharpen (layer_sharpness must be 'none')")
        generator, head = _components_generator(
            detector, train_samples, encoder, latent_dim, generator_hidden, energy_index, mean,
            spread, readout_noise, threshold_band, discrete_latent, n_components)
    elif readout_noise is None:
        head = networks.EnergyShareHead(detector.sample_shape, energy_index, mean,
                                        detector.threshold, response_spread=spread,
                                        name="energy_share")
    else:
        head = NoisyEnergyShareHead(detector.sample_shape, energy_index, mean,
                                    detector.threshold, response_spread=spread,
                                    noise_sigma=readout_noise, threshold_band=threshold_band,
                                    name="energy_share")
    if architecture != "components":
        generator = cell_generator(latent_dim, encoder.output_width, detector.sample_shape,
                                   hidden=generator_hidden, cell_noise=cell_noise,
                                   readout_noise=readout_noise is not None,
                                   architecture=architecture, channels=generator_channels,
                                   upsampling=upsampling, discrete_latent=discrete_latent,
                                   layer_sharpness=layer_sharpness != "none")
    start_at_category_means(generator, encoder, detector, train_conditions, train_samples,
                            energy_condition, mean,
                            readout_noise=0.0 if readout_noise is None else readout_noise,
                            seed=seed, head=head if architecture == "components" else None)
    if layer_sharpness == "data":
        generator.get_layer("sharpness").trainable = False
    features = [networks.ShowerFeatures.for_detector(detector, log_scale, norm)]
    features += [f if isinstance(f, keras.layers.Layer) else f(log_scale, norm)
                 for f in critic_features]
    hidden = tuple(critic_hidden) if np.ndim(critic_hidden) else (int(critic_hidden),)
    if architecture == "conv3d":        # the components generator keeps the dense critic
        critic = conv3d_critic(detector.sample_shape, encoder.output_width,
                               channels=critic_channels, hidden=hidden[0], features=features)
    else:
        critic = networks.dense_critic(detector.sample_shape, encoder.output_width,
                                       hidden=hidden, features=features)
    penalties = [penalty_objects.GradientPenalty(gradient_penalty), *extra_penalties]
    latent = generator.inputs[0].shape[-1]
    return ConditionalGAN(generator, critic, encoder, transform, latent,
                          threshold=detector.threshold, penalties=penalties,
                          critic_steps=critic_steps, seed=seed, output_head=head,
                          name=f"{detector.name}_{architecture}_gan")
