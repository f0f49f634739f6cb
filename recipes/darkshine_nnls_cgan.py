"""DarkSHINE ECAL: NNLS + conditional WGAN-GP (seed 002).

    python recipes/darkshine_nnls_cgan.py --quick --output-dir runs/quick
    python recipes/darkshine_nnls_cgan.py --output-dir runs/full --export-base saved_models
    python recipes/darkshine_nnls_cgan.py --data my_shards/ --output-dir runs/mine

The CGAN generates 20x20x11 LYSO showers conditioned on the ECAL total energy E; its output head
shares E over the crystals, so energy is conserved by construction and the network learns the
shape. The NNLS penalty (DESIGN.md) ties the generator's response to the observed total-energy
spectrum during training; afterwards NNLS unfolds the condition spectrum from the observed one,
and sampling from it reproduces the observed spectrum without knowing p(E). A shower-moment
penalty matches each batch's energy centres, widths, layer energies, hit counts and their
correlations to the reference; a second critic judges those observables jointly; each shower
component's centre may move as 1 / its energy, as the tracker magnet bends the recoil electron
(``--deflection-mev``; docs/darkshine_nnls_cgan.md). After training, a classifier learns the
density ratio reference / generated on the shower features, and the exported sampler draws
``--resample-candidates`` showers per event and keeps one with probability proportional to
that ratio (sampling-importance resampling, ``ddsim_gan.models.resampling``); the report gives
the bars' metrics with and without it.

Writes to the output directory: ``data/`` (training shards), ``logs/`` (TensorBoard),
``metrics.json``, ``report.md``, ``plots/``, ``spectrum.json``, ``generator.keras`` (the sampler,
loadable under any Keras backend), ``generator_alone.keras`` (the generator without the
resampling), ``model.keras`` (the whole GAN, to continue training) and the
SavedModel under ``<export-base>/darkshine_nnls_cgan/<version>/``. Interrupted? Rerun the same
command: training resumes from the last checkpoint in ``backup/``.
"""

from __future__ import annotations

import sys

RECIPE = "darkshine_nnls_cgan"
DETECTOR = "darkshine"

#                 quick (< 2 min on 2 cores)       full (<= 30 min on 2 cores)
PRESETS = {
    "quick": dict(n_train=6_144, n_test=2_000, batch_size=256, epochs=2, steps_per_epoch=24,
                  time_limit_minutes=None),
    "full": dict(n_train=150_000, n_test=20_000, batch_size=256, epochs=40, steps_per_epoch=100,
                 time_limit_minutes=22),
}
# Fidelity bars of issue 2 (full mode).
BARS = {"W1/sigma:E_total": 0.05, "energy_centre_mean_shift_x": 0.1, "energy_centre_mean_shift_y": 0.1,
        "classifier_auc": 0.75}
CONDITION_EDGES = [200.0 + 200.0 * i for i in range(40)]              # 200 MeV bins to 8 GeV
#: the penalty's coarser condition bins (800 MeV; the last one 600 MeV)
NNLS_CONDITION_EDGES = CONDITION_EDGES[::4] + [8000.0]
OBSERVABLE_EDGES = [200.0 * i for i in range(42)]                      # 0-8200 MeV
#: equal-population bins of the energy condition for the binned shower moments: 32 events of
#: a 256-event batch each, 16 in each half (BinnedMomentPenalty needs 8)
BINNED_MOMENT_BINS = 8
LEARNING_RATE = 2e-4


