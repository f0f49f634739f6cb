"""Custom GAN train_steps under tf.distribute (keras #20164 is the known sore): one step on one
replica and on two gives the same weights when the step's random draws are the same."""

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    sys.path.insert(0, sys.argv[1])
    from conftest import MiniCalo
    from ddsim_gan.data import dataset_from_arrays
    from ddsim_gan.models.builders import build_conditional_gan
    from ddsim_gan.models.gan import ConditionalGAN
    from ddsim_gan.models.penalties import GradientPenalty, ConservationPenalty

    class SameDraws(ConditionalGAN):
        # noise as a fixed function of each event's conditions: the same wherever it runs
        def draw_noise(self, encoded):
            k = tf.range(1, self.latent_dim + 1, dtype=tf.float32)
            return tf.sin(encoded[:, :1] * 7.0 * k + k)

    class SameInterpolation(GradientPenalty):
        def interpolation_weights(self, step, shape):
            u = 0.5 + 0.5 * tf.sin(13.0 * step.encoded[:, 0])
            return tf.reshape(u, shape)

    detector = MiniCalo()
    conditions, samples = detector.simulate(64, seed=0)

    def one_step(devices):
        keras.utils.set_random_seed(1)
        strategy = tf.distribute.MirroredStrategy(devices)
        with strategy.scope():
            gan = build_conditional_gan(detector, conditions, max_value=float(samples.max()),
                                        latent_dim=4, generator_hidden=(16,), critic_hidden=(16,),
                                        critic_steps=2, seed=3)
            weights = gan.get_weights()
            gan = SameDraws.from_config(gan.get_config())
            gan.set_weights(weights)
            gan.penalties[0] = SameInterpolation(10.0)
            gan.compile(generator_optimizer=keras.optimizers.Adam(1e-2),
                        critic_optimizer=keras.optimizers.Adam(1e-2))
        data = dataset_from_arrays(conditions, samples, 32, shuffle=False, repeat=True)
        history = gan.fit(data, epochs=1, steps_per_epoch=2, verbose=0, shuffle=False)
        return ([w.numpy() for w in gan.generator.weights + gan.critic.weights],
                {k: float(v[-1]) for k, v in history.history.items()})

    weights_1, logs_1 = one_step(["/cpu:0"])
    weights_2, logs_2 = one_step(["/cpu:0", "/cpu:1"])
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(weights_1, weights_2))
    moved = max(float(np.max(np.abs(a))) for a in weights_1)
    print(json.dumps({"worst": worst, "moved": moved, "logs_1": logs_1, "logs_2": logs_2}))
""")


def test_two_replicas_train_like_one(tmp_path):
    from conftest import ROOT

    script = tmp_path / "mirrored.py"
    script.write_text(SCRIPT)
    completed = subprocess.run([sys.executable, str(script), str(ROOT / "tests")],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["moved"] > 0
    assert result["worst"] < 1e-5, result
    for key in ("critic_loss", "generator_loss", "gradient_penalty"):
        assert result["logs_1"][key] == pytest.approx(result["logs_2"][key], rel=1e-4, abs=1e-6)
