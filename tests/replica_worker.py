"""Run by test_model_families.py in a fresh process with two logical CPUs: trains every recipe's
model for two steps on one replica and on two, with the step's random draws (noise,
interpolation coefficients) made a fixed function of each event, and prints one JSON line per
family comparing the two runs.

    python tests/replica_worker.py [family ...]
"""

import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

# the graphs run twice on toy data: optimizing them would cost more than it saves
tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_families import FAMILIES, REPLICA_FAMILIES, dataset  # noqa: E402

from ddsim_gan.models.penalties import GradientPenalty  # noqa: E402

GLOBAL_BATCH, STEPS, LEARNING_RATE = 32, 2, 1e-3


def _event_code(encoded):
    """One number per event from its encoded conditions: the same on any replica."""
    width = tf.shape(encoded)[1]
    weights = tf.cast(tf.range(1, width + 1), tf.float32) / tf.cast(width, tf.float32)
    return tf.reduce_sum(tf.cast(encoded, tf.float32) * weights, axis=1, keepdims=True)


def make_draws_fixed(gan):
    latent = gan.latent_dim

    def draw_noise(encoded):
        k = tf.range(1, latent + 1, dtype=tf.float32)
        return tf.sin(_event_code(encoded) * 7.0 * k + k)

    def interpolation_weights(step, shape):
        return tf.reshape(0.5 + 0.5 * tf.sin(13.0 * _event_code(step.encoded)[:, 0]), shape)

    gan.draw_noise = draw_noise
    for penalty in gan.penalties:
        if isinstance(penalty, GradientPenalty):
            penalty.interpolation_weights = interpolation_weights
    if hasattr(gan, "observable_critic"):                      # the second critic's penalty
        gan.observable_interpolation_weights = lambda encoded, shape: tf.reshape(
            0.5 + 0.5 * tf.sin(11.0 * _event_code(encoded)[:, 0]), shape)


def networks(gan):
    return [gan.generator, gan.critic] + [getattr(gan, name) for name in (
        "regressor", "observable_critic") if hasattr(gan, name)]


_STRATEGIES = {}


def mirrored(devices):
    """One strategy per device set for the whole process: a second MirroredStrategy over the
    same devices can reuse collective instance keys (shape-mismatch aborts)."""
    key = tuple(devices)
    if key not in _STRATEGIES:
        _STRATEGIES[key] = tf.distribute.MirroredStrategy(devices)
    return _STRATEGIES[key]


def train(name, devices, initial):
    keras.utils.set_random_seed(1)
    strategy = mirrored(devices)
    with strategy.scope():
        family = FAMILIES[name]()
        for network, weights in zip(networks(family.gan), initial):
            network.set_weights(weights)
        make_draws_fixed(family.gan)
        # Adam with a large epsilon: its first step is lr g / (|g| + epsilon), which turns
        # round-off on a vanishing gradient into a full-size step unless epsilon is well above
        # it; plain SGD diverges on some critics (gradients of 1e4 in the hit features)
        optimizers = {key: keras.optimizers.Adam(LEARNING_RATE, epsilon=1e-3) for key in
                      ("generator_optimizer", "critic_optimizer",
                       *(key for key, _ in family.extra_optimizers))}
        family.gan.compile(**optimizers, jit_compile=False)
    history = family.gan.fit(dataset(family, GLOBAL_BATCH), epochs=1, steps_per_epoch=STEPS,
                             verbose=0, shuffle=False)
    weights = [w.numpy() for network in networks(family.gan) for w in network.weights]
    return weights, {k: float(v[-1]) for k, v in history.history.items()}


def compare(name):
    keras.utils.set_random_seed(1)
    initial = [network.get_weights() for network in networks(FAMILIES[name]().gan)]
    start = [w for weights in initial for w in weights]
    one, logs_one = train(name, ["/cpu:0"], initial)
    two, logs_two = train(name, ["/cpu:0", "/cpu:1"], initial)
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(one, start))
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(one, two))
    return {"family": name, "moved": moved, "worst": worst, "relative": worst / moved,
            "logs_1": logs_one, "logs_2": logs_two}


if __name__ == "__main__":
    for family_name in sys.argv[1:] or REPLICA_FAMILIES:
        print(json.dumps(compare(family_name)), flush=True)
