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
    bad = ~np.isfinite(array)
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(f"{name}: {int(bad.sum())} non-finite values (first at flattened index "
                         f"{first}: {array[first]}); a metric of them would be meaningless")
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


# ---- conditional moments in bins of the conditions (seed 000, DarkSide-20k) -----------------
def _bin_keys(conditions, edges, condition_index, category_index):
    """Per row: (category, energy-bin index) or None outside the edges."""
    conditions = np.asarray(conditions, np.float64)
    conditions = conditions.reshape(len(conditions), -1)
    edges = np.asarray(edges, np.float64)
    column = conditions[:, condition_index]
    index = np.searchsorted(edges, column, side="right") - 1
    index[column == edges[-1]] = len(edges) - 2  # the last bin is closed
    inside = (index >= 0) & (index < len(edges) - 1)
    category = (np.rint(conditions[:, category_index]).astype(np.int64)
                if category_index is not None else np.zeros(len(column), np.int64))
    return category, index, inside


def conditional_moments(conditions, ref, gen, edges, *, condition_index: int = 0,
                        category_index: int | None = None, names=None, pairs=((0, 1),),
                        min_events: int = 50, gen_conditions=None) -> dict:
    """Mean, width and correlation of each observable per bin of the conditions.

    The bar of issue 3 (DarkSide-20k): in every 10-keV bin of the recoil energy, per recoil
    type, the mean and the width (standard deviation, ``ddof=0``) of S1, S2 and f200 within 3 %
    of the reference, and the S1-S2 correlation coefficient (Pearson) within 0.05.

    Bins are ``[edges[j], edges[j+1])`` of ``conditions[:, condition_index]`` (the last one
    closed), times each distinct (rounded) value of ``conditions[:, category_index]`` when
    given. ``ref`` and ``gen`` are ``[n, k]`` observables; ``gen`` is binned by
    ``gen_conditions`` (default: the same ``conditions``, i.e. one generated event per
    reference event). Bins where either sample has fewer than ``min_events`` events are left
    out and listed under ``"excluded"``.

    Per bin (row) and observable (column):
    ``mean_dev = |mean_gen / mean_ref - 1|`` and ``width_dev = |std_gen / std_ref - 1|``, with
    their statistical errors ``mean_dev_error = sqrt(var_ref/n_ref + var_gen/n_gen) / |mean_ref|``
    and ``width_dev_error = sqrt(1/(2 n_ref) + 1/(2 n_gen))`` (Gaussian approximation); per bin
    and pair ``(a, b)`` of observable columns: ``corr_diff = |rho_gen - rho_ref|`` with error
    ``sqrt((1-rho_ref^2)^2/n_ref + (1-rho_gen^2)^2/n_gen)``.

    Returns a dict with ``"bins"`` (one ``{"category", "low", "high", "n_ref", "n_gen"}`` per
    kept bin), ``"names"``, ``"pairs"`` (as ``"a-b"`` names), the ``[bins, k]`` arrays
    ``mean_ref, mean_gen, std_ref, std_gen, mean_dev, width_dev, mean_dev_error,
    width_dev_error``, the ``[bins, pairs]`` arrays ``corr_ref, corr_gen, corr_diff,
    corr_diff_error``, ``"worst"`` (per ``"mean:<name>"``, ``"width:<name>"`` and
    ``"corr:<a-b>"``: the largest deviation over the bins, its error and its bin) and
    ``"excluded"``.
    """
    ref = np.asarray(ref, np.float64)
    gen = np.asarray(gen, np.float64)
    ref, gen = ref.reshape(len(ref), -1), gen.reshape(len(gen), -1)
    gen_conditions = conditions if gen_conditions is None else gen_conditions
    if len(conditions) != len(ref) or len(gen_conditions) != len(gen):
        raise ValueError(f"conditional_moments: {len(conditions)} reference conditions for "
                         f"{len(ref)} reference events and {len(gen_conditions)} generated "
                         f"conditions for {len(gen)} generated events; need one per event")
    if ref.shape[1] != gen.shape[1]:
        raise ValueError(f"conditional_moments: reference has {ref.shape[1]} observables, "
                         f"generated {gen.shape[1]}")
    edges = np.asarray(edges, np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"conditional_moments: edges must increase strictly, got {edges}")
    k = ref.shape[1]
    names = list(names or (f"x{i}" for i in range(k)))
    pairs = [tuple(int(i) for i in pair) for pair in pairs]
    pair_names = [f"{names[a]}-{names[b]}" for a, b in pairs]
    ref_cat, ref_bin, ref_in = _bin_keys(conditions, edges, condition_index, category_index)
    gen_cat, gen_bin, gen_in = _bin_keys(gen_conditions, edges, condition_index, category_index)
    bins, excluded = [], []
    rows = {key: [] for key in ("mean_ref", "mean_gen", "std_ref", "std_gen", "corr_ref",
                                "corr_gen")}
    counts = []
    for category in np.unique(ref_cat[ref_in]):
        for j in range(len(edges) - 1):
            r = ref[ref_in & (ref_cat == category) & (ref_bin == j)]
            g = gen[gen_in & (gen_cat == category) & (gen_bin == j)]
            info = {"category": int(category), "low": float(edges[j]),
                    "high": float(edges[j + 1]), "n_ref": len(r), "n_gen": len(g)}
            if min(len(r), len(g)) < max(int(min_events), 2):
                excluded.append(info)
                continue
            bins.append(info)
            counts.append((len(r), len(g)))
            rows["mean_ref"].append(r.mean(axis=0))
            rows["mean_gen"].append(g.mean(axis=0))
            rows["std_ref"].append(r.std(axis=0))
            rows["std_gen"].append(g.std(axis=0))
            rows["corr_ref"].append([_pearson(r[:, a], r[:, b]) for a, b in pairs])
            rows["corr_gen"].append([_pearson(g[:, a], g[:, b]) for a, b in pairs])
    out = {key: np.asarray(value, np.float64).reshape(len(bins), -1)
           for key, value in rows.items()}
    n_ref, n_gen = (np.asarray(counts, np.float64).reshape(len(bins), 2).T[:, :, None]
                    if bins else (np.zeros((0, 1)),) * 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["mean_dev"] = np.abs(out["mean_gen"] / out["mean_ref"] - 1.0)
        out["width_dev"] = np.abs(out["std_gen"] / out["std_ref"] - 1.0)
        out["mean_dev_error"] = (np.sqrt(out["std_ref"] ** 2 / n_ref + out["std_gen"] ** 2 / n_gen)
                                 / np.abs(out["mean_ref"]))
        out["width_dev_error"] = np.broadcast_to(
            np.sqrt(0.5 / n_ref + 0.5 / n_gen), out["width_dev"].shape).copy()
        out["corr_diff"] = np.abs(out["corr_gen"] - out["corr_ref"])
        out["corr_diff_error"] = np.sqrt((1 - out["corr_ref"] ** 2) ** 2 / n_ref
                                         + (1 - out["corr_gen"] ** 2) ** 2 / n_gen)
    worst = {}
    for prefix, key, labels in (("mean", "mean_dev", names), ("width", "width_dev", names),
                                ("corr", "corr_diff", pair_names)):
        for c, label in enumerate(labels):
            values = out[key][:, c] if bins else np.zeros(0)
            if not np.isfinite(values).any():
                worst[f"{prefix}:{label}"] = {"value": float("nan"), "error": float("nan"),
                                              "bin": None}
                continue
            i = int(np.nanargmax(values))
            worst[f"{prefix}:{label}"] = {"value": float(values[i]),
                                          "error": float(out[f"{key}_error"][i, c]),
                                          "bin": bins[i]}
    return {"bins": bins, "names": names, "pairs": pair_names, **out, "worst": worst,
            "excluded": excluded}


def _pearson(a, b) -> float:
    a, b = a - a.mean(), b - b.mean()
    norm = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / norm) if norm > 0 else float("nan")