def main(argv=None):
    from ddsim_gan import recipe

    def options(parser):
        parser.add_argument("--architecture", choices=["components", "layerwise", "dense"],
                            default="components",
                            help="parametric shower components rendered onto the crystals "
                                 "(default), layer-wise factorized networks, or plain dense "
                                 "ones")
        parser.add_argument("--components", type=int, default=3,
                            help="shower components of the components generator (the recoil "
                                 "electron, a bremsstrahlung photon, fragments; more give the "
                                 "nuclear fragments room of their own)")
        parser.add_argument("--fragments-per-layer", type=int, default=0,
                            help="components: isolated-deposit slots per layer (rare single-"
                                 "crystal deposits of their own rate, energy and position: "
                                 "the nuclear fragments); 0 turns them off")
        parser.add_argument("--layer-energy-weight", type=float, default=0.0,
                            help="weight of the relative penalty on each layer's batch-mean "
                                 "energy against the training set's (the deep layers' rare "
                                 "nuclear fragments); 0 turns it off")
        parser.add_argument("--scattered-mev", type=float, default=10.0,
                            help="scale of the per-cell scattered deposits (nuclear fragments, "
                                 "noise hits) of the layer-wise generator; 0 turns them off")
        parser.add_argument("--moment-weight", type=float, default=10.0,
                            help="weight of the shower-moment penalty (mean and spread of the "
                                 "energy centres, widths, layer energies and, with a threshold "
                                 "band, hit counts of each batch); 0 turns it off")
        parser.add_argument("--centre-weight", type=float, default=20.0,
                            help="with --moment-weight: extra weight on the squared shift of "
                                 "the mean energy centre, in crystals^2")
        parser.add_argument("--correlation-weight", type=float, default=30.0,
                            help="with --moment-weight: weight of the mismatch of the "
                                 "observables' correlation matrix")
        parser.add_argument("--binned-moment-weight", type=float, default=5.0,
                            help="with --moment-weight: weight of the same observables' "
                                 "moments matched in 8 equal-population bins of the energy "
                                 "condition; 0 leaves it out")
        parser.add_argument("--binned-correlation-weight", type=float, default=0.0,
                            help="with --binned-moment-weight: weight of the mismatch of the "
                                 "observables' correlation matrix in each of those bins; 0 "
                                 "leaves it out")
        parser.add_argument("--observable-critic-weight", type=float, default=3.0,
                            help="weight of a second WGAN-GP critic that sees only the "
                                 "standardized shower observables (centres, widths, layer "
                                 "energies, hits) and the energy; 0 leaves it out")
        parser.add_argument("--observable-critic-lr-factor", type=float, default=1.0,
                            help="with --observable-critic-weight: the second critic's "
                                 "learning rate over the image critic's")
        parser.add_argument("--observable-features",
                            choices=("plain", "shares", "concentration"), default="shares",
                            help="with --observable-critic-weight: what the second critic "
                                 "sees besides the energy; plain: the observables; shares "
                                 "(default): also each layer's share of the event's energy "
                                 "and log(1 + E_layer / 1 MeV), so low-energy showers' layers "
                                 "are not all within a fraction of a sigma of zero; "
                                 "concentration: the shares and each layer's share of its "
                                 "energy in its hottest crystal")
        parser.add_argument("--threshold-band", type=float, default=0.5,
                            help="components: pass the gradient straight through for cells "
                                 "within this fraction below the readout threshold")
        parser.add_argument("--deflection-mev", type=float, default=1000.0,
                            help="components: let each component's centre move as d x "
                                 "DEFLECTION_MEV / its energy (the tracker magnet bends the "
                                 "recoil electron to x = 120 GeV mm / E), d learned per event, "
                                 "component and layer (default %(default)g); 0 turns it off")

        recipe.add_learning_rate_options(parser, LEARNING_RATE)
        recipe.add_critic_schedule_option(parser)
        recipe.add_resampling_options(parser)

    args = recipe.parse_args(RECIPE, __doc__, argv, extra=options)
    settings = recipe.settings_for(args, PRESETS)
    recipe.check_learning_rate_options(RECIPE, args)
    for option in ("deflection_mev", "binned_correlation_weight", "layer_energy_weight",
                   "fragments_per_layer"):
        if getattr(args, option) < 0:
            raise SystemExit(f"{RECIPE}: --{option.replace('_', '-')} = {getattr(args, option)}, "
                             "expected >= 0 (0 turns it off)")
    if args.components < 1:
        raise SystemExit(f"{RECIPE}: --components = {args.components}, expected at least 1")

    import numpy as np

    from ddsim_gan import detectors
    from ddsim_gan.detectors import darkshine
    from ddsim_gan.evaluation import MetricMonitor, evaluate
    from ddsim_gan.models.builders import build_conditional_gan
    from ddsim_gan.models.binned_moments import BinnedObservableMomentPenalty
    from ddsim_gan.models.observable_critic import (ShowerObservablesWithConcentration,
                                                    ShowerObservablesWithShares,
                                                    with_observable_critic)
    from ddsim_gan.models.penalties import (GroupedLayerPenalty, NNLSPenalty,
                                            ShowerMomentPenalty)
    from ddsim_gan.models.resampling import CalorimeterFeatures, ConditionFeatures, generate
    from ddsim_gan.models.spectrum import ConditionSpectrum

    started = recipe.setup(args)
    detector = detectors.get(DETECTOR)
    data = recipe.prepare_data(detector, args, settings)

    # ---- model: energy-sharing CGAN with the NNLS spectrum penalty ----------------------------
    nnls_penalty = NNLSPenalty(NNLS_CONDITION_EDGES, OBSERVABLE_EDGES[::2], weight=1.0,
                               bandwidth=0.5)
    penalties = [nnls_penalty]
    if args.moment_weight > 0:
        # the hit count only gets a gradient through the band below the threshold
        penalties.append(ShowerMomentPenalty.for_detector(
            detector, weight=args.moment_weight, hits=args.threshold_band > 0,
            centre_weight=args.centre_weight / args.moment_weight,
            correlation_weight=args.correlation_weight / args.moment_weight))
        if args.binned_moment_weight > 0:
            edges = np.unique(np.quantile(data.train_conditions[:, 0],
                                          np.linspace(0.0, 1.0, BINNED_MOMENT_BINS + 1)))
            penalties.append(BinnedObservableMomentPenalty(
                edges, penalties[-1], weight=args.binned_moment_weight,
                correlation_weight=args.binned_correlation_weight / args.binned_moment_weight))
    if args.layer_energy_weight > 0:
        penalties.append(GroupedLayerPenalty(
            "layer_energy", args.layer_energy_weight, group_index=None, n_groups=1,
            # "halves": a squared batch mean would also penalize the spread of the generated
            # means, which in the last layers (50-100 % of the mean at batch 256) is the rare
            # large deposits themselves
            layer_axis=detector.axes.index("layer"), estimator="halves").fit_reference(
                data.train_samples, data.train_conditions))
    gan = build_conditional_gan(detector, data.train_conditions, data.train_samples,
                                energy_condition="E_total", extra_penalties=penalties,
                                architecture=args.architecture,
                                scattered_scale=args.scattered_mev if args.architecture ==
                                "layerwise" else 0.0, seed=args.seed,
                                noise_sigma=darkshine.NOISE_SIGMA_MEV,
                                photostat=1.0 / darkshine.PHOTOELECTRONS_PER_MEV,
                                exact_energy=True, threshold_band=args.threshold_band,
                                deflection_energy=args.deflection_mev,
                                n_components=args.components,
                                fragments_per_layer=args.fragments_per_layer)
    if args.observable_critic_weight > 0:
        kind = {"plain": ShowerMomentPenalty,
                "shares": ShowerObservablesWithShares,
                "concentration": ShowerObservablesWithConcentration}[args.observable_features]
        observables = kind.for_detector(detector, weight=0.0, hits=True)
        gan = with_observable_critic(gan, observables, data.train_samples,
                                     data.train_conditions, weight=args.observable_critic_weight)
    # XLA:CPU makes the components' step four times slower (measured: 1.0 s against 0.25 s)
    gan.compile(**recipe.wgan_optimizers(
                    settings, learning_rate=args.learning_rate,
                    generator_fraction=args.generator_lr_fraction, observable_critic_lr_factor=(
                        args.observable_critic_lr_factor if args.observable_critic_weight > 0
                        else None),
                    critic_updates_per_step=recipe.critic_updates_per_step(args, gan)),
                jit_compile=not args.no_jit and args.architecture != "components")
    # physics metrics and sample images in TensorBoard (OUTPUT_DIR/logs/physics) during training;
    # the generator with the best mean W1/sigma over the shower observables is kept (ATLAS
    # FastCaloGAN picks its epoch by a chi2 of physics distributions, not by loss: a WGAN's
    # hit multiplicity can wander off after its best epoch)
    n_monitor = 500 if args.quick else 2000
    best_path, resuming = recipe.best_generator_path(args)
    monitor = MetricMonitor(detector, data.train_conditions[:n_monitor],
                            data.train_samples[:n_monitor], every=1 if args.quick else 2,
                            metrics=("W1/sigma:E_total", "W1/sigma:n_hits", "W1/sigma:mean"),
                            monitor="W1/sigma:mean", best_path=best_path, resume=resuming,
                            averaged_weights=True, log_dir=args.output_dir / "logs" / "physics",
                            seed=args.seed)
    history = recipe.train(gan, detector, data, settings, args, callbacks=[monitor])
    chosen = keep_the_better_generator(gan, monitor, best_path, args.seed)
    recipe.save_model(gan, RECIPE, detector, args, chosen_generator=chosen)

    # ---- NNLS spectrum: unfold p(E) from the observed total energies -------------------------
    observed_totals = data.train_samples.reshape(len(data.train_samples), -1).sum(axis=1)

    def generated_totals(conditions):
        return gan.generate(conditions, seed=args.seed).reshape(len(conditions), -1).sum(axis=1)

    spectrum = ConditionSpectrum.fit(generated_totals, observed_totals, CONDITION_EDGES,
                                     OBSERVABLE_EDGES, n_per_bin=200 if args.quick else 1000,
                                     seed=args.seed)
    spectrum.save(args.output_dir / "spectrum.json")

    # ---- K candidates per shower, one kept by a classifier's density ratio -------------------
    sampler, resampling = recipe.resample_sampler(
        gan, data, args, CalorimeterFeatures(detector.sample_shape, detector.axes.index("layer"),
                                             unit=detector.threshold),
        ConditionFeatures(1, log_columns=[0]))

    # ---- evaluate on held-out reference data --------------------------------------------------
    generated = generate(sampler, data.test_conditions, seed=args.seed + 1,
                         batch_size=max(4096 // args.resample_candidates, 1))
    result = evaluate(detector, data.test_conditions, data.test_samples, generated,
                      data.floor_samples, bars=BARS, classifier=True,
                      classifier_epochs=recipe.classifier_epochs(args), plots=not args.no_plots,
                      seed=args.seed, output_dir=args.output_dir)
    if resampling is not None:
        alone = evaluate(detector, data.test_conditions, data.test_samples,
                         gan.generate(data.test_conditions, seed=args.seed + 1),
                         data.floor_samples, classifier=not args.quick, plots=False,
                         bars={k: v for k, v in BARS.items()
                               if not (args.quick and k.startswith("classifier"))},
                         seed=args.seed)
        result["resampling"] = {**resampling, "generator_alone": alone["metrics"]}
        result["notes"] = resampling_notes(result, alone, resampling)
    spectrum_conditions = spectrum.sample(len(data.test_conditions), seed=args.seed + 2)
    spectrum_generated = gan.generate(spectrum_conditions, seed=args.seed + 3)
    spectrum_result = evaluate(detector, spectrum_conditions, data.test_samples,
                               spectrum_generated, data.floor_samples,
                               bars={"W1/sigma:E_total": 0.05}, classifier=False, plots=False,
                               seed=args.seed)
    e_total = [m for m in spectrum_result["metrics"] if m["name"] == "W1/sigma:E_total"]
    result["nnls_spectrum"] = {"residual": spectrum.residual, "total_energy": e_total[0]}
    return recipe.finish(result, RECIPE, settings, args, history, started, data)


def resampling_notes(result, alone, resampling) -> list[str]:
    """Markdown lines: the bars' metrics of the resampled sampler beside the generator alone."""
    with_k = {m["name"]: m for m in result["metrics"]}
    without = {m["name"]: m for m in alone["metrics"]}
    lines = ["## Resampling", "",
             f"{resampling['n_candidates']} candidates per shower, one kept with probability "
             f"proportional to exp(clip(log r, {resampling['clip']:g})), r from a classifier "
             f"trained on {resampling['events_per_class']:,} reference and as many generated "
             f"training showers (validation AUC {resampling['validation_auc']:.3f}: how well "
             "it tells the generator alone from the reference).", "",
             "| metric | resampled (exported) | generator alone | bar |", "|---|---|---|---|"]
    for name in (*BARS, "W1/sigma:n_hits", "FPD"):
        if name in with_k and name in without:
            bar = with_k[name].get("bar")
            lines.append(f"| {name} | {with_k[name]['value']:.4g} | "
                         f"{without[name]['value']:.4g} | {'' if bar is None else bar} |")
    return lines


def keep_the_better_generator(gan, monitor, best_path, seed) -> str:
    """Load the monitor's best epoch into ``gan`` if it beats the final (averaged) generator on
    the monitored metric; returns which was kept ("final" or "best epoch N")."""
    import keras

    final = monitor.compute(gan.generate(monitor.conditions, seed=seed))[monitor.monitor_name]
    if best_path.is_file() and monitor.best < final:
        best = keras.saving.load_model(best_path)
        gan.generator.set_weights(best.get_layer("generator").get_weights())
        chosen = f"best epoch {monitor.best_epoch + 1}"
    else:
        chosen = "final"
    print(f"{monitor.monitor_name}: final {final:.4f}, best {monitor.best:.4f}; keeping {chosen}",
          flush=True)
    return chosen


if __name__ == "__main__":
    sys.exit(main())
