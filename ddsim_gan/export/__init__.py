"""Exporting generators: SavedModels for TF Serving and C++, ``.keras`` files for any backend."""

from .savedmodel import (export_run, export_savedmodel, next_version, servable_module,
                         write_models_config)

__all__ = ["export_run", "export_savedmodel", "next_version", "servable_module",
           "write_models_config"]
