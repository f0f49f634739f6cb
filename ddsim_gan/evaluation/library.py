"""The shower-library baseline: replay stored showers instead of generating new ones.

Fast simulation in production often does not generate at all: CMS and ATLAS (frozen showers) and
LHCb keep a library of pre-simulated showers and, for each particle, replay a stored one whose
conditions are close, rescaled to the requested energy (seed 001 compares generative models with
such a library). :class:`ShowerLibrary` is that baseline with the interface of
:class:`~ddsim_gan.models.gan.ConditionalGAN`: ``generate(conditions, seed)`` in physical units,
so the report can put its fidelity, speed and size beside the GAN's
(:func:`~ddsim_gan.evaluation.report.compare_generators`).

It lives with the evaluation code because here it is a yardstick: it is not trained, is NumPy
and SciPy only, and is not exported for serving.

Lookup, for each requested row:

1. categorical conditions select the stored showers with exactly the same categories;
2. continuous conditions are compared in a standardized space: the logarithm for a condition
   whose range spans more than a factor 20 (as the GAN's ``ConditionEncoder``), then the mean and
   standard deviation of the stored conditions, so that no unit dominates the distance;
3. the ``k`` nearest stored showers (a ``scipy.spatial.cKDTree`` per category; showers at exactly
   the same conditions all count, so a library simulated at a few fixed energies draws from all
   showers at the nearest energy) form the pool, and one is drawn uniformly from it;
4. with ``energy_condition``, an image is multiplied by requested / stored energy and cells that
   fall below the readout threshold are zeroed.

``k = 1`` makes the lookup deterministic, and every request for the same condition returns the
same shower: the library has no spread. Larger ``k`` restores the spread at the price of
neighbours further away in condition space. The default ``k = 10`` keeps that distance small for
libraries of thousands of showers or more, and energy scaling corrects the first-order effect
along the energy axis.
"""

from __future__ import annotations

import os

import numpy as np
from scipy.spatial import cKDTree

from ..detectors import ConditionError, get as get_detector
from .report import atomic_write

#: Continuous conditions whose range spans more than this factor are compared in log space.
LOG_RANGE_RATIO = 20.0


