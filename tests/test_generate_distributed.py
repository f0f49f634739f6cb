"""Generation into shards across the replicas of a tf.distribute strategy: batch k keeps its
serving seed wherever it runs, so one replica, two replicas and no strategy write the same bytes."""

import subprocess
import sys
import textwrap
from types import SimpleNamespace

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from ddsim_gan.data import read_shards, write_shards
from ddsim_gan.export.generate import SEED_STRIDE, generate_to_shards
from ddsim_gan.export.savedmodel import export_savedmodel
from ddsim_gan.models.spectrum import ConditionSpectrum

N, BATCH, SHARD, SEED = 250, 40, 100, 3      # 7 batches (the last has 10 rows) in 3 shards


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """A DarkSHINE-shaped sampler (one dense layer) exported with a condition spectrum, and a
    conditions file to generate at."""
    base = tmp_path_factory.mktemp("tiny_export")
    keras.utils.set_random_seed(0)
    conditions = keras.Input((1,), name="conditions")
    noise = keras.Input((4,), name="noise")
    hidden = keras.layers.Concatenate()([conditions * 1e-3, noise])
    cells = keras.layers.Dense(20 * 20 * 11, activation="relu")(hidden)
    sampler = keras.Model([conditions, noise], keras.layers.Reshape((20, 20, 11))(cells))
    spectrum = ConditionSpectrum([200.0, 1000.0, 8000.0], [0.3, 0.7])
    model_dir = export_savedmodel(sampler, base / "models", "tiny", 1, latent_dim=4,
                                  n_conditions=1, spectrum=spectrum,
                                  metadata={"detector": "darkshine"})
    at = np.random.default_rng(1).uniform(200, 8000, (N, 1)).astype(np.float32)
    write_shards(base / "at", at, np.zeros((N, 20, 20, 11), np.float32), "darkshine",
                 shard_size=N)
    return model_dir, base / "at"


def test_batch_k_uses_the_documented_serving_seed(tiny_export, tmp_path):
    model_dir, at = tiny_export
    paths = generate_to_shards(model_dir, tmp_path / "out", conditions_file=at, seed=SEED,
                               batch_size=BATCH, shard_size=SHARD)
    assert [h5py.File(p, "r")["samples"].shape[0] for p in paths] == [100, 100, 50]
    conditions, samples = read_shards(tmp_path / "out")
    np.testing.assert_array_equal(conditions, read_shards(at)[0])
    serve = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    for k in (0, 6):                                              # a full and the last batch
        rows = slice(k * BATCH, min((k + 1) * BATCH, N))
        expected = serve(conditions=tf.constant(conditions[rows]),
                         seed=tf.constant(SEED * SEED_STRIDE + k, tf.int64))["samples"]
        np.testing.assert_array_equal(samples[rows], expected.numpy())


def test_a_strategy_spanning_several_hosts_is_refused(tiny_export, tmp_path):
    model_dir, at = tiny_export
    two_hosts = SimpleNamespace(num_replicas_in_sync=2,
                                extended=SimpleNamespace(worker_devices=("/cpu:0",)))
    with pytest.raises(ValueError, match="1 on this host"):
        generate_to_shards(model_dir, tmp_path / "out", conditions_file=at, strategy=two_hosts)


SCRIPT = textwrap.dedent("""
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from ddsim_gan.export.generate import generate_to_shards

    model_dir, at, out = sys.argv[1:4]
    runs = {"none": None, "one": tf.distribute.MirroredStrategy(["/cpu:0"]),
            "two": tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])}
    for name, strategy in runs.items():
        generate_to_shards(model_dir, f"{out}/spectrum-{name}", n=%(n)d, seed=%(seed)d,
                           batch_size=%(batch)d, shard_size=%(shard)d, strategy=strategy)
        generate_to_shards(model_dir, f"{out}/at-{name}", conditions_file=at, seed=%(seed)d,
                           batch_size=%(batch)d, shard_size=%(shard)d, strategy=strategy)
    generate_to_shards(model_dir, f"{out}/spectrum-two-seed", n=%(n)d, seed=%(seed)d + 1,
                       batch_size=%(batch)d, shard_size=%(shard)d, strategy=runs["two"])
""" % {"n": N, "seed": SEED, "batch": BATCH, "shard": SHARD})


@pytest.mark.slow
def test_one_and_two_replicas_write_the_same_shards(tiny_export, tmp_path):
    """Two logical CPU devices must be configured before TensorFlow initializes its devices, so
    the strategies run in a fresh interpreter."""
    model_dir, at = tiny_export
    script = tmp_path / "generate.py"
    script.write_text(SCRIPT)
    completed = subprocess.run([sys.executable, str(script), str(model_dir), str(at),
                                str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-4000:]
    for mode in ("spectrum", "at"):
        files = {name: sorted((tmp_path / f"{mode}-{name}").glob("*.h5"))
                 for name in ("none", "one", "two")}
        assert [len(f) for f in files.values()] == [3, 3, 3]
        reference = read_shards(files["none"])
        assert reference[1].shape == (N, 20, 20, 11) and reference[1].any()
        for name in ("one", "two"):
            for a, b in zip(reference, read_shards(files[name])):
                np.testing.assert_array_equal(a, b)
    spectrum_conditions, spectrum_samples = read_shards(tmp_path / "spectrum-two")
    assert 200 <= spectrum_conditions.min() and spectrum_conditions.max() <= 8000
    assert not np.array_equal(spectrum_samples, read_shards(tmp_path / "spectrum-two-seed")[1])