def conditional_moment_metrics(conditions, ref, gen, ref2, edges, *, mean_bar=None,
                               width_bar=None, corr_bar=None, **options) -> list[MetricResult]:
    """The summary of :func:`conditional_moments` as :class:`MetricResult` rows: per observable
    ``worst_mean_dev:<name>`` and ``worst_width_dev:<name>``, per pair ``worst_corr_diff:<a-b>``
    (the largest deviation over the bins; error = its statistical error), each with the same
    number for an independent reference sample ``ref2`` at the same conditions as its floor
    (``None``: no floor), the bar and the worst bin in ``extra``. ``options`` go to
    :func:`conditional_moments`."""
    moments = conditional_moments(conditions, ref, gen, edges, **options)
    floor = (conditional_moments(conditions, ref, ref2, edges, **options)["worst"]
             if ref2 is not None else {})
    bars = {"mean": mean_bar, "width": width_bar, "corr": corr_bar}
    results = []
    for key, worst in moments["worst"].items():
        kind, _, label = key.partition(":")
        name = f"worst_{'corr_diff' if kind == 'corr' else kind + '_dev'}:{label}"
        base = floor.get(key, {})
        results.append(MetricResult(
            name, worst["value"], worst["error"], base.get("value", float("nan")),
            base.get("error", float("nan")), bars[kind], passes(worst["value"], bars[kind]),
            {"bin": worst["bin"], "n_bins": len(moments["bins"]),
             "excluded_bins": len(moments["excluded"])}))
    return results


