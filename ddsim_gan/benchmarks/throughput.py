"""Generation, FLOP rate, input pipeline and train-step throughput, as medians of repeats."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def _median_seconds(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(size=2048, repeats=5) -> dict:
    """float32 matrix-multiply rate of this machine in GFLOP/s (TensorFlow, all cores)."""
    import tensorflow as tf

    a = tf.random.stateless_normal([size, size], seed=[1, 2])
    b = tf.random.stateless_normal([size, size], seed=[3, 4])
    multiply = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    seconds = _median_seconds(lambda: multiply().numpy(), repeats)
    return {"size": size, "seconds": seconds, "gflops": 2 * size**3 / seconds / 1e9}


def _rate(batch, fn, repeats):
    """``batch`` / median seconds of ``fn``; ``None`` where the batch runs out of memory (a
    SavedModel exported before its serving graph chunked large requests), so one model's
    limit does not end the benchmark of the others."""
    import tensorflow as tf

    try:
        return batch / _median_seconds(fn, repeats)
    except tf.errors.ResourceExhaustedError:
        print(f"out of memory at batch {batch}", file=sys.stderr)
        return None


def _graph_flops(concrete) -> float:
    """Floating-point operations of a concrete function's graph (TF profiler)."""
    import tensorflow as tf

    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    info = tf.compat.v1.profiler.profile(graph=concrete.graph, options=options)
    return float(info.total_float_ops)


def generation_throughput(model_dir, batch_sizes=(1, 100, 10_000), repeats=5,
                          peak_gflops=None) -> dict:
    """Samples/s of one exported model: the SavedModel signature and its ``.keras`` generator.

    ``model_dir`` is a SavedModel version directory (``saved_models/<name>/<version>``). At the
    largest batch the serving graph's FLOPs (TF profiler) give the achieved GFLOP/s.
    """
    import keras
    import tensorflow as tf

    import ddsim_gan.models  # noqa: F401  (registers the layers of generator.keras)
    from ddsim_gan.export.savedmodel import chunked_call, serving_chunk

    def chunked(keras_model):
        """The ``.keras`` model called as the serving graph calls it: in chunks."""
        chunk = serving_chunk(int(keras_model.inputs[1].shape[-1]))
        return tf.function(lambda c, z: chunked_call(
            lambda a, b: keras_model([a, b], training=False), c, z, chunk))

    model_dir = Path(model_dir)
    meta = json.loads((model_dir / "assets.extra" / "ddsim_gan.json").read_text())
    ranges = np.asarray(meta.get("condition_ranges") or [[0.0, 1.0]] * meta["n_conditions"])
    loaded = tf.saved_model.load(str(model_dir))
    serve = loaded.signatures["serving_default"]
    keras_path = model_dir / "assets.extra" / "generator.keras"
    sampler = keras.saving.load_model(keras_path) if keras_path.is_file() else None
    keras_call = chunked(sampler) if sampler else None
    # a resampled sampler (K candidates per sample) ships its generator alone beside it
    alone_path = model_dir / "assets.extra" / "generator_alone.keras"
    alone = keras.saving.load_model(alone_path) if alone_path.is_file() else None
    alone_call = chunked(alone) if alone else None
    rng = np.random.default_rng(0)
    rows = []
    for batch in batch_sizes:
        conditions = (ranges[:, 0] + (ranges[:, 1] - ranges[:, 0])
                      * rng.random((batch, len(ranges)))).astype(np.float32)
        c = tf.constant(conditions)
        seed = tf.constant(1, tf.int64)
        row = {"batch": batch, "savedmodel_per_s": _rate(
            batch, lambda: serve(conditions=c, seed=seed)["samples"].numpy(), repeats)}
        if keras_call is not None:
            z = tf.random.stateless_normal([batch, meta["latent_dim"]], seed=[5, 6])
            row["keras_per_s"] = _rate(batch, lambda: keras_call(c, z).numpy(), repeats)
        if alone_call is not None:
            z_alone = tf.random.stateless_normal([batch, int(alone.inputs[1].shape[-1])],
                                                 seed=[5, 6])
            row["generator_alone_per_s"] = _rate(
                batch, lambda: alone_call(c, z_alone).numpy(), repeats)
        rows.append(row)
    largest = max(batch_sizes)
    # The profiler does not look inside the signature's nested function call (nor into a
    # loop's body), so the FLOPs are counted on the generator's own graph, traced at the
    # largest batch in one call and not run (the serving graph adds only the noise draw).
    if sampler is not None:
        concrete = tf.function(lambda c, z: sampler([c, z], training=False)).get_concrete_function(
            tf.TensorSpec([largest, len(ranges)], tf.float32),
            tf.TensorSpec([largest, meta["latent_dim"]], tf.float32))
    else:
        concrete = tf.function(lambda c, s: serve(conditions=c, seed=s)).get_concrete_function(
            tf.TensorSpec([largest, len(ranges)], tf.float32), tf.TensorSpec([], tf.int64))
    flops_per_sample = _graph_flops(concrete) / largest
    best = max((r["savedmodel_per_s"] or 0.0) for r in rows if r["batch"] == largest)
    result = {"model": str(model_dir), "recipe": meta.get("recipe"), "rows": rows,
              "flops_per_sample": flops_per_sample,
              "achieved_gflops": flops_per_sample * best / 1e9}
    if peak_gflops:
        result["fraction_of_peak"] = result["achieved_gflops"] / peak_gflops
    return result


