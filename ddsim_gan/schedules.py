"""Learning-rate schedules that end when a time-limited training run does.

A run given a wall-clock budget (``fit(time_limit_minutes=...)``, the recipes' full modes) stops
wherever the budget runs out; a cosine decay planned over the preset's epochs is then cut off
part-way, at a rate several times its floor, and the last epochs, which should refine, still
take large steps. DarkSHINE's full mode on a slow day ran 28 of its 40 planned epochs and
stopped at 0.29 of the initial rate instead of 0.1. :class:`ShortenableCosineDecay` keeps its
length in a variable; :class:`ScheduleToTimeLimit` measures the epochs as they go and shortens
every such schedule of the model to the steps the budget will allow.
"""

from __future__ import annotations

import math
import time

import keras
import numpy as np

_PACKAGE = "ddsim_gan"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ShortenableCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Cosine decay (I. Loshchilov, F. Hutter, arXiv:1608.03983, without restarts; the same
    curve as ``keras.optimizers.schedules.CosineDecay``) whose length can be cut during training:

        lr(t) = lr_0 ((1 - alpha) (1 + cos(pi min(t, T) / T)) / 2 + alpha),   T = f * decay_steps

    ``decay_steps`` is the planned length in the optimizer's own steps (a critic updated four
    times per training step counts four); the fraction f (1 at the start) lives in a variable,
    so :class:`ScheduleToTimeLimit` can change it between epochs without retracing the step.
    """

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name=None):
        if not decay_steps > 0:
            raise ValueError(f"decay_steps must be positive, got {decay_steps}")
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = int(decay_steps)
        self.alpha = float(alpha)
        self.name = name
        self.length_fraction = keras.Variable(1.0, dtype="float32", trainable=False,
                                              name="length_fraction")

    def __call__(self, step):
        from keras import ops

        length = ops.maximum(self.length_fraction * float(self.decay_steps), 1.0)
        progress = ops.minimum(ops.cast(step, "float32"), length) / length
        cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
        return self.initial_learning_rate * ((1.0 - self.alpha) * cosine + self.alpha)

    def shorten_to(self, fraction: float) -> None:
        """Let the decay end after ``fraction`` (in (0, 1]) of the planned steps."""
        self.length_fraction.assign(float(min(max(fraction, 1e-6), 1.0)))

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "alpha": self.alpha, "name": self.name}


def shortenable_schedules(model) -> list[ShortenableCosineDecay]:
    """The :class:`ShortenableCosineDecay` schedules of every optimizer the model holds."""
    schedules = []
    for value in vars(model).values():
        if isinstance(value, keras.optimizers.Optimizer):
            optimizer = getattr(value, "inner_optimizer", value)   # under loss scaling
            schedule = getattr(optimizer, "_learning_rate", None)
            if isinstance(schedule, ShortenableCosineDecay) and schedule not in schedules:
                schedules.append(schedule)
    return schedules


class ScheduleToTimeLimit(keras.callbacks.Callback):
    """After each epoch, shorten the model's :class:`ShortenableCosineDecay` schedules so their
    decay ends with the last epoch that :class:`~ddsim_gan.training.TimeLimit` (stopping at the
    end of the first epoch that ends after ``minutes``) will let run.

    An epoch's length is the median of those measured in this process after the first (which
    also traces the step); until there are two, the first. The projection is redone every
    epoch, so a machine that slows down or speeds up moves the end of the decay with it; it
    never lengthens a schedule beyond its plan. A resumed run gets a new limit, as
    :class:`~ddsim_gan.training.TimeLimit` does, and its first epoch follows the planned
    schedule until the first projection.
    """

    def __init__(self, minutes):
        super().__init__()
        self.seconds = float(minutes) * 60
        self.projected_epochs = None

    def on_train_begin(self, logs=None):
        self._start = self._last = time.monotonic()
        self._durations = []

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        self._durations.append(now - self._last)
        self._last = now
        planned = self.params["epochs"]
        measured = self._durations[1:] or self._durations
        per_epoch = float(np.median(measured))
        left = self.seconds - (now - self._start)
        further = math.ceil(left / per_epoch) if left > 0 else 0
        self.projected_epochs = min(planned, epoch + 1 + further)
        for schedule in shortenable_schedules(self.model):
            schedule.shorten_to(self.projected_epochs / planned)
