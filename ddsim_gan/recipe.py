"""What every recipe under ``recipes/`` does the same way, so each recipe holds only its physics.

A recipe (``recipes/<name>.py``) declares its presets (``quick``: under 2 minutes on 2 cores;
``full``: at most 30 minutes), its bars and its model, and calls these steps:

1. :func:`parse_args` — the shared command line (``--quick``, ``--output-dir``, ``--data``,
   ``--precision``, ``--seed``, export options, preset overrides);
2. :func:`prepare_data` — reference-simulator events (training, held-out test, and an independent
   simulation at the test conditions for the floor), or the user's shards with a held-out split;
3. :func:`train` — sharded tf.data input, resumable ``fit`` (rerun the same command after an
   interruption), TensorBoard logs;
4. :func:`save_model` then :func:`finish` — ``model.keras``, ``generator.keras``, ``run.json``,
   the report and the SavedModel export.
"""

from __future__ import annotations

import argparse
import contextvars
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PRESET_KEYS = ("epochs", "steps_per_epoch", "n_train", "batch_size", "time_limit_minutes")


def build_parser(recipe: str, doc: str, seed: int = 2023, extra=None) -> argparse.ArgumentParser:
    """The shared command line; ``extra(parser)`` adds recipe-specific options."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0], epilog=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small run (< 2 min on 2 cores)")
    parser.add_argument("--output-dir", type=Path, default=Path("runs") / recipe)
    parser.add_argument("--data", help="HDF5 shards (file, directory or glob) to train on instead "
                        "of the reference simulator; 10%% is held out for evaluation")
    parser.add_argument("--export-base", type=Path, default=None,
                        help="TF Serving base directory (default: OUTPUT_DIR/saved_models)")
    parser.add_argument("--export-version", type=int, default=None,
                        help="integer version to export as (default: the next free one)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing export version")
    parser.add_argument("--precision", default="float32",
                        choices=["float32", "mixed_float16", "mixed_bfloat16"],
                        help="Keras dtype policy; variables stay float32")
    parser.add_argument("--seed", type=int, default=seed)
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--no-jit", action="store_true",
                        help="run the train step without XLA (about 2x slower on CPU)")
    for key in PRESET_KEYS:
        kind = float if key == "time_limit_minutes" else int
        parser.add_argument(f"--{key.replace('_', '-')}", type=kind, help="override the preset")
    if extra is not None:
        extra(parser)
    return parser


class _ParserCaptured(Exception):
    def __init__(self, parser):
        super().__init__("recipe parser captured")
        self.parser = parser


_CAPTURING = contextvars.ContextVar("ddsim_gan_recipe_capturing", default=False)


def parse_args(recipe: str, doc: str, argv=None, seed: int = 2023,
               extra=None) -> argparse.Namespace:
    """Parse the shared command line plus ``extra(parser)``'s recipe-specific options."""
    parser = build_parser(recipe, doc, seed, extra)
    if _CAPTURING.get():
        raise _ParserCaptured(parser)
    return parser.parse_args(argv)


def recipe_parser(main) -> argparse.ArgumentParser:
    """The command-line parser of a recipe's ``main(argv)``, without running the recipe: ``main``
    is stopped at its call to :func:`parse_args` (every recipe makes it first). Used by
    :mod:`ddsim_gan.config` to check a config's keys against the recipe's options."""
    token = _CAPTURING.set(True)
    try:
        main([])
    except _ParserCaptured as captured:
        return captured.parser
    finally:
        _CAPTURING.reset(token)
    raise RuntimeError(f"{main.__module__}.main returned without calling "
                       "ddsim_gan.recipe.parse_args")


def settings_for(args, presets: dict) -> dict:
    settings = dict(presets["quick" if args.quick else "full"])
    for key in PRESET_KEYS:
        if getattr(args, key, None) is not None:
            settings[key] = getattr(args, key)
    return settings


@dataclass
class RecipeData:
    """Training events, held-out test events, and the floor sample at the test conditions."""

    train_conditions: np.ndarray
    train_samples: np.ndarray
    test_conditions: np.ndarray
    test_samples: np.ndarray
    floor_samples: np.ndarray
    source: str


