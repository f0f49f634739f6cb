"""A generator that draws a shower as a few parametric components rendered onto the cells.

A network fed a few dozen latent numbers and asked for thousands of cell logits spends its
training budget learning that a shower is a compact blob whose width and position change
smoothly from layer to layer. Here the network emits what a physicist would parameterize
(GFlash, G. Grindhammer and S. Peters, hep-ex/0001020): per event and per *component* (the recoil
electron, a bremsstrahlung photon, scattered fragments) its energy share, its longitudinal
profile over the layers and, in every layer, its transverse centre and core/tail radii. The head
(:class:`ShowerComponentsHead`) renders them onto the cell grid and adds the fluctuations that
make real cells sparse. The GAN then learns the *joint distribution* of those parameters given
the conditions, which is low-dimensional, while the rendering is exact arithmetic.

Transverse profile of one component in one layer: GFlash's radial density
f(r) = 2 r R^2 / (r^2 + R^2)^2 has the marginal density R^2 / (2 (x^2 + R^2)^(3/2)) along any
axis, whose CDF is 1/2 + x / (2 sqrt(x^2 + R^2)) (a scaled Student t with 2 degrees of freedom).
A cell's share is taken as the product of its x and y marginal integrals (separable; exact
marginals, hence exact centres and widths), for a core and a tail radius mixed with a fraction p.

Cell fluctuations: GFlash deposits energy in spots; a cell expecting mu of a component's
energy in spots of mean energy eps (learned per component and layer) receives
N ~ Poisson(lambda = mu / eps) spots, so it fires with probability p = 1 - exp(-lambda) and,
given it fired, holds about eps Gamma(k) with k = lambda / p (the mean number of spots given at
least one). One uniform u per cell decides both, by the inverse CDF of that mixture: the cell
fires if u < p, and 1 - u / p is the quantile of its energy, evaluated with the Wilson-Hilferty
approximation of the Gamma quantile (E. B. Wilson, M. M. Hilferty, PNAS 17 (1931) 684). A cell
that starts to fire starts from zero energy, so every cell is a continuous function of the
parameters and the critic's view of the hit multiplicity reaches lambda through the pathwise
gradient (no straight-through estimate: with one, the generator drifted to one hit per event
within 400 steps).
The deposits are rescaled to the event's energy (the ECAL measured what the shower left in it),
then read out: Gaussian noise of sigma^2 = sigma_noise^2 + c_pe x (electronics and
photo-statistics: the detector's nominal values, as measured in pedestal and calibration runs,
fixed weights of the head) and the readout threshold.

Keras layers and ``keras.ops`` only: the sampler loads under every Keras backend.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

from .calorimeter import CodeConditionCross, DiscreteLatent, NoiseSplit, read_out

_PACKAGE = "ddsim_gan"

#: Per component and layer: layer logit, centre (2), log core and tail radius, core logit,
#: log spot energy; with deflection, two more: the deflection along each transverse axis.
PARAMS_PER_LAYER = 7
LOG_RADIUS = (math.log(0.01), math.log(20.0))     # cells
LOG_SPOT = (math.log(1e-3), math.log(1e5))        # units of the threshold
#: Per fragment slot: firing logit, log median energy share, log-normal width, centre (2),
#: log spread of the centre, log radius; and per slot three normals: firing, centre jitter (2).
FRAGMENT_PARAMS = 7
FRAGMENT_NOISE = 3
LOG_FRAGMENT_SHARE = (math.log(1e-5), 0.0)        # of the event's energy
LOG_FRAGMENT_WIDTH = (math.log(0.05), math.log(3.0))
LOG_FRAGMENT_RADIUS = (math.log(0.01), math.log(0.5))  # cells: a fragment stays a fragment


def _cell_edges(n_cells: int, cell_size: float) -> np.ndarray:
    """Cell boundaries centred on zero, matching ``evaluation.observables`` coordinates."""
    return ((np.arange(n_cells + 1) - n_cells / 2.0) * cell_size).astype(np.float32)


def _t2_cell_shares(centre, radius, edges):
    """Share of a t2-marginal profile in each cell: ``[..., 1] -> [..., n_cells]``."""
    u = (edges - centre) / radius
    cdf = 0.5 * u / ops.sqrt(u * u + 1.0)
    return cdf[..., 1:] - cdf[..., :-1]


#: Chebyshev coefficients of erfc(x) = t exp(-x^2 + P(t)), t = 1 / (1 + x / 2), x >= 0, fractional
#: error below 1.2e-7 everywhere (W. H. Press et al., Numerical Recipes, 2nd ed., sec. 6.2).
_ERFC_COEFFICIENTS = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807,
                      -1.13520398, 1.48851587, -0.82215223, 0.17087277)


def normal_cdf_and_log(n):
    """Phi(n) and log Phi(n), both to float32 precision in the lower tail, where
    0.5 (1 + erf(n / sqrt 2)) keeps no digits (and the largest deposits come from small u).
    Lower tail from the erfc fit above, upper tail as 1 - it."""
    x = ops.abs(n) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.5 * x)
    poly = 0.0
    for coefficient in reversed(_ERFC_COEFFICIENTS):
        poly = coefficient + t * poly
    log_tail = math.log(0.5) + ops.log(t) - x * x + poly          # log Phi(-|n|)
    tail = ops.exp(log_tail)
    lower = n < 0
    upper = 1.0 - tail               # >= 0.5: its log needs no log1p (which ONNX lacks)
    return ops.where(lower, tail, upper), ops.where(lower, log_tail, ops.log(upper))


def _quantile_given_fired(p_fire, u, log_u):
    """The normal quantile of v = 1 - u / p_fire (where u < p_fire), by the logistic one of
    equal variance, sqrt(3) / pi logit(v), written without the cancellation in 1 - v: it
    goes to -inf as u reaches p_fire, so what starts to fire starts from nothing."""
    return (math.sqrt(3.0) / math.pi) * (ops.log(ops.maximum(p_fire - u, 1e-12)) - log_u)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ShowerComponentsHead(keras.layers.Layer):
    """``[raw, physical conditions] -> physical cells``: renders shower components.

    ``raw`` holds, in order: ``n_components`` energy-share logits; for each component and layer
    :data:`PARAMS_PER_LAYER` numbers (layer logit, centre x and y in cells, log core and tail
    radius in cells, core-fraction logit, log spot energy in units of the threshold, or of the
    sample unit without one); one
    response number rho (sum_E = E exp(log_response + s tanh(rho / s)) before the readout, as
    in :class:`~ddsim_gan.models.networks.EnergyShareHead`; with ``response_spread`` 0,
    sum_E = E exp(log_response) exactly: a condition that is the deposited energy); then two standard normals per cell
    (firing/energy quantile, readout noise). The sample layout is ``sample_shape`` with the
    layer axis at ``layer_axis`` and the two transverse axes in order.

    With ``deflection_energy`` > 0 (in sample units) each component and layer has two more
    numbers d_a, d_b, and its centre along each transverse axis is c + d E_d / E_c, where E_c is
    the component's energy (floored at E_d / 100): a charged particle bent by a magnetic field
    lands at a deflection proportional to 1 / p (for DarkSHINE's tracker magnet x = kappa / E,
    kappa = 120 GeV mm). The product that one dense layer would have to learn, "this
    component's position times its energy is a constant", is then one constant d, and a
    neutral component keeps d = 0.

    ``noise_sigma`` is one value for every cell or one per layer (the SiW-ECAL's thinner
    silicon layers are noisier).

    With ``fragments_per_layer`` S > 0 each layer also has S *fragment slots*, after rho in
    ``raw`` (:data:`FRAGMENT_PARAMS` numbers each), with three more normals per slot after the
    cells': isolated deposits of their own kind, as nuclear fragments leave them (tens to
    hundreds of MeV in one or two crystals, at any depth, rare). A slot fires with probability
    p = sigmoid(logit) and then holds the energy E m exp(w z), m its median share of the
    event's energy E and z the normal quantile of v = 1 - u / p (as for the cells: a slot that
    starts to fire starts from nothing, so p gets a pathwise gradient), at a centre drawn as
    c + s n per transverse axis (n a normal of the slot, the centre kept on the grid) with a
    t2 profile of a learned radius of at most half a cell (a slot with a wide profile, which a
    penalty on the deep layers' mean energy made of it, is a smooth component again).
    The smooth components reach the deep layers only through their tails, many small hits
    where the fragments make few large ones (docs/darkshine_nnls_cgan.md).
    """

    def __init__(self, sample_shape, layer_axis, cell_size, n_components=3, energy_index=0,
                 log_response=0.0, threshold=0.0, response_spread=0.1, noise_sigma=0.0,
                 photostat=0.0, threshold_band=0.0, deflection_energy=0.0,
                 fragments_per_layer=0, **kwargs):
        super().__init__(**kwargs)
        self.sample_shape = tuple(int(d) for d in sample_shape)
        self.layer_axis = int(layer_axis)
        self.cell_size = tuple(float(c) for c in cell_size)
        self.n_components = int(n_components)
        self.energy_index = int(energy_index)
        self.log_response = float(log_response)
        self.threshold = float(threshold)
        self.response_spread = float(response_spread)
        self.noise_sigma = (float(noise_sigma) if np.ndim(noise_sigma) == 0
                            else [float(v) for v in np.ravel(noise_sigma)])
        self.photostat = float(photostat)
        self.threshold_band = float(threshold_band)
        self.deflection_energy = float(deflection_energy)
        self.fragments_per_layer = int(fragments_per_layer)
        if self.fragments_per_layer < 0:
            raise ValueError(f"ShowerComponentsHead: fragments_per_layer = "
                             f"{fragments_per_layer}, expected >= 0")
        self.params_per_layer = PARAMS_PER_LAYER + (2 if self.deflection_energy > 0 else 0)
        self.transverse_axes = [a for a in range(len(self.sample_shape)) if a != self.layer_axis]
        if len(self.sample_shape) != 3:
            raise ValueError(f"ShowerComponentsHead: needs a 3D sample (layer and two "
                             f"transverse axes), got shape {self.sample_shape}")
        self.n_layers = self.sample_shape[self.layer_axis]
        self.n_cells = math.prod(self.sample_shape)
        self.spot_unit = self.threshold if self.threshold > 0 else 1.0
        noise = np.maximum(np.asarray(self.noise_sigma, np.float32), 1e-6)
        if noise.ndim and noise.size != self.n_layers:
            raise ValueError(f"ShowerComponentsHead: noise_sigma has {noise.size} values for "
                             f"{self.n_layers} layers")
        # broadcast over the sample layout: the layer axis keeps its values
        self.noise_shape = tuple(self.n_layers if noise.ndim and a == self.layer_axis else 1
                                 for a in range(3)) if noise.ndim else ()
        self.log_noise = self.add_weight(
            shape=self.noise_shape, name="log_noise", trainable=False,
            initializer=keras.initializers.Constant(np.log(noise).reshape(self.noise_shape)))
        self.log_photostat = self.add_weight(
            shape=(), name="log_photostat", trainable=False, initializer=keras.initializers.Constant(
                math.log(max(self.photostat, 1e-6))))

    @property
    def n_fragment_slots(self) -> int:
        return self.fragments_per_layer * self.n_layers

    @property
    def n_params(self) -> int:
        """Width of the parameter part of the generator output."""
        return (self.n_components * (1 + self.params_per_layer * self.n_layers) + 1
                + FRAGMENT_PARAMS * self.n_fragment_slots)

    @property
    def noise_units(self) -> int:
        """Normals after the parameters: two per cell, then three per fragment slot."""
        return 2 * self.n_cells + FRAGMENT_NOISE * self.n_fragment_slots

    @property
    def input_units(self) -> int:
        return self.n_params + self.noise_units

    def _unpack(self, raw):
        """Energy-share logits, per-layer parameters ``[N, k, L]`` each (a list), rho, the
        fragment slots' parameters (None without them) and the noise. One split, not a slice
        per piece: the gradient of each slice is a zero tensor as wide as ``raw`` (9 000
        columns with the noise), a tenth of the DarkSHINE train step."""
        k, n_layers = self.n_components, self.n_layers
        rho_end = k * (1 + self.params_per_layer * n_layers) + 1
        if self.n_fragment_slots:
            component_logits, per_layer, rho, fragments, noise = ops.split(
                raw, [k, rho_end - 1, rho_end, self.n_params], axis=1)
        else:
            (component_logits, per_layer, rho, noise), fragments = ops.split(
                raw, [k, rho_end - 1, rho_end], axis=1), None
        per_layer = ops.reshape(per_layer, (-1, k, n_layers, self.params_per_layer))
        per_layer = [ops.squeeze(q, -1)
                     for q in ops.split(per_layer, self.params_per_layer, axis=-1)]
        return component_logits, per_layer, rho, fragments, noise

    def expected(self, raw, conditions):
        """Expected energy and spot count per cell, ``[N, n_layers, a, b]`` each (layer first),
        and the event's total sum_E ``[N, 1]``."""
        return self._expected(*self._unpack(ops.cast(raw, "float32"))[:3], conditions)

    def _expected(self, component_logits, p, rho, conditions):
        energy = ops.cast(conditions[:, self.energy_index:self.energy_index + 1], "float32")
        spread = self.response_spread
        if spread > 0:
            total = energy * ops.exp(self.log_response + spread * ops.tanh(rho / spread))
        else:                       # the condition is what the shower deposited, exactly
            total = energy * math.exp(self.log_response)
        share = ops.softmax(component_logits, axis=-1)[:, :, None]             # [N, k, 1]
        if self.deflection_energy > 0:      # E_d / E_c per component: [N, k, 1, 1]
            inverse_energy = (self.deflection_energy / ops.maximum(
                share * total[:, :, None], 0.01 * self.deflection_energy))[..., None]
        longitudinal = ops.softmax(p[0], axis=-1) * share                  # [N, k, L]
        (a_axis, b_axis) = self.transverse_axes
        # Bounded where a runaway parameter would make inf / inf: centres within the image's
        # width of its middle, radii of 1/100 to 20 cells, spots of 1e-3 to 1e5 units.
        log_core, log_tail = (ops.clip(p[i][..., None], LOG_RADIUS[0], LOG_RADIUS[1])
                              for i in (3, 4))
        profiles = []
        for axis, column in ((a_axis, 1), (b_axis, 2)):
            size, n = self.cell_size[axis], self.sample_shape[axis]
            edges = ops.convert_to_tensor(_cell_edges(n, size))
            centre = p[column][..., None]
            if self.deflection_energy > 0:
                centre = centre + p[6 + column][..., None] * inverse_energy
            centre = ops.clip(centre, -float(n), float(n)) * size
            core = ops.exp(log_core) * size
            tail = ops.exp(log_tail) * size
            profiles.append((_t2_cell_shares(centre, core, edges),
                             _t2_cell_shares(centre, tail, edges)))
        (core_a, tail_a), (core_b, tail_b) = profiles
        core_fraction = ops.sigmoid(p[5])[..., None]                       # [N, k, L, 1]
        weight = total[:, :, None, None] * longitudinal[..., None]
        core, tail = weight * core_fraction, weight * (1.0 - core_fraction)
        spot = self.spot_unit * ops.exp(ops.clip(p[6][..., None], LOG_SPOT[0], LOG_SPOT[1]))

        right = ops.concatenate([core_b, tail_b], axis=1)                     # [N, 2k, L, b]

        def render(core_weight, tail_weight):
            """Sum over components of the separable core and tail profiles: [N, L, a, b].
            One contraction over (component, core|tail): with its gradient, 12 ms against
            31 ms for broadcast products and a sum at batch 256 on 2 CPU cores."""
            left = ops.concatenate([core_weight * core_a, tail_weight * tail_a], axis=1)
            return ops.einsum("nkla,nklb->nlab", left, right)

        return render(core, tail), render(core / spot, tail / spot), total

    def _fragment_deposits(self, fragments, noise, total):
        """The fragment slots' deposits, ``[N, L, a, b]`` (layer first)."""
        shape = (-1, self.fragments_per_layer, self.n_layers)
        f = [ops.squeeze(q, -1) for q in ops.split(
            ops.reshape(fragments, shape + (FRAGMENT_PARAMS,)), FRAGMENT_PARAMS, axis=-1)]
        fire_noise, jitter_a, jitter_b = (ops.reshape(q, shape)
                                          for q in ops.split(noise, FRAGMENT_NOISE, axis=1))
        u, log_u = normal_cdf_and_log(fire_noise)
        p_fire = ops.clip(ops.sigmoid(f[0]), 1e-6, 1.0 - 1e-6)
        fired = ops.cast(u < p_fire, "float32")
        z = _quantile_given_fired(p_fire, u, log_u)
        width = ops.exp(ops.clip(f[2], *LOG_FRAGMENT_WIDTH))
        log_share = ops.clip(f[1], *LOG_FRAGMENT_SHARE) + ops.minimum(width * z, 10.0)
        energy = fired * total[:, :, None] * ops.minimum(ops.exp(log_share), 1.0)  # [N, S, L]
        radius = ops.exp(ops.clip(f[6], *LOG_FRAGMENT_RADIUS))[..., None]
        spread = ops.exp(ops.clip(f[5], *LOG_RADIUS))
        profiles = []
        for axis, column, jitter in ((self.transverse_axes[0], 3, jitter_a),
                                     (self.transverse_axes[1], 4, jitter_b)):
            size, n = self.cell_size[axis], self.sample_shape[axis]
            # inside the grid: a slot off it would be a way to switch itself off unseen
            half = 0.5 * n
            centre = ops.clip(f[column] + spread * jitter, -half, half)[..., None]
            profiles.append(_t2_cell_shares(centre * size, radius * size,
                                            ops.convert_to_tensor(_cell_edges(n, size))))
        return ops.einsum("nsla,nslb->nlab", energy[..., None] * profiles[0], profiles[1])

    def _to_sample_layout(self, layer_first):
        order = [self.layer_axis] + self.transverse_axes            # axes of the layer-first tensor
        return ops.transpose(layer_first, [0] + [1 + order.index(a) for a in range(3)])

    def call(self, inputs):
        raw, conditions = inputs
        *parameters, fragments, noise = self._unpack(ops.cast(raw, "float32"))
        mu, spots, total = self._expected(*parameters, conditions)
        mu, spots = self._to_sample_layout(mu), self._to_sample_layout(spots)
        shape = (-1,) + self.sample_shape
        quantile_noise, readout_noise, fragment_noise = ops.split(
            noise, [self.n_cells, 2 * self.n_cells], axis=1)
        quantile_noise, readout_noise = (ops.reshape(n, shape)
                                         for n in (quantile_noise, readout_noise))

        u, log_u = normal_cdf_and_log(quantile_noise)
        p_fire = ops.clip(-ops.expm1(-spots), 1e-6, 1.0)   # 1 - exp(-x) loses digits at small x
        fired = ops.cast(u < p_fire, "float32")
        # Given that it fired, the cell holds (mu / p_fire) Gamma(k) / k, k = lambda / p_fire,
        # at the quantile v = 1 - u / p_fire: the inverse CDF of "zero, or that Gamma", so a
        # cell that starts to fire starts from nothing and the sample is continuous in the
        # parameters (the pathwise gradient exists). The Gamma quantile by Wilson-Hilferty, the
        # normal quantile of v by the logistic one of equal variance (an erfinv costs five
        # times as much on CPU).
        k = ops.maximum(spots / p_fire, 1.0)
        z = _quantile_given_fired(p_fire, u, log_u)
        deposits = fired * (mu / p_fire) * ops.relu(1.0 - 1.0 / (9.0 * k)
                                                    + z / (3.0 * ops.sqrt(k))) ** 3
        if fragments is not None:
            deposits = deposits + self._to_sample_layout(
                self._fragment_deposits(fragments, fragment_noise, total))
        visible = ops.sum(ops.reshape(deposits, (-1, self.n_cells)), axis=-1)[:, None]
        scale = ops.where(visible > 0, total / ops.maximum(visible, 1e-12), 0.0)
        deposits = deposits * ops.reshape(scale, (-1, 1, 1, 1))

        values = deposits
        has_noise = bool(np.any(np.asarray(self.noise_sigma) > 0))
        if has_noise or self.photostat > 0:    # a zero nominal value turns a term off
            variance = 1e-12
            if has_noise:
                variance = variance + ops.exp(2.0 * self.log_noise)
            if self.photostat > 0:
                variance = variance + ops.exp(self.log_photostat) * deposits
            values = deposits + ops.sqrt(variance) * readout_noise
        return self.read_out(values)

    def read_out(self, values):
        """The readout threshold, with the straight-through band (:func:`read_out`)."""
        return read_out(values, self.threshold, self.threshold_band)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0],) + self.sample_shape

    def get_config(self):
        return {**super().get_config(), "sample_shape": list(self.sample_shape),
                "layer_axis": self.layer_axis, "cell_size": list(self.cell_size),
                "n_components": self.n_components, "energy_index": self.energy_index,
                "log_response": self.log_response, "threshold": self.threshold,
                "response_spread": self.response_spread, "noise_sigma": self.noise_sigma,
                "photostat": self.photostat, "threshold_band": self.threshold_band,
                "deflection_energy": self.deflection_energy,
                "fragments_per_layer": self.fragments_per_layer}


