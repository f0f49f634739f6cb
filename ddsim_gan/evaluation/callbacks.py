"""Physics metrics during training, and keeping the generator with the best of them.

The losses of a Wasserstein GAN say little about which epoch generates the best showers. ATLAS
FastCaloGAN therefore picks its checkpoint by a χ² of physics distributions, not by loss;
:class:`MetricMonitor` does the same with the cheap metrics of :mod:`.metrics` (W1/σ, binned
KL, separation power, KS of the shower observables): every ``every`` epochs it generates at fixed
validation conditions with fixed noise, adds the metrics to the epoch's ``logs``, optionally
writes them to TensorBoard, and saves the generator whenever the monitored value improves.

Metric names are ``"<metric>:<observable>"`` as in :func:`~ddsim_gan.evaluation.report.evaluate`
(``"W1/sigma:E_total"``, ``"KL:n_hits"``), plus two shorthands:

- ``"<metric>:*"`` — that metric for every observable of
  :func:`~ddsim_gan.evaluation.observables.shower_observables`;
- ``"<metric>:mean"`` — the mean of that metric over every observable (one number to monitor).

Callback order matters: Keras hands the same ``logs`` dict to the callbacks in list order, so only
callbacks *after* the monitor see its values. ``History`` and the progress bar are appended by
Keras after the user's callbacks and always see them; a ``keras.callbacks.TensorBoard`` placed
before the monitor does not (:func:`ddsim_gan.training.fit` puts its own TensorBoard first), hence
``log_dir``, which makes the monitor write its values itself.

In a recipe (``ddsim_gan.recipe.train`` hands its ``callbacks`` to ``fit``)::

    monitor = MetricMonitor(detector, val_conditions, val_samples, every=5,
                            metrics=("W1/sigma:E_total", "W1/sigma:mean", "KL:mean"),
                            monitor="W1/sigma:mean", best_path=out / "best_generator.keras",
                            log_dir=out / "logs" / "physics")
    recipe.train(gan, detector, data, settings, args, callbacks=[monitor])

Use validation events, not the held-out test events of the final report: choosing the epoch on
the test events would bias the report in the model's favour.
"""

from __future__ import annotations

import contextlib
import json
import math
import os

import keras
import numpy as np

from ..detectors import get as get_detector
from . import observables as O
from .report import ONE_D_METRICS, atomic_write

#: Observable part of a name that stands for "the mean over all observables".
MEAN = "mean"
#: Observable part of a name that stands for "each observable".
EACH = "*"


def _observable_metric(name: str) -> tuple[str, str]:
    metric, sep, obs = name.partition(":")
    if not sep or metric not in ONE_D_METRICS:
        raise KeyError(f"metric {name!r}: expected '<metric>:<observable>' with <metric> one of "
                       f"{', '.join(ONE_D_METRICS)}")
    return metric, obs


def expand_metric_names(names, observables) -> list[str]:
    """Metric names with ``"<metric>:*"`` expanded over ``observables``; unknown names raise a
    ``KeyError`` that lists what is available."""
    observables = list(observables)
    out = []
    for name in names:
        metric, obs = _observable_metric(name)
        if obs == EACH:
            out += [f"{metric}:{o}" for o in observables]
        elif obs == MEAN or obs in observables:
            out.append(name)
        else:
            raise KeyError(f"metric {name!r}: no observable {obs!r}; available: "
                           f"{', '.join(observables)}, or {MEAN!r} (mean over all), "
                           f"or {EACH!r} (each)")
    return list(dict.fromkeys(out))


def physics_metrics(obs_ref: dict, obs_gen: dict, names) -> dict[str, float]:
    """Values of the (expanded) metric names between two observable dicts; each per-observable
    metric is computed once even when a ``":mean"`` also needs it."""
    cache: dict[tuple[str, str], float] = {}

    def value(metric, obs):
        if (metric, obs) not in cache:
            cache[metric, obs] = float(ONE_D_METRICS[metric](obs_ref[obs], obs_gen[obs]))
        return cache[metric, obs]

    out = {}
    for name in names:
        metric, obs = _observable_metric(name)
        out[name] = (float(np.mean([value(metric, o) for o in obs_ref])) if obs == MEAN
                     else value(metric, obs))
    return out


