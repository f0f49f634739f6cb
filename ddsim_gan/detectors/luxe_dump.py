"""LUXE beam dump: particles crossing a sampling plane behind the dump, one row per particle.

The condition is the particle species (0 photon, 1 electron, 2 positron, 3 neutron: the species
that dominate the background behind an electromagnetic beam dump; muons, protons and heavier
fragments are rarer by orders of magnitude and left out). A sample is what the sampling plane
records for one particle: position x, y (mm), momentum p (MeV/c), momentum azimuth phi_p and polar
angle theta (rad, theta > pi/2 for particles crossing backwards) and arrival time t (ns after the
bunch reaches the dump face). The seed (004, Borysov, Levi, Santra, Tal Hod, LUXE SAS meeting
2024) trains a WGAN on Geant4 particles crossing such a plane, after a quantile transformation;
it finds sharp features hard to learn and splits the plane into an inner and an outer region at a
radius r = sqrt(x^2 + y^2), training each separately. The reference simulator reproduces those
features; its geometry is a stand-in designed after the seed's schematic (dump, magnet at 0.95 T,
shielding, sampling surface), not the LUXE engineering drawing.

Beam and geometry (assumptions unless a source is given)
    * the European XFEL beam of 16.5 GeV electrons (LUXE CDR, Eur. Phys. J. Spec. Top. 230, 2445
      (2021)) showers in the dump core; the shower maximum lies L ~ U(2.0, 3.0) m upstream of the
      plane and the dump face 3.0 m upstream (t = 0 when the bunch reaches it);
    * the plane is the 2 m x 2 m downstream face of the shielding, |x|, |y| <= 1000 mm: nothing is
      recorded outside it (a hard frame);
    * the beam-line opening in the shielding is a rectangular aperture |x| <= 150 mm,
      |y| <= 100 mm; particles leaking forward from the dump along the beam line (the core) pass
      only through it, so their density drops to the halo level at its edges (a sharp step:
      in 10 mm bands across the y edges about x17 for photons, x40-50 for e+-, x4.5 for neutrons);
    * particles scattered off the aperture walls make a bright rim just inside the edges
      (exponential depth of 4 mm);
    * the magnet's residual field (integral B dl = 0.35 T m, B along +y, lever arm 1.4 m) sweeps
      charged core particles by -q x 0.2998 x 0.35 x 1.4 m GeV / p = -q x 147 mm GeV / p
      (electrons to +x, positrons to -x): below ~1 GeV they hit the shielding, so the charged
      core is a sharp x-p band (field-shaped dump, seed: "e- dump at 0.95 T field");
    * the return yoke of that magnet sits behind x < -450 mm and transmits only 30 % of the halo
      there (a second sharp step, outside the aperture);
    * the hall wall 2.0 m behind the plane scatters particles back through it (albedo).

Components (fraction per species: core / rim / halo / backscatter)
    photon 0.42/0.06/0.37/0.15, electron 0.30/0.10/0.42/0.18, positron 0.40/0.08/0.40/0.12,
    neutron 0.06/0.02/0.50/0.42.
    * core: straight lines from a source spot (sigma 4 mm) with a 2D Lorentzian (heavy-tailed)
      spread of scale 12 mm (photons), 20 mm (e+-), 60 mm (neutrons) at the plane, plus multiple
      scattering of charged particles in 0.5 X0 of exit window and air, theta_0 =
      13.6 MeV / (beta p) sqrt(0.5) (1 + 0.038 ln 0.5) (PDG review "Passage of particles through
      matter", eq. 34.15), and the magnetic sweep; rejected if outside the aperture;
    * halo: punch-through and scattering in the shielding: a 2D Lorentzian of scale 300 mm
      (photons), 250 mm (e+-) or 500 mm (neutrons) centred at x = +80 mm (the dump side),
      transmitted outside the aperture with probability 0.15 (photons), 0.05 (e+-), 0.5
      (neutrons), times 0.3 behind the yoke; emitted at a depth U(0.1, 0.8) m in the shield with
      cos(theta) = u^(1/3) and the azimuth pointing away from the halo centre (spread 1 rad);
    * backscatter: Lambertian (cos alpha = sqrt(u)) emission from the hall wall around
      (+80, 0) mm (sigma 450 mm), theta = pi - alpha, arriving after the round trip.

Spectra (kinetic energy T; p = sqrt(T^2 + 2 T m); photons and e+- recorded only above T = 10 keV)
    * core photons: thin-target bremsstrahlung (4/3 - 4/3 y + y^2) / y, y = k / 16.5 GeV, between
      1 MeV and the beam energy (PDG eq. 34.29); core e+-: T^-1.6 between 0.3 and 16.5 GeV (the
      sweep leaves mostly those above ~1 GeV); core neutrons: T^-1 between 20 MeV and 3 GeV
      (high-energy cascade);
    * halo photons: Compton-degraded continuum log-normal(median 1.5 MeV, sigma_ln 1.0) 55 %, the
      0.511 MeV annihilation line 10 %, the 2.223 MeV H(n, gamma) line 5 % and the 7.64 MeV
      Fe(n, gamma) line 5 % (both delayed by neutron capture, exponential with tau = 180 us),
      a T^-2 tail from 10 MeV to 2 GeV 25 %;
    * halo e-: log-normal(2 MeV, 1.0) 70 % + T^-2 tail 10 MeV-2 GeV; e+: log-normal(4 MeV, 0.9)
      60 % + tail 40 % (pairs need > 1.022 MeV photons);
    * neutrons: evaporation T exp(-T / 1.5 MeV) (Gamma(2, 1.5 MeV)) 55 %, cascade T^-1 between 20 MeV
      and 2 GeV 15 %, slowing-down 1/E between 0.5 eV and 100 keV 20 %, thermal Maxwellian kT =
      25.3 meV 10 %; slowing-down and thermal neutrons arrive after a log-normal moderation delay
      (median 20 us, sigma_ln 1.0);
    * rim: log-normal 3 MeV (photons), 8 MeV (e+-), evaporation neutrons;
    * backscatter photons: Compton back-scattering E' = E / (1 + E (1 - cos psi) / m_e) of a
      log-normal(2 MeV, 1.2) photon with cos psi ~ U(-1, -0.3), so they pile up towards
      m_e / 2 = 256 keV and end at a sharp edge m_e / 1.3 = 393 keV, plus 15 % of 0.511 MeV
      annihilation photons; back-scattered e-/e+ log-normal(0.6 / 1.0 MeV, 0.8); neutron albedo
      45 % thermal, 35 % slowing-down, 20 % evaporation Gamma(2, 1.0 MeV), with the moderation
      delay (median 60 us).

Time: t = (path of the parent shower at c) + (flight path to the plane) / (beta c) + delay, so it
correlates with momentum (slow neutrons arrive up to ms late) and with the path length.

Species mix (``sample_conditions``): photon 0.62, electron 0.055, positron 0.025, neutron 0.30
(photons dominate and neutrons are many, as behind electron beam dumps). The fraction of each
species that lands in the inner region r < 100 mm of ``region_of`` is 0.55 (photon), 0.43
(electron), 0.48 (positron), 0.10 (neutron), so the mix differs per region (measured with 10^6
particles): inner (40 % of all particles) photon 0.836, electron 0.058, positron 0.030, neutron
0.076; outer photon 0.473, electron 0.054, positron 0.022, neutron 0.452.

Left out: hadron showers beyond neutrons, the time structure of the bunch train, the plane's own
material.
"""

