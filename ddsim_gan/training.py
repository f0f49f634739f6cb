"""Running ``fit`` the way a long, preemptible training job needs it.

* :class:`ResumableBackup` checkpoints generator, critic, both optimizers (step counters and
  weight averages included), the random-stream state, the loss trackers and the position in the
  epoch, in one file written atomically; rerunning the same command resumes from it exactly (the
  same weights as a run never interrupted, see :class:`ResumableBackup`).
* :class:`StopOnNonFinite` stops at the first NaN/inf loss with a message naming the step and the
  loss term, *before* anything overwrites the last good checkpoint.
* :class:`TimeLimit` ends training cleanly after a wall-clock budget, and
  :class:`~ddsim_gan.schedules.ScheduleToTimeLimit` ends the learning-rate decay with it.
* :class:`FinalizeAverages` puts the moving-average weights into the networks at the end.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from .schedules import ScheduleToTimeLimit


class TrainingDivergedError(RuntimeError):
    """A loss term became NaN or infinite; the last good checkpoint is kept."""


class StopOnNonFinite(keras.callbacks.Callback):
    """Raise :class:`TrainingDivergedError` naming the step and term of the first non-finite loss.

    Raising (rather than ``stop_training``) skips ``on_train_end``, so :class:`ResumableBackup`
    does not delete the last good checkpoint; placed before it in the callback list, the guard
    also stops the step's checkpoint from being written. The validation losses are checked at
    the end of each epoch.
    """

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, f"step {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):  # the validation losses
        self._check(logs, "end of epoch (validation)")

    def _check(self, logs, where):
        for name, value in (logs or {}).items():
            try:
                value = float(value)
            except (TypeError, ValueError):  # not a number (e.g. a learning-rate schedule)
                continue
            if not math.isfinite(value):
                raise TrainingDivergedError(
                    f"training diverged at epoch {self._epoch + 1}, {where}: "
                    f"loss term {name!r} is {value}; the last good checkpoint is kept")


class FinalizeAverages(keras.callbacks.Callback):
    """At the end of training, copy each optimizer's exponential moving average of the weights
    into the network it trains (optimizers built with ``use_ema=True``).

    Averaging the generator's weights over the last few thousand steps (Yazici et al.,
    arXiv:1806.04498; Karras et al., arXiv:1710.10196) removes much of the step-to-step
    oscillation of adversarial training. ``model.fit`` only finalizes ``model.optimizer``; a GAN
    has one optimizer per network.
    """

    def on_train_end(self, logs=None):
        for network, optimizer in _networks_and_optimizers(self.model):
            if getattr(optimizer, "use_ema", False):
                optimizer.finalize_variable_values(network.trainable_variables)


def _networks_and_optimizers(model):
    pairs = [("generator", "generator_optimizer"), ("critic", "critic_optimizer")]
    return [(getattr(model, net), getattr(model, opt)) for net, opt in pairs
            if getattr(model, opt, None) is not None]


class TimeLimit(keras.callbacks.Callback):
    """Stop training at the end of the first epoch that ends after ``minutes``."""

    def __init__(self, minutes):
        super().__init__()
        self.seconds = float(minutes) * 60
        self.stopped_at_epoch = None

    def on_train_begin(self, logs=None):
        self._start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        if time.monotonic() - self._start > self.seconds:
            self.stopped_at_epoch = epoch + 1
            self.model.stop_training = True


class EpochTiming(keras.callbacks.Callback):
    """Where each epoch's time went, added to the epoch's logs (so to ``History`` and
    TensorBoard): ``epoch_seconds`` (wall time from the epoch's start to its end, validation and
    the callbacks before this one included), ``epoch_train_seconds`` (to the end of its last
    batch), ``epoch_wait_seconds`` (from there to the start of the validation) and
    ``epoch_cpu_per_wall`` (the process's CPU time over the wall time: about the number of
    cores it kept busy).

    A wait between the last batch and the validation is Keras itself; it found a tf.data
    iterator over an h5py generator that took 7-36 s, idle, to be dropped (docs/darkshine_
    nnls_cgan.md, 2026-12-07). Place it first, so that its numbers reach the callbacks after it.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._start = self._last_batch = time.monotonic()
        self._cpu = time.process_time()
        self._validation = None

    def on_train_batch_end(self, batch, logs=None):
        self._last_batch = time.monotonic()

    def on_test_begin(self, logs=None):
        if getattr(self, "_start", None) is not None and self._validation is None:
            self._validation = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        now = time.monotonic()
        wall = max(now - self._start, 1e-9)
        logs.update(epoch_seconds=wall, epoch_train_seconds=self._last_batch - self._start,
                    epoch_wait_seconds=(self._validation - self._last_batch
                                        if self._validation is not None else 0.0),
                    epoch_cpu_per_wall=(time.process_time() - self._cpu) / wall)


