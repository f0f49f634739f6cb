"""Throughput of the shipped generators, the input pipeline and the train step.

    python tools/benchmark.py --output benchmarks.json
    python tools/benchmark.py --models saved_models/darkshine_nnls_cgan/1 --pidgan-python /tmp/pidgan_venv/bin/python
    python tools/benchmark.py --quick            # tiny sizes, seconds (what the tests run)

Measures (medians of --repeats runs): samples/s of every SavedModel under saved_models/ (and of
its .keras generator) at batch sizes 1, 100 and 10 000, with the achieved GFLOP/s next to this
machine's float32 matmul rate; tf.data rows/s over shards next to h5py alone on the same shards
and next to the rate the train step consumes; our WGAN-GP train step's samples/s next to
pidgan's WGAN_GP on the same network and batch (with --pidgan-python). Writes JSON and prints a
table. Same as ``ddsim-gan benchmark``.
"""

import sys

from ddsim_gan.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
