"""LHCb RICH PID: conditional WGAN-GP from track kinematics to the five RICH DLLs (seed 001).

    python recipes/lhcb_rich_gan.py --quick --output-dir runs/rich_quick
    python recipes/lhcb_rich_gan.py --output-dir runs/rich_full --export-base saved_models
    python recipes/lhcb_rich_gan.py --data my_shards/ --output-dir runs/rich_mine

The generator maps (P, eta, nSPDHits, species) and noise to RichDLLe, RichDLLmu, RichDLLk,
RichDLLp and RichDLLbt. The DLLs are generated in Gaussian units and mapped back through the
inverse CDF of the training DLLs inside the model, which keeps the exact point masses of the
reference exact. The quantile model's tables sit at the nodes of a (log P, eta, nSPDHits) grid
per species, with nodes at the Cherenkov thresholds and acceptance edges, interpolated in the
track's conditions (``--tables grid``, :mod:`ddsim_gan.models.grid_quantiles`); ``--tables
species`` has one table per species over all momenta (the model before 2026-12-07),
``--shared-quantiles`` one for all species. Models (``--model``):

* ``quantile`` (default): the GAN learns the DLLs in their marginal Gaussian units, the
  conditions Gaussianized through their empirical CDF; the final and the best-monitored
  generator are compared on the validation efficiencies and the better kept.
* ``standardized``: in those Gaussian units each DLL is also standardized at its conditions,
  r = (Q(x) - m(c)) / s(c), with m and log s^2 piecewise linear in log P (``--n-knots`` knots)
  per species and linear in eta and nSPDHits, fitted before training; the GAN learns r (a chain
  of one link, :mod:`ddsim_gan.models.chain`). It learns faster (at 3 000 steps of batch 1024:
  280 failed efficiency ratios instead of 390) but the full presets end the other way round
  (129 against 95; docs/lhcb_rich_gan.md).

Both impose what the likelihood guarantees: a hypothesis without a Cherenkov ring in either
radiator (below its thresholds or outside the acceptances, from P and eta) has the likelihood of
"below threshold", so its DLL equals RichDLLbt exactly, and RichDLLbt is 0 without a pion ring
(``--ties rings``; ``--ties momentum`` only the kaon's and proton's C4F10 thresholds in P, for
the standardized model always; ``--no-ties`` leaves it to the GAN). The reference simulator
gives species-balanced training tracks (the model is conditional on the species; the rare e and
mu would otherwise get 3-4 % of the steps).

After training, the generator's raw output is quantile-mapped onto the reference's raw units
at every condition (:class:`~ddsim_gan.models.quantile_map.GridQuantileMap`: each DLL's
distribution at each (P, eta, nSPDHits, species) becomes the reference's, the generator's
correlations between the DLLs kept; ``--no-quantile-map`` skips it). The generator as trained
is kept beside the mapped sampler (``generator_alone.keras``), and the report gives the bar
for both.

The bar is the seed's own metric (:func:`ddsim_gan.evaluation.metrics.efficiency_ratio_bar`):
per species and DLL, cuts at the 10/25/50/75/90 % quantiles of the reference DLL distribution;
in 3 x 3 bins of (P, eta) times 3 bins of nSPDHits the efficiency ratio eps_GAN / eps_ref must
lie in [0.97, 1.03]. A ratio is tested only where the tracks can resolve 3 %: where a perfect
model of the training tracks would leave the band with probability below 0.1 % (binomial error
of the ratio, from the bar's reference, generated and training tracks in the bin, <= 0.03 /
3.29); the report lists the bins and cuts left out and why, and the count without the training
tracks' error. The same numbers for a second reference simulation (the floor) and for the
shower-library baseline stand beside the GAN's.

Writes to the output directory: ``data/`` (training shards), ``logs/`` (TensorBoard; per-epoch
physics metrics under ``logs/physics``), ``metrics.json``, ``report.md``, ``plots/``
(``efficiency/``: one ratio map per species and DLL), ``generator.keras`` (the mapped sampler), ``generator_alone.keras``, ``model.keras``
(quantile model) or ``link_*.keras`` and ``chain.json`` (standardized model), and the
SavedModel under ``<export-base>/lhcb_rich_gan/<version>/``. Interrupted? Rerun the same command.
"""

from __future__ import annotations

import os
import sys

import numpy as np

RECIPE = "lhcb_rich_gan"
DETECTOR = "lhcb_rich"

