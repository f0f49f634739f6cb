"""Predict requests in TF Serving's two formats, for clients and for testing a client without a
server.

REST (``POST /v1/models/<name>:predict``) takes a JSON body in the columnar format,

    {"signature_name": "serving_default", "inputs": {"conditions": [[4000.0], [7900.0]], "seed": 7}}

and answers ``{"outputs": {"samples": [...], "in_range": [true, true]}}``. The row format
(``"instances"``) cannot carry this signature: it batches every input along a first axis, and the
seed is one scalar per request. gRPC (``PredictionService/Predict``) takes a ``PredictRequest``
whose inputs are ``TensorProto``s; :func:`grpc_request` builds one (it needs the
``tensorflow-serving-api`` package). JSON has no dtypes, so TF Serving converts each REST input
to the dtype the signature declares, as :func:`rest_inputs` does; a gRPC tensor keeps its own
dtype, and the signature refuses a wrong one. Shapes are checked by the exported graph itself
(:mod:`ddsim_gan.export.savedmodel`), so a helper here passes any shape on, as the server does.
"""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf

DEFAULT_SIGNATURE = "serving_default"


def input_specs(signature) -> dict:
    """``{name: tf.TensorSpec}`` of a signature's inputs (keyword arguments only, as in every
    SavedModel signature)."""
    return dict(signature.structured_input_signature[1])


def _check_names(given, signature, where):
    expected = set(input_specs(signature))
    missing, extra = sorted(expected - set(given)), sorted(set(given) - expected)
    if missing or extra:
        raise ValueError(f"{where}: the signature takes inputs {sorted(expected)}; "
                         f"missing {missing}, unexpected {extra}")


def rest_request(conditions, seed, signature_name=DEFAULT_SIGNATURE) -> dict:
    """The JSON body (as a dict; ``json.dumps`` it) of a REST predict request."""
    return {"signature_name": signature_name,
            "inputs": {"conditions": np.asarray(conditions, np.float32).tolist(),
                       "seed": int(seed)}}


def _json_tensor(name, value, spec) -> tf.Tensor:
    """A JSON value as a tensor of the spec's dtype, refusing what TF Serving would refuse."""
    dtype = spec.dtype.as_numpy_dtype
    if isinstance(value, dict):
        raise ValueError(f"input {name!r}: {{\"b64\": ...}} objects are for string inputs; "
                         f"{name!r} is {spec.dtype.name}")
    try:
        raw = np.asarray(value)
    except ValueError as error:          # ragged nested lists
        raise ValueError(f"input {name!r}: not a rectangular nested list ({error})") from None
    if raw.dtype.kind not in "biuf":
        raise ValueError(f"input {name!r} is {spec.dtype.name}; got {raw.dtype.kind!r}-kind "
                         f"values such as {raw.ravel()[:1].tolist()}")
    if np.issubdtype(dtype, np.integer) and raw.dtype.kind == "f":
        if not np.all(np.isfinite(raw) & (raw == np.round(raw))):
            raise ValueError(f"input {name!r} is {spec.dtype.name}; got non-integer values "
                             f"{raw.ravel()[:3].tolist()}")
    return tf.constant(raw.astype(dtype))


def rest_inputs(body, signature) -> dict:
    """The tensors TF Serving feeds to ``signature`` for a REST predict body (a JSON string,
    bytes or an already parsed dict), each converted to the dtype the signature declares.

    Raises ``ValueError`` for a body TF Serving would refuse: not an object, ``instances`` (row
    format), no ``inputs``, missing or unknown input names, values that are not numbers.
    """
    if isinstance(body, (str, bytes)):
        body = json.loads(body)
    if not isinstance(body, dict):
        raise ValueError(f"a predict body is a JSON object; got {type(body).__name__}")
    if "instances" in body:
        raise ValueError("the row format (\"instances\") batches every input along a first "
                         "axis, but the seed is one scalar per request: send "
                         "{\"inputs\": {\"conditions\": [[...], ...], \"seed\": 7}}")
    if "inputs" not in body:
        raise ValueError("a predict body needs \"inputs\" (columnar format); got keys "
                         f"{sorted(body)}")
    specs = input_specs(signature)
    inputs = body["inputs"]
    if not isinstance(inputs, dict):
        if len(specs) != 1:        # a bare value is allowed only for one-input signatures
            raise ValueError(f"\"inputs\" must name the inputs {sorted(specs)}")
        inputs = {next(iter(specs)): inputs}
    _check_names(inputs, signature, "REST predict body")
    return {name: _json_tensor(name, value, specs[name]) for name, value in inputs.items()}


def rest_response(outputs) -> dict:
    """TF Serving's REST answer to a columnar request for the signature's ``outputs``:
    ``{"outputs": {name: nested list}}``, or ``{"outputs": nested list}`` for a single output."""
    values = {name: np.asarray(value).tolist() for name, value in outputs.items()}
    return {"outputs": next(iter(values.values())) if len(values) == 1 else values}


def rest_predict(signature, body) -> dict:
    """What TF Serving answers to a REST predict ``body``, computed in process (for testing a
    client without a server): :func:`rest_inputs`, the signature, :func:`rest_response`."""
    return rest_response(signature(**rest_inputs(body, signature)))


def _serving_apis():
    try:
        from tensorflow_serving.apis import predict_pb2
    except ImportError as error:
        raise ImportError("gRPC requests need the tensorflow-serving-api package "
                          f"(pip install tensorflow-serving-api): {error}") from error
    return predict_pb2


def grpc_request(conditions, seed, model_name, signature_name=DEFAULT_SIGNATURE, version=None):
    """A ``tensorflow.serving.PredictRequest`` for ``PredictionService/Predict``: conditions as a
    float32 ``[events, c]`` tensor, the seed as an int64 scalar."""
    request = _serving_apis().PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs["conditions"].CopyFrom(
        tf.make_tensor_proto(np.asarray(conditions, np.float32)))
    request.inputs["seed"].CopyFrom(tf.make_tensor_proto(np.int64(seed)))
    return request


def grpc_inputs(request, signature) -> dict:
    """The tensors TF Serving feeds to ``signature`` for a ``PredictRequest`` (or its serialized
    bytes): each ``TensorProto`` as it is, dtype included."""
    if isinstance(request, bytes):
        request = _serving_apis().PredictRequest.FromString(request)
    _check_names(request.inputs, signature, f"PredictRequest for {request.model_spec.name!r}")
    return {name: tf.constant(tf.make_ndarray(proto)) for name, proto in request.inputs.items()}
