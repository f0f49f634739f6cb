"""The exported model away from TensorFlow: the ``.keras`` copy in ``assets.extra`` under the JAX
backend, and the ONNX export under ONNX Runtime, each against the TF sampler and the SavedModel
for the same noise."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import MiniCalo, tiny_conditional_gan
from ddsim_gan.export import export_onnx, export_savedmodel, serving_noise

# the plain ConditionalGAN; DarkSHINE's EnergyShareHead; its parametric shower components
ARCHITECTURES = ("dense", "layerwise", "components")
SEED = 3


def assert_close(actual, expected):
    """Agreement to 1e-5 relative (cells near zero: 1e-6 of the largest cell)."""
    np.testing.assert_allclose(actual, expected, rtol=1e-5,
                               atol=1e-6 * float(np.abs(expected).max()))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Per architecture: the tiny sampler, its SavedModel (with ``generator.keras``), and the
    conditions, serving noise and TF outputs to compare against."""
    base = tmp_path_factory.mktemp("portability")
    detector = MiniCalo()
    conditions = np.linspace(100.0, 1000.0, 64, dtype=np.float32)[:, None]
    models = {}
    for architecture in ARCHITECTURES:
        gan = tiny_conditional_gan(architecture)
        keras_file = base / f"{architecture}.keras"
        gan.sampler.save(keras_file)
        version = export_savedmodel(
            gan.sampler, base / "models", architecture, 1, latent_dim=gan.latent_dim,
            n_conditions=1, keras_file=keras_file,
            metadata={"condition_ranges": detector.condition_ranges.tolist()})
        noise = serving_noise(len(conditions), gan.latent_dim, SEED).numpy()
        serve = tf.saved_model.load(str(version)).signatures["serving_default"]
        served = serve(conditions=tf.constant(conditions),
                       seed=tf.constant(SEED, tf.int64))["samples"].numpy()
        keras_out = keras.ops.convert_to_numpy(gan.sampler([conditions, noise]))
        # serving_noise is the served noise (other noise would give other showers); the graph
        # and eager Keras round the components' per-cell arithmetic differently, by ~1e-6
        assert_close(served, keras_out)
        assert (served > 0).any()
        models[architecture] = {"sampler": gan.sampler, "version": version, "noise": noise,
                                "tf": keras_out}
    return conditions, models


JAX_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import keras
    import ddsim_gan.models  # registers the custom layers
    assert keras.backend.backend() == "jax", keras.backend.backend()
    inputs = np.load(sys.argv[1])
    outputs = {}
    for architecture, keras_file in zip(sys.argv[3::2], sys.argv[4::2]):
        model = keras.saving.load_model(keras_file)
        outputs[architecture] = np.asarray(
            model([inputs["conditions"], inputs[architecture]], training=False))
    np.savez(sys.argv[2], **outputs)
""")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_exported_keras_file_gives_the_same_samples_under_jax(exported, tmp_path):
    conditions, models = exported
    np.savez(tmp_path / "inputs.npz", conditions=conditions,
             **{a: m["noise"] for a, m in models.items()})
    (tmp_path / "run.py").write_text(JAX_SCRIPT)
    args = [str(p) for a, m in models.items()
            for p in (a, m["version"] / "assets.extra" / "generator.keras")]
    completed = subprocess.run(
        [sys.executable, str(tmp_path / "run.py"), str(tmp_path / "inputs.npz"),
         str(tmp_path / "out.npz"), *args],
        env={**os.environ, "KERAS_BACKEND": "jax"}, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    for architecture, model in models.items():
        assert_close(out[architecture], model["tf"])


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_onnx_export_gives_the_same_samples(exported, architecture, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    pytest.importorskip("tf2onnx", reason="tf2onnx is not installed")

    conditions, models = exported
    model = models[architecture]
    path = export_onnx(model["sampler"], tmp_path / "sampler.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["conditions", "noise"]
    samples = session.run(None, {"conditions": conditions, "noise": model["noise"]})[0]
    assert samples.shape == (len(conditions), 4, 4, 3)
    assert_close(samples, model["tf"])          # = the SavedModel's samples for seed SEED


def test_onnx_export_names_the_operators_it_cannot_convert(tmp_path):
    pytest.importorskip("tf2onnx", reason="tf2onnx is not installed")

    conditions, noise = keras.Input((1,), name="conditions"), keras.Input((2,), name="noise")
    joined = keras.layers.Concatenate()([conditions, noise])
    sampler = keras.Model([conditions, noise], keras.layers.Lambda(          # Erfinv: no ONNX op
        lambda x: keras.ops.erfinv(keras.ops.tanh(x)))(joined))
    sampler([np.zeros((1, 1), "float32"), np.zeros((1, 2), "float32")])
    with pytest.raises(ValueError, match=r"cannot convert the TensorFlow operators.*Erfinv"):
        export_onnx(sampler, tmp_path / "sampler.onnx")
    assert not (tmp_path / "sampler.onnx").exists()
