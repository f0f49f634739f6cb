"""HDF5 shards in and out.

Two layouts are read:

``ddsim_gan`` (written by :func:`write_shards` and :class:`ShardWriter`)
    datasets ``conditions`` float32 ``[n, c]`` and ``samples`` float32 ``[n, *sample_shape]``,
    chunked by rows, with file attributes ``detector``, ``condition_names`` (JSON list), ``units``
    (JSON dict), ``sample_shape``, ``format = "ddsim_gan.shard"``, ``format_version`` and
    ``ddsim_gan_version``. The text attributes are fixed-length UTF-8 strings (h5py reads them
    as ``bytes``; ``.decode()`` them), so a shard holds no HDF5 global heap: HDF5 1.14's
    global-heap reader loops forever on some corrupt heaps (tests/test_reader_fuzz.py), and a
    damaged shard must raise, not hang. Shards with variable-length string attributes (written
    before) are read as well.
``calochallenge`` (Fast Calorimeter Simulation Challenge 2022)
    datasets ``incident_energies`` ``[n, 1]`` MeV and ``showers`` ``[n, voxels]`` MeV; the voxels are
    reshaped to the detector's ``sample_shape`` when a detector is given.

Every file is written atomically (a temporary name in the same directory, then ``os.replace``), so
a reader never sees half a shard, and every chunk carries a Fletcher-32 checksum, so a flipped
byte in the data is an error rather than a silently different value. Every problem with an input
file raises :class:`~ddsim_gan.data.errors.DataFormatError` naming the file, the dataset and the
first bad row.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import re
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..detectors import get as get_detector
from ..detectors.base import Detector
from .errors import DataFormatError

FORMAT = "ddsim_gan.shard"
FORMAT_VERSION = 1
_CHUNK_BYTES = 1 << 20  # target size of one HDF5 chunk
_LAYOUTS = {"ddsim_gan": ("conditions", "samples"),
            "calochallenge": ("incident_energies", "showers")}


# ---- helpers -------------------------------------------------------------------------------------
def _detector(detector) -> Detector | None:
    if detector is None or isinstance(detector, Detector):
        return detector
    try:
        return get_detector(detector)
    except KeyError as error:
        raise ValueError(error.args[0]) from None


def _bad_row(mask: np.ndarray) -> int | None:
    """First row of ``mask`` (``[n, ...]``) with a True entry, or None."""
    rows = mask.reshape(len(mask), -1).any(axis=1)
    return int(np.argmax(rows)) if rows.any() else None


def _as_float32(array: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # values beyond float32 become inf: reported as such
        return array.astype(np.float32, copy=False)


def _overflowed(original, cast) -> str | None:
    """``"value 1e+300 (beyond float32)"`` for the first finite value that became inf in ``cast``."""
    original = np.asarray(original)
    if original.dtype == np.float32:
        return None
    lost = np.isinf(cast) & np.isfinite(original)
    return f"value {original[lost].flat[0]:g} (beyond the float32 range)" if lost.any() else None


def _check_values(array, source: str, *, non_negative: bool = False, detector_name: str = "",
                  row_offset: int = 0, error=DataFormatError) -> np.ndarray:
    """Numeric, finite (and non-negative) float32 ``array``, or ``error`` naming the first bad row."""
    array = np.asarray(array)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise error(f"{source} has dtype {array.dtype}, expected a numeric type")
    original = array
    array = _as_float32(array)
    if array.size == 0:
        return array
    # fast path, one pass each: NaN and inf propagate into the sum
    with np.errstate(invalid="ignore"):  # inf - inf in the sum
        if np.isfinite(array.sum(dtype=np.float64)) and not (non_negative and array.min() < 0):
            return array
    for test, what in ((np.isnan, "NaN"), (np.isinf, "inf")):
        row = _bad_row(test(array))
        if row is not None:
            raise error(f"{source} row {row + row_offset} contains "
                        f"{_overflowed(original[row], array[row]) or what}")
    if non_negative:
        row = _bad_row(array < 0)
        if row is not None:
            value = array[row].min()
            raise error(f"{source} row {row + row_offset} contains negative value {value:g}, but "
                        f"detector {detector_name!r} requires non-negative samples")
    return array


def _check_arrays(conditions, samples, detector: Detector, *, what: str = "",
                  row_offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Validate in-memory arrays about to be written; ``ValueError`` names the first bad row."""
    prefix = f"{what}: " if what else ""
    conditions = np.asarray(conditions)
    samples = np.asarray(samples)
    if conditions.ndim == 0 or samples.ndim == 0 or len(conditions) != len(samples):
        raise ValueError(f"{prefix}conditions have shape {conditions.shape} and samples "
                         f"{samples.shape}: the row counts differ")
    conditions = _check_values(conditions, f"{prefix}conditions", row_offset=row_offset,
                               error=ValueError)
    conditions = detector.check_conditions(conditions, f"{prefix}conditions")
    samples = detector.check_samples(samples, f"{prefix}samples")
    samples = _check_values(samples, f"{prefix}samples", non_negative=detector.non_negative,
                            detector_name=detector.name, row_offset=row_offset, error=ValueError)
    return np.ascontiguousarray(conditions), np.ascontiguousarray(samples)


