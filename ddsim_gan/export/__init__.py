"""Exporting generators: SavedModels for TF Serving and C++ (requests in TF Serving's formats in
:mod:`~ddsim_gan.export.serving`), ONNX for ONNX Runtime, ``.keras`` files for any backend."""

from .onnx import export_onnx
from .savedmodel import (export_run, export_savedmodel, next_version, servable_module,
                         serving_noise, write_models_config)

__all__ = ["export_onnx", "export_run", "export_savedmodel", "next_version", "servable_module",
           "serving_noise", "write_models_config"]
