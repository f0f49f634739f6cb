"""Export a recipe's trained generator as a SavedModel in the layout TF Serving loads.

    python tools/export_savedmodel.py --run-dir runs/darkshine_nnls_cgan --base saved_models
    python tools/export_savedmodel.py --run-dir RUN --base saved_models --version 2 --overwrite
    python tools/export_savedmodel.py --base saved_models --models-config

writes ``<base>/<name>/<version>/`` (``saved_model.pb``, ``variables/``, and under
``assets.extra/`` the run's metadata and its backend-independent ``generator.keras``), atomically:
a temporary directory is renamed into place, so TF Serving never sees half a version. The
signature is ``serving_default(conditions: float32 [N, c], seed: int64 []) -> {"samples"}`` in
physical units; the same seed gives the same samples. ``--models-config`` writes
``<base>/models.config`` listing every model under ``<base>`` for
``tensorflow_model_server --model_config_file``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path,
                        help="a recipe's output directory (holds generator.keras and run.json)")
    parser.add_argument("--base", type=Path, default=Path("saved_models"),
                        help="TF Serving base directory (default: saved_models)")
    parser.add_argument("--name", help="model name (default: the recipe's name)")
    parser.add_argument("--version", type=int, help="integer version (default: the next free one)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing version directory")
    parser.add_argument("--models-config", action="store_true",
                        help="also write <base>/models.config listing every model under <base>")
    args = parser.parse_args(argv)
    if args.run_dir is None and not args.models_config:
        parser.error("give --run-dir to export, --models-config to list, or both")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from ddsim_gan.export import export_run, write_models_config

    try:
        if args.run_dir is not None:
            target = export_run(args.run_dir, args.base, args.name, args.version,
                                overwrite=args.overwrite)
            print(f"exported {target}")
        if args.models_config:
            print(f"wrote {write_models_config(args.base)}")
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"export_savedmodel: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
