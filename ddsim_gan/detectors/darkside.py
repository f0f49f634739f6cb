"""DarkSide-20k: S1, S2 and f200 of a dual-phase liquid-argon TPC for one recoil.

The conditions are the recoil energy E (keV, nuclear-recoil scale keVnr for NR and electron-
equivalent keVee for ER) and the recoil type (0 = NR, 1 = ER). The seed (000, Jethwa, Zammit
Lonardelli, Price, Menary) trains an auto-regressive chain p(f200|S1,S2,E) p(S2|S1,E) p(S1|E) on G4DS
output for 5-235 keV nuclear recoils and proposes adding electron recoils; S1, S2 and f200 are the
observables it uses for WIMP/background discrimination. The reference simulator stands in for G4DS
and follows every recoil through the microphysics chain below, event by event.

Quanta (Lindhard; Doke; Kubota)
    * nuclear recoils lose part of their energy to atomic motion: electronic fraction
      L(E) = k g(eps) / (1 + k g(eps)), g = 3 eps^0.15 + 0.7 eps^0.6 + eps, eps = 11.5 E[keV] Z^(-7/3),
      k = 0.133 Z^(2/3) A^(-1/2) = 0.144 for argon (Z = 18, A = 40) (J. Lindhard et al., Mat. Fys.
      Medd. Dan. Vid. Selsk. 33, 10 (1963)); electron recoils have L = 1;
    * the number of quanta is N_q = L E / W with W = 19.5 eV (Doke et al., Jpn. J. Appl. Phys. 41,
      1538 (2002)), Gaussian with variance F N_q: Fano factor F = 0.107 for ER (Doke et al., NIM 134,
      353 (1976)); F = 1 for NR, standing in for the event-by-event fluctuation of the Lindhard
      partition (assumption, NEST-like);
    * N_q splits binomially into ions and excitons with N_ex / N_i = 0.21 for ER (Kubota et al.,
      PRB 17, 2762 (1978)) and 1.0 for NR (as in the SCENE and ARIS analyses).

Recombination (Thomas-Imel box; Doke escape fraction)
    * each ion recombines (giving one more photon; one electron fewer) with a probability drawn per
      event, r ~ Normal(r_bar, sigma_r) clipped to [0, 1], then Binomial(N_i, r): the recombination
      fluctuation moves quanta between light and charge, so S1 and S2 anti-correlate at fixed E;
    * r_bar = r_max (1 - ln(1 + xi) / xi), xi = C N_i (F_0 / F) with the Thomas-Imel 1/F field
      dependence (J. Thomas and D. A. Imel, PRA 36, 614 (1987)); F = 200 V/cm (DarkSide-50 and the
      DS-20k design); C = 0.0142 (ER) and 0.0060 (NR) at F_0 = 200 V/cm, chosen so that 41.5 keV ER
      (83mKr) keep ~90 % of their null-field light (DarkSide-50 saw about 7.0 of 7.9 PE/keV) and
      nuclear recoils free ~5 electrons/keVnr at 10 keVnr, ~4 at 40 keVnr and ~2 at 200 keVnr
      (the size of the SCENE, PRD 91, 092007 (2015), and ARIS ionization yields near 200 V/cm);
    * r_max = 0.734 for ER: even at null field about a quarter of the electrons escape (Doke et al.
      2002: ~40 photons/keV for ER at zero field = (N_ex + r_max N_i) / E); r_max = 1 for NR;
    * sigma_r = 0.04 (ER) and 0.05 (NR): recombination fluctuations wider than binomial (assumption,
      the size NEST uses for liquid xenon);
    * NR light is further quenched by Birks-type saturation (D.-M. Mei et al., Astropart. Phys. 30,
      12 (2008)): each NR photon survives with probability f_l = 0.765 / (1 + 0.049 sqrt(E/keV)),
      the sqrt(E) standing for the electronic stopping power of a recoil in the Lindhard regime;
      a and b are tuned so that NR give ~1.55 PE/keVnr at 40 keVnr and ~2.2 PE/keVnr at 200 keVnr
      with the field on (the order of DarkSide-50's NR scale) and the null-field relative
      efficiency is L_eff ~ 0.26 at 50 keVnr (SCENE: 0.25-0.30 between 10 and 57 keVnr).

S1 and its pulse shape
    * g1 = 0.182 detected photons per photon, which with the 10 % cross-talk below gives 0.20 PE per
      photon: DarkSide-50's 8 PE/keVee for ER at null field (Agnes et al., PRD 93, 081101 (2016))
      divided by ~40 photons/keV. With the 200 V/cm drift field the light yield is lower: about
      5.4 -> 7.8 PE/keV for ER from 5 to 235 keV (recombination is weaker at low energy) and
      1.2 -> 2.3 PE/keVnr for NR; g1 varies linearly by +-6 % with drift depth (more light near
      the cathode, assumption);
    * SiPM correlated noise: Poisson(0.10) prompt cross-talk PE per PE (DS-20k NUV-HD-Cryo SiPMs,
      assumption at the operating over-voltage); dark counts Poisson(1.5) PE per event spread over
      the 7 us S1 window (0.01 Hz/mm^2 over ~21 m^2 of photosensors, assumption), of which
      200/7000 land in the prompt window; single-PE charge resolution 10 %;
    * f200 = charge in the first 200 ns / S1. Singlet (tau = 7 ns) and triplet (tau = 1.5 us)
      states (Hitachi et al., PRB 27, 5279 (1983)): a photon is prompt with probability
      p = f_s + (1 - f_s)(1 - e^(-200/1500)), singlet fraction f_s = 0.20 for ER (f200 ~ 0.30) and
      0.62 -> 0.68 for NR rising with log E between 5 and 235 keVnr (f200 ~ 0.67 -> 0.72, mean ~ 0.7);
      p gets a per-event Normal spread of 0.015, then prompt photons are Binomial(N_det, p), so the
      f200 width shrinks like 1/sqrt(S1); the mostly late dark counts pull f200 down at small S1
      (NR at 5 keVnr: f200 ~ 0.5 +- 0.24). An event with no S1 charge at all (0.4 % of NR at
      5 keVnr) has S1 = 0 and f200 = 0.

S2
    * electrons drift through up to 3.5 m of argon (about the height of the DS-20k TPC) at
      0.93 mm/us (DarkSide-50 drift velocity at 200 V/cm), the event depth uniform, and survive
      with exp(-t_drift / 10 ms) (electron lifetime, assumption; DarkSide-50 reached > 5 ms), so
      S2 loses up to 31 % with depth;
    * extraction efficiency 0.98 into the gas pocket (assumption for the 2.8 kV/cm extraction
      field); the number of survivors and of extracted electrons is binomial;
    * each extracted electron gives a Gamma-distributed electroluminescence signal of mean 23 PE
      (DarkSide-50 low-mass search, Agnes et al., PRL 121, 081307 (2018)) and relative width 0.25
      (assumption), so S2 ~ Gamma(N_ext / 0.25^2, 23 x 0.25^2).

Left out: position reconstruction and the corrections that undo depth and radial effects, the
radial S2 variation, multiple scatters, S1 saturation and trigger thresholds.
"""

