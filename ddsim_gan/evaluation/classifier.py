"""Classifier two-sample test: how well can a small network tell generated from reference?

An AUC of 0.5 means the network cannot tell them apart. The JSD estimate follows the
CaloChallenge 2022 evaluation: the classifier output is calibrated (isotonic regression on the
validation slice) into p = P(reference | x), and on the balanced held-out split

    JSD = ln 2 + ½ E_ref[ln p] + ½ E_gen[ln(1 − p)]     (nats, clipped to [0, ln 2]).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

try:
    from scipy.optimize import isotonic_regression
except ImportError:  # scipy < 1.12: pool-adjacent-violators by hand
    def isotonic_regression(y, increasing=True):
        """Least-squares non-decreasing fit of ``y`` (pool adjacent violators)."""
        values, weights, sizes = [], [], []
        for v in np.asarray(y, float):
            values.append(v), weights.append(1.0), sizes.append(1)
            while len(values) > 1 and values[-2] > values[-1]:
                w = weights[-2] + weights[-1]
                values[-2] = (values[-2] * weights[-2] + values[-1] * weights[-1]) / w
                weights[-2], sizes[-2] = w, sizes[-2] + sizes[-1]
                del values[-1], weights[-1], sizes[-1]
        from types import SimpleNamespace
        return SimpleNamespace(x=np.repeat(values, sizes))


def _prepare(features, log_transform: bool | None) -> np.ndarray:
    array = np.asarray(features, dtype=np.float64)
    low_level = array.ndim > 2
    array = array.reshape(len(array), -1)
    if log_transform if log_transform is not None else low_level:
        array = np.log1p(np.clip(array, 0.0, None))
    return array


def auc_mann_whitney(scores_positive, scores_negative) -> tuple[float, float]:
    """AUC = P(score₊ > score₋) from the Mann–Whitney U statistic (ties count ½), with the
    Hanley & McNeil (1982) standard error."""
    pos, neg = np.ravel(scores_positive), np.ravel(scores_negative)
    n1, n0 = len(pos), len(neg)
    ranks = stats.rankdata(np.concatenate([pos, neg]))
    auc = (ranks[:n1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0)
    q1, q2 = auc / (2.0 - auc), 2.0 * auc**2 / (1.0 + auc)
    var = (auc * (1 - auc) + (n1 - 1) * (q1 - auc**2) + (n0 - 1) * (q2 - auc**2)) / (n1 * n0)
    return float(auc), float(np.sqrt(max(var, 0.0)))


def _calibrate(scores_fit, labels_fit, scores):
    """Isotonic calibration of classifier scores into probabilities (monotone, piecewise)."""
    order = np.argsort(scores_fit, kind="stable")
    fitted = isotonic_regression(labels_fit[order].astype(np.float64), increasing=True).x
    return np.interp(scores, scores_fit[order], fitted)


def classifier_two_sample_test(ref_features, gen_features, *, seed: int = 0, epochs: int = 400,
                               patience: int = 10, min_delta: float = 1e-3, hidden=(64, 64),
                               test_fraction: float = 0.3,
                               batch_size: int = 256, log_transform: bool | None = None) -> dict:
    """Train an MLP to separate reference (label 1) from generated (label 0) events.

    Features are ``[n, f]`` high-level observables or images ``[n, ...]`` (flattened and, by
    default for images, reduced with ``log1p``). Both samples are cut to the same size, split
    into a training part (20 % of it kept for early stopping and calibration) and a held-out
    ``test_fraction``, standardised with training statistics.

    The network trains until its validation loss (binary cross-entropy, nats) has not improved
    by ``min_delta`` for ``patience`` epochs (at most ``epochs``) and keeps its best epoch: a
    two-sample test is only as strong as its classifier, and one stopped early reports samples
    as closer than they are. A cap of 20 epochs (this function's default until 2026-12-07)
    stopped it before it converged on DarkSHINE showers: the shipped sampler's AUC was
    0.728-0.745 over three seeds, converged 0.770-0.786 (docs/darkshine_nnls_cgan.md).
    ``min_delta`` ends the training on samples it separates completely, whose loss would
    otherwise creep towards 0 until the cap.

    Returns ``{"auc", "auc_error", "jsd", "n_train", "n_test", "epochs_run", "converged"}``;
    ``converged`` is False where the cap, not the validation loss, ended the training.
    """
    import keras  # imported here so observables/metrics stay usable without TensorFlow

    ref, gen = _prepare(ref_features, log_transform), _prepare(gen_features, log_transform)
    if ref.shape[1] != gen.shape[1]:
        raise ValueError(f"classifier_two_sample_test: {ref.shape[1]} reference features vs "
                         f"{gen.shape[1]} generated features")
    rng = np.random.default_rng(seed)
    n = min(len(ref), len(gen))
    n_test = max(int(round(n * test_fraction)), 1)
    if n - n_test < 10:
        raise ValueError(f"classifier_two_sample_test: {n} events per class are too few")
    ref, gen = ref[rng.permutation(len(ref))[:n]], gen[rng.permutation(len(gen))[:n]]
    n_train = n - n_test
    n_val = max(n_train // 5, 1)

    def split(a, b, lo, hi):
        x = np.concatenate([a[lo:hi], b[lo:hi]])
        y = np.concatenate([np.ones(hi - lo), np.zeros(hi - lo)])
        order = rng.permutation(len(x))
        return x[order], y[order]

    x_fit, y_fit = split(ref, gen, 0, n_train - n_val)
    x_val, y_val = split(ref, gen, n_train - n_val, n_train)
    x_test, y_test = split(ref, gen, n_train, n)
    mean, std = x_fit.mean(axis=0), x_fit.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    x_fit, x_val, x_test = ((x - mean) / std for x in (x_fit, x_val, x_test))
    x_fit, x_val, x_test = (np.clip(x, -20, 20).astype(np.float32) for x in (x_fit, x_val, x_test))

    init = [keras.initializers.GlorotUniform(seed=int(seed) + k) for k in range(len(hidden) + 1)]
    model = keras.Sequential(
        [keras.Input((x_fit.shape[1],))]
        + [keras.layers.Dense(h, activation="relu", kernel_initializer=init[k])
           for k, h in enumerate(hidden)]
        + [keras.layers.Dense(1, activation="sigmoid", kernel_initializer=init[-1])])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(patience),
                                         min_delta=min_delta, restore_best_weights=True)
    # data is pre-shuffled with the seeded rng; Keras' own shuffling is not seedable per call
    history = model.fit(x_fit, y_fit, validation_data=(x_val, y_val), epochs=int(epochs),
                        batch_size=batch_size, shuffle=False, callbacks=[stop], verbose=0)
    epochs_run = len(history.history["loss"])

    score_val = model.predict(x_val, batch_size=4096, verbose=0).ravel()
    score_test = model.predict(x_test, batch_size=4096, verbose=0).ravel()
    auc, auc_error = auc_mann_whitney(score_test[y_test == 1], score_test[y_test == 0])

    p = np.clip(_calibrate(score_val, y_val, score_test), 1e-6, 1 - 1e-6)
    jsd = np.log(2.0) + 0.5 * np.mean(np.log(p[y_test == 1])) \
        + 0.5 * np.mean(np.log(1.0 - p[y_test == 0]))
    return {"auc": auc, "auc_error": auc_error, "jsd": float(np.clip(jsd, 0.0, np.log(2.0))),
            "n_train": int(2 * n_train), "n_test": int(2 * n_test), "epochs_run": epochs_run,
            "converged": bool(stop.stopped_epoch > 0)}
