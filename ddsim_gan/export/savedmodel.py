"""SavedModel export in the layout TF Serving loads: ``<base>/<name>/<version>/saved_model.pb``.

Signature ``serving_default(conditions: float32 [N, c], seed: int64 []) -> {"samples": float32
[N, *sample_shape], "in_range": bool [N]}`` in physical units; ``in_range`` is false for
events whose conditions lie outside the ranges the model was trained on (an extrapolation the
client should not trust; the samples are still returned). Noise comes from
``tf.random.stateless_normal`` keyed by the seed (:func:`serving_noise`), so a seed reproduces its
samples. Requests are checked: the signature refuses other dtypes (float64 conditions, an int32
seed), and the graph conditions that are not a matrix with one column per condition, a seed that
is not a scalar, and NaN or inf conditions, each with an ``InvalidArgumentError`` naming the input
(TF Serving passes the message on to the client). Models with a fitted condition spectrum also get
``sample_spectrum(n: int64 [], seed: int64 []) -> {"conditions", "samples"}``. The graphs hold
only standard TF ops (no ``py_function``), so serving needs neither Python nor this package.
A large request is generated in chunks of :func:`serving_chunk` events (the noise of the whole
request is drawn first, so chunking does not change the samples).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import tensorflow as tf


def next_version(model_dir) -> int:
    """One more than the largest integer version under ``model_dir`` (1 if none)."""
    versions = [int(p.name) for p in Path(model_dir).glob("*") if p.name.isdigit()]
    return max(versions, default=0) + 1


def serving_noise(n, latent_dim, seed):
    """The latent noise ``serving_default`` draws for ``n`` events and an int64 ``seed``: feed it
    to the Keras sampler (or its ONNX export) to reproduce the SavedModel's samples."""
    return tf.random.stateless_normal(
        tf.stack([tf.cast(n, tf.int32), latent_dim]),
        seed=tf.stack([tf.cast(seed, tf.int64), tf.constant(0x5EED, tf.int64)]))


