"""The end-of-recipe evaluation: every metric of DESIGN.md "Metrics", with floors, bars and plots.

:func:`evaluate` compares generated samples with reference samples at the same conditions, and
with a second, independent reference sample (``ref2``) at those conditions for the floor.
Metric names (the keys of ``bars``):

- ``W1/sigma:<obs>``, ``KL:<obs>``, ``separation_power:<obs>``, ``KS:<obs>`` for every observable
  of :func:`~ddsim_gan.evaluation.observables.shower_observables`;
- ``energy_centre_mean_shift_<axis>`` (images): |mean centre gen − ref| in cells;
- ``efficiency_ratio_mean_dev:<obs>`` (vector outputs, seed 001): mean |ε_gen/ε_ref − 1| over
  5 bins of the first condition and the cuts of :func:`~ddsim_gan.evaluation.metrics.efficiency_ratios`;
- ``classifier_auc``, ``classifier_jsd`` (high-level features);
- ``FPD``, ``KPD`` (high-level features, at least 2000 events).
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np

from . import metrics as M
from . import observables as O

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    def tqdm(iterable, **_):
        return iterable

ONE_D_METRICS = {
    "W1/sigma": M.wasserstein_over_sigma,
    "KL": M.binned_kl,
    "separation_power": M.separation_power,
    "KS": M.ks_statistic,
}
MIN_EVENTS_FPD = 2000


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _condition_bins(conditions, n_bins: int = 5) -> np.ndarray:
    column = np.asarray(conditions, float).reshape(len(conditions), -1)[:, 0]
    edges = np.unique(np.quantile(column, np.linspace(0, 1, n_bins + 1)))
    return np.clip(np.searchsorted(edges, column, side="right") - 1, 0, max(len(edges) - 2, 0))


def _multivariate(name, fn, ref, gen, ref2, bar, seed, higher_is_better=False, extra=None):
    value, error = fn(ref, gen, seed=seed)
    floor, floor_error = fn(ref, ref2, seed=seed + 1) if ref2 is not None else (math.nan,) * 2
    return M.MetricResult(name, value, error, floor, floor_error, bar,
                          M.passes(value, bar, higher_is_better), extra or {})


def evaluate(detector, ref_conditions, ref_samples, gen_samples, ref2_samples, *,
             output_dir=None, bars: dict | None = None, classifier: bool = True,
             plots: bool = True, seed: int = 0, n_bootstrap: int = 20) -> dict:
    """Compare ``gen_samples`` with ``ref_samples`` (both at ``ref_conditions``).

    ``ref2_samples`` is an independent reference sample at the same conditions (e.g.
    ``detector.simulate_at(ref_conditions, seed)``) giving each metric's floor; ``None`` skips
    floors. ``bars`` maps metric names (see the module docstring) to the largest acceptable value
    (every metric here is lower-is-better); an unknown name is a ``KeyError``. With ``output_dir`` the metrics
    are written by :func:`write_report`, and the plots (``plots=True``) under ``output_dir/plots``.

    Returns ``{"detector", "n_reference", "n_generated", "metrics": [MetricResult.to_dict()],
    "passed": every bar met (True without bars), "failed": names of failed metrics, "plots",
    "seconds"}``.
    """
    from ..detectors import get as get_detector

    start = time.time()
    if isinstance(detector, str):
        detector = get_detector(detector)
    bars = dict(bars or {})
    obs_ref = O.shower_observables(ref_samples, detector)
    obs_gen = O.shower_observables(gen_samples, detector)
    obs_ref2 = None if ref2_samples is None else O.shower_observables(ref2_samples, detector)
    n_ref, n_gen = len(next(iter(obs_ref.values()))), len(next(iter(obs_gen.values())))
    conditions = None if ref_conditions is None else np.asarray(ref_conditions, float)
    results: list[M.MetricResult] = []

    def add(name, fn, ref, gen, ref2, k):
        results.append(M.compare(name, fn, ref, gen, ref2, n_bootstrap=n_bootstrap,
                                 bar=bars.get(name), seed=seed + k))

    for k, obs in enumerate(tqdm(list(obs_ref), desc="1D metrics", disable=None, leave=False)):
        ref2 = None if obs_ref2 is None else obs_ref2[obs]
        for metric, fn in ONE_D_METRICS.items():
            add(f"{metric}:{obs}", fn, obs_ref[obs], obs_gen[obs], ref2, 1000 * k)

    if detector.axes is not None:  # seed-specific (DarkSHINE): mean energy-centre shift in cells
        for i in O.spatial_axes(detector):
            axis = detector.axes[i]
            cell = O._cell_size(detector, i)

            def shift(ref, gen, cell=cell):
                return abs(float(np.mean(gen) - np.mean(ref))) / cell

            add(f"energy_centre_mean_shift_{axis}", shift, obs_ref[f"centre_{axis}"],
                obs_gen[f"centre_{axis}"],
                None if obs_ref2 is None else obs_ref2[f"centre_{axis}"], 77 + i)
    elif conditions is not None:  # seed-specific (RICH): selection-efficiency ratios
        index = _condition_bins(conditions)
        for k, obs in enumerate(obs_ref):
            pack = lambda obs_dict: None if obs_dict is None else np.stack(  # noqa: E731
                [obs_dict[obs], index[: len(obs_dict[obs])]], axis=1)
            if len(obs_gen[obs]) != len(index):
                break  # generated sample not at the reference conditions: no binning possible
            add(f"efficiency_ratio_mean_dev:{obs}", M.efficiency_mean_deviation, pack(obs_ref),
                pack(obs_gen), pack(obs_ref2), 99 + k)

    feat_ref, feature_names = O.high_level_features(obs_ref)
    feat_gen = O.high_level_features(obs_gen)[0]
    feat_ref2 = None if obs_ref2 is None else O.high_level_features(obs_ref2)[0]
    if classifier:
        from .classifier import classifier_two_sample_test

        test = classifier_two_sample_test(feat_ref, feat_gen, seed=seed)
        floor = (classifier_two_sample_test(feat_ref, feat_ref2, seed=seed + 1)
                 if feat_ref2 is not None else {"auc": math.nan, "auc_error": math.nan,
                                                "jsd": math.nan})
        extra = {"n_train": test["n_train"], "n_test": test["n_test"],
                 "features": feature_names}
        results.append(M.MetricResult(
            "classifier_auc", test["auc"], test["auc_error"], floor["auc"], floor["auc_error"],
            bars.get("classifier_auc"), M.passes(test["auc"], bars.get("classifier_auc")), extra))
        results.append(M.MetricResult(
            "classifier_jsd", test["jsd"], math.nan, floor["jsd"], math.nan,
            bars.get("classifier_jsd"), M.passes(test["jsd"], bars.get("classifier_jsd"))))
    if min(n_ref, n_gen) >= MIN_EVENTS_FPD:
        extra = {"features": feature_names}
        results.append(_multivariate("FPD", M.frechet_physics_distance, feat_ref, feat_gen,
                                     feat_ref2, bars.get("FPD"), seed, extra=extra))
        results.append(_multivariate("KPD", M.kernel_physics_distance, feat_ref, feat_gen,
                                     feat_ref2, bars.get("KPD"), seed, extra=extra))

    names = {r.name for r in results}
    unknown = sorted(set(bars) - names)
    if unknown:
        raise KeyError(f"bars name metrics that were not computed: {', '.join(unknown)}; "
                       f"available: {', '.join(sorted(names))}")
    failed = [r.name for r in results if r.passed is False]
    result = {
        "detector": detector.name,
        "n_reference": int(n_ref),
        "n_generated": int(n_gen),
        "metrics": [r.to_dict() for r in results],
        "passed": not failed,
        "failed": failed,
        "plots": [],
    }
    if output_dir is not None and plots:
        result["plots"] = make_plots(detector, conditions, ref_samples, gen_samples, obs_ref,
                                     obs_gen, os.path.join(os.fspath(output_dir), "plots"))
    result["seconds"] = round(time.time() - start, 2)
    if output_dir is not None:
        write_report(result, output_dir)
    return result


def make_plots(detector, conditions, ref_samples, gen_samples, obs_ref, obs_gen,
               plot_dir) -> list[str]:
    """All validation plots of :func:`evaluate` as PNGs in ``plot_dir``; returns their paths."""
    from . import plots as P

    units = O.observable_units(detector)
    paths = []
    for obs in obs_ref:
        paths.append(P.plot_histogram_ratio(
            obs_ref[obs], obs_gen[obs], label=obs, unit=units.get(obs),
            path=os.path.join(plot_dir, f"hist_{_safe_name(obs)}.png")))
    if detector.axes is not None:
        shape = tuple(detector.sample_shape)
        ref = np.asarray(ref_samples).reshape((-1,) + shape)
        gen = np.asarray(gen_samples).reshape((-1,) + shape)
        unit = detector.sample_unit or ""
        layer = O.layer_axis(detector)
        if layer is not None:
            paths.append(P.plot_profiles(
                O.layer_energies(ref, layer), O.layer_energies(gen, layer),
                path=os.path.join(plot_dir, "longitudinal_profile.png"), xlabel="layer",
                ylabel=f"mean energy per layer [{unit}]", log=True))
        spatial = O.spatial_axes(detector)
        if len(spatial) >= 2:
            xy = (spatial[0], spatial[1])
            cells = (O._cell_size(detector, xy[0]), O._cell_size(detector, xy[1]))
            edges, e_ref = O.radial_energies(ref, xy, cells, bins=12)
            _, e_gen = O.radial_energies(gen, xy, cells, bins=edges)
            paths.append(P.plot_profiles(
                e_ref, e_gen, x=0.5 * (edges[1:] + edges[:-1]),
                path=os.path.join(plot_dir, "radial_profile.png"),
                xlabel="distance from energy centre [mm]",
                ylabel=f"mean energy per annulus [{unit}]", log=True))
        paths.append(P.plot_average_images(ref, gen, detector,
                                           os.path.join(plot_dir, "average_images.png")))
    if conditions is not None and len(conditions) == len(next(iter(obs_gen.values()))):
        cond = conditions.reshape(len(conditions), -1)
        name, unit = detector.condition_names[0], detector.condition_units[0]
        for obs in list(obs_ref)[: 1 if detector.axes is not None else None]:
            paths.append(P.plot_conditional_means(
                cond[:, 0], obs_ref[obs], cond[:, 0], obs_gen[obs],
                path=os.path.join(plot_dir, f"conditional_{_safe_name(obs)}.png"),
                condition_label=f"{name} [{unit}]" if unit else name,
                value_label=f"{obs} [{units[obs]}]" if units.get(obs) else obs))
            if detector.axes is None:
                index = _condition_bins(cond)
                ratios = M.efficiency_ratios(obs_ref[obs], obs_gen[obs], index, index)
                paths.append(P.plot_efficiency_map(
                    ratios, path=os.path.join(plot_dir, f"efficiency_{_safe_name(obs)}.png"),
                    bin_label=f"{name} bin", title=obs))
    return paths


def _fmt(value, error=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.4g}"
    if error is not None and not (isinstance(error, float) and math.isnan(error)):
        text += f" ± {error:.2g}"
    return text


def _jsonable(value):
    """Plain JSON types; NaN and infinities become ``null``."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)) or value is None or isinstance(value, str):
        return bool(value) if isinstance(value, np.bool_) else value
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def write_report(result: dict, output_dir) -> dict[str, str]:
    """Write ``metrics.json`` and ``report.md`` (one table row per metric) into ``output_dir``.

    Returns the paths written. Plots already listed in ``result["plots"]`` are linked.
    """
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    json_path = os.path.join(output_dir, "metrics.json")
    with open(json_path, "w") as handle:
        json.dump(_jsonable(result), handle, indent=1)
    status = "PASSED" if result["passed"] else f"FAILED ({', '.join(result['failed'])})"
    lines = [
        f"# Evaluation: {result.get('detector', '')}",
        "",
        f"{result['n_reference']} reference vs {result['n_generated']} generated events. "
        f"Floor: the same metric between two independent reference samples. **{status}**",
        "",
        "| metric | value ± error | floor ± error | bar | pass/fail |",
        "|---|---|---|---|---|",
    ]
    for m in result["metrics"]:
        verdict = {True: "pass", False: "**fail**", None: ""}[m["passed"]]
        lines.append(f"| {m['name']} | {_fmt(m['value'], m['error'])} | "
                     f"{_fmt(m['floor'], m['floor_error'])} | {_fmt(m['bar'])} | {verdict} |")
    if result.get("plots"):
        lines += ["", "## Plots", ""]
        for path in result["plots"]:
            rel = os.path.relpath(path, output_dir)
            lines.append(f"![{os.path.basename(path)}]({rel})")
    md_path = os.path.join(output_dir, "report.md")
    with open(md_path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return {"json": json_path, "markdown": md_path}