from __future__ import annotations

import numpy as np

from .base import Condition, ConditionError, Detector

# Argon and its quanta
Z_AR, A_AR = 18.0, 40.0
LINDHARD_K = 0.133 * Z_AR ** (2.0 / 3.0) / np.sqrt(A_AR)  # 0.144
W_KEV = 19.5e-3
FANO = {"NR": 1.0, "ER": 0.107}
EXCITON_ION_RATIO = {"NR": 1.0, "ER": 0.21}

# Recombination (index 0 = NR, 1 = ER everywhere below)
DRIFT_FIELD_V_CM = 200.0
BOX_CONSTANT_AT_200 = np.array([0.0060, 0.0142])
MAX_RECOMBINATION = np.array([1.0, 0.734])
RECOMBINATION_SIGMA = np.array([0.05, 0.04])
NR_BIRKS_A, NR_BIRKS_B = 0.765, 0.049  # f_l = A / (1 + B sqrt(E / keV))

# Light detection and pulse shape
G1 = 0.182
G1_DEPTH_SLOPE = 0.06
CROSSTALK_PER_PE = 0.10
DARK_PE_PER_EVENT = 1.5
S1_WINDOW_NS, PROMPT_WINDOW_NS = 7000.0, 200.0
SPE_RESOLUTION = 0.10
SINGLET_NS, TRIPLET_NS = 7.0, 1500.0
SINGLET_FRACTION_ER = 0.20
SINGLET_FRACTION_NR = (0.62, 0.68)  # at 5 and 235 keVnr, linear in log E
PROMPT_SPREAD = 0.015

