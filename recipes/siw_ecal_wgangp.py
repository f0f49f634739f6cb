"""SiW-ECAL prototype: conditional WGAN-GP, conservation penalties, 3D variant (seed 003).

    python recipes/siw_ecal_wgangp.py --quick --output-dir runs/siw_quick
    python recipes/siw_ecal_wgangp.py --model wgangp       --output-dir runs/siw_wgangp
    python recipes/siw_ecal_wgangp.py --model conservation --output-dir runs/siw_conservation
    python recipes/siw_ecal_wgangp.py --model conv3d       --output-dir runs/siw_conv3d
    python tools/compare_runs.py runs/siw_wgangp runs/siw_conservation runs/siw_conv3d \\
        --output runs/siw_comparison.md

Generates the 15 x 32 x 32 cells (MIP) of the CALICE SiW-ECAL prototype for 10 GeV e- and pi-
at normal incidence, the three models of seed 003 selected by ``--model``:

(a) ``wgangp``: conditional WGAN-GP on the 15 x 1024 image (dense networks; sum_E = E_beam x
    a learned bounded response, shared among the cells by the generator's output below,
    started at each species' mean shower);
(b) ``conservation`` (default, exported as ``siw_ecal_wgangp``): (a) plus the seed's conservation
    penalties on sum_E and nhits, per species
    (:class:`~ddsim_gan.models.penalties.GroupedConservationPenalty`; nhits is the exact count
    of the seed's hits, cells above 5 % of the event's maximum, with a soft count's gradient),
    and the same relative penalty on every layer's occupancy and mean energy, per species, the
    pions' tracks and showers (sum_E below and above 40 MIP) each on their own
    (:class:`~ddsim_gan.models.penalties.GroupedLayerPenalty`);
(c) ``conv3d``: the same conditioning, head, critic features and penalties with 3D
    convolutional networks (trained without XLA, which is 40x slower than plain TensorFlow
    for 3D convolutions on CPU).

The generator of (a) and (b) draws a few parametric showers per event rendered onto the cells
(``--generator components``, the default for them; :mod:`ddsim_gan.models.components`, as the
DarkSHINE generator), the first started as the primary's track, one cell per layer; that of
(c), and of (a) and (b) with ``--generator cells``, a softmax over the cells.

All three are built by :func:`~ddsim_gan.models.calorimeter.build_calorimeter_gan`: cell
fluctuations (the components' spots, or per-cell noise on the softmax's logits), the
conditions next to the output layer,
a discrete latent code of 8 values (each species a mixture: the pions are tracks and showers),
and a start of each code at one sum_E slice of each species' events.

Every critic sees CaloGAN-style physics features (energy per layer, centres, widths, soft hit
count) and the seed's hits per layer
(:class:`~ddsim_gan.models.networks.SeedHitFeatures`: soft count and a soft "layer is hit").

Bars (issue 4; seed 003's model had energy 22 % low, hits 21 % low, layer 1 never hit):
``mean_rel_dev:sum_E`` <= 0.02, ``mean_rel_dev:nhits_seed`` <= 0.03 (seed hits per event) and
``occupancy_rel_dev:layer_LL`` <= 0.05 for every layer (LL = 00 is the seed's "layer 1";
occupancy = the fraction of events with at least one seed hit in the layer); each is
|mean_gen / mean_ref - 1| over the held-out events, with its reference-vs-reference floor.
Per species the same numbers are reported without a bar.

Writes to the output directory what every recipe writes (``metrics.json`` with ``"model"``,
``report.md`` with the shower-library baseline beside the GAN, ``plots/`` with the per-layer
occupancy and seed-hit plots added, ``generator.keras``, ``model.keras``, the SavedModel under
``<export-base>/siw_ecal_wgangp[_<model>]/<version>/``). Rerun the same command to resume.
"""

from __future__ import annotations

import sys
from pathlib import Path

RECIPE = "siw_ecal_wgangp"
DETECTOR = "siw_ecal"
MODELS = ("wgangp", "conservation", "conv3d")
DEFAULT_MODEL = "conservation"