#   quick: < 2 min on 2 cores; full: <= 30 min on 2 cores (training stops at the time limit).
#   The standardized model has no per-epoch physics evaluation: 30 000 steps fit in the time
#   the quantile model spends on 18 000 and its evaluations.
_QUICK = dict(n_train=20_000, n_test=4_000, n_val=5_000, n_bar=50_000, batch_size=256,
              epochs=2, steps_per_epoch=40, time_limit_minutes=None, library_size=20_000)
_FULL = dict(n_train=1_000_000, n_test=50_000, n_val=50_000, n_bar=2_000_000, batch_size=1024,
             epochs=60, steps_per_epoch=300, time_limit_minutes=21, library_size=1_000_000)
PRESETS = {"standardized": {"quick": _QUICK, "full": dict(_FULL, epochs=100)},
           "quantile": {"quick": _QUICK, "full": _FULL}}
LEARNING_RATE = 5e-4  # with batches of 1024 (medium runs: better than 2e-4 with 512)
GENERATOR_LR_FRACTION = 1.0
ARCHITECTURE = dict(latent_dim=16, generator_hidden=(256, 256, 256),
                    critic_hidden=(256, 256, 256), critic_steps=4, gradient_penalty=10.0)
QUANTILES = (10, 25, 50, 75, 90)
TOLERANCE = 0.03
# 3 x 3 (P, eta) x 3 nSPDHits bins: about equal-population tertiles of the reference spectrum.
EDGES = {0: (2.0, 8.4, 35.6, 150.0), 1: (1.8, 2.85, 3.4, 5.5), 2: (0.0, 180.0, 320.0, 1000.0)}
SPECIES_INDEX = 3
MODELS = ("quantile", "standardized")
N_KNOTS = 24
ETA_KNOTS = 0
ETA_INDEX = 1
# --tables grid: the output head's tables at nodes in (log P, eta, nSPDHits) per species;
# the kernel over 0.6 node spacings (a full one widened each node's distribution by the change
# across it: 363 failed ratios of the tables with iid noise, 257 at 0.6; docs)
GRID_KERNEL_WIDTH = 0.6
GRID_MIN_WEIGHT = 20.0
GRID_LEVELS = 51
# stages of tables fitted on the PIT through the ones before (tables alone with iid noise:
# 259 failed ratios with none, 80 with 1, 55 with 2, 57 with 3; but a GAN trained on top of 2
# failed 69, against 35 on none; docs)
GRID_REFINEMENTS = 0
# after training, the generator's raw output is quantile-mapped onto the reference's at every
# condition (GridQuantileMap), on the head's grid with P nodes at most this factor apart (the
# protons' DLLs bend between 17.7 and 35.6 GeV/c within one of the head's spacings) and a
# kernel of (P, eta, nSPDHits) node spacings: full in eta and nSPDHits, so each of the finer
# P nodes keeps enough tracks. Failed ratios of the generators of two full runs (seeds
# 2023 / 7): 2 / 7 with the head's grid and 0.8 everywhere, 3 / 6 with these nodes and 0.8
# everywhere, 0 / 2 with these nodes and this kernel (docs)
QUANTILE_MAP_P_STEP = 1.2
QUANTILE_MAP_WIDTH = (0.8, 1.0, 1.0)


def threshold_ties(detector):
    """(DLL column, "below threshold" column, P column, threshold): a hypothesis below its
    Cherenkov threshold in both radiators has the likelihood of "below threshold", so its DLL
    equals RichDLLbt exactly (C4F10 has the lower thresholds: K 9.33, p 17.7 GeV/c)."""
    from ddsim_gan.detectors.lhcb_rich import MASSES_GEV, RICH1, SPECIES, cherenkov_threshold

    names = detector.sample_names
    return [(names.index(f"RichDLL{label.lower()}"), names.index("RichDLLbt"), 0,
             float(cherenkov_threshold(MASSES_GEV[SPECIES.index(label)], RICH1.index)))
            for label in ("K", "p")]


def ring_ties(detector):
    """Keyword arguments of :class:`~ddsim_gan.models.heads.RingTiesHead` from the reference
    simulator's radiators: every hypothesis' and the pion's threshold per radiator, and the eta
    beyond which each radiator's acceptance (a smoothstep over ``ACCEPTANCE_EDGE_WIDTH`` around
    its edges) is exactly zero."""
    from ddsim_gan.detectors.lhcb_rich import (ACCEPTANCE_EDGE_WIDTH, MASSES_GEV, RADIATORS,
                                               SPECIES, cherenkov_threshold)

    names = detector.sample_names

    def thresholds(label):
        return [float(cherenkov_threshold(MASSES_GEV[SPECIES.index(label)], r.index))
                for r in RADIATORS]

    half = 0.5 * ACCEPTANCE_EDGE_WIDTH
    return dict(hypotheses=[(names.index(f"RichDLL{label.lower()}"), thresholds(label))
                            for label in ("e", "mu", "K", "p")],
                below_column=names.index("RichDLLbt"), pion_thresholds=thresholds("pi"),
                acceptance=[(r.eta_low - half, r.eta_high + half) for r in RADIATORS],
                momentum_index=0, eta_index=ETA_INDEX)


