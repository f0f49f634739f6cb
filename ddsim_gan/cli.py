"""The ``ddsim-gan`` command line: train, inspect files, convert, export, generate, evaluate.

    ddsim-gan train --config configs/darkshine_nnls_cgan.toml --quick --output-dir runs/quick
    ddsim-gan info runs/quick/data/shard-00000-of-00001.h5
    ddsim-gan convert sim.root --detector darkshine --conditions E --samples cells --output-dir data/
    ddsim-gan export --run-dir runs/full --base saved_models --models-config
    ddsim-gan generate --model saved_models/darkshine_nnls_cgan/1 --n 100000 --output-dir gen/
    ddsim-gan evaluate --generated gen/ --reference ref/ --detector darkshine --output-dir report/

A mistake in the input (a missing file, a bad dataset, an existing output) prints one line naming
the problem and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

USER_ERRORS = (FileNotFoundError, FileExistsError, ValueError, KeyError)


def _info(args) -> dict:
    path = Path(args.path)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        meta = path / "assets.extra" / "ddsim_gan.json"
        import tensorflow as tf

        model = tf.saved_model.load(str(path))
        signatures = {name: {"inputs": {k: [str(v.dtype.name), v.shape.as_list()] for k, v in
                                        fn.structured_input_signature[1].items()},
                             "outputs": {k: [str(v.dtype.name), v.shape.as_list()] for k, v in
                                         fn.structured_outputs.items()}}
                      for name, fn in model.signatures.items()}
        return {"savedmodel": str(path), "signatures": signatures,
                "metadata": json.loads(meta.read_text()) if meta.is_file() else None}
    if path.suffix == ".keras":
        from .models import load_generator

        model = load_generator(path)
        return {"keras_model": str(path), "name": model.name,
                "inputs": [list(t.shape) for t in model.inputs],
                "outputs": [list(t.shape) for t in model.outputs],
                "parameters": int(model.count_params())}
    from .data import shard_info

    return {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
            for k, v in shard_info(path, args.detector).items()}


def _export(args) -> None:
    from .export import export_run, write_models_config

    if args.run_dir is not None:
        print(f"exported {export_run(args.run_dir, args.base, args.name, args.version, overwrite=args.overwrite)}")
    if args.models_config:
        print(f"wrote {write_models_config(args.base)}")


def _generate(args) -> None:
    from .export.generate import generate_to_shards

    paths = generate_to_shards(args.model, args.output_dir, n=args.n,
                               conditions_file=args.conditions, seed=args.seed,
                               batch_size=args.batch_size, shard_size=args.shard_size,
                               overwrite=args.overwrite)
    print(f"wrote {len(paths)} shard(s) to {args.output_dir}")


def _evaluate(args) -> None:
    from . import detectors
    from .data import read_shards
    from .evaluation import evaluate

    detector = detectors.get(args.detector)
    ref_conditions, ref = read_shards(args.reference, detector)
    _, gen = read_shards(args.generated, detector)
    ref2 = None
    if args.reference2:
        _, ref2 = read_shards(args.reference2, detector)
    n = min(len(ref), len(gen), len(ref2) if ref2 is not None else len(ref))
    bars = json.loads(args.bars) if args.bars else None
    result = evaluate(detector, ref_conditions[:n], ref[:n], gen[:n],
                      None if ref2 is None else ref2[:n], output_dir=args.output_dir, bars=bars,
                      classifier=not args.no_classifier, plots=not args.no_plots, seed=args.seed)
    print(f"{args.output_dir}/report.md: {'PASSED' if result['passed'] else 'FAILED ' + ', '.join(result['failed'])}")


def _split_columns(text: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``, leaving commas inside brackets alone (``"max(a, b)"``)."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char in "([{") - (char in ")]}")
        if char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def _convert(args) -> None:
    import re

    from .data import convert_root, shard_info

    items = [item for text in args.conditions for item in _split_columns(text)]
    named = [re.fullmatch(r"(\w+)\s*=(?!=)\s*(.+)", item) for item in items]
    if any(named) and not all(named):
        raise ValueError(f"--conditions: give every condition as NAME=BRANCH or none, got "
                         f"{', '.join(items)}")
    conditions = {m[1]: m[2] for m in named} if any(named) else items
    samples = _split_columns(args.samples) if args.samples else None
    paths = convert_root(
        args.files, args.output_dir, args.detector, tree=args.tree, conditions=conditions,
        samples=samples[0] if samples and len(samples) == 1 else samples,
        sample_index=args.sample_index, sample_energy=args.sample_energy,
        step_size=int(args.step_size) if args.step_size.isdigit() else args.step_size,
        shard_size=args.shard_size, prefix=args.prefix, overwrite=args.overwrite,
        progress=not args.no_progress)
    rows = sum(shard_info(path)["n_rows"] for path in paths)
    print(f"wrote {rows} events in {len(paths)} shard(s) to {args.output_dir}")


def _latest_versions(base: Path) -> list[Path]:
    versions = []
    for model in sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []:
        numbered = [v for v in model.iterdir() if v.name.isdigit()]
        if numbered:
            versions.append(max(numbered, key=lambda v: int(v.name)))
    return versions


def _benchmark(args) -> None:
    from .benchmarks import run_all

    models = [Path(m) for m in args.models] if args.models else _latest_versions(args.base)
    sizes = (1, 10, 100) if args.quick else tuple(args.batch_sizes)
    result = run_all(models, batch_sizes=sizes, repeats=2 if args.quick else args.repeats,
                     pipeline_events=2000 if args.quick else args.pipeline_events,
                     train_steps=5 if args.quick else args.train_steps,
                     pidgan_python=args.pidgan_python)
    text = json.dumps(result, indent=1)
    if args.output:
        args.output.write_text(text + "\n")
    peak = result["matmul_peak"]["gflops"]
    print(f"matmul peak: {peak:.1f} GFLOP/s ({result['machine']['cpus']} CPUs)")
    for gen in result["generation"]:
        rates = ", ".join(f"b={r['batch']}: " + (f"{r['savedmodel_per_s']:.0f}/s"
                                                if r["savedmodel_per_s"] else "out of memory")
                          for r in gen["rows"])
        print(f"{gen['recipe']}: {rates}; {gen['achieved_gflops']:.1f} GFLOP/s "
              f"({gen.get('fraction_of_peak', 0):.0%} of peak)")
    pipe = result["input_pipeline"]
    print(f"input: tf.data {pipe['tfdata_rows_per_s']:.0f} rows/s, h5py "
          f"{pipe['h5py_rows_per_s']:.0f} rows/s, train step consumes "
          f"{pipe['train_step_rows_per_s']:.0f} rows/s")
    steps = result["train_step"]
    line = (f"train step (real events in the loss): ddsim_gan "
            f"{steps['ddsim_gan']['rows_in_loss_per_s']:.0f}/s")
    if "pidgan" in steps and "rows_in_loss_per_s" in steps["pidgan"]:
        line += (f", pidgan {steps['pidgan']['rows_in_loss_per_s']:.0f}/s at batch "
                 f"{steps['pidgan']['batch_size']} (x{steps['speedup']:.2f})")
    print(line)


def _train(args) -> int:
    from .config import train

    return train(args.config, args.recipe_args, mode=args.mode, dry_run=args.dry_run)


def _recipe_list() -> str:
    try:
        from .config import recipe_names

        return ", ".join(recipe_names())
    except FileNotFoundError:
        return "(no recipes/ directory next to the package: install from a checkout)"


TRAIN_HELP = """\
Run a recipe (a script in recipes/) from a TOML config instead of its command line.