# ---- event-level means and means in bins of a condition (issue 4: SiW-ECAL, MPD TPC) ---------
def relative_mean_deviation(ref, gen) -> float:
    """|mean(gen) / mean(ref) − 1|: the seed-003 bars (mean sum_E per event within 2 %, mean
    nhits within 3 %; with booleans "is layer l hit", a layer's occupancy within 5 %).
    A reference mean of zero gives ``inf`` (``nan`` when both are zero)."""
    ref, gen = _1d(ref, "ref"), _1d(gen, "gen")
    mean_ref = ref.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(abs(gen.mean() / mean_ref - 1.0)) if mean_ref != 0 else (
            float("nan") if gen.mean() == 0 else float("inf"))


def equal_population_edges(values, bins: int = 5) -> np.ndarray:
    """Edges of ``bins`` equal-population bins of ``values`` (its quantiles, merged where equal);
    the last edge is nudged up so that the largest value falls inside the last bin."""
    values = _1d(values, "values")
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, int(bins) + 1)))
    if len(edges) == 1:
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    edges[-1] = np.nextafter(edges[-1], np.inf)
    return edges


def binned_mean_deviations(ref_values, gen_values, ref_condition, gen_condition=None,
                           bins=5) -> dict:
    """Mean of an observable in bins of one condition, reference against generated.

    ``bins`` is a number of equal-population bins of ``ref_condition`` or the edges; events
    outside the edges are left out. ``gen_condition`` defaults to ``ref_condition`` (one
    generated event per reference event). In bin b, with m the reference mean, s the reference
    standard deviation and g the generated mean,

        deviation_b = |g − m| / max(|m|, s),

    the relative deviation of the mean wherever the mean exceeds the spread (positions measured
    from the window's edge, widths, charges), and the deviation in units of the spread for a
    quantity that scatters around zero (a covariance), where a ratio of means is meaningless.
    Returns ``{"edges", "n_ref", "n_gen", "mean_ref", "mean_gen", "scale", "deviation", "error",
    "worst", "worst_bin"}`` (per-bin arrays; ``error`` the statistical error of the deviation,
    sqrt(s²/n_ref + s_gen²/n_gen) / scale; bins where either sample is empty get NaN).
    """
    ref_values, gen_values = _1d(ref_values, "ref_values"), _1d(gen_values, "gen_values")
    ref_condition = _1d(ref_condition, "ref_condition")
    gen_condition = ref_condition if gen_condition is None else _1d(gen_condition,
                                                                    "gen_condition")
    if len(ref_condition) != len(ref_values) or len(gen_condition) != len(gen_values):
        raise ValueError(f"binned_mean_deviations: {len(ref_values)} reference values with "
                         f"{len(ref_condition)} conditions, {len(gen_values)} generated values "
                         f"with {len(gen_condition)} conditions; need one condition per value")
    edges = (equal_population_edges(ref_condition, bins) if np.ndim(bins) == 0
             else np.asarray(bins, np.float64))
    n_bins = len(edges) - 1
    ref_index = np.searchsorted(edges, ref_condition, side="right") - 1
    gen_index = np.searchsorted(edges, gen_condition, side="right") - 1
    out = {key: np.full(n_bins, np.nan) for key in ("mean_ref", "mean_gen", "scale",
                                                    "deviation", "error")}
    out["n_ref"] = np.zeros(n_bins, np.int64)
    out["n_gen"] = np.zeros(n_bins, np.int64)
    for b in range(n_bins):
        r, g = ref_values[ref_index == b], gen_values[gen_index == b]
        out["n_ref"][b], out["n_gen"][b] = len(r), len(g)
        if not len(r) or not len(g):
            continue
        mean, spread = r.mean(), r.std()
        scale = max(abs(mean), spread)
        out["mean_ref"][b], out["mean_gen"][b], out["scale"][b] = mean, g.mean(), scale
        if scale > 0:
            out["deviation"][b] = abs(g.mean() - mean) / scale
            out["error"][b] = np.sqrt(spread**2 / len(r) + g.std()**2 / len(g)) / scale
        else:
            out["deviation"][b] = 0.0 if g.mean() == mean else np.inf
    finite = np.isfinite(out["deviation"])
    out["worst_bin"] = int(np.nanargmax(out["deviation"])) if finite.any() else None
    out["worst"] = (float(out["deviation"][out["worst_bin"]]) if finite.any()
                    else float("nan"))
    out["edges"] = edges
    return out