class CheckpointError(RuntimeError):
    """A training checkpoint exists but cannot be used to resume (unreadable, or another run's)."""


@dataclass(frozen=True)
class Position:
    """Where a checkpoint was taken: ``batch`` steps done in (0-based) ``epoch``, ``step`` in all."""

    epoch: int
    batch: int
    step: int | None = None
    steps_per_epoch: int | None = None


class ResumableBackup(keras.callbacks.Callback):
    """Save the complete training state atomically; on the next ``fit``, continue from it exactly.

    Replaces :class:`keras.callbacks.BackupAndRestore`, which (Keras 3.15) leaves four holes a
    resumed GAN run falls through:

    * ``save_weights`` does not store the state of ``keras.random.SeedGenerator`` s, so a resumed
      run draws again the latent noise (and gradient-penalty mixing) of its first steps;
    * a checkpoint taken every N steps records the batch but restores only the epoch: the steps
      of that epoch already done are trained a second time;
    * the data stream starts over (``fit`` handles that, :func:`fit`);
    * the weights file is rewritten in place and the position written after it, so a kill during
      or between the two leaves a half-written file, or weights that do not match the position.

    Here one file, ``backup_dir/latest.weights.h5``, holds everything: ``model.save_weights``
    (networks and both optimizers, with step counters and moving averages) plus an HDF5 group
    ``ddsim_gan_resume`` with the position (epoch, batch, global step, steps per epoch), the state of
    every seed generator of the model and the loss trackers' running sums. It is written under a
    temporary name, flushed to disk and renamed over the previous one (``os.replace``), so a kill
    at any moment leaves the previous checkpoint or the new one, never a mix; what an interrupted
    write leaves behind is removed at the next start. Before a save the weights are checked:
    non-finite ones raise :class:`TrainingDivergedError` and the previous checkpoint stays.

    Resuming at ``batch`` > 0 of an epoch, the first ``batch`` steps of that epoch are passed over:
    their batches are drawn and dropped (``model.train_function`` is bypassed for them), and the
    trackers continue from their saved sums, so the epoch's logged losses match too. With
    ``save_every_steps`` None a checkpoint is taken at the end of every epoch (after validation).
    ``delete_at_end`` removes the directory when ``fit`` completes (not when it raises).
    """

    FILE = "latest.weights.h5"
    GROUP = "ddsim_gan_resume"
    _TMP_PREFIX = ".incomplete-"

    def __init__(self, backup_dir, save_every_steps=None, delete_at_end=True):
        super().__init__()
        if save_every_steps is not None and int(save_every_steps) < 1:
            raise ValueError(f"save_every_steps must be None or >= 1, got {save_every_steps}")
        self.backup_dir = Path(backup_dir)
        self.path = self.backup_dir / self.FILE
        self.save_every_steps = int(save_every_steps) if save_every_steps else None
        self.delete_at_end = delete_at_end
        self.resumed_from: Position | None = None
        self._epoch = 0
        self._step = 0  # training steps done since the run began, over all fits
        self._saved_step = 0
        self._restore = None  # (epoch, batch, tracker values) still to apply

    # ---- the file ----------------------------------------------------------------------------
    def saved_position(self) -> Position | None:
        """The position of the checkpoint in ``backup_dir``, or None when there is none."""
        if not self.path.exists():
            return None
        import h5py

        try:
            with h5py.File(self.path, "r") as f:
                if self.GROUP not in f:
                    return self._legacy_position()
                attrs = f[self.GROUP].attrs
                return Position(int(attrs["epoch"]), int(attrs["batch"]), int(attrs["step"]),
                                int(attrs["steps_per_epoch"]))
        except (OSError, KeyError, ValueError) as error:
            raise CheckpointError(self._unusable(error)) from None

    def _legacy_position(self) -> Position:
        """A checkpoint of keras.callbacks.BackupAndRestore: the epoch only."""
        metadata = self.backup_dir / "training_metadata.json"
        epoch = json.loads(metadata.read_text())["epoch"] if metadata.exists() else 0
        return Position(int(epoch), 0)

    def _unusable(self, error) -> str:
        return (f"{self.path}: cannot resume from this checkpoint ({type(error).__name__}: "
                f"{error}); delete {self.backup_dir} to start the run over")

    def mismatch(self, steps_per_epoch) -> str:
        position = self.saved_position()
        return (f"{self.path}: the checkpoint was taken with {position.steps_per_epoch} steps per "
                f"epoch, this run has {steps_per_epoch}; resume with the same settings, or delete "
                f"{self.backup_dir} to start the run over")

    def _rng_variables(self):
        return [v for v in self.model.variables if v.name == "seed_generator_state"]

    def _save(self, epoch: int, batch: int) -> None:
        import h5py

        owners = {id(v): f"{name} " for name in ("generator", "critic")
                  for v in getattr(getattr(self.model, name, None), "weights", ())}
        for variable in self.model.trainable_variables:
            if not np.isfinite(keras.ops.convert_to_numpy(variable)).all():
                where = f"epoch {epoch + 1}, step {batch}" if batch else f"the end of epoch {epoch}"
                raise TrainingDivergedError(
                    f"training diverged at {where}: {owners.get(id(variable), '')}weights "
                    f"{variable.path!r} are not finite; the last good checkpoint is kept")
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.backup_dir / f"{self._TMP_PREFIX}{os.getpid()}.weights.h5"
        try:
            self.model.save_weights(str(tmp), overwrite=True)
            with h5py.File(tmp, "a") as f:
                group = f.create_group(self.GROUP)
                group.attrs.update(epoch=epoch, batch=batch, step=self._step,
                                   steps_per_epoch=int(self.params.get("steps") or 0),
                                   written=time.time())
                for kind, variables in (("rng", self._rng_variables()),
                                        ("trackers", self.model.metrics_variables)):
                    sub = group.create_group(kind)
                    for i, variable in enumerate(variables):
                        data = sub.create_dataset(str(i), data=keras.ops.convert_to_numpy(variable))
                        data.attrs["path"] = variable.path
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_directory(self.backup_dir)
        self._saved_step = self._step

    def _load(self) -> Position | None:
        import h5py

        for leftover in self.backup_dir.glob(f"{self._TMP_PREFIX}*.weights.h5"):
            leftover.unlink(missing_ok=True)  # an interrupted write; never a checkpoint
        position = self.saved_position()
        if position is None:
            return None
        steps = self.params.get("steps")
        if position.steps_per_epoch and steps and position.steps_per_epoch != steps:
            raise CheckpointError(self.mismatch(steps))
        for network, optimizer in _networks_and_optimizers(self.model):
            if not optimizer.built:  # its variables must exist to be loaded
                optimizer.build(network.trainable_variables)
        try:
            self.model.load_weights(str(self.path))
            with h5py.File(self.path, "r") as f:
                group = f.get(self.GROUP)
                trackers = None
                if group is not None:
                    self._assign(group["rng"], self._rng_variables(), "random-stream state")
                    trackers = [group["trackers"][str(i)][()]
                                for i in range(len(group["trackers"]))]
        except CheckpointError:
            raise
        except Exception as error:  # h5py, Keras' loader: the file is not this model's state
            raise CheckpointError(self._unusable(error)) from None
        if group is None:
            print(f"resuming from {self.path} (written by keras.callbacks.BackupAndRestore: "
                  f"epoch {position.epoch + 1} starts over and the random stream is not restored)",
                  flush=True)
        else:
            print(f"resuming from {self.path}: epoch {position.epoch + 1}, after step "
                  f"{position.batch} of it (global step {position.step})", flush=True)
        self._restore = (position.epoch, position.batch, trackers if position.batch else None)
        return position

    def _assign(self, group, variables, what) -> None:
        if len(group) != len(variables):
            raise CheckpointError(
                f"{self.path}: the checkpoint holds {len(group)} {what} variable(s), the model has "
                f"{len(variables)}; delete {self.backup_dir} to start the run over")
        for i, variable in enumerate(variables):
            variable.assign(group[str(i)][()])

    # ---- the callback ------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        position = self._load()
        self.resumed_from = position
        steps = self.params.get("steps") or 0
        self._step = self._saved_step = (
            0 if position is None else position.step if position.step is not None
            else position.epoch * steps)
        # None: start at fit's initial_epoch (Keras keeps _initial_epoch on the model)
        self.model._initial_epoch = position.epoch if position is not None else None
        if position is not None and position.batch > 0:
            self._bypass_steps(position.batch)

    def _bypass_steps(self, n: int) -> None:
        """Let the next ``n`` training steps draw their batches but not train on them."""
        model = self.model
        train_function = model.train_function
        per_call = max(1, int(getattr(model, "steps_per_execution", 1) or 1))
        executions = [-(-n // per_call)]

        def bypass(iterator):
            if executions[0] <= 0:
                model.train_function = train_function
                return train_function(iterator)
            executions[0] -= 1
            if hasattr(iterator, "get_next"):  # TensorFlow: the step reads its own batches
                for _ in range(per_call):
                    next(iterator)
            return {}

        model.train_function = bypass

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self._restore is not None and self._restore[0] == epoch and self._restore[2]:
            for variable, value in zip(self.model.metrics_variables, self._restore[2]):
                variable.assign(value)  # fit reset them just before

    def on_train_batch_end(self, batch, logs=None):
        if self._restore is not None and self._restore[0] == self._epoch:
            if batch < self._restore[1]:
                return  # a bypassed step
        self._step = self._epoch * (self.params.get("steps") or 0) + batch + 1
        if self.save_every_steps and self._step - self._saved_step >= self.save_every_steps:
            self._save(self._epoch, batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        self._restore = None
        if not self.save_every_steps:
            self._save(epoch + 1, 0)

    def on_train_end(self, logs=None):
        if self.delete_at_end and self.backup_dir.exists():
            shutil.rmtree(self.backup_dir)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fit(model, dataset, *, epochs, steps_per_epoch, output_dir, validation_data=None,
        checkpoint_every_steps=None, time_limit_minutes=None, verbose="auto", callbacks=(),
        restore_data_position=True):
    """``model.fit`` with resumable checkpoints, a divergence guard, TensorBoard logs and
    :class:`EpochTiming`'s numbers in each epoch's logs.

    Checkpoints live in ``output_dir/backup`` (every epoch, or every ``checkpoint_every_steps``
    steps; :class:`ResumableBackup`) and are removed when training completes; TensorBoard logs in
    ``output_dir/logs``. Rerun the same call after an interruption and training continues from the
    last checkpoint: for an endless ``tf.data`` stream (``repeat=True``, as the recipes use) the
    batches of the completed epochs are skipped first, so the resumed run sees the batches it
    would have seen and ends with the weights of an uninterrupted run. Skipping reads and drops
    them (about the time the input pipeline took for them, a small part of the training time);
    ``restore_data_position=False`` saves that time, and the resumed run then reads the stream
    from its start again.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    backup = ResumableBackup(output_dir / "backup", save_every_steps=checkpoint_every_steps)
    position = backup.saved_position()
    if position is not None:
        if position.steps_per_epoch and position.steps_per_epoch != steps_per_epoch:
            raise CheckpointError(backup.mismatch(steps_per_epoch))
        if restore_data_position:
            dataset = _skip_batches(dataset, position.epoch * steps_per_epoch)
    guards = [EpochTiming(), StopOnNonFinite(), backup,
              keras.callbacks.TensorBoard(str(output_dir / "logs"), write_graph=False)]
    if time_limit_minutes:
        guards += [ScheduleToTimeLimit(time_limit_minutes), TimeLimit(time_limit_minutes)]
    guards.append(FinalizeAverages())
    return model.fit(dataset, epochs=epochs, steps_per_epoch=steps_per_epoch,
                     validation_data=validation_data, callbacks=[*guards, *callbacks], shuffle=False,
                     verbose=verbose)


def _skip_batches(dataset, n: int):
    """``dataset`` without its first ``n`` batches, where that restores the data position.

    ``fit`` with ``steps_per_epoch`` draws every epoch from one iterator unless the dataset has a
    known, finite length (Keras then starts it over each time it is exhausted), so the position of
    a resumed run is ``n`` batches into an endless (or unknown-length) stream.
    """
    import tensorflow as tf

    if n <= 0:
        return dataset
    if not isinstance(dataset, tf.data.Dataset):
        print(f"resuming: the data position is not restored for input of type "
              f"{type(dataset).__name__} (only for a tf.data.Dataset)", flush=True)
        return dataset
    if int(dataset.cardinality()) >= 0:
        print("resuming: the data position is not restored for a finite dataset", flush=True)
        return dataset
    print(f"resuming: skipping the {n} batches of the completed epochs (the data position)",
          flush=True)
    return dataset.skip(n)
