"""Diverging training: the first NaN/inf stops ``fit`` with a message naming the epoch, the step
and the loss term; the last good checkpoint stays and a rerun resumes from it; a recipe whose
training diverges exits non-zero."""

import re
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, small_compiled_gan
from ddsim_gan.data import dataset_from_arrays
from ddsim_gan.training import ResumableBackup, TrainingDivergedError, fit


small_gan = small_compiled_gan


def poisoned(dataset, at_batch):
    """``dataset`` with NaN samples in batch ``at_batch`` (0-based) only."""
    return dataset.enumerate().map(
        lambda i, batch: (batch[0], batch[1] + tf.where(i == at_batch, np.nan, 0.0)))


def backup_state(path):
    with h5py.File(path, "r") as f:
        position = dict(f[ResumableBackup.GROUP].attrs)
        weights = []
        f["generator"].visititems(lambda name, obj: weights.append(obj[()])
                                  if isinstance(obj, h5py.Dataset) else None)
    return position, weights


def test_nan_loss_names_step_and_term_and_keeps_the_last_good_checkpoint(tmp_path, mini_calo,
                                                                        mini_data):
    gan = small_gan(mini_calo, mini_data)
    clean = dataset_from_arrays(*mini_data, batch_size=64, seed=0, repeat=True)
    with pytest.raises(TrainingDivergedError,
                       match=r"^training diverged at epoch 2, step 2: loss term 'critic_loss' is "
                             r"nan; the last good checkpoint is kept$"):
        fit(gan, poisoned(clean, at_batch=4), epochs=3, steps_per_epoch=3, output_dir=tmp_path,
            checkpoint_every_steps=2, verbose=0)
    assert any(not np.isfinite(w.numpy()).all() for w in gan.critic.weights)  # it did diverge
    checkpoint = tmp_path / "backup" / ResumableBackup.FILE
    position, weights = backup_state(checkpoint)
    assert (position["epoch"], position["batch"], position["step"]) == (1, 1, 4)
    assert weights and all(np.isfinite(w).all() for w in weights)

    # the rerun (here: with the bad batch gone) restores the good weights and finishes
    history = fit(gan, clean, epochs=3, steps_per_epoch=3, output_dir=tmp_path, verbose=0)
    assert history.epoch == [1, 2] and not checkpoint.exists()
    assert all(np.isfinite(w.numpy()).all() for w in gan.weights)


def test_nan_validation_loss_stops_before_the_epoch_checkpoint(tmp_path, mini_calo, mini_data):
    gan = small_gan(mini_calo, mini_data)
    conditions, samples = mini_data
    bad = samples[:64].copy()
    bad[5] = np.inf
    with pytest.raises(TrainingDivergedError, match=r"epoch 1, end of epoch \(validation\): loss "
                                                    r"term 'val_\w+' is (nan|inf)"):
        fit(gan, dataset_from_arrays(*mini_data, batch_size=64, seed=0, repeat=True), epochs=2,
            steps_per_epoch=2, output_dir=tmp_path, verbose=0,
            validation_data=dataset_from_arrays(conditions[:64], bad, 64, shuffle=False))
    assert not (tmp_path / "backup" / ResumableBackup.FILE).exists()


def test_non_finite_weights_are_never_checkpointed(tmp_path, mini_calo, mini_data):
    gan = small_gan(mini_calo, mini_data)
    backup = ResumableBackup(tmp_path / "backup")
    backup.set_model(gan)
    backup.set_params({"steps": 3})
    backup.on_epoch_end(0)
    good = backup_state(backup.path)
    kernel = gan.generator.trainable_weights[0]
    kernel.assign(np.full(kernel.shape, np.inf, np.float32))
    with pytest.raises(TrainingDivergedError, match=rf"at the end of epoch 2: generator weights "
                                                    rf"'{kernel.path}' are not finite"):
        backup.on_epoch_end(1)
    position, weights = backup_state(backup.path)
    assert position["epoch"] == good[0]["epoch"] == 1
    assert all(np.array_equal(a, b) for a, b in zip(weights, good[1]))
    assert [p.name for p in backup.backup_dir.iterdir()] == [ResumableBackup.FILE]


DIVERGING_RECIPE = textwrap.dedent("""
    # The DarkSHINE recipe with NaN samples in training batch 2 (epoch 2, step 1).
    import runpy, sys
    import numpy as np
    import tensorflow as tf
    import ddsim_gan.data
    from ddsim_gan.data import pipeline

    def make_dataset(*args, **kwargs):
        dataset = pipeline.make_dataset(*args, **kwargs)
        if kwargs.get("repeat") is not True:  # validation
            return dataset
        return dataset.enumerate().map(
            lambda i, batch: (batch[0], batch[1] + tf.where(i == 2, np.nan, 0.0)))

    ddsim_gan.data.make_dataset = make_dataset
    sys.argv = [sys.argv[1]] + sys.argv[2:]
    runpy.run_path(sys.argv[0], run_name="__main__")
""")


@pytest.mark.slow
def test_recipe_exits_non_zero_naming_the_step_and_keeps_the_checkpoint(tmp_path):
    script = tmp_path / "diverge.py"
    script.write_text(DIVERGING_RECIPE)
    out = tmp_path / "run"
    completed = subprocess.run(
        [sys.executable, str(script), str(ROOT / "recipes" / "darkshine_nnls_cgan.py"), "--quick",
         "--n-train", "512", "--batch-size", "64", "--epochs", "3", "--steps-per-epoch", "2",
         "--no-jit", "--no-plots", "--output-dir", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert completed.returncode == 1, completed.stdout[-2000:] + completed.stderr[-3000:]
    last = completed.stderr.strip().splitlines()[-1]            # one line, no traceback
    # every loss term is NaN at that step; the guard names the first in the logs' order
    assert re.search(r": training diverged at epoch 2, step 1: loss term '\w+' is nan; the last "
                     r"good checkpoint is kept$", last), last
    assert "Traceback" not in completed.stderr
    position, weights = backup_state(out / "backup" / ResumableBackup.FILE)
    assert (position["epoch"], position["batch"]) == (1, 0)  # end of epoch 1
    assert all(np.isfinite(w).all() for w in weights)
    assert not (out / "generator.keras").exists() and not (out / "model.keras").exists()
