"""Generators, critics and the GANs that train them.

Importing this package registers every custom Keras layer of ddsim_gan (preprocessing, output
heads, physics features), so ``keras.saving.load_model`` can rebuild saved generators; it does not
import TensorFlow. :class:`ConditionalGAN` and the builders (TensorFlow training code) load on
first use.
"""

from ..data import preprocessing as _preprocessing  # noqa: F401  (registers the layers)
from . import networks as _networks  # noqa: F401

_LAZY = {"ConditionalGAN": "gan", "build_conditional_gan": "builders"}


def load_generator(path):
    """Load a saved ``generator.keras`` (physical conditions and noise in, physical samples out)
    under whatever Keras backend is active."""
    import keras

    return keras.saving.load_model(path)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ConditionalGAN", "build_conditional_gan", "load_generator"]