from __future__ import annotations

import numpy as np

from .base import Condition, Detector

SPECIES = ("photon", "electron", "positron", "neutron")
PHOTON, ELECTRON, POSITRON, NEUTRON = range(4)
MASS_MEV = np.array([0.0, 0.51099895, 0.51099895, 939.56542])  # PDG
CHARGE = np.array([0, -1, 1, 0])
SPECIES_FRACTIONS = np.array([0.62, 0.055, 0.025, 0.30])

# Geometry (mm, ns)
C_MM_NS = 299.792458
BEAM_ENERGY_MEV = 16_500.0
DUMP_FACE_MM = 3000.0
SOURCE_DISTANCE_MM = (2000.0, 3000.0)
SOURCE_SPOT_MM = 4.0
PLANE_HALF_MM = 1000.0
APERTURE_HALF_MM = (150.0, 100.0)
INNER_RADIUS_MM = 100.0
RIM_DEPTH_MM = 4.0
SWEEP_MM_MEV = 0.299792458 * 0.35 * 1400.0 * 1000.0  # -q * this / p[MeV] = x shift in mm
SWEEP_LEVER_MM = 1400.0
YOKE_EDGE_MM, YOKE_TRANSMISSION = -450.0, 0.3
HALO_CENTRE_MM = 80.0
WALL_DISTANCE_MM = 2000.0
WALL_SPREAD_MM = 450.0
SCATTERING_X0 = 0.5
ELECTRON_MASS_MEV = MASS_MEV[1]
RECORD_THRESHOLD_MEV = 0.010