#                 quick (< 2 min on 2 cores)       full (<= 30 min on 2 cores)
PRESETS = {
    "quick": dict(n_train=3_072, n_test=1_500, batch_size=128, epochs=2, steps_per_epoch=15,
                  time_limit_minutes=None),
    "full": dict(n_train=30_000, n_test=8_000, batch_size=128, epochs=40, steps_per_epoch=50,
                 time_limit_minutes=21),
}
#: the 3D variant is about twice as slow per step (no XLA): fewer planned steps, same time limit
CONV3D_FULL_EPOCHS = 20
BAR_SUM_E, BAR_NHITS, BAR_OCCUPANCY = 0.02, 0.03, 0.05
#: conservation penalty weights (b, c): relative batch-mean differences squared
CONSERVATION_WEIGHT = 30.0
#: per-layer penalties (b, c): occupancy and mean energy of every layer, per species
OCCUPANCY_WEIGHT, LAYER_ENERGY_WEIGHT = 20.0, 10.0
#: second critic on the per-layer observables (b, c): weight and learning rate over the critic's
OBSERVABLE_CRITIC_WEIGHT, OBSERVABLE_CRITIC_LR_FACTOR = 3.0, 5.0
#: values of the generator's discrete latent code (0 = none; ddsim_gan.models.calorimeter)
DISCRETE_LATENT = 8
#: estimator of the grouped penalties (ConservationPenalty): "square" narrows the spread
PENALTY_ESTIMATOR = "square"
#: the occupancy penalty's gradient: sigmoid((layer max - 5 % event max) / (t event max))
OCCUPANCY_TEMPERATURE = 0.05
#: the per-layer penalties' pion populations: tracks below this sum_E (MIP), showers above it,
#: each matched on its own (GroupedLayerPenalty's energy_split; 0 = pions taken as one group)
PION_SPLIT_MIP = 40.0
#: the head's readout threshold passes the gradient for cells this fraction below it (0 = hard cut)
THRESHOLD_BAND = 0.0
#: per-layer sharpness of the cells' softmax (SharpenedCellNoise) per species and code, set from
#: the data and held ("data") or trained on ("learned"), or "none"
LAYER_SHARPNESS = "none"
#: the generator's output: a softmax over the cells, or parametric shower components; "auto":
#: components for (a) and (b), cells for (c) (its convolutions draw the cells)
GENERATORS, GENERATOR = ("auto", "cells", "components"), "auto"
SPECIES = ("e-", "pi-")


