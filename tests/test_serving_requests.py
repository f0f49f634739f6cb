"""The exported SavedModel as TF Serving sees it: REST JSON and gRPC PredictRequest bodies, a real
tensorflow_model_server where one is installed, bad requests, and saved_model_cli's view."""

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from conftest import MiniCalo, tiny_conditional_gan
from ddsim_gan.export import export_savedmodel
from ddsim_gan.export.serving import (grpc_inputs, grpc_request, rest_inputs, rest_predict,
                                      rest_request, rest_response)

CONDITIONS = [[150.0], [500.0], [999.0], [2000.0]]     # MiniCalo is trained on 100-1000 MeV
SEED = 7


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny MiniCalo sampler exported in TF Serving's layout, its ``serving_default`` signature
    and what that signature returns for CONDITIONS and SEED."""
    base = tmp_path_factory.mktemp("serving")
    detector = MiniCalo()
    gan = tiny_conditional_gan("dense")
    version = export_savedmodel(
        gan.sampler, base, "tiny", 1, latent_dim=gan.latent_dim, n_conditions=1,
        metadata={"condition_ranges": detector.condition_ranges.tolist(),
                  "condition_names": list(detector.condition_names)})
    signature = tf.saved_model.load(str(version)).signatures["serving_default"]
    direct = signature(conditions=tf.constant(CONDITIONS, tf.float32),
                       seed=tf.constant(SEED, tf.int64))
    return version, signature, {name: value.numpy() for name, value in direct.items()}


# ---- (a) REST ---------------------------------------------------------------------------------
def test_rest_json_round_trip_gives_the_signature_samples(served):
    _, signature, direct = served
    body = json.dumps({"signature_name": "serving_default",
                       "inputs": {"conditions": CONDITIONS, "seed": SEED}})
    assert json.loads(body) == rest_request(CONDITIONS, SEED)
    inputs = rest_inputs(body, signature)
    assert inputs["conditions"].dtype == tf.float32 and inputs["seed"].dtype == tf.int64
    response = json.loads(json.dumps(rest_predict(signature, body)))    # through the wire format
    assert sorted(response["outputs"]) == ["in_range", "samples"]
    np.testing.assert_array_equal(np.asarray(response["outputs"]["samples"], np.float32),
                                  direct["samples"])
    assert response["outputs"]["in_range"] == [True, True, True, False]
    # JSON integers become the signature's float32, as TF Serving converts them
    ints = rest_inputs({"inputs": {"conditions": [[500]], "seed": 7}}, signature)
    assert ints["conditions"].dtype == tf.float32 and ints["conditions"].numpy()[0, 0] == 500.0
    # a one-output signature answers with the bare value
    assert rest_response({"samples": np.zeros((1, 2))}) == {"outputs": [[0.0, 0.0]]}


@pytest.mark.parametrize("body, fragment", [
    ({"instances": [{"conditions": [500.0], "seed": 7}]}, "row format"),
    ({"inputs": {"conditions": [[500.0]]}}, "missing ['seed']"),
    ({"inputs": {"conditions": [[500.0]], "seed": 7, "energy": 1.0}}, "unexpected ['energy']"),
    ({"inputs": {"conditions": [[500.0]], "seed": 7.5}}, "non-integer"),
    ({"inputs": {"conditions": [["500 MeV"]], "seed": 7}}, "input 'conditions' is float32"),
    ({"inputs": {"conditions": [[500.0], [1.0, 2.0]], "seed": 7}}, "not a rectangular"),
    ({"signature_name": "serving_default"}, "needs \"inputs\""),
])
def test_rest_bodies_tf_serving_refuses_are_refused(served, body, fragment):
    with pytest.raises(ValueError) as error:
        rest_inputs(body, served[1])
    assert fragment in str(error.value)


def test_a_flat_condition_list_over_rest_fails_in_the_graph(served):
    """A common client mistake, one event per list element without the inner brackets: the
    server passes the shape on, and the exported graph refuses it by name."""
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"matrix \[events, 1\] \(E\)"):
        rest_predict(served[1], {"inputs": {"conditions": [500.0, 700.0], "seed": 7}})


# ---- (b) gRPC ---------------------------------------------------------------------------------
def _predict_pb2():
    try:
        from tensorflow_serving.apis import predict_pb2
    except ImportError as error:
        pytest.skip(f"tensorflow-serving-api protos do not import: {error!r}")
    return predict_pb2


def test_grpc_predict_request_round_trip_gives_the_signature_samples(served):
    predict_pb2 = _predict_pb2()
    _, signature, direct = served
    wire = grpc_request(CONDITIONS, SEED, "tiny", version=1).SerializeToString()
    request = predict_pb2.PredictRequest.FromString(wire)
    assert (request.model_spec.name, request.model_spec.signature_name,
            request.model_spec.version.value) == ("tiny", "serving_default", 1)
    assert request.inputs["conditions"].dtype == tf.float32.as_datatype_enum
    assert request.inputs["seed"].dtype == tf.int64.as_datatype_enum
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["conditions"]), CONDITIONS)
    outputs = signature(**grpc_inputs(wire, signature))
    np.testing.assert_array_equal(outputs["samples"].numpy(), direct["samples"])
    np.testing.assert_array_equal(outputs["in_range"].numpy(), direct["in_range"])


def test_grpc_tensors_keep_their_dtype_and_a_wrong_one_is_refused(served):
    predict_pb2 = _predict_pb2()
    signature = served[1]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.inputs["conditions"].CopyFrom(tf.make_tensor_proto(np.float64(CONDITIONS)))
    request.inputs["seed"].CopyFrom(tf.make_tensor_proto(np.int64(SEED)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a float tensor"):
        signature(**grpc_inputs(request, signature))
    del request.inputs["seed"]
    with pytest.raises(ValueError, match=r"missing \['seed'\]"):
        grpc_inputs(request, signature)


# ---- (c) a real TF Serving --------------------------------------------------------------------
def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url, body=None, timeout=5.0):
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=timeout) as r:
        return json.loads(r.read())


def test_tensorflow_model_server_answers_the_rest_request(served, tmp_path):
    binary = shutil.which("tensorflow_model_server")
    if binary is None:
        pytest.skip("tensorflow_model_server is not on PATH (TF Serving ships it as a Docker "
                    "image and a Debian package from its own apt repository, neither of which "
                    "is installed here)")
    version, _, direct = served
    rest_port, grpc_port = _free_port(), _free_port()
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen([binary, f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                               "--model_name=tiny", f"--model_base_path={version.parent}"],
                              stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{rest_port}/v1/models/tiny"
    try:
        deadline = time.monotonic() + 25
        while True:                                          # bounded wait for the model
            try:
                status = _get_json(url)["model_version_status"][0]["state"]
                if status == "AVAILABLE":
                    break
            except (urllib.error.URLError, ConnectionError, KeyError, IndexError):
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "model not AVAILABLE after 25 s"
            time.sleep(0.25)
        response = _get_json(url + ":predict", rest_request(CONDITIONS, SEED))
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
    np.testing.assert_allclose(np.asarray(response["outputs"]["samples"], np.float32),
                               direct["samples"], rtol=1e-6)
    assert response["outputs"]["in_range"] == [True, True, True, False]


# ---- (d) bad requests at the signature --------------------------------------------------------
MATRIX = r"conditions must be a float32 matrix \[events, 1\] \(E\)"


@pytest.mark.parametrize("conditions, seed, fragment", [
    (tf.zeros([3, 2]), None, MATRIX + r", one row per event; got shape\] \[3 2\]"),
    (tf.constant([500.0, 700.0]), None, MATRIX + r".*\[2\]"),
    (tf.zeros([2, 1, 1]), None, MATRIX + r".*\[2 1 1\]"),
    (tf.constant(500.0), None, MATRIX),
    (tf.constant([[500.0]], tf.float64), None, "expected to be a float tensor but is a double"),
    (tf.constant([[500]], tf.int32), None, "expected to be a float tensor but is a int32"),
    (tf.constant([[500.0], [np.nan]]), None, "conditions contain NaN or inf"),
    (tf.constant([[np.inf]]), None, "conditions contain NaN or inf"),
    (tf.constant([[500.0]]), tf.constant([7], tf.int64), r"seed must be an int64 scalar"),
    (tf.constant([[500.0]]), tf.constant(7), "expected to be a int64 tensor but is a int32"),
], ids=["width", "rank1", "rank3", "rank0", "float64", "int32", "nan", "inf", "seed_vector",
        "seed_int32"])
def test_bad_requests_fail_with_a_clear_error(served, conditions, seed, fragment):
    seed = tf.constant(SEED, tf.int64) if seed is None else seed
    with pytest.raises(tf.errors.InvalidArgumentError, match=fragment):
        served[1](conditions=conditions, seed=seed)


def test_out_of_range_conditions_are_served_and_flagged(served):
    outputs = served[1](conditions=tf.constant([[50.0], [100.0], [1000.0], [5000.0], [-1.0]]),
                        seed=tf.constant(SEED, tf.int64))
    assert outputs["samples"].shape == (5, 4, 4, 3)
    assert np.isfinite(outputs["samples"].numpy()).all()
    assert outputs["in_range"].numpy().tolist() == [False, True, True, False, False]
    empty = served[1](conditions=tf.zeros([0, 1]), seed=tf.constant(SEED, tf.int64))
    assert empty["samples"].shape == (0, 4, 4, 3) and empty["in_range"].shape == (0,)


# ---- (e) saved_model_cli ----------------------------------------------------------------------
def test_saved_model_cli_lists_the_serving_signature(served):
    cli = shutil.which("saved_model_cli")
    if cli is None:
        pytest.skip("saved_model_cli (installed with tensorflow) is not on PATH")
    shown = subprocess.run([cli, "show", "--all", "--dir", str(served[0])], capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    block = shown.stdout.split("signature_def['serving_default']:")[1]
    block = block.split("signature_def[")[0].split("Concrete Functions")[0]
    inputs, outputs = block.split("following output(s):")
    for name, dtype, shape in (("conditions", "DT_FLOAT", "(-1, 1)"), ("seed", "DT_INT64", "()")):
        entry = inputs.split(f"inputs['{name}'] tensor_info:")[1]
        assert f"dtype: {dtype}" in entry.split("name:")[0]
        assert f"shape: {shape}" in entry.split("name:")[0]
    assert "outputs['samples']" in outputs and "outputs['in_range']" in outputs
    assert "shape: (-1, 4, 4, 3)" in outputs and "DT_BOOL" in outputs
    assert "Method name is: tensorflow/serving/predict" in block


def test_large_requests_are_generated_in_chunks_with_the_same_samples(tmp_path):
    """A request larger than the chunk runs the sampler on slices; the samples are those of one
    call with the same seed (the noise of the whole request is drawn first), for requests of
    0, 1, exactly one chunk, and several chunks with a short last one."""
    from ddsim_gan.export.savedmodel import serving_chunk

    gan = tiny_conditional_gan("dense")
    signatures = {}
    for chunk in (3, 1000):
        version = export_savedmodel(gan.sampler, tmp_path, f"chunk{chunk}", 1,
                                    latent_dim=gan.latent_dim, n_conditions=1, chunk=chunk)
        signatures[chunk] = tf.saved_model.load(str(version)).signatures["serving_default"]
    conditions = np.linspace(150.0, 950.0, 7, dtype=np.float32)[:, None]
    for n in (0, 1, 3, 7):
        c = tf.constant(conditions[:n])
        chunked, whole = (signatures[k](conditions=c, seed=tf.constant(SEED, tf.int64))
                          ["samples"].numpy() for k in (3, 1000))
        assert chunked.shape == whole.shape == (n, *gan.sampler.outputs[0].shape[1:])
        np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-6)
    assert signatures[3].structured_outputs["samples"].shape.as_list()[1:] == list(
        gan.sampler.outputs[0].shape[1:])
    assert serving_chunk(70_920) == 473 and serving_chunk(16) == 65_536


def test_an_exported_version_exports_again_with_the_same_samples(tmp_path):
    """``export_run`` on a version directory (its ``assets.extra``) traces the serving graph
    again: the same metadata and, for the same seed, the same samples; a directory with
    neither layout is refused with a message naming both."""
    from ddsim_gan.export import export_run

    gan = tiny_conditional_gan("dense")
    gan.sampler.save(tmp_path / "generator.keras")
    (tmp_path / "run.json").write_text(json.dumps({"recipe": "tiny", "detector": "mini"}))
    first = export_run(tmp_path, tmp_path / "base", version=1)
    second = export_run(first, tmp_path / "base", version=2)
    meta = [json.loads((v / "assets.extra" / "ddsim_gan.json").read_text())
            for v in (first, second)]
    assert meta[0] == meta[1] and meta[1]["recipe"] == "tiny"
    c = tf.constant(CONDITIONS, tf.float32)
    a, b = (tf.saved_model.load(str(v)).signatures["serving_default"](
        conditions=c, seed=tf.constant(SEED, tf.int64))["samples"].numpy()
        for v in (first, second))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(FileNotFoundError, match="no generator.keras with run.json"):
        export_run(tmp_path / "base", tmp_path / "other")
