"""Corrupt bytes in, DataFormatError out: the HDF5 readers and the ROOT converter, fed valid files
with random bytes flipped, overwritten or cut off, either return what they promise or raise
:class:`DataFormatError` (the data layer's one documented error) - never another exception, and
never a hang.

What these properties found, and what was done:

- h5py raised bare ``RuntimeError``/``OSError``/``TypeError``/``ValueError`` for damaged attribute
  and object-header metadata (e.g. "Can't synchronously determine if attribute exists by name
  (ran off end of input buffer while decoding)"); the readers now turn them into
  ``DataFormatError("<file>: corrupt HDF5 file (...)")``.
- One flipped byte in an object size of the global heap that held the variable-length string
  attributes made HDF5 1.14.6 loop forever while reading them; shards are now written with
  fixed-length string attributes, so they hold no global heap.
- A flipped byte in uncompressed (or incompressible) data changed values silently; shards now
  carry Fletcher-32 checksums per chunk, and such a read raises.
"""

import json
import shutil
import tempfile
from pathlib import Path

import awkward as ak
import h5py
import numpy as np
import pytest
import uproot
from hypothesis import given, settings, strategies as st

from ddsim_gan.data import (DataFormatError, convert_root, read_calochallenge, read_shard,
                            read_shards, shard_info, write_calochallenge, write_shards)
from test_data_hdf5 import TOY, OneCondition, toy_data
from test_data_root import Tiny

FUZZ = settings(max_examples=25, deadline=None)


def corruptions(size: int):
    """A way to damage a file of ``size`` bytes: truncate it, flip bytes, or overwrite a run."""
    position = st.integers(0, size - 1)
    return st.one_of(
        st.tuples(st.just("truncate"), st.integers(0, size - 1)),
        st.tuples(st.just("flip"), st.lists(st.tuples(position, st.integers(1, 255)),
                                            min_size=1, max_size=8)),
        st.tuples(st.just("overwrite"), st.tuples(position, st.binary(min_size=1, max_size=64))))


def damage(data: bytes, corruption) -> bytes:
    kind, how = corruption
    if kind == "truncate":
        return data[:how]
    data = bytearray(data)
    if kind == "flip":
        for index, mask in how:
            data[index] ^= mask
    else:
        start, run = how
        data[start:start + len(run)] = run
    return bytes(data)


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory):
    """A ddsim_gan shard (lzf) and a CaloChallenge file (gzip) of 300 rows, as bytes."""
    directory = tmp_path_factory.mktemp("fuzz_valid")
    conditions, samples = toy_data(300)
    (shard,) = write_shards(directory, conditions, samples, TOY)
    calo = write_calochallenge(directory / "calo.h5", np.linspace(1e3, 1e6, 300), samples)
    return {"shard": shard.read_bytes(), "calo": calo.read_bytes()}


def check_arrays(conditions, samples, n_conditions, sample_shape):
    """What a successful read promises: float32 arrays of the expected shapes, finite values."""
    assert conditions.dtype == samples.dtype == np.float32
    assert conditions.shape[1:] == (n_conditions,) and samples.shape[1:] == sample_shape
    assert len(conditions) == len(samples) > 0
    assert np.isfinite(conditions).all() and np.isfinite(samples).all()


def readers(path, layout):
    detector = TOY if layout == "shard" else OneCondition()
    return [
        ("read_shard", lambda: check_arrays(*read_shard(path, detector), detector.n_conditions,
                                             tuple(detector.sample_shape))),
        ("read_shard without detector", lambda: read_shard(path)),
        ("read_calochallenge", lambda: read_calochallenge(path)),
        ("shard_info", lambda: shard_info(path)),
    ]


@FUZZ
@given(data=st.data(), layout=st.sampled_from(["shard", "calo"]))
def test_hdf5_readers_raise_only_data_format_error(valid_files, data, layout):
    original = valid_files[layout]
    corrupt = damage(original, data.draw(corruptions(len(original))))
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "damaged.h5"
        path.write_bytes(corrupt)
        for name, read in readers(path, layout):
            try:
                read()
            except DataFormatError as error:
                assert str(error).startswith(f"{path}: "), (name, str(error))


def test_a_shard_has_no_global_heap_and_checksummed_chunks(valid_files, tmp_path):
    """The two write-side fixes above, pinned."""
    assert b"GCOL" not in valid_files["shard"]
    conditions, samples = toy_data(50)
    (path,) = write_shards(tmp_path, conditions, samples, TOY, compression=None)
    with h5py.File(path) as f:
        assert f["samples"].fletcher32 and f["conditions"].fletcher32
        offset = f["samples"].id.get_chunk_info(0).byte_offset
    data = bytearray(path.read_bytes())
    data[offset + 8] ^= 0x01  # one bit of one stored value
    path.write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match=r"dataset 'samples' could not be read .*failed its "
                                              r"checksum or decompression: the file is corrupt"):
        read_shard(path, TOY)


