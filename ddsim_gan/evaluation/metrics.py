"""Distances between a reference and a generated sample, with errors and a reference floor.

One-dimensional metrics take two 1D arrays (``ref``, ``gen``). :func:`compare` wraps any of them
into a :class:`MetricResult`: the value on (ref, gen), a bootstrap error, and the *floor*, the same
metric between two independent reference samples (ref, ref2) -- the value no model can beat at
these sample sizes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from math import comb
from typing import Callable

import numpy as np
from scipy import linalg, stats
from scipy.optimize import curve_fit

#: Pseudo-probability added to every bin before renormalising in :func:`binned_kl` and
#: :func:`binned_js`, so that a bin filled in one sample and empty in the other stays finite.
EPSILON = 1e-6


@dataclass
class MetricResult:
    """A metric on (reference, generated) with its reference-vs-reference floor.

    ``passed`` is ``value <= bar`` (``>=`` for metrics where higher is better), ``None`` without a
    bar. ``extra`` holds metric-specific details (JSON-serialisable).
    """

    name: str
    value: float
    error: float = float("nan")
    floor: float = float("nan")
    floor_error: float = float("nan")
    bar: float | None = None
    passed: bool | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("value", "error", "floor", "floor_error"):
            out[key] = float(out[key])
        out["bar"] = None if self.bar is None else float(self.bar)
        out["passed"] = None if self.passed is None else bool(self.passed)
        return out


def _1d(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError(f"{name}: empty sample")
    return array


# ---- one-dimensional metrics ----------------------------------------------------------------
def wasserstein_over_sigma(ref, gen) -> float:
    """1D Wasserstein distance divided by the reference standard deviation.

    If the reference is constant (σ = 0) the raw distance is returned.
    """
    ref, gen = _1d(ref, "ref"), _1d(gen, "gen")
    sigma = ref.std()
    return float(wasserstein_1d(ref, gen) / (sigma if sigma > 0 else 1.0))


def wasserstein_1d(ref, gen) -> float:
    """1D Wasserstein distance ∫|F_ref − F_gen| dx of two unweighted samples (the same value as
    ``scipy.stats.wasserstein_distance``, whose general implementation is slower)."""
    ref, gen = np.sort(_1d(ref, "ref")), np.sort(_1d(gen, "gen"))
    values = np.sort(np.concatenate([ref, gen]))
    deltas = np.diff(values)
    cdf_ref = np.searchsorted(ref, values[:-1], side="right") / len(ref)
    cdf_gen = np.searchsorted(gen, values[:-1], side="right") / len(gen)
    return float(np.sum(np.abs(cdf_ref - cdf_gen) * deltas))


def shared_edges(ref, gen, bins: int = 50) -> np.ndarray:
    """Bin edges shared by both samples: equal-population bins of ``ref`` (its quantiles, merged
    where equal, e.g. for integer observables), plus one underflow and one overflow bin when
    ``gen`` extends beyond the range of ``ref``."""
    ref, gen = _1d(ref, "ref"), _1d(gen, "gen")
    edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, int(bins) + 1)))
    if len(edges) == 1:
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    # the last bin is half-open: push its edge just above max(ref) so overflow starts beyond it
    edges[-1] = np.nextafter(edges[-1], np.inf)
    low, high = gen.min(), gen.max()
    if low < edges[0]:
        edges = np.concatenate([[low], edges])
    if high >= edges[-1]:
        edges = np.concatenate([edges, [np.nextafter(high, np.inf)]])
    return edges


def _probabilities(ref, gen, bins, epsilon=0.0):
    ref, gen = _1d(ref, "ref"), _1d(gen, "gen")
    edges = shared_edges(ref, gen, bins) if np.ndim(bins) == 0 else np.asarray(bins, float)
    p = np.histogram(ref, edges)[0].astype(np.float64)
    q = np.histogram(gen, edges)[0].astype(np.float64)
    p, q = p / max(p.sum(), 1.0), q / max(q.sum(), 1.0)
    if epsilon:
        p, q = (p + epsilon) / (1 + epsilon * len(p)), (q + epsilon) / (1 + epsilon * len(q))
    return p, q


def binned_kl(ref, gen, bins=50, epsilon: float = EPSILON) -> float:
    """KL(ref || gen) = Σ p ln(p / q) in nats on :func:`shared_edges` bins (or given edges).

    ``epsilon`` (default :data:`EPSILON`) is added to every bin probability before
    renormalising, so an empty generated bin costs a large but finite amount.
    """
    p, q = _probabilities(ref, gen, bins, epsilon)
    return float(np.sum(p * np.log(p / q)))


def binned_js(ref, gen, bins=50, epsilon: float = EPSILON) -> float:
    """Jensen–Shannon divergence in nats (0 ≤ JS ≤ ln 2), binned like :func:`binned_kl`."""
    p, q = _probabilities(ref, gen, bins, epsilon)
    m = 0.5 * (p + q)
    return float(0.5 * np.sum(p * np.log(p / m)) + 0.5 * np.sum(q * np.log(q / m)))


def ks_statistic(ref, gen) -> float:
    """Two-sample Kolmogorov–Smirnov statistic sup|F_ref − F_gen| (the statistic of
    ``scipy.stats.ks_2samp``, without its costly p-value)."""
    ref, gen = np.sort(_1d(ref, "ref")), np.sort(_1d(gen, "gen"))
    values = np.concatenate([ref, gen])
    cdf_ref = np.searchsorted(ref, values, side="right") / len(ref)
    cdf_gen = np.searchsorted(gen, values, side="right") / len(gen)
    return float(np.max(np.abs(cdf_ref - cdf_gen)))


def separation_power(ref, gen, bins=50) -> float:
    """CaloChallenge separation power ½ Σ (h₁ − h₂)² / (h₁ + h₂) of unit-sum histograms.

    0 for identical histograms, 1 for disjoint ones. ``bins`` as in :func:`binned_kl`.
    """
    h1, h2 = _probabilities(ref, gen, bins)
    total = h1 + h2
    mask = total > 0
    return float(0.5 * np.sum((h1[mask] - h2[mask]) ** 2 / total[mask]))


def efficiency_ratios(ref_values, gen_values, ref_bins_index, gen_bins_index,
                      quantiles=(10, 25, 50, 75, 90)) -> dict:
    """Selection-efficiency ratios in bins (seed 001, LHCb RICH).

    In each bin (a distinct value of ``ref_bins_index``) the cut is the reference's ``q``-th
    percentile; ε is the fraction of events above it. Returns a dict with ``bins``,
    ``quantiles``, ``eff_ref``, ``eff_gen``, ``ratio`` (= ε_gen / ε_ref) and ``error``
    (binomial errors of both efficiencies propagated), each ratio array ``[n_bins, n_quantiles]``.
    """
    ref_values, gen_values = _1d(ref_values, "ref_values"), _1d(gen_values, "gen_values")
    ref_index, gen_index = np.asarray(ref_bins_index).ravel(), np.asarray(gen_bins_index).ravel()
    if len(ref_index) != len(ref_values) or len(gen_index) != len(gen_values):
        raise ValueError("efficiency_ratios: each bins index must have one entry per value")
    bins = np.unique(ref_index)
    shape = (len(bins), len(quantiles))
    eff_ref, eff_gen, err_ref, err_gen = (np.full(shape, np.nan) for _ in range(4))
    for i, b in enumerate(bins):
        r, g = ref_values[ref_index == b], gen_values[gen_index == b]
        cuts = np.percentile(r, quantiles)
        eff_ref[i] = (r[:, None] > cuts).mean(axis=0)
        err_ref[i] = np.sqrt(eff_ref[i] * (1 - eff_ref[i]) / len(r))
        if len(g):
            eff_gen[i] = (g[:, None] > cuts).mean(axis=0)
            err_gen[i] = np.sqrt(eff_gen[i] * (1 - eff_gen[i]) / len(g))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = eff_gen / eff_ref
        error = np.sqrt((err_gen / eff_ref) ** 2 + (eff_gen * err_ref / eff_ref**2) ** 2)
    return {"bins": bins, "quantiles": np.asarray(quantiles), "eff_ref": eff_ref,
            "eff_gen": eff_gen, "ratio": ratio, "error": error}


def efficiency_mean_deviation(ref, gen) -> float:
    """Mean |ε_gen/ε_ref − 1| over the bins and cuts of :func:`efficiency_ratios` (the mean, not
    the maximum, which is dominated by the tightest cut's statistics); ``ref`` and ``gen`` are
    ``[n, 2]`` arrays of (value, bin index), so :func:`compare` can bootstrap them row by row."""
    ref, gen = np.asarray(ref), np.asarray(gen)
    ratios = efficiency_ratios(ref[:, 0], gen[:, 0], ref[:, 1], gen[:, 1])["ratio"]
    return float(np.nanmean(np.abs(ratios - 1.0))) if np.isfinite(ratios).any() else float("nan")


# ---- multivariate: FPD and KPD (Kansal et al. 2022, arXiv:2211.10295) -----------------------
def standardize(ref_features, gen_features) -> tuple[np.ndarray, np.ndarray]:
    """Standardise both ``[n, f]`` feature sets with the reference mean and std."""
    ref = np.asarray(ref_features, np.float64)
    gen = np.asarray(gen_features, np.float64)
    if ref.ndim != 2 or gen.ndim != 2 or ref.shape[1] != gen.shape[1]:
        raise ValueError(f"features: shapes {ref.shape} and {gen.shape}, expected (N, f) and "
                         "(M, f) with the same f")
    mean, std = ref.mean(axis=0), ref.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (ref - mean) / std, (gen - mean) / std


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between Gaussians: |μ₁−μ₂|² + Tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½)."""
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(sigma1)) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def _linear(x, intercept, slope):
    return intercept + slope * x


