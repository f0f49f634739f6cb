"""One energy bin of a DarkSide run, drawn again and again: the model's bias against the noise
of a single evaluation.

    python tools/darkside_bin_draws.py runs/darkside_m20 --type ER --low 225 --high 235

The binned bar (issue 3) takes, in each 10-keV bin, one reference and one generated sample of
about 21 800 events (the full preset's million over 46 bins) and keeps the worst bin. A single
draw's width deviation scatters by about 0.007 there, a quarter of the 3 % bar. This draws
``--draws`` independent samples of the same size at conditions from the detector's own energy
spectrum, and prints per draw the relative deviation of the mean and the width of S1, S2 and
f200, generated against reference and a second reference against the first (the floor), then
their averages with standard errors: the average is the model's bias in the bin.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

RECOIL_TYPES = {"NR": 0, "ER": 1}


def bin_conditions(detector, recoil_type, low, high, n, seed, uniform=False):
    """``n`` conditions of the detector's spectrum with E_recoil in [low, high) and the type;
    ``uniform``: E uniform in the bin instead, which also reaches energies beyond the
    detector's range (the training margin above it)."""
    rng = np.random.default_rng(seed)
    if uniform:
        return np.stack([rng.uniform(low, high, n), np.full(n, recoil_type)],
                        axis=1).astype(np.float32)
    chunks, found = [], 0
    while found < n:
        # a 10-keV bin of one type holds about 2 % of the spectrum
        conditions = detector.sample_conditions(min(2_000_000, max(100_000, 60 * n)),
                                                seed=rng.integers(2**31))
        keep = conditions[(conditions[:, 1] == recoil_type) & (conditions[:, 0] >= low)
                          & (conditions[:, 0] < high)]
        if not len(keep):
            energy = detector.conditions[0]
            raise SystemExit(f"darkside_bin_draws: no recoils of type {recoil_type} in "
                             f"[{low}, {high}) keV; the detector draws {energy.low:g}-"
                             f"{energy.high:g} keV")
        chunks.append(keep)
        found += len(keep)
    return np.concatenate(chunks)[:n]


def deviations(reference, other):
    """Relative deviations of ``other`` from ``reference``: (mean per column, width per
    column)."""
    return (other.mean(axis=0) / reference.mean(axis=0) - 1.0,
            other.std(axis=0) / reference.std(axis=0) - 1.0)


def summary(values):
    """Average and its standard error over draws (axis 0), and the per-draw spread."""
    values = np.asarray(values)
    spread = values.std(axis=0, ddof=1) if len(values) > 1 else np.full(values.shape[1:], np.nan)
    return values.mean(axis=0), spread / np.sqrt(len(values)), spread


def draw_deviations(detector, chain, conditions, draws, events, seed):
    """Per draw of ``events`` rows of ``conditions``: the model's and the floor's deviations
    (:func:`deviations`, means then widths), two lists of arrays."""
    seeds = np.random.SeedSequence(seed).spawn(3 * draws)
    model, floor = [], []
    for draw in range(draws):
        rows = conditions[draw * events:(draw + 1) * events]
        reference = detector.simulate_at(rows, seeds[3 * draw])
        second = detector.simulate_at(rows, seeds[3 * draw + 1])
        generated = chain.generate(rows, seed=int(seeds[3 * draw + 2].generate_state(1)[0]))
        model.append(np.concatenate(deviations(reference, generated)))
        floor.append(np.concatenate(deviations(reference, second)))
    return model, floor


def _row(values):
    return " ".join(f"{v:+.3f}" for v in values)


def all_bins(detector, chain, args):
    """The bias map: every 10-keV bin of both recoil types, averaged over the draws."""
    names = detector.sample_names
    print(f"every bin, {args.draws} draws of {args.events} events; average relative deviation "
          f"(± its error) of the mean and the width of {', '.join(names)}")
    worst = {}
    energy = detector.conditions[0]
    for kind, code in RECOIL_TYPES.items():
        for low in np.arange(energy.low, energy.high, 10.0):
            conditions = bin_conditions(detector, code, low, low + 10, args.draws * args.events,
                                        [args.seed, code, int(low)])
            model, _ = draw_deviations(detector, chain, conditions, args.draws, args.events,
                                       [args.seed, code, int(low), 1])
            mean, error, _ = summary(model)
            print(f"  {kind} {low:5.0f}-{low + 10:3.0f}  " + " ".join(
                f"{m:+.3f}±{e:.3f}" for m, e in zip(mean, error)))
            for column, (m, e) in enumerate(zip(mean, error)):
                if column not in worst or abs(m) > abs(worst[column][0]):
                    worst[column] = (m, e, f"{kind} {low:g}-{low + 10:g}")
    labels = [f"mean {n}" for n in names] + [f"width {n}" for n in names]
    for column, label in enumerate(labels):
        m, e, where = worst[column]
        print(f"largest |{label} bias|: {m:+.4f} ± {e:.4f} ({where} keV)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run directory with chain.json and the links")
    parser.add_argument("--type", choices=sorted(RECOIL_TYPES), default="ER")
    parser.add_argument("--low", type=float, default=225.0, help="keV")
    parser.add_argument("--high", type=float, default=235.0, help="keV")
    parser.add_argument("--draws", type=int, default=16)
    parser.add_argument("--events", type=int, default=21_800, help="events per draw")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--all-bins", action="store_true",
                        help="every 10-keV bin of both types (the bar's 46), each averaged over "
                             "--draws: the bias map (4 draws: about a minute)")
    parser.add_argument("--uniform", action="store_true",
                        help="energies uniform in the bin, not the detector's spectrum (needed "
                             "beyond its 5-235 keV, e.g. in a run's training margin)")
    args = parser.parse_args(argv)
    if not (args.run / "chain.json").is_file():
        raise SystemExit(f"darkside_bin_draws: {args.run / 'chain.json'} not found (a "
                         "DarkSide chain run writes it)")
    if args.draws < 2 or args.events < 10 or not args.low < args.high:
        raise SystemExit("darkside_bin_draws: need --draws >= 2, --events >= 10 and "
                         "--low < --high")

    from ddsim_gan import detectors
    from ddsim_gan.models.chain import AutoregressiveChain

    detector = detectors.get("darkside")
    chain = AutoregressiveChain.load(args.run)
    if args.all_bins:
        all_bins(detector, chain, args)
        return 0
    conditions = bin_conditions(detector, RECOIL_TYPES[args.type], args.low, args.high,
                                args.draws * args.events, args.seed, args.uniform)
    model, floor = draw_deviations(detector, chain, conditions, args.draws, args.events,
                                   args.seed)
    print(f"{args.type} {args.low:g}-{args.high:g} keV, {args.draws} draws of {args.events} "
          f"events; relative deviation of the mean | of the width "
          f"({', '.join(detector.sample_names)})")
    for draw, (values, second) in enumerate(zip(model, floor)):
        print(f"  draw {draw:2d}  model {_row(values)}   floor {_row(second)}")
    for label, values in (("model", model), ("floor", floor)):
        mean, error, spread = summary(values)
        print(f"{label}: average " + " ".join(f"{m:+.4f}±{e:.4f}" for m, e in zip(mean, error)))
        print(f"{label}: per-draw spread " + " ".join(f"{s:.4f}" for s in spread))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