def _extra_options(parser):
    parser.add_argument("--model", choices=MODELS, default=DEFAULT_MODEL,
                        help="(a) wgangp, (b) conservation [default], (c) conv3d")
    parser.add_argument("--n-test", type=int, help="override the preset's held-out events")
    parser.add_argument("--hidden", type=int, default=None,
                        help="width of the hidden layers (default 512 for the generator's "
                             "last, 256 elsewhere; small values are for tests)")
    parser.add_argument("--no-library", action="store_true",
                        help="skip the shower-library baseline row")
    parser.add_argument("--conservation-weight", type=float, default=CONSERVATION_WEIGHT,
                        help="weight of each conservation penalty, sum_E and nhits (b, c; "
                             "default %(default)s)")
    parser.add_argument("--occupancy-weight", type=float, default=OCCUPANCY_WEIGHT,
                        help="weight of the per-layer occupancy penalty (b, c; "
                             "GroupedLayerPenalty; default %(default)s, 0 = off)")
    parser.add_argument("--occupancy-temperature", type=float, default=OCCUPANCY_TEMPERATURE,
                        help="width t of the occupancy penalty's soft indicator, in units of "
                             "the event's maximum: its gradient reaches layers whose maximum "
                             "is within a few t of the 5 %% cut (b, c; default %(default)s)")
    parser.add_argument("--layer-energy-weight", type=float, default=LAYER_ENERGY_WEIGHT,
                        help="weight of the per-layer mean-energy penalty (b, c; "
                             "default %(default)s, 0 = off)")
    parser.add_argument("--observable-critic-weight", type=float,
                        default=OBSERVABLE_CRITIC_WEIGHT,
                        help="weight of a second critic on every layer's log energy and seed-hit "
                             "indicator, log sum_E and log nhits, event by event (b, c; "
                             "ddsim_gan.models.layer_observables; default %(default)s, 0 = off)")
    parser.add_argument("--observable-critic-lr-factor", type=float,
                        default=OBSERVABLE_CRITIC_LR_FACTOR,
                        help="with --observable-critic-weight: the second critic's learning "
                             "rate over the image critic's (default %(default)s)")
    parser.add_argument("--discrete-latent", type=int, default=DISCRETE_LATENT,
                        help="values K of a discrete latent code beside the normal latent, so "
                             "the generator can draw the pions' tracks and showers as separate "
                             "populations; code k of a species starts at the k-th of K "
                             "equal-population slices of its sum_E (DiscreteLatent; default "
                             "%(default)s, 0 = none)")
    parser.add_argument("--penalty-estimator", choices=("square", "halves"),
                        default=PENALTY_ESTIMATOR,
                        help="the grouped penalties' estimator: the squared batch-mean "
                             "difference, or the product of two generated halves' differences, "
                             "which does not narrow the spread (b, c; default %(default)s)")
    parser.add_argument("--pion-split", type=float, default=PION_SPLIT_MIP, metavar="MIP",
                        help="match the per-layer occupancy and energy of the pions below and "
                             "above this sum_E separately (tracks and showers; b, c; default "
                             "%(default)s, 0 = all pions together)")
    parser.add_argument("--threshold-band", type=float, default=THRESHOLD_BAND, metavar="B",
                        help="pass the gradient straight through the readout threshold for "
                             "generated cells within this fraction below it, so a track "
                             "crossing that falls just under the cut can be pulled back "
                             "(NoisyEnergyShareHead; default %(default)s = hard cut)")
    parser.add_argument("--layer-sharpness", choices=("none", "data", "learned"),
                        default=LAYER_SHARPNESS,
                        help="sharpen each layer's share of the cells (one cell per MIP "
                             "crossing; SharpenedCellNoise) as each species and code's events "
                             "do in the data: held there (data) or trained on from there "
                             "(learned); default %(default)s")
    parser.add_argument("--generator", choices=GENERATORS, default=GENERATOR,
                        help="cells: the cells' energy shares from a softmax over the image; "
                             "components: a few parametric showers per event rendered onto the "
                             "cells, the first started as the primary's track, one cell per "
                             "layer (ddsim_gan.models.components; (a) and (b) only); auto: "
                             "components for (a) and (b), cells for (c) (default %(default)s)")
    parser.add_argument("--pooled-observables", action="store_true",
                        help="with --observable-critic-weight: standardize the second critic's "
                             "observables over both species together instead of within each "
                             "(the electrons' energy resolution is then a twentieth of the "
                             "unit, and the critic lets it widen)")


def export_name(model: str) -> str:
    return RECIPE if model == DEFAULT_MODEL else f"{RECIPE}_{model}"


