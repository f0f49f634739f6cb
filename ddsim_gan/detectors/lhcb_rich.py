"""LHCb RICH particle identification: five delta-log-likelihoods per track from two gas radiators.

The conditions are the track momentum P, its pseudorapidity eta, the event occupancy nSPDHits and
the true particle species; the sample is the five numbers LHCb stores per track (seed 001, "Problem
statement"): RichDLLe, RichDLLmu, RichDLLk, RichDLLp and RichDLLbt, each ``log L(X) - log L(pi)``.
The reference simulator stands in for Geant4 plus the RICH reconstruction: it draws the photons a
track leaves in each radiator and evaluates the same extended likelihood for every hypothesis that
the reconstruction evaluates, so the DLLs inherit thresholds, exact ties, occupancy and tails.

Radiators (LHCb RICH collaboration, "Performance of the LHCb RICH detector at the LHC",
Eur. Phys. J. C 73 (2013) 2431; refractive indices as in DESIGN.md)
    * RICH1, C4F10, n = 1.0014: saturated angle arccos(1/n) = 52.9 mrad, about 24.5 detected
      photo-electrons for a saturated track, per-photon Cherenkov-angle resolution 1.6 mrad;
      angular acceptance 25-300 mrad, i.e. eta in [1.9, 4.4];
    * RICH2, CF4, n = 1.0005: 31.6 mrad, about 17.6 photo-electrons, 0.68 mrad;
      acceptance 15-120 mrad, i.e. eta in [2.8, 4.9].
    Thresholds p_th = m / sqrt(n^2 - 1) (PDG masses): C4F10 pi 2.6, K 9.3, p 17.7 GeV/c;
    CF4 pi 4.4, K 15.6, p 29.7 GeV/c (mu 2.0 and 3.3, e 0.01).

Photon yield and ring angle for hypothesis h (Frank-Tamm)
    cos theta_h = 1 / (n beta_h),  N_h = N_sat eps sin^2 theta_h / sin^2 theta_sat, i.e.
    N_h ~ 1 - (p_th / p)^2 growing towards saturation; N_h = 0 below threshold. eps is the
    track's geometric efficiency (Beta(40, 6) per radiator, mean 0.87: mirror gaps, dead pixels;
    known to the reconstruction) times the acceptance in eta, a smoothstep that falls from 1 to
    exactly 0 over +-0.1 around each edge. The true yield differs from the expected one by a
    log-normal factor (sigma 0.12) the reconstruction does not know.

Photons associated with a track in radiator r (angles theta measured from the track axis,
inside a window theta < theta_w = 65 mrad for RICH1 and 40 mrad for RICH2)
    * its own ring: Poisson(N_true) photons on a ring of radius theta_true whose centre is offset
      by the track-direction error (multiple scattering, 0.6 mrad (RICH1) / 0.3 mrad (RICH2) per
      axis at 10 GeV/c, scaling as 1/p; assumption) and, after a decay in flight, by the kink;
      each photon is smeared by the per-photon resolution, worsened by occupancy
      (x (1 + 0.4 nSPDHits / 1000)) and near the acceptance edges (+60 % at an edge, Gaussian in eta
      of width 0.2), with a non-Gaussian tail (12 % of photons three times wider: chromatic and
      emission-point errors);
    * background: Poisson(B) photons, B = (1 + 0.030 nSPDHits) (RICH1) or (1 + 0.018 nSPDHits)
      (RICH2), times exp(0.3 (eta - 3.2)) (occupancy grows towards the beam pipe); 90 % uniform in
      the plane of the photon detector (density 2 theta / theta_w^2) and 10 % flat in theta;
    * ring mis-association: Poisson(0.1 + 0.9 nSPDHits / 1000) foreign pion rings per radiator
      (momentum log-uniform in 2-100 GeV/c; centre uniform in a disc of radius 1.2 theta_w, or for
      30 % of them, close track pairs from conversions, jets and the same decay, offset by
      |N(0, 0.15 theta_w)|), whose photons inside the window are credited to this track;
    * ghost tracks (probability 0.01 + 0.03 nSPDHits / 1000) have no ring of their own.

Decays in flight before RICH1 (PDG: c tau = 7.80 m for pi, 3.71 m for K), within L = 2 m of the
vertex: pi -> mu nu; K -> mu nu (67 %) or a pion (33 %, two-body K -> pi pi0 kinematics). The
daughter momentum and kink follow from an isotropic two-body decay; the ring is that of the
daughter, displaced by the kink, while the likelihood still uses the parent's momentum and
direction: with mis-association, the source of far tails at low momentum.

Likelihood (per radiator, summed over both; the reconstruction's model)
    log L_h = -(N_h + B) + sum_i log(B u(theta_i) + N_h G(theta_i; theta_h, sigma_r(p))),
    G a Gaussian with the nominal resolution plus multiple scattering in quadrature, u the
    background shape above (the reconstruction knows neither the occupancy and edge degradation
    nor the tails). Written relative to "no ring", log L_h - log L_bt = -N_h +
    sum_i log(1 + N_h G / (B u)), so a hypothesis with N_h = 0 gives exactly 0.
    RichDLLX = log L_X - log L_pi for X in (e, mu, K, p); RichDLLbt uses the "below threshold"
    hypothesis N = 0 in both radiators. A hypothesis below threshold in both
    radiators has exactly the likelihood of "below threshold": for P < 9.3 GeV/c, RichDLLk ==
    RichDLLp == RichDLLbt for every track, and a kaon's RichDLLk collapses to a narrow spike near
    N_pi (background photons near the pion ring make its width); tracks outside both acceptances
    have all five DLLs exactly 0.

Conditions drawn by :meth:`LHCbRICH.sample_conditions` (assumptions, documented, not fitted)
    P log-uniform in [2, 150] GeV/c; eta ~ N(2.7 + 0.8 ln(P/2)/ln 75, 0.6) truncated to [1.8, 5.5]
    (harder tracks are more forward); nSPDHits negative-binomial with mean 280 and shape 2.5
    truncated to [0, 1000] (a skewed occupancy with a long tail); species e : mu : pi : K : p =
    0.04 : 0.03 : 0.72 : 0.14 : 0.07 (pions dominate prompt charged tracks, K/pi ~ 0.2 and
    p/pi ~ 0.1 at LHC energies; leptons from conversions and semileptonic and pi/K decays).

Left out: aerogel (removed after Run 1), the global event likelihood (other tracks' hypotheses
fixed), bremsstrahlung of electrons, CF4 scintillation as a separate component, the magnet
sweeping soft tracks out of RICH2, and detector ageing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Condition, ConditionError, Detector

SPECIES = ("e", "mu", "pi", "K", "p")
# PDG masses in GeV/c^2, in the order of SPECIES.
MASSES_GEV = np.array([0.51099895e-3, 0.1056584, 0.1395704, 0.493677, 0.9382721])
PION = 2
SPECIES_FRACTIONS = (0.04, 0.03, 0.72, 0.14, 0.07)

# Decays in flight: c tau in m (PDG), decay region before RICH1 in m.
CTAU_M = {2: 7.8045, 3: 3.7116}
DECAY_REGION_M = 2.0
KAON_TO_MUON_FRACTION = 0.67


@dataclass(frozen=True)
class Radiator:
    """One RICH radiator and the photon detector behind it (see the module docstring)."""

    name: str
    index: float  # refractive index n
    saturated_yield: float  # detected photo-electrons at beta = 1
    resolution_mrad: float  # per-photon Cherenkov-angle resolution
    window_mrad: float  # association window around the track
    eta_low: float
    eta_high: float
    background_base: float  # background photons in the window at nSPDHits = 0
    background_per_hit: float  # ... per SPD hit
    scattering_mrad_at_10gev: float  # track-direction error per axis at 10 GeV/c

    @property
    def saturated_angle(self) -> float:
        return float(np.arccos(1.0 / self.index))


RICH1 = Radiator("C4F10", 1.0014, 24.5, 1.618, 65.0, 1.9, 4.4, 1.0, 0.030, 0.6)
RICH2 = Radiator("CF4", 1.0005, 17.6, 0.68, 40.0, 2.8, 4.9, 1.0, 0.018, 0.3)
RADIATORS = (RICH1, RICH2)

ACCEPTANCE_EDGE_WIDTH = 0.2  # the ring leaves the acceptance over this range of eta
EFFICIENCY_BETA = (40.0, 6.0)
EDGE_DEGRADATION, EDGE_WIDTH = 0.6, 0.2
OCCUPANCY_DEGRADATION = 0.4  # relative resolution loss at nSPDHits = 1000
TAIL_FRACTION, TAIL_SCALE = 0.12, 3.0
FLAT_BACKGROUND_FRACTION = 0.10
YIELD_MISMODELLING = 0.12
GHOST_PROBABILITY = (0.01, 0.03)  # base, per 1000 SPD hits
FOREIGN_RINGS = (0.1, 0.9)  # mean number per radiator: base, per 1000 SPD hits
FOREIGN_CENTRE_RADIUS = 1.2  # in units of the window
CLOSE_PAIR_FRACTION, CLOSE_PAIR_SPREAD = 0.3, 0.15  # spread in units of the window


def cherenkov_threshold(mass, index) -> np.ndarray:
    """Momentum threshold p_th = m / sqrt(n^2 - 1) in GeV/c."""
    return np.asarray(mass) / np.sqrt(index ** 2 - 1.0)


class LHCbRICH(Detector):
    """LHCb RICH1 + RICH2 PID log-likelihood differences (see the module docstring)."""

    name = "lhcb_rich"
    conditions = (
        Condition("P", "GeV/c", 2.0, 150.0),
        Condition("eta", "", 1.8, 5.5),
        Condition("nSPDHits", "", 0.0, 1000.0),
        Condition("species", "", 0.0, 4.0, labels=SPECIES),
    )
    sample_shape = (5,)
    sample_names = ("RichDLLe", "RichDLLmu", "RichDLLk", "RichDLLp", "RichDLLbt")
    sample_units = ("", "", "", "", "")
    sample_unit = ""
    axes = None
    non_negative = False

    def __init__(self, chunk_size: int = 4096):
        self.chunk_size = chunk_size

    # ---- the track spectrum -----------------------------------------------------------------
    def sample_conditions(self, n: int, seed=None) -> np.ndarray:
        """Tracks as (P, eta, nSPDHits, species); see the module docstring for the spectra."""
        rng = np.random.default_rng(seed)
        p_low, p_high = self.conditions[0].low, self.conditions[0].high
        momentum = p_low * (p_high / p_low) ** rng.random(n)
        eta_low, eta_high = self.conditions[1].low, self.conditions[1].high
        eta_mean = 2.7 + 0.8 * np.log(momentum / p_low) / np.log(p_high / p_low)
        eta = _truncated_normal(rng, eta_mean, 0.6, eta_low, eta_high)
        hits = np.empty(n)
        todo = np.arange(n)
        shape, mean = 2.5, 280.0
        while todo.size:
            draw = rng.negative_binomial(shape, shape / (shape + mean), todo.size)
            keep = draw <= self.conditions[2].high
            hits[todo[keep]] = draw[keep]
            todo = todo[~keep]
        species = rng.choice(len(SPECIES), size=n, p=SPECIES_FRACTIONS)
        return np.stack([momentum, eta, hits, species], axis=1).astype(np.float32)

    # ---- DLLs for given tracks -----------------------------------------------------------------
    def simulate_at(self, conditions, seed=None) -> np.ndarray:
        conditions = self._check_physical(self.check_conditions(conditions))
        rng = np.random.default_rng(seed)
        out = np.empty((len(conditions), 5), dtype=np.float32)
        for start in range(0, len(conditions), self.chunk_size):
            chunk = conditions[start:start + self.chunk_size].astype(np.float64)
            out[start:start + len(chunk)] = self._dlls(chunk, rng)
        return out

    def _check_physical(self, conditions: np.ndarray) -> np.ndarray:
        """Reject what no track can have: P <= 0, negative occupancy (species: the base class)."""
        checks = (
            (conditions[:, 0] <= 0, "P must be > 0 GeV/c"),
            (conditions[:, 2] < 0, "nSPDHits must be >= 0"),
        )
        for bad, message in checks:
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise ConditionError(f"conditions: row {row} = {conditions[row].tolist()}: "
                                     f"{message} (detector {self.name!r})")
        return conditions

    def _dlls(self, tracks: np.ndarray, rng) -> np.ndarray:
        momentum, eta, hits = tracks[:, 0], tracks[:, 1], tracks[:, 2]
        species = tracks[:, 3].astype(np.int64)
        n = len(tracks)
        source_mass, source_momentum, kink = _decays_in_flight(rng, species, momentum)
        ghost = rng.random(n) < GHOST_PROBABILITY[0] + GHOST_PROBABILITY[1] * hits / 1000.0
        yield_factor = np.exp(YIELD_MISMODELLING * rng.standard_normal(n))
        # log L(h) - log L(below threshold) for h = e, mu, pi, K, p, summed over the radiators
        log_likelihood = np.zeros((n, 5))
        for radiator in RADIATORS:
            log_likelihood += _radiator_log_likelihood(
                rng, radiator, momentum, eta, hits, source_mass, source_momentum, kink,
                ghost, yield_factor)
        pion = log_likelihood[:, PION:PION + 1]
        return np.concatenate([log_likelihood[:, [0, 1, 3, 4]] - pion, -pion], axis=1)


def _truncated_normal(rng, mean, sigma, low, high) -> np.ndarray:
    """Normal(mean, sigma) per element, redrawn until inside [low, high]."""
    mean = np.asarray(mean, dtype=np.float64)
    out = np.empty(mean.shape)
    todo = np.arange(mean.size)
    while todo.size:
        draw = mean[todo] + sigma * rng.standard_normal(todo.size)
        keep = (draw >= low) & (draw <= high)
        out[todo[keep]] = draw[keep]
        todo = todo[~keep]
    return out


def _decays_in_flight(rng, species, momentum):
    """Mass and momentum of what makes the ring, and the kink (rad) of a decay before RICH1."""
    n = len(species)
    source_mass = MASSES_GEV[species].copy()
    source_momentum = momentum.copy()
    kink = np.zeros(n)
    for parent, ctau in CTAU_M.items():
        mass = MASSES_GEV[parent]
        is_parent = species == parent
        decay_probability = -np.expm1(-DECAY_REGION_M * mass / (momentum * ctau))
        decays = np.flatnonzero(is_parent & (rng.random(n) < decay_probability))
        if not decays.size:
            continue
        if parent == PION:
            daughter = np.full(decays.size, 1)
            other = np.zeros(decays.size)  # neutrino
        else:
            to_muon = rng.random(decays.size) < KAON_TO_MUON_FRACTION
            daughter = np.where(to_muon, 1, PION)
            other = np.where(to_muon, 0.0, 0.1349768)  # nu or pi0
        daughter_mass = MASSES_GEV[daughter]
        # Two-body decay at rest: momentum p*, energy E*; isotropic, then boosted (E >> M).
        p_star = np.sqrt((mass ** 2 - (daughter_mass + other) ** 2)
                         * (mass ** 2 - (daughter_mass - other) ** 2)) / (2 * mass)
        e_star = np.sqrt(p_star ** 2 + daughter_mass ** 2)
        cos_star = rng.uniform(-1.0, 1.0, decays.size)
        fraction = (e_star + p_star * cos_star) / mass
        daughter_momentum = fraction * momentum[decays]
        source_mass[decays] = daughter_mass
        source_momentum[decays] = daughter_momentum
        kink[decays] = p_star * np.sqrt(1.0 - cos_star ** 2) / daughter_momentum
    return source_mass, source_momentum, kink


def _ring_angle_and_fraction(mass, momentum, index):
    """Cherenkov angle (rad) and sin^2(theta) / sin^2(theta_sat); both 0 below threshold."""
    beta_squared = momentum ** 2 / (momentum ** 2 + mass ** 2)
    sin_squared = np.maximum(1.0 - 1.0 / (index ** 2 * beta_squared), 0.0)
    angle = np.arcsin(np.sqrt(sin_squared))
    return angle, sin_squared / (1.0 - 1.0 / index ** 2)


def _smoothstep(x):
    """0 below 0, 1 above 1, 3x^2 - 2x^3 between: an acceptance that ends exactly."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _radiator_log_likelihood(rng, radiator, momentum, eta, hits, source_mass, source_momentum,
                             kink, ghost, yield_factor) -> np.ndarray:
    """``[n, 5]`` log-likelihoods of e, mu, pi, K, p from one radiator, relative to "no ring".

    The hypothesis-independent part of the extended likelihood, ``-B + sum_i log(B u_i)``, is
    dropped, so "below threshold" has log-likelihood exactly 0 and every hypothesis with N_h = 0
    ties with it exactly.
    """
    n = len(momentum)
    f32 = np.float32
    window = radiator.window_mrad * 1e-3
    acceptance = (_smoothstep((eta - radiator.eta_low) / ACCEPTANCE_EDGE_WIDTH + 0.5)
                  * _smoothstep((radiator.eta_high - eta) / ACCEPTANCE_EDGE_WIDTH + 0.5))
    efficiency = acceptance * rng.beta(*EFFICIENCY_BETA, n)
    edge = EDGE_DEGRADATION * (np.exp(-0.5 * ((eta - radiator.eta_low) / EDGE_WIDTH) ** 2)
                               + np.exp(-0.5 * ((eta - radiator.eta_high) / EDGE_WIDTH) ** 2))
    scattering = radiator.scattering_mrad_at_10gev * 1e-3 * 10.0 / momentum
    sigma_nominal = radiator.resolution_mrad * 1e-3
    sigma_true = sigma_nominal * (1.0 + OCCUPANCY_DEGRADATION * hits / 1000.0) * (1.0 + edge)
    sigma_reco = np.sqrt(sigma_nominal ** 2 + scattering ** 2)
    background = ((radiator.background_base + radiator.background_per_hit * hits)
                  * np.exp(0.3 * (eta - 3.2)))

    # The reconstruction's expectation for each hypothesis (below threshold: no ring).
    angles, fractions = _ring_angle_and_fraction(MASSES_GEV[:, None], momentum[None, :],
                                                 radiator.index)
    expected = radiator.saturated_yield * efficiency[None, :] * fractions  # [5, n]

    # What the track really left: its own (possibly displaced) ring, background, foreign rings.
    # Per-photon arithmetic is single precision: 1e-7 relative is far below any resolution.
    true_angle, true_fraction = _ring_angle_and_fraction(source_mass, source_momentum,
                                                         radiator.index)
    own_mean = np.where(ghost, 0.0, radiator.saturated_yield * efficiency * true_fraction
                        * yield_factor)
    offset = np.hypot(kink + scattering * rng.standard_normal(n),
                      scattering * rng.standard_normal(n))
    own_counts = rng.poisson(own_mean)
    own_theta = _ring_photons(rng, own_counts, true_angle, offset)
    smear = (np.repeat(sigma_true.astype(f32), own_counts)
             * rng.standard_normal(own_theta.size, dtype=f32))
    smear[rng.random(own_theta.size, dtype=f32) < TAIL_FRACTION] *= f32(TAIL_SCALE)
    own_theta = np.abs(own_theta + smear)  # an angle from the track axis is >= 0

    background_counts = rng.poisson(background)
    u = rng.random(background_counts.sum(), dtype=f32)
    flat = rng.random(u.size, dtype=f32) < FLAT_BACKGROUND_FRACTION
    background_theta = f32(window) * np.where(flat, u, np.sqrt(u))

    rings_per_track = rng.poisson(FOREIGN_RINGS[0] + FOREIGN_RINGS[1] * hits / 1000.0)
    n_rings = int(rings_per_track.sum())
    foreign_angle, foreign_fraction = _ring_angle_and_fraction(
        MASSES_GEV[PION], 2.0 * 50.0 ** rng.random(n_rings), radiator.index)
    close = rng.random(n_rings) < CLOSE_PAIR_FRACTION
    foreign_centre = window * np.where(
        close, CLOSE_PAIR_SPREAD * np.abs(rng.standard_normal(n_rings)),
        FOREIGN_CENTRE_RADIUS * np.sqrt(rng.random(n_rings)))
    ring_counts = rng.poisson(radiator.saturated_yield * foreign_fraction)
    foreign_theta = _ring_photons(rng, ring_counts, foreign_angle, foreign_centre)
    foreign_theta = np.abs(foreign_theta + f32(sigma_nominal)
                           * rng.standard_normal(foreign_theta.size, dtype=f32))
    foreign_counts = np.bincount(np.repeat(np.arange(n), rings_per_track), weights=ring_counts,
                                 minlength=n).astype(np.int64)

    # Photons grouped by track (a sentinel track of one photon closes the last segment for
    # reduceat); photons outside the association window get a zero weight below.
    counts, theta = _group_by_track([(own_counts, own_theta),
                                     (background_counts, background_theta),
                                     (foreign_counts, foreign_theta)])
    repeat = np.append(counts, 1)
    theta = np.append(theta, f32(2.0 * window))  # the sentinel, outside the window
    inside = theta < window

    # log(1 + N_h G(theta_i) / (B u(theta_i))) per photon and hypothesis, summed per track.
    scale = np.sqrt(0.5) / sigma_reco  # G ~ exp(-(scale (theta - theta_h))^2)
    with np.errstate(divide="ignore"):  # N_h = 0 gives log(0) = -inf and a zero term
        log_amplitude = np.log(expected * scale / np.sqrt(np.pi)) - np.log(background)
    scaled_angle = np.repeat(np.append(angles * scale, np.zeros((5, 1)), axis=1).astype(f32),
                             repeat, axis=1)
    log_amp = np.repeat(np.append(log_amplitude, np.zeros((5, 1)), axis=1).astype(f32),
                        repeat, axis=1)
    scaled_theta = theta * np.repeat(np.append(scale, 1.0).astype(f32), repeat)
    shape = (f32((1.0 - FLAT_BACKGROUND_FRACTION) * 2.0 / window ** 2) * theta
             + f32(FLAT_BACKGROUND_FRACTION / window))
    log_shape = np.where(inside, np.log(shape), f32(np.inf))
    terms = scaled_angle
    terms -= scaled_theta
    np.square(terms, out=terms)
    np.subtract(log_amp, terms, out=terms)
    terms -= log_shape
    np.exp(terms, out=terms)
    np.log1p(terms, out=terms)
    starts = np.cumsum(repeat) - repeat
    sums = np.add.reduceat(terms, starts, axis=1)[:, :n].astype(np.float64)
    sums[:, counts == 0] = 0.0  # reduceat returns the next element for an empty segment
    return (sums - expected).T