def initial_parameters(head: ShowerComponentsHead, samples, spot_thresholds=20.0,
                       track_component=False) -> np.ndarray:
    """Starting values of the head's parameters (the output bias of the generator): every
    component at the training showers' mean longitudinal profile and mean centre per layer,
    offset by half a cell from one another along the first transverse axis to break their
    symmetry; core and tail radii of 0.15 and 0.6 cells, spots of ``spot_thresholds`` times the
    readout threshold, no deflection.

    With ``track_component`` the first component starts as a charged primary's track (a MIP
    crossing puts its energy in one cell of every layer): on the other components' mean centre,
    a core of 0.05 cells holding 95 % of its energy, spots of a quarter of the threshold (so a
    crossing fires in nearly every layer instead of 1 - e^-1 of them), and the share of the
    energy that the data holds in each layer's hottest cell (:func:`layer_logit_parameters`)."""
    samples = np.asarray(samples, np.float64)
    layer_first = np.moveaxis(samples, head.layer_axis + 1, 1)         # [N, L, a, b]
    fractions = layer_fractions(head, samples).mean(axis=0)
    centres = []
    for column, axis in ((2, head.transverse_axes[0]), (3, head.transverse_axes[1])):
        profile = layer_first.sum(axis=5 - column).mean(axis=0)          # [L, n]
        coordinates = (np.arange(profile.shape[1]) - (profile.shape[1] - 1) / 2.0)
        centres.append(profile @ coordinates / np.maximum(profile.sum(axis=1), 1e-12))
    k = head.n_components
    params = np.zeros((k, head.n_layers, head.params_per_layer))
    params[..., 1] = centres[0] + 0.5 * (np.arange(k)[:, None] - (k - 1) / 2.0)
    params[..., 2] = centres[1]
    params[..., 3] = np.log(0.15)
    params[..., 4] = np.log(0.6)
    params[..., 6] = np.log(spot_thresholds)
    track_share = None
    if track_component:
        params[0, :, 1] = params[1:, :, 1].mean(axis=0)
        params[0, :, 3] = np.log(0.05)
        params[0, :, 5] = math.log(0.95 / 0.05)
        params[0, :, 6] = np.log(0.25)
        track_share = hottest_cell_shares(head, samples).mean()
    start = np.concatenate([np.zeros(k), params.ravel(), [0.0],
                            fragment_start(head, centres).ravel()])
    return (start + layer_logit_parameters(head, fractions, track_share)).astype(np.float32)


