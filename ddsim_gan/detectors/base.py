"""The detector contract: what every system in the registry tells the rest of the package.

A detector knows its conditions (names, units, valid ranges), the shape and units of one sample,
the geometry needed to compute shower observables, and how to produce reference data with its
parameterized simulator. Everything downstream (data readers, models, metrics, export) asks the
detector instead of hard-coding a system.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np


class ConditionError(ValueError):
    """Conditions that do not fit a detector: wrong width, non-finite or out-of-range values."""


@dataclass(frozen=True)
class Condition:
    """One conditioning variable.

    ``labels`` makes it categorical: the value stored in the conditions array is the index into
    ``labels`` (e.g. recoil type 0 = "NR", 1 = "ER").
    """

    name: str
    unit: str
    low: float
    high: float
    labels: tuple[str, ...] | None = None

    @property
    def is_categorical(self) -> bool:
        return self.labels is not None


class Detector(abc.ABC):
    """Base class of the registry's detectors.

    Subclasses set the class attributes and implement :meth:`sample_conditions` and
    :meth:`simulate_at`. Samples and conditions are float32 arrays in physical units.

    Attributes:
        name: registry key, e.g. ``"darkshine"``.
        conditions: one :class:`Condition` per column of the conditions array.
        sample_shape: shape of one sample, e.g. ``(20, 20, 11)``.
        sample_unit: unit of the sample values (e.g. ``"MeV"``) when they share one.
        sample_names: names of the sample components for vector outputs (``("S1", "S2", "f200")``),
            ``None`` for images.
        sample_units: per-component units for vector outputs.
        axes: names of the image axes, e.g. ``("x", "y", "layer")``; ``None`` for vector outputs.
        cell_size: cell pitch along each image axis in mm (for centres and widths in mm).
        threshold: readout threshold in ``sample_unit``; a cell above it is a hit.
        non_negative: whether every sample value must be >= 0 (energies, charges, photo-electrons);
            readers reject negative values for such detectors.
    """

    name: str = ""
    conditions: tuple[Condition, ...] = ()
    sample_shape: tuple[int, ...] = ()
    sample_unit: str | None = None
    sample_names: tuple[str, ...] | None = None
    sample_units: tuple[str, ...] | None = None
    axes: tuple[str, ...] | None = None
    cell_size: tuple[float, ...] | None = None
    threshold: float = 0.0
    non_negative: bool = True

    # ---- names and units -------------------------------------------------------------------
    @property
    def condition_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.conditions)

    @property
    def condition_units(self) -> tuple[str, ...]:
        return tuple(c.unit for c in self.conditions)

    @property
    def condition_ranges(self) -> np.ndarray:
        """``[c, 2]`` array of the (low, high) range each condition was simulated over."""
        return np.array([[c.low, c.high] for c in self.conditions], dtype=np.float64)

    @property
    def n_conditions(self) -> int:
        return len(self.conditions)

    @property
    def units(self) -> dict[str, str]:
        """Unit of every condition and of the samples (key ``"samples"`` or each sample name)."""
        units = {c.name: c.unit for c in self.conditions}
        if self.sample_names is not None:
            units.update(zip(self.sample_names, self.sample_units or ()))
        else:
            units["samples"] = self.sample_unit or ""
        return units

    def describe(self) -> str:
        conds = ", ".join(f"{c.name} [{c.unit}] in [{c.low:g}, {c.high:g}]" for c in self.conditions)
        return (f"detector {self.name!r}: conditions {conds}; samples {self.sample_shape} "
                f"in {self.units.get('samples', self.sample_units)}")

    # ---- validation --------------------------------------------------------------------------
    def check_conditions(self, conditions, source: str = "conditions", check_range: bool = False):
        """Return ``conditions`` as float32 ``[n, c]`` or raise :class:`ConditionError`.

        Categorical columns must hold integer indices into their labels.
        ``source`` names where the array came from (a file and dataset) so the message can say so.
        Out-of-range values are an error only with ``check_range``; elsewhere they are allowed
        (the model extrapolates) and :meth:`out_of_range_rows` reports them.
        """
        array = np.asarray(conditions)
        if array.ndim == 1 and self.n_conditions == 1:
            array = array[:, None]
        if array.ndim != 2 or array.shape[1] != self.n_conditions:
            raise ConditionError(
                f"{source}: shape {array.shape}, expected (N, {self.n_conditions}) for detector "
                f"{self.name!r} (conditions {', '.join(self.condition_names)})")
        if not np.issubdtype(array.dtype, np.number):
            raise ConditionError(f"{source}: dtype {array.dtype} is not numeric")
        array = array.astype(np.float32, copy=False)
        bad = ~np.isfinite(array)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ConditionError(
                f"{source}: non-finite value {array[row, col]} in row {row}, "
                f"column {col} ({self.condition_names[col]})")
        for col, condition in enumerate(self.conditions):
            if condition.is_categorical:
                values = array[:, col]
                bad = np.flatnonzero((values != np.round(values)) | (values < 0)
                                     | (values >= len(condition.labels)))
                if bad.size:
                    row = int(bad[0])
                    codes = ", ".join(f"{i} ({label})" for i, label in enumerate(condition.labels))
                    raise ConditionError(
                        f"{source}: row {row} has {condition.name} = {values[row]:g}; expected "
                        f"one of {codes} for detector {self.name!r}")
        if check_range:
            rows = self.out_of_range_rows(array)
            if rows.size:
                row = int(rows[0])
                raise ConditionError(
                    f"{source}: row {row} = {array[row].tolist()} is outside the simulated range "
                    f"{self.condition_ranges.tolist()} of detector {self.name!r}")
        return array

    def out_of_range_rows(self, conditions) -> np.ndarray:
        """Indices of rows with at least one condition outside its simulated range."""
        ranges = self.condition_ranges
        array = np.asarray(conditions, dtype=np.float64)
        outside = (array < ranges[:, 0]) | (array > ranges[:, 1])
        return np.flatnonzero(outside.any(axis=1))

    def check_samples(self, samples, source: str = "samples"):
        """Return ``samples`` as float32 ``[n, *sample_shape]`` or raise ``ValueError``."""
        array = np.asarray(samples)
        if array.shape[1:] != tuple(self.sample_shape):
            raise ValueError(
                f"{source}: shape {array.shape}, expected (N, {', '.join(map(str, self.sample_shape))}) "
                f"for detector {self.name!r}")
        return array.astype(np.float32, copy=False)

    # ---- reference simulation -------------------------------------------------------------
    @abc.abstractmethod
    def sample_conditions(self, n: int, seed=None) -> np.ndarray:
        """Draw ``n`` conditions from the reference spectrum: float32 ``[n, c]``."""

    @abc.abstractmethod
    def simulate_at(self, conditions, seed=None) -> np.ndarray:
        """Simulate one sample per row of ``conditions``: float32 ``[n, *sample_shape]``."""

    def simulate(self, n: int, seed=None) -> tuple[np.ndarray, np.ndarray]:
        """Draw conditions and simulate them: ``(conditions [n, c], samples [n, *sample_shape])``."""
        sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        condition_seed, sample_seed = sequence.spawn(2)
        conditions = self.sample_conditions(n, condition_seed)
        return conditions, self.simulate_at(conditions, sample_seed)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
