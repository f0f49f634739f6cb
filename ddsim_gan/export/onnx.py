"""ONNX export of a sampler, for ONNX Runtime (C++, C#, Java, the browser) where neither TensorFlow
nor TF Serving is at hand.

The ONNX model is the Keras sampler itself: inputs ``conditions`` (float32 [N, c], physical
units) and ``noise`` (float32 [N, latent_dim], standard normal), one output, the physical
samples. ONNX has no counterpart of ``tf.random.stateless_normal``, so the caller draws the noise;
:func:`ddsim_gan.export.savedmodel.serving_noise` gives the noise the SavedModel draws for a
seed, and with it the same samples. Conversion goes through Keras' ``model.export(format="onnx")``
(tf2onnx on the TensorFlow backend; needs the ``tf2onnx`` and ``onnx`` packages, ``onnxruntime``
to run the result).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path


@functools.cache
def _register_missing_ops():
    """Teach tf2onnx the TensorFlow ops our samplers use that it has no handler for.

    ``Expm1`` (the inverse of the ``LogScale`` sample transform) is one: tf2onnx 1.17 copies it
    into the ONNX graph unchanged, and ONNX Runtime then refuses the file ("No Op registered for
    Expm1 with domain_version of 15"). It becomes ``Exp(x) - 1``, exact to float32 rounding for
    the cells the sampler reads out (above the threshold, x > 0.4).
    """
    import numpy as np
    from tf2onnx import utils
    from tf2onnx.handler import tf_op

    @tf_op("Expm1")
    class Expm1:  # noqa: F841 (registered by the decorator)
        @classmethod
        def version_1(cls, ctx, node, **kwargs):
            dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
            node.type = "Exp"
            one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype))
            ctx.insert_new_node_on_output("Sub", node.output[0], name=utils.make_name(node.name),
                                          inputs=[node.output[0], one.output[0]])


def export_onnx(sampler, path, opset=None) -> Path:
    """Write the Keras ``sampler`` (``[conditions, noise] -> physical samples``) to ``path`` as an
    ONNX model, and check that every node is a standard ONNX operator.

    Raises ``ValueError`` naming the operators ONNX does not know (tf2onnx writes a TensorFlow op
    it cannot convert into the file unchanged, and such a file does not load in ONNX Runtime; the
    file is removed), and ``ImportError`` when ``tf2onnx`` or ``onnx`` is missing.
    """
    try:
        import onnx
        import tf2onnx  # noqa: F401 (Keras imports it lazily; fail here with the reason)
    except ImportError as error:
        raise ImportError(f"ONNX export needs the tf2onnx and onnx packages "
                          f"(pip install tf2onnx onnx): {error}") from error
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"ONNX export goes through tf2onnx and needs the TensorFlow backend; "
                         f"KERAS_BACKEND is {keras.backend.backend()!r}")
    _register_missing_ops()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():   # Keras' numpy-2 patch of tf2onnx probes np.object
        warnings.filterwarnings("ignore", message=".*np.object", category=FutureWarning)
        sampler.export(str(path), format="onnx", verbose=False, opset_version=opset)
    model = onnx.load(str(path))
    unknown = sorted({f"{node.domain or 'ai.onnx'}::{node.op_type}" for node in model.graph.node
                      if not onnx.defs.has(node.op_type, node.domain)})
    if unknown:
        path.unlink()
        raise ValueError(f"{path}: tf2onnx cannot convert the TensorFlow operators {unknown} "
                         f"(it copies them unchanged, and no ONNX Runtime loads such a file)")
    onnx.checker.check_model(model)
    return path