def fragment_start(head: ShowerComponentsHead, centres, rate_per_layer=0.03, share=0.03,
                   width=0.7, spread=2.5, radius=0.3) -> np.ndarray:
    """Starting values of the fragment slots, ``[S, L, FRAGMENT_PARAMS]``: each fires in
    ``rate_per_layer`` of the events with a median ``share`` of the event's energy (log-normal
    ``width``), around the layer's mean centre (``centres``: two ``[L]`` arrays, in cells) within
    ``spread`` cells, in a profile of ``radius`` cells. The defaults are of the order of
    DarkSHINE's electro-nuclear events (a few per cent of events at the spectrum's mean, four
    clusters of a tenth of the energy each, spread over the depth within about 3 crystals
    of the beam: ``detectors/darkshine.py``); training moves them."""
    slots = np.zeros((head.fragments_per_layer, head.n_layers, FRAGMENT_PARAMS))
    slots[..., 0] = math.log(rate_per_layer / (1.0 - rate_per_layer))
    slots[..., 1], slots[..., 2] = math.log(share), math.log(width)
    slots[..., 3], slots[..., 4] = centres
    slots[..., 5], slots[..., 6] = math.log(spread), math.log(radius)
    return slots


def layer_fractions(head: ShowerComponentsHead, samples) -> np.ndarray:
    """Each event's energy fraction per layer, ``[N, n_layers]`` (0 for an empty event)."""
    samples = np.asarray(samples, np.float64)
    per_layer = np.moveaxis(samples, head.layer_axis + 1, 1).reshape(
        len(samples), head.n_layers, -1).sum(axis=2)
    return per_layer / np.maximum(per_layer.sum(axis=1, keepdims=True), 1e-12)


