"""LUXE beam dump: WGAN of the particles crossing the sampling plane, split learning (seed 004).

    python recipes/luxe_split_wgan.py --quick --output-dir runs/luxe_quick
    python recipes/luxe_split_wgan.py --output-dir runs/luxe_split --export-base saved_models
    python recipes/luxe_split_wgan.py --no-split --output-dir runs/luxe_nosplit \\
        --compare-run runs/luxe_split

The seed's method, step by step: the features are quantile-transformed (inside the model); a
conditional WGAN-GP (condition: particle species) learns them; the KL divergence of every
feature is monitored each epoch by a Keras callback (:class:`~ddsim_gan.evaluation.MetricMonitor`,
in the Keras logs and in TensorBoard under ``region_<name>/logs/physics``); and *split learning*
trains one model per region of the plane, inner (r < 100 mm) and outer, each "trained on (r, x, y)
and the rest, generating (x, y) and the rest": the critic sees r derived from the generated
(x, y) (:class:`~ddsim_gan.models.regions.RadialQuantileTransform`) and an output head keeps each
model's particles inside its region (:class:`~ddsim_gan.models.regions.RegionHead`). At sampling
time the regions are mixed in the reference proportions per species; the mixture is one Keras
model ``[conditions, noise] -> (x, y, p, phi_p, theta, t)`` (``generator.keras``) and one
SavedModel. ``--time-split NS`` (default 1000 ns, in the inner region) splits a region once
more, at an arrival time: the prompt particles and the delayed ones (neutron-capture photons on
their narrow lines, moderated neutrons) each get their own model, mixed the same way. The
output head maps each species through its own inverse CDF (``--shared-quantiles``: one for
all). ``--no-split`` trains a single model on the whole plane with the same total number of
steps, for comparison; ``--compare-run`` puts another run's numbers beside this one's.

Bars (issue 3), on held-out particles: per feature KL <= 0.02 and W1/sigma <= 0.05, separately
in the inner and the outer region (``inner/KL:x``, ``outer/W1/sigma:t``, ...), and the fraction of
particles in the inner region within 0.01 of the reference (``region_fraction_inner``; per
species in the report).

Writes to the output directory: ``region_<name>/`` (training shards, TensorBoard logs, the best
generator of each region), ``region_<name>.keras`` (each region's whole GAN, to continue
training), ``regions.json``, ``generator.keras``, ``run.json``, ``metrics.json``, ``report.md``,
``plots/`` and the SavedModel under ``<export-base>/luxe_split_wgan/<version>/``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

RECIPE = "luxe_split_wgan"
DETECTOR = "luxe_dump"

#   quick: < 2 min on 2 cores; full: <= 30 min on 2 cores. epochs, steps and the time limit are
#   the totals: with split learning each region gets its share of them.
PRESETS = {
    "quick": dict(n_train=20_000, n_test=6_000, n_val=6_000, batch_size=256, epochs=2,
                  steps_per_epoch=30, time_limit_minutes=None, library_size=20_000),
    # 2026-12-05: the 60 epochs of 2026-12-04 ended after 20.1 min in all; 80 fill 24.8 min
    "full": dict(n_train=600_000, n_test=200_000, n_val=40_000, batch_size=512, epochs=80,
                 steps_per_epoch=400, time_limit_minutes=26, library_size=600_000),
}
LEARNING_RATE = 2e-4
GENERATOR_LR_FRACTION = 0.5  # 5-min runs: max(metric / bar) inner 1.9, outer 4.7 (1.0: 2.4, 12)
ARCHITECTURE = dict(latent_dim=16, generator_hidden=(256, 256, 256),
                    critic_hidden=(256, 256, 256), critic_steps=4, gradient_penalty=10.0)
MOMENT_WEIGHT = 10.0  # runs/luxe_moments of 2026-12-04
#: per-species fraction of t beyond these arrival times (ns) matched (TailFractionPenalty)
TAIL_WEIGHT, TAIL_THRESHOLDS_NS = 0.0, (1e3, 1e4, 1e5, 1e6)
REGIONS = ("inner", "outer")
REGION_SHARE = {"inner": 0.5, "outer": 0.5}  # of the epochs and of the time limit
#: with --time-split: the share of a split region's epochs and time its delayed model gets (the
#: inner delayed particles are 3 % of the inner region's, the outer ones 26 % of the outer's)
DELAYED_SHARE = {"inner": 0.1, "outer": 0.4}
TIME_SPLIT_NS = 1000.0            # runs/luxe_tsplit_inner: inner W1/sigma of t 0.064 -> 0.007
TIME_SPLIT_REGIONS = ("inner",)  # runs/luxe_tsplit: splitting the outer region too cost its x, p
MIN_POPULATION_BATCHES = 4       # a side of a time split with fewer training particles stays joined
KL_BAR, W1_BAR, FRACTION_BAR = 0.02, 0.05, 0.01
LOG_FEATURES = ("p", "t")  # span about six decades: plotted on log axes


def _extra(parser):
    from ddsim_gan import recipe

    recipe.add_learning_rate_options(parser, LEARNING_RATE, GENERATOR_LR_FRACTION)
    parser.add_argument("--moment-weight", type=float, default=MOMENT_WEIGHT,
                        help="weight of the per-species moment penalty: mean and width of every "
                             "Gaussianized feature and of r matched per species "
                             "(BinnedMomentPenalty; default %(default)s, 0 = off)")
    parser.add_argument("--tail-weight", type=float, default=TAIL_WEIGHT,
                        help="weight of the per-species tail penalty: the fraction of particles "
                             "arriving later than 1e3, 1e4, 1e5 and 1e6 ns matched (the slow "
                             "photons and neutrons; TailFractionPenalty; default %(default)s, "
                             "0 = off)")
    parser.add_argument("--time-split", type=float, default=TIME_SPLIT_NS, metavar="NS",
                        help="also split the --time-split-regions at this arrival time (ns): "
                        "prompt and delayed particles (neutron-capture photons, moderated "
                        "neutrons) get their own model, where each side has at least "
                        f"{MIN_POPULATION_BATCHES} batches of training particles (default "
                        "%(default)g; 0 = no time split; ignored with --no-split)")
    parser.add_argument("--time-split-regions", nargs="+", choices=REGIONS,
                        default=list(TIME_SPLIT_REGIONS),
                        help="the regions --time-split divides (default: %(default)s)")
    parser.add_argument("--shared-quantiles", action="store_true",
                        help="one inverse-CDF table for all species in the generator's output "
                        "head (the model before 2026-12-06) instead of one per species")
    parser.add_argument("--no-split", action="store_true",
                        help="train one model on the whole plane instead of one per region")
    parser.add_argument("--compare-run", type=Path, default=None,
                        help="another run's output directory (e.g. the --no-split one) whose "
                        "region numbers go beside this run's in the report")
    for key, text in (("n_test", "held-out particles for the evaluation"),
                      ("n_val", "validation particles (per-epoch KL, model choice)"),
                      ("library_size", "particles stored in the library baseline")):
        parser.add_argument(f"--{key.replace('_', '-')}", type=int,
                            help=f"{text} (override the preset)")


def _settings(args, recipe):
    settings = recipe.settings_for(args, PRESETS)
    for key in ("n_test", "n_val", "library_size"):
        if getattr(args, key, None) is not None:
            settings[key] = getattr(args, key)
    for key in ("n_train", "n_test", "n_val", "batch_size", "epochs", "steps_per_epoch",
                "library_size"):
        if settings[key] < 1:
            raise SystemExit(f"{RECIPE}: --{key.replace('_', '-')} = {settings[key]}, expected "
                             "a positive number")
    recipe.check_learning_rate_options(RECIPE, args)
    if settings["batch_size"] % ARCHITECTURE["critic_steps"]:
        raise SystemExit(f"{RECIPE}: --batch-size {settings['batch_size']} must be a multiple of "
                         f"the {ARCHITECTURE['critic_steps']} critic steps")
    if not args.time_split >= 0:
        raise SystemExit(f"{RECIPE}: --time-split {args.time_split:g}: expected an arrival time "
                         "in ns (0 = no time split)")
    if args.compare_run is not None and not (args.compare_run / "metrics.json").is_file():
        raise SystemExit(f"{RECIPE}: --compare-run {args.compare_run}: no metrics.json there; "
                         "point it at the output directory of a finished run")
    return settings


def region_bars(detector) -> dict:
    return {**{f"KL:{name}": KL_BAR for name in detector.sample_names},
            **{f"W1/sigma:{name}": W1_BAR for name in detector.sample_names}}


def bar_score(values: dict) -> float:
    """The largest metric / bar over the features: <= 1 means every bar is met."""
    return max(values[name] / (KL_BAR if name.startswith("KL:") else W1_BAR)
               for name in values)


def region_plan(detector):
    """(name, r_min, r_max, region index or None, share) of each model to train."""
    radius = detector.INNER_RADIUS_MM
    return [("inner", 0.0, radius, 0, REGION_SHARE["inner"]),
            ("outer", radius, None, 1, REGION_SHARE["outer"])]


class Population(NamedTuple):
    """The particles one model learns: radial region ``region`` (``r_min <= r < r_max``) and
    arrival times ``t_min <= t < t_max`` (ns)."""

    name: str
    r_min: float
    r_max: float | None
    region: int
    share: float
    t_min: float = -math.inf
    t_max: float = math.inf


def population_plan(detector, time_split_ns=None, split_regions=TIME_SPLIT_REGIONS):
    """The models to train: one per region; with ``time_split_ns``, each region named in
    ``split_regions`` is divided once more into its prompt (t below the split) and delayed
    particles, the delayed model getting ``DELAYED_SHARE`` of the region's share."""
    plan = []
    for name, r_min, r_max, index, share in region_plan(detector):
        if time_split_ns is None or name not in split_regions:
            plan.append(Population(name, r_min, r_max, index, share))
            continue
        delayed = DELAYED_SHARE[name] * share
        plan += [Population(f"{name}_prompt", r_min, r_max, index, share - delayed,
                            t_max=time_split_ns),
                 Population(f"{name}_delayed", r_min, r_max, index, delayed,
                            t_min=time_split_ns)]
    return plan


