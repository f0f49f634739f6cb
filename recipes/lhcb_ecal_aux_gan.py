"""LHCb ECAL: conditional WGAN-GP with an auxiliary regressor for the shower asymmetry (seed 001).

    python recipes/lhcb_ecal_aux_gan.py --quick --output-dir runs/lhcb_quick
    python recipes/lhcb_ecal_aux_gan.py --output-dir runs/lhcb_aux
    python recipes/lhcb_ecal_aux_gan.py --no-regressor --output-dir runs/lhcb_no_regressor
    python tools/compare_runs.py runs/lhcb_aux runs/lhcb_no_regressor --output runs/lhcb.md

Generates the 30 x 30 cells (20 mm, MeV) around the impact point of an electron or positron on
the LHCb ECAL, given its entry point (x, y, z) and momentum (px, py, pz). As in seed 001
(A. Rogachev, F. Ratnikov, arXiv:2207.06329) an auxiliary regressor is trained jointly with the
GAN, on reference images only, to predict the shower asymmetry
(:meth:`~ddsim_gan.detectors.lhcb_ecal.LHCbECAL.asymmetry`, computed in NumPy in the input
pipeline: not part of any graph); its prediction on generated images enters the critic as an
extra feature, concatenated to every critic layer (:mod:`ddsim_gan.models.auxiliary`).
``--no-regressor`` trains the same generator and critic without it (the ablation).

Both models condition through an :class:`~ddsim_gan.data.geometry_encoders.ImpactPointEncoder`
(the six conditions plus the slopes and the impact point's offset in the image frame, which
the asymmetry and the energy centre depend on) and end in an energy-sharing head scaled by pz
(sum_E = pz x a learned bounded response, which also learns |p| / pz from the slopes), with
the detector's nominal readout noise added before the threshold (isolated noise hits move the
widths) and the batch-mean sum_E conservation penalty of seed 003.

Bars (issue 4): ``W1/sigma:asymmetry`` <= 0.05 and ``W1/sigma:centre_x``, ``centre_y``,
``width_x``, ``width_y`` <= 0.05. Also reported: the transverse asymmetry, and the regressor's
RMS error (in units of the asymmetry's spread) on reference and on generated images.
Outputs as every recipe (report with the shower-library baseline, plots, SavedModel under
``<export-base>/lhcb_ecal_aux_gan[_no_regressor]/<version>/``).
"""

from __future__ import annotations

import sys
from pathlib import Path

RECIPE = "lhcb_ecal_aux_gan"
DETECTOR = "lhcb_ecal"

#                 quick (< 2 min on 2 cores)       full (<= 30 min on 2 cores)
PRESETS = {
    "quick": dict(n_train=8_192, n_test=2_000, batch_size=128, epochs=2, steps_per_epoch=40,
                  time_limit_minutes=None),
    "full": dict(n_train=100_000, n_test=20_000, batch_size=128, epochs=24, steps_per_epoch=500,
                 time_limit_minutes=24),
}
BARS = {"W1/sigma:centre_x": 0.05, "W1/sigma:centre_y": 0.05, "W1/sigma:width_x": 0.05,
        "W1/sigma:width_y": 0.05}
BAR_ASYMMETRY = 0.05
#: seed 003's sum_E conservation penalty, here too: without it the generator buys hits and width
#: with energy (the response runs to its bound, +8 %)
SUM_E_WEIGHT = 10.0
#: shower-moment penalty (centres, widths, asymmetries), runs/lhcb_asym of 2026-12-04
MOMENT_WEIGHT = 10.0
#: second critic on the centres, widths and asymmetries, five times the image critic's learning
#: rate (at 1x its Wasserstein estimate went negative): runs/lhcb_oc3_fast of 2026-12-05
OBSERVABLE_CRITIC_WEIGHT, OBSERVABLE_CRITIC_LR_FACTOR = 3.0, 5.0


