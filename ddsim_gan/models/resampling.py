"""Sampling-importance resampling of a trained generator by a classifier's density ratio.

A classifier c(x, y) trained on balanced samples to tell reference events (label 1) from
generated ones (label 0) at the same conditions y estimates the density ratio

    r(x | y) = p_ref(x | y) / p_gen(x | y) = exp(logit c(x, y)).

Draw K candidates x_1 ... x_K ~ G(. | y) and keep x_k with probability w_k / sum_j w_j, w = r:
the kept events follow p_gen r -> p_ref as K grows (sampling-importance resampling, D. B. Rubin,
"Using the SIR algorithm to simulate posterior distributions", Bayesian Statistics 3, 1988; with
a classifier's ratio as the weight: A. Grover et al., "Bias correction of learned generative
models using likelihood-free importance weighting", NeurIPS 2019, arXiv:1906.09531, sec. 4;
the rejection variant is Azadi et al.'s discriminator rejection sampling, arXiv:1810.06758).
The choice is a Gumbel-max draw, argmax_k (log w_k + g_k) with g_k = -log(-log u_k), so it is
one deterministic function of the noise and a seed reproduces it. log w is clipped to
[-``clip``, ``clip``]: one candidate the classifier is over-sure about would otherwise take
every draw at its conditions.

What it costs: K generator calls per event. What it buys is bounded by what the classifier
sees (its features, :class:`CalorimeterFeatures` or :class:`VectorFeatures`) and by K: with
K candidates the kept events still follow p_gen wherever p_gen has no support, and a weight
of e^clip caps how far one candidate is preferred. The generator itself is not changed.

Keras layers and ``keras.ops`` only: the resampled sampler is one ``.keras`` model
``[conditions, noise] -> samples`` like any other and loads under every backend; its noise is
K times the generator's plus K numbers for the choice.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

from .components import normal_cdf_and_log

_PACKAGE = "ddsim_gan"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CalorimeterFeatures(keras.layers.Layer):
    """Physical cells ``[N, *sample_shape]`` -> ``[N, 3 L + 4 + 2]`` shower features:

    per layer l: log(1 + E_l / unit) and E_l / E (its share of the event's energy E);
    log(1 + E / unit), log(1 + n_hits) (cells above zero); per transverse axis the
    energy-weighted centre and width in cells; per layer the share of E_l in its hottest cell
    (how concentrated the layer is). The observables a physicist compares, in units where a
    low-energy event is not squeezed against zero."""

    def __init__(self, sample_shape, layer_axis, unit=1.0, **kwargs):
        super().__init__(**kwargs)
        self.sample_shape = tuple(int(d) for d in sample_shape)
        self.layer_axis = int(layer_axis)
        self.unit = float(unit)
        if len(self.sample_shape) != 3 or not 0 <= self.layer_axis < 3:
            raise ValueError(f"CalorimeterFeatures: needs a 3D sample with a layer axis, got "
                             f"shape {self.sample_shape}, layer axis {self.layer_axis}")
        if not self.unit > 0:
            raise ValueError(f"CalorimeterFeatures: unit must be positive, got {unit}")
        self.transverse_axes = [a for a in range(3) if a != self.layer_axis]

    def call(self, samples):
        cells = ops.relu(ops.cast(samples, "float32"))
        n_layers = self.sample_shape[self.layer_axis]
        order = [0, 1 + self.layer_axis] + [1 + a for a in self.transverse_axes]
        layer_first = ops.transpose(cells, order)                           # [N, L, a, b]
        flat_layers = ops.reshape(layer_first, (-1, n_layers, math.prod(
            self.sample_shape[a] for a in self.transverse_axes)))
        layer_energy = ops.sum(flat_layers, axis=-1)                        # [N, L]
        total = ops.sum(layer_energy, axis=-1, keepdims=True)
        safe_total = ops.maximum(total, 1e-6)
        hottest = ops.max(flat_layers, axis=-1) / ops.maximum(layer_energy, 1e-6)
        hits = ops.sum(ops.cast(ops.reshape(cells, (-1, math.prod(self.sample_shape))) > 0,
                                "float32"), axis=-1, keepdims=True)
        columns = [ops.log1p(layer_energy / self.unit), layer_energy / safe_total, hottest,
                   ops.log1p(total / self.unit), ops.log1p(hits)]
        for axis_index, axis in enumerate(self.transverse_axes):
            profile = ops.sum(layer_first, axis=(1, 3 - axis_index))         # [N, n]
            position = ops.arange(self.sample_shape[axis], dtype="float32")
            position = position - 0.5 * (self.sample_shape[axis] - 1)
            centre = ops.sum(profile * position, axis=-1, keepdims=True) / safe_total
            second = ops.sum(profile * position ** 2, axis=-1, keepdims=True) / safe_total
            columns += [centre, ops.sqrt(ops.relu(second - centre ** 2))]
        return ops.concatenate(columns, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 3 * self.sample_shape[self.layer_axis] + 6)

    def get_config(self):
        return {**super().get_config(), "sample_shape": list(self.sample_shape),
                "layer_axis": self.layer_axis, "unit": self.unit}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class VectorFeatures(keras.layers.Layer):
    """Samples ``[N, d]`` -> asinh(x / scale), ``scale`` one number per column: heavy tails
    and point masses (a DLL's spike at 0) in units where a small network resolves both."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = [float(s) for s in np.ravel(scale)]
        if not all(s > 0 for s in self.scale):
            raise ValueError(f"VectorFeatures: scales must be positive, got {self.scale}")

    def call(self, samples):
        return ops.arcsinh(ops.cast(samples, "float32") / ops.convert_to_tensor(self.scale))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConditionFeatures(keras.layers.Layer):
    """Physical conditions ``[N, c]`` -> the classifier's view of them: log of the
    ``log_columns`` (energies, momenta spanning decades), the others as they are, and the
    ``category_column`` (an integer species code, 0 ... ``n_categories`` - 1) one-hot instead
    of its value."""

    def __init__(self, n_conditions, log_columns=(), category_column=None, n_categories=0,
                 **kwargs):
        super().__init__(**kwargs)
        self.n_conditions = int(n_conditions)
        self.log_columns = [int(c) for c in log_columns]
        self.category_column = None if category_column is None else int(category_column)
        self.n_categories = int(n_categories)
        if self.category_column is not None and self.n_categories < 2:
            raise ValueError("ConditionFeatures: a category column needs n_categories >= 2")

    def call(self, conditions):
        conditions = ops.cast(conditions, "float32")
        columns = []
        for c in range(self.n_conditions):
            column = conditions[:, c:c + 1]
            if c == self.category_column:
                columns.append(ops.one_hot(ops.cast(ops.round(column[:, 0]), "int32"),
                                           self.n_categories))
            elif c in self.log_columns:
                columns.append(ops.log(ops.maximum(column, 1e-12)))
            else:
                columns.append(column)
        return ops.concatenate(columns, axis=-1)

    def compute_output_shape(self, input_shape):
        extra = self.n_categories - 1 if self.category_column is not None else 0
        return (input_shape[0], self.n_conditions + extra)

    def get_config(self):
        return {**super().get_config(), "n_conditions": self.n_conditions,
                "log_columns": self.log_columns, "category_column": self.category_column,
                "n_categories": self.n_categories}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CandidateInputs(keras.layers.Layer):
    """``[conditions [N, c], noise [N, K d + K]]`` -> conditions repeated K times
    ``[N K, c]``, the K candidates' noise ``[N K, d]`` and the K normals of the choice
    ``[N, K]``."""

    def __init__(self, n_candidates, noise_width, **kwargs):
        super().__init__(**kwargs)
        self.n_candidates = int(n_candidates)
        self.noise_width = int(noise_width)

    def call(self, inputs):
        conditions, noise = inputs
        k, d = self.n_candidates, self.noise_width
        repeated = ops.reshape(ops.repeat(conditions[:, None, :], k, axis=1),
                               (-1, ops.shape(conditions)[-1]))
        candidate_noise = ops.reshape(noise[:, :k * d], (-1, d))
        return repeated, candidate_noise, noise[:, k * d:]

    def compute_output_shape(self, input_shapes):
        (n, c), (_, _) = input_shapes
        k = self.n_candidates
        return (None, c), (None, self.noise_width), (n, k)

    def get_config(self):
        return {**super().get_config(), "n_candidates": self.n_candidates,
                "noise_width": self.noise_width}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ImportanceResampling(keras.layers.Layer):
    """``[candidates [N K, ...], log-ratios [N K, 1], normals [N, K]]`` -> ``[N, ...]``: one
    candidate per event, chosen with probability proportional to exp(clip(log-ratio)) by the
    Gumbel-max draw of the module doc (the normals become uniforms through their CDF)."""

    def __init__(self, n_candidates, clip=3.0, **kwargs):
        super().__init__(**kwargs)
        self.n_candidates = int(n_candidates)
        self.clip = float(clip)

    def call(self, inputs):
        candidates, log_ratio, normals = inputs
        k = self.n_candidates
        log_weight = ops.clip(ops.reshape(ops.cast(log_ratio, "float32"), (-1, k)),
                              -self.clip, self.clip)
        _, log_u = normal_cdf_and_log(ops.cast(normals, "float32"))
        gumbel = -ops.log(ops.maximum(-log_u, 1e-30))
        choice = ops.one_hot(ops.argmax(log_weight + gumbel, axis=-1), k)       # [N, K]
        shape = ops.shape(candidates)
        grouped = ops.reshape(candidates, (-1, k) + tuple(shape[1:]))
        choice = ops.reshape(choice, (-1, k) + (1,) * (len(candidates.shape) - 1))
        return ops.sum(grouped * ops.cast(choice, grouped.dtype), axis=1)

    def compute_output_shape(self, input_shapes):
        return (None,) + tuple(input_shapes[0][1:])

    def get_config(self):
        return {**super().get_config(), "n_candidates": self.n_candidates, "clip": self.clip}


def ratio_classifier(n_inputs, mean, variance, hidden=(128, 128, 128), name="ratio_classifier"):
    """``[event features, condition features] (concatenated) -> log r``: standardization
    (fixed, fitted on the training events) and an MLP with a linear output, the logit of
    P(reference | x, y)."""
    features = keras.Input((int(n_inputs),), name="features")
    x = layers.Normalization(mean=np.asarray(mean, np.float32),
                             variance=np.maximum(np.asarray(variance, np.float32), 1e-8),
                             name="standardize")(features)
    for i, units in enumerate(hidden):
        x = layers.Dense(int(units), activation="relu", name=f"dense_{i}")(x)
    return keras.Model(features, layers.Dense(1, name="log_ratio")(x), name=name)


def resampled_sampler(sampler, event_features, condition_features, classifier, n_candidates,
                      clip=3.0, name="resampled_sampler"):
    """``[conditions, noise] -> samples``: ``sampler`` drawn ``n_candidates`` times per event
    and one candidate kept by :class:`ImportanceResampling` with ``classifier``'s ratios."""
    conditions_input, noise_input = sampler.inputs
    n_conditions, width = int(conditions_input.shape[-1]), int(noise_input.shape[-1])
    k = int(n_candidates)
    if k < 2:
        raise ValueError(f"resampled_sampler: needs at least 2 candidates, got {k}")
    conditions = keras.Input((n_conditions,), name="conditions")
    noise = keras.Input((k * width + k,), name="noise")
    repeated, candidate_noise, choice_noise = CandidateInputs(k, width, name="candidates")(
        [conditions, noise])
    candidates = sampler([repeated, candidate_noise])
    features = layers.Concatenate(name="classifier_inputs")(
        [event_features(candidates), condition_features(repeated)])
    log_ratio = classifier(features)
    samples = ImportanceResampling(k, clip, name="resampling")(
        [candidates, log_ratio, choice_noise])
    return keras.Model([conditions, noise], samples, name=name)


def _features(event_features, condition_features, conditions, samples, batch_size):
    out = []
    for start in range(0, len(conditions), batch_size):
        stop = start + batch_size
        out.append(np.concatenate([
            np.asarray(event_features(samples[start:stop])),
            np.asarray(condition_features(conditions[start:stop]))], axis=1))
    return np.concatenate(out).astype(np.float32)


def fit_ratio_classifier(sampler, event_features, condition_features, conditions, samples, *,
                         seed=0, epochs=200, patience=5, batch_size=1024,
                         validation_fraction=0.1, hidden=(128, 128, 128), feature_batch=4096,
                         verbose=0):
    """Train the classifier of the module doc on the reference ``conditions, samples`` against
    ``sampler``'s events at the same conditions (one each, noise seeded by ``seed``), until
    its validation loss has not improved for ``patience`` epochs (at most ``epochs``; its best
    epoch is kept).

    Returns ``(classifier, report)``; ``report`` holds the validation AUC and the binary
    cross-entropy before and after (ln 2 = 0.693 is "cannot tell"), the events used and the
    epochs run."""
    from ..evaluation.classifier import auc_mann_whitney

    conditions = np.asarray(conditions, np.float32)
    n = len(conditions)
    rng = np.random.default_rng(seed)
    width = int(sampler.inputs[1].shape[-1])
    generated = []
    for start in range(0, n, feature_batch):
        c = conditions[start:start + feature_batch]
        z = rng.standard_normal((len(c), width), dtype=np.float32)
        generated.append(np.asarray(sampler([c, z], training=False)))
    generated = np.concatenate(generated)
    x = np.concatenate([
        _features(event_features, condition_features, conditions, samples, feature_batch),
        _features(event_features, condition_features, conditions, generated,
                  feature_batch)])
    y = np.concatenate([np.ones(n), np.zeros(n)]).astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("fit_ratio_classifier: non-finite features (row "
                         f"{int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0]) % n} of the "
                         "reference or generated events)")
    order = rng.permutation(2 * n)
    n_val = max(int(round(2 * n * validation_fraction)), 2)
    val, fit = order[:n_val], order[n_val:]
    keras.utils.set_random_seed(int(seed))
    classifier = ratio_classifier(x.shape[1], x[fit].mean(axis=0), x[fit].var(axis=0),
                                  hidden=hidden)
    classifier.compile(optimizer=keras.optimizers.Adam(1e-3),
                       loss=keras.losses.BinaryCrossentropy(from_logits=True))
    before = float(classifier.evaluate(x[val], y[val], batch_size=8192, verbose=0))
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(patience),
                                         restore_best_weights=True)
    history = classifier.fit(x[fit], y[fit], validation_data=(x[val], y[val]),
                             epochs=int(epochs), batch_size=batch_size, callbacks=[stop],
                             verbose=verbose)
    score = classifier.predict(x[val], batch_size=8192, verbose=0).ravel()
    auc, auc_error = auc_mann_whitney(score[y[val] == 1], score[y[val] == 0])
    after = float(classifier.evaluate(x[val], y[val], batch_size=8192, verbose=0))
    return classifier, {"validation_auc": auc, "validation_auc_error": auc_error,
                        "cross_entropy_before": before, "cross_entropy_after": after,
                        "events_per_class": n, "epochs_run": len(history.history["loss"])}


def resample_generator(sampler, event_features, condition_features, conditions, samples, *,
                       n_candidates=8, clip=3.0, seed=0, **fit_options):
    """:func:`fit_ratio_classifier` on ``conditions, samples`` (reference events), then
    :func:`resampled_sampler` with ``n_candidates`` and ``clip``: ``(resampled, report)``."""
    classifier, report = fit_ratio_classifier(sampler, event_features, condition_features,
                                              conditions, samples, seed=seed, **fit_options)
    resampled = resampled_sampler(sampler, event_features, condition_features, classifier,
                                  n_candidates, clip)
    return resampled, {**report, "n_candidates": int(n_candidates), "clip": float(clip)}


def generate(sampler, conditions, seed=0, batch_size=4096):
    """Physical samples from a ``[conditions, noise] -> samples`` Keras sampler for physical
    ``conditions`` (NumPy in and out), the noise drawn from ``seed`` one batch at a time (a
    resampled sampler's noise is K times the generator's: for 20 000 DarkSHINE showers and
    K = 8, 5.7 GB at once)."""
    conditions = np.asarray(conditions, np.float32)
    width = int(sampler.inputs[1].shape[-1])
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, len(conditions), batch_size):
        batch = conditions[start:start + batch_size]
        noise = rng.standard_normal((len(batch), width), dtype=np.float32)
        out.append(np.asarray(sampler.predict_on_batch([batch, noise])))
    return np.concatenate(out) if out else np.zeros(
        (0,) + tuple(sampler.outputs[0].shape[1:]), np.float32)
