"""tf.data pipelines: every row once per epoch, seeded shuffling, shapes, MirroredStrategy."""

import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import tensorflow as tf

from ddsim_gan.data import (DataFormatError, dataset_from_arrays, make_dataset,
                            write_calochallenge, write_shards)

sys.path.insert(0, str(Path(__file__).parent))
from test_data_hdf5 import TOY, OneCondition, toy_data  # noqa: E402


@pytest.fixture
def shards(tmp_path):
    conditions, samples = toy_data(103)
    return write_shards(tmp_path, conditions, samples, TOY, shard_size=25), conditions, samples


def ids(ds):
    return np.concatenate([c[:, 0].numpy() for c, _ in ds]).astype(int)


def test_every_row_once_per_epoch(shards):
    paths, conditions, samples = shards
    ds = make_dataset(paths, 16, seed=0, drop_remainder=False, chunk_rows=7, shuffle_buffer=30)
    got = ids(ds)
    assert sorted(got) == list(range(103))
    assert list(got) != list(range(103))  # shuffled
    for c, s in ds.take(1):
        np.testing.assert_array_equal(s.numpy(), samples[c[:, 0].numpy().astype(int)])
    unshuffled = make_dataset(paths, 16, shuffle=False, drop_remainder=False, chunk_rows=7,
                              cycle_length=1)
    assert list(ids(unshuffled)) == list(range(103))


@pytest.mark.parametrize("seed", range(4))
def test_a_short_chunk_read_early_does_not_overflow_the_shuffle_pool(shards, seed):
    # 25 rows per file in chunks of 7, 7, 7 and 4, read in a random order into a pool of two
    # chunks (14 rows): after the 4-row chunk the next two no longer fit (a full-length run
    # failed with "Can't broadcast (1024, 6) -> (480, 6)" before the pool was flushed early)
    paths, conditions, samples = shards
    ds = make_dataset(paths, 16, seed=seed, drop_remainder=False, chunk_rows=7,
                      shuffle_buffer=14)
    rows = [(c.numpy(), s.numpy()) for c, s in ds]
    got = np.concatenate([c[:, 0] for c, _ in rows]).astype(int)
    assert sorted(got) == list(range(103))
    for c, s in rows:
        np.testing.assert_array_equal(s, samples[c[:, 0].astype(int)])


def test_batch_shapes_repeat_and_drop_remainder(shards):
    paths, _, _ = shards
    ds = make_dataset(paths[0].parent, 10, seed=1)  # a directory works too
    assert ds.element_spec[0].shape == (10, 2) and ds.element_spec[1].shape == (10, 2, 3)
    assert ds.element_spec[0].dtype == tf.float32
    assert sum(1 for _ in ds) == 10
    two = make_dataset(paths, 10, seed=1, repeat=2, drop_remainder=False)
    assert sorted(ids(two)) == sorted(list(range(103)) * 2)
    forever = make_dataset(paths, 10, seed=1, repeat=True)
    assert sum(1 for _ in forever.take(50)) == 50


def test_seeded_shuffle_is_reproducible(shards):
    paths, _, _ = shards
    first = ids(make_dataset(paths, 8, seed=42, drop_remainder=False, shuffle_buffer=40))
    again = ids(make_dataset(paths, 8, seed=42, drop_remainder=False, shuffle_buffer=40))
    other = ids(make_dataset(paths, 8, seed=43, drop_remainder=False, shuffle_buffer=40))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_inconsistent_files_rejected_up_front(shards, tmp_path):
    paths, conditions, samples = shards
    odd = write_calochallenge(tmp_path / "odd.h5", conditions[:5, 0], samples[:5, :, :2])
    with pytest.raises(DataFormatError, match=r"odd\.h5: 1 condition\(s\) and samples \(4,\)"):
        make_dataset(paths + [odd], 8)
    with pytest.raises(DataFormatError, match=r"nothere\.h5: no such file"):
        make_dataset([tmp_path / "nothere.h5"], 8)


def test_calochallenge_files_reshaped_for_detector(tmp_path):
    _, samples = toy_data(20)
    path = write_calochallenge(tmp_path / "calo.h5", np.arange(20), samples)
    ds = make_dataset([path], 20, shuffle=False, detector=OneCondition())
    c, s = next(iter(ds))
    np.testing.assert_array_equal(s.numpy(), samples)
    np.testing.assert_array_equal(c.numpy()[:, 0], np.arange(20))


def test_bad_row_stops_iteration_with_its_name(tmp_path):
    conditions, samples = toy_data(30)
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["conditions"], f["samples"] = conditions, samples
        f["samples"][12, 0, 0] = np.nan
    ds = make_dataset([tmp_path / "bad.h5"], 4, shuffle=False, detector=TOY, chunk_rows=5)
    with pytest.raises(Exception, match=r"bad\.h5: dataset 'samples' row 12 contains NaN"):
        list(ds)


def test_dataset_from_arrays(shards):
    _, conditions, samples = shards
    ds = dataset_from_arrays(conditions, samples, 16, seed=3, drop_remainder=False)
    first, second = ids(ds), ids(ds)
    assert sorted(first) == sorted(second) == list(range(103))
    assert not np.array_equal(first, second)  # reshuffled each epoch
    np.testing.assert_array_equal(
        first, ids(dataset_from_arrays(conditions, samples, 16, seed=3, drop_remainder=False)))
    ds = dataset_from_arrays(conditions, samples, 16)
    assert ds.element_spec[1].shape == (16, 2, 3) and sum(1 for _ in ds) == 6
    with pytest.raises(ValueError, match="same N"):
        dataset_from_arrays(conditions[:5], samples, 4)


MIRRORED = textwrap.dedent("""
    import sys, numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, "tests")
    from ddsim_gan.data import dataset_from_arrays, make_dataset, write_shards
    from test_data_hdf5 import TOY, toy_data
    conditions, samples = toy_data(64)
    paths = write_shards(sys.argv[1], conditions, samples, TOY, shard_size=30)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2

    @tf.function
    def step(c, s):
        per_replica = strategy.run(lambda c, s: tf.reduce_sum(c[:, 0]) + 0 * tf.reduce_sum(s), (c, s))
        return strategy.reduce("SUM", per_replica, axis=None)

    for ds in (make_dataset(paths, 16, seed=0), dataset_from_arrays(conditions, samples, 16, seed=0)):
        total, rows = 0.0, 0
        for c, s in strategy.experimental_distribute_dataset(ds):
            parts = strategy.experimental_local_results(s)
            assert len(parts) == 2 and all(p.shape == (8, 2, 3) for p in parts), [p.shape for p in parts]
            rows += sum(p.shape[0] for p in parts)
            total += float(step(c, s))
        assert rows == 64 and total == sum(range(64)), (rows, total)
    print("OK")
""")


@pytest.mark.slow
def test_mirrored_strategy_two_cpus(tmp_path):
    result = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path)], capture_output=True,
                            text=True, timeout=120, cwd=Path(__file__).parent.parent)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
