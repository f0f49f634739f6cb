"""Per-layer occupancy of the SiW-ECAL pions' tracks and showers, reference against a run.

    python tools/siw_populations.py runs/siw_dl8s_split40 [--events 4000] [--split 60]

The bar (issue 4) takes each layer's occupancy over both species; a model can meet it while its
pion tracks miss layers and its showers hit them too often (docs/siw_ecal_wgangp.md). This
prints, per species and per population (sum_E below / above ``--split`` MIP), the fraction of
events with a seed hit in each layer, for fresh reference events and for the run's
``generator.keras`` at the same conditions. Then the bar's own number per layer, |gen / ref - 1|
over both species, with its binomial error: with ``--events`` well above the recipe's 8 000
held-out events it tells the model's bias from the noise of one evaluation (events are
generated in chunks, so 64 000 fit in memory).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

CHUNK = 4000   # events simulated and generated at once


def layer_hits(conditions, samples, split_mip):
    """Per event: species, population (0 tracks, 1 showers) and its layers' seed hits."""
    from ddsim_gan.evaluation.observables import layer_hit

    energy = samples.reshape(len(samples), -1).sum(axis=1)
    return (conditions[:, 1].astype(int), (energy >= split_mip).astype(int),
            layer_hit(samples, 0))


def occupancy_table(conditions, samples, split_mip):
    """``{(species, population): (n events, per-layer occupancy)}``."""
    return table_of(*layer_hits(conditions, samples, split_mip))


def table_of(species, population, hits):
    table = {}
    for kind in np.unique(species):
        for index, name in enumerate(("tracks", "showers")):
            rows = (species == kind) & (population == index)
            if rows.any():
                table[int(kind), name] = (int(rows.sum()), hits[rows].mean(axis=0))
    return table


def bar_deviation(reference_hits, generated_hits):
    """Per layer: reference and generated occupancy, |gen / ref - 1| and its binomial error."""
    n = len(reference_hits)
    ref, gen = reference_hits.mean(axis=0), generated_hits.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        deviation = np.abs(gen / ref - 1.0)
        error = np.sqrt(gen * (1 - gen) / n + (gen / ref) ** 2 * ref * (1 - ref) / n) / ref
    return ref, gen, deviation, error


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
    generator = keras.saving.load_model(path, compile=False)
    rng = np.random.default_rng(args.noise_seed)
    # the first chunk is simulate(..., seed=args.seed): 4 000 events give what they always gave
    seeds = [args.seed, *np.random.SeedSequence(args.seed).spawn(-(-args.events // CHUNK) - 1)]
    parts = {"reference": [], "generated": []}
    for start, seed in zip(range(0, args.events, CHUNK), seeds):
        conditions, reference = detector.simulate(min(CHUNK, args.events - start), seed=seed)
        noise = rng.standard_normal((len(conditions), generator.inputs[1].shape[1]))
        generated = np.asarray(generator.predict([conditions, noise.astype("float32")],
                                                 batch_size=500, verbose=0))
        parts["reference"].append(layer_hits(conditions, reference, args.split))
        parts["generated"].append(layer_hits(conditions, generated.reshape(reference.shape),
                                             args.split))
    columns = {label: [np.concatenate(column) for column in zip(*chunks)]
               for label, chunks in parts.items()}
    tables = {label: table_of(*column) for label, column in columns.items()}
    n_layers = columns["reference"][2].shape[1]
    species_names = ("e-", "pi-")
    for key in sorted(set(tables["reference"]) | set(tables["generated"])):
        print(f"{species_names[key[0]]} {key[1]} (sum_E {'<' if key[1] == 'tracks' else '>='} "
              f"{args.split:g} MIP), seed-hit occupancy of layers 1-15:")
        for label, table in tables.items():
            n, occupancy = table.get(key, (0, np.full(n_layers, np.nan)))
            print(f"  {label:9s} n={n:5d} " + " ".join(f"{v:.2f}" for v in occupancy))
    ref, gen, deviation, error = bar_deviation(columns["reference"][2], columns["generated"][2])
    print(f"the bar, both species ({args.events} events): layer, occupancy reference / "
          "generated, |gen/ref - 1| +- error")
    for layer in range(n_layers):
        print(f"  layer_{layer:02d}  {ref[layer]:.4f} / {gen[layer]:.4f}  "
              f"{deviation[layer]:.3f} +- {error[layer]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