# Per species (photon, electron, positron, neutron)
COMPONENT_FRACTIONS = np.array([  # core, rim, halo, backscatter
    [0.42, 0.06, 0.37, 0.15],
    [0.30, 0.10, 0.42, 0.18],
    [0.40, 0.08, 0.40, 0.12],
    [0.06, 0.02, 0.50, 0.42],
])
CORE_SCALE_MM = np.array([12.0, 20.0, 20.0, 60.0])
HALO_SCALE_MM = np.array([300.0, 250.0, 250.0, 500.0])
SHIELD_TRANSMISSION = np.array([0.15, 0.05, 0.05, 0.5])

# Spectra: (weight, kind, parameters, delay) with kinetic energies in MeV and delays in ns.
_CAPTURE = ("exp", 180_000.0)
_MODERATION = ("lognormal", 20_000.0, 1.0)
_ALBEDO_MODERATION = ("lognormal", 60_000.0, 1.0)
_TAIL = ("power", (2.0, 10.0, 2000.0), None)
_EVAPORATION = ("gamma", (2.0, 1.5))
SPECTRA = {
    "core": {
        PHOTON: [(1.0, "brems", (1.0, BEAM_ENERGY_MEV), None)],
        ELECTRON: [(1.0, "power", (1.6, 300.0, BEAM_ENERGY_MEV), None)],
        POSITRON: [(1.0, "power", (1.6, 300.0, BEAM_ENERGY_MEV), None)],
        NEUTRON: [(1.0, "power", (1.0, 20.0, 3000.0), None)],
    },
    "rim": {
        PHOTON: [(1.0, "lognormal", (3.0, 1.3), None)],
        ELECTRON: [(1.0, "lognormal", (8.0, 1.2), None)],
        POSITRON: [(1.0, "lognormal", (8.0, 1.2), None)],
        NEUTRON: [(1.0, *_EVAPORATION, None)],
    },
    "halo": {
        PHOTON: [(0.55, "lognormal", (1.5, 1.0), None),
                 (0.10, "line", (0.511, 0.0015), None),
                 (0.05, "line", (2.223, 0.003), _CAPTURE),
                 (0.05, "line", (7.64, 0.008), _CAPTURE),
                 (0.25, *_TAIL)],
        ELECTRON: [(0.70, "lognormal", (2.0, 1.0), None), (0.30, *_TAIL)],
        POSITRON: [(0.60, "lognormal", (4.0, 0.9), None), (0.40, *_TAIL)],
        NEUTRON: [(0.55, *_EVAPORATION, None),
                  (0.15, "power", (1.0, 20.0, 2000.0), None),
                  (0.20, "power", (1.0, 0.5e-6, 0.1), _MODERATION),
                  (0.10, "gamma", (1.5, 25.3e-9), _MODERATION)],
    },
    "backscatter": {
        PHOTON: [(0.85, "compton_back", (2.0, 1.2), None),
                 (0.15, "line", (0.511, 0.0015), None)],
        ELECTRON: [(1.0, "lognormal", (0.6, 0.8), None)],
        POSITRON: [(1.0, "lognormal", (1.0, 0.8), None)],
        NEUTRON: [(0.45, "gamma", (1.5, 25.3e-9), _ALBEDO_MODERATION),
                  (0.35, "power", (1.0, 0.5e-6, 0.1), _ALBEDO_MODERATION),
                  (0.20, "gamma", (2.0, 1.0), None)],
    },
}
COMPONENTS = ("core", "rim", "halo", "backscatter")
for _table in (MASS_MEV, CHARGE, SPECIES_FRACTIONS, COMPONENT_FRACTIONS, CORE_SCALE_MM, HALO_SCALE_MM,
               SHIELD_TRANSMISSION):
    _table.setflags(write=False)
del _table


