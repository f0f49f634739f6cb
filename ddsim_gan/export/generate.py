"""Generate from an exported SavedModel into HDF5 shards, batch by batch, with a progress bar.

Batch k of a run with seed s is generated with the serving seed ``s * 1_000_003 + k``, so the
output depends only on the seed and the batch size, never on where or how often it ran, nor on
how many replicas of a ``tf.distribute`` strategy shared the batches.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    class tqdm:  # noqa: N801 -- the few calls used here, doing nothing
        def __init__(self, *_, **__):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *_):
            return False

        def update(self, _):
            pass

SEED_STRIDE = 1_000_003


def savedmodel_metadata(model_dir) -> dict:
    """The ``assets.extra/ddsim_gan.json`` written at export (recipe, detector, units...)."""
    path = Path(model_dir) / "assets.extra" / "ddsim_gan.json"
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir}: no assets.extra/ddsim_gan.json; not a ddsim_gan "
                                f"export (see tools/export_savedmodel.py)")
    return json.loads(path.read_text())


def _check_local(strategy) -> None:
    """Refuse strategies whose replicas span several hosts: every host would write the shards."""
    try:
        local = len(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy has no worker_devices: one local replica
        return
    if local != strategy.num_replicas_in_sync:
        raise ValueError(f"{type(strategy).__name__} has {strategy.num_replicas_in_sync} replicas "
                         f"of which {local} on this host; generation writes its shards from one "
                         f"host, so use a single-host strategy (e.g. MirroredStrategy)")


def generate_to_shards(model_dir, output_dir, *, n=None, conditions_file=None, seed=0,
                       batch_size=10_000, shard_size=100_000, overwrite=False,
                       strategy=None) -> list[Path]:
    """Sample ``model_dir`` (a SavedModel version directory) into ``output_dir`` shards.

    Conditions are read from ``conditions_file`` (shards; ``n`` rows at most), or, for a model
    exported with a fitted condition spectrum, ``n`` are drawn from it in the graph.

    ``batch_size`` is the number of rows of one model call. With a ``tf.distribute`` ``strategy``
    (one host: ``MirroredStrategy``, ``OneDeviceStrategy``) the model is loaded under its scope and
    each step hands consecutive batches to its replicas (batch ``t * replicas + r`` to replica
    ``r``); the batches are written in order. Batch k always has serving seed
    ``seed * 1_000_003 + k``, so the noise (and a drawn condition) of event i depends only on
    ``seed``, ``batch_size`` and i: the shards are the same, byte for byte, on one device or on
    several, with or without a strategy.
    """
    import tensorflow as tf

    from ..data import ShardWriter, read_shards

    meta = savedmodel_metadata(model_dir)
    detector = meta["detector"]
    strategy = strategy or tf.distribute.get_strategy()
    _check_local(strategy)
    with strategy.scope():
        model = tf.saved_model.load(str(model_dir))
    if conditions_file is not None:
        conditions, _ = read_shards(conditions_file, detector)
        conditions = conditions[:n] if n else conditions
    elif n is None:
        raise ValueError("give --n (number of samples) or --conditions")
    elif "sample_spectrum" not in model.signatures:
        raise ValueError(f"{model_dir}: the model has no fitted condition spectrum; "
                         f"give --conditions")
    else:
        conditions = None
    total = len(conditions) if conditions is not None else int(n)
    if total < 1 or batch_size < 1:
        raise ValueError(f"need at least one sample and batch_size >= 1 (got {total}, {batch_size})")

    def batch_inputs(k):
        """Inputs of batch k; past the last batch, an empty one (a replica with nothing to do)."""
        start = min(k * batch_size, total)
        rows = min(batch_size, total - start)
        inputs = {"seed": tf.constant(seed * SEED_STRIDE + k, tf.int64),
                  "rows": tf.constant(rows, tf.int64)}
        inputs["conditions"] = (tf.constant(conditions[start:start + rows], tf.float32)
                                if conditions is not None else tf.zeros([0, 1]))  # unused
        return inputs

    def replica_batch(inputs):
        if conditions is None:
            out = model.signatures["sample_spectrum"](n=inputs["rows"], seed=inputs["seed"])
            return out["conditions"], out["samples"]
        out = model.signatures["serving_default"](conditions=inputs["conditions"],
                                                  seed=inputs["seed"])
        return inputs["conditions"], out["samples"]

    @tf.function(reduce_retracing=True)
    def distributed_step(inputs):
        return strategy.run(replica_batch, args=(inputs,))

    replicas = strategy.num_replicas_in_sync
    n_batches = -(-total // batch_size)
    with ShardWriter(output_dir, detector, shard_size=shard_size, overwrite=overwrite) as writer, \
            tqdm(total=total, desc="generating", unit="sample", disable=None) as progress:
        for step in range(-(-n_batches // replicas)):
            first = step * replicas
            inputs = strategy.experimental_distribute_values_from_function(
                lambda context: batch_inputs(first + context.replica_id_in_sync_group))
            batch_conditions, samples = distributed_step(inputs)
            for c, s in zip(strategy.experimental_local_results(batch_conditions),
                            strategy.experimental_local_results(samples)):
                if len(c):
                    writer.write(c.numpy(), s.numpy())
                    progress.update(len(c))
    return writer.paths