def frechet_physics_distance(ref_features, gen_features, *, min_samples: int = 5_000,
                             max_samples: int = 50_000, num_points: int = 10,
                             num_batches: int = 10, seed: int = 0) -> tuple[float, float]:
    """FPD: the Fréchet distance extrapolated to infinite sample size.

    Following Kansal et al. 2022 (JetNet's ``fpd``): for ``num_points`` batch sizes N evenly
    spaced in 1/N between ``min_samples`` and ``max_samples`` (both capped by the smaller sample:
    at most its size, at least half of it), the mean FD over ``num_batches`` batches drawn with
    replacement from both samples is fitted linearly in 1/N with non-negative parameters.
    Returns (intercept, its error). Features are standardised by the reference first.
    """
    ref, gen = standardize(ref_features, gen_features)
    n_max = min(max_samples, len(ref), len(gen))
    n_min = min(min_samples, max(n_max // 2, 2))
    sizes = (1.0 / np.linspace(1.0 / n_min, 1.0 / n_max, num_points)).astype(np.int64)
    rng = np.random.default_rng(seed)
    values = []
    for size in sizes:
        batch_values = []
        for _ in range(num_batches):
            a = ref[rng.integers(0, len(ref), size)]
            b = gen[rng.integers(0, len(gen), size)]
            batch_values.append(frechet_distance(a.mean(0), np.atleast_2d(np.cov(a, rowvar=False)),
                                                 b.mean(0), np.atleast_2d(np.cov(b, rowvar=False))))
        values.append(np.mean(batch_values))
    params, cov = curve_fit(_linear, 1.0 / sizes, values, p0=(max(values[-1], 0.0), 1.0),
                            bounds=([0.0, 0.0], [np.inf, np.inf]))
    return float(params[0]), float(np.sqrt(np.diag(cov)[0]))


def _tensor_power_sum(x: np.ndarray, k: int) -> np.ndarray:
    """Σ_i x_i^{⊗k}, flattened to ``d**k`` entries: a matrix product of the rows' order-(k−1)
    tensors with ``x``, accumulated over row blocks to bound memory."""
    if k == 1:
        return x.sum(axis=0)
    block = max(1, 2**22 // x.shape[1] ** (k - 1))
    total = np.zeros((x.shape[1] ** (k - 1), x.shape[1]))
    for start in range(0, len(x), block):
        part = x[start:start + block]
        rows = part
        for _ in range(k - 2):
            rows = (rows[:, :, None] * part[:, None, :]).reshape(len(part), -1)
        # einsum for the d × d case: OpenBLAS can be pathologically slow on tall-skinny xᵀx
        total += np.einsum("ni,nj->ij", rows, part) if k == 2 else rows.T @ part
    return total.ravel()


def _poly_kernel_sum(x: np.ndarray, y: np.ndarray, degree: int) -> float:
    """Σ_ij (x_i·y_j / d + 1)^degree over all pairs.

    With few features the binomial expansion Σ_k C(degree, k) d^-k ⟨Σ_i x_i^{⊗k}, Σ_j y_j^{⊗k}⟩
    costs O(n d^degree) instead of O(n m d); otherwise the kernel matrix is built in row blocks.
    """
    d = x.shape[1]
    if d**degree <= 2 * max(len(x), len(y)):
        total = float(len(x) * len(y))
        for k in range(1, degree + 1):
            total += comb(degree, k) / d**k * float(
                _tensor_power_sum(x, k) @ _tensor_power_sum(y, k))
        return total
    total = 0.0
    for start in range(0, len(x), 256):
        base = x[start:start + 256] @ y.T
        base /= d
        base += 1.0
        kernel = base.copy()
        for _ in range(degree - 1):  # integer power in place: much faster than ``**``
            kernel *= base
        total += float(kernel.sum())
    return total


def mmd_poly_unbiased(x, y, degree: int = 3) -> float:
    """Unbiased MMD² with the polynomial kernel k(x, y) = (x·y / d + 1)^degree:

    Σ_{i≠j} k(x_i, x_j) / m(m−1) + Σ_{i≠j} k(y_i, y_j) / n(n−1) − 2 Σ_ij k(x_i, y_j) / mn.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d, m, n = x.shape[1], len(x), len(y)
    diag_x = np.sum((np.einsum("ij,ij->i", x, x) / d + 1.0) ** degree)
    diag_y = np.sum((np.einsum("ij,ij->i", y, y) / d + 1.0) ** degree)
    return float((_poly_kernel_sum(x, x, degree) - diag_x) / (m * (m - 1))
                 + (_poly_kernel_sum(y, y, degree) - diag_y) / (n * (n - 1))
                 - 2.0 * _poly_kernel_sum(x, y, degree) / (m * n))


def kernel_physics_distance(ref_features, gen_features, *, num_batches: int = 10,
                            batch_size: int = 5_000, degree: int = 3,
                            seed: int = 0) -> tuple[float, float]:
    """KPD: median over batches of the unbiased polynomial-kernel MMD² (Kansal et al. 2022).

    The paper uses the cubic kernel (x·y/d + 1)³ (as KID); JetNet's code defaults to degree 4.
    Batches of ``batch_size`` (capped by the sample sizes) are drawn with replacement; the error
    is half the 16–84 % interquantile range over batches. Features are standardised by the
    reference first.
    """
    ref, gen = standardize(ref_features, gen_features)
    size = min(batch_size, len(ref), len(gen))
    rng = np.random.default_rng(seed)
    values = [mmd_poly_unbiased(ref[rng.integers(0, len(ref), size)],
                                gen[rng.integers(0, len(gen), size)], degree)
              for _ in range(num_batches)]
    return float(np.median(values)), float(stats.iqr(values, rng=(16.275, 83.725)) / 2.0)


# ---- wrapping a metric with errors, floor and bar ------------------------------------------
def _bootstrap(metric_fn, ref, gen, n_bootstrap, max_events, rng) -> float:
    if n_bootstrap < 2:
        return float("nan")
    values = []
    for _ in range(n_bootstrap):
        i = rng.integers(0, len(ref), min(len(ref), max_events))
        j = rng.integers(0, len(gen), min(len(gen), max_events))
        values.append(metric_fn(ref[i], gen[j]))
    return float(np.nanstd(values, ddof=1))


def passes(value: float, bar: float | None, higher_is_better: bool = False) -> bool | None:
    """Whether ``value`` meets ``bar`` (``None`` without a bar; a NaN value never passes)."""
    if bar is None:
        return None
    if not np.isfinite(value):
        return False
    return bool(value >= bar) if higher_is_better else bool(value <= bar)


def compare(name: str, metric_fn: Callable, ref, gen, ref2, *, n_bootstrap: int = 20,
            bar: float | None = None, seed: int = 0, higher_is_better: bool = False,
            max_events: int = 20_000) -> MetricResult:
    """Evaluate ``metric_fn`` on (ref, gen) and on (ref, ref2) with bootstrap errors.

    Errors are the standard deviation over ``n_bootstrap`` resamplings with replacement of both
    arguments (rows of the arrays), each resample capped at ``max_events`` events to keep it
    cheap. ``ref2`` may be ``None`` (no floor).
    """
    ref, gen = np.asarray(ref), np.asarray(gen)
    rng = np.random.default_rng(seed)
    value = float(metric_fn(ref, gen))
    error = _bootstrap(metric_fn, ref, gen, n_bootstrap, max_events, rng)
    floor = floor_error = float("nan")
    if ref2 is not None:
        ref2 = np.asarray(ref2)
        floor = float(metric_fn(ref, ref2))
        floor_error = _bootstrap(metric_fn, ref, ref2, n_bootstrap, max_events, rng)
    return MetricResult(name, value, error, floor, floor_error, bar,
                        passes(value, bar, higher_is_better))