def _extra_options(parser):
    parser.add_argument("--no-regressor", action="store_true",
                        help="the ablation: the same GAN without the auxiliary regressor")
    parser.add_argument("--n-test", type=int, help="override the preset's held-out events")
    parser.add_argument("--hidden", type=int, default=None,
                        help="width of every hidden layer (default 256; small values for tests)")
    parser.add_argument("--no-library", action="store_true",
                        help="skip the shower-library baseline row")
    parser.add_argument("--moment-weight", type=float, default=MOMENT_WEIGHT,
                        help="weight of the shower-moment penalty (batch mean and spread of the "
                             "energy centres and widths, and of the asymmetry along and across "
                             "the incidence direction computed in the graph: "
                             "AsymmetryMomentPenalty; default %(default)s, 0 = off)")
    parser.add_argument("--observable-critic-weight", type=float, default=OBSERVABLE_CRITIC_WEIGHT,
                        help="weight of a second WGAN-GP critic that sees only the standardized "
                             "centres, widths and asymmetries and the conditions "
                             "(ddsim_gan.models.observable_critic); 0 leaves it out")
    parser.add_argument("--observable-critic-lr-factor", type=float,
                        default=OBSERVABLE_CRITIC_LR_FACTOR,
                        help="with --observable-critic-weight: the second critic's learning "
                             "rate over the image critic's (default %(default)s)")
    parser.add_argument("--no-asymmetry-moments", action="store_true",
                        help="match the centres and widths only, not the asymmetries "
                             "(ShowerMomentPenalty)")


def asymmetry_metrics(detector, conditions, ref, gen, ref2, gan=None, seed=0) -> list:
    """W1/sigma of the asymmetry (bar) and of the transverse asymmetry, and, for the regressor
    GAN, its RMS error / sigma(asymmetry) on reference and on generated images."""
    import numpy as np

    from ddsim_gan.evaluation import MetricResult, compare, wasserstein_over_sigma

    rows = []
    for name, orthogonal, bar in (("asymmetry", False, BAR_ASYMMETRY),
                                  ("asymmetry_transverse", True, None)):
        values = [None if s is None else detector.asymmetry(s, conditions, orthogonal=orthogonal)
                  for s in (ref, gen, ref2)]
        rows.append(compare(f"W1/sigma:{name}", wasserstein_over_sigma, *values, bar=bar,
                            seed=seed + len(rows)))
    if hasattr(gan, "predict_metric"):
        sigma = float(detector.asymmetry(ref, conditions).std())
        for label, samples in (("reference", ref), ("generated", gen)):
            truth = detector.asymmetry(samples, conditions)
            error = gan.predict_metric(conditions, samples) - truth
            rows.append(MetricResult(f"regressor_rms_error/sigma:{label}",
                                     float(np.sqrt(np.mean(error ** 2)) / sigma),
                                     extra={"bias": float(error.mean() / sigma)}))
    return rows


def asymmetry_plots(detector, conditions, ref, gen, plot_dir) -> list[str]:
    """Asymmetry and transverse asymmetry with ratio panels; mean asymmetry vs incidence angle."""
    import os

    import numpy as np

    from ddsim_gan.evaluation import plots as P

    paths = []
    for name, orthogonal in (("asymmetry", False), ("asymmetry_transverse", True)):
        paths.append(P.plot_histogram_ratio(
            detector.asymmetry(ref, conditions, orthogonal=orthogonal),
            detector.asymmetry(gen, conditions, orthogonal=orthogonal), label=name,
            path=os.path.join(plot_dir, f"hist_{name}.png")))
    c = np.asarray(conditions, np.float64)
    angle = 1e3 * np.arctan(np.hypot(c[:, 3], c[:, 4]) / c[:, 5])
    paths.append(P.plot_conditional_means(
        angle, detector.asymmetry(ref, conditions), angle, detector.asymmetry(gen, conditions),
        path=os.path.join(plot_dir, "conditional_asymmetry_vs_angle.png"),
        condition_label="incidence angle [mrad]", value_label="asymmetry"))
    return paths


