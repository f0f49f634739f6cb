"""Generate from an exported SavedModel into HDF5 shards, batch by batch, with a progress bar.

Batch k of a run with seed s is generated with the serving seed ``s * 1_000_003 + k``, so the
output depends only on the seed and the batch size, never on where or how often it ran.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    def tqdm(iterable, **_):
        return iterable

SEED_STRIDE = 1_000_003


def savedmodel_metadata(model_dir) -> dict:
    """The ``assets.extra/ddsim_gan.json`` written at export (recipe, detector, units...)."""
    path = Path(model_dir) / "assets.extra" / "ddsim_gan.json"
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir}: no assets.extra/ddsim_gan.json; not a ddsim_gan "
                                f"export (see tools/export_savedmodel.py)")
    return json.loads(path.read_text())


def generate_to_shards(model_dir, output_dir, *, n=None, conditions_file=None, seed=0,
                       batch_size=10_000, shard_size=100_000, overwrite=False) -> list[Path]:
    """Sample ``model_dir`` (a SavedModel version directory) into ``output_dir`` shards.

    Conditions are read from ``conditions_file`` (shards; ``n`` rows at most), or, for a model
    exported with a fitted condition spectrum, ``n`` are drawn from it in the graph.
    """
    import tensorflow as tf

    from ..data import ShardWriter, read_shards

    meta = savedmodel_metadata(model_dir)
    detector = meta["detector"]
    model = tf.saved_model.load(str(model_dir))
    serve = model.signatures["serving_default"]
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
    with ShardWriter(output_dir, detector, shard_size=shard_size, overwrite=overwrite) as writer:
        for k, start in enumerate(tqdm(range(0, total, batch_size), desc="generating",
                                       unit="batch", disable=None)):
            rows = min(batch_size, total - start)
            batch_seed = tf.constant(seed * SEED_STRIDE + k, tf.int64)
            if conditions is None:
                out = model.signatures["sample_spectrum"](n=tf.constant(rows, tf.int64),
                                                          seed=batch_seed)
                batch_conditions = out["conditions"].numpy()
            else:
                batch_conditions = conditions[start:start + rows]
                out = serve(conditions=tf.constant(batch_conditions, tf.float32), seed=batch_seed)
            writer.write(batch_conditions, np.asarray(out["samples"]))
    return writer.paths