The config names the recipe and the mode and sets any of the recipe's options, under the
option's name with '_' for '-' (--output-dir is output_dir; a flag takes true or false):

  recipe = "darkshine_nnls_cgan"
  mode = "full"                   # "quick" (< 2 min on 2 cores) or "full" (<= 30 min)
  data = "data/darkshine"         # HDF5 shards (ddsim-gan convert) instead of the simulator
  output_dir = "runs/darkshine_mine"
  epochs = 50                     # preset overrides: epochs, steps_per_epoch, n_train, ...

configs/<recipe>.toml lists every option of each recipe with its default; copy one and
edit it. A key the recipe does not have stops with the list of valid keys. Options after
--config are the recipe's own command-line options (python recipes/<recipe>.py --help)
and override the config; relative paths are taken from the working directory."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddsim-gan", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", help="run a recipe from a TOML config (configs/<recipe>.toml)",
        usage="ddsim-gan train --config FILE [--mode {quick,full}] [--dry-run] "
              "[RECIPE OPTIONS ...]",
        description=TRAIN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        epilog=f"""\
examples:
  ddsim-gan train --config configs/darkshine_nnls_cgan.toml
  ddsim-gan train --config configs/darkshine_nnls_cgan.toml --quick --output-dir runs/quick
  ddsim-gan train --config my.toml --dry-run      # print the recipe command, run nothing

recipes: {_recipe_list()}""")
    train.add_argument("--config", required=True, metavar="FILE", help="TOML config")
    train.add_argument("--mode", choices=["quick", "full"],
                       help="replace the config's mode (--quick also selects quick mode)")
    train.add_argument("--dry-run", action="store_true",
                       help="check the config, print the recipe's command and stop")
    train.set_defaults(run=_train, forward=True)

    info = commands.add_parser("info", help="what an HDF5 shard, SavedModel or .keras holds")
    info.add_argument("path", help="an HDF5 file, a SavedModel version directory or a .keras file")
    info.add_argument("--detector", help="detector name, to reshape CaloChallenge voxels")
    info.set_defaults(run=lambda a: print(json.dumps(_info(a), indent=1)))

    export = commands.add_parser(
        "export", help="write a recipe's generator as a SavedModel for TF Serving",
        description="Write <base>/<name>/<version>/ atomically from a recipe's output directory.")
    export.add_argument("--run-dir", type=Path,
                        help="recipe output (generator.keras, run.json), or an exported "
                             "version directory to export again with this code")
    export.add_argument("--base", type=Path, default=Path("saved_models"),
                        help="TF Serving base directory (default: saved_models)")
    export.add_argument("--name", help="model name (default: the recipe's name)")
    export.add_argument("--version", type=int, help="integer version (default: the next free one)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing version")
    export.add_argument("--models-config", action="store_true",
                        help="write <base>/models.config listing every model under <base>")
    export.set_defaults(run=_export)

    generate = commands.add_parser(
        "generate", help="sample a SavedModel into HDF5 shards",
        description="Generate samples from an exported SavedModel into HDF5 shards, with a "
                    "progress bar. Conditions come from --conditions (an HDF5 shard set) or, "
                    "for models with a fitted spectrum, are drawn from it (--n).")
    generate.add_argument("--model", type=Path, required=True, help="SavedModel version directory")
    generate.add_argument("--output-dir", type=Path, required=True)
    generate.add_argument("--n", type=int, help="number of samples (spectrum models)")
    generate.add_argument("--conditions", help="HDF5 shards whose conditions to generate at")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--batch-size", type=int, default=10_000)
    generate.add_argument("--shard-size", type=int, default=100_000)
    generate.add_argument("--overwrite", action="store_true")
    generate.set_defaults(run=_generate)

    evaluate = commands.add_parser(
        "evaluate", help="compare generated with reference shards: metrics.json, report.md, plots",
        description="Every metric with its bootstrap error and, given --reference2 (an "
                    "independent reference sample at the same conditions), its floor.")
    evaluate.add_argument("--generated", required=True, help="generated shards (file, dir, glob)")
    evaluate.add_argument("--reference", required=True, help="reference shards")
    evaluate.add_argument("--reference2", help="second reference sample, for the floor")
    evaluate.add_argument("--detector", required=True)
    evaluate.add_argument("--output-dir", type=Path, required=True)
    evaluate.add_argument("--bars", help='JSON {"metric": largest acceptable value}')
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--no-classifier", action="store_true")
    evaluate.add_argument("--no-plots", action="store_true")
    evaluate.set_defaults(run=_evaluate)

    convert = commands.add_parser(
        "convert", help="convert Geant4 ROOT ntuples (TTree or RNTuple) to HDF5 shards",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Read one tree of ROOT files in chunks (uproot) and write HDF5 shards for a detector.

conditions: one branch per detector condition, in the detector's order, or NAME=BRANCH
  pairs; on a TTree a branch may be an uproot expression, e.g. 'E_total=E_beam/1000'.
samples, one of:
  --samples BRANCH        one array branch, float[N] or std::vector<float>, with exactly
                          prod(sample_shape) values per event in C order;
  --samples B1,B2,...     one branch per value of a vector detector (darkside: S1,S2,f200);
  --sample-index BRANCH --sample-energy BRANCH
                          sparse hits: per event a list of flat C-order cell indices and
                          a list of energies of the same length; hits in one cell are summed.
Bad input (a missing tree or branch, a wrong length, NaN, inf, a negative energy) stops
with one line naming the file, tree, branch and entry, and no shard is left behind.""",
        epilog="""\
examples:
  ddsim-gan convert 'g4/run*.root' --detector darkshine --tree events \\
      --conditions E_beam --samples cell_e --output-dir data/darkshine
  ddsim-gan convert hits.root --detector darkshine --tree hits --conditions 'E_total=E_beam/1000' \\
      --sample-index cell_id --sample-energy edep --output-dir data/darkshine
  ddsim-gan convert g4ds.root --detector darkside --conditions E_recoil,recoil_type \\
      --samples S1,S2,f200 --output-dir data/darkside""")
    convert.add_argument("files", nargs="+", metavar="FILES",
                         help="ROOT files, directories of *.root or quoted globs ('g4/run*.root')")
    convert.add_argument("--detector", required=True, metavar="NAME",
                         help="detector name, e.g. darkshine")
    convert.add_argument("--tree", help="TTree or RNTuple to read (default: the only one)")
    convert.add_argument("--conditions", required=True, action="append", metavar="B1,B2",
                         help="comma-separated branches (or NAME=BRANCH), one per condition")
    convert.add_argument("--samples", metavar="BRANCH",
                         help="dense samples: one array branch, or B1,B2,... one per value")
    convert.add_argument("--sample-index", metavar="BRANCH",
                         help="sparse hits: branch of flat cell indices")
    convert.add_argument("--sample-energy", metavar="BRANCH",
                         help="sparse hits: branch of hit energies")
    convert.add_argument("--output-dir", type=Path, required=True, metavar="DIR")
    convert.add_argument("--shard-size", type=int, default=100_000, metavar="N",
                         help="rows per shard (default: 100000)")
    convert.add_argument("--step-size", default="100 MB", metavar="SIZE",
                         help="chunk read at once: entries (an integer) or memory (default: 100 MB)")
    convert.add_argument("--prefix", default="shard", help="shard file prefix (default: shard)")
    convert.add_argument("--overwrite", action="store_true", help="replace existing shards")
    convert.add_argument("--no-progress", action="store_true", help="no progress bar")
    convert.set_defaults(run=_convert)

    bench = commands.add_parser(
        "benchmark", help="throughput of shipped models, input pipeline and train step",
        description="Medians of repeated runs on this machine: samples/s of each SavedModel and "
                    "its .keras generator at several batch sizes with the achieved GFLOP/s next "
                    "to the matmul peak, tf.data vs h5py rows/s, and our WGAN-GP train step vs "
                    "pidgan's (--pidgan-python, a virtual environment with pidgan installed).")
    bench.add_argument("--models", nargs="*", help="SavedModel version directories (default: "
                       "the latest version of every model under --base)")
    bench.add_argument("--base", type=Path, default=Path("saved_models"))
    bench.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 100, 10_000])
    bench.add_argument("--repeats", type=int, default=5)
    bench.add_argument("--pipeline-events", type=int, default=20_000)
    bench.add_argument("--train-steps", type=int, default=50)
    bench.add_argument("--pidgan-python", help="python of a virtual environment with pidgan")
    bench.add_argument("--output", type=Path, help="write the JSON here")
    bench.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    bench.set_defaults(run=_benchmark)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    # `train` hands the options it does not know to the recipe; every other command refuses them
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "forward", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.recipe_args = rest
    try:
        status = args.run(args)
    except USER_ERRORS as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"ddsim-gan {args.command}: {message}", file=sys.stderr)
        return 2
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
