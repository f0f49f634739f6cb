"""NICA MPD TPC: the signal of one track segment on 8 pads x 16 time buckets of one pad row.

Seed 001 ("Time projection chamber", "Assumptions for fast simulation") factorizes the TPC response
by pad row: each track segment crossing a row is simulated alone, in a local window of 8 pads x 16
time buckets. As in TPC-FastSim (A. Maevskiy et al., Eur. Phys. J. C 81 (2021) 599,
arXiv:2103.05729) the conditions are the crossing angle, the dip angle, the drift length and the
pad coordinate; TPC-FastSim's ranges (crossing angle +-20 deg, dip angle +-60 deg, window of pads
-3..+4 around the track's pad) are kept, in radians and millimetres:

    crossing_angle [rad] in [-0.35, 0.35]: angle between the track's projection on the pad plane
        and the normal to the pad row (a positive angle moves the track to higher pads as the
        radius grows);
    dip_angle [rad] in [-1.05, 1.05]: angle between the track and the pad plane, positive when
        the track heads towards the readout plane (the drift length falls as the radius grows),
        as tracks from the vertex do;
    drift_length [mm] in [0, 1700]: distance from the segment's centre to the readout plane;
    pad_coordinate [mm] in [0, 5]: where the segment's centre crosses the middle of the row,
        measured from the lower edge of the central pad (window pad 3).

Geometry and gas (MPD TPC: A. Averyanov et al., JINST 12 (2017) C06047, and the MPD TPC TDR; the
diffusion constants are those STAR measured for the same Ar/CH4 90/10 gas at 0.5 T and ~135 V/cm,
M. Anderson et al., NIM A 499 (2003) 659)
    * pads 5 mm wide (along the row) and 12 mm long (inner readout chambers);
    * drift velocity 5.45 cm/us, maximum drift 170 cm; SAMPA sampling at 10 MHz, so a time bucket
      is 100 ns = 5.45 mm of drift; the window starts 5 buckets before the bucket in which the
      segment's centre arrives, so the sub-bucket phase of the arrival moves with drift length;
    * transverse diffusion 0.23 mm/sqrt(cm), longitudinal 0.36 mm/sqrt(cm) (3.0 mm and 4.7 mm after
      170 cm); electron attachment with a 10 m absorption length (a few ppm O2; assumption).

Ionization (PDG review "Passage of particles through matter", table of gas properties:
Ar 25 and CH4 28 primary clusters / cm for a minimum-ionizing particle)
    * Poisson(2.53 / mm x segment length) primary clusters, uniform along the segment of length
      12 mm / (cos(crossing) cos(dip)) (pions near minimum ionization);
    * electrons per cluster in argon (H. Fischle et al., NIM A 301 (1991) 202, as tabulated by
      W. Blum, W. Riegler, L. Rolandi, Particle Detection with Drift Chambers, ch. 1):
      P(1..14) = 65.6, 15.0, 6.4, 3.5, 2.25, 1.55, 1.05, 0.81, 0.61, 0.49, 0.39, 0.30, 0.25,
      0.20 %, 0.37 % for 15-16, 0.38 % for 17-19, and 21.6 % / k^2 above (Rutherford delta
      electrons), cut at 2000 electrons (about 50 keV: a harder delta electron leaves the row)
      and normalized; mean 3.0 electrons, so the summed charge is Landau-like.

Transport and amplification, per cluster of k electrons after attachment
    * its electrons diffuse independently; the cluster is drawn as its diffused centroid
      (sigma / sqrt(k)) plus a Gaussian cloud of width sigma sqrt(1 - 1/k) around it, which is exact
      for k = 1 and keeps the width and the centroid fluctuation exact for every k;
    * MWPC gain 8000 with Polya (Gamma) fluctuations of parameter theta = 0.5 per electron, so a
      cluster's gain is Gamma(k (1 + theta)) distributed (W. Blum, W. Riegler, L. Rolandi, Particle
      Detection with Drift Chambers, ch. 4);
    * pad response function: a Gaussian of sigma 2.0 mm (the Gatti-Mathieson induced charge for an
      anode-pad gap of about 3 mm), integrated over each pad;
    * 35 % of the avalanche charge is induced within the shaping time (slow ion signal;
      assumption).

Electronics (the MPD TPC reads out with the SAMPA chip, S. Movchan, "MPD TPC status", INSTR-2020;
SAMPA: J. Adolfsson et al., JINST 12 (2017) C04008)
    * semi-Gaussian CR-RC^4 shaper with 160 ns peaking time, 20 mV/fC, 10-bit ADC over about
      2.2 V (assumption), i.e. 9.3 ADC counts per fC at the peak: one electron is worth
      8000 x 0.35 x 1.602e-4 fC x 9.3 = 4.2 ADC counts at the peak of its pulse;
    * electronic noise 700 electrons ENC (1.04 ADC counts), correlated between neighbouring samples
      by the shaper (correlation 0.44);
    * pedestal-subtracted integer ADC, saturating at 1023; zero suppression keeps a sample only if
      it and at least one neighbouring sample in time are >= 4 counts (SAMPA's threshold with a
      minimum of two consecutive samples).

Left out: E x B and wire effects near the anode (including the quantization of the radial
position by the wires), the ion tail beyond the shaper, track curvature within the row,
relativistic rise (the spectrum of particle velocities) and pile-up from other tracks.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from .base import Condition, ConditionError, Detector

# Geometry
N_PADS, N_TIME = 8, 16
CENTRAL_PAD = 3  # window pads -3 .. +4 around the track's pad (TPC-FastSim)
PAD_PITCH_MM, PAD_LENGTH_MM = 5.0, 12.0
MAX_DRIFT_MM = 1700.0

# Gas
DRIFT_VELOCITY_MM_PER_NS = 0.0545
TIME_BUCKET_NS = 100.0
BUCKET_MM = DRIFT_VELOCITY_MM_PER_NS * TIME_BUCKET_NS
WINDOW_LEAD_BUCKETS = 5
DIFFUSION_T_MM_PER_SQRT_CM, DIFFUSION_L_MM_PER_SQRT_CM = 0.23, 0.36
ATTACHMENT_LENGTH_MM = 10_000.0
CLUSTERS_PER_MM = 2.53
# P(k electrons) for k = 1..19 (15-16 and 17-19 share their bins' probability), then c / k^2.
CLUSTER_SIZE_HEAD = np.array([0.656, 0.150, 0.064, 0.035, 0.0225, 0.0155, 0.0105, 0.0081, 0.0061,
                              0.0049, 0.0039, 0.0030, 0.0025, 0.0020, 0.00185, 0.00185,
                              0.0038 / 3, 0.0038 / 3, 0.0038 / 3])
CLUSTER_SIZE_TAIL = 0.216
MAX_CLUSTER_SIZE = 2000

# Amplification and readout
GAS_GAIN, POLYA_THETA, INDUCED_FRACTION = 8000.0, 0.5, 0.35
ELECTRON_CHARGE_FC = 1.602e-4
ADC_PER_FC = 9.3
ADC_PER_ELECTRON = GAS_GAIN * INDUCED_FRACTION * ELECTRON_CHARGE_FC * ADC_PER_FC
PRF_SIGMA_MM = 2.0
PEAKING_TIME_NS, SHAPER_ORDER = 160.0, 4
NOISE_ADC = 700 * ELECTRON_CHARGE_FC * ADC_PER_FC
NOISE_NEIGHBOUR_WEIGHT = 0.6  # noise_t = w_t + 0.6 w_(t-1), normalized: correlation 0.44
THRESHOLD_ADC, SATURATION_ADC = 4.0, 1023.0

# Time-response table: shaper convolved with a Gaussian of sigma s (buckets), sampled at u buckets
# after the arrival.
_TABLE_U0, _TABLE_DU, _TABLE_U1 = -4.0, 0.01, 16.0
_TABLE_DS, _TABLE_S1 = 0.02, 1.2


class MPDTPC(Detector):
    """NICA MPD TPC pad-row response to one track segment (see the module docstring)."""

    name = "mpd_tpc"
    conditions = (
        Condition("crossing_angle", "rad", -0.35, 0.35),
        Condition("dip_angle", "rad", -1.05, 1.05),
        Condition("drift_length", "mm", 0.0, MAX_DRIFT_MM),
        Condition("pad_coordinate", "mm", 0.0, PAD_PITCH_MM),
    )
    sample_shape = (N_PADS, N_TIME)
    sample_unit = "ADC"
    axes = ("pad", "time")
    cell_size = (PAD_PITCH_MM, TIME_BUCKET_NS)  # mm along the row, ns along time
    threshold = THRESHOLD_ADC
    non_negative = True

    def __init__(self, chunk_size: int = 2048):
        self.chunk_size = chunk_size
        self._time_table = _time_response_table()

    # ---- segments of tracks from the collision ------------------------------------------------
    def sample_conditions(self, n: int, seed=None) -> np.ndarray:
        """Segments of primary pions from Au+Au collisions at NICA crossing a pad row.

        Assumptions, not fits: p_T ~ Gamma(2, 0.2 GeV/c) (mean 0.4 GeV/c), pseudorapidity uniform
        in [-1.3, 1.3], charge +-1, vertex z ~ N(0, 300 mm), row radius uniform in [400, 1300] mm
        (every row is simulated with the inner rows' 12 mm pads), B = 0.5 T. The
        crossing angle is arcsin(r / 2R) with R = p_T / (0.3 B), the dip angle arctan(sinh eta)
        (positive when |z| grows with radius), the drift length 1700 mm - |z|, the pad coordinate
        uniform. Segments outside the condition
        ranges (loopers, tracks leaving through the end-caps) are redrawn.
        """
        rng = np.random.default_rng(seed)
        out = np.empty((n, 4))
        todo = np.arange(n)
        while todo.size:
            m = todo.size
            pt = rng.gamma(2.0, 0.2, m)
            eta = rng.uniform(-1.3, 1.3, m)
            charge = rng.choice((-1.0, 1.0), m)
            radius = rng.uniform(400.0, 1300.0, m)
            curvature_radius = pt / (0.3 * 0.5) * 1000.0  # mm
            sin_cross = charge * radius / (2.0 * curvature_radius)
            z = rng.normal(0.0, 300.0, m) + radius * np.sinh(eta)
            dip = np.arctan(np.sinh(eta)) * np.sign(z)
            draw = np.stack([np.arcsin(np.clip(sin_cross, -1.0, 1.0)), dip,
                             MAX_DRIFT_MM - np.abs(z), rng.uniform(0.0, PAD_PITCH_MM, m)], axis=1)
            keep = ((np.abs(sin_cross) < 1.0) & (np.abs(draw[:, 0]) <= self.conditions[0].high)
                    & (np.abs(draw[:, 1]) <= self.conditions[1].high)
                    & (draw[:, 2] >= 0.0))
            out[todo[keep]] = draw[keep]
            todo = todo[~keep]
        return out.astype(np.float32)

    # ---- pad-row response ------------------------------------------------------------------------
    def simulate_at(self, conditions, seed=None) -> np.ndarray:
        conditions = self._check_physical(self.check_conditions(conditions))
        rng = np.random.default_rng(seed)
        out = np.empty((len(conditions), N_PADS, N_TIME), dtype=np.float32)
        for start in range(0, len(conditions), self.chunk_size):
            chunk = conditions[start:start + self.chunk_size].astype(np.float64)
            out[start:start + len(chunk)] = self._digitize(self._signal(chunk, rng), rng)
        return out

    def _check_physical(self, conditions: np.ndarray) -> np.ndarray:
        """Reject geometry no segment can have: |angles| >= 90 deg, negative drift length."""
        checks = (
            (np.abs(conditions[:, 0]) >= np.pi / 2, "|crossing_angle| must be < pi/2 rad"),
            (np.abs(conditions[:, 1]) >= np.pi / 2, "|dip_angle| must be < pi/2 rad"),
            (conditions[:, 2] < 0, "drift_length must be >= 0 mm"),
        )
        for bad, message in checks:
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise ConditionError(f"conditions: row {row} = {conditions[row].tolist()}: "
                                     f"{message} (detector {self.name!r})")
        return conditions

    def _signal(self, segments: np.ndarray, rng) -> np.ndarray:
        """Noise-free analogue signal ``[n, pads, time]`` in ADC counts."""
        crossing, dip, drift, pad_coordinate = segments.T
        n = len(segments)
        f32 = np.float32
        cos_crossing = np.cos(crossing)
        length = PAD_LENGTH_MM / (cos_crossing * np.cos(dip))
        n_clusters = rng.poisson(CLUSTERS_PER_MM * length)
        segment = np.repeat(np.arange(n), n_clusters)
        n_total = segment.size

        # Primary clusters along the segment: radial offset r from the row's centre line.
        r = (rng.random(n_total) - 0.5) * PAD_LENGTH_MM
        x = (CENTRAL_PAD * PAD_PITCH_MM + pad_coordinate)[segment] + r * np.tan(crossing)[segment]
        z = drift[segment] - r * (np.tan(dip) / cos_crossing)[segment]  # drift length (mm)
        z = np.maximum(z, 0.0)
        size = _cluster_sizes(rng, n_total)
        size = rng.binomial(size, np.exp(-z / ATTACHMENT_LENGTH_MM))

        # Diffusion: centroid of the k electrons and the width of their cloud.
        k = np.maximum(size, 1)
        sigma_t = DIFFUSION_T_MM_PER_SQRT_CM * np.sqrt(z / 10.0)
        sigma_l = DIFFUSION_L_MM_PER_SQRT_CM * np.sqrt(z / 10.0) / BUCKET_MM  # in buckets
        x = x + sigma_t / np.sqrt(k) * rng.standard_normal(n_total)
        cloud = np.sqrt(1.0 - 1.0 / k)
        width_x = np.sqrt(PRF_SIGMA_MM ** 2 + (sigma_t * cloud) ** 2)
        window_start = np.floor(drift / BUCKET_MM) - WINDOW_LEAD_BUCKETS
        arrival = (z / BUCKET_MM + sigma_l / np.sqrt(k) * rng.standard_normal(n_total)
                   - window_start[segment])  # buckets after the window's first sample

        # Gas gain (Polya per electron, Gamma for the cluster) in ADC counts at the pulse peak.
        charge = (rng.standard_gamma(size * (1.0 + POLYA_THETA))
                  * (ADC_PER_ELECTRON / (1.0 + POLYA_THETA))).astype(f32)

        # Pads: the PRF-smeared cloud integrated over each pad.
        edges = np.arange(N_PADS + 1) * PAD_PITCH_MM
        cdf = special.ndtr(((edges[None, :] - x[:, None]) / width_x[:, None]).astype(f32))
        pads = (cdf[:, 1:] - cdf[:, :-1]) * charge[:, None]  # [clusters, pads]

        # Time: the shaper convolved with the cloud's longitudinal width, from the table.
        s_index = np.minimum(np.rint(sigma_l * cloud / _TABLE_DS), self._time_table.shape[0] - 1)
        u_index = np.rint((np.arange(N_TIME)[None, :] - arrival[:, None] - _TABLE_U0) / _TABLE_DU)
        u_index = np.clip(u_index, 0, self._time_table.shape[1] - 1).astype(np.int64)
        time = self._time_table[s_index.astype(np.int64)[:, None], u_index]  # [clusters, time]

        # Sum over each segment's clusters: a batched [pads, clusters] x [clusters, time] product.
        longest = int(n_clusters.max(initial=0))
        slot = np.arange(n_total) - np.repeat(np.cumsum(n_clusters) - n_clusters, n_clusters)
        pads_padded = np.zeros((n, longest, N_PADS), dtype=f32)
        time_padded = np.zeros((n, longest, N_TIME), dtype=f32)
        pads_padded[segment, slot] = pads
        time_padded[segment, slot] = time
        return np.matmul(pads_padded.transpose(0, 2, 1), time_padded)

    def _digitize(self, signal: np.ndarray, rng) -> np.ndarray:
        """Noise, integer ADC with saturation and zero suppression."""
        f32 = np.float32
        white = rng.standard_normal(signal.shape[:-1] + (N_TIME + 1,), dtype=f32)
        noise = (white[..., 1:] + f32(NOISE_NEIGHBOUR_WEIGHT) * white[..., :-1]) * f32(
            NOISE_ADC / np.sqrt(1.0 + NOISE_NEIGHBOUR_WEIGHT ** 2))
        adc = np.clip(np.floor(signal + noise + f32(0.5)), 0.0, SATURATION_ADC)
        above = adc >= THRESHOLD_ADC
        neighbour = np.zeros_like(above)
        neighbour[..., 1:] |= above[..., :-1]
        neighbour[..., :-1] |= above[..., 1:]
        return np.where(above & neighbour, adc, f32(0.0)).astype(f32)


def _cluster_sizes(rng, n) -> np.ndarray:
    """Electrons per primary cluster: the argon table, then a 1/k^2 tail up to MAX_CLUSTER_SIZE."""
    first_tail = len(CLUSTER_SIZE_HEAD) + 1
    low, high = 1.0 / (first_tail - 0.5), 1.0 / (MAX_CLUSTER_SIZE + 0.5)
    tail_mass = CLUSTER_SIZE_TAIL * (low - high)  # c / k^2 integrated over [20 - 1/2, MAX + 1/2]
    head = np.cumsum(CLUSTER_SIZE_HEAD) / (CLUSTER_SIZE_HEAD.sum() + tail_mass)
    u = rng.random(n)
    size = np.searchsorted(head, u, side="right") + 1
    tail = u >= head[-1]
    # Inverse CDF of the tail, rounded to the nearest integer.
    v = (u[tail] - head[-1]) / (1.0 - head[-1])
    size[tail] = np.rint(1.0 / (low - v * (low - high)))
    return size


def _time_response_table() -> np.ndarray:
    """``[s, u]``: unit-peak CR-RC^n pulse smeared by a Gaussian of sigma s buckets, at time u."""
    tau = PEAKING_TIME_NS / SHAPER_ORDER / TIME_BUCKET_NS  # buckets
    u = np.arange(_TABLE_U0, _TABLE_U1 + _TABLE_DU / 2, _TABLE_DU)
    t = np.maximum(u / tau, 0.0)
    pulse = (t / SHAPER_ORDER) ** SHAPER_ORDER * np.exp(SHAPER_ORDER - t)
    sigmas = np.arange(0.0, _TABLE_S1 + _TABLE_DS / 2, _TABLE_DS)
    table = np.empty((sigmas.size, u.size))
    table[0] = pulse
    spectrum = np.fft.rfft(pulse, 2 * u.size)
    frequency = np.fft.rfftfreq(2 * u.size, _TABLE_DU)
    for i, s in enumerate(sigmas[1:], start=1):  # Gaussian smearing as a product in Fourier space
        smeared = np.fft.irfft(spectrum * np.exp(-2.0 * (np.pi * frequency * s) ** 2), 2 * u.size)
        table[i] = smeared[:u.size]
    table[:, [0, -1]] = 0.0  # lookups clipped to the ends read zero
    return np.maximum(table, 0.0).astype(np.float32)
