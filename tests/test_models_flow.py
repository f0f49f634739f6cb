"""The TFP conditional masked autoregressive flow (the DarkSide likelihood baseline)."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from ddsim_gan import detectors
from ddsim_gan.export import export_savedmodel
from ddsim_gan.models.flow import ConditionalFlow


@pytest.fixture(scope="module")
def data():
    return detectors.get("darkside").simulate(4000, seed=0)


@pytest.fixture(scope="module")
def flow(data):
    return ConditionalFlow.for_detector(detectors.get("darkside"), *data, hidden=(16,),
                                        n_layers=2, n_quantiles=100, seed=0)


def test_log_prob_is_finite_and_training_lowers_it(flow, data):
    conditions, samples = data
    before = flow.log_prob(conditions[:500], samples[:500]).numpy()
    assert before.shape == (500,) and np.isfinite(before).all()
    history = flow.fit(conditions, samples, steps=60, batch_size=256, learning_rate=3e-3,
                       log_every=30, validation=(conditions[:500], samples[:500]))
    assert len(history["nll"]) == 2 and np.isfinite(history["nll"]).all()
    after = flow.log_prob(conditions[:500], samples[:500]).numpy()
    assert np.isfinite(after).all() and after.mean() > before.mean()


def test_sampling_shape_range_and_seed(flow, data):
    conditions, samples = data
    generated = flow.generate(conditions[:300], seed=1)
    assert generated.shape == (300, 3) and np.isfinite(generated).all()
    assert (generated >= samples.min(axis=0) - 1e-3).all()
    assert (generated <= samples.max(axis=0) + 1e-3).all()
    np.testing.assert_array_equal(generated, flow.generate(conditions[:300], seed=1))
    assert (flow.generate(conditions[:300], seed=2) != generated).any()
    assert flow.nbytes > 0


SERVE = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    model = tf.saved_model.load(sys.argv[1])
    serve = model.signatures["serving_default"]
    conditions = tf.constant([[10.0, 0.0], [200.0, 1.0]] * 5, tf.float32)
    a = serve(conditions=conditions, seed=tf.constant(3, tf.int64))["samples"].numpy()
    b = serve(conditions=conditions, seed=tf.constant(3, tf.int64))["samples"].numpy()
    ops = {op.type for f in model.serve.concrete_functions for op in f.graph.get_operations()}
    inputs = serve.structured_input_signature[1]
    print(json.dumps({"shape": a.shape, "same": bool((a == b).all()),
                      "inputs": {k: [v.dtype.name, v.shape.as_list()] for k, v in inputs.items()},
                      "py_ops": sorted(o for o in ops if "PyFunc" in o),
                      "ddsim_gan_loaded": "ddsim_gan" in sys.modules}))
""")


def test_savedmodel_export_has_the_gan_signature(flow, tmp_path):
    version = export_savedmodel(flow, tmp_path, "darkside_flow", latent_dim=flow.latent_dim,
                                n_conditions=flow.n_conditions, metadata={"model": "flow"})
    script = tmp_path / "serve.py"
    script.write_text(SERVE)
    completed = subprocess.run([sys.executable, "-I", str(script), str(version)],
                               capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["shape"] == [10, 3] and result["same"]
    assert result["inputs"] == {"conditions": ["float32", [None, 2]], "seed": ["int64", []]}
    assert result["py_ops"] == [] and not result["ddsim_gan_loaded"]
    # the exported graph agrees with the module for the same noise
    loaded = tf.saved_model.load(str(version))
    conditions = tf.constant([[50.0, 1.0]] * 4)
    served = loaded.signatures["serving_default"](conditions=conditions,
                                                  seed=tf.constant(9, tf.int64))["samples"]
    noise = tf.random.stateless_normal([4, 3], seed=tf.constant([9, 0x5EED], tf.int64))
    np.testing.assert_allclose(served.numpy(), flow([conditions, noise]).numpy(), rtol=1e-5)


def test_standardized_flow_trains_and_samples_in_range(data):
    conditions, samples = data
    flow = ConditionalFlow.for_detector(detectors.get("darkside"), conditions, samples,
                                        standardize=True, n_knots=4, hidden=(16,), n_layers=2,
                                        n_quantiles=100, seed=0)
    assert flow.standardizer is not None and flow.standardizer.space == "linear"
    before = flow.log_prob(conditions[:500], samples[:500]).numpy()
    flow.fit(conditions, samples, steps=30, batch_size=256, learning_rate=3e-3, log_every=30)
    after = flow.log_prob(conditions[:500], samples[:500]).numpy()
    assert np.isfinite(after).all() and after.mean() > before.mean()
    generated = flow.generate(conditions[:300], seed=1)
    assert generated.shape == (300, 3)
    assert (generated >= samples.min(axis=0) - 1e-3).all()
    assert (generated <= samples.max(axis=0) + 1e-3).all()
    # S1 follows the energy at once (the standardizer carries the conditional mean)
    low = generated[conditions[:300, 0] < 40, 0].mean()
    high = generated[conditions[:300, 0] > 200, 0].mean()
    assert high > 3 * low
