"""Running ``fit`` the way a long, preemptible training job needs it.

* :class:`keras.callbacks.BackupAndRestore` checkpoints generator, critic, both optimizers, the
  random-stream state and the epoch position; rerunning the same command resumes from it.
* :class:`StopOnNonFinite` stops at the first NaN/inf loss with a message naming the step and the
  loss term, *before* anything overwrites the last good checkpoint.
* :class:`TimeLimit` ends training cleanly after a wall-clock budget.
* :class:`FinalizeAverages` puts the moving-average weights into the networks at the end.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras


class TrainingDivergedError(RuntimeError):
    """A loss term became NaN or infinite; the last good checkpoint is kept."""


class StopOnNonFinite(keras.callbacks.Callback):
    """Raise :class:`TrainingDivergedError` naming the step and term of the first non-finite loss.

    Raising (rather than ``stop_training``) skips ``on_train_end``, so BackupAndRestore does not
    delete or overwrite the last good checkpoint.
    """

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        for name, value in (logs or {}).items():
            value = float(value)
            if not math.isfinite(value):
                raise TrainingDivergedError(
                    f"training diverged at epoch {self._epoch + 1}, step {batch + 1}: "
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


def fit(model, dataset, *, epochs, steps_per_epoch, output_dir, validation_data=None,
        checkpoint_every_steps=None, time_limit_minutes=None, verbose="auto", callbacks=()):
    """``model.fit`` with resumable checkpoints, a divergence guard and TensorBoard logs.

    Checkpoints live in ``output_dir/backup`` (every epoch, or every ``checkpoint_every_steps``
    steps) and are removed when training completes; TensorBoard logs in ``output_dir/logs``.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    guards = [StopOnNonFinite(),
              keras.callbacks.BackupAndRestore(str(output_dir / "backup"),
                                               save_freq=checkpoint_every_steps or "epoch"),
              keras.callbacks.TensorBoard(str(output_dir / "logs"), write_graph=False)]
    if time_limit_minutes:
        guards.append(TimeLimit(time_limit_minutes))
    guards.append(FinalizeAverages())
    return model.fit(dataset, epochs=epochs, steps_per_epoch=steps_per_epoch,
                     validation_data=validation_data, callbacks=[*guards, *callbacks], shuffle=False,
                     verbose=verbose)