def quantile_grid(detector):
    """Axes ``(column, nodes, log)`` of :class:`~ddsim_gan.models.grid_quantiles.GridQuantileHead`:
    nodes in P at every Cherenkov threshold inside the range (the DLLs' distributions have a
    kink there) and between them no more than a factor 1.5 apart, in eta at both ends of each
    radiator's acceptance edge and no more than 0.5 apart, and nSPDHits at 0, 400 and 800."""
    from ddsim_gan.detectors.lhcb_rich import ACCEPTANCE_EDGE_WIDTH

    ties = ring_ties(detector)
    low, high = detector.conditions[0].low, detector.conditions[0].high
    thresholds = [t for _, ts in ties["hypotheses"] for t in ts] + ties["pion_thresholds"]
    momentum = _subdivided(sorted({low, high, *(t for t in thresholds if low < t < high)}),
                           np.log(1.5), log=True)
    eta_low, eta_high = detector.conditions[ETA_INDEX].low, detector.conditions[ETA_INDEX].high
    half = 0.5 * ACCEPTANCE_EDGE_WIDTH
    edges = [e for lo, hi in ties["acceptance"] for e in (lo, lo + 2 * half, hi - 2 * half, hi)]
    eta = _subdivided(sorted({eta_low, eta_high, *(round(e, 6) for e in edges
                                                    if eta_low < e < eta_high)}), 0.5)
    return [(0, momentum, True), (ETA_INDEX, eta, False), (2, [0.0, 400.0, 800.0], False)]


def quantile_map_grid(detector):
    """The quantile map's axes: :func:`quantile_grid` with its P nodes subdivided to at most
    ``QUANTILE_MAP_P_STEP`` apart."""
    (column, momentum, log), *others = quantile_grid(detector)
    return [(column, _subdivided(momentum, np.log(QUANTILE_MAP_P_STEP), log=True), log),
            *others]


def _subdivided(nodes, max_step, log=False):
    """``nodes`` with each gap wider than ``max_step`` (in log where ``log``) split evenly."""
    scale = np.log(nodes) if log else np.asarray(nodes, float)
    result = [scale[0]]
    for a, b in zip(scale[:-1], scale[1:]):
        parts = max(1, int(np.ceil((b - a) / max_step - 1e-9)))
        result += list(np.linspace(a, b, parts + 1)[1:])
    return [float(v) for v in (np.exp(result) if log else result)]