class LUXEBeamDump(Detector):
    """Particles crossing the sampling plane behind the LUXE beam dump (see the module docstring).

    ``INNER_RADIUS_MM`` splits the plane into the dense inner region and the sparse outer one for
    split learning; :meth:`region_of` tells which region a sample lies in.
    """

    name = "luxe_dump"
    conditions = (Condition("species", "", 0, len(SPECIES) - 1, labels=SPECIES),)
    sample_shape = (6,)
    sample_names = ("x", "y", "p", "phi_p", "theta", "t")
    sample_units = ("mm", "mm", "MeV", "rad", "rad", "ns")
    axes = None
    non_negative = False

    INNER_RADIUS_MM = INNER_RADIUS_MM
    PLANE_HALF_MM = PLANE_HALF_MM
    APERTURE_HALF_MM = APERTURE_HALF_MM
    SPECIES_FRACTIONS = SPECIES_FRACTIONS

    # ---- the species mix ----------------------------------------------------------------------
    def sample_conditions(self, n: int, seed=None) -> np.ndarray:
        """Species drawn with the abundances ``SPECIES_FRACTIONS`` (photons dominate)."""
        rng = np.random.default_rng(seed)
        return rng.choice(len(SPECIES), size=n, p=SPECIES_FRACTIONS).astype(np.float32)[:, None]

    def region_of(self, samples) -> np.ndarray:
        """0 for samples with r = sqrt(x^2 + y^2) < ``INNER_RADIUS_MM`` (inner), 1 otherwise."""
        samples = self.check_samples(samples)
        radius = np.hypot(samples[:, 0].astype(np.float64), samples[:, 1].astype(np.float64))
        return (radius >= self.INNER_RADIUS_MM).astype(np.int64)

    # ---- particles on the plane -----------------------------------------------------------------
    def simulate_at(self, conditions, seed=None) -> np.ndarray:
        species = self.check_conditions(conditions)[:, 0].astype(np.int64)
        rng = np.random.default_rng(seed)
        cumulative = np.cumsum(COMPONENT_FRACTIONS, axis=1)
        component = (rng.random(species.size)[:, None] > cumulative[species, :-1]).sum(axis=1)
        out = np.empty((species.size, 6), dtype=np.float32)
        for index, draw in enumerate((_core, _rim, _halo, _backscatter)):
            rows = np.flatnonzero(component == index)
            if rows.size:
                out[rows] = draw(rng, species[rows])
        return out


# ---- components: each returns [m, 6] (x, y, p, phi_p, theta, t) for the given species ----------
def _core(rng, species):
    """Forward leakage along the beam line through the aperture (with the magnetic sweep)."""
    out = np.empty((species.size, 6))
    todo = np.arange(species.size)
    while todo.size:
        s = species[todo]
        k = todo.size
        distance = rng.uniform(*SOURCE_DISTANCE_MM, k)
        source_x, source_y = SOURCE_SPOT_MM * rng.standard_normal((2, k))
        u = rng.random(k) * 0.9999
        spread = CORE_SCALE_MM[s] * np.sqrt(u / (1.0 - u)) / distance
        azimuth = rng.uniform(-np.pi, np.pi, k)
        kinetic, delay = _kinetic(rng, s, "core")
        p, beta = _momentum(kinetic, s)
        charge = CHARGE[s]
        log_term = 1.0 + 0.038 * np.log(SCATTERING_X0)
        theta0 = np.where(charge != 0, 13.6 / (beta * p) * np.sqrt(SCATTERING_X0) * log_term, 0.0)
        kick_x, kick_y = np.minimum(theta0, 1.0) * rng.standard_normal((2, k))
        sweep = -charge * SWEEP_MM_MEV / p
        slope_x = spread * np.cos(azimuth) + kick_x
        slope_y = spread * np.sin(azimuth) + kick_y
        x = source_x + distance * slope_x + sweep
        y = source_y + distance * slope_y
        path = np.sqrt((x - source_x) ** 2 + (y - source_y) ** 2 + distance ** 2)
        t = (DUMP_FACE_MM - distance) / C_MM_NS + path / (beta * C_MM_NS) + delay
        columns = _columns(x, y, p, slope_x + sweep / SWEEP_LEVER_MM, slope_y, np.ones(k), t)
        inside = (np.abs(x) <= APERTURE_HALF_MM[0]) & (np.abs(y) <= APERTURE_HALF_MM[1])
        out[todo[inside]] = columns[inside]
        todo = todo[~inside]
    return out


