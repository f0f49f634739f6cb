"""The detector registry: ``get(name)`` returns the detector object for one of the seed systems.

Each detector module holds the geometry, the condition and observable names with their units,
and a parameterized reference simulator standing in for Geant4 (see its module docstring for the
physics and the sources of its parameters).
"""

from __future__ import annotations

import importlib

from .base import Condition, ConditionError, Detector

# name -> "module:Class"; modules are imported on first use so ``get`` stays cheap.
_REGISTRY = {
    "darkshine": "darkshine:DarkShineECAL",
    "darkside": "darkside:DarkSide20k",
    "lhcb_rich": "lhcb_rich:LHCbRICH",
    "lhcb_ecal": "lhcb_ecal:LHCbECAL",
    "mpd_tpc": "mpd_tpc:MPDTPC",
    "siw_ecal": "siw_ecal:SiWECAL",
    "luxe_dump": "luxe_dump:LUXEBeamDump",
}
_INSTANCES: dict[str, Detector] = {}


def names() -> list[str]:
    """Names of the detectors whose module is present in this installation."""
    return [name for name in _REGISTRY if importlib.util.find_spec(
        f"{__name__}.{_REGISTRY[name].split(':')[0]}") is not None]


def get(name: str) -> Detector:
    """Return the detector registered as ``name`` (one shared instance per name)."""
    if isinstance(name, Detector):
        return name
    if name not in _REGISTRY:
        raise KeyError(f"unknown detector {name!r}; known detectors: {', '.join(names())}")
    if name not in _INSTANCES:
        module_name, class_name = _REGISTRY[name].split(":")
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{module_name}":
                raise
            raise KeyError(f"detector {name!r} is registered but its module "
                           f"{__name__}.{module_name} is not installed") from None
        _INSTANCES[name] = getattr(module, class_name)()
    return _INSTANCES[name]


__all__ = ["Condition", "ConditionError", "Detector", "get", "names"]
