"""Resuming after SIGKILL: the run continues from its last checkpoint and ends where an
uninterrupted run ends.

tests/resume_worker.py trains the tiny GAN of conftest.py through ``training.fit`` as a recipe does
(shards streamed by ``make_dataset``, cosine-decay Adam with weight averaging, validation every
epoch; 4 epochs of 6 steps, a checkpoint every 4 steps, so most checkpoints fall mid-epoch).

Tolerance: a resumed run restores everything the trajectory depends on (weights, both optimizers
with their step counters and averages, the seed generator's state, the data position, the step in
the epoch), so it performs the same float operations as the uninterrupted run and, on this CPU,
ends with bitwise-identical weights. ``ATOL`` = 1e-6 leaves room only for reduction-order noise;
leaving out any one of those pieces (the data position or the random stream: measured when this
test was written) moves the final weights by about 5e-3 (weights are of order 0.4).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import small_compiled_gan
from ddsim_gan.data import dataset_from_arrays, write_shards
from ddsim_gan.training import CheckpointError, ResumableBackup, fit

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("resume_worker.py")
STEPS, EVERY = 6, 4  # as in resume_worker.py
ATOL = 1e-6
RESUMED = re.compile(r"resuming from .*: epoch (\d+), after step (\d+) of it \(global step (\d+)\)")


def run_worker(data_dir, out, *options, timeout=240):
    return subprocess.run([sys.executable, str(WORKER), str(data_dir), str(out), *options],
                          capture_output=True, text=True, timeout=timeout)


def assert_ok(completed):
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, mini_calo):
    directory = tmp_path_factory.mktemp("resume_data")
    conditions, samples = mini_calo.simulate(512, seed=0)
    write_shards(directory, conditions, samples, mini_calo, shard_size=256)  # two shards
    return directory


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("uninterrupted")
    assert_ok(run_worker(data_dir, out))
    return out


def final_weights(out):
    with np.load(out / "final.npz") as f:
        return {k: f[k] for k in f.files}


def assert_same_run(resumed_dir, reference_dir):
    """Same final weights, and the epochs the resumed process trained logged the same losses."""
    got, want = final_weights(resumed_dir), final_weights(reference_dir)
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=ATOL, err_msg=key)
    history = json.loads((resumed_dir / "history.json").read_text())
    reference = json.loads((reference_dir / "history.json").read_text())
    first = history["epochs"][0]
    assert history["epochs"] == list(range(first, 4))
    np.testing.assert_allclose(history["generator_loss"], reference["generator_loss"][first:],
                               rtol=0, atol=ATOL)
    assert not (resumed_dir / "backup").exists()  # removed once training completed


def resumed_position(stdout):
    match = RESUMED.search(stdout)
    assert match, stdout[-2000:]
    epoch, batch, step = map(int, match.groups())
    assert step == (epoch - 1) * STEPS + batch
    return step


def last_step(out):
    lines = (out / "progress.txt").read_text().split()
    return int(lines[-1]) if lines else 0


def test_sigkill_mid_epoch_resumes_from_the_last_checkpoint(tmp_path, data_dir, uninterrupted):
    out = tmp_path / "run"
    out.mkdir()
    worker = subprocess.Popen([sys.executable, str(WORKER), str(data_dir), str(out),
                               "--step-delay", "0.25"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        # wait for a step between two checkpoints, mid-epoch, after the first epoch (so that
        # resuming also has to skip the completed epoch's batches)
        while not ((out / "backup" / ResumableBackup.FILE).exists() and last_step(out) > STEPS
                   and last_step(out) % EVERY == 1 and last_step(out) % STEPS != 0):
            assert worker.poll() is None, "the worker ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint within 3 minutes"
            time.sleep(0.02)
        worker.send_signal(signal.SIGKILL)
        assert worker.wait(timeout=30) == -signal.SIGKILL
    finally:
        if worker.poll() is None:
            worker.kill()
    killed_after = last_step(out)
    assert 0 < killed_after < 4 * STEPS and not (out / "final.npz").exists()

    resumed = run_worker(data_dir, out)
    assert_ok(resumed)
    step = resumed_position(resumed.stdout)
    assert step % EVERY == 0 and killed_after - EVERY < step <= killed_after + 1
    assert step > STEPS and f"skipping the {step // STEPS * STEPS} batches" in resumed.stdout
    assert_same_run(out, uninterrupted)


def test_sigkill_while_writing_a_checkpoint_resumes_from_the_previous_one(tmp_path, data_dir,
                                                                          uninterrupted):
    out = tmp_path / "run"
    killed = run_worker(data_dir, out, "--kill-while-saving", "2")  # at step 8, half written
    assert killed.returncode == -signal.SIGKILL
    leftovers = [p.name for p in (out / "backup").iterdir()]
    assert ResumableBackup.FILE in leftovers and any(n.startswith(".incomplete-") for n in leftovers)

    resumed = run_worker(data_dir, out)
    assert_ok(resumed)
    assert resumed_position(resumed.stdout) == EVERY  # the first checkpoint, not the torn one
    assert_same_run(out, uninterrupted)


# ---- in-process: what cannot be resumed says so ----------------------------------------------
def small_gan(mini_calo, mini_data):
    conditions, samples = mini_data
    return (small_compiled_gan(mini_calo, mini_data),
            dataset_from_arrays(conditions, samples, 64, seed=0, repeat=True))


def test_unusable_checkpoints_are_refused_with_the_file_named(tmp_path, mini_calo, mini_data):
    gan, dataset = small_gan(mini_calo, mini_data)
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / ResumableBackup.FILE).write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(2000))
    with pytest.raises(CheckpointError, match=r"backup/latest\.weights\.h5: cannot resume from "
                                              r"this checkpoint .*delete .*backup to start"):
        fit(gan, dataset, epochs=1, steps_per_epoch=2, output_dir=tmp_path, verbose=0)

    (backup / ResumableBackup.FILE).unlink()
    with pytest.raises(KeyboardInterrupt):  # a checkpoint after step 2, then an interruption
        fit(gan, dataset, epochs=2, steps_per_epoch=3, output_dir=tmp_path, verbose=0,
            checkpoint_every_steps=2, callbacks=[Interrupt(at_batch=2)])
    with pytest.raises(CheckpointError, match=r"taken with 3 steps per epoch, this run has 4"):
        fit(gan, dataset, epochs=2, steps_per_epoch=4, output_dir=tmp_path, verbose=0)
    history = fit(gan, dataset, epochs=2, steps_per_epoch=3, output_dir=tmp_path, verbose=0)
    assert history.epoch == [0, 1] and not backup.exists()


class Interrupt(keras.callbacks.Callback):
    def __init__(self, at_batch):
        super().__init__()
        self.at_batch = at_batch

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.at_batch:
            raise KeyboardInterrupt