def input_pipeline(detector="darkshine", n_events=20_000, batch_size=256, shards=4,
                   repeats=3) -> dict:
    """Rows/s of ``make_dataset`` over shards next to h5py alone reading the same shards."""
    import h5py

    from ..data import make_dataset, write_shards
    from ..detectors import get

    det = get(detector)
    conditions, samples = det.simulate(n_events, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_shards(tmp, conditions, samples, det,
                             shard_size=-(-n_events // shards))

        def raw():
            for path in paths:
                with h5py.File(path, "r") as f:
                    f["conditions"][...], f["samples"][...]

        def pipeline():
            for _ in make_dataset(paths, batch_size, shuffle=True, seed=0, validate=True):
                pass

        h5py_rate = n_events / _median_seconds(raw, repeats)
        tfdata_rate = n_events / _median_seconds(pipeline, repeats)
    return {"detector": detector, "n_events": n_events, "h5py_rows_per_s": h5py_rate,
            "tfdata_rows_per_s": tfdata_rate, "tfdata_over_h5py": tfdata_rate / h5py_rate}


def train_step_throughput(output_dim=5, n_conditions=4, latent_dim=16, hidden=128, layers=5,
                          batch_size=512, steps=50, repeats=3, steps_per_execution=10) -> dict:
    """Samples/s of our WGAN-GP train step on an MLP generator and critic of the given size
    (the network pidgan's WGAN_GP is measured with by ``tools/bench_pidgan.py``).

    ``steps_per_execution`` steps run in one call of the compiled function: for a network this
    small Keras' per-call work is a quarter of the step (measured 2026-11-24: 40 500 samples/s
    with 1, 52 200 with 10, as fast as a bare ``tf.function`` loop of the same step).
    """
    import keras

    from ..data import dataset_from_arrays
    from ..data.preprocessing import ConditionEncoder, Standardize
    from ..models import networks
    from ..models.gan import ConditionalGAN
    from ..models.penalties import GradientPenalty

    rng = np.random.default_rng(0)
    conditions = rng.normal(size=(20 * batch_size, n_conditions)).astype(np.float32)
    samples = (conditions[:, :1] + rng.normal(size=(len(conditions), output_dim))).astype(
        np.float32)
    encoder = ConditionEncoder([0] * n_conditions).adapt(conditions)
    transform = Standardize((output_dim,)).adapt(samples)
    generator = networks.dense_generator(latent_dim, n_conditions, (output_dim,),
                                         hidden=(hidden,) * layers, output_activation="linear")
    critic = networks.dense_critic((output_dim,), n_conditions, hidden=(hidden,) * layers)
    gan = ConditionalGAN(generator, critic, encoder, transform, latent_dim,
                         penalties=[GradientPenalty(10.0)], critic_steps=1, seed=0)
    gan.compile(generator_optimizer=keras.optimizers.RMSprop(1e-3),
                critic_optimizer=keras.optimizers.RMSprop(1e-3), jit_compile=False,
                steps_per_execution=steps_per_execution)
    data = dataset_from_arrays(conditions, samples, batch_size, repeat=True)
    gan.fit(data, epochs=1, steps_per_epoch=5, verbose=0)
    seconds = _median_seconds(lambda: gan.fit(data, epochs=1, steps_per_epoch=steps, verbose=0,
                                              shuffle=False), repeats, warmup=0)
    return {"network": f"MLP {layers}x{hidden}, {output_dim} outputs, {n_conditions} conditions",
            "batch_size": batch_size, "steps_per_execution": steps_per_execution,
            "samples_per_s": steps * batch_size / seconds,
            "rows_in_loss_per_s": steps * batch_size / seconds}


def pidgan_train_step(python, **kwargs) -> dict:
    """The same measurement with pidgan's WGAN_GP, run by ``python`` (a separate virtual
    environment: pidgan pins tensorflow < 2.17 and numpy < 2)."""
    args = [python, str(TOOLS / "bench_pidgan.py")]
    for key, value in kwargs.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    completed = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    if completed.returncode != 0:
        return {"error": completed.stderr[-2000:]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run_all(models=(), batch_sizes=(1, 100, 10_000), repeats=5, pipeline_events=20_000,
            train_steps=50, pidgan_python=None) -> dict:
    peak = matmul_peak(repeats=repeats)
    # the input pipeline before the generators: after seven of them in this process it read
    # at 0.26 of h5py's rate, alone at 0.53-0.61 (2026-12-07, the same machine minutes apart)
    pipeline = input_pipeline(n_events=pipeline_events, repeats=repeats)
    result = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cpus": os.cpu_count(), "python": sys.version.split()[0]},
              "date": time.strftime("%Y-%m-%d"), "matmul_peak": peak,
              "input_pipeline": pipeline,
              "generation": [generation_throughput(m, batch_sizes, repeats, peak["gflops"])
                             for m in models]}
    ours = train_step_throughput(steps=train_steps, repeats=repeats)
    result["train_step"] = {"ddsim_gan": ours}
    if pidgan_python:
        # pidgan's batch of 2n is our batch of n: n real and n generated events per critic pass
        theirs = pidgan_train_step(pidgan_python, steps=train_steps, repeats=repeats,
                                   batch_size=2 * ours["batch_size"])
        result["train_step"]["pidgan"] = theirs
        if "rows_in_loss_per_s" in theirs:
            result["train_step"]["speedup"] = (ours["rows_in_loss_per_s"]
                                               / theirs["rows_in_loss_per_s"])
    import tensorflow as tf

    result["input_pipeline"]["train_step_rows_per_s"] = ours["samples_per_s"]
    result["tensorflow"] = tf.__version__
    return result
