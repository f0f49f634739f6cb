"""Generators, critics and the GANs that train them.

Importing this package registers every custom Keras layer of ddsim_gan (preprocessing, output
heads, physics features), so ``keras.saving.load_model`` can rebuild saved generators; it does not
import TensorFlow. :class:`ConditionalGAN` and the builders (TensorFlow training code) load on
first use.
"""

from ..data import preprocessing as _preprocessing  # noqa: F401  (registers the layers)
from . import networks as _networks  # noqa: F401
from . import layerwise as _layerwise  # noqa: F401
from . import calorimeter as _calorimeter  # noqa: F401
from . import components as _components  # noqa: F401  (parametric shower components)
from ..data import geometry_encoders as _geometry_encoders  # noqa: F401
from . import heads as _heads  # noqa: F401
from . import grid_quantiles as _grid_quantiles  # noqa: F401  (heads with conditional tables)
from . import quantile_map as _quantile_map  # noqa: F401  (post-training quantile mapping)
from . import regions as _regions  # noqa: F401  (region mixture; also imports chain)
from . import chain as _chain  # noqa: F401  (NoiseSlice; auto-regressive chain)
from . import resampling as _resampling  # noqa: F401  (classifier-weighted resampling)

_LAZY = {"ConditionalGAN": "gan", "build_conditional_gan": "builders",
         "build_vector_gan": "builders", "AutoregressiveChain": "chain",
         "ConditionalFlow": "flow", "AuxiliaryRegressorGAN": "auxiliary",
         "ObservableCriticGAN": "observable_critic"}


def load_generator(path):
    """Load a saved ``generator.keras`` (physical conditions and noise in, physical samples out)
    under whatever Keras backend is active."""
    import keras

    return keras.saving.load_model(path)


def load_gan(path):
    """Load a whole saved GAN (``model.keras``: generator, critics, optimizers and their
    learning-rate schedules) to continue training. Its classes live in the TensorFlow modules
    this package loads lazily; Keras can only rebuild what has been imported, so they are
    imported first."""
    import importlib

    import keras

    for module in (*sorted(set(_LAZY.values())), "binned_moments", "impact_moments",
                   "penalties"):
        importlib.import_module(f"{__name__}.{module}")
    importlib.import_module("ddsim_gan.schedules")
    return keras.saving.load_model(path)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AutoregressiveChain", "ConditionalFlow", "ConditionalGAN",
           "ObservableCriticGAN", "build_conditional_gan", "build_vector_gan", "load_gan",
           "load_generator"]
