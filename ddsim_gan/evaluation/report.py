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

:func:`compare_generators` puts several generators (the GAN, the
:class:`~ddsim_gan.evaluation.library.ShowerLibrary` baseline...) side by side: fidelity, speed
and size; stored as ``result["comparison"]``, :func:`write_report` adds it as a second table.
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
             classifier_epochs: int | None = None, plots: bool = True, seed: int = 0,
             n_bootstrap: int = 20) -> dict:
    """Compare ``gen_samples`` with ``ref_samples`` (both at ``ref_conditions``).

    ``ref2_samples`` is an independent reference sample at the same conditions (e.g.
    ``detector.simulate_at(ref_conditions, seed)``) giving each metric's floor; ``None`` skips
    floors. ``bars`` maps metric names (see the module docstring) to the largest acceptable value
    (every metric here is lower-is-better); an unknown name is a ``KeyError``.
    ``classifier_epochs`` caps the classifier test's training (the recipes' quick modes, whose
    budget is 2 minutes; the result then says whether it converged); ``None`` lets it converge.
    With ``output_dir`` the metrics
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

        cap = {} if classifier_epochs is None else {"epochs": int(classifier_epochs)}
        test = classifier_two_sample_test(feat_ref, feat_gen, seed=seed, **cap)
        floor = (classifier_two_sample_test(feat_ref, feat_ref2, seed=seed + 1, **cap)
                 if feat_ref2 is not None else {"auc": math.nan, "auc_error": math.nan,
                                                "jsd": math.nan})
        extra = {"n_train": test["n_train"], "n_test": test["n_test"],
                 "epochs_run": test["epochs_run"], "converged": test["converged"],
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


# ---- generators side by side -----------------------------------------------------------------
#: Default columns of :func:`compare_generators`; ``"<metric>:mean"`` is the mean over observables.
COMPARISON_METRICS = ("W1/sigma:mean", "KL:mean", "separation_power:mean", "classifier_auc")
CLASSIFIER_METRICS = ("classifier_auc", "classifier_jsd")


def generator_nbytes(generator) -> int | None:
    """Size of what a generator has to ship: ``generator.nbytes`` when it has one (a library),
    else the bytes of the weights of ``generator.sampler`` (a ConditionalGAN) or of the Keras
    model itself; ``None`` when unknown."""
    if hasattr(generator, "nbytes"):
        return int(generator.nbytes)
    model = getattr(generator, "sampler", generator)
    weights = getattr(model, "weights", None)
    if weights is None:
        return None
    return int(sum(math.prod(w.shape) * np.dtype(w.dtype).itemsize for w in weights))


def _pick(metrics_by_name: dict, name: str, key: str) -> float:
    metric, _, obs = name.partition(":")
    if obs == "mean" and name not in metrics_by_name:
        values = [m[key] for n, m in metrics_by_name.items()
                  if n.startswith(metric + ":") and metric in ONE_D_METRICS]
        if values:
            values = [math.nan if v is None else v for v in values]
            return float(np.mean(values)) if key in ("value", "floor") else math.nan
    if name not in metrics_by_name:
        raise KeyError(f"compare_generators: metric {name!r} was not computed; available: "
                       f"{', '.join(metrics_by_name)}, or '<metric>:mean'")
    value = metrics_by_name[name][key]
    return math.nan if value is None else float(value)


def compare_generators(detector, conditions, ref_samples, ref2_samples, generators: dict, *,
                       metrics=COMPARISON_METRICS, seed: int = 0, n_bootstrap: int = 5,
                       warmup: int = 64) -> dict:
    """Fidelity, speed and size of several generators at the same conditions.

    ``generators`` maps a row name to an object with ``generate(conditions, seed=...)`` (a
    ``ConditionalGAN``, a ``ShowerLibrary``) or to such a function. Each generates one sample per
    row of ``conditions`` after a warm-up call on ``warmup`` rows (tracing, caches), timed as
    samples per second on this machine; each sample goes through :func:`evaluate` against
    ``ref_samples`` (no plots; the classifier only when a classifier metric is asked for), and
    the ``metrics`` names (``"<metric>:mean"``: mean over the observables) are kept.
    ``ref2_samples`` gives the floor row (``None``: none).

    Returns ``{"metrics": [...], "n_events", "rows": [{"name", "values", "errors",
    "samples_per_second", "seconds", "nbytes"}], "floor": {name: value}}``; put it in
    ``result["comparison"]`` and :func:`write_report` renders it.
    """
    from ..detectors import get as get_detector

    detector = get_detector(detector)
    conditions = detector.check_conditions(conditions, "compare_generators conditions")
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    classifier = any(name in CLASSIFIER_METRICS for name in metrics)
    rows, floor = [], None
    for name, generator in generators.items():
        generate = getattr(generator, "generate", generator)
        if warmup:
            generate(conditions[:warmup], seed=seed)
        start = time.perf_counter()
        samples = np.asarray(generate(conditions, seed=seed))
        seconds = time.perf_counter() - start
        result = evaluate(detector, conditions, ref_samples, samples, ref2_samples,
                          classifier=classifier, plots=False, seed=seed, n_bootstrap=n_bootstrap)
        by_name = {m["name"]: m for m in result["metrics"]}
        rows.append({
            "name": str(name),
            "values": {m: _pick(by_name, m, "value") for m in metrics},
            "errors": {m: _pick(by_name, m, "error") for m in metrics},
            "samples_per_second": len(conditions) / max(seconds, 1e-9),
            "seconds": seconds,
            "nbytes": generator_nbytes(generator),
        })
        if floor is None and ref2_samples is not None:
            floor = {m: _pick(by_name, m, "floor") for m in metrics}
    return {"metrics": metrics, "n_events": len(conditions), "rows": rows, "floor": floor}


def _fmt_bytes(nbytes) -> str:
    if nbytes is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.3g} {unit}"
        nbytes /= 1024


def comparison_lines(comparison: dict) -> list[str]:
    """Markdown table of :func:`compare_generators` (one row per generator, then the floor)."""
    names = comparison["metrics"]
    lines = ["## Generators compared", "",
             f"{comparison['n_events']} events at the reference conditions; speed measured on "
             "this machine (after a warm-up call), size = stored weights or showers.", "",
             "| generator | " + " | ".join(names) + " | samples/s | size |",
             "|---" * (len(names) + 3) + "|"]
    for row in comparison["rows"]:
        cells = [_fmt(row["values"].get(n), row["errors"].get(n)) for n in names]
        lines.append(f"| {row['name']} | " + " | ".join(cells)
                     + f" | {row['samples_per_second']:,.0f} | {_fmt_bytes(row['nbytes'])} |")
    if comparison.get("floor"):
        cells = [_fmt(comparison["floor"].get(n)) for n in names]
        lines.append("| reference vs reference (floor) | " + " | ".join(cells) + " | – | – |")
    return lines + library_verdict(comparison)


def _badness(metric: str, value: float) -> float:
    """Smaller is better: a classifier's AUC counts by its distance from 0.5."""
    return abs(value - 0.5) if metric.startswith("classifier_auc") else abs(value)


