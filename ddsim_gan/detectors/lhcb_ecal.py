"""LHCb ECAL: a 30 x 30 window of 20 mm cells around the impact point of an electron.

Seed 001 (HSE / LHCb, Rogachev and Ratnikov, arXiv:2207.06329): a conditional GAN generates the
ECAL energy deposit in a 30 x 30 matrix of 20 mm cells ("to fit both 40 mm and 60 mm cells",
shower width < 600 mm) given the particle's entry point (x, y, z) and momentum (px, py, pz); an
auxiliary regressor trained with it predicts the shower asymmetry, a metric that is not
differentiable. The reference simulator stands in for Geant4 and produces calibrated cell energies
in MeV (a fully contained shower sums to the particle energy).

Calorimeter (LHCb collaboration, JINST 3 (2008) S08005, section 6.2)
    Shashlik modules of 66 layers of 2 mm lead and 4 mm scintillator (plus 2 x 0.12 mm paper),
    25 X0 in 42 cm; Moliere radius 3.5 cm; energy resolution sigma_E/E = (8.5-9.5) %/sqrt(E) +
    0.8 % (test beam); about 3000 photo-electrons per GeV. Effective quantities of the sampling
    structure (period 6.24 mm; PDG: Pb X0 = 5.61 mm, polystyrene X0 = 413 mm, minimum dE/dx
    1.122 and 2.052 MeV cm^2/g):
        X0_eff = 6.24 mm / (2/5.61 + 4.24/413) = 17.0 mm; R_M = 35 mm (LHCb);
        E_c,eff = MIP loss per X0_eff = (2.547 + 0.870) MeV per 0.367 X0 = 9.3 MeV;
        Z_eff = 70 (mass-weighted); period 1/F_s = 0.367 X0; e^ = 1/(1 + 0.007 (82 - 5.6)) = 0.65.
    The ECAL front is vertical while the LHCb frame is tilted by 3.601 mrad, so the face lies at
    z_face(y) = 12 620 mm + y tan(3.601 mrad) (12 620 mm: the nominal entry plane, ours).

Particles (ours: the seed's dataset carries a particle code; we simulate e- and e+)
    * entry points uniform over the face, |x| < 3000 mm, |y| < 2400 mm, outside the beam-pipe
      opening |x| < 323 mm and |y| < 242 mm (approximate inner edge);
    * pz log-uniform in [5, 100] GeV/c; slopes pointing to the origin, plus the dipole's kick
      (integral B dl = 4 T m, p_T kick 1.2 GeV/c, bending plane at z = 5.3 m): for charge q,
      tx = x / z + q (1.2 GeV / pz) (5.3 m / z), ty = y / z, each smeared by 3 mrad (vertex
      spread and multiple scattering); px = tx pz, py = ty pz;
    * the recorded entry point (x, y, z) lies on the trajectory within 3 mm (Gaussian) of the
      face; the simulator propagates it to the face, so z moves the impact point only by
      (z_face - z) tx, a sub-millimetre effect a model should learn to ignore.

Shower (GFlash for sampling media, :mod:`.gflash`, hep-ex/0001020)
    * fluctuated longitudinal gamma profile with y = E / 9.3 MeV and the sampling corrections;
    * the energy is carried by N = 60 + 40 sqrt(E / GeV) spots of E / N each (GFlash's spots),
      at depths drawn from the profile and lateral offsets drawn from the core + tail radial
      profile at tau = t / T, in units of R_M;
    * the incidence angle: a spot at depth t sits t X0 (px, py) / |p| away from the impact point
      along the projected direction, so an inclined shower is elongated and skewed (its
      asymmetry, :meth:`LHCbECAL.asymmetry`, grows with the angle);
    * sampling fluctuations as in GFlash's ``ApplySampling``: each spot's visible energy is
      Gamma-distributed with mean e and variance e sigma_s^2, sigma_s = 9 %/sqrt(GeV);
    * photo-statistics of 3 photo-electrons per MeV in every cell (Poisson), and a per-event
      calibration factor N(1, 0.8 %) (the constant term);
    * result: the cells sum to 0.995 p on average, sigma/E = 10 %/sqrt(E) at 5-10 GeV and 1.5 % at
      60-100 GeV; about 30 of the 900 cells fire, the hottest holds 40 % of the energy.

Readout of the 20 mm cells (ours: the 20 mm cells are a virtual subdivision of the 40/60/120 mm
cells, so their noise is an assumption): Gaussian noise sigma = 1 MeV in every cell, threshold
3 MeV (so about one noise-only hit per event).

Image frame: the window is aligned with the calorimeter's 20 mm grid (cell edges at multiples
of 20 mm in x and y on the face) and centred on the grid corner nearest to the impact point, so
the impact point lies within 10 mm of the image centre and its sub-cell offset
(:meth:`LHCbECAL.impact_point`) is visible in the energy centre.

Left out: the preshower and SPD in front of the ECAL, bremsstrahlung upstream, the projection
of lateral offsets on the inclined face (< 3 %), the lead-fibre response non-uniformity, the
40/60/120 mm readout granularity and its noise, pile-up.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from . import gflash
from .base import Condition, ConditionError, Detector

# ---- geometry ---------------------------------------------------------------------------------
N_CELLS = 30
CELL_MM = 20.0
HALF_WINDOW_MM = N_CELLS * CELL_MM / 2
Z_FACE_MM = 12_620.0
TILT_RAD = 3.601e-3
FACE_HALF_X_MM, FACE_HALF_Y_MM = 3000.0, 2400.0
BEAM_HOLE_HALF_X_MM, BEAM_HOLE_HALF_Y_MM = 323.0, 242.0

# ---- Shashlik sampling structure ------------------------------------------------------------
X0_MM, MOLIERE_MM, CRITICAL_MEV, Z_EFF = 17.0, 35.0, 9.3, 70.0
PERIOD_MM = 6.24
MEDIUM = gflash.SamplingMedium(x0_mm=X0_MM, moliere_mm=MOLIERE_MM, critical_mev=CRITICAL_MEV,
                               z_eff=Z_EFF, period_x0=PERIOD_MM / X0_MM,
                               ehat=gflash.ehat(82.0, 5.6))
DEPTH_X0 = 25.0
SAMPLING_TERM_MEV = (0.09 ** 2) * 1000.0    # sigma_s^2 in MeV: variance e sigma_s^2
PHOTOELECTRONS_PER_MEV = 3.0
CONSTANT_TERM = 0.008

# ---- spectrum and tracking --------------------------------------------------------------------
PZ_RANGE_GEV = (5.0, 100.0)
PT_KICK_GEV = 1.2
MAGNET_Z_MM = 5_300.0
ANGLE_SMEAR_RAD = 3e-3
ENTRY_Z_SPREAD_MM = 3.0
ASYMMETRY_DEPTH_MM = 50.0

# ---- readout ------------------------------------------------------------------------------------
NOISE_MEV = 1.0
THRESHOLD_MEV = 3.0


class LHCbECAL(Detector):
    """LHCb ECAL response to electrons in a 30 x 30 window of 20 mm cells (module docstring).

    Args:
        chunk_size: events simulated at once.
    """

    name = "lhcb_ecal"
    conditions = (
        Condition("x", "mm", -FACE_HALF_X_MM, FACE_HALF_X_MM),
        Condition("y", "mm", -FACE_HALF_Y_MM, FACE_HALF_Y_MM),
        Condition("z", "mm", Z_FACE_MM - 40.0, Z_FACE_MM + 40.0),
        Condition("px", "GeV/c", -30.0, 30.0),
        Condition("py", "GeV/c", -25.0, 25.0),
        Condition("pz", "GeV/c", PZ_RANGE_GEV[0], PZ_RANGE_GEV[1]),
    )
    sample_shape = (N_CELLS, N_CELLS)
    sample_unit = "MeV"
    axes = ("x", "y")
    cell_size = (CELL_MM, CELL_MM)
    threshold = THRESHOLD_MEV
    non_negative = True

    def __init__(self, chunk_size: int = 1024):
        self.chunk_size = int(chunk_size)

    # ---- the particle spectrum ----------------------------------------------------------------
    def sample_conditions(self, n: int, seed=None) -> np.ndarray:
        """Electrons and positrons from the interaction point over the ECAL face (module doc)."""
        rng = np.random.default_rng(seed)
        x = np.empty(n)
        y = np.empty(n)
        todo = np.arange(n)
        while todo.size:  # uniform over the face outside the beam-pipe opening
            xs = rng.uniform(-FACE_HALF_X_MM, FACE_HALF_X_MM, todo.size)
            ys = rng.uniform(-FACE_HALF_Y_MM, FACE_HALF_Y_MM, todo.size)
            keep = (np.abs(xs) > BEAM_HOLE_HALF_X_MM) | (np.abs(ys) > BEAM_HOLE_HALF_Y_MM)
            x[todo[keep]], y[todo[keep]] = xs[keep], ys[keep]
            todo = todo[~keep]
        low, high = PZ_RANGE_GEV
        pz = low * (high / low) ** rng.random(n)
        charge = rng.choice((-1.0, 1.0), n)
        z_face = _z_face(y)
        tx = x / z_face + charge * (PT_KICK_GEV / pz) * (MAGNET_Z_MM / z_face)
        ty = y / z_face
        tx += rng.normal(0.0, ANGLE_SMEAR_RAD, n)
        ty += rng.normal(0.0, ANGLE_SMEAR_RAD, n)
        # the entry point is recorded on the trajectory a few mm off the face
        z = z_face + rng.normal(0.0, ENTRY_Z_SPREAD_MM, n)
        return np.stack([x, y, z, tx * pz, ty * pz, pz], axis=1).astype(np.float32)

    # ---- geometry of one event ------------------------------------------------------------------
    def face_point(self, conditions) -> np.ndarray:
        """Impact point on the ECAL face in LHCb coordinates: ``[n, 2]`` mm (float64)."""
        c = np.asarray(self.check_conditions(conditions), dtype=np.float64)
        tx, ty = c[:, 3] / c[:, 5], c[:, 4] / c[:, 5]
        # the face z depends on y: y_f = y + L ty with L = z_face(y_f) - z, solved for L
        lever = (_z_face(c[:, 1]) - c[:, 2]) / (1.0 - ty * np.tan(TILT_RAD))
        return np.stack([c[:, 0] + lever * tx, c[:, 1] + lever * ty], axis=1)

    def impact_point(self, conditions) -> np.ndarray:
        """Impact point in image coordinates (mm from the image centre): ``[n, 2]`` in [-10, 10]."""
        face = self.face_point(conditions)
        return face - CELL_MM * np.round(face / CELL_MM)

    def asymmetry(self, samples, conditions, orthogonal: bool = False,
                  depth_mm: float = ASYMMETRY_DEPTH_MM) -> np.ndarray:
        """Shower asymmetry along (or across) the projected incidence direction: ``[n]``.

        The image is cut in two by a line perpendicular to û, the direction (px, py) of the
        momentum's projection on the face (parallel to û with ``orthogonal=True``), through the
        point where the trajectory reaches ``depth_mm`` behind the face: the impact point plus
        ``depth_mm`` (px, py) / |p|. With E_+ the energy of the cells whose centre lies on the
        side û points to (to the left of û, for ``orthogonal``) and E_- the rest,

            A = (E_+ - E_-) / (E_+ + E_-),

        0 for an empty image. This is the seed's asymmetry (arXiv:2207.06329 and its group's
        public evaluation code: a line a fixed depth behind the entry point, perpendicular to
        the transverse momentum, sides signed by the direction). An inclined shower is
        elongated downstream, so A grows with the angle; the transverse (``orthogonal``)
        asymmetry averages to zero. The default depth, 50 mm (3 X0), keeps A from saturating at
        large angles. For (px, py) = (0, 0) û is +x. Cells count by their centre; a cell centred on
        the line counts half on each side.
        """
        array = np.clip(self.check_samples(samples).astype(np.float64), 0.0, None)
        c = np.asarray(self.check_conditions(conditions), dtype=np.float64)
        if len(c) != len(array):
            raise ValueError(f"asymmetry: {len(array)} samples but {len(c)} conditions")
        momentum = np.sqrt((c[:, 3:6] ** 2).sum(axis=1))
        impact = self.impact_point(c) + depth_mm * c[:, 3:5] / momentum[:, None]
        norm = np.hypot(c[:, 3], c[:, 4])
        ux = np.where(norm > 0, c[:, 3] / np.where(norm > 0, norm, 1.0), 1.0)
        uy = np.where(norm > 0, c[:, 4] / np.where(norm > 0, norm, 1.0), 0.0)
        if orthogonal:
            ux, uy = -uy, ux
        centres = (np.arange(N_CELLS) - (N_CELLS - 1) / 2.0) * CELL_MM
        # signed distance of every cell centre from the line, along (ux, uy): [n, 30, 30]
        along = ((centres[None, :, None] - impact[:, 0, None, None]) * ux[:, None, None]
                 + (centres[None, None, :] - impact[:, 1, None, None]) * uy[:, None, None])
        sign = np.sign(along)
        total = array.sum(axis=(1, 2))
        diff = (array * sign).sum(axis=(1, 2))
        return np.where(total > 0, diff / np.where(total > 0, total, 1.0), 0.0)

    # ---- simulation -----------------------------------------------------------------------------
    def simulate_at(self, conditions, seed=None) -> np.ndarray:
        conditions = self.check_conditions(conditions)
        bad = np.flatnonzero(conditions[:, 5] <= 0)
        if bad.size:
            raise ConditionError(f"conditions: row {bad[0]} has pz = {conditions[bad[0], 5]} "
                                 f"GeV/c; detector {self.name!r} needs particles entering the "
                                 "ECAL (pz > 0)")
        rng = np.random.default_rng(seed)
        n = len(conditions)
        n_cells = N_CELLS * N_CELLS
        out = np.zeros(n * n_cells, dtype=np.float32)
        for start in range(0, n, self.chunk_size):
            chunk = conditions[start:start + self.chunk_size]
            cells, values = self._simulate_chunk(chunk, rng)
            out[start * n_cells + cells] = values
        return out.reshape((n,) + self.sample_shape)

    def _simulate_chunk(self, conditions, rng):
        n = len(conditions)
        c = conditions.astype(np.float64)
        momentum = np.sqrt((c[:, 3:6] ** 2).sum(axis=1))
        energy = momentum * 1000.0                               # electrons: E = |p|, MeV
        direction_x, direction_y = c[:, 3] / momentum, c[:, 4] / momentum
        impact = self.impact_point(conditions)

        alpha, beta, t_max = gflash.longitudinal_parameters(rng, energy, MEDIUM)
        n_spots = (60 + 40 * np.sqrt(energy / 1000.0)).astype(np.int64)
        owner = np.repeat(np.arange(n), n_spots)
        f32 = np.float32
        depth = (rng.standard_gamma(alpha[owner].astype(f32), dtype=f32)
                 / beta[owner].astype(f32))
        contained = depth < f32(DEPTH_X0)                        # the rest leaks out the back
        tau = np.minimum(depth / t_max[owner].astype(f32), f32(20.0))
        core, tail, weight = gflash.radial_parameters(energy[owner], tau, MEDIUM)
        dx, dy, _ = gflash.lateral_offsets(rng, core, tail, weight, MOLIERE_MM)
        shift = depth * f32(X0_MM)
        x = impact[owner, 0].astype(f32) + shift * direction_x[owner].astype(f32) + dx
        y = impact[owner, 1].astype(f32) + shift * direction_y[owner].astype(f32) + dy

        spot_energy = (energy / n_spots)[owner].astype(f32)
        visible = (rng.standard_gamma(spot_energy / f32(SAMPLING_TERM_MEV), dtype=f32)
                   * f32(SAMPLING_TERM_MEV))
        ix = np.floor((x + f32(HALF_WINDOW_MM)) * f32(1.0 / CELL_MM))
        iy = np.floor((y + f32(HALF_WINDOW_MM)) * f32(1.0 / CELL_MM))
        inside = contained & (ix >= 0) & (ix < N_CELLS) & (iy >= 0) & (iy < N_CELLS)
        n_cells = N_CELLS * N_CELLS
        cell = ((owner[inside] * N_CELLS + ix[inside].astype(np.int64)) * N_CELLS
                + iy[inside].astype(np.int64))
        dense = np.bincount(cell, weights=visible[inside], minlength=n * n_cells)
        touched = np.zeros(dense.size, dtype=bool)
        touched[cell] = True
        cells = np.flatnonzero(touched)
        return _digitize(rng, cells, dense[cells], n)


def _z_face(y):
    return Z_FACE_MM + np.asarray(y) * np.tan(TILT_RAD)


def _digitize(rng, cells, deposits, n_events):
    """Photo-statistics, calibration, noise and threshold; flat cell indices and MeV values."""
    n_cells = N_CELLS * N_CELLS
    measured = rng.poisson(deposits * PHOTOELECTRONS_PER_MEV) / PHOTOELECTRONS_PER_MEV
    gain = 1.0 + CONSTANT_TERM * rng.standard_normal(n_events)
    measured = measured * gain[cells // n_cells] + NOISE_MEV * rng.standard_normal(cells.size)
    z = THRESHOLD_MEV / NOISE_MEV
    p_fire = special.ndtr(-z)
    n_fire = rng.binomial(n_cells, p_fire, n_events)
    noise_cells = np.repeat(np.arange(n_events), n_fire) * n_cells + rng.integers(
        0, n_cells, int(n_fire.sum()))
    noise_values = NOISE_MEV * -special.ndtri(p_fire * (1.0 - rng.random(noise_cells.size)))
    real = np.isin(noise_cells, cells)
    keep = measured >= THRESHOLD_MEV
    return (np.concatenate([noise_cells[~real], cells[keep]]),
            np.concatenate([noise_values[~real], measured[keep]]).astype(np.float32))
