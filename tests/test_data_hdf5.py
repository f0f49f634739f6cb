"""HDF5 shards: round trips, atomic writing, and an error naming the file for every bad input."""

import json
import os
import tempfile

import h5py
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import ddsim_gan
from ddsim_gan.data import (DataFormatError, ShardWriter, find_shards, read_calochallenge,
                            read_shard, read_shards, shard_info, write_calochallenge, write_shards)
from ddsim_gan.detectors import get
from ddsim_gan.detectors.base import Condition, Detector


class Toy(Detector):
    name = "toy"
    conditions = (Condition("energy", "GeV", 0.0, 10.0), Condition("angle", "deg", 0.0, 90.0))
    sample_shape = (2, 3)
    sample_unit = "MeV"

    def sample_conditions(self, n, seed=None):
        return np.random.default_rng(seed).uniform(0, 1, (n, 2)).astype(np.float32)

    def simulate_at(self, conditions, seed=None):
        rng = np.random.default_rng(seed)
        return rng.exponential(1.0, (len(conditions), 2, 3)).astype(np.float32)


TOY = Toy()


def toy_data(n, seed=0):
    conditions, samples = TOY.simulate(n, seed)
    conditions[:, 0] = np.arange(n)  # a unique id per row
    return conditions, samples


def write_raw(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f.create_dataset(name, data=value)
    return path


# ---- round trips ---------------------------------------------------------------------------------
def test_round_trip_exact_with_attrs(tmp_path):
    conditions, samples = toy_data(50)
    (path,) = write_shards(tmp_path, conditions, samples, TOY)
    assert path.name == "shard-00000-of-00001.h5"
    got_c, got_s = read_shard(path, TOY)
    np.testing.assert_array_equal(got_c, conditions)
    np.testing.assert_array_equal(got_s, samples)
    assert got_c.dtype == got_s.dtype == np.float32
    with h5py.File(path) as f:  # text attributes: fixed-length UTF-8, read by h5py as bytes
        assert f.attrs["detector"].decode() == "toy"
        assert json.loads(f.attrs["condition_names"]) == ["energy", "angle"]
        assert json.loads(f.attrs["units"]) == {"energy": "GeV", "angle": "deg", "samples": "MeV"}
        assert list(f.attrs["sample_shape"]) == [2, 3]
        assert f.attrs["format"].decode() == "ddsim_gan.shard" and f.attrs["format_version"] == 1
        assert f.attrs["ddsim_gan_version"].decode() == ddsim_gan.__version__
        assert f.attrs.get_id("units").dtype.kind == "S"  # no global heap (test_reader_fuzz.py)
        assert f["samples"].chunks[1:] == (2, 3) and f["samples"].compression == "lzf"
    # an unregistered detector name in the attrs: the attrs alone fix the shapes
    np.testing.assert_array_equal(read_shard(path)[1], samples)


def test_uneven_shards_and_info(tmp_path):
    conditions, samples = toy_data(25)
    paths = write_shards(tmp_path, conditions, samples, TOY, shard_size=10, prefix="run")
    assert [p.name for p in paths] == [f"run-{i:05d}-of-00003.h5" for i in range(3)]
    assert [shard_info(p)["n_rows"] for p in paths] == [10, 10, 5]
    assert find_shards(tmp_path) == paths == find_shards(str(tmp_path / "run-*.h5"))
    got_c, got_s = read_shards(tmp_path)
    np.testing.assert_array_equal(got_c, conditions)
    np.testing.assert_array_equal(got_s, samples)
    info = shard_info(paths[0])
    assert info["layout"] == "ddsim_gan" and info["detector"] == "toy"
    assert info["condition_names"] == ["energy", "angle"] and info["sample_shape"] == (2, 3)
    assert info["units"]["angle"] == "deg" and info["file_size"] == paths[0].stat().st_size


def test_darkshine_round_trip(tmp_path):
    conditions, samples = get("darkshine").simulate(64, seed=3)
    write_shards(tmp_path, conditions, samples, "darkshine", shard_size=40)
    got_c, got_s = read_shards(find_shards(tmp_path))
    np.testing.assert_array_equal(got_s, samples)
    assert got_c.shape == (64, 1) and got_s.shape == (64, 20, 20, 11)
    flat = write_raw(tmp_path / "flat.h5", conditions=conditions, samples=samples.reshape(64, -1))
    with pytest.raises(DataFormatError, match=r"flat\.h5: dataset 'samples' has shape \(64, 4400\), "
                                              r"expected \(N, 20, 20, 11\) for detector 'darkshine'"):
        read_shard(flat, "darkshine")


def test_shard_writer_streams(tmp_path):
    conditions, samples = toy_data(23)
    with ShardWriter(tmp_path, TOY, shard_size=10) as writer:
        for start in range(0, 23, 7):
            writer.write(conditions[start:start + 7], samples[start:start + 7])
        assert writer.n_written == 20 and len(writer.paths) == 2
    assert [p.name for p in writer.paths] == ["shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]
    assert writer.n_written == 23
    got_c, got_s = read_shards(writer.paths)
    np.testing.assert_array_equal(got_c, conditions)
    np.testing.assert_array_equal(got_s, samples)


def test_shard_writer_exception_keeps_complete_shards(tmp_path):
    conditions, samples = toy_data(15)
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, TOY, shard_size=10) as writer:
            writer.write(conditions, samples)
            raise RuntimeError("simulation crashed")
    assert sorted(os.listdir(tmp_path)) == ["shard-00000.h5"]
    np.testing.assert_array_equal(read_shard(tmp_path / "shard-00000.h5")[0], conditions[:10])


def test_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    conditions, samples = toy_data(5)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(h5py.Group, "create_dataset", broken)
    with pytest.raises(OSError, match="disk full"):
        write_shards(tmp_path, conditions, samples, TOY)
    assert os.listdir(tmp_path) == []


def test_shard_writer_bad_row_counts_from_stream_start(tmp_path):
    conditions, samples = toy_data(10)
    samples[7, 1, 2] = np.nan
    with ShardWriter(tmp_path, TOY, shard_size=4) as writer:
        writer.write(conditions[:5], samples[:5])
        with pytest.raises(ValueError, match="samples row 7 contains NaN"):
            writer.write(conditions[5:], samples[5:])


def test_overwrite_refused_then_replaces(tmp_path):
    conditions, samples = toy_data(30)
    write_shards(tmp_path, conditions, samples, TOY, shard_size=10)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_shards(tmp_path, conditions, samples, TOY)
    with pytest.raises(FileExistsError):
        ShardWriter(tmp_path, TOY)
    write_shards(tmp_path, conditions, samples, TOY, prefix="other")  # another prefix is fine
    paths = write_shards(tmp_path, conditions[:5], samples[:5], TOY, overwrite=True)
    assert find_shards(tmp_path, prefix="shard") == paths  # the old 3-shard set is gone
    assert len(read_shards(find_shards(tmp_path, prefix="shard"))[0]) == 5


def test_calochallenge_round_trip_and_reshape(tmp_path):
    _, samples = toy_data(12)
    energies = np.linspace(1e3, 1e6, 12, dtype=np.float32)
    path = write_calochallenge(tmp_path / "dataset_1.h5", energies, samples)
    with h5py.File(path) as f:
        assert f["incident_energies"].shape == (12, 1) and f["showers"].shape == (12, 6)
    got_e, got_s = read_calochallenge(path)
    np.testing.assert_array_equal(got_e[:, 0], energies)
    np.testing.assert_array_equal(got_s, samples.reshape(12, 6))
    one = OneCondition()
    got_e, got_s = read_shard(path, one)
    np.testing.assert_array_equal(got_s, samples)
    info = shard_info(path, one)
    assert info["layout"] == "calochallenge" and info["sample_shape"] == (2, 3)
    with pytest.raises(DataFormatError, match=r"dataset_1\.h5: dataset 'showers' has shape \(12, 6\)"):
        read_shard(path, "darkshine")
    with pytest.raises(DataFormatError, match="expected calochallenge"):
        read_calochallenge(write_shards(tmp_path, *toy_data(3), TOY)[0])


class OneCondition(Toy):
    name = "toy1"
    conditions = (Condition("incident_energy", "MeV", 1e3, 1e6),)


# ---- bad inputs: always DataFormatError naming file, dataset and row ---------------------------
def test_nan_and_inf_rows_named(tmp_path):
    conditions, samples = toy_data(6)
    samples[3, 0, 1] = np.nan
    path = write_raw(tmp_path / "run1.h5", conditions=conditions, samples=samples)
    with pytest.raises(DataFormatError, match=r"run1\.h5: dataset 'samples' row 3 contains NaN"):
        read_shard(path, TOY)
    conditions[4, 1] = np.inf
    path = write_raw(tmp_path / "run2.h5", conditions=conditions, samples=samples)
    with pytest.raises(DataFormatError, match=r"run2\.h5: dataset 'conditions' row 4 contains inf"):
        read_shard(path, TOY)
    assert np.isnan(read_shard(path, TOY, validate=False)[1][3, 0, 1])


def test_negative_samples_rejected_for_non_negative_detector(tmp_path):
    conditions, samples = toy_data(6)
    samples[5, 1, 1] = -2.0
    path = write_raw(tmp_path / "neg.h5", conditions=conditions, samples=samples)
    with pytest.raises(DataFormatError, match=r"neg\.h5: dataset 'samples' row 5 contains negative"):
        read_shard(path, TOY)
    with pytest.raises(ValueError, match="samples row 5 contains negative"):
        write_shards(tmp_path / "out", conditions, samples, TOY)
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


@pytest.mark.parametrize("datasets, pattern", [
    ({"conditions": np.zeros((4, 2))}, r"missing dataset 'samples'.*'conditions'"),
    ({"energies": np.zeros((4, 2))}, r"no datasets 'conditions' and 'samples'.*'energies'"),
    ({"conditions": np.zeros((4, 2)), "samples": np.zeros((5, 2, 3))},
     r"dataset 'conditions' has 4 rows but 'samples' has 5"),
    ({"conditions": np.zeros((4, 3)), "samples": np.zeros((4, 2, 3))},
     r"dataset 'conditions' has 3 column\(s\), expected 2 \(energy, angle\) for detector 'toy'"),
    ({"conditions": np.zeros((4, 2)), "samples": np.zeros((4, 3, 2))},
     r"dataset 'samples' has shape \(4, 3, 2\), expected \(N, 2, 3\) for detector 'toy'"),
    ({"conditions": np.zeros((4, 2)), "samples": np.array([[[b"a"] * 3] * 2] * 4)},
     r"dataset 'samples' has dtype .*expected a numeric type"),
    ({"conditions": np.zeros((0, 2)), "samples": np.zeros((0, 2, 3))}, r"datasets .* are empty \(0 rows\)"),
])
def test_structural_errors(tmp_path, datasets, pattern):
    path = write_raw(tmp_path / "bad.h5", **datasets)
    with pytest.raises(DataFormatError, match=r"bad\.h5: " + pattern):
        read_shard(path, TOY)


def test_detector_mismatch(tmp_path):
    (path,) = write_shards(tmp_path, *toy_data(3), TOY)
    with h5py.File(path, "a") as f:  # inconsistent with its own attributes
        f.attrs["condition_names"] = '["energy"]'
    with pytest.raises(DataFormatError, match="2 column.*'condition_names' lists 1"):
        read_shard(path)
    with pytest.raises(DataFormatError, match="written for detector 'toy', but detector 'darkshine'"):
        read_shard(path, "darkshine")


def test_missing_truncated_and_garbage_files(tmp_path):
    with pytest.raises(DataFormatError, match=r"nothere\.h5: no such file"):
        read_shard(tmp_path / "nothere.h5")
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DataFormatError, match=r"garbage\.h5: not an HDF5 file or truncated"):
        read_shard(garbage)
    conditions, samples = toy_data(2000)
    samples[:] = np.random.default_rng(1).exponential(size=samples.shape)  # incompressible
    (path,) = write_shards(tmp_path, conditions, samples, TOY)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match=r"truncated\.h5: "):
        read_shard(truncated, TOY)
    with pytest.raises(DataFormatError, match=r"truncated\.h5: "):
        shard_info(truncated)
    with pytest.raises(DataFormatError, match="no HDF5 files found"):
        find_shards(tmp_path / "empty-*.h5")