def join_thin_time_splits(plan, index, minimum) -> list[Population]:
    """``plan`` with every region whose prompt or delayed side holds fewer than ``minimum``
    training particles (``index`` from :func:`population_index`) trained whole again."""
    counts = np.bincount(index[index >= 0], minlength=len(plan))
    joined, k = [], 0
    while k < len(plan):
        p = plan[k]
        if not p.name.endswith("_prompt"):
            joined.append(p)
            k += 1
            continue
        delayed = plan[k + 1]
        if min(counts[k], counts[k + 1]) >= minimum:
            joined += [p, delayed]
        else:
            region = p.name.removesuffix("_prompt")
            print(f"region {region!r}: {counts[k]:,} prompt and {counts[k + 1]:,} delayed "
                  f"training particles, a side below {minimum:,}: not split in time", flush=True)
            joined.append(Population(region, p.r_min, p.r_max, p.region, p.share + delayed.share))
        k += 2
    return joined


def population_index(plan, detector, samples) -> np.ndarray:
    """Which population of ``plan`` each ``[n, 6]`` sample belongs to."""
    regions = detector.region_of(samples)
    t = np.asarray(samples)[:, detector.sample_names.index("t")]
    index = np.full(len(samples), -1)
    for k, p in enumerate(plan):
        index[(regions == p.region) & (t >= p.t_min) & (t < p.t_max)] = k
    return index


