"""Seconds per 1e5 samples of an exported generator on a GPU, with JAX and no TensorFlow.

    KERAS_BACKEND=jax python tools/gpu_benchmark.py \\
        saved_models/darkshine_nnls_cgan/1/assets.extra/generator.keras --n 100000

Loads the backend-independent ``generator.keras`` and times, as medians of ``--repeats`` runs:

* ``on_device``: the jitted sampler (noise drawn on the device) until the samples are ready in
  GPU memory, in float32 and with the weights and inputs in bfloat16;
* ``to_host_f32``/``to_host_bf16``: the same plus the copy of the dense samples to host memory;
* ``to_host_sparse``: only the non-zero cells (index and bfloat16 value) cross PCIe, which for
  sparse showers is a few percent of the dense bytes; the host receives them ready to scatter.

Prints one JSON object (device, shapes, seconds) and a small table. Conditions are drawn
uniformly in the ranges stored in ``run.json`` beside the model, or given by ``--condition``.
The samples are drawn in jitted calls of ``--chunk`` samples (default 2^28 / noise width, at
most ``--n``; the last chunk padded), all dispatched before the first is waited for, so the
device computes one chunk while the host copies the one before: a resampled DarkSHINE sampler
holds about 4 MB per shower in flight, and 1e5 in one call would not fit in a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")


def _conditions(model_path: Path, n: int, fixed, rng):
    import numpy as np

    if fixed:
        return np.tile(np.asarray(fixed, np.float32), (n, 1))
    meta = model_path.parent / "ddsim_gan.json"
    if not meta.is_file():
        meta = model_path.parent / "run.json"
    ranges = json.loads(meta.read_text())["condition_ranges"]
    low, high = np.asarray(ranges, np.float32).T
    return (low + (high - low) * rng.random((n, len(low)))).astype(np.float32)


def _median_seconds(fn, repeats):
    fn()  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="generator.keras")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--condition", type=float, nargs="*", help="fixed condition values")
    parser.add_argument("--chunk", type=int, default=None,
                        help="samples per jitted call (default: 2^28 / noise width, at most --n)")
    parser.add_argument("--max-hits", type=int, default=512,
                        help="non-zero cells kept per sample for the sparse transfer")
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import keras
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import ddsim_gan.models  # noqa: F401  (registers the custom layers)

    model = keras.saving.load_model(args.model)
    latent = int(model.inputs[1].shape[-1])
    chunk = max(1, min(args.n, args.chunk or max(64, 2 ** 28 // latent)))
    n_chunks = -(-args.n // chunk)
    conditions = _conditions(args.model, args.n, args.condition, np.random.default_rng(0))
    conditions = np.concatenate([conditions, conditions[:n_chunks * chunk - args.n]])
    chunks = [jnp.asarray(conditions[i * chunk:(i + 1) * chunk]) for i in range(n_chunks)]
    keys = list(jax.random.split(jax.random.PRNGKey(0), n_chunks))
    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]

    def sample(trainable, frozen, conditions, key, dtype):
        noise = jax.random.normal(key, (conditions.shape[0], latent), dtype=jnp.float32)
        cast = [w.astype(dtype) if w.dtype == jnp.float32 else w for w in trainable]
        out, _ = model.stateless_call(cast, frozen, [conditions, noise.astype(dtype)],
                                      training=False)
        return out

    def sparse(out):
        flat = out.reshape(out.shape[0], -1)
        values, index = jax.lax.top_k(flat, min(args.max_hits, flat.shape[1]))
        return index.astype(jnp.int16 if flat.shape[1] < 32768 else jnp.int32), \
            values.astype(jnp.bfloat16)

    def every_chunk(run):
        """All chunks dispatched (JAX returns at once), in order."""
        return [run(trainable, frozen, c, k) for c, k in zip(chunks, keys)]

    results = {"device": str(jax.devices()[0]), "n": args.n, "chunk": chunk,
               "n_chunks": n_chunks, "repeats": args.repeats,
               "output_shape": list(model.outputs[0].shape[1:]),
               "parameters": int(model.count_params())}
    for label, dtype in (("f32", jnp.float32), ("bf16", jnp.bfloat16)):
        run = jax.jit(lambda t, f, c, k, dtype=dtype: sample(t, f, c, k, dtype))
        results[f"on_device_{label}"] = _median_seconds(
            lambda: [o.block_until_ready() for o in every_chunk(run)], args.repeats)
        results[f"to_host_{label}"] = _median_seconds(
            lambda: [np.asarray(o.astype(dtype)) for o in every_chunk(run)], args.repeats)
    run_sparse = jax.jit(lambda t, f, c, k: sparse(sample(t, f, c, k, jnp.bfloat16)))
    results["to_host_sparse_bf16"] = _median_seconds(
        lambda: [np.asarray(a) for pair in every_chunk(run_sparse) for a in pair], args.repeats)
    scale = 1e5 / (n_chunks * chunk)     # the padding of the last chunk counts as work
    results["seconds_per_1e5"] = {k: v * scale for k, v in results.items()
                                  if k.startswith(("on_device", "to_host"))}
    print(json.dumps(results, indent=1))
    print(f"\n{'path':<22}{'s per 1e5':>12}")
    for name, seconds in results["seconds_per_1e5"].items():
        print(f"{name:<22}{seconds:>12.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
