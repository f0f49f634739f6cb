"""DarkSHINE ECAL: NNLS + conditional WGAN-GP (seed 002).

    python recipes/darkshine_nnls_cgan.py --quick --output-dir runs/quick
    python recipes/darkshine_nnls_cgan.py --output-dir runs/full --export-base saved_models
    python recipes/darkshine_nnls_cgan.py --data my_shards/ --output-dir runs/mine

The CGAN generates 20x20x11 LYSO showers conditioned on the ECAL total energy E. The NNLS penalty
(DESIGN.md) ties the generator's response to the observed total-energy spectrum during training;
afterwards NNLS unfolds the condition spectrum from the observed one, and sampling from it
reproduces the observed spectrum without knowing p(E).

Writes to the output directory: ``data/`` (training shards), ``logs/`` (TensorBoard),
``metrics.json``, ``report.md``, ``plots/``, ``spectrum.json``, ``generator.keras`` (the sampler,
loadable under any Keras backend), ``model.keras`` (the whole GAN, to continue training) and the
SavedModel under ``<export-base>/darkshine_nnls_cgan/<version>/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

RECIPE = "darkshine_nnls_cgan"
DETECTOR = "darkshine"

#                 quick (< 2 min on 2 cores)       full (<= 30 min on 2 cores)
PRESETS = {
    "quick": dict(n_train=6_144, n_test=2_000, batch_size=256, epochs=2, steps_per_epoch=24,
                  time_limit_minutes=None, classifier_epochs=5),
    "full": dict(n_train=150_000, n_test=20_000, batch_size=256, epochs=100, steps_per_epoch=100,
                 time_limit_minutes=25, classifier_epochs=20),
}
# Fidelity bars of issue 2 (full mode).
BARS = {"W1/sigma:E_total": 0.05, "energy_centre_mean_shift_x": 0.1, "energy_centre_mean_shift_y": 0.1,
        "classifier_auc": 0.75}
CONDITION_EDGES = [200.0 + 200.0 * i for i in range(40)]       # 200 MeV bins, 200-8000 MeV
OBSERVABLE_EDGES = [200.0 * i for i in range(42)]               # 0-8200 MeV


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small run (< 2 min on 2 cores)")
    parser.add_argument("--output-dir", type=Path, default=Path("runs") / RECIPE)
    parser.add_argument("--data", help="HDF5 shards (file, directory or glob) to train on instead "
                        "of the reference simulator; 10%% is held out for evaluation")
    parser.add_argument("--export-base", type=Path, default=None,
                        help="TF Serving base directory (default: OUTPUT_DIR/saved_models)")
    parser.add_argument("--export-version", type=int, default=None,
                        help="integer version to export as (default: the next free one)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing export version")
    parser.add_argument("--epochs", type=int, help="override the preset")
    parser.add_argument("--steps-per-epoch", type=int, help="override the preset")
    parser.add_argument("--n-train", type=int, help="override the preset")
    parser.add_argument("--time-limit-minutes", type=float, help="stop training after this long")
    parser.add_argument("--precision", default="float32",
                        choices=["float32", "mixed_float16", "mixed_bfloat16"])
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--no-jit", action="store_true",
                        help="run the train step without XLA (slower by about 2x on CPU)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    settings = dict(PRESETS["quick" if args.quick else "full"])
    for key in ("epochs", "steps_per_epoch", "n_train", "time_limit_minutes"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)

    import keras
    import numpy as np

    from ddsim_gan import detectors
    from ddsim_gan.data import make_dataset, read_shards, find_shards, write_shards
    from ddsim_gan.evaluation import evaluate, shower_observables, write_report
    from ddsim_gan.export import export_run
    from ddsim_gan.models.builders import build_conditional_gan
    from ddsim_gan.models.penalties import NNLSPenalty
    from ddsim_gan.models.spectrum import ConditionSpectrum
    from ddsim_gan.training import fit

    started = time.monotonic()
    keras.mixed_precision.set_global_policy(args.precision)
    keras.utils.set_random_seed(args.seed)
    detector = detectors.get(DETECTOR)
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)

    # ---- data: the user's shards, or the reference simulator --------------------------------
    if args.data:
        conditions, samples = read_shards(find_shards(args.data), detector)
        order = np.random.default_rng(args.seed).permutation(len(conditions))
        n_test = max(len(conditions) // 10, 2)
        test, train = order[:n_test], order[n_test:]
        # No second simulation at the same conditions: the floor compares two halves.
        half = n_test // 2
        test_conditions, test_samples = conditions[test[:half]], samples[test[:half]]
        floor_samples = samples[test[half:2 * half]]
        train_conditions, train_samples = conditions[train], samples[train]
        print(f"read {len(conditions)} events from {args.data}")
    else:
        seeds = np.random.SeedSequence(args.seed).spawn(3)
        print(f"simulating {settings['n_train']} + {settings['n_test']} reference showers ...")
        train_conditions, train_samples = detector.simulate(settings["n_train"], seeds[0])
        test_conditions, test_samples = detector.simulate(settings["n_test"], seeds[1])
        floor_samples = detector.simulate_at(test_conditions, seeds[2])

    shards = write_shards(out / "data", train_conditions, train_samples, detector,
                          shard_size=20_000, overwrite=True)
    batch = settings["batch_size"]
    dataset = make_dataset(shards, batch, shuffle=True, seed=args.seed, repeat=True)
    validation = make_dataset(shards[:1], batch, shuffle=False).take(4)

    # ---- model ----------------------------------------------------------------------------
    observed_totals = train_samples.reshape(len(train_samples), -1).sum(axis=1)
    nnls_penalty = NNLSPenalty(CONDITION_EDGES[::4] + [8000.0], OBSERVABLE_EDGES[::2],
                               weight=1.0, bandwidth=0.5)
    gan = build_conditional_gan(detector, train_conditions, train_samples,
                                energy_condition="E_total", extra_penalties=[nnls_penalty],
                                seed=args.seed)
    gan.compile(generator_optimizer=keras.optimizers.Adam(2e-4, 0.5, 0.9),
                critic_optimizer=keras.optimizers.Adam(2e-4, 0.5, 0.9),
                jit_compile=not args.no_jit)
    print(f"generator {gan.generator.count_params():,} parameters, "
          f"critic {gan.critic.count_params():,}")

    # ---- train (resumable: rerun the same command after an interruption) ---------------------
    history = fit(gan, dataset, epochs=settings["epochs"],
                  steps_per_epoch=settings["steps_per_epoch"], output_dir=out,
                  validation_data=validation, time_limit_minutes=settings["time_limit_minutes"])
    train_minutes = (time.monotonic() - started) / 60
    gan.save(out / "model.keras")
    gan.sampler.save(out / "generator.keras")
    (out / "run.json").write_text(json.dumps(
        {"recipe": RECIPE, "detector": DETECTOR, "units": detector.units,
         "condition_names": list(detector.condition_names),
         "condition_ranges": detector.condition_ranges.tolist()}, indent=1))

    # ---- NNLS spectrum: unfold p(E) from the observed total energies -------------------------
    def generated_totals(conditions):
        return gan.generate(conditions, seed=args.seed).reshape(len(conditions), -1).sum(axis=1)

    spectrum = ConditionSpectrum.fit(generated_totals, observed_totals, CONDITION_EDGES + [8000.0],
                                     OBSERVABLE_EDGES, n_per_bin=200 if args.quick else 1000,
                                     seed=args.seed)
    spectrum.save(out / "spectrum.json")

    # ---- evaluate on held-out reference data --------------------------------------------------
    generated = gan.generate(test_conditions, seed=args.seed + 1)
    result = evaluate(detector, test_conditions, test_samples, generated, floor_samples,
                      bars=BARS, classifier=True, plots=not args.no_plots, seed=args.seed,
                      output_dir=out)
    spectrum_conditions = spectrum.sample(len(test_conditions), seed=args.seed + 2)
    spectrum_generated = gan.generate(spectrum_conditions, seed=args.seed + 3)
    spectrum_result = evaluate(detector, spectrum_conditions, test_samples, spectrum_generated,
                               floor_samples, bars={"W1/sigma:E_total": 0.05}, classifier=False,
                               plots=False, seed=args.seed)
    e_total = [m for m in spectrum_result["metrics"] if m["name"] == "W1/sigma:E_total"]
    result["nnls_spectrum"] = {"residual": spectrum.residual, "total_energy": e_total[0]}
    result["settings"] = {**settings, "precision": args.precision, "seed": args.seed,
                          "data": args.data or "reference simulator",
                          "train_minutes": round(train_minutes, 2),
                          "final_losses": {k: float(v[-1]) for k, v in history.history.items()}}
    write_report(result, out)

    # ---- export ---------------------------------------------------------------------------
    export_dir = export_run(out, args.export_base or out / "saved_models", RECIPE,
                            args.export_version, overwrite=args.overwrite)
    print(f"exported {export_dir}")
    print(f"report: {out / 'report.md'}  ({'PASSED' if result['passed'] else 'bars not met'}; "
          f"{(time.monotonic() - started) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
