"""MetricMonitor(averaged_weights=True): the weight-averaged generator is scored, then restored."""

import itertools

import keras
import numpy as np

from ddsim_gan.data import dataset_from_arrays
from ddsim_gan.evaluation import MetricMonitor
from ddsim_gan.models.builders import build_conditional_gan


class Probe(keras.callbacks.Callback):
    """Records the generator's weights as the monitor left them at each epoch end."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([np.array(w) for w in self.model.generator.get_weights()])


def test_averaged_weights_are_evaluated_then_restored(mini_calo, mini_data, tmp_path):
    conditions, samples = mini_data
    gan = build_conditional_gan(mini_calo, conditions, max_value=float(samples.max()),
                                latent_dim=4, generator_hidden=(16,), critic_hidden=(16,),
                                critic_steps=2, seed=0)
    gan.compile(generator_optimizer=keras.optimizers.Adam(1e-2, 0.5, 0.9, use_ema=True,
                                                          ema_momentum=0.9),
                critic_optimizer=keras.optimizers.Adam(1e-3, 0.5, 0.9))
    val_conditions, val_samples = mini_calo.simulate(100, seed=5)
    counter = itertools.count()                     # every epoch is the best so far
    monitor = MetricMonitor(mini_calo, val_conditions, val_samples, metrics=("KL:E_total",),
                            monitor=lambda values: -next(counter),
                            best_path=tmp_path / "best.keras", averaged_weights=True)
    plain = MetricMonitor(mini_calo, val_conditions, val_samples, metrics=("KL:E_total",))
    probe = Probe()
    dataset = dataset_from_arrays(conditions, samples, batch_size=32, seed=0, repeat=True)
    gan.fit(dataset, epochs=2, steps_per_epoch=3, verbose=0, shuffle=False,
            callbacks=[monitor, probe, plain])
    optimizer = gan.generator_optimizer
    averaged = [np.array(optimizer._model_variables_moving_average[
        optimizer._get_variable_index(v)]) for v in gan.generator.trainable_variables]
    current = [keras.ops.convert_to_numpy(v) for v in gan.generator.trainable_variables]
    assert any(not np.allclose(a, c) for a, c in zip(averaged, current))
    # after the monitor, the generator has its own weights again
    for a, b in zip(probe.weights[-1], gan.generator.get_weights()):
        np.testing.assert_array_equal(a, b)
    # the best generator saved is the averaged one: it reproduces the averaged weights
    best = keras.saving.load_model(tmp_path / "best.keras")
    saved = [keras.ops.convert_to_numpy(v) for v in best.get_layer("generator").trainable_variables]
    assert monitor.best_epoch == 1
    for a, s in zip(averaged, saved):
        np.testing.assert_allclose(a, s, rtol=1e-6)
    # the two monitors saw different generators
    assert monitor.evaluations[-1][1]["KL:E_total"] != plain.evaluations[-1][1]["KL:E_total"]