def train_region(name, r_min, r_max, rows, share, data, val, detector, settings, args, recipe):
    """Train one region's GAN (or the whole plane's); returns (gan, choice)."""
    import keras

    from ddsim_gan.evaluation import MetricMonitor
    from ddsim_gan.models.regions import build_region_gan

    region_args = argparse.Namespace(**vars(args))
    region_args.output_dir = args.output_dir / f"region_{name}"
    region_args.output_dir.mkdir(parents=True, exist_ok=True)
    region_settings = dict(settings)
    region_settings["epochs"] = max(1, round(settings["epochs"] * share))
    if settings["time_limit_minutes"]:
        region_settings["time_limit_minutes"] = settings["time_limit_minutes"] * share
    region_data = recipe.RecipeData(data.train_conditions[rows], data.train_samples[rows],
                                    data.test_conditions, data.test_samples, data.floor_samples,
                                    data.source)
    if rows.sum() < settings["batch_size"] or len(val[0]) < 2:
        raise SystemExit(f"{RECIPE}: population {name!r} holds {rows.sum():,} training and "
                         f"{len(val[0]):,} validation particles, too few to train on (at least "
                         f"a batch of {settings['batch_size']}); raise --n-train and --n-val")
    print(f"---- region {name!r}: {rows.sum():,} training particles, r in [{r_min:g}, "
          f"{'inf' if r_max is None else f'{r_max:g}'}) mm", flush=True)
    penalties = []
    species = np.arange(len(detector.conditions[0].labels) + 1) - 0.5
    if args.moment_weight:
        from ddsim_gan.models.binned_moments import BinnedMomentPenalty

        penalties.append(BinnedMomentPenalty(species, condition_index=0, space="normalized",
                                             weight=args.moment_weight))
    if args.tail_weight:
        from ddsim_gan.models.binned_moments import TailFractionPenalty, normalized_thresholds

        column = detector.sample_names.index("t")
        cuts = normalized_thresholds(region_data.train_samples[:, column], TAIL_THRESHOLDS_NS)
        penalties.append(TailFractionPenalty(species, column=column, thresholds=cuts,
                                             condition_index=0, weight=args.tail_weight))
    gan = build_region_gan(detector, region_data.train_conditions, region_data.train_samples,
                           r_min=r_min, r_max=r_max, seed=args.seed, name=f"luxe_{name}",
                           extra_penalties=penalties,
                           category_quantiles=not args.shared_quantiles, **ARCHITECTURE)
    # the generator learns at a fraction of the critic's rate (two time-scale update rule): in
    # medium runs a critic that keeps ahead steadied training (critic loss stayed negative)
    gan.compile(**recipe.wgan_optimizers(region_settings, learning_rate=args.learning_rate,
                                         generator_fraction=args.generator_lr_fraction),
                jit_compile=not args.no_jit)
    val_conditions, val_samples = val
    best_path = region_args.output_dir / "best_generator.keras"
    metric_names = (*(f"KL:{f}" for f in detector.sample_names),
                    *(f"W1/sigma:{f}" for f in detector.sample_names))
    monitor = MetricMonitor(detector, val_conditions, val_samples, every=1,
                            metrics=metric_names, monitor=bar_score, best_path=best_path,
                            log_dir=region_args.output_dir / "logs" / "physics",
                            seed=args.seed, resume=True, averaged_weights=True)
    history = recipe.train(gan, detector, region_data, region_settings, region_args,
                           callbacks=[monitor])
    # keep the better of the final (weight-averaged) generator and the best monitored epoch
    choice = {"final": monitor.compute(gan.generate(val_conditions, seed=args.seed))["monitor"]}
    if best_path.is_file():
        best = keras.saving.load_model(best_path)
        noise = np.random.default_rng(args.seed).standard_normal(
            (len(val_conditions), gan.latent_dim)).astype(np.float32)
        choice["best_epoch"] = monitor.compute(
            best.predict([val_conditions, noise], batch_size=16384, verbose=0))["monitor"]
        if choice["best_epoch"] < choice["final"]:
            gan.generator.set_weights(best.get_layer("generator").get_weights())
    print(f"region {name!r}: validation max(metric / bar) {choice}; keeping "
          f"{min(choice, key=choice.get)}", flush=True)
    return gan, {**choice, "kept": min(choice, key=choice.get), "epochs_run": len(
        history.history.get("critic_loss", [])), "history": history}