def test_write_validation(tmp_path):
    conditions, samples = toy_data(5)
    with pytest.raises(ValueError, match="row counts differ"):
        write_shards(tmp_path, conditions[:4], samples, TOY)
    with pytest.raises(ValueError, match=r"expected \(N, 2, 3\) for detector 'toy'"):
        write_shards(tmp_path, conditions, samples.reshape(5, 6), TOY)
    with pytest.raises(ValueError, match=r"expected \(N, 2\)"):
        write_shards(tmp_path, conditions[:, :1], samples, TOY)
    conditions[2, 0] = np.nan
    with pytest.raises(ValueError, match="conditions row 2 contains NaN"):
        write_shards(tmp_path, conditions, samples, TOY)
    assert os.listdir(tmp_path) == []


# ---- property: any valid arrays survive the round trip ------------------------------------------
finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=25, deadline=None)
@given(data=st.data(), n=st.integers(1, 20), shard_size=st.integers(1, 8))
def test_round_trip_property(data, n, shard_size):
    conditions = data.draw(hnp.arrays(np.float32, (n, 2), elements=finite32))
    samples = data.draw(hnp.arrays(np.float32, (n, 2, 3),
                                   elements=st.floats(0, None, width=32, allow_infinity=False)))
    with tempfile.TemporaryDirectory() as directory:
        paths = write_shards(directory, conditions, samples, TOY, shard_size=shard_size)
        assert len(paths) == -(-n // shard_size)
        got_c, got_s = read_shards(directory, TOY)
    np.testing.assert_array_equal(got_c, conditions)
    np.testing.assert_array_equal(got_s, samples)


def test_corrupt_chunk_raises_data_format_error(tmp_path):
    conditions, samples = toy_data(3000)
    (path,) = write_shards(tmp_path, conditions, samples, TOY, compression="gzip")
    with h5py.File(path) as f:
        chunk = f["samples"].id.get_chunk_info(0)
    data = bytearray(path.read_bytes())
    data[chunk.byte_offset:chunk.byte_offset + chunk.size] = b"\xff" * chunk.size
    path.write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match=r"shard-00000-of-00001\.h5: dataset 'samples' could "
                                              r"not be read"):
        read_shard(path, TOY)