def hottest_cell_shares(head: ShowerComponentsHead, samples) -> np.ndarray:
    """Each event's share of its energy in the hottest cell of each layer, summed over the
    layers, ``[N]``: about 1 for a MIP track, 0.2-0.4 for an electromagnetic shower."""
    samples = np.asarray(samples, np.float64)
    cells = np.moveaxis(samples, head.layer_axis + 1, 1).reshape(len(samples), head.n_layers, -1)
    return cells.max(axis=2).sum(axis=1) / np.maximum(cells.sum(axis=(1, 2)), 1e-12)


def layer_logit_parameters(head: ShowerComponentsHead, fractions, track_share=None) -> np.ndarray:
    """A head parameter vector (``n_params``) that is zero but for every component's layer
    logits, set to the centred log of the mean layer ``fractions`` (``[n_layers]``): the
    longitudinal profile every component starts from. With ``track_share`` f, the first
    component's energy-share logit makes its share f (the others share the rest evenly)."""
    fractions = np.asarray(fractions, np.float64)
    logits = np.log(fractions + 1e-4 * fractions.max())
    k = head.n_components
    params = np.zeros((k, head.n_layers, head.params_per_layer))
    params[..., 0] = logits - logits.mean()
    shares = np.zeros(k)
    if track_share is not None and k > 1:
        f = float(np.clip(track_share, 0.01, 0.99))
        shares[0] = math.log(f * (k - 1) / (1.0 - f))
    return np.concatenate([shares, params.ravel(), [0.0],
                           np.zeros(FRAGMENT_PARAMS * head.n_fragment_slots)])