def _chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    row_bytes = 4 * max(1, math.prod(shape[1:]))
    rows = max(1, min(shape[0], _CHUNK_BYTES // row_bytes))
    return (rows,) + tuple(shape[1:])


@contextlib.contextmanager
def _atomic_h5(path: Path):
    """Yield an open HDF5 file that appears at ``path`` only if the block completes."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            yield f
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _text(value: str) -> np.bytes_:
    """A fixed-length UTF-8 string attribute: stored in the attribute itself, not in a global
    heap (module docstring)."""
    return np.bytes_(value.encode("utf-8") or b"\0")


def _write_ddsim(path: Path, conditions, samples, detector: Detector, compression) -> Path:
    with _atomic_h5(path) as f:
        for name, array in (("conditions", conditions), ("samples", samples)):
            f.create_dataset(name, data=array, dtype="float32", chunks=_chunks(array.shape),
                             compression=compression, fletcher32=True)
        f.attrs["detector"] = _text(detector.name)
        f.attrs["condition_names"] = _text(json.dumps(list(detector.condition_names)))
        f.attrs["units"] = _text(json.dumps(detector.units))
        f.attrs["sample_shape"] = np.asarray(detector.sample_shape, dtype=np.int64)
        f.attrs["format"] = _text(FORMAT)
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["ddsim_gan_version"] = _text(__version__)
    return path


def _existing_shards(directory: Path, prefix: str) -> list[Path]:
    pattern = re.compile(rf"{re.escape(prefix)}-\d{{5}}(-of-\d{{5}})?\.h5")
    return sorted(p for p in directory.glob(f"{glob.escape(prefix)}-*.h5")
                  if pattern.fullmatch(p.name))


def _refuse_overwrite(directory: Path, prefix: str, overwrite: bool) -> list[Path]:
    existing = _existing_shards(directory, prefix)
    if existing and not overwrite:
        raise FileExistsError(
            f"{directory}: {len(existing)} shard(s) with prefix {prefix!r} already exist "
            f"(e.g. {existing[0].name}); pass overwrite=True to replace them")
    return existing


def _remove_stale(stale: list[Path], written: list[Path]) -> None:
    keep = {p.resolve() for p in written}
    for path in stale:
        if path.resolve() not in keep:
            path.unlink(missing_ok=True)


# ---- writing -------------------------------------------------------------------------------------
def write_shards(directory, conditions, samples, detector, *, shard_size: int = 10_000,
                 prefix: str = "shard", compression="lzf", overwrite: bool = False) -> list[Path]:
    """Write ``(conditions, samples)`` as ``{prefix}-{i:05d}-of-{n:05d}.h5`` shards of ``shard_size`` rows.

    The arrays are validated first (shapes against ``detector``, finite values, non-negative
    samples where the detector requires it); a ``ValueError`` names the first bad row and nothing
    is written. Existing shards with the same prefix are an error unless ``overwrite``, which
    replaces the whole set. Returns the written paths in order.
    """
    detector = _detector(detector)
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    conditions, samples = _check_arrays(conditions, samples, detector)
    if len(conditions) == 0:
        raise ValueError("no rows to write")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stale = _refuse_overwrite(directory, prefix, overwrite)
    n_shards = math.ceil(len(conditions) / shard_size)
    paths = []
    for i in range(n_shards):
        rows = slice(i * shard_size, (i + 1) * shard_size)
        path = directory / f"{prefix}-{i:05d}-of-{n_shards:05d}.h5"
        paths.append(_write_ddsim(path, conditions[rows], samples[rows], detector, compression))
    _remove_stale(stale, paths)
    return paths


class ShardWriter:
    """Stream rows into ``{prefix}-{i:05d}.h5`` shards of ``shard_size`` rows.

    ``write`` validates and buffers; every full shard is written at once (atomically) and
    ``close`` writes the remainder. If the ``with`` block raises, the buffered rows are dropped:
    the shards already written stay valid and no temporary file is left behind.

        with ShardWriter("out", "darkshine", shard_size=50_000) as writer:
            for seed in range(10):
                writer.write(*detector.simulate(10_000, seed))
    """

    def __init__(self, directory, detector, *, shard_size: int = 10_000, prefix: str = "shard",
                 compression="lzf", overwrite: bool = False):
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.directory = Path(directory)
        self.detector = _detector(detector)
        self.shard_size = shard_size
        self.prefix = prefix
        self.compression = compression
        self.directory.mkdir(parents=True, exist_ok=True)
        self._stale = _refuse_overwrite(self.directory, prefix, overwrite)
        self.paths: list[Path] = []
        self.n_written = 0  # rows in completed shards
        self._buffer: list[tuple[np.ndarray, np.ndarray]] = []
        self._buffered = 0
        self._closed = False

    def write(self, conditions, samples) -> None:
        """Add rows; row numbers in error messages count from the first row ever written."""
        if self._closed:
            raise ValueError("write to a closed ShardWriter")
        conditions, samples = _check_arrays(conditions, samples, self.detector,
                                            row_offset=self.n_written + self._buffered)
        self._buffer.append((conditions, samples))
        self._buffered += len(conditions)
        while self._buffered >= self.shard_size:
            self._flush(self.shard_size)

    def _flush(self, n: int) -> None:
        conditions = np.concatenate([c for c, _ in self._buffer])
        samples = np.concatenate([s for _, s in self._buffer])
        path = self.directory / f"{self.prefix}-{len(self.paths):05d}.h5"
        _write_ddsim(path, conditions[:n], samples[:n], self.detector, self.compression)
        self.paths.append(path)
        self.n_written += n
        self._buffer = [(conditions[n:], samples[n:])] if n < len(conditions) else []
        self._buffered = len(conditions) - n

    def close(self) -> list[Path]:
        """Write the remaining rows; returns the paths of all shards written."""
        if not self._closed:
            if self._buffered:
                self._flush(self._buffered)
            self._closed = True
            _remove_stale(self._stale, self.paths)
        return self.paths

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self._buffer, self._buffered, self._closed = [], 0, True
        return False


def write_calochallenge(path, incident_energies, showers, *, compression="gzip") -> Path:
    """Write the CaloChallenge layout: ``incident_energies`` ``[n, 1]`` and ``showers`` ``[n, voxels]``."""
    path = Path(path)
    energies = np.asarray(incident_energies)
    showers = np.asarray(showers)
    if energies.ndim == 0 or showers.ndim == 0 or len(energies) != len(showers):
        raise ValueError(f"incident_energies have shape {energies.shape} and showers "
                         f"{showers.shape}: the row counts differ")
    if len(energies) == 0:
        raise ValueError("no rows to write")
    energies = _check_values(energies.reshape(len(energies), -1), "incident_energies",
                             error=ValueError)
    if energies.shape[1] != 1:
        raise ValueError(f"incident_energies: shape {energies.shape}, expected (N, 1)")
    showers = _check_values(showers.reshape(len(showers), -1), "showers", error=ValueError)
    with _atomic_h5(path) as f:
        f.create_dataset("incident_energies", data=energies, chunks=_chunks(energies.shape),
                         compression=compression, fletcher32=True)
        f.create_dataset("showers", data=showers, chunks=_chunks(showers.shape),
                         compression=compression, fletcher32=True)
    return path


# ---- reading -------------------------------------------------------------------------------------
def _open(path: Path) -> h5py.File:
    if not path.exists():
        raise DataFormatError(f"{path}: no such file")
    if path.is_dir():
        raise DataFormatError(f"{path}: is a directory, expected an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise DataFormatError(f"{path}: not an HDF5 file or truncated ({error})") from None


def _dataset_names(f: h5py.File) -> list[str]:
    names = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _attr(f: h5py.File, key: str, path: Path, default=None):
    if key not in f.attrs:
        return default
    value = f.attrs[key]
    if isinstance(value, bytes):
        value = value.decode()
    if key in ("condition_names", "units"):
        try:
            return json.loads(value)
        except (TypeError, ValueError):
            raise DataFormatError(f"{path}: attribute {key!r} = {value!r} is not valid JSON") from None
    if key == "sample_shape":
        return tuple(int(v) for v in np.atleast_1d(value))
    return value.item() if isinstance(value, np.generic) else value


# what h5py raises for damaged metadata (object headers, attributes, B-trees, heaps): found by
# flipping bytes of valid files (tests/test_reader_fuzz.py)
_CORRUPT = (OSError, RuntimeError, KeyError, TypeError, ValueError)


@contextlib.contextmanager
def _corrupt_as_data_format_error(path: Path):
    """Turn h5py's errors on a damaged file into :class:`DataFormatError` naming the file."""
    try:
        yield
    except DataFormatError:
        raise
    except _CORRUPT as error:
        raise DataFormatError(f"{path}: corrupt HDF5 file ({type(error).__name__}: {error})") from None


def _inspect(f: h5py.File, path: Path) -> dict:
    """Layout, datasets and attributes of an open file; checks structure, not values."""
    with _corrupt_as_data_format_error(path):
        return _inspect_structure(f, path)


def _inspect_structure(f: h5py.File, path: Path) -> dict:
    present = set(_dataset_names(f))
    if _attr(f, "format", path) == FORMAT or present & set(_LAYOUTS["ddsim_gan"]):
        layout = "ddsim_gan"
    elif present & set(_LAYOUTS["calochallenge"]):
        layout = "calochallenge"
    else:
        raise DataFormatError(
            f"{path}: no datasets 'conditions' and 'samples' (ddsim_gan layout) or "
            f"'incident_energies' and 'showers' (CaloChallenge layout); the file has "
            f"{', '.join(map(repr, sorted(present))) or 'no datasets'}")
    cond_name, sample_name = _LAYOUTS[layout]
    for name in (cond_name, sample_name):
        if name not in present:
            raise DataFormatError(f"{path}: missing dataset {name!r} ({layout} layout); the file has "
                                  f"{', '.join(map(repr, sorted(present)))}")
    cond, samples = f[cond_name], f[sample_name]
    for name, dset in ((cond_name, cond), (sample_name, samples)):
        if dset.dtype.kind not in "fiu":
            raise DataFormatError(f"{path}: dataset {name!r} has dtype {dset.dtype}, "
                                  f"expected a numeric type")
        if dset.ndim == 0:
            raise DataFormatError(f"{path}: dataset {name!r} is a scalar, expected one row per event")
    if cond.shape[0] != samples.shape[0]:
        raise DataFormatError(f"{path}: dataset {cond_name!r} has {cond.shape[0]} rows but "
                              f"{sample_name!r} has {samples.shape[0]}")
    if samples.shape[0] == 0:
        raise DataFormatError(f"{path}: datasets {cond_name!r} and {sample_name!r} are empty (0 rows)")
    if cond.ndim > 2:
        raise DataFormatError(f"{path}: dataset {cond_name!r} has shape {cond.shape}, expected (N, c)")
    return {
        "layout": layout,
        "datasets": (cond_name, sample_name),
        "n_rows": int(samples.shape[0]),
        "condition_shape": tuple(cond.shape[1:]) or (1,),
        "stored_sample_shape": tuple(samples.shape[1:]),
        "detector": _attr(f, "detector", path),
        "condition_names": _attr(f, "condition_names", path),
        "units": _attr(f, "units", path),
        "sample_shape": _attr(f, "sample_shape", path),
    }


def _resolve_for_file(info: dict, detector, path: Path) -> Detector | None:
    """The detector to check a file against; the file's own name when none is requested."""
    stored = info["detector"]
    if detector is None:
        if stored is None:
            return None
        try:
            return get_detector(stored)
        except KeyError:  # written by a detector this installation does not know: trust the attrs
            return None
    detector = _detector(detector)
    if stored is not None and stored != detector.name:
        raise DataFormatError(f"{path}: written for detector {stored!r}, "
                              f"but detector {detector.name!r} was requested")
    return detector


def _target_shapes(info: dict, detector: Detector | None, path: Path) -> tuple[int, tuple]:
    """``(n_conditions, sample_shape)`` the arrays of the file must have (after reshaping)."""
    cond_name, sample_name = info["datasets"]
    stored = info["stored_sample_shape"]
    width = info["condition_shape"][0]
    if detector is not None:
        if width != detector.n_conditions:
            raise DataFormatError(
                f"{path}: dataset {cond_name!r} has {width} column(s), expected {detector.n_conditions} "
                f"({', '.join(detector.condition_names)}) for detector {detector.name!r}")
        expected = tuple(detector.sample_shape)
    else:
        names = info["condition_names"]
        if names is not None and width != len(names):
            raise DataFormatError(f"{path}: dataset {cond_name!r} has {width} column(s), but the "
                                  f"attribute 'condition_names' lists {len(names)}: {names}")
        expected = tuple(info["sample_shape"]) if info["sample_shape"] is not None else stored
    if info["layout"] == "calochallenge" and len(stored) == 1 and math.prod(expected) == stored[0]:
        return width, expected
    if stored != expected:
        target = f" for detector {detector.name!r}" if detector is not None else " (attribute 'sample_shape')"
        raise DataFormatError(
            f"{path}: dataset {sample_name!r} has shape {(info['n_rows'],) + stored}, expected "
            f"(N, {', '.join(map(str, expected))}){target}")
    return width, expected


def _read_array(f: h5py.File, name: str, path: Path, rows=slice(None)) -> np.ndarray:
    try:
        return np.asarray(f[name][rows])
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as error:
        hint = ("; a chunk failed its checksum or decompression: the file is corrupt"
                if "filter returned failure" in str(error) else "")
        raise DataFormatError(f"{path}: dataset {name!r} could not be read ({error}){hint}") from None


def _read(path, detector, validate: bool, layout: str | None = None):
    path = Path(path)
    with _open(path) as f:
        info = _inspect(f, path)
        if layout is not None and info["layout"] != layout:
            raise DataFormatError(f"{path}: has the {info['layout']} layout, expected {layout}")
        det = _resolve_for_file(info, detector, path)
        width, shape = _target_shapes(info, det, path)
        cond_name, sample_name = info["datasets"]
        conditions = _read_array(f, cond_name, path)
        samples = _read_array(f, sample_name, path)
    conditions = conditions.reshape(len(conditions), width)
    samples = samples.reshape((len(samples),) + tuple(shape))
    if not validate:
        return _as_float32(conditions), _as_float32(samples)
    # validated in the stored dtype, so a double beyond float32 is named as such
    conditions = _check_values(conditions, f"{path}: dataset {cond_name!r}")
    samples = _check_values(samples, f"{path}: dataset {sample_name!r}",
                            non_negative=det is not None and det.non_negative,
                            detector_name=det.name if det is not None else "")
    return conditions, samples


def read_shard(path, detector=None, *, validate: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Read one file of either layout: ``(conditions float32 [n, c], samples float32 [n, *shape])``.

    ``detector`` (a name or a :class:`Detector`) fixes the expected shapes and, for CaloChallenge
    files, the shape the flat voxels are reshaped to; by default the detector named in the file's
    attributes is used. With ``validate`` the values are checked too (finite, and non-negative
    samples for detectors that require it). Raises :class:`DataFormatError` for any problem.
    """
    return _read(path, detector, validate)


def read_calochallenge(path, detector=None, *, validate: bool = True):
    """Read a CaloChallenge file: ``(incident_energies [n, 1], showers [n, voxels] or [n, *shape])``."""
    return _read(path, detector, validate, layout="calochallenge")


def read_shards(paths, detector=None, validate: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Read and concatenate several files (a list, a directory or a glob) with equal shapes."""
    files = find_shards(paths) if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    if not files:
        raise DataFormatError("read_shards: no files given")
    parts = []
    for path in files:
        conditions, samples = read_shard(path, detector, validate=validate)
        if parts and (conditions.shape[1:], samples.shape[1:]) != (parts[0][0].shape[1:],
                                                                   parts[0][1].shape[1:]):
            raise DataFormatError(
                f"{path}: conditions {conditions.shape[1:]} and samples {samples.shape[1:]} per row "
                f"differ from {files[0]} ({parts[0][0].shape[1:]} and {parts[0][1].shape[1:]})")
        parts.append((conditions, samples))
    return (np.concatenate([c for c, _ in parts]), np.concatenate([s for _, s in parts]))


def find_shards(path, prefix: str | None = None) -> list[Path]:
    """Sorted HDF5 files named by ``path``: a file, a directory (its ``*.h5``) or a glob pattern.

    With ``prefix`` only files named ``{prefix}-*.h5`` are kept. A list of such paths is accepted
    too. Raises :class:`DataFormatError` when nothing is found.
    """
    if isinstance(path, (list, tuple)):
        return sorted({p for item in path for p in find_shards(item, prefix)})
    path = Path(path)
    if path.is_dir():
        found = path.glob(f"{glob.escape(prefix)}-*.h5" if prefix else "*.h5")
    elif path.is_file():
        found = [path]
    else:
        found = (Path(p) for p in glob.glob(str(path)))
    files = sorted(p for p in found if p.is_file()
                   and (prefix is None or p.name.startswith(f"{prefix}-")))
    if not files:
        what = f" with prefix {prefix!r}" if prefix else ""
        raise DataFormatError(f"{path}: no HDF5 files found{what}")
    return files


def shard_info(path, detector=None) -> dict:
    """Describe a file without reading its arrays.

    Returns ``path``, ``layout`` (``"ddsim_gan"`` or ``"calochallenge"``), ``n_rows``, ``detector``
    (name or None), ``condition_names``, ``n_conditions``, ``units``, ``sample_shape`` (after
    reshaping for ``detector`` where a CaloChallenge file has flat voxels), ``file_size`` (bytes)
    and ``format_version``.
    """
    path = Path(path)
    with _open(path) as f:
        info = _inspect(f, path)
        det = _resolve_for_file(info, detector, path)
        width, shape = _target_shapes(info, det, path)
        with _corrupt_as_data_format_error(path):
            version = _attr(f, "format_version", path)
    names = info["condition_names"]
    if names is None:
        names = (list(det.condition_names) if det is not None
                 else ["incident_energy"] if info["layout"] == "calochallenge" and width == 1
                 else [f"c{i}" for i in range(width)])
    units = info["units"]
    if units is None:
        units = (det.units if det is not None
                 else {"incident_energy": "MeV", "samples": "MeV"} if info["layout"] == "calochallenge"
                 else {})
    return {
        "path": path,
        "layout": info["layout"],
        "n_rows": info["n_rows"],
        "detector": info["detector"] if info["detector"] is not None else (det.name if det else None),
        "condition_names": list(names),
        "n_conditions": width,
        "units": dict(units),
        "sample_shape": tuple(shape),
        "file_size": path.stat().st_size,
        "format_version": version,
    }


__all__ = ["DataFormatError", "ShardWriter", "find_shards", "read_calochallenge", "read_shard",
           "read_shards", "shard_info", "write_calochallenge", "write_shards"]
