"""EpochTiming: where each epoch's wall time went, in the epoch's logs."""

import time

import keras
import numpy as np

from conftest import small_compiled_gan
from ddsim_gan.data import dataset_from_arrays
from ddsim_gan.training import EpochTiming, fit


class WaitAfterLastBatch(keras.callbacks.Callback):
    """Stands for what held Keras between an epoch's last batch and its validation."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.params["steps"] - 1:
            time.sleep(self.seconds)


def test_a_wait_before_the_validation_is_told_apart_from_training():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    history = model.fit(x, y, batch_size=16, epochs=2, validation_data=(x, y), verbose=0,
                        callbacks=[EpochTiming(), WaitAfterLastBatch(0.4)]).history
    for epoch in range(2):
        wait, train = history["epoch_wait_seconds"][epoch], history["epoch_train_seconds"][epoch]
        assert 0.4 <= wait < 2.0
        assert history["epoch_seconds"][epoch] >= train + wait
        assert 0.0 <= history["epoch_cpu_per_wall"][epoch] < 0.9   # idle while it slept


def test_without_validation_there_is_no_wait():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x = np.ones((32, 3), "float32")
    history = model.fit(x, x[:, :1], batch_size=16, epochs=1, verbose=0,
                        callbacks=[EpochTiming(), WaitAfterLastBatch(0.2)]).history
    assert history["epoch_wait_seconds"] == [0.0]
    assert history["epoch_seconds"][0] >= history["epoch_train_seconds"][0] + 0.2


def test_every_fit_records_the_timing(tmp_path, mini_calo, mini_data):
    gan = small_compiled_gan(mini_calo, mini_data)
    history = fit(gan, dataset_from_arrays(*mini_data, batch_size=64, seed=0, repeat=True),
                  epochs=2, steps_per_epoch=2, output_dir=tmp_path, verbose=0,
                  validation_data=dataset_from_arrays(*mini_data, batch_size=64, shuffle=False))
    assert len(history.history["epoch_seconds"]) == 2
    assert all(s > 0 for s in history.history["epoch_train_seconds"])
