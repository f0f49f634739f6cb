"""Validation plots (matplotlib, Agg backend): every function saves one PNG, closes its figure
and returns the path. The mplhep style is used when mplhep is installed, plain matplotlib
otherwise."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm, TwoSlopeNorm  # noqa: E402

try:  # optional: HEP style
    import mplhep as _mplhep

    _BASE = _mplhep.style.ROOT
except Exception:  # pragma: no cover - depends on the environment
    _BASE = "default"
# readable at the figure sizes used here, whatever the site's matplotlibrc says
_STYLE = [_BASE, {"font.size": 10, "axes.labelsize": 11, "axes.titlesize": 11,
                  "legend.fontsize": 9, "xtick.labelsize": 9, "ytick.labelsize": 9}]

REF_COLOUR, GEN_COLOUR = "black", "tab:red"


def _axis_label(label: str, unit: str | None) -> str:
    return f"{label} [{unit}]" if unit else label


def _save(fig, path) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def _edges(ref, gen, bins, log):
    if np.ndim(bins) > 0:
        return np.asarray(bins, float)
    both = np.concatenate([ref, gen])
    if log:
        both = both[both > 0]
        if both.size == 0:
            return np.linspace(0, 1, int(bins) + 1)
        lo, hi = np.percentile(both, [0.1, 99.9])
        return np.geomspace(lo, max(hi, lo * 1.0001), int(bins) + 1)
    lo, hi = np.percentile(both, [0.1, 99.9])
    if both.size and np.all(both == np.round(both)):      # counts: whole-number bin widths
        width = max(1, int(np.ceil((hi - lo + 1) / int(bins))))
        return np.arange(np.floor(lo) - 0.5, np.ceil(hi) + width + 0.5, width)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, int(bins) + 1)


def plot_histogram_ratio(ref, gen, *, label: str, unit: str | None = None, path,
                         bins=50, ref_label: str = "reference", gen_label: str = "generated",
                         log: bool = False) -> str:
    """Unit-area histograms of ``ref`` and ``gen`` with Poisson error bars, and a gen/ref ratio
    panel. ``log`` uses logarithmic bins and a log y axis."""
    ref, gen = np.ravel(np.asarray(ref, float)), np.ravel(np.asarray(gen, float))
    edges = _edges(ref, gen, bins, log)
    centres, widths = 0.5 * (edges[1:] + edges[:-1]), np.diff(edges)
    n_ref, n_gen = np.histogram(ref, edges)[0], np.histogram(gen, edges)[0]
    scale_ref, scale_gen = 1.0 / (max(len(ref), 1) * widths), 1.0 / (max(len(gen), 1) * widths)
    with plt.style.context(_STYLE):
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5.5), sharex=True,
                                          gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05})
        top.stairs(n_ref * scale_ref, edges, color=REF_COLOUR, label=f"{ref_label} ({len(ref)})")
        top.stairs(n_gen * scale_gen, edges, color=GEN_COLOUR, label=f"{gen_label} ({len(gen)})")
        top.errorbar(centres, n_ref * scale_ref, np.sqrt(n_ref) * scale_ref, fmt="none",
                     color=REF_COLOUR, lw=0.8)
        top.errorbar(centres, n_gen * scale_gen, np.sqrt(n_gen) * scale_gen, fmt="none",
                     color=GEN_COLOUR, lw=0.8)
        top.set_ylabel("normalised entries" + (f" [1/{unit}]" if unit else ""))
        top.legend(frameon=False)
        if log:
            top.set_xscale("log")
            top.set_yscale("log")
            # 1-2-5 ticks in plain numbers: matplotlib by itself labels the minor ticks of a short
            # range as 2x10^1, 3x10^1, ..., which overlap
            bottom.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            bottom.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(
                lambda value, _: f"{value:g}"))
            bottom.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (n_gen * scale_gen) / (n_ref * scale_ref)
            error = ratio * np.sqrt(1.0 / n_gen + 1.0 / n_ref)
        ok = np.isfinite(ratio) & np.isfinite(error)
        bottom.errorbar(centres[ok], ratio[ok], error[ok], xerr=widths[ok] / 2, fmt="o", ms=2,
                        color=GEN_COLOUR)
        bottom.axhline(1.0, color=REF_COLOUR, lw=0.8, ls="--")
        bottom.set_ylim(0.5, 1.5)
        bottom.set_ylabel("gen / ref", fontsize="small")
        bottom.set_xlabel(_axis_label(label, unit))
        fig.align_ylabels([top, bottom])
        return _save(fig, path)


def plot_profiles(profiles_ref, profiles_gen, *, path, xlabel: str, ylabel: str, x=None,
                  ref_label: str = "reference", gen_label: str = "generated",
                  log: bool = False) -> str:
    """Mean profile (e.g. energy per layer or per radial bin) of reference and generated.

    Each profile is ``[points]`` (already averaged) or ``[n_events, points]`` (averaged here,
    with the standard error of the mean as error bar).
    """
    with plt.style.context(_STYLE):
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for profile, colour, name in ((profiles_ref, REF_COLOUR, ref_label),
                                      (profiles_gen, GEN_COLOUR, gen_label)):
            profile = np.asarray(profile, float)
            if profile.ndim == 2:
                mean = profile.mean(axis=0)
                err = profile.std(axis=0, ddof=1) / np.sqrt(len(profile))
            else:
                mean, err = profile, None
            xs = np.arange(len(mean)) if x is None else np.asarray(x)
            ax.errorbar(xs, mean, err, fmt="o-", ms=3, color=colour, label=name, capsize=2)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(frameon=False)
        return _save(fig, path)


def plot_average_images(ref_samples, gen_samples, detector, path, *,
                        ref_label: str = "reference", gen_label: str = "generated") -> str:
    """Mean image per layer: reference row above generated row, shared log colour scale."""
    axes = tuple(detector.axes)
    shape = tuple(detector.sample_shape)
    ref = np.asarray(ref_samples, float).reshape((-1,) + shape).mean(axis=0)
    gen = np.asarray(gen_samples, float).reshape((-1,) + shape).mean(axis=0)
    spatial = [i for i, a in enumerate(axes) if a not in ("layer", "time")][:2]
    other = [i for i in range(len(axes)) if i not in spatial]
    # -> [layers, a, b]
    ref = np.transpose(ref, other + spatial).reshape((-1,) + tuple(shape[i] for i in spatial))
    gen = np.transpose(gen, other + spatial).reshape((-1,) + tuple(shape[i] for i in spatial))
    if ref.ndim == 2:  # a 1D image axis: show it as a single row
        ref, gen = ref[:, None, :], gen[:, None, :]
    positive = np.concatenate([ref[ref > 0], gen[gen > 0]])
    vmax = positive.max() if positive.size else 1.0
    vmin = max(positive.min() if positive.size else vmax * 1e-4, vmax * 1e-4)
    n = len(ref)
    unit = detector.sample_unit or ""
    with plt.style.context(_STYLE):
        fig, grid = plt.subplots(2, n, figsize=(1.7 * n + 1.2, 3.8), squeeze=False)
        for k in range(n):
            for row, (image, name) in enumerate(((ref, ref_label), (gen, gen_label))):
                ax = grid[row, k]
                shown = ax.imshow(np.where(image[k] > 0, image[k], np.nan).T, origin="lower",
                                  norm=LogNorm(vmin=vmin, vmax=vmax), cmap="viridis")
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(f"{'layer' if other else ''} {k}".strip(), fontsize="small")
                if k == 0:
                    ax.set_ylabel(f"{name}\n{axes[spatial[-1]]}", fontsize="small")
                if row == 1:
                    ax.set_xlabel(axes[spatial[0]], fontsize="small")
        fig.colorbar(shown, ax=grid, shrink=0.8, label=_axis_label("mean cell value", unit))
        return _save(fig, path)


def plot_conditional_means(conditions_ref, values_ref, conditions_gen, values_gen, *, path,
                           condition_label: str, value_label: str, bins=10,
                           ref_label: str = "reference", gen_label: str = "generated") -> str:
    """Mean ± standard error of ``values`` in bins of one condition (equal-population bins
    of the reference conditions when ``bins`` is a number)."""
    c_ref, v_ref = np.ravel(conditions_ref).astype(float), np.ravel(values_ref).astype(float)
    c_gen, v_gen = np.ravel(conditions_gen).astype(float), np.ravel(values_gen).astype(float)
    edges = (np.unique(np.quantile(c_ref, np.linspace(0, 1, int(bins) + 1)))
             if np.ndim(bins) == 0 else np.asarray(bins, float))
    with plt.style.context(_STYLE):
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for c, v, colour, name, shift in ((c_ref, v_ref, REF_COLOUR, ref_label, -0.1),
                                          (c_gen, v_gen, GEN_COLOUR, gen_label, 0.1)):
            index = np.clip(np.searchsorted(edges, c, side="right") - 1, 0, len(edges) - 2)
            means, errors, centres = [], [], []
            for b in range(len(edges) - 1):
                sel = v[index == b]
                if len(sel) == 0:
                    continue
                centres.append(0.5 * (edges[b] + edges[b + 1]) + shift * (edges[b + 1] - edges[b]) / 2)
                means.append(sel.mean())
                errors.append(sel.std(ddof=1) / np.sqrt(len(sel)) if len(sel) > 1 else 0.0)
            ax.errorbar(centres, means, errors, fmt="o", ms=3, capsize=2, color=colour, label=name)
        ax.set_xlabel(condition_label)
        ax.set_ylabel(f"mean {value_label}")
        ax.legend(frameon=False)
        return _save(fig, path)


def plot_efficiency_map(ratios: dict, *, path, bin_label: str = "bin",
                        title: str | None = None) -> str:
    """Efficiency ratios ε_gen/ε_ref (from :func:`~ddsim_gan.evaluation.metrics.efficiency_ratios`)
    as a map of bins × quantile cuts, diverging around 1 and annotated with ratio ± error."""
    ratio, error = np.asarray(ratios["ratio"], float), np.asarray(ratios["error"], float)
    bins, quantiles = list(ratios["bins"]), list(ratios["quantiles"])
    finite = np.abs(ratio[np.isfinite(ratio)] - 1.0)
    span = max(float(finite.max()) if finite.size else 0.1, 0.05)
    with plt.style.context(_STYLE):
        fig, ax = plt.subplots(figsize=(1.1 * len(quantiles) + 2.5, 0.5 * len(bins) + 2))
        shown = ax.imshow(ratio, cmap="RdBu_r", aspect="auto",
                          norm=TwoSlopeNorm(1.0, max(1.0 - span, 0.0), 1.0 + span))
        for i in range(ratio.shape[0]):
            for j in range(ratio.shape[1]):
                if not np.isfinite(ratio[i, j]):  # e.g. a ratio left out of a bar: blank
                    continue
                ax.text(j, i, f"{ratio[i, j]:.2f}\n±{error[i, j]:.2f}", ha="center",
                        va="center", fontsize=7)
        ax.set_xticks(range(len(quantiles)), [f"{q:g}%" for q in quantiles])
        ax.set_yticks(range(len(bins)), [f"{b:g}" if isinstance(b, (int, float, np.number))
                                         else str(b) for b in bins])
        ax.set_xlabel("cut at reference quantile")
        ax.set_ylabel(bin_label)
        if title:
            ax.set_title(title)
        fig.colorbar(shown, ax=ax, label="efficiency ratio generated / reference")
        return _save(fig, path)