def seed_metrics(detector, conditions, ref, gen, ref2, *, seed=0, n_bootstrap=20) -> list:
    """Seed 003's numbers as MetricResult rows: relative deviation of the mean sum_E, of the
    mean number of seed hits and of every layer's occupancy (bars), W1/sigma of the seed-hit
    count, and per species the sum_E and nhits deviations (no bar)."""
    import numpy as np

    from ddsim_gan.evaluation import compare, wasserstein_over_sigma
    from ddsim_gan.evaluation import observables as O
    from ddsim_gan.evaluation.metrics import relative_mean_deviation

    layer_axis = O.layer_axis(detector)
    samples = {"ref": ref, "gen": gen, "ref2": ref2}
    sum_e = {k: None if v is None else O.total_energy(v) for k, v in samples.items()}
    nhits = {k: None if v is None else O.seed_hit_count(v) for k, v in samples.items()}
    hit = {k: None if v is None else O.layer_hit(v, layer_axis).astype(np.float64)
           for k, v in samples.items()}

    def row(name, fn, values, bar=None, k=0, mask=None):
        pick = (lambda a: a) if mask is None else (lambda a: a[mask])
        return compare(name, fn, pick(values["ref"]), pick(values["gen"]),
                       None if values["ref2"] is None else pick(values["ref2"]),
                       bar=bar, seed=seed + k, n_bootstrap=n_bootstrap)

    rows = [row("mean_rel_dev:sum_E", relative_mean_deviation, sum_e, BAR_SUM_E, 1),
            row("mean_rel_dev:nhits_seed", relative_mean_deviation, nhits, BAR_NHITS, 2),
            row("W1/sigma:nhits_seed", wasserstein_over_sigma, nhits, None, 3)]
    for layer in range(hit["ref"].shape[1]):
        column = {k: None if v is None else v[:, layer] for k, v in hit.items()}
        rows.append(row(f"occupancy_rel_dev:layer_{layer:02d}", relative_mean_deviation, column,
                        BAR_OCCUPANCY, 10 + layer))
        rows[-1].extra = {"occupancy_ref": float(column["ref"].mean()),
                          "occupancy_gen": float(column["gen"].mean())}
    species = np.asarray(conditions)[:, 1].astype(int)
    for index, label in enumerate(SPECIES):
        mask = species == index
        if mask.sum() < 2:
            continue
        rows.append(row(f"mean_rel_dev:sum_E[{label}]", relative_mean_deviation, sum_e,
                        k=40 + index, mask=mask))
        rows.append(row(f"mean_rel_dev:nhits_seed[{label}]", relative_mean_deviation, nhits,
                        k=50 + index, mask=mask))
    return rows


#: seed-metric columns added to the generator comparison (value: relative deviation)
SEED_COLUMNS = ("mean_rel_dev:sum_E", "mean_rel_dev:nhits_seed", "occupancy_rel_dev:max")


def add_seed_columns(comparison, detector, data, generators, seed=0) -> None:
    """Add :data:`SEED_COLUMNS` to a :func:`compare_generators` table (same samples as its
    rows: each generator draws again with the same seed; the floor from the floor sample)."""
    import numpy as np

    def summary(samples):
        rows = {r.name: r.value for r in seed_metrics(
            detector, data.test_conditions, data.test_samples, samples, None, n_bootstrap=0)}
        occupancy = [v for k, v in rows.items() if k.startswith("occupancy_rel_dev:")]
        return {"mean_rel_dev:sum_E": rows["mean_rel_dev:sum_E"],
                "mean_rel_dev:nhits_seed": rows["mean_rel_dev:nhits_seed"],
                "occupancy_rel_dev:max": float(np.max(occupancy))}

    for row, generator in zip(comparison["rows"], generators.values()):
        values = summary(np.asarray(generator.generate(data.test_conditions, seed=seed)))
        row["values"].update(values)
        row["errors"].update(dict.fromkeys(values, float("nan")))
    if comparison.get("floor") is not None and data.floor_samples is not None:
        comparison["floor"].update(summary(data.floor_samples))
    comparison["metrics"] = list(comparison["metrics"]) + list(SEED_COLUMNS)


def seed_plots(detector, conditions, ref, gen, plot_dir) -> list[str]:
    """Per-layer occupancy and mean seed hits per layer (reference vs generated, per species),
    the seed-hit count, and per species sum_E on logarithmic bins, with ratio panels."""
    import os

    import numpy as np

    from ddsim_gan.evaluation import observables as O
    from ddsim_gan.evaluation import plots as P

    layer_axis = O.layer_axis(detector)
    species = np.asarray(conditions)[:, 1].astype(int)
    paths = [P.plot_histogram_ratio(O.seed_hit_count(ref), O.seed_hit_count(gen),
                                    label="seed hits per event (> 5 % of max)",
                                    path=os.path.join(plot_dir, "hist_nhits_seed.png"))]
    hits_ref, hits_gen = O.seed_hits(ref), O.seed_hits(gen)
    other = tuple(a for a in range(1, hits_ref.ndim) if a != layer_axis + 1)
    per_layer_ref, per_layer_gen = hits_ref.sum(axis=other), hits_gen.sum(axis=other)
    for index, label in [(None, "all"), *enumerate(SPECIES)]:
        mask = slice(None) if index is None else species == index
        if index is not None and not mask.any():
            continue
        paths.append(P.plot_profiles(
            O.layer_hit(ref[mask], layer_axis).astype(float),
            O.layer_hit(gen[mask], layer_axis).astype(float),
            path=os.path.join(plot_dir, f"occupancy_per_layer_{label.strip('-')}.png"),
            xlabel="layer (0 = seed's layer 1)",
            ylabel=f"occupancy (events with a seed hit), {label}"))
        paths.append(P.plot_profiles(
            per_layer_ref[mask], per_layer_gen[mask],
            path=os.path.join(plot_dir, f"seed_hits_per_layer_{label.strip('-')}.png"),
            xlabel="layer (0 = seed's layer 1)", ylabel=f"mean seed hits per layer, {label}"))
        if index is not None:   # the pions' two populations (tracks, showers) show only here
            paths.append(P.plot_histogram_ratio(
                O.total_energy(ref[mask]), O.total_energy(gen[mask]),
                label=f"sum_E per event, {label}", unit="MIP", log=True,
                path=os.path.join(plot_dir, f"hist_sum_E_{label.strip('-')}.png")))
    return paths


