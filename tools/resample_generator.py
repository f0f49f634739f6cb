"""Add the resampling stage to a generator trained before it (or by another recipe).

    python tools/resample_generator.py saved_models/darkshine_nnls_cgan/1 \\
        --output-dir runs/darkshine_resampled --seed 2023
    python tools/export_savedmodel.py --run-dir runs/darkshine_resampled --base saved_models

``MODEL`` is a SavedModel version directory (its ``assets.extra/`` holds ``generator.keras`` and
the run's metadata) or a recipe's output directory (``generator.keras``, ``run.json``); where
a ``generator_alone.keras`` lies beside it (a model resampled before), the tool starts from
that, so the new stage replaces the old one (e.g. with more ``--events``). The
tool simulates the recipe's reference split for ``--seed`` (the same training and held-out
events as the recipe's run with that seed and sizes) or reads ``--data``, trains the density-ratio
classifier of :mod:`ddsim_gan.models.resampling` on the last ``--events`` training events, and
writes to ``--output-dir`` a run that ``tools/export_savedmodel.py`` exports: ``generator.keras``
(the resampled sampler), ``generator_alone.keras``, ``run.json``, ``spectrum.json`` where the
model has one, and ``resampling.json`` with the held-out metrics of both samplers side by side.
Shower features for detectors with a layer axis, otherwise asinh-scaled sample columns.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from ddsim_gan.recipe import RESAMPLE_CANDIDATES, RESAMPLE_CLIP, RESAMPLE_EVENTS

SHOWN = ("classifier_auc", "W1/sigma:mean", "W1/sigma:E_total", "energy_centre_mean_shift_x",
         "energy_centre_mean_shift_y", "W1/sigma:n_hits", "FPD")


def _features(detector, samples):
    import numpy as np

    from ddsim_gan.models.resampling import (CalorimeterFeatures, ConditionFeatures,
                                             VectorFeatures)

    axes = tuple(getattr(detector, "axes", ()))
    if "layer" in axes and len(detector.sample_shape) == 3:
        events = CalorimeterFeatures(detector.sample_shape, axes.index("layer"),
                                     unit=float(getattr(detector, "threshold", 0) or 1.0))
    else:
        flat = np.asarray(samples).reshape(len(samples), -1)
        events = VectorFeatures(np.maximum(np.median(np.abs(flat), axis=0), 1e-3))
    categorical = [i for i, c in enumerate(detector.conditions) if c.is_categorical]
    ranges = detector.condition_ranges
    log_columns = [i for i, (low, high) in enumerate(ranges)
                   if i not in categorical and low > 0 and high >= 10 * low]
    category = categorical[0] if categorical else None
    conditions = ConditionFeatures(
        len(detector.conditions), log_columns=log_columns, category_column=category,
        n_categories=len(detector.conditions[category].labels) if categorical else 0)
    return events, conditions


def _jsonable(value):
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _cell(metric) -> str:
    error = metric.get("error")
    return f"{metric['value']:.4g}" + ("" if error is None or error != error else
                                        f" ± {error:.2g}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="SavedModel version directory or run directory")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=2023, help="the recipe run's seed")
    parser.add_argument("--data", help="HDF5 shards instead of the reference simulator")
    parser.add_argument("--n-train", type=int, default=150_000,
                        help="the recipe's training events (the split depends on it)")
    parser.add_argument("--n-test", type=int, default=20_000, help="held-out events")
    parser.add_argument("--candidates", type=int, default=RESAMPLE_CANDIDATES)
    parser.add_argument("--clip", type=float, default=RESAMPLE_CLIP)
    parser.add_argument("--events", type=int, default=RESAMPLE_EVENTS,
                        help="training events the classifier learns from")
    args = parser.parse_args(argv)
    if args.candidates < 2 or not args.clip > 0 or args.events < 100:
        parser.error("--candidates >= 2, --clip > 0 and --events >= 100")

    import keras

    import ddsim_gan.models  # noqa: F401  (registers the generator's layers)
    from ddsim_gan import detectors, recipe
    from ddsim_gan.evaluation import evaluate
    from ddsim_gan.export.savedmodel import run_files
    from ddsim_gan.models.resampling import generate, resample_generator

    started = time.monotonic()
    try:
        keras_file, meta, spectrum = run_files(args.model)
    except FileNotFoundError as error:
        raise SystemExit(f"resample_generator: {error}") from None
    alone_file = keras_file.with_name("generator_alone.keras")
    if alone_file.is_file():    # resampled before: its stage is replaced, not stacked on
        print(f"{args.model} is resampled already: starting from its generator alone",
              flush=True)
        keras_file = alone_file
    detector = detectors.get(meta["detector"])
    settings = {"n_train": args.n_train, "n_test": args.n_test}
    data = recipe.prepare_data(detector, argparse.Namespace(data=args.data, seed=args.seed),
                               settings)
    generator = keras.saving.load_model(keras_file)
    event_features, condition_features = _features(detector, data.train_samples[:1000])
    n = min(args.events, len(data.train_conditions))
    print(f"density-ratio classifier on {n:,} training events ...", flush=True)
    sampler, report = resample_generator(
        generator, event_features, condition_features, data.train_conditions[-n:],
        data.train_samples[-n:], n_candidates=args.candidates, clip=args.clip, seed=args.seed)
    print(f"classifier validation AUC {report['validation_auc']:.3f}", flush=True)

    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    sampler.save(out / "generator.keras")
    shutil.copyfile(keras_file, out / "generator_alone.keras")
    (out / "run.json").write_text(json.dumps(
        {**meta, "resampled_from": str(args.model)}, indent=1))
    if spectrum is not None:
        (out / "spectrum.json").write_text(json.dumps(spectrum, indent=1))

    print(f"evaluating both samplers on {len(data.test_conditions):,} held-out events ...",
          flush=True)
    results = {}
    for name, model in (("resampled", sampler), ("generator alone", generator)):
        generated = generate(model, data.test_conditions, seed=args.seed + 1,
                             batch_size=max(4096 // args.candidates, 1))
        results[name] = {m["name"]: m for m in evaluate(
            detector, data.test_conditions, data.test_samples, generated, data.floor_samples,
            classifier=True, plots=False, seed=args.seed)["metrics"]}
    (out / "resampling.json").write_text(json.dumps(
        {**report, "metrics": results, "minutes": round((time.monotonic() - started) / 60, 2)},
        indent=1, default=_jsonable))
    print("\n| metric | resampled | generator alone | floor |\n|---|---|---|---|")
    for metric in SHOWN:
        if metric in results["resampled"]:
            cells = [_cell(results[name][metric]) for name in ("resampled", "generator alone")]
            floor = results["resampled"][metric].get("floor")
            print(f"| {metric} | {' | '.join(cells)} | "
                  f"{'-' if floor is None else format(floor, '.3g')} |")
    print(f"\nwrote {out} ({(time.monotonic() - started) / 60:.1f} min); export it with "
          f"python tools/export_savedmodel.py --run-dir {out} --base saved_models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
