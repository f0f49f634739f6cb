"""DarkSHINE ECAL: 20 x 20 x 11 LYSO crystals behind an 8 GeV electron beam on a fixed target.

The condition is the ECAL total deposited energy E of a background event (seed 002: the CGAN is
conditioned on the ECAL energy; its spectrum p(E) is what NNLS recovers). The reference simulator
stands in for Geant4 and draws, for a given E, an event topology and the showers that make it:

Topology (given E)
    * an electro-/photo-nuclear component with probability ``0.35 exp(-E / 2.5 GeV)``: a few sparse,
      isolated deposits spread laterally and in depth, carrying a Beta(2, 3) fraction of E
      (backgrounds with low ECAL energy are dominated by such events; seed 002, "Motivation");
    * the electromagnetic rest is shared between the recoil electron and a bremsstrahlung photon,
      y = E_gamma / E_em drawn from the Bethe-Heitler spectrum (4/3 - 4/3 y + y^2) / y on
      [0.02, 0.98] (PDG review "Passage of particles through matter", eq. 34.29 complete-screening
      limit);
    * the photon hits the beam spot; the electron is deflected by the tracker magnet to
      x_e = kappa / E_e (kappa = 120 GeV mm, so 1.5 cm at 8 GeV and 12 cm at 1 GeV) and arrives with
      slope x_e / 1 m. If it would land beyond the ECAL edge the event is photon-only: the
      condition is what the ECAL saw.

Electromagnetic showers (GFlash, G. Grindhammer and S. Peters, hep-ex/0001020, homogeneous media)
    * longitudinal: dE/dt = E (beta t)^(alpha-1) beta e^(-beta t) / Gamma(alpha) with per-shower
      correlated log-normal T = (alpha-1)/beta and alpha:
      <ln T> = ln(ln y - 0.812), sigma(ln T) = 1 / (-1.4 + 1.26 ln y),
      <ln alpha> = ln(0.81 + (0.458 + 2.26/Z) ln y), sigma(ln alpha) = 1 / (-0.58 + 0.86 ln y),
      rho = 0.705 - 0.023 ln y, with y = E / E_c;
    * photons first convert at a depth drawn from Exp(9/7 X0) (PDG, pair-production length);
    * radial: f(r) = p 2 r R_C^2 / (r^2 + R_C^2)^2 + (1 - p) 2 r R_T^2 / (r^2 + R_T^2)^2 in units of
      R_M with R_C = z1 + z2 tau, R_T = k1 (e^(k3 (tau - k2)) + e^(k4 (tau - k2))),
      p = p1 exp((p2 - tau)/p3 - exp((p2 - tau)/p3)), tau = t / T (same reference, eqs. for
      homogeneous media);
    * energy is carried by "spots" (GFlash's discretisation) drawn from these densities, with
      exponentially distributed spot energies so that sparse outer crystals fluctuate strongly.

LYSO (Saint-Gobain PreLude 420 data sheet; PDG atomic and nuclear properties)
    X0 = 11.4 mm, R_M = 20.7 mm, Z_eff = 65, E_c = 610 MeV / (Z_eff + 1.24) = 9.2 MeV.

Readout (assumptions, documented rather than measured)
    * photo-statistics of 20 photo-electrons per MeV (Poisson);
    * a fixed per-crystal calibration spread of 2 % (seeded by the detector, the same for all events);
    * Gaussian electronic noise sigma = 0.25 MeV in every crystal and a readout threshold of
      1.0 MeV (4 sigma), so about 0.14 noise-only hits per event.

Left out: the recoil electron's multiple scattering upstream, photon showers that miss the ECAL,
hadronic shower structure beyond isolated deposits, timing, saturation and dead crystals.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from .base import Condition, Detector

# Geometry (mm). Crystal (ix, iy) spans x in [-250 + 25 ix, -225 + 25 ix].
N_X, N_Y, N_LAYERS = 20, 20, 11
CRYSTAL_XY_MM, CRYSTAL_Z_MM = 25.0, 40.0
HALF_WIDTH_MM = N_X * CRYSTAL_XY_MM / 2
DEPTH_MM = N_LAYERS * CRYSTAL_Z_MM

# LYSO
X0_MM, MOLIERE_RADIUS_MM, Z_EFF = 11.4, 20.7, 65.0
CRITICAL_ENERGY_MEV = 610.0 / (Z_EFF + 1.24)

# Beam, magnet and topology
BEAM_ENERGY_MEV = 8000.0
BEAM_SPOT_SIGMA_MM = 3.0
DEFLECTION_KAPPA_MEV_MM = 120_000.0
LEVER_ARM_MM = 1000.0
ECAL_ACCEPTANCE_MM = HALF_WIDTH_MM - 15.0
BREM_Y_RANGE = (0.02, 0.98)

# Readout
PHOTOELECTRONS_PER_MEV = 20.0
CALIBRATION_SPREAD = 0.02
NOISE_SIGMA_MEV = 0.25
THRESHOLD_MEV = 1.0


class DarkShineECAL(Detector):
    """DarkSHINE LYSO ECAL conditioned on its total deposited energy (see the module docstring)."""

    name = "darkshine"
    conditions = (Condition("E_total", "MeV", 200.0, BEAM_ENERGY_MEV),)
    sample_shape = (N_X, N_Y, N_LAYERS)
    sample_unit = "MeV"
    axes = ("x", "y", "layer")
    cell_size = (CRYSTAL_XY_MM, CRYSTAL_XY_MM, CRYSTAL_Z_MM)
    threshold = THRESHOLD_MEV

    def __init__(self, chunk_size: int = 256):
        self.chunk_size = chunk_size
        calibration_rng = np.random.default_rng(20230408)  # the seed talk's date: a fixed detector
        self.calibration = (1.0 + CALIBRATION_SPREAD * calibration_rng.standard_normal(
            N_X * N_Y * N_LAYERS)).astype(np.float32)

    # ---- the background spectrum p(E) -------------------------------------------------------
    def sample_conditions(self, n: int, seed=None) -> np.ndarray:
        """Total ECAL energy of inclusive background events.

        A mixture: 55 % full-energy events (E = 8 GeV minus an exponential leakage of mean 1.5 %),
        35 % a hard-bremsstrahlung / escape continuum ~ E^-0.5, and 10 % low-energy
        photo-nuclear-like events ~ Exp(1.2 GeV), all inside [200 MeV, 8 GeV].
        """
        rng = np.random.default_rng(seed)
        low, high = self.conditions[0].low, self.conditions[0].high
        kind = rng.choice(3, size=n, p=(0.55, 0.35, 0.10))
        full = high * (1.0 - rng.exponential(0.015, n))
        # inverse CDF of E^-0.5 on [low, high]
        u = rng.random(n)
        continuum = (np.sqrt(low) + u * (np.sqrt(high) - np.sqrt(low))) ** 2
        nuclear = low + rng.exponential(1200.0, n)
        energy = np.choose(kind, (full, continuum, nuclear))
        return np.clip(energy, low, high).astype(np.float32)[:, None]

    # ---- showers for given energies -----------------------------------------------------------
    def simulate_at(self, conditions, seed=None) -> np.ndarray:
        energies = self.check_conditions(conditions)[:, 0].astype(np.float64)
        rng = np.random.default_rng(seed)
        out = np.empty((len(energies), N_X * N_Y * N_LAYERS), dtype=np.float32)
        for start in range(0, len(energies), self.chunk_size):
            stop = start + self.chunk_size
            chunk = energies[start:stop]
            cells, deposits = self._truth_deposits(chunk, rng)
            out[start:stop] = self._digitize(len(chunk), cells, deposits, rng)
        return out.reshape((-1,) + self.sample_shape)

    def _truth_deposits(self, energy, rng):
        """Deposited energy before readout as (flat cell index, MeV), summing to ``energy``."""
        n = len(energy)
        nuclear = rng.random(n) < 0.35 * np.exp(-energy / 2500.0)
        nuclear_fraction = np.where(nuclear, rng.beta(2.0, 3.0, n), 0.0)
        em_energy = energy * (1.0 - nuclear_fraction)

        y = _bremsstrahlung_fraction(rng, n)
        electron_energy = (1.0 - y) * em_energy
        beam_x = rng.normal(0.0, BEAM_SPOT_SIGMA_MM, n)
        beam_y = rng.normal(0.0, BEAM_SPOT_SIGMA_MM, n)
        electron_x = beam_x + DEFLECTION_KAPPA_MEV_MM / np.maximum(electron_energy, 1.0)
        photon_only = electron_x > ECAL_ACCEPTANCE_MM
        electron_energy = np.where(photon_only, 0.0, electron_energy)
        photon_energy = em_energy - electron_energy

        spots = [
            _em_shower_spots(rng, electron_energy, electron_x, beam_y,
                             slope_x=electron_x / LEVER_ARM_MM, photon=False),
            _em_shower_spots(rng, photon_energy, beam_x, beam_y,
                             slope_x=np.zeros(n), photon=True),
            _nuclear_spots(rng, energy * nuclear_fraction, beam_x, beam_y),
        ]
        event, x, y_mm, z, e = (np.concatenate(parts) for parts in zip(*spots))
        ix = np.floor((x + HALF_WIDTH_MM) / CRYSTAL_XY_MM)
        iy = np.floor((y_mm + HALF_WIDTH_MM) / CRYSTAL_XY_MM)
        iz = np.floor(z / CRYSTAL_Z_MM)
        inside = (ix >= 0) & (ix < N_X) & (iy >= 0) & (iy < N_Y) & (iz >= 0) & (iz < N_LAYERS)
        cell = ((event[inside] * N_X + ix[inside].astype(np.int64)) * N_Y
                + iy[inside].astype(np.int64)) * N_LAYERS + iz[inside].astype(np.int64)
        dense = np.bincount(cell, weights=e[inside], minlength=n * N_X * N_Y * N_LAYERS)
        touched = np.zeros(dense.size, dtype=bool)  # a byte mask scans faster than the float64 sums
        touched[cell] = True
        cells = np.flatnonzero(touched)
        deposits = dense[cells]
        # The condition is the energy the ECAL saw: spots outside its volume are not part of it.
        cell_event = cells // (N_X * N_Y * N_LAYERS)
        visible = np.bincount(cell_event, weights=deposits, minlength=n)
        deposits *= (energy / np.maximum(visible, 1e-9))[cell_event]
        return cells, deposits

    def _digitize(self, n, cells, deposits, rng) -> np.ndarray:
        """Photo-statistics, calibration, noise and threshold; returns ``[n, cells]`` MeV."""
        n_cells = N_X * N_Y * N_LAYERS
        measured = rng.poisson(deposits * PHOTOELECTRONS_PER_MEV) / PHOTOELECTRONS_PER_MEV
        measured = measured * self.calibration[cells % n_cells]
        measured += rng.normal(0.0, NOISE_SIGMA_MEV, cells.size)
        measured[measured < THRESHOLD_MEV] = 0.0
        out = np.zeros(n * n_cells, dtype=np.float32)
        noise_cells, noise_values = _noise_only_hits(rng, n)
        out[noise_cells] = noise_values
        # A crystal with a deposit already carries its own noise; it overrides a noise-only draw.
        out[cells] = measured
        return out.reshape(n, n_cells)


def _bremsstrahlung_fraction(rng, n) -> np.ndarray:
    """y = E_gamma / E_e from (4/3 - 4/3 y + y^2) / y on BREM_Y_RANGE, by rejection from 1/y."""
    low, high = BREM_Y_RANGE
    out = np.empty(n)
    todo = np.arange(n)
    while todo.size:
        y = low * (high / low) ** rng.random(todo.size)
        keep = rng.random(todo.size) * (4.0 / 3.0) <= 4.0 / 3.0 - 4.0 / 3.0 * y + y * y
        out[todo[keep]] = y[keep]
        todo = todo[~keep]
    return out


def _em_shower_spots(rng, energy, x0, y0, slope_x, photon: bool):
    """GFlash spots (event, x, y, z, e) of one EM shower per event with energy > 0."""
    events = np.flatnonzero(energy > 0)
    energy = energy[events]
    log_y = np.log(np.maximum(energy / CRITICAL_ENERGY_MEV, np.e ** 2.5))
    mean_log_t = np.log(log_y - 0.812)
    mean_log_alpha = np.log(0.81 + (0.458 + 2.26 / Z_EFF) * log_y)
    sigma_log_t = 1.0 / (-1.4 + 1.26 * log_y)
    sigma_log_alpha = 1.0 / (-0.58 + 0.86 * log_y)
    rho = 0.705 - 0.023 * log_y
    g1, g2 = rng.standard_normal((2, events.size))
    t_max = np.exp(mean_log_t + sigma_log_t * g1)
    alpha = np.exp(mean_log_alpha + sigma_log_alpha * (rho * g1 + np.sqrt(1 - rho ** 2) * g2))
    alpha = np.maximum(alpha, 1.05)
    beta = (alpha - 1.0) / t_max
    start = rng.exponential(9.0 / 7.0, events.size) if photon else np.zeros(events.size)

    # Per-shower radial parameters (GFlash, homogeneous media; E in GeV, radii in R_M).
    log_e_gev = np.log(energy / 1000.0)
    core_offset = 0.0251 + 0.00319 * log_e_gev
    core_slope = 0.1162 - 0.000381 * Z_EFF
    tail_scale = 0.659 - 0.00309 * Z_EFF
    k4 = 0.3585 + 0.0421 * log_e_gev
    p1, p2, p3 = 2.632 - 0.00094 * Z_EFF, 0.401 + 0.00187 * Z_EFF, 1.313 - 0.0686 * log_e_gev

    n_spots = (32 + 80 * np.sqrt(energy / 1000.0)).astype(np.int64)
    owner = np.repeat(np.arange(events.size), n_spots)
    f32 = np.float32  # spot arithmetic in single precision: the cell size dwarfs its rounding
    depth = rng.standard_gamma(alpha[owner].astype(f32), dtype=f32) / beta[owner].astype(f32)
    tau = np.minimum(depth / t_max[owner].astype(f32), f32(12.0))  # deeper spots leave the ECAL
    core_radius = core_offset[owner].astype(f32) + f32(core_slope) * tau
    shifted = tau - f32(0.645)
    tail_radius = f32(tail_scale) * (np.exp(f32(-2.59) * shifted) + np.exp(k4[owner].astype(f32) * shifted))
    arg = (f32(p2) - tau) / p3[owner].astype(f32)
    core_probability = f32(p1) * np.exp(arg - np.exp(arg))
    radius_scale = np.where(rng.random(owner.size, dtype=f32) < core_probability, core_radius, tail_radius)
    u = rng.random(owner.size, dtype=f32) * f32(0.9999)
    radius = f32(MOLIERE_RADIUS_MM) * radius_scale * np.sqrt(u / (f32(1.0) - u))  # CDF r^2/(r^2+R^2)
    phi = rng.random(owner.size, dtype=f32) * f32(2.0 * np.pi)

    z = (depth + start[owner].astype(f32)) * f32(X0_MM)
    x = x0[events].astype(f32)[owner] + slope_x[events].astype(f32)[owner] * z + radius * np.cos(phi)
    y = y0[events].astype(f32)[owner] + radius * np.sin(phi)
    weight = rng.standard_exponential(owner.size, dtype=f32)
    weight_sum = np.bincount(owner, weights=weight, minlength=events.size)
    e = (energy / weight_sum)[owner] * weight
    return events[owner], x, y, z, e


def _nuclear_spots(rng, energy, x0, y0):
    """Isolated deposits of nuclear fragments: 1 + Poisson(3) clusters of 4 spots each."""
    events = np.flatnonzero(energy > 0)
    n_clusters = 1 + rng.poisson(3.0, events.size)
    owner = np.repeat(np.arange(events.size), n_clusters)
    centre_x = x0[events][owner] + rng.normal(0.0, 70.0, owner.size)
    centre_y = y0[events][owner] + rng.normal(0.0, 70.0, owner.size)
    centre_z = rng.uniform(0.0, DEPTH_MM, owner.size)
    share = rng.gamma(1.0, 1.0, owner.size)
    share /= np.bincount(owner, weights=share)[owner]
    spots_per_cluster = 4
    cluster = np.repeat(np.arange(owner.size), spots_per_cluster)
    x = centre_x[cluster] + rng.normal(0.0, 8.0, cluster.size)
    y = centre_y[cluster] + rng.normal(0.0, 8.0, cluster.size)
    z = centre_z[cluster] + rng.normal(0.0, 15.0, cluster.size)
    e = (energy[events][owner] * share)[cluster] / spots_per_cluster
    return events[owner][cluster], x, y, z, e


def _noise_only_hits(rng, n_events):
    """Flat indices and values of crystals fired by noise alone, drawn sparsely.

    Every crystal fires independently with p = P(noise > threshold), so the count per event is
    Binomial(cells, p) and the values follow the Gaussian tail above the threshold (inverse CDF).
    Draws that land on a crystal with a real deposit are overwritten by the caller, which is the
    same as drawing only among empty crystals.
    """
    n_cells = N_X * N_Y * N_LAYERS
    z_threshold = THRESHOLD_MEV / NOISE_SIGMA_MEV
    n_fire = rng.binomial(n_cells, special.ndtr(-z_threshold), n_events)
    events = np.repeat(np.arange(n_events), n_fire)
    cells = events * n_cells + rng.integers(0, n_cells, events.size)
    values = NOISE_SIGMA_MEV * special.ndtri(rng.uniform(special.ndtr(z_threshold), 1.0, events.size))
    return cells, values