def _rim(rng, species):
    """Particles scattered off the aperture walls: a thin bright band just inside its edges."""
    k = species.size
    half_x, half_y = APERTURE_HALF_MM
    side = rng.choice(4, size=k, p=np.array([half_x, half_x, half_y, half_y]) / (2 * (half_x + half_y)))
    horizontal = side < 2  # top / bottom edges
    along = rng.uniform(-1.0, 1.0, k) * np.where(horizontal, half_x, half_y)
    depth = np.minimum(rng.exponential(RIM_DEPTH_MM, k), np.where(horizontal, half_y, half_x))
    sign = np.where(side % 2 == 0, 1.0, -1.0)  # top / right: +, bottom / left: -
    x = np.where(horizontal, along, sign * (half_x - depth))
    y = np.where(horizontal, sign * (half_y - depth), along)
    inward = np.where(horizontal, np.where(sign > 0, -np.pi / 2, np.pi / 2),
                      np.where(sign > 0, np.pi, 0.0))
    azimuth = _wrap(inward + 0.7 * rng.standard_normal(k))
    theta = np.abs(0.2 * rng.standard_normal(k))
    kinetic, delay = _kinetic(rng, species, "rim")
    p, beta = _momentum(kinetic, species)
    wall_depth = rng.uniform(0.0, 1000.0, k)
    t = (DUMP_FACE_MM - wall_depth) / C_MM_NS + wall_depth / (np.cos(theta) * beta * C_MM_NS) + delay
    return np.stack([x, y, p, azimuth, theta, t], axis=1)


def _halo(rng, species):
    """Punch-through and scattering in the shielding: broad, with steps at the aperture and yoke."""
    k = species.size
    x = np.empty(k)
    y = np.empty(k)
    todo = np.arange(k)
    while todo.size:
        s = species[todo]
        m = todo.size
        u = rng.random(m) * 0.9999
        radius = HALO_SCALE_MM[s] * np.sqrt(u / (1.0 - u))
        azimuth = rng.uniform(-np.pi, np.pi, m)
        xt = HALO_CENTRE_MM + radius * np.cos(azimuth)
        yt = radius * np.sin(azimuth)
        in_aperture = (np.abs(xt) <= APERTURE_HALF_MM[0]) & (np.abs(yt) <= APERTURE_HALF_MM[1])
        transmission = np.where(in_aperture, 1.0, SHIELD_TRANSMISSION[s])
        transmission = np.where(xt < YOKE_EDGE_MM, transmission * YOKE_TRANSMISSION, transmission)
        in_frame = (np.abs(xt) <= PLANE_HALF_MM) & (np.abs(yt) <= PLANE_HALF_MM)
        keep = in_frame & (rng.random(m) < transmission)
        x[todo[keep]] = xt[keep]
        y[todo[keep]] = yt[keep]
        todo = todo[~keep]
    cos_theta = rng.random(k) ** (1.0 / 3.0)
    theta = np.arccos(cos_theta)
    azimuth = _wrap(np.arctan2(y, x - HALO_CENTRE_MM) + rng.standard_normal(k))
    kinetic, delay = _kinetic(rng, species, "halo")
    p, beta = _momentum(kinetic, species)
    depth = rng.uniform(100.0, 800.0, k)
    t = (DUMP_FACE_MM - depth) / C_MM_NS + depth / (cos_theta * beta * C_MM_NS) + delay
    return np.stack([x, y, p, azimuth, theta, t], axis=1)


def _backscatter(rng, species):
    """Albedo of the hall wall behind the plane: crosses it backwards (theta > pi/2)."""
    k = species.size
    x = np.empty(k)
    y = np.empty(k)
    cos_alpha = np.empty(k)
    azimuth = np.empty(k)
    todo = np.arange(k)
    while todo.size:
        m = todo.size
        wall_x = HALO_CENTRE_MM + WALL_SPREAD_MM * rng.standard_normal(m)
        wall_y = WALL_SPREAD_MM * rng.standard_normal(m)
        c = np.sqrt(rng.random(m) * (1.0 - 1e-6) + 1e-6)
        phi = rng.uniform(-np.pi, np.pi, m)
        reach = WALL_DISTANCE_MM * np.sqrt(1.0 - c * c) / c
        xt = wall_x + reach * np.cos(phi)
        yt = wall_y + reach * np.sin(phi)
        keep = (np.abs(xt) <= PLANE_HALF_MM) & (np.abs(yt) <= PLANE_HALF_MM)
        rows = todo[keep]
        x[rows], y[rows], cos_alpha[rows], azimuth[rows] = xt[keep], yt[keep], c[keep], phi[keep]
        todo = todo[~keep]
    kinetic, delay = _kinetic(rng, species, "backscatter")
    p, beta = _momentum(kinetic, species)
    t = ((DUMP_FACE_MM + WALL_DISTANCE_MM) / C_MM_NS
         + WALL_DISTANCE_MM / (cos_alpha * beta * C_MM_NS) + delay)
    return np.stack([x, y, p, azimuth, np.pi - np.arccos(cos_alpha), t], axis=1)