# Charge drift, extraction and electroluminescence
DRIFT_LENGTH_MM, DRIFT_VELOCITY_MM_US = 3500.0, 0.93
ELECTRON_LIFETIME_US = 10_000.0
EXTRACTION_EFFICIENCY = 0.98
S2_PE_PER_ELECTRON = 23.0
S2_GAIN_SPREAD = 0.25

ENERGY_RANGE_KEV = (5.0, 235.0)
RECOIL_TYPES = ("NR", "ER")


def lindhard_factor(energy_kev) -> np.ndarray:
    """Electronic fraction L(E) of a nuclear recoil of ``energy_kev`` in argon (Lindhard 1963)."""
    eps = 11.5 * np.asarray(energy_kev, dtype=np.float64) * Z_AR ** (-7.0 / 3.0)
    g = 3.0 * eps ** 0.15 + 0.7 * eps ** 0.6 + eps
    return LINDHARD_K * g / (1.0 + LINDHARD_K * g)


def mean_recombination(n_ions, recoil_type, field_v_cm: float = DRIFT_FIELD_V_CM) -> np.ndarray:
    """Thomas-Imel box recombination probability, capped by the null-field escape fraction."""
    xi = BOX_CONSTANT_AT_200[recoil_type] * np.maximum(n_ions, 1e-9) * (DRIFT_FIELD_V_CM / field_v_cm)
    return MAX_RECOMBINATION[recoil_type] * (1.0 - np.log1p(xi) / xi)


def prompt_probability(energy_kev, recoil_type) -> np.ndarray:
    """Mean probability that a scintillation photon arrives within 200 ns (before SiPM noise)."""
    low, high = SINGLET_FRACTION_NR
    lo_e, hi_e = ENERGY_RANGE_KEV
    slope = (high - low) / np.log(hi_e / lo_e)
    singlet_nr = np.clip(low + slope * np.log(np.maximum(energy_kev, 1e-3) / lo_e), 0.0, 1.0)
    singlet = np.where(recoil_type == 1, SINGLET_FRACTION_ER, singlet_nr)
    prompt_singlet = 1.0 - np.exp(-PROMPT_WINDOW_NS / SINGLET_NS)
    prompt_triplet = 1.0 - np.exp(-PROMPT_WINDOW_NS / TRIPLET_NS)
    return singlet * prompt_singlet + (1.0 - singlet) * prompt_triplet


