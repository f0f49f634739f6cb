"""tf.data pipelines of ``(conditions, samples)`` float32 batches, from shards or from arrays.

Both builders set ``AutoShardPolicy.DATA`` (a run may have fewer files than workers), so their
datasets go straight into ``strategy.experimental_distribute_dataset``; ``batch_size`` is then the
global batch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from .errors import DataFormatError
from .hdf5 import _check_values, _detector, _inspect, _open, find_shards, shard_info


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def _finish(ds, batch_size, shuffle, seed, repeat, drop_remainder, buffer):
    if shuffle:
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat is True:
        ds = ds.repeat()
    elif repeat:
        ds = ds.repeat(int(repeat))
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def _file_list(files) -> list[Path]:
    if isinstance(files, (str, os.PathLike)):
        return find_shards(files)
    files = [Path(f) for f in files]
    if not files:
        raise DataFormatError("make_dataset: no files given")
    return files


def make_dataset(files, batch_size: int, *, shuffle: bool = True, seed: int | None = None,
                 repeat=False, drop_remainder: bool = True, shuffle_buffer: int = 10_000,
                 chunk_rows: int = 1024, cycle_length: int | None = None,
                 deterministic: bool | None = None, detector=None,
                 validate: bool = True) -> tf.data.Dataset:
    """Stream shards (either layout) as batches of ``(conditions [b, c], samples [b, *shape])``.

    ``files`` is a list of paths, a directory or a glob. Each file is read ``chunk_rows`` rows at a
    time by h5py inside a generator; ``cycle_length`` files (default ``min(n_files, 4)``) are read
    in parallel and interleaved. With ``shuffle`` the file order is shuffled, each file's chunks
    are read in a random order and its rows permuted within pools of about ``shuffle_buffer``
    rows, all seeded by ``seed`` (the same seed gives the same batches) and different every
    epoch. Rows stay in NumPy chunks until ``rebatch`` cuts the batches: no per-row tf.data
    element, which is what makes the pipeline keep up with h5py.
    ``repeat`` is False (one epoch), True (forever) or a number of epochs. ``detector`` reshapes
    flat CaloChallenge voxels; with ``validate`` each chunk is checked for NaN/inf (and negative
    samples where the detector requires it) and a bad row stops iteration with an error naming it.

    The file list is checked up front: every file must be readable and have the same condition
    width and sample shape, else :class:`DataFormatError` names the odd file.
    """
    files = _file_list(files)
    if batch_size < 1 or chunk_rows < 1:
        raise ValueError(f"batch_size and chunk_rows must be >= 1, got {batch_size}, {chunk_rows}")
    infos = [shard_info(path, detector) for path in files]
    width, shape = infos[0]["n_conditions"], tuple(infos[0]["sample_shape"])
    for info in infos[1:]:
        if (info["n_conditions"], tuple(info["sample_shape"])) != (width, shape):
            raise DataFormatError(
                f"{info['path']}: {info['n_conditions']} condition(s) and samples "
                f"{tuple(info['sample_shape'])} per row differ from {files[0]} "
                f"({width} and {shape})")
    det = _detector(detector)
    non_negative = [bool(d.non_negative) if (d := det or _registry(i["detector"])) else False
                    for i in infos]

    pool_chunks = max(1, -(-shuffle_buffer // chunk_rows)) if shuffle else 1

    def read_chunks(path, non_neg, draw):
        """Chunks of one file; with shuffling, chunks are read in a random order and rows are
        permuted within pools of ``pool_chunks`` chunks (NumPy, seeded by ``draw``)."""
        path = Path(path.decode() if isinstance(path, bytes) else path)
        rng = np.random.default_rng(int(draw)) if shuffle else None
        with _open(path) as f:
            cond_name, sample_name = _inspect(f, path)["datasets"]
            cond, samples = f[cond_name], f[sample_name]
            n_rows = len(samples)
            starts = np.arange(0, n_rows, chunk_rows)
            if rng is not None:
                starts = rng.permutation(starts)
            # float32 files are read straight into the pool's buffer: no per-chunk arrays to
            # concatenate, one copy of the data fewer
            direct = cond.dtype == np.float32 and samples.dtype == np.float32
            pool_rows = min(pool_chunks * chunk_rows, n_rows)
            if rng is not None:
                pool_c = np.empty((pool_rows, width), np.float32)
                pool_s = np.empty((pool_rows,) + shape, np.float32)
            filled = 0

            def flush(filled):
                order = rng.permutation(filled)
                for lo in range(0, filled, chunk_rows):
                    keep = order[lo:lo + chunk_rows]
                    yield pool_c[keep], pool_s[keep]         # fancy indexing: new arrays

            for start in starts:
                start, stop = int(start), min(int(start) + chunk_rows, n_rows)
                if rng is not None and filled + stop - start > pool_rows:
                    # the file's short last chunk came early: the pool is full before its
                    # nominal size
                    yield from flush(filled)
                    filled = 0
                if rng is None:
                    c = np.empty((stop - start, width), np.float32)
                    s = np.empty((stop - start,) + shape, np.float32)
                else:
                    c = pool_c[filled:filled + stop - start]
                    s = pool_s[filled:filled + stop - start]
                if direct:      # views of the buffer in the file's row shape
                    cond.read_direct(c.reshape((-1,) + cond.shape[1:]), np.s_[start:stop])
                    samples.read_direct(s.reshape((-1,) + samples.shape[1:]),
                                        np.s_[start:stop])
                else:
                    c[...] = np.asarray(cond[start:stop], np.float32).reshape(-1, width)
                    s[...] = np.asarray(samples[start:stop], np.float32).reshape((-1,) + shape)
                if validate:
                    _check_values(c, f"{path}: dataset {cond_name!r}", row_offset=start)
                    _check_values(s, f"{path}: dataset {sample_name!r}", non_negative=non_neg,
                                  row_offset=start, detector_name=infos[0]["detector"] or "")
                if rng is None:
                    yield c, s
                    continue
                filled += stop - start
                if filled == pool_rows:
                    yield from flush(filled)
                    filled = 0
            if filled:
                yield from flush(filled)

    signature = (tf.TensorSpec((None, width), tf.float32),
                 tf.TensorSpec((None,) + shape, tf.float32))
    ds = tf.data.Dataset.from_tensor_slices(([str(p) for p in files], non_negative))
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if repeat is True:
        ds = ds.repeat()
    elif repeat:
        ds = ds.repeat(int(repeat))
    # one random number per visit of a file: a new, reproducible row order every epoch
    draws = (tf.data.Dataset.random(seed=seed) if shuffle
             else tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).repeat())
    ds = tf.data.Dataset.zip((ds, draws))
    ds = ds.interleave(
        lambda file, draw: tf.data.Dataset.from_generator(
            read_chunks, args=(file[0], file[1], draw), output_signature=signature),
        cycle_length=cycle_length or min(len(files), 4), block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    # rebatch merges and splits chunks into batches without one tf.data element per row
    ds = ds.rebatch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def _registry(name):
    if name is None:
        return None
    try:
        return _detector(name)
    except ValueError:
        return None


def dataset_from_arrays(conditions, samples, batch_size: int, *, shuffle: bool = True,
                        seed: int | None = None, repeat=False,
                        drop_remainder: bool = True) -> tf.data.Dataset:
    """The same batches as :func:`make_dataset` from in-memory arrays (fully shuffled each epoch).

    The arrays become constants of the input graph, so keep them below ~1 GB; stream larger data
    from shards.
    """
    conditions = np.asarray(conditions, dtype=np.float32)
    samples = np.asarray(samples, dtype=np.float32)
    if conditions.ndim == 1:
        conditions = conditions[:, None]
    if conditions.ndim != 2 or len(conditions) != len(samples):
        raise ValueError(f"conditions have shape {conditions.shape} and samples {samples.shape}, "
                         f"expected (N, c) and (N, ...) with the same N")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ds = tf.data.Dataset.from_tensor_slices((conditions, samples))
    return _finish(ds, batch_size, shuffle, seed, repeat, drop_remainder, max(1, len(conditions)))


__all__ = ["dataset_from_arrays", "make_dataset"]