def binned_mean_deviation(ref, gen, bins=5) -> float:
    """Largest deviation of :func:`binned_mean_deviations` over the bins; ``ref`` and ``gen`` are
    ``[n, 2]`` arrays of (value, condition) so that :func:`compare` can bootstrap them row by
    row. Bins are equal-population bins of the reference's condition column."""
    ref, gen = np.asarray(ref, np.float64), np.asarray(gen, np.float64)
    if ref.ndim != 2 or ref.shape[1] != 2 or gen.ndim != 2 or gen.shape[1] != 2:
        raise ValueError(f"binned_mean_deviation: shapes {ref.shape} and {gen.shape}, expected "
                         "(N, 2) and (M, 2) rows of (value, condition)")
    return binned_mean_deviations(ref[:, 0], gen[:, 0], ref[:, 1], gen[:, 1], bins)["worst"]


# ---- efficiency ratios in bins of several conditions, with a bar (seed 001, LHCb RICH) ---------
def bin_index(values, edges) -> np.ndarray:
    """Index j of the bin ``[edges[j], edges[j+1])`` of each value (the last bin closed), or -1
    outside the edges."""
    values = np.asarray(values, np.float64).ravel()
    edges = np.asarray(edges, np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bin_index: edges must increase strictly, got {edges.tolist()}")
    index = np.searchsorted(edges, values, side="right") - 1
    index[values == edges[-1]] = len(edges) - 2
    index[(index < 0) | (index > len(edges) - 2) | ~np.isfinite(values)] = -1
    return index


def product_bins(conditions, edges: dict) -> np.ndarray:
    """Flat index of the product binning ``edges`` = {condition column: bin edges} (row-major
    in the order of the dict), -1 for rows outside any edge range."""
    conditions = np.asarray(conditions, np.float64)
    conditions = conditions.reshape(len(conditions), -1)
    flat = np.zeros(len(conditions), np.int64)
    outside = np.zeros(len(conditions), bool)
    for column, column_edges in edges.items():
        index = bin_index(conditions[:, int(column)], column_edges)
        outside |= index < 0
        flat = flat * (len(column_edges) - 1) + np.maximum(index, 0)
    flat[outside] = -1
    return flat


def bin_labels(edges: dict, names=None, precision: int = 3) -> list[str]:
    """One readable label per flat bin of :func:`product_bins` ("P 2-8.4, eta 1.8-2.7")."""
    parts = []
    for column, column_edges in edges.items():
        name = names[int(column)] if names is not None else f"c{column}"
        parts.append([f"{name} {low:.{precision}g}-{high:.{precision}g}"
                      for low, high in zip(column_edges[:-1], column_edges[1:])])
    labels = [""]
    for options in parts:
        labels = [f"{a}, {b}" if a else b for a in labels for b in options]
    return labels


def ratio_test_error(efficiency, n_ref, n_gen, n_train=np.inf):
    """Standard deviation of ε_gen / ε_ref expected for a *perfect* generator: both
    efficiencies binomial around the same ε, sqrt(ε̃ (1 − ε̃) (1/n_ref + 1/n_gen)) / ε̃ with the
    Agresti–Coull estimate ε̃ = (n_ref ε + 2) / (n_ref + 4), so that a small bin whose reference
    efficiency happens to be exactly 0 or 1 does not claim a zero error. Infinite where ε = 0 (no
    ratio) or a sample is empty. ``n_train``: the tracks the generator was fitted to; the best
    it can do is reproduce them, so their binomial error adds a 1/n_train term."""
    efficiency = np.asarray(efficiency, np.float64)
    n_ref, n_gen = np.asarray(n_ref, np.float64), np.asarray(n_gen, np.float64)
    n_train = np.asarray(n_train, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        adjusted = (n_ref * efficiency + 2.0) / (n_ref + 4.0)
        error = np.sqrt(adjusted * (1 - adjusted) * (1 / n_ref + 1 / n_gen + 1 / n_train)
                        ) / adjusted
    return np.where((efficiency > 0) & (n_ref > 0) & (n_gen > 0) & (n_train > 0), error, np.inf)


def efficiency_ratio_bar(ref_values, gen_values, ref_conditions, gen_conditions, edges: dict, *,
                         group_index: int | None = None, quantiles=(10, 25, 50, 75, 90),
                         tolerance: float = 0.03, max_error: float | None = None,
                         cut_scope: str = "group", names=None, condition_names=None,
                         group_labels=None, train_conditions=None) -> dict:
    """Seed 001's efficiency ratios in bins of the conditions, and the bar on them.

    For each group (a distinct value of the categorical condition ``group_index``, e.g. the
    particle species; ``None``: one group) and each observable (column of ``ref_values``), the
    cut at the reference's ``q``-th percentile is taken over all reference events of the group
    (``cut_scope="group"``: the seed's "x % quantile of the RichDLLx distribution"), or over the
    reference events of each bin (``cut_scope="bin"``). In every bin of the product binning
    ``edges`` (:func:`product_bins`), ε = fraction of events strictly above the cut, for the
    reference and the generated events (binned by their own conditions, e.g. one generated event
    per reference event); ``ratio = ε_gen / ε_ref``, ``error`` its binomial error propagated.

    A ratio is *tested* when its sample is large enough to tell a ``tolerance`` deviation from
    a statistical fluctuation: when :func:`ratio_test_error` (its spread for a perfect
    generator) is at most ``max_error``. The default ``tolerance / 3.29`` means a perfect
    generator falls outside ``1 ± tolerance`` with probability below 0.1 % per tested ratio.
    ``train_conditions`` (the conditions of the tracks the generator was fitted to): the perfect
    generator is then a perfect model *of those tracks*, whose own binomial error in the bin
    adds to the test error; without it a model that reproduced its training sample exactly
    fails ratios it cannot know better than that sample does (LHCb RICH, 1 M training tracks
    against 2 M bar tracks: 2 of 6 such replays failed one). The result then also holds
    ``strict``: the tested count, failures and worst deviation without the training term.
    A tested ratio passes when ``|ratio − 1| <= tolerance``; the bar passes when every tested
    ratio does (and at least one was tested).

    Returns a dict: ``groups``, ``bins`` (labels), ``names``, ``quantiles``; ``[groups, bins]``
    arrays ``n_ref``, ``n_gen``; ``[groups, k, quantiles]`` ``cuts``; ``[groups, bins, k,
    quantiles]`` arrays ``eff_ref``, ``eff_gen``, ``ratio``, ``error``, ``expected_error``,
    ``tested``, ``failed``; and the summary ``n_ratios``, ``n_tested``, ``n_failed``,
    ``max_deviation`` (over tested ratios) with ``worst`` (where), ``expected_false_failures``
    (sum over tested ratios of the probability that a perfect generator fails them),
    ``excluded_bins`` (bins with at least one untested ratio: group, bin, counts, how many
    ratios and which cuts were left out, why), ``passed``, ``tolerance``, ``max_error``.
    """
    ref_values = np.asarray(ref_values, np.float64)
    gen_values = np.asarray(gen_values, np.float64)
    ref_values = ref_values.reshape(len(ref_values), -1)
    gen_values = gen_values.reshape(len(gen_values), -1)
    ref_conditions = np.asarray(ref_conditions, np.float64)
    gen_conditions = np.asarray(gen_conditions, np.float64)
    if len(ref_conditions) != len(ref_values) or len(gen_conditions) != len(gen_values):
        raise ValueError("efficiency_ratio_bar: need one row of conditions per event, got "
                         f"{len(ref_conditions)} for {len(ref_values)} reference and "
                         f"{len(gen_conditions)} for {len(gen_values)} generated events")
    ref_conditions = ref_conditions.reshape(len(ref_conditions), -1)
    gen_conditions = gen_conditions.reshape(len(gen_conditions), -1)
    if ref_values.shape[1] != gen_values.shape[1]:
        raise ValueError(f"efficiency_ratio_bar: reference has {ref_values.shape[1]} "
                         f"observables, generated {gen_values.shape[1]}")
    if cut_scope not in ("group", "bin"):
        raise ValueError(f"efficiency_ratio_bar: cut_scope={cut_scope!r}, expected 'group' or "
                         "'bin'")
    max_error = tolerance / 3.29 if max_error is None else float(max_error)
    quantiles = np.asarray(quantiles, np.float64)
    k, n_q = ref_values.shape[1], len(quantiles)
    names = list(names or (f"x{i}" for i in range(k)))
    n_bins = int(np.prod([len(e) - 1 for e in edges.values()]))
    labels = bin_labels(edges, condition_names)
    ref_bins = product_bins(ref_conditions, edges)
    gen_bins = product_bins(gen_conditions, edges)
    if group_index is None:
        ref_group = np.zeros(len(ref_values), np.int64)
        gen_group = np.zeros(len(gen_values), np.int64)
    else:
        ref_group = np.rint(ref_conditions[:, group_index]).astype(np.int64)
        gen_group = np.rint(gen_conditions[:, group_index]).astype(np.int64)
    groups = np.unique(ref_group)
    shape = (len(groups), n_bins, k, n_q)
    eff_ref, eff_gen = np.full(shape, np.nan), np.full(shape, np.nan)
    cuts = np.full((len(groups), k, n_q), np.nan)
    n_ref = np.zeros((len(groups), n_bins), np.int64)
    n_gen = np.zeros((len(groups), n_bins), np.int64)
    for g, group in enumerate(groups):
        r_group = ref_group == group
        g_group = gen_group == group
        if cut_scope == "group":
            cuts[g] = np.percentile(ref_values[r_group], quantiles, axis=0).T
        for b in range(n_bins):
            r = ref_values[r_group & (ref_bins == b)]
            s = gen_values[g_group & (gen_bins == b)]
            n_ref[g, b], n_gen[g, b] = len(r), len(s)
            if not len(r):
                continue
            bin_cuts = cuts[g] if cut_scope == "group" else np.percentile(r, quantiles, axis=0).T
            eff_ref[g, b] = (r[:, :, None] > bin_cuts[None]).mean(axis=0)
            if len(s):
                eff_gen[g, b] = (s[:, :, None] > bin_cuts[None]).mean(axis=0)
    n_train = None
    if train_conditions is not None:
        train_conditions = np.asarray(train_conditions, np.float64)
        train_conditions = train_conditions.reshape(len(train_conditions), -1)
        train_group = (np.zeros(len(train_conditions), np.int64) if group_index is None else
                       np.rint(train_conditions[:, group_index]).astype(np.int64))
        train_bins = product_bins(train_conditions, edges)
        n_train = np.zeros((len(groups), n_bins), np.int64)
        for g, group in enumerate(groups):
            inside = (train_group == group) & (train_bins >= 0)
            n_train[g] = np.bincount(train_bins[inside], minlength=n_bins)
    counts_ref = n_ref[:, :, None, None].astype(np.float64)
    counts_gen = n_gen[:, :, None, None].astype(np.float64)
    counts_train = (np.inf if n_train is None else
                    n_train[:, :, None, None].astype(np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = eff_gen / eff_ref
        err_ref = np.sqrt(eff_ref * (1 - eff_ref) / counts_ref)
        err_gen = np.sqrt(eff_gen * (1 - eff_gen) / counts_gen)
        error = np.sqrt((err_gen / eff_ref) ** 2 + (eff_gen * err_ref / eff_ref ** 2) ** 2)
    expected = ratio_test_error(np.nan_to_num(eff_ref), counts_ref, counts_gen, counts_train)
    tested = (expected <= max_error) & np.isfinite(ratio)
    failed = tested & (np.abs(ratio - 1.0) > tolerance)
    strict = None
    if n_train is not None:
        strict_tested = ((ratio_test_error(np.nan_to_num(eff_ref), counts_ref, counts_gen)
                          <= max_error) & np.isfinite(ratio))
        strict_deviation = np.abs(ratio - 1.0)[strict_tested]
        strict = {"n_tested": int(strict_tested.sum()),
                  "n_failed": int((strict_deviation > tolerance).sum()),
                  "max_deviation": (float(strict_deviation.max()) if strict_deviation.size
                                    else float("nan"))}
    deviation = np.where(tested, np.abs(ratio - 1.0), -np.inf)
    worst = None
    if tested.any():
        g, b, j, q = np.unravel_index(int(np.argmax(deviation)), deviation.shape)
        worst = {"group": _label(groups[g], group_labels), "bin": labels[b],
                 "observable": names[j], "quantile": float(quantiles[q]),
                 "ratio": float(ratio[g, b, j, q]), "error": float(error[g, b, j, q]),
                 "n_ref": int(n_ref[g, b]), "n_gen": int(n_gen[g, b])}
    with np.errstate(divide="ignore"):
        false_failures = float(np.sum(2 * stats.norm.sf(tolerance / expected[tested])))
    excluded = []
    for g, group in enumerate(groups):
        for b in range(n_bins):
            untested = ~tested[g, b]
            if not untested.any():
                continue
            trained = "" if n_train is None else f" and {n_train[g, b]} training"
            if n_ref[g, b] == 0 or n_gen[g, b] == 0 or (n_train is not None
                                                        and n_train[g, b] == 0):
                reason = "an empty sample in the bin (reference, generated or training)"
            else:
                perfect = "generator" if n_train is None else "model of the training tracks"
                reason = (f"binomial error of the ratio for a perfect {perfect} above "
                          f"{max_error:.3g} (cuts whose reference efficiency is too small for "
                          f"{n_ref[g, b]} reference, {n_gen[g, b]} generated{trained} events)")
            excluded.append({
                "group": _label(group, group_labels), "bin": labels[b],
                "n_ref": int(n_ref[g, b]), "n_gen": int(n_gen[g, b]),
                "n_train": None if n_train is None else int(n_train[g, b]),
                "n_untested": int(untested.sum()), "n_ratios": int(untested.size),
                "untested_quantiles": sorted({float(quantiles[q])
                                              for q in np.nonzero(untested.any(axis=0))[0]}),
                "reason": reason})
    n_tested = int(tested.sum())
    return {"groups": [_label(g, group_labels) for g in groups], "bins": labels,
            "names": names, "quantiles": quantiles, "n_ref": n_ref, "n_gen": n_gen,
            "cuts": cuts, "eff_ref": eff_ref, "eff_gen": eff_gen, "ratio": ratio,
            "error": error, "expected_error": expected, "tested": tested, "failed": failed,
            "n_ratios": int(ratio.size), "n_tested": n_tested, "n_failed": int(failed.sum()),
            "max_deviation": float(deviation.max()) if n_tested else float("nan"),
            "worst": worst, "expected_false_failures": false_failures,
            "excluded_bins": excluded, "passed": bool(n_tested and not failed.any()),
            "tolerance": float(tolerance), "max_error": max_error, "cut_scope": cut_scope,
            "n_train": n_train, "strict": strict}


def _label(value, labels):
    value = int(value)
    return labels[value] if labels is not None and 0 <= value < len(labels) else value
