"""Shared fixtures: a tiny calorimeter that makes GAN tests take seconds, not minutes."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ddsim_gan.detectors import Condition, Detector

ROOT = Path(__file__).resolve().parents[1]

_JAX_SCRIPT = """
import sys
import numpy as np
import keras
import ddsim_gan.models  # registers the custom layers
assert keras.backend.backend() == "jax", keras.backend.backend()
inputs = np.load(sys.argv[1])
model = keras.saving.load_model(sys.argv[3])
np.save(sys.argv[2], np.asarray(model([inputs["conditions"], inputs["noise"]], training=False)))
"""


def samples_under_jax(keras_file, conditions, noise, tmp_path):
    """A ``[conditions, noise] -> samples`` ``.keras`` model's samples under the JAX backend,
    from a subprocess (the backend is fixed at import)."""
    np.savez(tmp_path / "inputs.npz", conditions=conditions, noise=noise)
    (tmp_path / "run.py").write_text(_JAX_SCRIPT)
    completed = subprocess.run(
        [sys.executable, str(tmp_path / "run.py"), str(tmp_path / "inputs.npz"),
         str(tmp_path / "out.npy"), str(keras_file)],
        env={**os.environ, "KERAS_BACKEND": "jax"}, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return np.load(tmp_path / "out.npy")


class MiniCalo(Detector):
    """4 x 4 cells x 3 layers; the shower sits at the centre and carries the condition energy."""

    name = "mini_calo"
    conditions = (Condition("E", "MeV", 100.0, 1000.0),)
    sample_shape = (4, 4, 3)
    sample_unit = "MeV"
    axes = ("x", "y", "layer")
    cell_size = (10.0, 10.0, 20.0)
    threshold = 0.5

    def sample_conditions(self, n, seed=None):
        return np.random.default_rng(seed).uniform(100, 1000, (n, 1)).astype(np.float32)

    def simulate_at(self, conditions, seed=None):
        energy = self.check_conditions(conditions)[:, 0]
        rng = np.random.default_rng(seed)
        shape = np.outer([0.1, 0.4, 0.4, 0.1], [0.1, 0.4, 0.4, 0.1])[:, :, None] * [0.5, 0.35, 0.15]
        fractions = rng.dirichlet(200 * shape.ravel(), len(energy)).reshape((-1, 4, 4, 3))
        samples = energy[:, None, None, None] * fractions
        return np.where(samples > self.threshold, samples, 0).astype(np.float32)


# Files that share the session's DarkSHINE quick run; under pytest-xdist they go to one worker so the
# 80-second recipe runs once, and every other file stays whole so its module fixtures run once too.
QUICK_RUN_FILES = {"test_benchmark.py", "test_cli.py", "test_recipe_darkshine.py",
                   "test_tool_resample_generator.py"}


@pytest.hookimpl(tryfirst=True)   # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        file_name = item.path.name
        group = "darkshine_quick_run" if file_name in QUICK_RUN_FILES else file_name
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def mini_calo():
    return MiniCalo()


@pytest.fixture(scope="session")
def mini_data(mini_calo):
    return mini_calo.simulate(512, seed=0)


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """The DarkSHINE recipe in quick mode, run once per session in a subprocess."""
    out = tmp_path_factory.mktemp("darkshine_quick")
    completed = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "darkshine_nnls_cgan.py"), "--quick",
         "--output-dir", str(out), "--no-plots"],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return out


def tiny_conditional_gan(architecture="dense", seed=0):
    """A ConditionalGAN for :class:`MiniCalo` with a few dozen units per layer, untrained: enough to
    test exports in well under a second. ``architecture="layerwise"`` is the DarkSHINE recipe's
    kind of model (layer-wise networks, ``EnergyShareHead`` with scattered deposits);
    ``architecture="components"`` its parametric shower components (``ShowerComponentsHead``)."""
    from ddsim_gan.models.builders import build_conditional_gan

    detector = MiniCalo()
    conditions, samples = detector.simulate(256, seed=seed)
    heads = {"layerwise": {"energy_condition": "E", "scattered_scale": 5.0, "layer_code": 8},
             "components": {"energy_condition": "E", "noise_sigma": 0.1, "photostat": 0.01,
                            "exact_energy": True}}
    head = {"architecture": architecture, **heads.get(architecture, {})}
    return build_conditional_gan(detector, conditions, samples, latent_dim=4,
                                 generator_hidden=(16,), critic_hidden=(16,), seed=seed, **head)


def small_compiled_gan(mini_calo, mini_data):
    """An 8-unit ConditionalGAN for the ``mini_calo`` data, one critic step, Adam 1e-3 for each
    network: the training-loop tests' model (resume, divergence)."""
    import keras

    from ddsim_gan.models.builders import build_conditional_gan

    conditions, samples = mini_data
    gan = build_conditional_gan(mini_calo, conditions, max_value=float(samples.max()),
                                latent_dim=4, generator_hidden=(8,), critic_hidden=(8,),
                                critic_steps=1, seed=0)
    gan.compile(generator_optimizer=keras.optimizers.Adam(1e-3),
                critic_optimizer=keras.optimizers.Adam(1e-3))
    return gan