def prepare_data(detector, args, settings) -> RecipeData:
    """Reference-simulator events, or the user's shards (``args.data``) split 90/5/5."""
    from .data import find_shards, read_shards

    if args.data:
        conditions, samples = read_shards(find_shards(args.data), detector)
        order = np.random.default_rng(args.seed).permutation(len(conditions))
        n_test = max(len(conditions) // 10, 2)
        test, train = order[:n_test], order[n_test:]
        # No second simulation at the same conditions: the floor compares two halves.
        half = n_test // 2
        print(f"read {len(conditions)} events from {args.data}")
        return RecipeData(conditions[train], samples[train], conditions[test[:half]],
                          samples[test[:half]], samples[test[half:2 * half]], args.data)
    seeds = np.random.SeedSequence(args.seed).spawn(3)
    print(f"simulating {settings['n_train']} + {settings['n_test']} reference events "
          f"({detector.name}) ...", flush=True)
    train_conditions, train_samples = detector.simulate(settings["n_train"], seeds[0])
    test_conditions, test_samples = detector.simulate(settings["n_test"], seeds[1])
    floor_samples = detector.simulate_at(test_conditions, seeds[2])
    return RecipeData(train_conditions, train_samples, test_conditions, test_samples,
                      floor_samples, "reference simulator")


def setup(args):
    """Dtype policy, global seeds and the output directory; returns the start time."""
    import keras

    keras.mixed_precision.set_global_policy(args.precision)
    keras.utils.set_random_seed(args.seed)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    return time.monotonic()


def best_generator_path(args, name: str = "best_generator.keras"):
    """Where a recipe's :class:`~ddsim_gan.evaluation.MetricMonitor` keeps its best generator,
    and whether this run resumes an interrupted one (a checkpoint in ``OUTPUT_DIR/backup``; pass
    it as the monitor's ``resume``). A fresh run in a used directory first removes an earlier
    run's best generator, so that it is never taken for this run's."""
    from .training import ResumableBackup

    path = args.output_dir / name
    resuming = (args.output_dir / "backup" / ResumableBackup.FILE).is_file()
    if not resuming:
        for stale in (path, path.with_name(path.name + ".json")):
            stale.unlink(missing_ok=True)
    return path, resuming


def wgan_optimizers(settings, learning_rate=2e-4, betas=(0.5, 0.9), final_fraction=0.1,
                    generator_fraction=1.0, observable_critic_lr_factor=None,
                    critic_updates_per_step=1) -> dict:
    """One Adam per network (Gulrajani et al.'s betas), the learning rate decaying along a cosine
    to ``final_fraction`` over the planned steps, and a moving average of the generator's
    weights over about the last tenth of them, at most 1000 steps (finalized into the generator
    at the end of training by ``training.fit``). The generator learns at ``generator_fraction``
    times ``learning_rate`` (< 1: a two time-scale update rule, Heusel et al.
    arXiv:1706.08500, the critic keeping ahead of the generator). With
    ``observable_critic_lr_factor`` (> 0) also ``observable_critic_optimizer``, for the second
    critic on the observables (:mod:`ddsim_gan.models.observable_critic`), at that many times
    ``learning_rate``: its few inputs let it keep up with a faster rate, and at the image
    critic's its Wasserstein estimate went negative (LHCb ECAL, docs/lhcb_ecal_aux_gan.md).

    Each schedule counts its own optimizer's updates. The image critic is updated
    ``critic_steps`` times per training step: pass that as ``critic_updates_per_step`` for its
    decay to span the whole run. Left at 1 (the recipes tuned before 2026-12-07, and what
    their shipped models were trained with), a 4-step critic's rate reaches its floor after a
    quarter of the run. The schedules are :class:`~ddsim_gan.schedules.ShortenableCosineDecay`:
    under a time limit, ``training.fit`` ends their decay with the last epoch the limit allows."""
    import keras

    from .schedules import ShortenableCosineDecay

    if observable_critic_lr_factor is not None and not observable_critic_lr_factor > 0:
        raise SystemExit(f"--observable-critic-lr-factor {observable_critic_lr_factor}: "
                         "expected a positive number")

    steps = settings["epochs"] * settings["steps_per_epoch"]
    ema_momentum = min(0.999, max(0.0, 1.0 - 10.0 / steps))  # >= 0 for runs under 10 steps

    if not (isinstance(critic_updates_per_step, int) and critic_updates_per_step >= 1):
        raise ValueError(f"critic_updates_per_step must be a positive integer, "
                         f"got {critic_updates_per_step!r}")

    def schedule(rate=learning_rate, updates_per_step=1):
        return ShortenableCosineDecay(rate, steps * updates_per_step, alpha=final_fraction)

    optimizers = {"generator_optimizer": keras.optimizers.Adam(
                      schedule(learning_rate * generator_fraction), *betas, use_ema=True,
                      ema_momentum=ema_momentum),
                  "critic_optimizer": keras.optimizers.Adam(
                      schedule(updates_per_step=critic_updates_per_step), *betas)}
    if observable_critic_lr_factor is not None:
        optimizers["observable_critic_optimizer"] = keras.optimizers.Adam(
            schedule(learning_rate * observable_critic_lr_factor), *betas)
    return optimizers


def _fit_or_exit(gan, dataset, **kwargs):
    """:func:`~ddsim_gan.training.fit`; a diverged run or an unusable checkpoint ends the
    recipe with a one-line message and exit status 1 (the last good checkpoint is kept)."""
    from .training import CheckpointError, TrainingDivergedError, fit

    try:
        return fit(gan, dataset, **kwargs)
    except (TrainingDivergedError, CheckpointError) as error:
        raise SystemExit(f"{gan.name}: {error}") from None


def train(gan, detector, data: RecipeData, settings, args, callbacks=(), batch_map=None):
    """Write the training shards, stream them through tf.data and fit (resumably).

    ``batch_map`` (optional) is mapped over the training and validation batches
    ``(conditions, samples)``, e.g. to append targets computed in NumPy by ``tf.numpy_function``
    (the auxiliary-regressor GAN's)."""
    from .data import dataset_from_arrays, make_dataset, write_shards

    out = args.output_dir
    shards = write_shards(out / "data", data.train_conditions, data.train_samples, detector,
                          shard_size=20_000, overwrite=True)
    batch = settings["batch_size"]
    dataset = make_dataset(shards, batch, shuffle=True, seed=args.seed, repeat=True)
    # the first shard's first 4 batches, from memory: Keras drops its prefetched validation
    # iterator at each evaluation, and dropping one over the shards' h5py generator waited
    # for its reader thread, idle, 7-36 s in 11 of 17 DarkSHINE epochs (docs/BENCHMARKS.md)
    n_validation = min(4 * batch, len(data.train_conditions))
    validation = dataset_from_arrays(data.train_conditions[:n_validation],
                                     data.train_samples[:n_validation], batch, shuffle=False)
    if batch_map is not None:
        dataset = dataset.map(batch_map, num_parallel_calls=2)
        validation = validation.map(batch_map)
    print(f"generator {gan.generator.count_params():,} parameters, "
          f"critic {gan.critic.count_params():,}", flush=True)
    return _fit_or_exit(gan, dataset, epochs=settings["epochs"],
               steps_per_epoch=settings["steps_per_epoch"], output_dir=out,
               validation_data=validation, time_limit_minutes=settings["time_limit_minutes"],
               callbacks=callbacks)


def train_arrays(gan, conditions, samples, settings, args, output_dir=None, callbacks=(),
                 validation_events=2048):
    """Fit ``gan`` on in-memory arrays (resumably, in ``output_dir``, default the run's): for
    models whose training pairs are not a detector's (conditions, samples), e.g. the links of an
    auto-regressive chain; the arrays are shuffled every epoch (``dataset_from_arrays``)."""
    from .data import dataset_from_arrays

    batch = settings["batch_size"]
    dataset = dataset_from_arrays(conditions, samples, batch, shuffle=True, seed=args.seed,
                                  repeat=True)
    n_val = min(len(conditions), validation_events)
    validation = dataset_from_arrays(conditions[:n_val], samples[:n_val], batch, shuffle=False)
    print(f"{gan.name}: generator {gan.generator.count_params():,} parameters, "
          f"critic {gan.critic.count_params():,}", flush=True)
    return _fit_or_exit(gan, dataset, epochs=settings["epochs"],
               steps_per_epoch=settings["steps_per_epoch"],
               output_dir=output_dir or args.output_dir, validation_data=validation,
               time_limit_minutes=settings["time_limit_minutes"], callbacks=callbacks)


def save_model(gan, recipe: str, detector, args, **info) -> None:
    """``model.keras`` (to continue training), ``generator.keras`` and ``run.json``."""
    out = args.output_dir
    gan.save(out / "model.keras")
    gan.sampler.save(out / "generator.keras")
    write_run_info(recipe, detector, args, **info)


def add_learning_rate_options(parser, learning_rate, generator_fraction=1.0) -> None:
    """``--learning-rate`` and ``--generator-lr-fraction`` for :func:`wgan_optimizers`."""
    parser.add_argument("--learning-rate", type=float, default=learning_rate,
                        help="initial Adam learning rate of the critic (cosine decay to a "
                        "tenth over the planned steps; default %(default)g); the generator's "
                        "is this times --generator-lr-fraction")
    parser.add_argument("--generator-lr-fraction", type=float, default=generator_fraction,
                        help="generator learning rate / critic learning rate "
                        "(default %(default)g)")


def check_learning_rate_options(recipe_name, args) -> None:
    """Exit with a one-line message on a learning rate <= 0 or a fraction outside (0, 10]."""
    if not 0 < args.generator_lr_fraction <= 10:
        raise SystemExit(f"{recipe_name}: --generator-lr-fraction {args.generator_lr_fraction}, "
                         "expected a number in (0, 10]")
    if not args.learning_rate > 0:
        raise SystemExit(f"{recipe_name}: --learning-rate {args.learning_rate}, expected > 0")


def add_critic_schedule_option(parser, default="legacy") -> None:
    """``--critic-schedule``: how :func:`wgan_optimizers` counts the image critic's decay."""
    parser.add_argument("--critic-schedule", choices=("whole-run", "legacy"), default=default,
                        help="whole-run: the critic's learning rate decays over the whole "
                             "run, counted in its own updates (critic_steps per step); "
                             "legacy: over the generator's step count, so a 4-step critic "
                             "reaches its floor after a quarter of the run (the models "
                             "shipped before 2026-12-07 were trained so; default "
                             "%(default)s)")


def critic_updates_per_step(args, gan) -> int:
    """:func:`wgan_optimizers`' ``critic_updates_per_step`` for ``--critic-schedule``."""
    return gan.critic_steps if args.critic_schedule == "whole-run" else 1


QUICK_CLASSIFIER_EPOCHS = 20


def classifier_epochs(args):
    """The classifier two-sample test's epoch cap for ``evaluate``: ``QUICK_CLASSIFIER_EPOCHS``
    in quick mode (a smoke test inside 2 minutes; a classifier that converges on a barely
    trained generator can take minutes), ``None`` (train to convergence) in full mode."""
    return QUICK_CLASSIFIER_EPOCHS if args.quick else None


# the resampling stage's defaults (docs/darkshine_nnls_cgan.md, "A classifier trained to
# convergence"), shared with tools/resample_generator.py
RESAMPLE_CANDIDATES, RESAMPLE_CLIP, RESAMPLE_EVENTS = 16, 5.0, 150_000


def add_resampling_options(parser, candidates=RESAMPLE_CANDIDATES, clip=RESAMPLE_CLIP,
                           events=RESAMPLE_EVENTS) -> None:
    """The ``--resample-*`` options of :func:`resample_sampler`."""
    parser.add_argument("--resample-candidates", type=int, default=candidates,
                        help="draw K candidates per event and keep one, weighted by a "
                             "classifier's density ratio reference / generated (sampling-"
                             "importance resampling; 1 turns it off; default %(default)s)")
    parser.add_argument("--resample-clip", type=float, default=clip,
                        help="bound of the log density ratio (default %(default)s)")
    parser.add_argument("--resample-events", type=int, default=events,
                        help="reference training events the classifier learns from, with as "
                             "many generated ones (default %(default)s, at most the training "
                             "events; the quick mode uses a twentieth)")


def resample_sampler(gan, data: RecipeData, args, event_features, condition_features):
    """Wrap ``gan.sampler`` in :func:`~ddsim_gan.models.resampling.resampled_sampler` with a
    classifier trained on the last ``--resample-events`` training events (a twentieth in quick
    mode); ``generator.keras`` becomes the resampled sampler and the generator alone is kept as
    ``generator_alone.keras``. Returns ``(sampler, report)``; ``(gan.sampler, None)`` with
    ``--resample-candidates 1``."""
    from .models.resampling import resample_generator

    k = args.resample_candidates
    if k < 1 or not args.resample_clip > 0 or args.resample_events < 100:
        raise SystemExit(f"--resample-candidates {k} (>= 1), --resample-clip "
                         f"{args.resample_clip} (> 0) and --resample-events "
                         f"{args.resample_events} (>= 100) are out of range")
    if k == 1:
        return gan.sampler, None
    n = min(args.resample_events // (20 if args.quick else 1), len(data.train_conditions))
    print(f"resampling: a density-ratio classifier on {n:,} reference and {n:,} generated "
          f"events, then {k} candidates per event ...", flush=True)
    sampler, report = resample_generator(
        gan.sampler, event_features, condition_features, data.train_conditions[-n:],
        data.train_samples[-n:], n_candidates=k, clip=args.resample_clip, seed=args.seed,
        epochs=5 if args.quick else 200)
    print(f"resampling: classifier validation AUC {report['validation_auc']:.3f} "
          f"(cross-entropy {report['cross_entropy_before']:.3f} -> "
          f"{report['cross_entropy_after']:.3f})", flush=True)
    os.replace(args.output_dir / "generator.keras", args.output_dir / "generator_alone.keras")
    sampler.save(args.output_dir / "generator.keras")
    return sampler, report


def write_run_info(recipe: str, detector, args, **info) -> None:
    """``run.json``: what :func:`ddsim_gan.export.export_run` needs besides ``generator.keras``
    (for recipes whose model is not one GAN, e.g. a region split, that save it themselves)."""
    (args.output_dir / "run.json").write_text(json.dumps(
        {"recipe": recipe, "detector": detector.name, "units": detector.units,
         "condition_names": list(detector.condition_names),
         "condition_ranges": detector.condition_ranges.tolist(), **info}, indent=1))


def finish(result: dict, recipe: str, settings, args, history, started, data: RecipeData,
           export=None) -> int:
    """Write the report (settings and losses included) and export the SavedModel.

    ``export(base_dir, name, version, overwrite) -> Path`` replaces the standard
    :func:`~ddsim_gan.export.export_run` of ``generator.keras`` (for models that are not
    Keras models, e.g. the TFP flow baseline)."""
    from .evaluation import write_report
    from .export import export_run

    out = args.output_dir
    result["settings"] = {**settings, "command": " ".join(sys.argv),
                          "precision": args.precision, "seed": args.seed,
                          "data": data.source,
                          "minutes": round((time.monotonic() - started) / 60, 2),
                          "final_losses": {k: float(v[-1]) for k, v in history.history.items()}}
    write_report(result, out)
    if export is None:
        export_dir = export_run(out, args.export_base or out / "saved_models", recipe,
                                args.export_version, overwrite=args.overwrite)
    else:
        export_dir = export(args.export_base or out / "saved_models", recipe,
                            args.export_version, args.overwrite)
    print(f"exported {export_dir}")
    print(f"report: {out / 'report.md'}  ({'PASSED' if result['passed'] else 'bars not met'}; "
          f"{(time.monotonic() - started) / 60:.1f} min)")
    return 0