def _extra(parser):
    from ddsim_gan import recipe

    parser.add_argument("--model", choices=MODELS, default="quantile",
                        help="quantile: the GAN learns the DLLs in their marginal quantile units "
                        "(default); standardized: standardized at their conditions")
    parser.add_argument("--n-knots", type=int, default=N_KNOTS,
                        help="standardized model: knots in log P of the conditional mean and "
                        "width (default %(default)s)")
    parser.add_argument("--eta-knots", type=int, default=ETA_KNOTS,
                        help="standardized model: knots of an additive term in eta per species "
                        "(the acceptance edges; default %(default)s, 0 = linear in eta only)")
    recipe.add_learning_rate_options(parser, LEARNING_RATE, GENERATOR_LR_FRACTION)
    parser.add_argument("--shared-quantiles", action="store_true",
                        help="quantile model: one inverse-CDF table of the DLLs for all species "
                        "in the generator's output head (the model before 2026-12-06) instead "
                        "of one per species")
    parser.add_argument("--no-ties", action="store_true",
                        help="let the generator learn RichDLLk/p == RichDLLbt below the kaon/"
                        "proton Cherenkov thresholds instead of imposing it in the output head")
    parser.add_argument("--ties", choices=("momentum", "rings"), default="rings",
                        help="quantile model: impose the ties and zeros of every hypothesis "
                        "without a ring in either radiator, from P and eta (rings, default; "
                        "docs/lhcb_rich_gan.md, 2026-12-06), or only RichDLLk/p == RichDLLbt "
                        "below the C4F10 thresholds in P (momentum, the models before "
                        "2026-12-07)")
    parser.add_argument("--tables", choices=("grid", "species"), default="grid",
                        help="quantile model: the output head's inverse-CDF tables at the "
                        "nodes of a (log P, eta, nSPDHits) grid, interpolated in the track's "
                        "conditions (grid, default; docs/lhcb_rich_gan.md, 2026-12-07), or one "
                        "per species over all momenta (species, the models before 2026-12-07)")
    parser.add_argument("--refinements", type=int, default=GRID_REFINEMENTS,
                        help="quantile model, grid tables: extra stages of tables, each fitted "
                        "on the probability integral transform of the training DLLs through "
                        "the stages before it, which removes the interpolated tables' bias "
                        "(default %(default)s; docs/lhcb_rich_gan.md, 2026-12-07)")
    parser.add_argument("--no-quantile-map", action="store_true",
                        help="quantile model, grid tables: export the generator as trained, "
                        "without mapping its raw output onto the reference's at every "
                        "condition after training (GridQuantileMap; docs/lhcb_rich_gan.md, "
                        "2026-12-07)")
    recipe.add_critic_schedule_option(parser)
    for key, text in (("n_test", "tracks for the standard evaluation"),
                      ("n_val", "quantile model: validation tracks (per-epoch metrics, "
                       "model choice)"),
                      ("n_bar", "tracks for the efficiency-ratio bar"),
                      ("library_size", "tracks stored in the library baseline")):
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, help=f"{text} "
                            "(override the preset)")


def _settings(args, recipe):
    settings = recipe.settings_for(args, PRESETS[args.model])
    for key in ("n_test", "n_val", "n_bar", "library_size"):
        if getattr(args, key, None) is not None:
            settings[key] = getattr(args, key)
    for key in ("n_train", "n_test", "n_val", "n_bar", "batch_size", "epochs",
                "steps_per_epoch", "library_size"):
        if settings[key] < 1:
            raise SystemExit(f"{RECIPE}: --{key.replace('_', '-')} = {settings[key]}, expected "
                             "a positive number")
    recipe.check_learning_rate_options(RECIPE, args)
    if args.refinements < 0:
        raise SystemExit(f"{RECIPE}: --refinements {args.refinements}, expected 0 or more")
    if args.n_knots < 2:
        raise SystemExit(f"{RECIPE}: --n-knots {args.n_knots}, expected at least 2")
    if args.eta_knots == 1 or args.eta_knots < 0:
        raise SystemExit(f"{RECIPE}: --eta-knots {args.eta_knots}, expected 0 (off) or at "
                         "least 2")
    if settings["batch_size"] % ARCHITECTURE["critic_steps"]:
        raise SystemExit(f"{RECIPE}: --batch-size {settings['batch_size']} must be a multiple of "
                         f"the {ARCHITECTURE['critic_steps']} critic steps")
    return settings


def balanced_tracks(detector, n, seed, conditions=None):
    """``n`` tracks with the reference (P, eta, nSPDHits) spectrum and the five species in equal
    numbers (shuffled), and their DLLs; or the DLLs of given ``conditions``."""
    sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    rng_seed, sim_seed = sequence.spawn(2)
    if conditions is None:
        conditions = detector.sample_conditions(n, rng_seed)
        species = np.arange(n) % len(detector.conditions[SPECIES_INDEX].labels)
        conditions[:, SPECIES_INDEX] = np.random.default_rng(rng_seed).permutation(species)
    return conditions, detector.simulate_at(conditions, sim_seed)


def bar_summary(bar):
    keys = ("n_ratios", "n_tested", "n_failed", "max_deviation", "expected_false_failures",
            "worst", "passed", "tolerance", "max_error", "cut_scope", "strict")
    return {key: bar[key] for key in keys}