def component_generator(latent_dim, condition_width, head: ShowerComponentsHead,
                        hidden=(256, 256, 256), output_scale=0.1, discrete_latent=0,
                        name="generator"):
    """``[noise (latent_dim + head.noise_units), encoded conditions] -> head input``: a dense trunk on
    [latent, conditions] emits the head's parameters (the layer ``component_params``, whose
    bias :func:`initial_parameters` sets; a kernel ``output_scale`` times the usual size keeps
    the start near it); the head's normals (per cell, per fragment slot) pass through to it.

    ``discrete_latent`` K > 1 adds a :class:`~ddsim_gan.models.calorimeter.DiscreteLatent`
    code of K values to the trunk's input and, with its cross with the conditions, beside the
    conditions at the output, as :func:`~ddsim_gan.models.calorimeter.cell_generator` does
    (so :func:`~ddsim_gan.models.calorimeter.start_at_category_means` can start each code)."""
    sizes = [latent_dim, head.noise_units]
    noise = keras.Input((sum(sizes),), name="noise")
    conditions = keras.Input((condition_width,), name="encoded_conditions")
    z, head_noise = NoiseSplit(sizes, name="noise_split")(noise)
    code = [DiscreteLatent(discrete_latent, name="discrete_latent")(z)] if discrete_latent else []
    x = layers.Concatenate()([z, *code, conditions])
    for i, units in enumerate(hidden):
        x = layers.LeakyReLU(0.2)(layers.Dense(int(units), name=f"dense_{i}")(x))
    if code:
        code.append(CodeConditionCross(name="code_cross")([code[0], conditions]))
    x = layers.Concatenate()([x, *code, conditions])
    params = layers.Dense(head.n_params, dtype="float32", name="component_params",
                          kernel_initializer=keras.initializers.VarianceScaling(
                              output_scale ** 2, "fan_in", "truncated_normal"))(x)
    out = layers.Concatenate(dtype="float32", name="head_input")([params, head_noise])
    return keras.Model([noise, conditions], out, name=name)