def _group_by_track(parts):
    """Merge per-track photon lists into one list grouped by track.

    ``parts`` are (counts per track, float32 values grouped by track) pairs.
    Returns (counts per track, values).
    """
    counts = np.sum([part_counts for part_counts, _ in parts], axis=0)
    offset = np.cumsum(counts) - counts
    out = np.empty(int(counts.sum()), dtype=np.float32)
    for part_counts, values in parts:
        if values.size:
            part_start = np.cumsum(part_counts) - part_counts
            out[np.repeat(offset - part_start, part_counts) + np.arange(values.size)] = values
        offset = offset + part_counts
    return counts, out


def _ring_photons(rng, counts, radius, offset) -> np.ndarray:
    """Angles (rad, float32) from the track axis of ``counts[j]`` photons on each ring j.

    A ring of ``radius`` whose centre sits ``offset`` away from the track axis puts a photon at
    azimuth phi at |offset + radius (cos phi, sin phi)|; photons come out grouped by ring.
    """
    f32 = np.float32
    total = int(counts.sum())
    cos_phi = np.cos(rng.random(total, dtype=f32) * f32(2.0 * np.pi))
    r = np.repeat(radius.astype(f32), counts)
    d = np.repeat(offset.astype(f32), counts)
    return np.sqrt(np.maximum(r * r + d * d + f32(2.0) * r * d * cos_phi, f32(0.0)))
