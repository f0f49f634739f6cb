"""Data in and out: HDF5 shards (ours and the CaloChallenge layout) and tf.data pipelines.

- :func:`write_shards`, :class:`ShardWriter`: validated, atomically written shards;
- :func:`read_shard`, :func:`read_shards`, :func:`find_shards`, :func:`shard_info`;
- :func:`write_calochallenge`, :func:`read_calochallenge`;
- :func:`convert_root`: Geant4 ROOT ntuples (read with uproot) to shards;
- :func:`make_dataset`, :func:`dataset_from_arrays`: ``(conditions, samples)`` batches for training.

Every problem with an input file raises :class:`DataFormatError`. The pipeline builders import
TensorFlow and the ROOT reader uproot, so they are loaded on first use: reading a shard's metadata
stays cheap.
"""

from __future__ import annotations

from .errors import DataFormatError
from .hdf5 import (ShardWriter, find_shards, read_calochallenge, read_shard, read_shards,
                   shard_info, write_calochallenge, write_shards)

_PIPELINE = ("make_dataset", "dataset_from_arrays")
_ROOT = ("convert_root",)


def __getattr__(name):
    if name in _PIPELINE:
        from . import pipeline
        return getattr(pipeline, name)
    if name in _ROOT:
        from . import root
        return getattr(root, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DataFormatError", "ShardWriter", "convert_root", "dataset_from_arrays", "find_shards",
           "make_dataset", "read_calochallenge", "read_shard", "read_shards", "shard_info",
           "write_calochallenge", "write_shards"]