def efficiency_score(detector, conditions, ref, gen):
    """Mean chi^2 of the efficiency ratios, ((ratio - 1) / its error for a perfect generator)^2,
    over every bin and cut: about 1 for a perfect generator at any sample size (a plain mean of
    |ratio - 1| would be dominated by the statistical noise of the sparse bins). The validation
    score that picks between the final and the best generator."""
    from ddsim_gan.evaluation.metrics import efficiency_ratio_bar

    bar = efficiency_ratio_bar(ref, gen, conditions, conditions, EDGES,
                               group_index=SPECIES_INDEX, quantiles=QUANTILES,
                               max_error=np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        chi2 = ((bar["ratio"] - 1.0) / bar["expected_error"]) ** 2
    return float(np.mean(chi2[np.isfinite(chi2)]))


def efficiency_plots(bar, plot_dir):
    """One map of ratios (bins x cuts) per species and DLL; untested ratios left blank."""
    from ddsim_gan.evaluation.plots import plot_efficiency_map

    paths = []
    for g, group in enumerate(bar["groups"]):
        for j, name in enumerate(bar["names"]):
            ratio = np.where(bar["tested"][g, :, j], bar["ratio"][g, :, j], np.nan)
            paths.append(plot_efficiency_map(
                {"ratio": ratio, "error": bar["error"][g, :, j], "bins": bar["bins"],
                 "quantiles": bar["quantiles"]},
                path=plot_dir / f"efficiency_{group}_{name}.png", bin_label="(P, eta, nSPDHits)",
                title=f"{name}, true {group}: eps_GAN / eps_ref (blank: not tested)"))
    return paths


def report_notes(bar, floor_bar, library_bar, alone_bar=None):
    """Markdown lines for report.md: the bar's summary and the bins left out (``alone_bar``:
    the generator without its quantile map, when it has one)."""
    def line(label, b):
        if b is None:
            return f"| {label} | – | – | – | – | – | – |"
        strict = b["strict"]
        return (f"| {label} | {b['n_tested']} / {b['n_ratios']} | {b['n_failed']} | "
                f"{b['max_deviation']:.4f} | {b['expected_false_failures']:.2f} | "
                f"{'pass' if b['passed'] else '**fail**'} | {strict['n_failed']} of "
                f"{strict['n_tested']}, max {strict['max_deviation']:.4f} |")

    lines = ["## Efficiency ratios (seed 001's metric)", "",
             f"Cuts at the {', '.join(map(str, QUANTILES))} % quantiles of each DLL per true "
             f"species ({bar['cut_scope']} scope); bins {len(bar['bins'])} per species. A ratio "
             "is tested where a perfect model of the training tracks would resolve the "
             "tolerance: its binomial error, from the bar's reference, generated and training "
             f"tracks in the bin, is <= {bar['max_error']:.4f} (= tolerance / 3.29: such a "
             "model fails a tested ratio with probability < 0.1 %); it passes when "
             f"|ratio - 1| <= {bar['tolerance']}. The last column counts without the "
             "training tracks' error (the bar's tracks alone), which a generator that "
             "reproduced its training tracks exactly would fail now and then.", "",
             "| generator | tested / all ratios | failed | max abs(ratio - 1) | expected "
             "failures of a perfect model | bar | bar's tracks alone: failed, max |",
             "|---|---|---|---|---|---|---|",
             line("GAN", bar)] + ([line("GAN without the quantile map", alone_bar)]
                                  if alone_bar else []) + [
             line("second reference simulation (floor)", floor_bar),
             line("library baseline", library_bar)]
    if bar["worst"]:
        w = bar["worst"]
        lines += ["", f"Worst tested GAN ratio: {w['ratio']:.4f} ± {w['error']:.4f} "
                  f"({w['observable']} at the {w['quantile']:g} % cut, true {w['group']}, "
                  f"{w['bin']}; {w['n_ref']} tracks)."]
    excluded = bar["excluded_bins"]
    lines += ["", f"### Bins with untested ratios ({len(excluded)} of "
              f"{len(bar['groups']) * len(bar['bins'])})", ""]
    if excluded:
        lines += ["| species | bin | tracks ref / gen / training | untested ratios | "
                  "cuts left out |", "|---|---|---|---|---|"]
        for e in excluded:
            cuts = ", ".join(f"{q:g}%" for q in e["untested_quantiles"])
            lines.append(f"| {e['group']} | {e['bin']} | {e['n_ref']} / {e['n_gen']} / "
                         f"{e['n_train']} | {e['n_untested']} / {e['n_ratios']} | {cuts} |")
        lines += ["", "Reason: the reference efficiency of those cuts in those bins is too "
                  "small (or the bin too sparse) for the binomial error of the ratio to resolve "
                  f"±{bar['tolerance']:.0%}; more bar tracks (--n-bar) and more training "
                  "tracks (--n-train) test more of them."]
    return lines


def train_standardized(detector, data, settings, args):
    """One conditional WGAN on the five DLLs standardized at their conditions (a chain of one
    link, :mod:`ddsim_gan.models.chain`): r = (Q(x) - m(c)) / s(c), Q each DLL's quantile
    transform, m and log s^2 piecewise linear in log P per species and linear in eta and
    nSPDHits (plus, with ``--eta-knots``, piecewise linear in eta per species); the ties imposed
    on the physical DLLs. Returns the chain and the fit history."""
    from ddsim_gan import recipe
    from ddsim_gan.models.chain import AutoregressiveChain
    from ddsim_gan.models.heads import ThresholdTies

    n_outputs = len(detector.sample_names)
    ties = (None if args.no_ties else
            ThresholdTies(n_outputs, threshold_ties(detector), name="constraint"))
    chain = AutoregressiveChain.for_detector(
        detector, data.train_conditions, data.train_samples, groups=[tuple(range(n_outputs))],
        space="quantile", n_knots=args.n_knots, seed=args.seed, constraint=ties,
        additive_conditions=(ETA_INDEX,) if args.eta_knots else (),
        n_additive_knots=max(args.eta_knots, 2), **ARCHITECTURE)
    gan = chain.links[0]
    gan.compile(**recipe.wgan_optimizers(
                    settings, learning_rate=args.learning_rate,
                    generator_fraction=args.generator_lr_fraction,
                    critic_updates_per_step=recipe.critic_updates_per_step(args, gan)),
                jit_compile=not args.no_jit)
    conditions, residual = chain.link_data(data.train_conditions, data.train_samples, 0)
    history = recipe.train_arrays(gan, conditions, residual, settings, args)
    chain.save(args.output_dir)
    recipe.write_run_info(RECIPE, detector, args, model="standardized")
    return chain, history


def train_quantile(detector, data, settings, args, val_conditions, val_samples):
    """The conditional WGAN in the DLLs' marginal quantile units, with the ties in its output
    head; the better of the final (weight-averaged) and the best-monitored generator (by the
    validation efficiency chi^2) is kept. Returns the GAN and the fit history."""
    import keras

    from ddsim_gan import recipe
    from ddsim_gan.data.preprocessing import ConditionEncoder
    from ddsim_gan.evaluation import MetricMonitor
    from ddsim_gan.models.builders import build_vector_gan
    from ddsim_gan.models.grid_quantiles import (GridQuantileHead, GridRingTiesHead,
                                                 GridThresholdTieHead)
    from ddsim_gan.models.heads import QuantileHead, RingTiesHead, ThresholdTieHead

    out = args.output_dir
    continuous = [not c.is_categorical for c in detector.conditions]
    encoder = ConditionEncoder.for_detector(detector, quantile=continuous,
                                            name="condition_encoder", dtype="float32")
    # One table per species: a raw N(0, 1) number is then already that species' DLL
    # distribution, not a narrow slice of the five species' mixture.
    per_species = ({} if args.shared_quantiles else
                   dict(category_index=SPECIES_INDEX,
                        n_categories=len(detector.conditions[SPECIES_INDEX].labels)))
    n_outputs = len(detector.sample_names)
    grid = (dict(grid=quantile_grid(detector), kernel_width=GRID_KERNEL_WIDTH,
                 min_weight=GRID_MIN_WEIGHT, n_levels=GRID_LEVELS,
                 refinements=args.refinements) if args.tables == "grid"
            else {})
    rings, momentum, plain = ((GridRingTiesHead, GridThresholdTieHead, GridQuantileHead) if grid
                              else (RingTiesHead, ThresholdTieHead, QuantileHead))
    head = None
    if not args.no_ties and args.ties == "rings":
        head = rings(n_outputs, name="threshold_ties", dtype="float32", **ring_ties(detector),
                     **per_species, **grid)
    elif not args.no_ties:
        head = momentum(n_outputs, threshold_ties(detector), name="threshold_ties",
                        dtype="float32", **per_species, **grid)
    elif per_species or grid:
        head = plain(n_outputs, name="quantiles", dtype="float32", **per_species, **grid)
    if head is not None:
        if grid:    # tens of seconds per stage for the full preset's million tracks
            print(f"fitting the output head's tables ({1 + args.refinements} stages) on "
                  f"{len(data.train_samples):,} tracks ...", flush=True)
        head.adapt(data.train_samples, data.train_conditions)
        if grid:
            print(f"output head: {head.n_nodes} grid nodes per species; "
                  f"{head.fallback_nodes} of {head.n_nodes * head.n_categories * n_outputs} "
                  "(node, DLL) tables had too few free tracks and took the nearest filled "
                  "node's", flush=True)
    gan = build_vector_gan(encoder, data.train_conditions, data.train_samples, seed=args.seed,
                           name="lhcb_rich_gan", output_head=head, **ARCHITECTURE)
    gan.compile(**recipe.wgan_optimizers(
                    settings, learning_rate=args.learning_rate,
                    generator_fraction=args.generator_lr_fraction,
                    critic_updates_per_step=recipe.critic_updates_per_step(args, gan)),
                jit_compile=not args.no_jit)
    best_path, resuming = recipe.best_generator_path(args)
    monitor = MetricMonitor(detector, val_conditions, val_samples, every=1,
                            metrics=("KS:*", "W1/sigma:*", "KL:mean"), monitor="KS:mean",
                            best_path=best_path, log_dir=out / "logs" / "physics",
                            seed=args.seed, resume=resuming, averaged_weights=True)
    history = recipe.train(gan, detector, data, settings, args, callbacks=[monitor])

    choice = {"final": efficiency_score(detector, val_conditions, val_samples,
                                        gan.generate(val_conditions, seed=args.seed))}
    if best_path.is_file():
        best = keras.saving.load_model(best_path)
        noise = np.random.default_rng(args.seed).standard_normal(
            (len(val_conditions), gan.latent_dim)).astype(np.float32)
        choice["best_epoch"] = efficiency_score(
            detector, val_conditions, val_samples,
            best.predict([val_conditions, noise], batch_size=16384, verbose=0))
        if choice["best_epoch"] < choice["final"]:
            gan.generator.set_weights(best.get_layer("generator").get_weights())
    chosen = min(choice, key=choice.get)
    print(f"validation efficiency chi2 per ratio: {choice}; keeping {chosen}")
    mapped = args.tables == "grid" and not args.no_quantile_map
    recipe.save_model(gan, RECIPE, detector, args, model="quantile", chosen_generator=chosen,
                      validation_efficiency_score=choice, quantile_map=mapped)
    if not mapped:
        return gan, history, None
    from ddsim_gan.models.quantile_map import quantile_mapped_sampler

    print(f"quantile map: the generator's raw output onto the reference's at every condition, "
          f"fitted on {len(data.train_conditions):,} tracks ...", flush=True)
    sampler, _ = quantile_mapped_sampler(gan.sampler, data.train_conditions, data.train_samples,
                                         kernel_width=QUANTILE_MAP_WIDTH, seed=args.seed,
                                         grid=quantile_map_grid(detector))
    os.replace(out / "generator.keras", out / "generator_alone.keras")
    sampler.save(out / "generator.keras")
    return gan, history, sampler


def main(argv=None):
    from ddsim_gan import recipe

    args = recipe.parse_args(RECIPE, __doc__, argv, extra=_extra)
    settings = _settings(args, recipe)

    from ddsim_gan import detectors
    from ddsim_gan.evaluation import ShowerLibrary, compare_generators, evaluate
    from ddsim_gan.evaluation.metrics import MetricResult, efficiency_ratio_bar, passes
    from ddsim_gan.evaluation.report import add_metrics

    started = recipe.setup(args)
    detector = detectors.get(DETECTOR)
    out = args.output_dir
    labels = detector.conditions[SPECIES_INDEX].labels
    seeds = np.random.SeedSequence(args.seed).spawn(6)
    if args.data:
        data = recipe.prepare_data(detector, args, settings)
    else:
        print(f"simulating {settings['n_train']:,} training tracks (species balanced) ...",
              flush=True)
        train = balanced_tracks(detector, settings["n_train"], seeds[0])
        test = balanced_tracks(detector, settings["n_test"], seeds[1])
        floor = balanced_tracks(detector, 0, seeds[2], conditions=test[0])[1]
        data = recipe.RecipeData(*train, *test, floor, "reference simulator (species balanced)")

    # ---- model --------------------------------------------------------------------------------
    sampler = None      # the quantile-mapped sampler, when there is one
    if args.model == "standardized":
        gan, history = train_standardized(detector, data, settings, args)
    else:
        # validation tracks (per-epoch metrics, model choice): from the user's training split,
        # not the simulator, when training on their data
        if args.data:
            n_val = max(1, min(settings["n_val"], len(data.train_conditions) // 5))
            val_conditions = data.train_conditions[-n_val:]
            val_samples = data.train_samples[-n_val:]
            data.train_conditions = data.train_conditions[:-n_val]
            data.train_samples = data.train_samples[:-n_val]
        else:
            val_conditions, val_samples = balanced_tracks(detector, settings["n_val"], seeds[3])
        gan, history, sampler = train_quantile(detector, data, settings, args, val_conditions,
                                               val_samples)

    def generate(conditions, seed):
        if sampler is None:
            return gan.generate(conditions, seed=seed)
        from ddsim_gan.models.resampling import generate as generate_with

        return generate_with(sampler, conditions, seed=seed, batch_size=65_536)

    # ---- standard evaluation on held-out tracks ------------------------------------------------
    generated = generate(data.test_conditions, seed=args.seed + 1)
    result = evaluate(detector, data.test_conditions, data.test_samples, generated,
                      data.floor_samples, classifier=True,
                      classifier_epochs=recipe.classifier_epochs(args), plots=not args.no_plots,
                      seed=args.seed, output_dir=out)

    # ---- the seed's bar: efficiency ratios in (P, eta, nSPDHits) bins per species ------------
    if args.data:
        bar_conditions, bar_ref, bar_floor = (data.test_conditions, data.test_samples, None)
    else:
        print(f"simulating {settings['n_bar']:,} + {settings['n_bar']:,} tracks for the "
              "efficiency bar ...", flush=True)
        bar_conditions, bar_ref = balanced_tracks(detector, settings["n_bar"], seeds[4])
        bar_floor = balanced_tracks(detector, 0, seeds[5], conditions=bar_conditions)[1]
    # every bar tests the same ratios: those a perfect model of the training tracks resolves
    options = dict(group_index=SPECIES_INDEX, quantiles=QUANTILES, tolerance=TOLERANCE,
                   names=detector.sample_names, condition_names=detector.condition_names,
                   group_labels=labels, train_conditions=data.train_conditions)
    bar_generated = generate(bar_conditions, seed=args.seed + 2)
    bar = efficiency_ratio_bar(bar_ref, bar_generated, bar_conditions, bar_conditions, EDGES,
                               **options)
    alone_bar = (efficiency_ratio_bar(bar_ref, gan.generate(bar_conditions, seed=args.seed + 2),
                                      bar_conditions, bar_conditions, EDGES, **options)
                 if sampler is not None else None)
    floor_bar = (efficiency_ratio_bar(bar_ref, bar_floor, bar_conditions, bar_conditions, EDGES,
                                      **options) if bar_floor is not None else None)
    library = ShowerLibrary(detector, data.train_conditions[:settings["library_size"]],
                            data.train_samples[:settings["library_size"]])
    library_bar = efficiency_ratio_bar(bar_ref, library.generate(bar_conditions, seed=args.seed),
                                       bar_conditions, bar_conditions, EDGES, **options)
    add_metrics(result, [MetricResult(
        "efficiency_ratio_max_dev", bar["max_deviation"], float("nan"),
        floor_bar["max_deviation"] if floor_bar else float("nan"), float("nan"), TOLERANCE,
        passes(bar["max_deviation"], TOLERANCE) and bar["passed"],
        {"n_tested": bar["n_tested"], "n_ratios": bar["n_ratios"],
         "n_failed": bar["n_failed"], "worst": bar["worst"], "strict": bar["strict"]})])
    result["efficiency_bar"] = {
        **bar_summary(bar), "n_tracks": len(bar_conditions), "edges": EDGES,
        "quantiles": list(QUANTILES), "excluded_bins": bar["excluded_bins"],
        "floor": bar_summary(floor_bar) if floor_bar else None,
        "library": bar_summary(library_bar),
        "generator_alone": bar_summary(alone_bar) if alone_bar else None,
        "ratios": {"groups": bar["groups"], "bins": bar["bins"], "names": bar["names"],
                   "ratio": bar["ratio"], "error": bar["error"], "tested": bar["tested"]}}
    result["notes"] = report_notes(bar, floor_bar, library_bar, alone_bar)
    if not args.no_plots:
        result["plots"] += efficiency_plots(bar, out / "plots" / "efficiency")

    # ---- the library baseline beside the GAN: fidelity, speed, size --------------------------
    n_compare = min(len(data.test_conditions), 20_000)
    # fidelity without the classifier (the GAN's AUC is in the table above; two more
    # classifier trainings per generator would cost minutes of the 30)
    metrics = ("W1/sigma:mean", "KL:mean", "KS:mean")
    result["comparison"] = compare_generators(
        detector, data.test_conditions[:n_compare], data.test_samples[:n_compare],
        data.floor_samples[:n_compare], {"GAN": generate, "library (k=10)": library},
        metrics=metrics, seed=args.seed)
    return recipe.finish(result, RECIPE, settings, args, history, started, data)


if __name__ == "__main__":
    sys.exit(main())