def region_fraction_metrics(detector, conditions, ref, gen, floor):
    """|f_gen - f_ref| of the inner-region fraction, overall (with the bar) and per species."""
    from ddsim_gan.evaluation.metrics import MetricResult, passes

    labels = detector.conditions[0].labels
    species = np.rint(conditions[:, 0]).astype(int)
    regions = {key: detector.region_of(value) == 0 for key, value in
               (("ref", ref), ("gen", gen), ("floor", floor)) if value is not None}
    rows = []
    for label, mask in (("", np.ones(len(species), bool)),
                        *((f":{labels[s]}", species == s) for s in range(len(labels)))):
        if not mask.any():
            continue
        f = {key: float(value[mask].mean()) for key, value in regions.items()}
        n = int(mask.sum())
        error = math.sqrt(f["ref"] * (1 - f["ref"]) * 2.0 / n)
        value = abs(f["gen"] - f["ref"])
        floor_value = abs(f["floor"] - f["ref"]) if "floor" in f else float("nan")
        bar = FRACTION_BAR if not label else None
        rows.append(MetricResult(f"region_fraction_inner{label}", value, error, floor_value,
                                 float("nan"), bar, passes(value, bar),
                                 {"reference": f["ref"], "generated": f["gen"], "n": n}))
    return rows