class ShowerLibrary:
    """Nearest-neighbour replay of stored showers (see the module docstring).

    Args:
        detector: the detector (object or registry name).
        conditions: ``[n, c]`` physical conditions of the stored showers.
        samples: ``[n, *sample_shape]`` stored showers (float32 in the detector's units).
        energy_condition: name of a continuous condition to rescale images by (requested /
            stored); ``None`` replays showers unchanged. Not allowed for vector outputs.
        k: size of the pool of nearest showers each replayed shower is drawn from.
    """

    def __init__(self, detector, conditions, samples, energy_condition: str | None = None,
                 k: int = 10):
        self.detector = get_detector(detector)
        self.conditions = self.detector.check_conditions(conditions, "library conditions")
        self.samples = self.detector.check_samples(samples, "library samples")
        if len(self.samples) != len(self.conditions) or not len(self.samples):
            raise ValueError(f"library: {len(self.conditions)} conditions and "
                             f"{len(self.samples)} samples; need the same, non-zero number")
        if int(k) < 1:
            raise ValueError(f"library: k={k}, expected at least 1")
        self.k = int(k)
        self.energy_condition = energy_condition or None
        self._energy_index = None
        if self.energy_condition is not None:
            names = self.detector.condition_names
            if self.energy_condition not in names:
                raise ValueError(f"library: energy_condition {self.energy_condition!r} is not a "
                                 f"condition of detector {self.detector.name!r} "
                                 f"({', '.join(names)})")
            if self.detector.axes is None:
                raise ValueError(f"library: energy scaling applies to images; detector "
                                 f"{self.detector.name!r} has vector outputs "
                                 f"({', '.join(self.detector.sample_names or ())})")
            index = names.index(self.energy_condition)
            if self.detector.conditions[index].is_categorical:
                raise ValueError(f"library: energy_condition {self.energy_condition!r} is "
                                 "categorical")
            if not (self.conditions[:, index] > 0).all():
                raise ValueError(f"library: energy_condition {self.energy_condition!r} must be "
                                 "positive for every stored shower")
            self._energy_index = index
        self._build_index()

    # ---- the condition space ----------------------------------------------------------------
    def _build_index(self):
        conditions = self.detector.conditions
        self._categorical = [i for i, c in enumerate(conditions) if c.is_categorical]
        self._continuous = [i for i, c in enumerate(conditions) if not c.is_categorical]
        self._log = [conditions[i].low > 0
                     and conditions[i].high / conditions[i].low > LOG_RANGE_RATIO
                     and bool((self.conditions[:, i] > 0).all())
                     for i in self._continuous]
        space = self._transform(self.conditions)
        self._mean = space.mean(axis=0)
        std = space.std(axis=0)
        self._std = np.where(std > 0, std, 1.0)
        space = (space - self._mean) / self._std
        keys = self.conditions[:, self._categorical].astype(np.int64)
        self._groups = {}
        for key in {tuple(row) for row in keys}:
            rows = np.flatnonzero((keys == key).all(axis=1))
            # showers at identical conditions share one tree point that carries their count
            points, inverse, counts = np.unique(space[rows], axis=0, return_inverse=True,
                                                return_counts=True)
            order = np.argsort(inverse.ravel(), kind="stable")
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            self._groups[key] = (cKDTree(points), rows[order], starts, counts)

    def _transform(self, conditions) -> np.ndarray:
        """Continuous columns in (log where configured) physical space, float64 ``[n, c_cont]``
        (one zero column when every condition is categorical)."""
        if not self._continuous:
            return np.zeros((len(conditions), 1))
        values = np.asarray(conditions, np.float64)[:, self._continuous]
        if any(self._log):
            columns = np.array(self._log)
            values[:, columns] = np.log(np.clip(values[:, columns], 1e-300, None))
        return values

    def _standardized(self, conditions) -> np.ndarray:
        return (self._transform(conditions) - self._mean) / self._std

    # ---- generation -------------------------------------------------------------------------
    def lookup(self, conditions, seed=0) -> np.ndarray:
        """Index of the stored shower replayed for each row of ``conditions`` (reproducible per
        ``seed``)."""
        conditions = self.detector.check_conditions(conditions, "requested conditions")
        uniform = np.random.default_rng(seed).random(len(conditions))
        space = self._standardized(conditions)
        keys = conditions[:, self._categorical].astype(np.int64)
        chosen = np.empty(len(conditions), np.int64)
        for key in sorted({tuple(row) for row in keys}):
            rows = np.flatnonzero((keys == key).all(axis=1))
            if key not in self._groups:
                labels = ", ".join(
                    f"{self.detector.conditions[i].name} = "
                    f"{self.detector.conditions[i].labels[v]}"
                    for i, v in zip(self._categorical, key))
                raise ConditionError(
                    f"requested conditions: row {int(rows[0])} asks for {labels}, which the "
                    f"library of detector {self.detector.name!r} does not hold")
            chosen[rows] = self._draw(self._groups[key], space[rows], uniform[rows])
        return chosen

    def _draw(self, group, points, uniform) -> np.ndarray:
        tree, members, starts, counts = group
        n_points = min(self.k, tree.n)
        _, nearest = tree.query(points, k=n_points)
        nearest = np.asarray(nearest).reshape(len(points), n_points)
        cumulative = np.cumsum(counts[nearest], axis=1)
        # the pool: the nearest points until they hold at least k showers
        used = np.minimum((cumulative < self.k).sum(axis=1) + 1, n_points)
        pool = cumulative[np.arange(len(points)), used - 1]
        draw = np.minimum((uniform * pool).astype(np.int64), pool - 1)
        column = (cumulative <= draw[:, None]).sum(axis=1)
        before = np.where(column > 0, cumulative[np.arange(len(points)), column - 1], 0)
        point = nearest[np.arange(len(points)), column]
        return members[starts[point] + draw - before]

    def generate(self, conditions, seed=0) -> np.ndarray:
        """One stored shower per row of physical ``conditions`` (rescaled with
        ``energy_condition``): float32 ``[n, *sample_shape]``, reproducible per ``seed``."""
        conditions = self.detector.check_conditions(conditions, "requested conditions")
        index = self.lookup(conditions, seed)
        samples = self.samples[index]
        if self._energy_index is None:
            return samples
        scale = (conditions[:, self._energy_index].astype(np.float64)
                 / self.conditions[index, self._energy_index])
        scaled = samples * scale.reshape((-1,) + (1,) * (samples.ndim - 1))
        return np.where(scaled > self.detector.threshold, scaled, 0.0).astype(np.float32)

    # ---- size and storage -------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes of the stored conditions and showers (what a deployment has to ship)."""
        return int(self.conditions.nbytes + self.samples.nbytes)

    def __len__(self) -> int:
        return len(self.samples)

    def save(self, path) -> str:
        """Write the library to an ``.npz`` file (compressed; written atomically)."""
        path = os.fspath(path)

        def write(temporary):
            with open(temporary, "wb") as handle:
                np.savez_compressed(
                    handle, conditions=self.conditions, samples=self.samples,
                    detector=np.str_(self.detector.name),
                    energy_condition=np.str_(self.energy_condition or ""), k=np.int64(self.k))

        atomic_write(path, write)
        return path

    @classmethod
    def load(cls, path, detector=None) -> "ShowerLibrary":
        """Read a library written by :meth:`save`; ``detector`` defaults to the registry entry
        named in the file (give it for detectors outside the registry)."""
        path = os.fspath(path)
        with np.load(path, allow_pickle=False) as stored:
            name = str(stored["detector"])
            if detector is None:
                detector = get_detector(name)
            elif get_detector(detector).name != name:
                raise ValueError(f"{path}: library of detector {name!r}, not "
                                 f"{get_detector(detector).name!r}")
            return cls(detector, stored["conditions"], stored["samples"],
                       str(stored["energy_condition"]) or None, int(stored["k"]))

    def __repr__(self) -> str:
        return (f"<ShowerLibrary {self.detector.name!r}: {len(self)} showers, k={self.k}, "
                f"{self.nbytes / 2**20:.1f} MiB>")
