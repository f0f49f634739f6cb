"""MetricMonitor: physics metrics in the epoch logs every k epochs, TensorBoard, best generator."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from ddsim_gan.data import dataset_from_arrays
from ddsim_gan.detectors import ConditionError
from ddsim_gan.evaluation import MetricMonitor, shower_observables, wasserstein_over_sigma
from ddsim_gan.evaluation.callbacks import physics_metrics
from ddsim_gan.models.builders import build_conditional_gan


@pytest.fixture(scope="module")
def gan(mini_calo, mini_data):
    conditions, samples = mini_data
    model = build_conditional_gan(mini_calo, conditions, max_value=float(samples.max()),
                                  latent_dim=4, generator_hidden=(16,), critic_hidden=(16,),
                                  critic_steps=2, seed=0)
    model.compile(generator_optimizer=keras.optimizers.Adam(1e-3, 0.5, 0.9),
                  critic_optimizer=keras.optimizers.Adam(1e-3, 0.5, 0.9))
    return model


@pytest.fixture(scope="module")
def validation(mini_calo):
    return mini_calo.simulate(200, seed=5)


def _fit(gan, data, epochs, callbacks):
    dataset = dataset_from_arrays(*data, batch_size=32, seed=0, repeat=True)
    return gan.fit(dataset, epochs=epochs, steps_per_epoch=1, verbose=0, callbacks=callbacks,
                   shuffle=False)


def _summaries(log_dir, plugin="scalars"):
    """{tag: [(step, value)]} of one TensorBoard plugin's summaries under ``log_dir``."""
    out = {}
    for path in log_dir.glob("events.out.tfevents*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == plugin:
                    array = tf.make_ndarray(value.tensor)
                    out.setdefault(value.tag, []).append(
                        (event.step, float(array) if plugin == "scalars" else array))
    return out


def _scalars(log_dir):
    return _summaries(log_dir, "scalars")


def test_metrics_every_k_epochs_in_history_and_tensorboard(gan, mini_calo, mini_data, validation,
                                                           tmp_path, monkeypatch):
    conditions, reference = validation
    original, seeds = gan.generate, []

    def spy(conditions, seed=0):
        seeds.append(seed)
        return original(conditions, seed=seed)

    monkeypatch.setattr(gan, "generate", spy)
    monitor = MetricMonitor(mini_calo, conditions, reference, every=2, seed=11,
                            metrics=("W1/sigma:E_total", "KL:*", "W1/sigma:mean"),
                            log_dir=tmp_path / "physics")
    history = _fit(gan, mini_data, 4, [monitor])
    assert history.epoch == [0, 1, 2, 3] and len(history.history["critic_loss"]) == 4
    observables = list(shower_observables(reference[:2], mini_calo))
    names = {"W1/sigma:E_total", "W1/sigma:mean", *(f"KL:{o}" for o in observables)}
    assert names <= set(history.history)
    assert all(len(history.history[name]) == 2 for name in names)        # epochs 2 and 4 only
    assert [epoch for epoch, _ in monitor.evaluations] == [1, 3]
    assert seeds == [11, 11]                                           # the same noise each time

    # the last evaluation ran on the final weights: recompute it from scratch
    generated = shower_observables(original(conditions, seed=11), mini_calo)
    expected = shower_observables(reference, mini_calo)
    assert history.history["W1/sigma:E_total"][-1] == pytest.approx(
        wasserstein_over_sigma(expected["E_total"], generated["E_total"]))
    each = physics_metrics(expected, generated, [f"W1/sigma:{o}" for o in observables])
    assert history.history["W1/sigma:mean"][-1] == pytest.approx(np.mean(list(each.values())))

    scalars = _scalars(tmp_path / "physics")
    assert names <= set(scalars)
    assert [step for step, _ in scalars["W1/sigma:E_total"]] == [1, 3]
    assert scalars["W1/sigma:E_total"][-1][1] == pytest.approx(
        history.history["W1/sigma:E_total"][-1], rel=1e-6)
    images = _summaries(tmp_path / "physics", "images")       # average + 3 events, as PNGs
    (tag, logged), = images.items()
    assert tag.startswith("generated") and [step for step, _ in logged] == [1, 3]
    width, height, *pngs = logged[-1][1]
    assert (int(width), int(height)) == (3, 4) and len(pngs) == 4   # (x, y) = (4, 3)
    assert all(png.startswith(b"\x89PNG") for png in pngs)


def test_summary_images_sum_layers_and_scale_each_to_one():
    samples = np.zeros((5, 2, 3, 4), np.float32)
    samples[:, 0, 1, 2] = 10.0
    samples[:, 1, 1, 2] = 5.0
    samples[0, 1, 0, 0] = 1.0
    images = MetricMonitor.summary_images(samples, n_examples=2)
    assert images.shape == (3, 3, 4, 1)
    assert images.max(axis=(1, 2, 3)).tolist() == [1.0, 1.0, 1.0]
    assert images[1, 0, 0, 0] == pytest.approx(np.log1p(1.0) / np.log1p(15.0))  # event 0
    assert images[2, 0, 0, 0] == 0.0
    assert MetricMonitor.summary_images(np.zeros((5, 3))) is None           # vectors


def test_best_generator_saved_only_on_improvement(gan, mini_calo, mini_data, validation,
                                                  tmp_path, monkeypatch):
    conditions, reference = validation
    scales = iter([1.5, 1.2, 1.4, 1.1, 1.3])                # W1/sigma grows with |scale - 1|
    monkeypatch.setattr(gan, "generate", lambda c, seed=0: reference * next(scales))
    saved, original_save = [], gan.sampler.save
    monkeypatch.setattr(gan.sampler, "save", lambda path: (saved.append(path),
                                                           original_save(path)))
    best = tmp_path / "best" / "generator.keras"
    monitor = MetricMonitor(mini_calo, conditions, reference, metrics=("W1/sigma:E_total",),
                            best_path=best)
    seen_before, seen_after = [], []
    before = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen_before.append("W1/sigma:E_total" in logs))
    weights = []                                            # the sampler's weights per epoch
    after = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: (
        seen_after.append(logs["W1/sigma:E_total"]),
        weights.append([w.numpy() for w in gan.sampler.weights])))
    history = _fit(gan, mini_data, 5, [before, monitor, after]).history

    values = history["W1/sigma:E_total"]
    assert np.argsort(values).tolist() == [3, 1, 4, 2, 0]
    assert len(saved) == 3                                  # epochs 1, 2 and 4 improved
    assert monitor.best_epoch == 3 and monitor.best == pytest.approx(values[3])
    record = json.loads((tmp_path / "best" / "generator.keras.json").read_text())
    assert record["epoch"] == 3 and record["value"] == pytest.approx(values[3])
    assert record["monitor"] == "W1/sigma:E_total"
    assert sorted(p.name for p in best.parent.iterdir()) == ["generator.keras",
                                                             "generator.keras.json"]
    loaded = keras.saving.load_model(best)                  # the epoch-4 generator, not the last
    for saved_weight, epoch_weight in zip(loaded.weights, weights[3]):
        np.testing.assert_array_equal(saved_weight.numpy(), epoch_weight)
    assert not all(np.array_equal(a, b) for a, b in zip(weights[3], weights[4]))
    # callbacks before the monitor do not see its values; those after it (and History) do
    assert seen_before == [False] * 5 and seen_after == values


