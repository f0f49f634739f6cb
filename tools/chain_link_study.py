#!/usr/bin/env python
"""Train one link of the DarkSide-20k chain alone and measure it in 10-keV bins.

    python tools/chain_link_study.py --link S2 --previous standardize
    python tools/chain_link_study.py --link f200 --previous quantile --steps 3000

Each link of :class:`~ddsim_gan.models.chain.AutoregressiveChain` is trained on the *real*
previous outputs (teacher forcing), so a link can be studied alone: this builds the chain as
``recipes/darkside_argan.py`` does (same networks, standardization and learning rate; the
previous outputs encoded as ``--previous`` says), trains the chosen link for ``--steps`` steps
of ``--batch-size``, then generates that link's output at the conditions *and real previous
outputs* of an independent reference sample and prints issue 3's binned moments: the worst bin
of the link's mean and width, and of its correlation with each earlier output, with the
deviation per bin. What a link does inside the whole chain (conditioned on generated earlier
outputs) is the recipe's business; this isolates the link.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _recipe():
    spec = importlib.util.spec_from_file_location("darkside_argan",
                                                  ROOT / "recipes" / "darkside_argan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--link", choices=("S1", "S2", "f200"), required=True)
    parser.add_argument("--previous", choices=("quantile", "standardize"), default="quantile",
                        help="how the link encodes the outputs before it (default %(default)s)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--n-train", type=int, default=500_000)
    parser.add_argument("--n-eval", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="checkpoints and logs (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 4 or args.n_train < 1 or args.n_eval < 1:
        parser.error("--steps, --n-train and --n-eval must be positive, --batch-size >= 4")

    import tempfile

    from ddsim_gan import detectors, recipe
    from ddsim_gan.evaluation.metrics import conditional_moments
    from ddsim_gan.models.chain import AutoregressiveChain

    darkside = _recipe()
    detector = detectors.get(darkside.DETECTOR)
    index = detector.sample_names.index(args.link)
    conditions, samples = detector.simulate(args.n_train,
                                            np.random.SeedSequence([args.seed, 0]))
    chain = AutoregressiveChain.for_detector(detector, conditions, samples, seed=args.seed,
                                             previous=args.previous, **darkside.GAN_ARCHITECTURE)
    link = chain.links[index]
    settings = dict(batch_size=args.batch_size, epochs=1, steps_per_epoch=args.steps,
                    time_limit_minutes=None)
    link.compile(**recipe.wgan_optimizers(settings, darkside.GAN_LEARNING_RATE), jit_compile=True)
    with tempfile.TemporaryDirectory() as scratch:
        run = argparse.Namespace(seed=args.seed, output_dir=args.output_dir or Path(scratch))
        link_conditions, target = chain.link_data(conditions, samples, index)
        recipe.train_arrays(link, link_conditions, target, settings, run)

    eval_conditions, reference = detector.simulate(args.n_eval,
                                                   np.random.SeedSequence([args.seed, 3]))
    sampler = chain._link_model(link, chain.standardizers[index], args.link)
    noise = np.random.default_rng(args.seed + 1).standard_normal(
        (args.n_eval, link.latent_dim)).astype(np.float32)
    generated = reference.copy()
    generated[:, index] = sampler.predict(
        [np.concatenate([eval_conditions, reference[:, :index]], axis=1), noise],
        batch_size=32768, verbose=0)[:, 0]
    moments = conditional_moments(eval_conditions, reference, generated, darkside.ENERGY_EDGES,
                                  condition_index=0, category_index=1,
                                  pairs=tuple((j, index) for j in range(index)), min_events=50,
                                  names=list(detector.sample_names))
    keys = [f"mean:{args.link}", f"width:{args.link}"] + [
        f"corr:{detector.sample_names[j]}-{args.link}" for j in range(index)]
    result = {"link": args.link, "previous": args.previous, "steps": args.steps,
              "batch_size": args.batch_size, "seed": args.seed,
              "worst": {key: moments["worst"][key] for key in keys},
              "width_dev": moments["width_dev"][:, index].tolist(),
              "bins": moments["bins"]}
    print(f"link {args.link}, previous outputs {args.previous}, {args.steps} steps of "
          f"{args.batch_size}; {args.n_eval:,} events, {len(moments['bins'])} bins")
    for key in keys:
        worst = moments["worst"][key]
        where = worst["bin"]
        label = "" if where is None else (f" ({('NR', 'ER')[where['category']]} "
                                          f"{where['low']:g}-{where['high']:g} keV)")
        print(f"  worst {key:<14} {worst['value']:.3f} ± {worst['error']:.3f}{label}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