class DarkSide20k(Detector):
    """DarkSide-20k LAr TPC response (S1, S2, f200) to one recoil (see the module docstring).

    ``drift_field_v_cm`` rescales the Thomas-Imel recombination (xi ~ 1/F): a weaker field gives
    more light and less charge; as F -> 0 nuclear recoils recombine completely and S2 vanishes.
    """

    name = "darkside"
    conditions = (
        Condition("E_recoil", "keV", *ENERGY_RANGE_KEV),
        Condition("recoil_type", "", 0, 1, labels=RECOIL_TYPES),
    )
    sample_shape = (3,)
    sample_names = ("S1", "S2", "f200")
    sample_units = ("PE", "PE", "")
    axes = None
    non_negative = True

    def __init__(self, drift_field_v_cm: float = DRIFT_FIELD_V_CM):
        if not drift_field_v_cm > 0:
            raise ValueError(f"drift_field_v_cm must be > 0, got {drift_field_v_cm}")
        self.drift_field_v_cm = float(drift_field_v_cm)

    # ---- the reference spectrum -------------------------------------------------------------
    def sample_conditions(self, n: int, seed=None) -> np.ndarray:
        """E uniform over [5, 235] keV (flat, as a training grid is generated), NR/ER 50/50."""
        rng = np.random.default_rng(seed)
        energy = rng.uniform(*ENERGY_RANGE_KEV, n)
        recoil_type = rng.integers(0, 2, n)
        return np.stack([energy, recoil_type], axis=1).astype(np.float32)

    # ---- validation ---------------------------------------------------------------------------
    def check_conditions(self, conditions, source: str = "conditions", check_range: bool = False):
        """The base checks plus: E > 0 and recoil_type exactly 0 (NR) or 1 (ER)."""
        array = super().check_conditions(conditions, source, check_range)
        bad_energy = np.flatnonzero(array[:, 0] <= 0)
        if bad_energy.size:
            row = int(bad_energy[0])
            raise ConditionError(
                f"{source}: row {row} has E_recoil = {array[row, 0]:g} keV; a recoil energy must "
                f"be > 0 for detector {self.name!r}")
        return array

    # ---- the TPC response ---------------------------------------------------------------------
    def simulate_at(self, conditions, seed=None) -> np.ndarray:
        conditions = self.check_conditions(conditions)
        rng = np.random.default_rng(seed)
        energy = conditions[:, 0].astype(np.float64)
        kind = conditions[:, 1].astype(np.int64)  # 0 = NR, 1 = ER
        is_er = kind == 1
        n = energy.size

        # Quanta: Lindhard-quenched energy / W with Fano fluctuations, split into ions and excitons.
        electronic = np.where(is_er, energy, energy * lindhard_factor(energy))
        mean_quanta = electronic / W_KEV
        fano = np.where(is_er, FANO["ER"], FANO["NR"])
        quanta = np.rint(mean_quanta + np.sqrt(fano * mean_quanta) * rng.standard_normal(n))
        quanta = np.maximum(quanta, 0).astype(np.int64)
        ion_fraction = 1.0 / (1.0 + np.where(is_er, EXCITON_ION_RATIO["ER"], EXCITON_ION_RATIO["NR"]))
        ions = rng.binomial(quanta, ion_fraction)
        excitons = quanta - ions

        # Recombination: one probability per event (fluctuating), binomial per ion.
        r_bar = mean_recombination(ion_fraction * mean_quanta, kind, self.drift_field_v_cm)
        r = np.clip(r_bar + RECOMBINATION_SIGMA[kind] * rng.standard_normal(n), 0.0, 1.0)
        recombined = rng.binomial(ions, r)
        light_survival = np.where(is_er, 1.0, NR_BIRKS_A / (1.0 + NR_BIRKS_B * np.sqrt(energy)))
        photons = rng.binomial(excitons + recombined, light_survival)
        electrons = ions - recombined

        # Event depth: drift time, depth-dependent light collection, electron attachment.
        depth = rng.random(n)  # 0 at the liquid surface (anode), 1 at the cathode
        drift_us = depth * DRIFT_LENGTH_MM / DRIFT_VELOCITY_MM_US
        g1 = G1 * (1.0 + G1_DEPTH_SLOPE * (2.0 * depth - 1.0))

        # S1: detected photo-electrons split into prompt and late, then SiPM noise and charge.
        detected = rng.binomial(photons, g1)
        p_prompt = np.clip(prompt_probability(energy, kind) + PROMPT_SPREAD * rng.standard_normal(n),
                           0.0, 1.0)
        prompt = rng.binomial(detected, p_prompt)
        late = detected - prompt
        dark_prompt_fraction = PROMPT_WINDOW_NS / S1_WINDOW_NS
        prompt = prompt + rng.poisson(CROSSTALK_PER_PE * prompt + DARK_PE_PER_EVENT * dark_prompt_fraction)
        late = late + rng.poisson(CROSSTALK_PER_PE * late + DARK_PE_PER_EVENT * (1 - dark_prompt_fraction))
        noise = rng.standard_normal((2, n))
        prompt_charge = np.maximum(prompt + SPE_RESOLUTION * np.sqrt(prompt) * noise[0], 0.0)
        late_charge = np.maximum(late + SPE_RESOLUTION * np.sqrt(late) * noise[1], 0.0)
        s1 = prompt_charge + late_charge
        f200 = np.divide(prompt_charge, s1, out=np.zeros(n), where=s1 > 0)

        # S2: survival over the drift and extraction (one binomial), electroluminescence gain.
        keep = EXTRACTION_EFFICIENCY * np.exp(-drift_us / ELECTRON_LIFETIME_US)
        extracted = rng.binomial(electrons, keep)
        s2 = rng.gamma(extracted / S2_GAIN_SPREAD ** 2, S2_PE_PER_ELECTRON * S2_GAIN_SPREAD ** 2)

        return np.stack([s1, s2, f200], axis=1).astype(np.float32)
