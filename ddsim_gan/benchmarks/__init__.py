"""Throughput measurements behind ``tools/benchmark.py`` and ``ddsim-gan benchmark``.

Each function returns plain dicts (JSON-ready) and takes medians of repeated runs; none asserts
anything about speed (machines are noisy): the numbers go to ``docs/BENCHMARKS.md`` with the
command, the machine and the date.
"""

from .throughput import (generation_throughput, input_pipeline, matmul_peak, run_all,
                         train_step_throughput)

__all__ = ["generation_throughput", "input_pipeline", "matmul_peak", "run_all",
           "train_step_throughput"]