def build_model(model, detector, data, hidden=None, seed=0, conservation_weight=CONSERVATION_WEIGHT,
                occupancy_weight=OCCUPANCY_WEIGHT, layer_energy_weight=LAYER_ENERGY_WEIGHT,
                observable_critic_weight=OBSERVABLE_CRITIC_WEIGHT,
                standardize_per_species=True, discrete_latent=DISCRETE_LATENT,
                penalty_estimator=PENALTY_ESTIMATOR,
                occupancy_temperature=OCCUPANCY_TEMPERATURE, pion_split=PION_SPLIT_MIP,
                threshold_band=THRESHOLD_BAND, layer_sharpness=LAYER_SHARPNESS,
                generator=GENERATOR):
    """The GAN of ``--model`` (module docstring) with the output of ``--generator``."""
    if generator == "auto":
        generator = "cells" if model == "conv3d" else "components"
    if generator == "components" and model == "conv3d":
        raise ValueError("--generator components draws parametric showers with a dense trunk; "
                         "the 3D variant (--model conv3d) needs --generator cells")
    from ddsim_gan.detectors import siw_ecal
    from ddsim_gan.models.calorimeter import build_calorimeter_gan
    from ddsim_gan.models.networks import SeedHitFeatures
    from ddsim_gan.models.penalties import GroupedConservationPenalty, GroupedLayerPenalty

    def seed_hit_features(scale, norm):
        return SeedHitFeatures(scale, norm, layer_axis=0, temperature=0.05,
                               name="seed_hit_features")

    species = detector.condition_names.index("species")
    grouped = dict(group_index=species, n_groups=2, estimator=penalty_estimator)
    penalties = [] if model == "wgangp" else [
        GroupedConservationPenalty("sum_E", conservation_weight, **grouped),
        GroupedConservationPenalty("nhits", conservation_weight, **grouped)]
    for quantity, weight in (("layer_occupancy", occupancy_weight),
                             ("layer_energy", layer_energy_weight)):
        if model != "wgangp" and weight:
            soft = {"temperature": occupancy_temperature} if quantity == "layer_occupancy" else {}
            split = [None, pion_split] if pion_split > 0 else None     # (e-, pi-)
            penalties.append(GroupedLayerPenalty(quantity, weight, layer_axis=0, **soft,
                                                 energy_split=split, **grouped))
    # fixed denominators: the batch's own mean would bias the pions low (the penalty's doc)
    for penalty in penalties:
        penalty.fit_reference(data.train_samples, data.train_conditions)
    small, large = (hidden, hidden) if hidden else (256, 512)
    gan = build_calorimeter_gan(
        detector, data.train_conditions, data.train_samples, energy_condition="E_beam",
        architecture="conv3d" if model == "conv3d" else
        "components" if generator == "components" else "dense",
        generator_hidden=(small, large), critic_hidden=(small, small), critic_steps=4,
        generator_channels=(16, 8) if not hidden else (4, 2),
        critic_channels=(8, 16, 32) if not hidden else (2, 4, 4),
        critic_features=[seed_hit_features], extra_penalties=penalties,
        readout_noise=siw_ecal.NOISE_MIP.reshape(-1, 1, 1), threshold_band=threshold_band,
        discrete_latent=discrete_latent, layer_sharpness=layer_sharpness,
        seed=seed)
    if model == "wgangp" or not observable_critic_weight > 0:
        return gan
    from ddsim_gan.models.layer_observables import LayerHitObservables
    from ddsim_gan.models.observable_critic import with_observable_critic

    observables = LayerHitObservables(layer_axis=0)
    if standardize_per_species:
        observables.fit_groups(data.train_samples, data.train_conditions, species, 2)
    return with_observable_critic(gan, observables, data.train_samples,
                                  data.train_conditions, weight=observable_critic_weight)