class MetricMonitor(keras.callbacks.Callback):
    """Every ``every`` epochs: generate at fixed conditions, log physics metrics, keep the best.

    Args:
        detector: the detector (object or registry name) whose observables are compared.
        conditions: ``[n, c]`` physical validation conditions, fixed for the whole run.
        reference_samples: ``[n, *sample_shape]`` reference samples at ``conditions``.
        every: evaluate at the end of epochs ``every``, ``2·every``, ... (1-based, so a resumed
            run evaluates at the same epochs). The other epochs have no entry, so in
            ``History.history`` these keys have ``len(epochs) // every`` values.
        metrics: names to log (module docstring); ``"<metric>:*"`` expands to each observable.
        monitor: the value that decides the best epoch: a metric name (computed even if not in
            ``metrics``) or a callable ``values -> float`` of the dict of ``metrics``' values,
            logged as ``"monitor"``. Default: the first of ``metrics``. Lower is better.
        best_path: a ``.keras`` file; the generator (``model.sampler``) is saved there, atomically,
            each time the monitored value improves. Next to it ``<best_path>.json`` records the
            epoch and the value.
        log_dir: directory for TensorBoard event files of the logged values (step = epoch index,
            as Keras' TensorBoard callback), e.g. ``<output_dir>/logs/physics``.
        seed: noise seed passed to ``model.generate(conditions, seed=seed)``, identical at every
            evaluation so that metric changes come from the weights, not the noise.
        resume: start from the best value recorded in ``<best_path>.json`` instead of +inf, so a
            run resumed by ``BackupAndRestore`` does not replace a better generator with a worse
            one. Leave it off for a fresh run in a used directory.
        verbose: print a line when the best generator is saved.
        averaged_weights: evaluate (and save as best) the generator with the moving average of
            its weights that its optimizer keeps (``use_ema=True``, as
            :func:`ddsim_gan.recipe.wgan_optimizers` builds it) instead of its current
            weights: the averaged generator is the one training ends with, and raw WGAN
            weights oscillate from step to step. Without an averaging optimizer: no effect.

    After training, ``evaluations`` lists ``(epoch, values)`` and ``best``/``best_epoch`` hold the
    best monitored value (0-based epoch, ``None`` before the first evaluation). A generator whose
    samples are not finite scores NaN on every metric and is never saved as best.
    """

    def __init__(self, detector, conditions, reference_samples, *, every: int = 1,
                 metrics=("W1/sigma:E_total",), monitor=None, best_path=None, log_dir=None,
                 seed: int = 0, resume: bool = False, verbose: int = 0,
                 averaged_weights: bool = False):
        super().__init__()
        self.averaged_weights = bool(averaged_weights)
        self.detector = get_detector(detector)
        self.conditions = self.detector.check_conditions(conditions, "MetricMonitor conditions")
        self.obs_ref = O.shower_observables(reference_samples, self.detector)
        n_ref = len(next(iter(self.obs_ref.values())))
        if n_ref != len(self.conditions):
            raise ValueError(f"MetricMonitor: {n_ref} reference samples but "
                             f"{len(self.conditions)} conditions; give one sample per condition")
        if int(every) < 1:
            raise ValueError(f"MetricMonitor: every={every}, expected a positive number of epochs")
        self.every = int(every)
        self.metric_names = expand_metric_names(
            [metrics] if isinstance(metrics, str) else metrics, self.obs_ref)
        if not self.metric_names:
            raise ValueError("MetricMonitor: no metrics to compute")
        if monitor is None:
            monitor = self.metric_names[0]
        if callable(monitor):
            self.monitor, self.monitor_name = monitor, "monitor"
        else:
            names = expand_metric_names([monitor], self.obs_ref)
            if len(names) != 1:
                raise KeyError(f"monitor {monitor!r}: one value needed; use a name or "
                               f"'<metric>:{MEAN}', not '<metric>:{EACH}'")
            self.monitor, self.monitor_name = names[0], names[0]
        if best_path is not None and not os.fspath(best_path).endswith(".keras"):
            raise ValueError(f"best_path {os.fspath(best_path)!r}: the generator is saved in "
                             "Keras format, so the name must end with '.keras'")
        self.best_path = None if best_path is None else os.fspath(best_path)
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.seed = seed
        self.resume = bool(resume)
        self.verbose = verbose
        self.evaluations: list[tuple[int, dict[str, float]]] = []
        self.best = math.inf
        self.best_epoch = None
        self._writer = None

    # ---- metric values ------------------------------------------------------------------------
    def compute(self, samples) -> dict[str, float]:
        """Logged values (metrics, and the monitored one) for generated ``samples`` at the
        validation conditions."""
        samples = np.asarray(samples)
        names = list(self.metric_names)
        if isinstance(self.monitor, str) and self.monitor not in names:
            names.append(self.monitor)
        if not np.isfinite(samples).all():
            values = dict.fromkeys(names, math.nan)
        else:
            values = physics_metrics(self.obs_ref, O.shower_observables(samples, self.detector),
                                     names)
        if callable(self.monitor):
            values["monitor"] = (float(self.monitor({k: values[k] for k in self.metric_names}))
                                 if all(map(math.isfinite, values.values())) else math.nan)
        return values

    # ---- Keras hooks ----------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        if self.resume and self.best_path and os.path.exists(self.best_path + ".json"):
            with open(self.best_path + ".json") as handle:
                record = json.load(handle)
            if record.get("monitor") == self.monitor_name and record.get("value") is not None:
                self.best, self.best_epoch = float(record["value"]), int(record["epoch"])
        if self.log_dir is not None and self._writer is None:
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        with self._evaluated_weights():
            self._evaluate(epoch, logs)

    @contextlib.contextmanager
    def _evaluated_weights(self):
        """The generator's averaged weights for the duration (``averaged_weights``), then its
        own again."""
        optimizer = getattr(self.model, "generator_optimizer", None)
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # loss scaling
        if not (self.averaged_weights and getattr(optimizer, "use_ema", False)
                and getattr(optimizer, "_model_variables_moving_average", None)):
            yield
            return
        variables = self.model.generator.trainable_variables
        saved = [np.array(v.numpy()) for v in variables]
        for v in variables:
            v.assign(optimizer._model_variables_moving_average[optimizer._get_variable_index(v)])
        try:
            yield
        finally:
            for v, value in zip(variables, saved):
                v.assign(value)

    def _evaluate(self, epoch, logs):
        samples = self.model.generate(self.conditions, seed=self.seed)
        values = self.compute(samples)
        self.evaluations.append((epoch, values))
        if logs is not None:
            logs.update(values)
        if self._writer is not None:
            import tensorflow as tf

            with self._writer.as_default():
                for name, value in values.items():
                    tf.summary.scalar(name, value, step=epoch)
                images = self.summary_images(samples)
                if images is not None:
                    tf.summary.image("generated (log scale; first: the average)", images,
                                     step=epoch, max_outputs=len(images))
            self._writer.flush()
        current = values[self.monitor_name]
        if current < self.best:                       # NaN never improves
            self.best, self.best_epoch = current, epoch
            if self.best_path is not None:
                self._save_best(epoch, current)

    @staticmethod
    def summary_images(samples, n_examples: int = 3):
        """TensorBoard images ``[1 + n_examples, h, w, 1]`` in [0, 1] for image-like samples
        (``(x, y)`` or ``(layers, x, y)`` per event, layers summed): the average over the
        validation events, then single events, each as log1p scaled to its own maximum.
        ``None`` for vector samples."""
        samples = np.asarray(samples, np.float32)
        if samples.ndim < 3 or not np.isfinite(samples).all():
            return None
        planes = samples.reshape(samples.shape[:1] + (-1,) + samples.shape[-2:]).sum(axis=1)
        shown = np.concatenate([planes.mean(axis=0, keepdims=True), planes[:n_examples]])
        shown = np.log1p(np.clip(shown, 0.0, None))
        peak = shown.reshape(len(shown), -1).max(axis=1)
        return (shown / np.where(peak > 0, peak, 1.0)[:, None, None])[..., None]

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _save_best(self, epoch, value):
        atomic_write(self.best_path, self.model.sampler.save)
        record = {"monitor": self.monitor_name, "value": value, "epoch": epoch,
                  "seed": self.seed, "n_conditions": len(self.conditions)}

        def write_record(path):
            with open(path, "w") as handle:
                json.dump(record, handle, indent=1)

        atomic_write(self.best_path + ".json", write_record)
        if self.verbose:
            print(f"\nepoch {epoch + 1}: {self.monitor_name} = {value:.4g}, "
                  f"best so far; generator saved to {self.best_path}")
