"""Per-layer occupancy of the SiW-ECAL pions' tracks and showers, reference against a run.

    python tools/siw_populations.py runs/siw_dl8s_split40 [--events 4000] [--split 60]

The bar (issue 4) takes each layer's occupancy over both species; a model can meet it while its
pion tracks miss layers and its showers hit them too often (docs/siw_ecal_wgangp.md). This
prints, per species and per population (sum_E below / above ``--split`` MIP), the fraction of
events with a seed hit in each layer, for fresh reference events and for the run's
``generator.keras`` at the same conditions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def occupancy_table(conditions, samples, split_mip):
    """``{(species, population): (n events, per-layer occupancy)}``."""
    from ddsim_gan.evaluation.observables import layer_hit

    energy = samples.reshape(len(samples), -1).sum(axis=1)
    table = {}
    for species in np.unique(conditions[:, 1]).astype(int):
        for population, rows in (("tracks", energy < split_mip), ("showers", energy >= split_mip)):
            rows = rows & (conditions[:, 1] == species)
            if rows.any():
                table[species, population] = (int(rows.sum()),
                                              layer_hit(samples[rows], 0).mean(axis=0))
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run directory with generator.keras")
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--split", type=float, default=60.0, help="sum_E boundary, MIP")
    parser.add_argument("--seed", type=int, default=77, help="reference simulator seed")
    parser.add_argument("--noise-seed", type=int, default=1)
    args = parser.parse_args(argv)
    path = args.run / "generator.keras"
    if not path.is_file():
        raise SystemExit(f"siw_populations: {path} not found (a SiW recipe run writes it)")

    import keras

    import ddsim_gan.models.calorimeter  # noqa: F401  (registers the generator's layers)
    from ddsim_gan import detectors

    detector = detectors.get("siw_ecal")
    conditions, reference = detector.simulate(args.events, seed=args.seed)
    generator = keras.saving.load_model(path, compile=False)
    noise = np.random.default_rng(args.noise_seed).standard_normal(
        (len(conditions), generator.inputs[1].shape[1])).astype("float32")
    generated = np.asarray(generator.predict([conditions, noise], batch_size=500, verbose=0))
    generated = generated.reshape(reference.shape)
    species_names = ("e-", "pi-")
    tables = {"reference": occupancy_table(conditions, reference, args.split),
              "generated": occupancy_table(conditions, generated, args.split)}
    for key in sorted(set(tables["reference"]) | set(tables["generated"])):
        print(f"{species_names[key[0]]} {key[1]} (sum_E {'<' if key[1] == 'tracks' else '>='} "
              f"{args.split:g} MIP), seed-hit occupancy of layers 1-15:")
        for label, table in tables.items():
            n, occupancy = table.get(key, (0, np.full(reference.shape[1], np.nan)))
            print(f"  {label:9s} n={n:5d} " + " ".join(f"{v:.2f}" for v in occupancy))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