# ---- helpers --------------------------------------------------------------------------------------
def _wrap(angle):
    """Angles wrapped into [-pi, pi)."""
    return (angle + np.pi) % (2.0 * np.pi) - np.pi


def _columns(x, y, p, ux, uy, uz, t):
    """(x, y, p, phi_p, theta, t) from a direction vector that need not be normalized."""
    theta = np.arctan2(np.hypot(ux, uy), uz)
    return np.stack([x, y, p, np.arctan2(uy, ux), theta, t], axis=1)


def _momentum(kinetic, species):
    """Momentum (MeV/c) and velocity beta of particles with ``kinetic`` energy (MeV)."""
    mass = MASS_MEV[species]
    p = np.sqrt(kinetic * (kinetic + 2.0 * mass))
    return p, p / (kinetic + mass)


def _kinetic(rng, species, component):
    """Kinetic energy (MeV) and extra delay (ns) from the component's spectrum of each species."""
    kinetic = np.empty(species.size)
    delay = np.zeros(species.size)
    for code, recipe in SPECTRA[component].items():
        rows = np.flatnonzero(species == code)
        if not rows.size:
            continue
        weights = np.array([entry[0] for entry in recipe])
        choice = rng.choice(len(recipe), size=rows.size, p=weights / weights.sum())
        for index, (_, kind, params, delayed) in enumerate(recipe):
            sub = rows[choice == index]
            if not sub.size:
                continue
            kinetic[sub] = _draw_spectrum(rng, kind, params, sub.size, thresholded=code != NEUTRON)
            if delayed is not None:
                delay[sub] = _draw_delay(rng, delayed, sub.size)
    return kinetic, delay


def _draw_spectrum(rng, kind, params, n, thresholded):
    """``n`` kinetic energies (MeV) of one spectral shape; redrawn below the recording threshold."""
    out = np.empty(n)
    todo = np.arange(n)
    while todo.size:
        m = todo.size
        if kind == "lognormal":
            median, sigma = params
            values = median * np.exp(sigma * rng.standard_normal(m))
        elif kind == "power":  # T^-index on [low, high] by inverse CDF
            index, low, high = params
            u = rng.random(m)
            if index == 1.0:
                values = low * (high / low) ** u
            else:
                a, b = low ** (1.0 - index), high ** (1.0 - index)
                values = (a + u * (b - a)) ** (1.0 / (1.0 - index))
        elif kind == "line":
            energy, width = params
            values = energy + width * rng.standard_normal(m)
        elif kind == "gamma":
            shape, scale = params
            values = rng.gamma(shape, scale, m)
        elif kind == "brems":
            values = _bremsstrahlung(rng, *params, m)
        elif kind == "compton_back":
            median, sigma = params
            incoming = median * np.exp(sigma * rng.standard_normal(m))
            cos_psi = rng.uniform(-1.0, -0.3, m)
            values = incoming / (1.0 + incoming * (1.0 - cos_psi) / ELECTRON_MASS_MEV)
        else:  # pragma: no cover - the SPECTRA table is fixed
            raise ValueError(f"unknown spectrum kind {kind!r}")
        ok = values > (RECORD_THRESHOLD_MEV if thresholded else 0.0)
        out[todo[ok]] = values[ok]
        todo = todo[~ok]
    return out


def _bremsstrahlung(rng, low, high, n):
    """Photon energies k from (4/3 - 4/3 y + y^2) / y, y = k / high, on [low, high), by rejection."""
    out = np.empty(n)
    todo = np.arange(n)
    y_low = low / high
    while todo.size:
        y = y_low ** (1.0 - rng.random(todo.size))  # 1/y on [y_low, 1)
        keep = rng.random(todo.size) * (4.0 / 3.0) <= 4.0 / 3.0 - 4.0 / 3.0 * y + y * y
        out[todo[keep]] = high * y[keep]
        todo = todo[~keep]
    return out


def _draw_delay(rng, delayed, n):
    if delayed[0] == "exp":
        return rng.exponential(delayed[1], n)
    _, median, sigma = delayed
    return median * np.exp(sigma * rng.standard_normal(n))
