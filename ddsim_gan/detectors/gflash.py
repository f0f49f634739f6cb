"""GFlash electromagnetic shower parameterisation for sampling calorimeters (NumPy).

Shared by the reference simulators of sampling calorimeters (``siw_ecal``, ``lhcb_ecal``). The
formulas are those of G. Grindhammer and S. Peters, "The parameterized simulation of
electromagnetic showers in homogeneous and sampling calorimeters", hep-ex/0001020, with the
coefficients of the Geant4 implementation (``GFlashSamplingShowerTuning``,
``GFlashSamplingShowerParameterisation``, Geant4 11). The homogeneous-medium variant is in
``darkshine`` (kept there so that its outputs stay bit-identical).

Longitudinal profile (per shower, fluctuated)
    dE/dt = E (beta t)^(alpha-1) beta e^(-beta t) / Gamma(alpha), t in radiation lengths X0,
    y = E / E_c. Homogeneous means  T_hom = ln y - 0.812,  alpha_hom = 0.81 + (0.458 + 2.26/Z) ln y;
    in a sampling medium with period 1/F_s (X0 per absorber + active layer) and e/mip ratio
    e^ = 1 / (1 + 0.007 (Z_passive - Z_active)):
        T = T_hom - 0.55 / F_s - 0.69 (1 - e^),    alpha = alpha_hom - 0.476 / F_s,
        sigma(ln T) = 1 / (-2.5 + 1.25 ln y),  sigma(ln alpha) = 1 / (-0.82 + 0.79 ln y)
        (both at most 0.5),  corr(ln T, ln alpha) = 0.784 - 0.023 ln y,
    and Geant4's floors <ln T>, <ln alpha> >= 0.1, T >= 1, alpha >= 1.1.

Radial profile (per depth tau = t / T, E in GeV, radii in units of the Moliere radius R_M)
    f(r) = p 2 r R_C^2 / (r^2 + R_C^2)^2 + (1 - p) 2 r R_T^2 / (r^2 + R_T^2)^2 with
        R_C = 0.0251 + 0.00319 ln E + (0.1162 - 0.000381 Z) tau
              - 0.0203 (1 - e^) + 0.0397 e^(-tau) / F_s,
        R_T = (0.659 - 0.00309 Z) (e^(-2.59 (tau - 0.645)) + e^((0.3585 + 0.0421 ln E)(tau - 0.645)))
              - 0.14 (1 - e^) - 0.495 e^(-tau) / F_s,
        p   = (2.632 - 0.00094 Z) exp(x - e^x) + (1 - e^)(0.348 - 0.642 e^(-(tau - 1)^2) / F_s),
              x = (0.401 + 0.00187 Z - tau) / (1.313 - 0.0686 ln E), clipped to [0, 1];
    R_C >= 0.01 and R_T >= 1.5 R_C are enforced (ours) where the sampling terms would cross them.
    Each term of f is the 2D density R^2 / (pi (r^2 + R^2)^2), a bivariate Student t with two
    degrees of freedom, which :func:`lateral_offsets` samples without trigonometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

#: Photon pair-conversion length in X0 (PDG review "Passage of particles through matter").
PHOTON_CONVERSION_X0 = 9.0 / 7.0


@dataclass(frozen=True)
class SamplingMedium:
    """Effective properties of a sampling calorimeter seen by GFlash.

    Attributes:
        x0_mm: radiation length that the depth ``t`` is counted in.
        moliere_mm: Moliere radius that the radial profile is scaled by.
        critical_mev: critical energy E_c (``y = E / E_c``).
        z_eff: effective atomic number (mass-weighted, dominated by the absorber).
        period_x0: 1 / F_s, the thickness of one absorber + active period in X0.
        ehat: e/mip ratio, 1 / (1 + 0.007 (Z_passive - Z_active)).
    """

    x0_mm: float
    moliere_mm: float
    critical_mev: float
    z_eff: float
    period_x0: float
    ehat: float


def ehat(z_passive: float, z_active: float) -> float:
    """GFlash e/mip ratio of a sampling structure, 1 / (1 + 0.007 (Z_passive - Z_active))."""
    return 1.0 / (1.0 + 0.007 * (z_passive - z_active))


def longitudinal_parameters(rng, energy_mev, medium: SamplingMedium):
    """Fluctuated ``(alpha, beta, t_max)`` of one shower per energy (MeV), float64 arrays.

    Draws two standard normals per shower (correlated log-normal T and alpha). ``y`` is floored
    at e^3 (20 E_c), below which the fitted widths turn negative; softer showers take its shape.
    """
    energy_mev = np.asarray(energy_mev, dtype=np.float64)
    log_y = np.log(np.maximum(energy_mev / medium.critical_mev, np.e ** 3.0))
    mean_t = np.maximum(log_y - 0.812, 0.1) - 0.55 * medium.period_x0 - 0.69 * (1.0 - medium.ehat)
    alpha_hom = np.maximum(0.81 + (0.458 + 2.26 / medium.z_eff) * log_y, 0.1)
    mean_log_t = np.maximum(np.log(np.maximum(mean_t, 1e-3)), 0.1)
    mean_log_alpha = np.maximum(np.log(np.maximum(alpha_hom - 0.476 * medium.period_x0, 1e-3)), 0.1)
    sigma_log_t = np.minimum(0.5, 1.0 / (-2.5 + 1.25 * log_y))
    sigma_log_alpha = np.minimum(0.5, 1.0 / (-0.82 + 0.79 * log_y))
    rho = np.clip(0.784 - 0.023 * log_y, -1.0, 1.0)
    g1, g2 = rng.standard_normal((2, energy_mev.size))
    t_max = np.maximum(1.0, np.exp(mean_log_t + sigma_log_t * g1))
    alpha = np.maximum(1.1, np.exp(mean_log_alpha + sigma_log_alpha
                                   * (rho * g1 + np.sqrt(1.0 - rho ** 2) * g2)))
    beta = (alpha - 1.0) / t_max
    return alpha, beta, t_max


def radial_parameters(energy_mev, tau, medium: SamplingMedium, dtype=np.float32):
    """``(core_radius, tail_radius, core_probability)`` at relative depths ``tau``.

    ``energy_mev`` and ``tau`` broadcast against each other; radii are in units of R_M.
    """
    f = np.dtype(dtype).type
    log_e = np.log(np.maximum(np.asarray(energy_mev, dtype=np.float64), 1.0) / 1000.0).astype(dtype)
    tau = np.asarray(tau, dtype=dtype)
    z, fs_inv, one_minus_ehat = medium.z_eff, medium.period_x0, 1.0 - medium.ehat
    decay = np.exp(-tau)
    core = (f(0.0251) + f(0.00319) * log_e + f(0.1162 - 0.000381 * z) * tau
            + f(-0.0203 * one_minus_ehat) + f(0.0397 * fs_inv) * decay)
    shifted = tau - f(0.645)
    tail = (f(0.659 - 0.00309 * z) * (np.exp(f(-2.59) * shifted)
                                       + np.exp((f(0.3585) + f(0.0421) * log_e) * shifted))
            + f(-0.14 * one_minus_ehat) + f(-0.495 * fs_inv) * decay)
    arg = (f(0.401 + 0.00187 * z) - tau) / (f(1.313) - f(0.0686) * log_e)
    weight = (f(2.632 - 0.00094 * z) * np.exp(arg - np.exp(arg))
              + f(one_minus_ehat) * (f(0.348) - f(0.642 * fs_inv) * np.exp(-(tau - f(1.0)) ** 2)))
    core = np.maximum(core, f(0.01))
    tail = np.maximum(tail, core * f(1.5))  # the tail stays wider than the core
    return core, tail, np.clip(weight, f(0.0), f(1.0))


def lateral_offsets(rng, core_radius, tail_radius, core_probability, moliere_mm: float):
    """Lateral ``(dx, dy, in_tail)`` in mm of one particle or spot per row, float32.

    The radius density 2 r R^2 / (r^2 + R^2)^2 in the plane is a bivariate Student t with two
    degrees of freedom and scale R / sqrt(2): (dx, dy) = R (Z1, Z2) / sqrt(2 E), Z normal, E
    exponential. Its far tail (density ~ r^-3) is kept: what lands outside the image is lateral
    leakage.
    """
    f32 = np.float32
    n = np.size(core_radius)
    in_tail = rng.random(n, dtype=f32) >= core_probability
    scale = np.where(in_tail, tail_radius, core_radius) * f32(moliere_mm / np.sqrt(2.0))
    gauss = rng.standard_normal((2, n), dtype=f32)
    stretch = scale / np.sqrt(rng.standard_exponential(n, dtype=f32) + f32(1e-12))
    return gauss[0] * stretch, gauss[1] * stretch, in_tail


def gamma_pdf(t, alpha, beta):
    """Longitudinal profile density (per X0) at depth ``t`` >= 0 (0 for t <= 0), float64."""
    t = np.asarray(t, dtype=np.float64)
    safe = np.maximum(t, 1e-12)
    log_pdf = (np.log(beta) + (alpha - 1.0) * np.log(beta * safe) - beta * safe
               - special.gammaln(alpha))
    return np.where(t > 0, np.exp(log_pdf), 0.0)


def landau(rng, n: int, dtype=np.float32):
    """Standard Landau variates (mode -0.2228) by Chambers-Mallows-Stuck for alpha = 1, beta = 1.

    X = (2/pi) [(pi/2 + U) tan U - ln((pi/2) W cos U / (pi/2 + U))], U ~ U(-pi/2, pi/2),
    W ~ Exp(1) (J. M. Chambers, C. L. Mallows, B. W. Stuck, JASA 71 (1976) 340); this is the
    density of L. Landau, J. Phys. USSR 8 (1944) 201, as in ``scipy.stats.landau``.
    """
    f = np.dtype(dtype).type
    half_pi = f(np.pi / 2)
    u = (rng.random(n, dtype=dtype) - f(0.5)) * f(np.pi) * f(0.99999)
    w = rng.standard_exponential(n, dtype=dtype) + f(1e-12)
    h = half_pi + u
    return f(2.0 / np.pi) * (h * np.tan(u) - np.log(half_pi * w * np.cos(u) / h))
