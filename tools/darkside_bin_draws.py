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
        conditions = detector.sample_conditions(2_000_000, seed=rng.integers(2**31))
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run directory with chain.json and the links")
    parser.add_argument("--type", choices=sorted(RECOIL_TYPES), default="ER")
    parser.add_argument("--low", type=float, default=225.0, help="keV")
    parser.add_argument("--high", type=float, default=235.0, help="keV")
    parser.add_argument("--draws", type=int, default=16)
    parser.add_argument("--events", type=int, default=21_800, help="events per draw")
    parser.add_argument("--seed", type=int, default=7)
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
    conditions = bin_conditions(detector, RECOIL_TYPES[args.type], args.low, args.high,
                                args.draws * args.events, args.seed, args.uniform)
    seeds = np.random.SeedSequence(args.seed).spawn(3 * args.draws)
    model, floor = [], []
    names = detector.sample_names
    print(f"{args.type} {args.low:g}-{args.high:g} keV, {args.draws} draws of {args.events} "
          f"events; relative deviation of the mean | of the width ({', '.join(names)})")
    for draw in range(args.draws):
        rows = conditions[draw * args.events:(draw + 1) * args.events]
        reference = detector.simulate_at(rows, seeds[3 * draw])
        second = detector.simulate_at(rows, seeds[3 * draw + 1])
        generated = chain.generate(rows, seed=int(seeds[3 * draw + 2].generate_state(1)[0]))
        model.append(np.concatenate(deviations(reference, generated)))
        floor.append(np.concatenate(deviations(reference, second)))
        print(f"  draw {draw:2d}  model " + " ".join(f"{v:+.3f}" for v in model[-1])
              + "   floor " + " ".join(f"{v:+.3f}" for v in floor[-1]))
    for label, values in (("model", model), ("floor", floor)):
        mean, error, spread = summary(values)
        print(f"{label}: average " + " ".join(f"{m:+.4f}±{e:.4f}" for m, e in zip(mean, error)))
        print(f"{label}: per-draw spread " + " ".join(f"{s:.4f}" for s in spread))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
