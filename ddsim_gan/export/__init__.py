"""Exporting generators: SavedModels for TF Serving and C++, ``.keras`` files for any backend."""

from .savedmodel import export_savedmodel, next_version, servable_module

__all__ = ["export_savedmodel", "next_version", "servable_module"]