def test_callable_monitor_non_finite_samples_and_resume(gan, mini_calo, validation, tmp_path,
                                                        monkeypatch):
    conditions, reference = validation
    outputs = iter([np.full_like(reference, np.nan), reference * 1.2, reference * 1.3])
    monkeypatch.setattr(gan, "generate", lambda c, seed=0: next(outputs))
    monkeypatch.setattr(gan.sampler, "save", lambda path: open(path, "w").close())
    best = tmp_path / "generator.keras"

    def total(values):
        return values["W1/sigma:E_total"] + values["KL:E_total"]

    monitor = MetricMonitor(mini_calo, conditions, reference, best_path=best, monitor=total,
                            metrics=("W1/sigma:E_total", "KL:E_total"))
    monitor.set_model(gan)
    monitor.on_train_begin()
    logs = [{}, {}, {}]
    for epoch in range(3):
        monitor.on_epoch_end(epoch, logs[epoch])
    assert np.isnan(logs[0]["monitor"]) and np.isnan(logs[0]["W1/sigma:E_total"])
    assert logs[1]["monitor"] == pytest.approx(logs[1]["W1/sigma:E_total"]
                                               + logs[1]["KL:E_total"])
    assert monitor.best_epoch == 1 and best.exists()        # NaN never counts as best

    # a resumed run starts from the recorded best: a worse generator does not replace it
    outputs = iter([reference * 1.3])
    resumed = MetricMonitor(mini_calo, conditions, reference, best_path=best, monitor=total,
                            metrics=("W1/sigma:E_total", "KL:E_total"), resume=True)
    resumed.set_model(gan)
    resumed.on_train_begin()
    assert resumed.best == pytest.approx(logs[1]["monitor"]) and resumed.best_epoch == 1
    resumed.on_epoch_end(5, {})
    assert resumed.best_epoch == 1


def test_arguments_are_checked(mini_calo, validation, tmp_path):
    conditions, reference = validation
    with pytest.raises(KeyError, match="available: E_total"):
        MetricMonitor(mini_calo, conditions, reference, metrics=("W1/sigma:E_tot",))
    with pytest.raises(KeyError, match="W1/sigma"):
        MetricMonitor(mini_calo, conditions, reference, metrics=("chi2:E_total",))
    with pytest.raises(KeyError, match="one value"):
        MetricMonitor(mini_calo, conditions, reference, monitor="KL:*")
    with pytest.raises(ValueError, match="every"):
        MetricMonitor(mini_calo, conditions, reference, every=0)
    with pytest.raises(ValueError, match=".keras"):
        MetricMonitor(mini_calo, conditions, reference, best_path=tmp_path / "best.h5")
    with pytest.raises(ValueError, match="one sample per condition"):
        MetricMonitor(mini_calo, conditions, reference[:10])
    with pytest.raises(ConditionError, match=r"expected \(N, 1\)"):
        MetricMonitor(mini_calo, np.zeros((200, 2)), reference)