def library_verdict(comparison: dict) -> list[str]:
    """One sentence per generator compared with the shower library (a row whose name contains
    "library"): on how many metrics, and whether in speed and size, it beats the library, as
    seed 001 asks ("a GAN that does not beat the library on fidelity or speed must say so")."""
    rows = comparison["rows"]
    library = next((r for r in rows if "library" in r["name"].lower()), None)
    if library is None:
        return []
    lines = [""]
    for row in rows:
        if row is library:
            continue
        pairs = [(m, row["values"].get(m), library["values"].get(m)) for m in comparison["metrics"]]
        pairs = [(m, a, b) for m, a, b in pairs if a is not None and b is not None
                 and np.isfinite(a) and np.isfinite(b)]
        better = [m for m, a, b in pairs if _badness(m, a) < _badness(m, b)]
        faster = row["samples_per_second"] > library["samples_per_second"]
        detail = (f"better fidelity than the library on {len(better)} of {len(pairs)} "
                  f"metrics" + (f" ({', '.join(better)})" if better else ""))
        speed = (f"{row['samples_per_second'] / library['samples_per_second']:.2g}x the "
                 f"library's speed")
        size = ""
        if row["nbytes"] and library["nbytes"]:
            size = f", {row['nbytes'] / library['nbytes']:.2g}x its size"
        if not better:
            verdict = ("beats the library on speed only, not on fidelity" if faster
                       else "does not beat the library on fidelity or speed")
        else:
            fidelity = "fidelity" if len(better) == len(pairs) else "fidelity for some metrics only"
            verdict = (f"beats the library on {fidelity}"
                       + (" and on speed" if faster else ", not on speed"))
        lines.append(f"**{row['name']} {verdict}**: {detail}; {speed}{size}.")
    return lines


def atomic_write(path, write) -> None:
    """Call ``write(temporary_path)`` next to ``path``, then rename it over ``path``
    (``os.replace``), so that a reader, or a crash mid-write, never sees a half-written file.
    The temporary name keeps the file's suffix (Keras insists on ``.keras``)."""
    directory, base = os.path.split(os.path.abspath(os.fspath(path)))
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".tmp-{os.getpid()}-{base}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


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

    Returns the paths written. Plots already listed in ``result["plots"]`` are linked;
    ``result["notes"]`` (markdown lines, e.g. a recipe's seed-specific table) is added before
    them.
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
    if result.get("comparison"):
        lines += ["", *comparison_lines(result["comparison"])]
    if result.get("notes"):  # recipe-specific sections, as markdown lines
        lines += ["", *result["notes"]]
    if result.get("plots"):
        lines += ["", "## Plots", ""]
        for path in result["plots"]:
            rel = os.path.relpath(path, output_dir)
            lines.append(f"![{os.path.basename(path)}]({rel})")
    md_path = os.path.join(output_dir, "report.md")
    with open(md_path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return {"json": json_path, "markdown": md_path}


def add_metrics(result: dict, metrics) -> dict:
    """Append recipe-specific :class:`~ddsim_gan.evaluation.metrics.MetricResult` rows (the
    seed's own metrics, computed outside :func:`evaluate`) to an :func:`evaluate` result and
    update ``passed`` and ``failed``; returns ``result``. Write the report again afterwards
    (``ddsim_gan.recipe.finish`` does)."""
    for metric in metrics:
        row = metric.to_dict() if hasattr(metric, "to_dict") else dict(metric)
        result["metrics"].append(row)
        if row.get("passed") is False:
            result["failed"].append(row["name"])
    result["passed"] = not result["failed"]
    return result