def region_metrics(detector, name, index, ref, gen, floor, seed):
    """Per-feature bars of one region: evaluate() on the particles that lie in it."""
    from ddsim_gan.evaluation import evaluate

    pick = {key: None if value is None else value[detector.region_of(value) == index]
            for key, value in (("ref", ref), ("gen", gen), ("floor", floor))}
    if min(len(pick["ref"]), len(pick["gen"])) < 2:
        raise SystemExit(f"{RECIPE}: region {name!r} holds {len(pick['ref'])} reference and "
                         f"{len(pick['gen'])} generated particles; too few to evaluate "
                         "(raise --n-test)")
    result = evaluate(detector, None, pick["ref"], pick["gen"], pick["floor"],
                      bars=region_bars(detector), classifier=False, plots=False, seed=seed)
    for metric in result["metrics"]:
        metric["name"] = f"{name}/{metric['name']}"
    return result["metrics"], pick


def species_metrics(detector, name, index, conditions, ref, gen, floor):
    """KL of every feature per species inside one region, no bar: the region's bars see the
    mixture of species, which a generator can meet with every species wrong (the LUXE outer
    electrons' p, docs/luxe_split_wgan.md). ``floor`` (a second reference at the same
    conditions) gives each its floor."""
    from ddsim_gan.evaluation.metrics import MetricResult, binned_kl

    species = np.rint(conditions[:, 0]).astype(int)
    inside = {key: None if value is None else detector.region_of(value) == index
              for key, value in (("ref", ref), ("gen", gen), ("floor", floor))}
    rows = []
    for s, label in enumerate(detector.conditions[0].labels):
        pick = {key: None if mask is None else (species == s) & mask
                for key, mask in inside.items()}
        if min(pick["ref"].sum(), pick["gen"].sum()) < 100:
            continue
        for j, feature in enumerate(detector.sample_names):
            value = binned_kl(ref[pick["ref"], j], gen[pick["gen"], j])
            floor_value = (binned_kl(ref[pick["ref"], j], floor[pick["floor"], j])
                           if floor is not None and pick["floor"].sum() >= 100 else float("nan"))
            rows.append(MetricResult(f"{name}/KL:{feature}:{label}", value, float("nan"),
                                     floor_value, extra={"n": int(pick["ref"].sum())}))
    return rows


def region_plots(detector, name, pick, plot_dir):
    from ddsim_gan.evaluation.plots import plot_histogram_ratio

    paths = []
    for j, (feature, unit) in enumerate(zip(detector.sample_names, detector.sample_units)):
        log = feature in LOG_FEATURES
        ref, gen = pick["ref"][:, j], pick["gen"][:, j]
        if log:
            ref, gen = ref[ref > 0], gen[gen > 0]
        paths.append(plot_histogram_ratio(ref, gen, label=f"{feature} ({name})", unit=unit,
                                          log=log, path=plot_dir / f"{name}_{feature}.png"))
    paths.append(plot_xy(pick, name, plot_dir / f"{name}_xy.png"))
    return paths


