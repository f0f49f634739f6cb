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
``tensorflow_model_server --model_config_file``. Same as ``ddsim-gan export``.
"""

import sys

from ddsim_gan.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not {"--run-dir", "--models-config", "-h", "--help"} & set(argv):
        print("export_savedmodel: give --run-dir to export, --models-config to list, or both",
              file=sys.stderr)
        sys.exit(2)
    sys.exit(main(["export", *argv]))