def main(argv=None):
    from ddsim_gan import recipe

    args = recipe.parse_args(RECIPE, __doc__, argv, extra=_extra_options)
    settings = recipe.settings_for(args, PRESETS)
    if args.model == "conv3d" and args.epochs is None:
        settings["epochs"] = 1 if args.quick else CONV3D_FULL_EPOCHS
    if args.n_test is not None:
        settings["n_test"] = args.n_test
    if args.output_dir == Path("runs") / RECIPE:       # the shared default: one per model
        args.output_dir = Path("runs") / f"{RECIPE}_{args.model}"
    name = export_name(args.model)

    from ddsim_gan import detectors
    from ddsim_gan.evaluation import ShowerLibrary, compare_generators, evaluate
    from ddsim_gan.evaluation.report import add_metrics

    started = recipe.setup(args)
    detector = detectors.get(DETECTOR)
    data = recipe.prepare_data(detector, args, settings)

    gan = build_model(args.model, detector, data, hidden=args.hidden, seed=args.seed,
                      conservation_weight=args.conservation_weight,
                      occupancy_weight=args.occupancy_weight,
                      layer_energy_weight=args.layer_energy_weight,
                      observable_critic_weight=args.observable_critic_weight,
                      standardize_per_species=not args.pooled_observables,
                      discrete_latent=args.discrete_latent,
                      penalty_estimator=args.penalty_estimator,
                      occupancy_temperature=args.occupancy_temperature,
                      pion_split=args.pion_split, threshold_band=args.threshold_band,
                      layer_sharpness=args.layer_sharpness, generator=args.generator)
    # XLA:CPU makes 3D convolutions ~40x slower (ddsim_gan.models.calorimeter) and the
    # components' rendering 4x (ddsim_gan.models.components' recipe): no jit for either.
    jit = not args.no_jit and args.model != "conv3d" and args.generator == "cells"
    second_critic = hasattr(gan, "observable_critic")
    gan.compile(**recipe.wgan_optimizers(
        settings, learning_rate=2e-4,
        observable_critic_lr_factor=args.observable_critic_lr_factor if second_critic else None),
        jit_compile=jit)
    history = recipe.train(gan, detector, data, settings, args)
    recipe.save_model(gan, name, detector, args, model=args.model)

    generated = gan.generate(data.test_conditions, seed=args.seed + 1)
    result = evaluate(detector, data.test_conditions, data.test_samples, generated,
                      data.floor_samples, classifier=True,
                      classifier_epochs=recipe.classifier_epochs(args), plots=not args.no_plots,
                      seed=args.seed, output_dir=args.output_dir)
    add_metrics(result, seed_metrics(detector, data.test_conditions, data.test_samples,
                                     generated, data.floor_samples, seed=args.seed))
    if not args.no_plots:
        result["plots"] += seed_plots(detector, data.test_conditions, data.test_samples,
                                      generated, args.output_dir / "plots")
    result["model"] = args.model
    generators = {f"GAN ({args.model})": gan}
    if not args.no_library:
        generators["shower library (k=10)"] = ShowerLibrary(
            detector, data.train_conditions, data.train_samples, energy_condition="E_beam")
    result["comparison"] = compare_generators(
        detector, data.test_conditions, data.test_samples, data.floor_samples, generators,
        seed=args.seed)
    add_seed_columns(result["comparison"], detector, data, generators, seed=args.seed)
    return recipe.finish(result, name, settings, args, history, started, data)


if __name__ == "__main__":
    sys.exit(main())