def serving_chunk(latent_dim) -> int:
    """Most events one call of the sampler gets in the serving graph. The noise width grows
    with what an event holds in flight (a resampled DarkSHINE sampler: 8 candidates, 70 920
    numbers, and about 4 MB of cell tensors per event), so 2^25 / width events keep a call to
    a few hundred MB: 473 such events, 3 785 for the DarkSHINE generator alone, 65 536 at most
    (a request of 10 000 resampled showers in one call ran a 24 GB machine out of memory)."""
    return int(min(65_536, max(64, 2 ** 25 // max(int(latent_dim), 1))))


def chunked_call(call, conditions, noise, chunk):
    """``call(conditions, noise)`` on consecutive slices of at most ``chunk`` rows, concatenated
    (a ``tf.while_loop`` of standard ops); a batch that fits is one call, with no loop."""
    n = tf.shape(conditions)[0]

    def in_chunks():
        n_chunks = (n + chunk - 1) // chunk

        def body(i, outputs):
            start = i * chunk
            stop = tf.minimum(start + chunk, n)
            return i + 1, outputs.write(i, call(conditions[start:stop], noise[start:stop]))

        _, outputs = tf.while_loop(
            lambda i, _: i < n_chunks, body,
            [tf.constant(0), tf.TensorArray(tf.float32, size=n_chunks, infer_shape=False)])
        return outputs.concat()

    return tf.cond(n <= chunk, lambda: call(conditions, noise), in_chunks)


def _request_shape(x):
    """The shape of ``x`` as the request has it. A serving signature declares its inputs' shapes,
    and tf.function and grappler fold ``tf.rank``, ``tf.shape`` of a fully known shape and
    ``Size(Shape(x))`` to what the signature says, so a check on them never sees a request of
    another shape. A serialize/parse round trip (one copy of the request, small next to the
    generator) has no static shape."""
    opaque = tf.io.parse_tensor(tf.io.serialize_tensor(x), x.dtype)
    return tf.shape(opaque, out_type=tf.int64)


def _checked_request(conditions, seed, n_conditions, condition_names=None):
    """``conditions`` and ``seed`` after in-graph checks of their shapes (the signature itself
    checks only dtypes: TF Serving and a loaded signature pass any shape through)."""
    columns = f" ({', '.join(condition_names)})" if condition_names else ""
    expected = (f"conditions must be a float32 matrix [events, {n_conditions}]{columns}, "
                f"one row per event; got shape")
    shape, seed_shape = _request_shape(conditions), _request_shape(seed)
    rank_ok = tf.debugging.Assert(tf.equal(tf.size(shape), 2), [expected, shape])
    seed_ok = tf.debugging.Assert(tf.equal(tf.size(seed_shape), 0),
                                  ["seed must be an int64 scalar; got shape", seed_shape])
    with tf.control_dependencies([rank_ok]):
        width_ok = tf.debugging.Assert(tf.equal(shape[-1], n_conditions), [expected, shape])
    with tf.control_dependencies([rank_ok, width_ok, seed_ok]):
        return tf.identity(conditions), tf.identity(seed)


def servable_module(sampler, latent_dim, n_conditions, spectrum=None, condition_ranges=None,
                    condition_names=None, chunk=None):
    """A ``tf.Module`` carrying the Keras sampler and the serving functions.

    ``condition_ranges`` ([c, 2], low and high of each condition) adds the ``in_range`` output;
    ``condition_names`` go into the error message of a request with the wrong shape; ``chunk``
    (default :func:`serving_chunk`) is the most events one call of the sampler gets."""
    module = tf.Module()
    module.sampler = sampler
    ranges = None if condition_ranges is None else tf.constant(condition_ranges, tf.float32)
    chunk = serving_chunk(latent_dim) if chunk is None else int(chunk)
    outputs = getattr(sampler, "outputs", None)
    sample_shape = tuple(outputs[0].shape[1:]) if outputs else None

    def serve(conditions, seed):
        conditions, seed = _checked_request(conditions, seed, n_conditions, condition_names)
        outputs = {"samples": generate(conditions, seed)}
        if ranges is not None:
            outputs["in_range"] = tf.reduce_all(
                (conditions >= ranges[:, 0]) & (conditions <= ranges[:, 1]), axis=1)
        return outputs

    def generate(conditions, seed):
        conditions = tf.debugging.check_numerics(conditions, "conditions contain NaN or inf")
        noise = serving_noise(tf.shape(conditions)[0], latent_dim, seed)
        samples = chunked_call(
            lambda c, z: tf.cast(module.sampler([c, z], training=False), tf.float32),
            conditions, noise, chunk)
        if sample_shape is not None:    # the loop's concatenation forgets it
            samples.set_shape([None, *sample_shape])
        return samples

    module.serve = tf.function(
        serve,
        input_signature=[tf.TensorSpec([None, n_conditions], tf.float32, name="conditions"),
                         tf.TensorSpec([], tf.int64, name="seed")])
    if spectrum is not None:
        edges = tf.constant(spectrum.edges, tf.float32)
        log_weights = tf.math.log(tf.constant(spectrum.weights, tf.float32) + 1e-30)

        def sample_spectrum(n, seed):
            key = tf.stack([seed, tf.constant(0xC0DE, tf.int64)])
            n = tf.cast(n, tf.int32)
            bins = tf.random.stateless_categorical(log_weights[None, :], n, seed=key,
                                                   dtype=tf.int32)[0]
            u = tf.random.stateless_uniform(tf.reshape(n, [1]), seed=key + 1)
            low, high = tf.gather(edges, bins), tf.gather(edges, bins + 1)
            column = (low + u * (high - low))[:, None]
            others = tf.zeros(tf.stack([n, n_conditions - 1]), tf.float32)
            index = spectrum.condition_index
            conditions = tf.concat([others[:, :index], column, others[:, index:]], axis=1)
            return {"conditions": conditions, "samples": generate(conditions, seed)}

        module.sample_spectrum = tf.function(
            sample_spectrum, input_signature=[tf.TensorSpec([], tf.int64, name="n"),
                                              tf.TensorSpec([], tf.int64, name="seed")])
    return module


def export_savedmodel(sampler, base_dir, name, version=None, *, latent_dim, n_conditions,
                      spectrum=None, metadata=None, overwrite=False, keras_file=None,
                      chunk=None) -> Path:
    """Write ``base_dir/name/version`` atomically (temporary directory renamed into place).

    Args:
        sampler: Keras model ``[conditions, noise] -> physical samples``.
        version: integer version; default the next free one.
        metadata: JSON-serializable dict stored as ``assets.extra/ddsim_gan.json``.
        overwrite: replace an existing version directory (otherwise ``FileExistsError``).
        keras_file: a ``.keras`` file copied to ``assets.extra/generator.keras``.
        chunk: most events per call of the sampler in the graph (default :func:`serving_chunk`).

    Returns the version directory.
    """
    model_dir = Path(base_dir) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(model_dir) if version is None else int(version)
    target = model_dir / str(version)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass a new version or overwrite=True")
    staging = model_dir / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    ranges = (metadata or {}).get("condition_ranges")
    module = servable_module(sampler, latent_dim, n_conditions, spectrum, ranges,
                             (metadata or {}).get("condition_names"), chunk)
    signatures = {"serving_default": module.serve}
    if spectrum is not None:
        signatures["sample_spectrum"] = module.sample_spectrum
    retired = model_dir / f".old-{version}-{os.getpid()}"
    try:
        tf.saved_model.save(module, str(staging), signatures=signatures)
        extra = staging / "assets.extra"
        extra.mkdir(exist_ok=True)
        (extra / "ddsim_gan.json").write_text(json.dumps(
            {**(metadata or {}), "latent_dim": latent_dim, "n_conditions": n_conditions,
             "spectrum": spectrum.to_dict() if spectrum is not None else None}, indent=1))
        if keras_file is not None:
            shutil.copyfile(keras_file, extra / "generator.keras")
            alone = Path(keras_file).with_name("generator_alone.keras")
            if alone.is_file():     # a resampled sampler's generator, for speed benchmarks
                shutil.copyfile(alone, extra / "generator_alone.keras")
        if target.exists():  # move the old version aside so the swap is two renames
            os.replace(target, retired)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)
    return target


def run_files(path):
    """``(generator.keras path, metadata dict, spectrum dict or None)`` of a recipe's output
    directory (``generator.keras``, ``run.json``, ``spectrum.json``) or of an exported version
    directory (``assets.extra/``: ``generator.keras``, ``ddsim_gan.json``), so a shipped model
    can be exported again or extended. ``FileNotFoundError`` names what is missing."""
    path = Path(path)
    for folder, meta_name in ((path / "assets.extra", "ddsim_gan.json"), (path, "run.json")):
        if (folder / "generator.keras").is_file() and (folder / meta_name).is_file():
            meta = json.loads((folder / meta_name).read_text())
            spectrum = meta.pop("spectrum", None)
            if spectrum is None and (folder / "spectrum.json").is_file():
                spectrum = json.loads((folder / "spectrum.json").read_text())
            for key in ("latent_dim", "n_conditions"):      # the export writes them again
                meta.pop(key, None)
            return folder / "generator.keras", meta, spectrum
    raise FileNotFoundError(
        f"{path}: no generator.keras with run.json (a recipe's output directory: run the "
        "recipe first, or point at it) nor with assets.extra/ddsim_gan.json (an exported "
        "version directory)")


def export_run(run_dir, base_dir, name=None, version=None, *, overwrite=False) -> Path:
    """Export the model a recipe left in ``run_dir`` to ``base_dir/name/version``.

    ``run_dir`` holds ``generator.keras`` (the sampler), ``run.json`` (recipe, detector, units,
    condition names) and, for models with a fitted condition spectrum, ``spectrum.json``; or it
    is an exported version directory, whose serving graph is then traced again with this
    package's code (:func:`run_files`). The ``.keras`` file is copied to
    ``assets.extra/generator.keras`` (TF Serving ignores that folder), so one directory carries
    the serving graph and the backend-independent Keras model (and, for a resampled sampler,
    ``generator_alone.keras``: its generator without the resampling).
    """
    from ..models import load_generator
    from ..models.spectrum import ConditionSpectrum

    keras_file, info, spectrum = run_files(run_dir)
    sampler = load_generator(keras_file)
    conditions_input, noise_input = sampler.inputs
    return export_savedmodel(
        sampler, base_dir, name or info["recipe"], version,
        latent_dim=int(noise_input.shape[-1]), n_conditions=int(conditions_input.shape[-1]),
        spectrum=ConditionSpectrum(**spectrum) if spectrum else None, metadata=info,
        overwrite=overwrite, keras_file=keras_file)


def write_models_config(base_dir, names=None) -> Path:
    """Write ``base_dir/models.config`` (TF Serving's ``--model_config_file``) for ``names``
    (default: every model directory under ``base_dir`` with at least one integer version)."""
    base_dir = Path(base_dir)
    if names is None:
        names = sorted(p.name for p in base_dir.iterdir()
                       if p.is_dir() and any(v.name.isdigit() for v in p.iterdir()))
    entries = "".join(
        f"  config {{\n    name: \"{name}\"\n    base_path: \"/models/{name}\"\n"
        f"    model_platform: \"tensorflow\"\n  }}\n" for name in names)
    path = base_dir / "models.config"
    path.write_text(f"model_config_list {{\n{entries}}}\n")
    return path