def test_old_shards_with_variable_length_string_attributes_still_read(tmp_path):
    conditions, samples = toy_data(5)
    (path,) = write_shards(tmp_path, conditions, samples, TOY)
    with h5py.File(path, "a") as f:  # as written before: variable-length strings
        for key in ("detector", "condition_names", "units", "format", "ddsim_gan_version"):
            value = f.attrs[key].decode()
            del f.attrs[key]
            f.attrs[key] = value
    assert h5py.File(path).attrs.get_id("units").dtype.kind == "O"
    np.testing.assert_array_equal(read_shard(path)[1], samples)
    assert shard_info(path)["condition_names"] == ["energy", "angle"]


# ---- ROOT ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def valid_root(tmp_path_factory):
    """60 entries of Tiny: a condition, dense samples (float[6]) and sparse hits, zlib baskets."""
    rng = np.random.default_rng(0)
    n = 60
    counts = rng.integers(0, 4, n)
    path = tmp_path_factory.mktemp("fuzz_root") / "valid.root"
    with uproot.recreate(path) as f:
        f.mktree("events", {
            "E": rng.uniform(1.0, 100.0, n),
            "cells": rng.exponential(1.0, (n, 6)).astype(np.float32),
            "cell": ak.unflatten(rng.integers(0, 6, counts.sum()).astype(np.int32), counts),
            "edep": ak.unflatten(rng.exponential(1.0, counts.sum()), counts)})
    return path.read_bytes()


SAMPLES = {"dense": {"samples": "cells"},
           "sparse": {"sample_index": "cell", "sample_energy": "edep"}}


@FUZZ
@given(data=st.data(), layout=st.sampled_from(sorted(SAMPLES)),
       conditions=st.sampled_from([["E"], {"E": "E * 1"}]))
def test_root_converter_raises_only_data_format_error(valid_root, data, layout, conditions):
    corrupt = damage(valid_root, data.draw(corruptions(len(valid_root))))
    directory = Path(tempfile.mkdtemp())
    try:
        path, out = directory / "damaged.root", directory / "out"
        path.write_bytes(corrupt)
        try:
            shards = convert_root(path, out, Tiny(), tree="events", conditions=conditions,
                                  step_size=17, shard_size=25, progress=False, **SAMPLES[layout])
        except DataFormatError as error:
            assert str(error).startswith(f"{path}"), str(error)
            assert not list(out.glob("*.h5"))  # no partial set left behind
        else:
            got_c, got_s = read_shards(shards, Tiny())
            check_arrays(got_c, got_s, 1, (2, 3))
            assert len(got_c) <= 60 and (got_s >= 0).all()
    finally:
        shutil.rmtree(directory)


def test_the_valid_files_convert_and_read(valid_files, valid_root, tmp_path):
    """The fuzzed inputs are valid before damage (else the properties test nothing)."""
    for layout in valid_files:
        path = tmp_path / f"{layout}.h5"
        path.write_bytes(valid_files[layout])
        for name, read in readers(path, layout):
            if (layout, name) == ("shard", "read_calochallenge"):
                with pytest.raises(DataFormatError, match="expected calochallenge"):
                    read()
            else:
                read()
    path = tmp_path / "valid.root"
    path.write_bytes(valid_root)
    for layout in SAMPLES:
        shards = convert_root(path, tmp_path / layout, Tiny(), tree="events", conditions=["E"],
                              progress=False, **SAMPLES[layout])
        assert len(read_shards(shards, Tiny())[0]) == 60
    assert json.loads(h5py.File(shards[0]).attrs["condition_names"]) == ["E"]


def test_a_double_beyond_float32_is_named_not_called_inf(tmp_path):
    """Found by the ROOT property: a damaged double became inf in the float32 cast, and the error
    said "contains inf" about a file that holds no inf."""
    conditions, samples = toy_data(4)
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        f["conditions"] = conditions.astype(np.float64)
        f["conditions"][2, 1] = 1e300
        f["samples"] = samples
    with pytest.raises(DataFormatError, match=r"dataset 'conditions' row 2 contains value 1e\+300 "
                                              r"\(beyond the float32 range\)"):
        read_shard(path, TOY)
    hits = tmp_path / "hits.root"
    with uproot.recreate(hits) as f:
        f.mktree("events", {"E": np.full(3, 10.0), "cell": ak.Array([[0], [1, 2], [3]]),
                            "edep": ak.Array([[1.0], [1.0, -1e300], [1.0]])})
    with pytest.raises(DataFormatError, match=r"branch 'edep' entry 1 contains value -1e\+300 "
                                              r"\(beyond the float32 range\)"):
        convert_root(hits, tmp_path / "out", Tiny(), tree="events", conditions=["E"],
                     sample_index="cell", sample_energy="edep", progress=False)
