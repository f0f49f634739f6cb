"""Learning-rate schedules that end with a time-limited run (ddsim_gan.schedules)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from conftest import small_compiled_gan
from ddsim_gan import recipe
from ddsim_gan.data import dataset_from_arrays
from ddsim_gan.schedules import ScheduleToTimeLimit, ShortenableCosineDecay
from ddsim_gan.training import fit


def test_the_planned_schedule_is_keras_cosine_decay_and_a_shortened_one_ends_early():
    planned = ShortenableCosineDecay(2e-4, 1000, alpha=0.1)
    reference = keras.optimizers.schedules.CosineDecay(2e-4, 1000, alpha=0.1)
    for step in (0, 1, 250, 500, 999, 1000, 5000):
        assert float(planned(step)) == pytest.approx(float(reference(step)), rel=1e-5)
    planned.shorten_to(0.4)                                   # the decay now ends at step 400
    assert float(planned(200)) == pytest.approx(float(reference(500)), rel=1e-5)
    assert float(planned(400)) == pytest.approx(2e-5, rel=1e-5)
    assert float(planned(900)) == pytest.approx(2e-5, rel=1e-5)
    planned.shorten_to(3.0)                                   # never longer than planned
    assert float(planned(500)) == pytest.approx(float(reference(500)), rel=1e-5)
    with pytest.raises(ValueError, match="decay_steps"):
        ShortenableCosineDecay(1e-3, 0)


def test_the_schedule_serializes_and_its_length_is_no_optimizer_variable():
    schedule = ShortenableCosineDecay(1e-3, 300, alpha=0.2, name="lr")
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert type(again) is ShortenableCosineDecay
    assert again.get_config() == schedule.get_config()
    optimizer = keras.optimizers.Adam(schedule)
    plain = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, 300))
    weights = [keras.Variable(np.zeros(3, np.float32))]
    optimizer.build(weights)
    plain.build(weights)
    # checkpoints hold the optimizer's variables: those written with keras' CosineDecay (before
    # 2026-12-07) must still load
    assert len(optimizer.variables) == len(plain.variables)


def test_the_critic_schedule_spans_its_own_updates():
    settings = {"epochs": 3, "steps_per_epoch": 10}
    legacy = recipe.wgan_optimizers(settings)
    spanning = recipe.wgan_optimizers(settings, critic_updates_per_step=4)
    assert legacy["critic_optimizer"]._learning_rate.decay_steps == 30
    assert spanning["critic_optimizer"]._learning_rate.decay_steps == 120
    assert spanning["generator_optimizer"]._learning_rate.decay_steps == 30
    with pytest.raises(ValueError, match="critic_updates_per_step"):
        recipe.wgan_optimizers(settings, critic_updates_per_step=0)


def test_the_projection_counts_the_epochs_the_time_limit_lets_run(monkeypatch):
    """Epochs of 10 s (the first 16 s: tracing) under a 45 s limit: TimeLimit stops at the end
    of the first epoch that ends after 45 s, the fourth (t = 46 s)."""
    clock = iter([0.0, 16.0, 26.0, 36.0, 46.0])
    monkeypatch.setattr("ddsim_gan.schedules.time.monotonic", lambda: next(clock))
    generator, critic = ShortenableCosineDecay(1e-3, 100), ShortenableCosineDecay(1e-3, 400)
    model = SimpleNamespace(generator_optimizer=keras.optimizers.Adam(generator),
                            critic_optimizer=keras.optimizers.Adam(critic), name="m")
    callback = ScheduleToTimeLimit(45 / 60)
    callback.set_model(model)
    callback.set_params({"epochs": 10, "steps": 10})
    callback.on_train_begin()
    projections = []
    for epoch in range(4):
        callback.on_epoch_end(epoch)
        projections.append(callback.projected_epochs)
    # after epoch 1: 29 s left at 16 s an epoch -> 2 more; then 10-s epochs: 19 s -> 2 more, ...
    assert projections == [1 + math.ceil(29 / 16), 2 + 2, 3 + 1, 4 + 0] == [3, 4, 4, 4]
    for schedule in (generator, critic):
        assert float(schedule.length_fraction.numpy()) == pytest.approx(0.4)


def test_fit_under_a_time_limit_ends_the_decay_with_the_run(tmp_path, mini_calo, mini_data):
    gan = small_compiled_gan(mini_calo, mini_data)
    gan.compile(**recipe.wgan_optimizers({"epochs": 5, "steps_per_epoch": 2}, learning_rate=1e-3))
    history = fit(gan, dataset_from_arrays(*mini_data, batch_size=64, seed=0, repeat=True),
                  epochs=5, steps_per_epoch=2, output_dir=tmp_path, verbose=0,
                  time_limit_minutes=1e-4)            # over before the first epoch ends
    assert history.epoch == [0]
    schedule = gan.generator_optimizer._learning_rate
    assert float(schedule.length_fraction.numpy()) == pytest.approx(1 / 5)
    # the rate it would take next is the floor: the decay ended with the one epoch that ran
    assert float(schedule(gan.generator_optimizer.iterations)) == pytest.approx(1e-4, rel=1e-5)
