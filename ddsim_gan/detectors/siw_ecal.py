"""SiW-ECAL technological prototype: 15 layers of 32 x 32 silicon cells behind tungsten plates.

Seed 003 (CALICE SiW-ECAL, LLR): 10 GeV electrons (and pions) at normal incidence on the beam-test
arrangement of the prototype: 15 layers of 32 x 32 Si cells of 5 x 5 mm, tungsten plates
8 x 4.2 mm + 7 x 5.6 mm (20.8 X0), Si wafers of 320, 500 and 650 um, no readout effects. The samples
are cell energies in MIP (1 MIP = the most probable deposit of a normally incident minimum-ionizing
particle in that layer's wafer), the unit of the prototype's calibration. The reference simulator
stands in for Geant4 and draws every charged-particle crossing of a silicon layer.

Geometry (seed 003; per-layer choices are ours and marked so)
    * the beam hits the centre of the 32 x 32 matrix (a cell corner) at normal incidence with a
      Gaussian spot of sigma = 3 mm in x and y (ours: "a few mm");
    * layer l (0-based) sits behind the tungsten plates 0 .. l-1: layer 0 is the front face and
      sees only the primary and the albedo, layer 14 is at 19.2 X0, the last 5.6 mm plate backs the
      stack. This is what makes the first layer rarely "hit" in the seed's sense (below);
    * wafer thickness by layer (ours; the seed names only the three values): layers 0-4 650 um,
      5-9 500 um, 10-14 320 um;
    * each layer slot adds 10 mm of slab (wafer, PCB, carbon holder, air) to the plate thickness
      (ours), so the layer pitch is 14.2 mm then 15.6 mm; only lateral displacements of inclined
      particles use it. Si and PCB add < 0.02 X0 per layer and are ignored in the depth.

Tungsten (PDG "Atomic and nuclear properties of materials")
    X0 = 3.504 mm, R_M = 9.327 mm, E_c(e-) = 7.97 MeV, Z = 74, minimum dE/dx = 1.145 MeV cm^2/g,
    i.e. 7.74 MeV lost per X0 by a MIP; nuclear interaction length 191.9 g/cm^2 = 99.4 mm.

Electron showers (GFlash for sampling media, see :mod:`.gflash`; hep-ex/0001020)
    * medium: W with Z = 74, E_c = 7.97 MeV, R_M = 9.3 mm, period 1/F_s = 1.39 X0 (mean plate),
      e/mip e^ = 1 / (1 + 0.007 (74 - 14)) = 0.70;
    * the number of charged particles crossing a plane at depth t is e^ E f(t) / (7.74 MeV), f the
      fluctuated gamma profile (Rossi's track-length argument: a MIP loses E_c per X0); each layer
      draws its count from a gamma-Poisson law with variance 1.5 x the mean (sampling
      fluctuations; the 1.5 is ours, tuned to a sampling term of about 18 %/sqrt(E), above the
      16.5 %/sqrt(E) that CALICE measured with the thinner plates of the physics prototype,
      NIM A 608 (2009) 372), about 700 crossings at 10 GeV;
    * each crossing is placed by the GFlash core + tail radial profile at tau = t / T around the
      shower axis; core particles cross at normal incidence, tail (soft) particles at
      cos(theta) ~ U(0.5, 1), so their path and deposit is longer;
    * layer 0: the primary electron's own crossing plus Poisson(E / 10 GeV) albedo particles
      backscattered from the first plate (wide, R = 1.5 R_M, cos(theta) ~ U(0.25, 1), slow:
      1-3 x the ionisation of a MIP, log-uniform) (ours, tuned so that about a third of the
      10 GeV events have a seed-definition hit in layer 0);
    * result: about 95 MIP per GeV in the sum of the cells, sigma/E = 18 %/sqrt(E) at 10 GeV,
      87 % of the energy within R_M of the shower centre and 96 % within 2 R_M.

Pions (pi-)
    * a minimum-ionizing track at the beam position in every layer before the first inelastic
      interaction, at a depth of tungsten drawn from Exp(lambda_I = 99.4 mm) (the nucleon
      lambda_I, as the issue asks; about half of the pions cross the 72.8 mm of tungsten without
      interacting);
    * the interaction makes (ours, a coarse model of a 10 GeV pi-W interaction):
      (a) 1 + Poisson(1 + 0.8 ln(E/GeV)) fast charged hadrons sharing 70 % of the non-
      electromagnetic energy (Dirichlet), transverse momentum ~ Gamma(2, 0.18 GeV), crossing the
      following layers as MIPs along straight lines until they interact again (Exp(lambda_I));
      (b) Poisson(2) slow protons, cos(theta) ~ U(0, 1), range Exp(3 mm of W), ionising 2-10x a MIP
      (log-uniform), the dense spots next to the vertex; (c) an electromagnetic fraction
      f_em ~ Beta(4 m, 4 (1 - m)) with m = 1 - (E / 1 GeV)^(0.82 - 1) (Groom, PDG review
      "Calorimetry"), split over 1 + Poisson(1) pi0 sub-showers (Dirichlet), each converting after
      Exp(9/7 X0) and developing as a GFlash shower along its own direction (p_T ~ Gamma(2, 0.18)).
      The rest (nuclear binding, neutrons, leakage) is invisible.

Silicon response (PDG review "Passage of particles through matter", eqs. 34.11-34.12)
    * a crossing deposits a Landau-distributed energy with most probable value
      Delta_p = xi [ln(2 m c^2 beta^2 gamma^2 / I) + ln(xi / I) + 0.200 - beta^2 - delta] and width
      xi = 0.1535 MeV cm^2/g (Z/A) rho x / beta^2 at beta gamma = 3.6 (Si: Z/A = 0.4985, I = 173 eV,
      rho = 2.329 g/cm^3; density effect of Sternheimer, Berger and Seltzer, ADNDT 30 (1984) 261):
      Delta_p = 84, 135, 179 keV (0.26-0.28 keV/um) and xi / Delta_p = 0.073, 0.071, 0.070 for 320,
      500, 650 um. In MIP units a crossing gives (1 + (xi/Delta_p)(lambda + 0.2228)) / cos(theta),
      lambda standard Landau (Chambers-Mallows-Stuck sampling);
    * delta rays above a few hundred keV leave the wafer (ours): the excess e over 1 MIP becomes
      c ln(1 + e / c) with c = 300 keV / Delta_p, which turns Landau's 1/Delta^2 tail into an
      exponential one of scale c (3.6, 2.2 and 1.7 MIP for 320, 500, 650 um);
    * electronic noise fixed in charge, a signal-to-noise (MPV / sigma) of 0.025 per um of silicon
      (ours; 8, 12.5, 16), Gaussian in every cell, and a noise threshold of 0.5 MIP below which a
      cell reads 0: about 16 noise-only hits per hundred events, all in the 320 um layers.

Hits in the seed's sense: the seed counts a cell as a hit when it is above 5 % of the event's
hottest cell; :meth:`SiWECAL.hits` implements it (about 43 hits per 10 GeV electron). Under it
layer 0 is hit in about a third of the 10 GeV electron events (the seed's GAN never hit it); above
the 0.5 MIP noise threshold it always is (the primary's own crossing).

Left out: readout effects (as in the seed: no saturation, no dead cells, no gain spread), multiple
scattering of the primary (< 0.3 mm), the angular spread of the beam, hadronic re-interaction
products, neutrons.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from . import gflash
from .base import Condition, ConditionError, Detector

# ---- geometry --------------------------------------------------------------------------------
N_LAYERS, N_CELLS = 15, 32
CELL_MM = 5.0
HALF_WIDTH_MM = N_CELLS * CELL_MM / 2
PLATES_MM = np.array([4.2] * 8 + [5.6] * 7)
SLAB_GAP_MM = 10.0
SI_THICKNESS_UM = np.array([650.0] * 5 + [500.0] * 5 + [320.0] * 5)
#: tungsten in front of each layer (mm) and the same in X0
LAYER_W_DEPTH_MM = np.concatenate([[0.0], np.cumsum(PLATES_MM[:-1])])
TOTAL_W_MM = float(PLATES_MM.sum())
#: position of each layer along the beam (mm from the front face), plates plus slabs
LAYER_Z_MM = LAYER_W_DEPTH_MM + SLAB_GAP_MM * np.arange(N_LAYERS)
LAYER_PITCH_MM = float(np.mean(PLATES_MM + SLAB_GAP_MM))

# ---- tungsten (PDG) -------------------------------------------------------------------------
W_X0_MM, W_MOLIERE_MM, W_CRITICAL_MEV, W_Z = 3.504, 9.327, 7.97, 74.0
W_MIP_LOSS_PER_X0_MEV = 1.145 * 6.76  # minimum dE/dx (MeV cm^2/g) x X0 (g/cm^2)
W_LAMBDA_I_MM = 99.4
LAYER_DEPTH_X0 = LAYER_W_DEPTH_MM / W_X0_MM
MEDIUM = gflash.SamplingMedium(
    x0_mm=W_X0_MM, moliere_mm=W_MOLIERE_MM, critical_mev=W_CRITICAL_MEV, z_eff=W_Z,
    period_x0=float(PLATES_MM.mean() / W_X0_MM), ehat=gflash.ehat(W_Z, 14.0))

# ---- shower and interaction model -----------------------------------------------------------
TAIL_COS_MIN = 0.5            # soft (tail) shower particles cross at cos(theta) ~ U(0.5, 1)
ALBEDO_PER_10_GEV = 1.0       # albedo particles crossing layer 0 per 10 GeV electron
ALBEDO_RADIUS_RM = 1.5
ALBEDO_COS_MIN = 0.25
ALBEDO_IONISATION = (1.0, 3.0)   # slow electrons: dE/dx 1-3x a MIP, log-uniform
OVERDISPERSION = 1.5          # variance / mean of the crossing count of one layer
PT_SHAPE, PT_SCALE_MEV = 2.0, 180.0
CHARGED_FRACTION = 0.7        # share of the non-EM energy carried by fast charged hadrons
SLOW_PROTONS_MEAN, SLOW_PROTON_RANGE_MM = 2.0, 3.0
SLOW_PROTON_IONISATION = (2.0, 10.0)
PI0_EXTRA_MEAN = 1.0
FEM_E0_MEV, FEM_K, FEM_CONCENTRATION = 1000.0, 0.82, 4.0

# ---- silicon and readout ---------------------------------------------------------------------
DELTA_ESCAPE_KEV = 300.0
SIGNAL_TO_NOISE_PER_UM = 0.025
THRESHOLD_MIP = 0.5
SEED_HIT_FRACTION = 0.05


def landau_silicon(thickness_um, beta_gamma: float = 3.6):
    """Most probable energy loss and Landau width ``(Delta_p, xi)`` in keV in silicon.

    PDG review "Passage of particles through matter", eqs. 34.11-34.12, with the Sternheimer
    density-effect parameters of silicon (x0 = 0.2015, x1 = 2.8716, C = 4.4355, a = 0.14921,
    k = 3.2546).
    """
    thickness_cm = np.asarray(thickness_um, dtype=np.float64) * 1e-4
    beta2 = beta_gamma ** 2 / (1.0 + beta_gamma ** 2)
    xi_kev = 1e3 * 0.1535 * 0.49848 * 2.329 * thickness_cm / beta2
    x = np.log10(beta_gamma)
    if x <= 0.2015:
        delta = 0.14 * 10 ** (2 * (x - 0.2015))
    elif x < 2.8716:
        delta = 2 * np.log(10) * x - 4.4355 + 0.14921 * (2.8716 - x) ** 3.2546
    else:
        delta = 2 * np.log(10) * x - 4.4355
    i_kev = 173e-3
    mpv = xi_kev * (np.log(2 * 511.0 * beta_gamma ** 2 / i_kev) + np.log(xi_kev / i_kev)
                    + 0.200 - beta2 - delta)
    return mpv, xi_kev


MPV_KEV, XI_KEV = landau_silicon(SI_THICKNESS_UM)
LANDAU_WIDTH = (XI_KEV / MPV_KEV).astype(np.float32)          # xi / Delta_p per layer
DELTA_ESCAPE_MIP = (DELTA_ESCAPE_KEV / MPV_KEV).astype(np.float32)
NOISE_MIP = (1.0 / (SIGNAL_TO_NOISE_PER_UM * SI_THICKNESS_UM)).astype(np.float32)


class SiWECAL(Detector):
    """CALICE SiW-ECAL technological prototype at normal incidence (see the module docstring).

    Args:
        beam_energy_gev: energy that :meth:`sample_conditions` draws for every event (the seed's
            10 GeV); ``None`` draws log-uniformly over the condition range [1, 20] GeV instead.
        electron_fraction: fraction of e- among the drawn events, the rest pi- (the seed has two
            samples of 5k events each, hence 0.5).
        chunk_size: events simulated at once (bounds the memory of the dense per-chunk sums).
    """

    name = "siw_ecal"
    conditions = (Condition("E_beam", "GeV", 1.0, 20.0),
                  Condition("species", "", 0.0, 1.0, labels=("e-", "pi-")))
    sample_shape = (N_LAYERS, N_CELLS, N_CELLS)
    sample_unit = "MIP"
    axes = ("layer", "x", "y")
    cell_size = (LAYER_PITCH_MM, CELL_MM, CELL_MM)
    threshold = THRESHOLD_MIP
    non_negative = True

    def __init__(self, beam_energy_gev: float | None = 10.0, electron_fraction: float = 0.5,
                 chunk_size: int = 128, beam_spot_mm: float = 3.0):
        self.beam_energy_gev = beam_energy_gev
        self.electron_fraction = float(electron_fraction)
        self.chunk_size = int(chunk_size)
        self.beam_spot_mm = float(beam_spot_mm)

    # ---- the beam -----------------------------------------------------------------------------
    def sample_conditions(self, n: int, seed=None) -> np.ndarray:
        """Beam energy (10 GeV unless configured otherwise) and species (e- / pi-)."""
        rng = np.random.default_rng(seed)
        low, high = self.conditions[0].low, self.conditions[0].high
        if self.beam_energy_gev is None:
            energy = low * (high / low) ** rng.random(n)
        else:
            energy = np.full(n, self.beam_energy_gev)
        species = (rng.random(n) >= self.electron_fraction).astype(np.float64)
        return np.stack([energy, species], axis=1).astype(np.float32)

    # ---- the seed's observables ----------------------------------------------------------------
    @staticmethod
    def hits(samples, fraction: float = SEED_HIT_FRACTION) -> np.ndarray:
        """Boolean mask of the seed's hits: cells above ``fraction`` of the event's hottest cell."""
        array = np.asarray(samples)
        peak = array.reshape(len(array), -1).max(axis=1)
        peak = peak.reshape((-1,) + (1,) * (array.ndim - 1))
        return (array > fraction * peak) & (array > 0)

    # ---- simulation ---------------------------------------------------------------------------
    def simulate_at(self, conditions, seed=None) -> np.ndarray:
        conditions = self.check_conditions(conditions)
        self._check_values(conditions)
        rng = np.random.default_rng(seed)
        n = len(conditions)
        n_cells = N_LAYERS * N_CELLS * N_CELLS
        out = np.zeros(n * n_cells, dtype=np.float32)  # sparse writes into lazily zeroed pages
        for start in range(0, n, self.chunk_size):
            chunk = conditions[start:start + self.chunk_size]
            cells, values = self._simulate_chunk(chunk, rng)
            out[start * n_cells + cells] = values
        return out.reshape((n,) + self.sample_shape)

    def _check_values(self, conditions):
        energy, species = conditions[:, 0], conditions[:, 1]
        bad = np.flatnonzero(energy <= 0)
        if bad.size:
            raise ConditionError(f"conditions: row {bad[0]} has E_beam = {energy[bad[0]]} GeV; "
                                 f"detector {self.name!r} needs a positive beam energy")
        bad = np.flatnonzero((species != 0) & (species != 1))
        if bad.size:
            raise ConditionError(f"conditions: row {bad[0]} has species = {species[bad[0]]}, "
                                 "expected 0 (e-) or 1 (pi-)")

    def _simulate_chunk(self, conditions, rng) -> np.ndarray:
        n = len(conditions)
        energy = conditions[:, 0].astype(np.float64) * 1000.0
        pion = conditions[:, 1] == 1
        x0 = rng.normal(0.0, self.beam_spot_mm, n)
        y0 = rng.normal(0.0, self.beam_spot_mm, n)
        parts = [_electron_crossings(rng, np.flatnonzero(~pion), energy, x0, y0),
                 _pion_crossings(rng, np.flatnonzero(pion), energy, x0, y0)]
        event, layer, x, y, path, ionisation = (np.concatenate(p) for p in zip(*parts))
        deposit = _silicon_deposits(rng, layer, path) * ionisation
        ix = np.floor((x + np.float32(HALF_WIDTH_MM)) * np.float32(1.0 / CELL_MM))
        iy = np.floor((y + np.float32(HALF_WIDTH_MM)) * np.float32(1.0 / CELL_MM))
        inside = (ix >= 0) & (ix < N_CELLS) & (iy >= 0) & (iy < N_CELLS)
        cell = (((event[inside] * N_LAYERS + layer[inside]) * N_CELLS + ix[inside].astype(np.int64))
                * N_CELLS + iy[inside].astype(np.int64))
        n_cells = N_LAYERS * N_CELLS * N_CELLS
        dense = np.bincount(cell, weights=deposit[inside], minlength=n * n_cells)
        touched = np.zeros(dense.size, dtype=bool)  # a byte mask scans faster than the sums
        touched[cell] = True
        cells = np.flatnonzero(touched)
        return _digitize(rng, cells, dense[cells].astype(np.float32), n)


# ---- particles --------------------------------------------------------------------------------
def _crossing_arrays(event, layer, x, y, path, ionisation):
    return (np.asarray(event, np.int64), np.asarray(layer, np.int64), np.asarray(x, np.float32),
            np.asarray(y, np.float32), np.asarray(path, np.float32),
            np.asarray(ionisation, np.float32))


def _electron_crossings(rng, events, energy, x0, y0):
    """Primary crossing and albedo in layer 0, then the GFlash shower from the front face."""
    e = energy[events]
    n = events.size
    primary = _crossing_arrays(events, np.zeros(n), x0[events], y0[events], np.ones(n), np.ones(n))

    n_albedo = rng.poisson(ALBEDO_PER_10_GEV * e / 10000.0)
    owner = np.repeat(np.arange(n), n_albedo)
    radius = np.full(owner.size, ALBEDO_RADIUS_RM, dtype=np.float32)
    dx, dy, _ = gflash.lateral_offsets(rng, radius, radius, np.ones(owner.size, np.float32),
                                       W_MOLIERE_MM)
    cos_theta = rng.uniform(ALBEDO_COS_MIN, 1.0, owner.size)
    low, high = ALBEDO_IONISATION
    ionisation = low * (high / low) ** rng.random(owner.size)
    albedo = _crossing_arrays(events[owner], np.zeros(owner.size), x0[events][owner] + dx,
                              y0[events][owner] + dy, 1.0 / cos_theta, ionisation)

    zeros = np.zeros(n)
    shower = _em_crossings(rng, events, e, zeros, zeros, x0[events], y0[events], zeros, zeros)
    return tuple(np.concatenate(p) for p in zip(primary, albedo, shower))


def _em_crossings(rng, events, energy, t_start, z_start, x_start, y_start, slope_x, slope_y):
    """Silicon crossings of GFlash showers starting at depth ``t_start`` (X0 of W).

    The axis passes through (``x_start``, ``y_start``) at the position ``z_start`` (mm along the
    beam) with slopes ``slope_x``, ``slope_y``.
    """
    alpha, beta, t_max = gflash.longitudinal_parameters(rng, energy, MEDIUM)
    t_rel = LAYER_DEPTH_X0[None, :] - t_start[:, None]
    density = gflash.gamma_pdf(t_rel, alpha[:, None], beta[:, None])
    mean = MEDIUM.ehat * energy[:, None] / W_MIP_LOSS_PER_X0_MEV * density
    # gamma-Poisson: variance OVERDISPERSION x mean (GFlash's gamma sampling of each step)
    spread = OVERDISPERSION - 1.0
    counts = rng.poisson(rng.standard_gamma(mean / spread + 1e-12) * spread)
    tau = np.maximum(t_rel, 0.0) / t_max[:, None]
    core, tail, weight = gflash.radial_parameters(energy[:, None], tau, MEDIUM)
    flat = np.repeat(np.arange(counts.size), counts.ravel())
    dx, dy, in_tail = gflash.lateral_offsets(rng, core.ravel()[flat], tail.ravel()[flat],
                                             weight.ravel()[flat], W_MOLIERE_MM)
    shower, layer = np.divmod(flat, N_LAYERS)
    lever = (LAYER_Z_MM[layer] - z_start[shower]).astype(np.float32)
    x = (x_start[shower] + slope_x[shower] * lever).astype(np.float32) + dx
    y = (y_start[shower] + slope_y[shower] * lever).astype(np.float32) + dy
    cos_theta = np.where(in_tail, rng.uniform(TAIL_COS_MIN, 1.0, flat.size).astype(np.float32),
                         np.float32(1.0))
    return _crossing_arrays(events[shower], layer, x, y, 1.0 / cos_theta, np.ones(flat.size))


def _pion_crossings(rng, events, energy, x0, y0):
    """MIP track to the interaction, then charged hadrons, slow protons and pi0 showers."""
    n = events.size
    e = energy[events]
    z_int = rng.exponential(W_LAMBDA_I_MM, n)
    before_event, before_layer = np.nonzero(LAYER_W_DEPTH_MM[None, :] <= z_int[:, None])
    track = _crossing_arrays(events[before_event], before_layer, x0[events][before_event],
                             y0[events][before_event], np.ones(before_event.size),
                             np.ones(before_event.size))
    hit = np.flatnonzero(z_int < TOTAL_W_MM)
    ev, e, z_int = events[hit], e[hit], z_int[hit]
    vx, vy = x0[ev], y0[ev]
    layers_before = np.searchsorted(LAYER_W_DEPTH_MM, z_int, side="right")
    z_vertex = z_int + SLAB_GAP_MM * layers_before   # position along the beam

    mean_fem = 1.0 - (np.maximum(e, FEM_E0_MEV) / FEM_E0_MEV) ** (FEM_K - 1.0)
    f_em = rng.beta(FEM_CONCENTRATION * mean_fem + 1e-3, FEM_CONCENTRATION * (1 - mean_fem))

    # (a) fast charged hadrons: MIPs along straight lines
    n_fast = 1 + rng.poisson(1.0 + 0.8 * np.log(np.maximum(e, 1000.0) / 1000.0))
    owner = np.repeat(np.arange(hit.size), n_fast)
    share = rng.standard_gamma(1.0, owner.size)
    share /= np.bincount(owner, weights=share, minlength=hit.size)[owner]
    p_long = np.maximum((1.0 - f_em[owner]) * CHARGED_FRACTION * e[owner] * share, 50.0)
    fast = _hadron_tracks(rng, owner, p_long, rng.exponential(W_LAMBDA_I_MM, owner.size),
                          np.ones(owner.size), ev, vx, vy, z_int, z_vertex)

    # (b) slow protons: short, heavily ionising, wide angle
    n_slow = rng.poisson(SLOW_PROTONS_MEAN, hit.size)
    owner = np.repeat(np.arange(hit.size), n_slow)
    cos_theta = rng.uniform(0.05, 1.0, owner.size)
    low, high = SLOW_PROTON_IONISATION
    ionisation = low * (high / low) ** rng.random(owner.size)
    slow = _hadron_tracks(rng, owner, None, rng.exponential(SLOW_PROTON_RANGE_MM, owner.size),
                          ionisation, ev, vx, vy, z_int, z_vertex, cos_theta=cos_theta)

    # (c) pi0 sub-showers
    n_pi0 = 1 + rng.poisson(PI0_EXTRA_MEAN, hit.size)
    owner = np.repeat(np.arange(hit.size), n_pi0)
    share = rng.standard_gamma(1.0, owner.size)
    share /= np.bincount(owner, weights=share, minlength=hit.size)[owner]
    e_pi0 = np.maximum(f_em[owner] * e[owner] * share, 1.0)
    slope_x, slope_y = _slopes(rng, e_pi0)
    t_start = z_int[owner] / W_X0_MM + rng.exponential(gflash.PHOTON_CONVERSION_X0, owner.size)
    shower = _em_crossings(rng, ev[owner], e_pi0, t_start, z_vertex[owner], vx[owner], vy[owner],
                           slope_x, slope_y)
    return tuple(np.concatenate(p) for p in zip(track, fast, slow, shower))


def _slopes(rng, p_long_mev):
    """Slopes (dx/dz, dy/dz) for a transverse momentum ~ Gamma(2, 180 MeV) at random azimuth."""
    p_t = rng.gamma(PT_SHAPE, PT_SCALE_MEV, p_long_mev.size)
    tan_theta = np.minimum(p_t / p_long_mev, 3.0)
    phi = rng.uniform(0.0, 2 * np.pi, p_long_mev.size)
    return tan_theta * np.cos(phi), tan_theta * np.sin(phi)


def _hadron_tracks(rng, owner, p_long, range_w_mm, ionisation, events, vx, vy, z_w, z_vertex,
                   cos_theta=None):
    """Crossings of straight tracks from the vertices of ``owner`` until their range of W ends."""
    if cos_theta is None:
        slope_x, slope_y = _slopes(rng, p_long)
        cos_theta = 1.0 / np.sqrt(1.0 + slope_x ** 2 + slope_y ** 2)
    else:
        tan_theta = np.sqrt(1.0 - cos_theta ** 2) / cos_theta
        phi = rng.uniform(0.0, 2 * np.pi, owner.size)
        slope_x, slope_y = tan_theta * np.cos(phi), tan_theta * np.sin(phi)
    w_after = LAYER_W_DEPTH_MM[None, :] - z_w[owner][:, None]     # W between vertex and layer
    reached = (w_after > 0) & (w_after < range_w_mm[:, None] * cos_theta[:, None])
    track, layer = np.nonzero(reached)
    o = owner[track]
    lever = LAYER_Z_MM[layer] - z_vertex[o]
    return _crossing_arrays(events[o], layer, vx[o] + slope_x[track] * lever,
                            vy[o] + slope_y[track] * lever, 1.0 / cos_theta[track],
                            ionisation[track])


# ---- silicon and readout ----------------------------------------------------------------------
def _silicon_deposits(rng, layer, path):
    """Energy of each crossing in MIP: Landau with delta-ray escape, times the path length."""
    f32 = np.float32
    excess = LANDAU_WIDTH[layer] * (gflash.landau(rng, layer.size) + f32(0.22278))
    c = DELTA_ESCAPE_MIP[layer]
    excess = np.where(excess > 0, c * np.log1p(np.maximum(excess, f32(0)) / c), excess)
    return (f32(1.0) + excess) * path


def _digitize(rng, cells, deposits, n_events):
    """Noise on every cell with a deposit, noise-only cells, and the 0.5 MIP threshold.

    Returns the flat cell indices (within the chunk) and their values in MIP; cells below the
    threshold are dropped.
    """
    n_cells_layer = N_CELLS * N_CELLS
    layer = (cells // n_cells_layer) % N_LAYERS
    values = deposits + NOISE_MIP[layer] * rng.standard_normal(cells.size, dtype=np.float32)
    # noise-only cells: a Binomial count per (event, layer), values from the Gaussian tail
    z = (THRESHOLD_MIP / NOISE_MIP).astype(np.float64)
    p_fire = special.ndtr(-z)
    n_fire = rng.binomial(n_cells_layer, np.broadcast_to(p_fire, (n_events, N_LAYERS)))
    block = np.repeat(np.arange(n_events * N_LAYERS), n_fire.ravel())
    noise_cells = block * n_cells_layer + rng.integers(0, n_cells_layer, block.size)
    noise_layer = block % N_LAYERS
    tail = p_fire[noise_layer] * (1.0 - rng.random(block.size))   # P(noise > value) in (0, p]
    noise_values = (NOISE_MIP[noise_layer] * -special.ndtri(tail)).astype(np.float32)
    # a cell with a deposit carries its own noise: it overrides a noise-only draw
    real = np.isin(noise_cells, cells, assume_unique=False) if block.size else np.zeros(0, bool)
    keep = values >= THRESHOLD_MIP
    return (np.concatenate([noise_cells[~real], cells[keep]]),
            np.concatenate([noise_values[~real], values[keep]]))