def plot_xy(pick, name, path):
    """Density of (x, y): reference beside generated, shared log colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    ref, gen = pick["ref"], pick["gen"]
    limit = float(np.max(np.abs(ref[:, :2])))
    edges = np.linspace(-limit, limit, 81)
    h_ref = np.histogram2d(ref[:, 0], ref[:, 1], [edges, edges])[0] / len(ref)
    h_gen = np.histogram2d(gen[:, 0], gen[:, 1], [edges, edges])[0] / len(gen)
    positive = np.concatenate([h_ref[h_ref > 0], h_gen[h_gen > 0]])
    norm = LogNorm(positive.min(), positive.max()) if positive.size else None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharey=True)
    for ax, hist, title in ((axes[0], h_ref, "reference"), (axes[1], h_gen, "generated")):
        shown = ax.pcolormesh(edges, edges, np.where(hist > 0, hist, np.nan).T, norm=norm)
        ax.set_title(f"{title} ({name})")
        ax.set_xlabel("x [mm]")
        ax.set_aspect("equal")
    axes[0].set_ylabel("y [mm]")
    fig.colorbar(shown, ax=axes, label="fraction of particles per bin")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return str(path)


def split_summary(result, detector) -> dict:
    """The numbers that say what split learning buys: worst KL and W1/sigma per region, the
    region fraction, the classifier AUC."""
    by_name = {m["name"]: m for m in result["metrics"]}
    summary = {}
    for region in REGIONS:
        for metric in ("KL", "W1/sigma"):
            values = {f: by_name.get(f"{region}/{metric}:{f}", {}).get("value")
                      for f in detector.sample_names}
            values = {f: v for f, v in values.items() if v is not None}
            if values:
                worst = max(values, key=values.get)
                summary[f"{region} max {metric}"] = {"value": values[worst], "feature": worst}
    for name in ("region_fraction_inner", "classifier_auc"):
        if name in by_name:
            summary[name] = {"value": by_name[name]["value"]}
    return summary


def comparison_notes(mode, summary, other_mode, other_summary):
    lines = ["## Split learning", "",
             f"This run: **{mode}**." + (f" Beside it: {other_mode} (--compare-run)."
                                         if other_summary else ""), "",
             f"| quantity | {mode} |" + (f" {other_mode} |" if other_summary else ""),
             "|---|---|" + ("---|" if other_summary else "")]
    for key, entry in summary.items():
        cell = f"{entry['value']:.4g}" + (f" ({entry['feature']})" if "feature" in entry else "")
        other = ""
        if other_summary:
            o = other_summary.get(key)
            other = (" – |" if o is None else f" {o['value']:.4g}"
                     + (f" ({o['feature']})" if "feature" in o else "") + " |")
        lines.append(f"| {key} | {cell} |{other}")
    return lines


def main(argv=None):
    from ddsim_gan import recipe

    args = recipe.parse_args(RECIPE, __doc__, argv, extra=_extra)
    settings = _settings(args, recipe)

    from ddsim_gan import detectors
    from ddsim_gan.evaluation import ShowerLibrary, compare_generators, evaluate
    from ddsim_gan.evaluation.report import add_metrics
    from ddsim_gan.models.regions import RegionSplit, region_fractions

    started = recipe.setup(args)
    detector = detectors.get(DETECTOR)
    out = args.output_dir
    data = recipe.prepare_data(detector, args, settings)
    if args.data:  # validation particles from the user's training split, not the simulator
        n_val = max(1, min(settings["n_val"], len(data.train_conditions) // 5))
        val = (data.train_conditions[-n_val:], data.train_samples[-n_val:])
        data.train_conditions = data.train_conditions[:-n_val]
        data.train_samples = data.train_samples[:-n_val]
    else:
        val = detector.simulate(settings["n_val"], np.random.SeedSequence(args.seed).spawn(4)[3])
    mode = "no-split" if args.no_split else "split"

    # ---- one model per region (split learning), or one for the whole plane ------------------
    choices = {}
    if args.no_split:
        gan, choices["plane"] = train_region(
            "plane", 0.0, None, np.ones(len(data.train_samples), bool), 1.0, data, val, detector,
            settings, args, recipe)
        model = gan
        gan.sampler.save(out / "generator.keras")
        gan.save(out / "model.keras")
    else:
        plan = population_plan(detector, args.time_split or None, args.time_split_regions)
        plan = join_thin_time_splits(plan, population_index(plan, detector, data.train_samples),
                                     MIN_POPULATION_BATCHES * settings["batch_size"])
        train_index = population_index(plan, detector, data.train_samples)
        timed = [p.name.removesuffix("_prompt") for p in plan if p.name.endswith("_prompt")]
        if timed:
            mode = f"split, {' and '.join(timed)} split at {args.time_split:g} ns"
        val_index = population_index(plan, detector, val[1])
        gans = []
        for k, p in enumerate(plan):
            population_val = (val[0][val_index == k], val[1][val_index == k])
            gan, choices[p.name] = train_region(p.name, p.r_min, p.r_max, train_index == k,
                                                p.share, data, population_val, detector,
                                                settings, args, recipe)
            gans.append(gan)
        fractions = region_fractions(data.train_conditions, train_index, len(plan), 0,
                                     len(detector.conditions[0].labels))
        model = RegionSplit(gans, fractions, category_index=0, names=[p.name for p in plan])
        model.save(out)
    histories = {name: choice.pop("history") for name, choice in choices.items()}
    recipe.write_run_info(RECIPE, detector, args, mode=mode, model_choice=choices,
                          region_fractions=None if args.no_split else model.fractions.tolist())

    # ---- evaluation: whole plane, then each region against its bars -------------------------
    generated = model.generate(data.test_conditions, seed=args.seed + 1)
    result = evaluate(detector, data.test_conditions, data.test_samples, generated,
                      data.floor_samples, classifier=True,
                      classifier_epochs=recipe.classifier_epochs(args), plots=False, seed=args.seed)
    result["mode"] = mode
    plot_dir = out / "plots"
    for name, _, _, index, _ in region_plan(detector):
        metrics, pick = region_metrics(detector, name, index, data.test_samples, generated,
                                       data.floor_samples, args.seed)
        add_metrics(result, metrics)
        add_metrics(result, species_metrics(detector, name, index, data.test_conditions,
                                            data.test_samples, generated, data.floor_samples))
        if not args.no_plots:
            result["plots"] += region_plots(detector, name, pick, plot_dir)
    add_metrics(result, region_fraction_metrics(detector, data.test_conditions,
                                                data.test_samples, generated,
                                                data.floor_samples))
    summary = split_summary(result, detector)
    other_mode = other_summary = None
    if args.compare_run is not None:
        other = json.loads((args.compare_run / "metrics.json").read_text())
        other_mode = f"{other.get('mode', '?')} ({args.compare_run})"
        other_summary = other.get("split_summary")
    result["split_summary"] = summary
    result["notes"] = comparison_notes(mode, summary, other_mode, other_summary)

    # ---- the library baseline beside the GAN: fidelity, speed, size --------------------------
    n_compare = min(len(data.test_conditions), 50_000)
    library = ShowerLibrary(detector, data.train_conditions[:settings["library_size"]],
                            data.train_samples[:settings["library_size"]])
    # fidelity without the classifier (the GAN's AUC is in the table above; two more
    # classifier trainings per generator would cost minutes of the 30)
    metrics = ("W1/sigma:mean", "KL:mean", "KS:mean")
    result["comparison"] = compare_generators(
        detector, data.test_conditions[:n_compare], data.test_samples[:n_compare],
        data.floor_samples[:n_compare], {f"GAN ({mode})": model, "library": library},
        metrics=metrics, seed=args.seed)
    result["training"] = {name: {"final_losses": {k: float(v[-1]) for k, v in
                                                  h.history.items()}, **choices[name]}
                          for name, h in histories.items()}
    history = next(iter(histories.values()))
    return recipe.finish(result, RECIPE, settings, args, history, started, data)


if __name__ == "__main__":
    sys.exit(main())