def build_model(detector, data, train_targets, regressor=True, hidden=None, seed=0,
                moment_weight=0.0, asymmetry_moments=False, observable_critic_weight=0.0):
    from ddsim_gan.data.geometry_encoders import ImpactPointEncoder
    from ddsim_gan.detectors import lhcb_ecal
    from ddsim_gan.models.auxiliary import build_auxiliary_gan
    from ddsim_gan.models.penalties import ConservationPenalty, ShowerMomentPenalty

    width = hidden or 256
    penalties = [ConservationPenalty("sum_E", weight=SUM_E_WEIGHT)]
    if moment_weight > 0 and asymmetry_moments:
        from ddsim_gan.models.impact_moments import AsymmetryMomentPenalty

        penalties.append(AsymmetryMomentPenalty.for_lhcb_ecal(detector, weight=moment_weight))
    elif moment_weight > 0:
        penalties.append(ShowerMomentPenalty.for_detector(detector, weight=moment_weight))
    encoder = ImpactPointEncoder.for_detector(detector, name="condition_encoder",
                                              dtype="float32")
    gan = build_auxiliary_gan(
        detector, data.train_conditions, data.train_samples, train_targets,
        condition_encoder=encoder, regressor=regressor, energy_condition="pz",
        generator_hidden=(width, width), critic_hidden=(width, width),
        regressor_hidden=(width, width // 2), critic_steps=4,
        readout_noise=lhcb_ecal.NOISE_MEV,
        extra_penalties=penalties, seed=seed)
    if observable_critic_weight > 0:
        from ddsim_gan.models.impact_moments import AsymmetryMomentPenalty
        from ddsim_gan.models.observable_critic import with_observable_critic

        observables = AsymmetryMomentPenalty.for_lhcb_ecal(detector, weight=0.0)
        gan = with_observable_critic(gan, observables, data.train_samples,
                                     data.train_conditions, weight=observable_critic_weight)
    return gan


def main(argv=None):
    from ddsim_gan import recipe

    args = recipe.parse_args(RECIPE, __doc__, argv, extra=_extra_options)
    settings = recipe.settings_for(args, PRESETS)
    if args.n_test is not None:
        settings["n_test"] = args.n_test
    name = RECIPE + ("_no_regressor" if args.no_regressor else "")
    if args.output_dir == Path("runs") / RECIPE:       # the shared default: one per variant
        args.output_dir = Path("runs") / name

    import keras

    from ddsim_gan import detectors
    from ddsim_gan.evaluation import ShowerLibrary, compare_generators, evaluate
    from ddsim_gan.evaluation.report import add_metrics
    from ddsim_gan.models.auxiliary import metric_batch_map

    started = recipe.setup(args)
    detector = detectors.get(DETECTOR)
    data = recipe.prepare_data(detector, args, settings)
    targets = detector.asymmetry(data.train_samples, data.train_conditions)

    gan = build_model(detector, data, targets, regressor=not args.no_regressor,
                      hidden=args.hidden, seed=args.seed, moment_weight=args.moment_weight,
                      asymmetry_moments=not args.no_asymmetry_moments,
                      observable_critic_weight=args.observable_critic_weight)
    optimizers = recipe.wgan_optimizers(
        settings, learning_rate=2e-4, observable_critic_lr_factor=(
            args.observable_critic_lr_factor if args.observable_critic_weight > 0 else None))
    batch_map = None
    if not args.no_regressor:
        optimizers["regressor_optimizer"] = keras.optimizers.Adam(1e-3)
        batch_map = metric_batch_map(detector.asymmetry, detector.n_conditions,
                                     detector.sample_shape)
    gan.compile(**optimizers, jit_compile=not args.no_jit)
    history = recipe.train(gan, detector, data, settings, args, batch_map=batch_map)
    recipe.save_model(gan, name, detector, args, regressor=not args.no_regressor)

    generated = gan.generate(data.test_conditions, seed=args.seed + 1)
    result = evaluate(detector, data.test_conditions, data.test_samples, generated,
                      data.floor_samples, bars=BARS, classifier=True,
                      classifier_epochs=recipe.classifier_epochs(args), plots=not args.no_plots,
                      seed=args.seed, output_dir=args.output_dir)
    add_metrics(result, asymmetry_metrics(detector, data.test_conditions, data.test_samples,
                                          generated, data.floor_samples, gan, seed=args.seed))
    if not args.no_plots:
        result["plots"] += asymmetry_plots(detector, data.test_conditions, data.test_samples,
                                           generated, args.output_dir / "plots")
    result["model"] = "no_regressor" if args.no_regressor else "aux_regressor"
    generators = {f"GAN ({result['model']})": gan}
    if not args.no_library:
        generators["shower library (k=10)"] = ShowerLibrary(
            detector, data.train_conditions, data.train_samples)
    result["comparison"] = compare_generators(
        detector, data.test_conditions, data.test_samples, data.floor_samples, generators,
        metrics=("W1/sigma:centre_x", "W1/sigma:width_x", "W1/sigma:mean", "classifier_auc"),
        seed=args.seed)
    return recipe.finish(result, name, settings, args, history, started, data)


if __name__ == "__main__":
    sys.exit(main())
