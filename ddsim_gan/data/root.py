"""ROOT files in: Geant4 ntuples (TTree or RNTuple) converted to HDF5 shards with uproot.

:func:`convert_root` reads one tree from one or many files in chunks of ``step_size`` and streams
the rows into :class:`~ddsim_gan.data.hdf5.ShardWriter`. Three ways of storing the samples are
understood:

dense, one branch
    a fixed-size array (``float[4400]``, ``float[20][20][11]``) or a variable-length list
    (``std::vector<float>``, also nested) with exactly ``prod(sample_shape)`` values per entry in C
    order, reshaped to the detector's ``sample_shape``;
dense, several branches
    one number per entry and branch, e.g. ``S1``, ``S2``, ``f200`` for a vector detector, in the
    order of ``sample_shape``;
sparse hits
    two variable-length branches of equal length per entry: a flat C-order cell index into
    ``sample_shape`` and the energy deposited there; hits in the same cell are summed.

Conditions are one branch per detector condition. A TTree also accepts uproot expressions in
place of branch names (``"E_beam / 1000"``, ``"layer * 400 + y * 20 + x"``), which is how units or
cell numbering are converted. Every problem with an input file raises
:class:`~ddsim_gan.data.errors.DataFormatError` naming the file, the tree, the branch and, for bad
values, the first bad entry (the entry number in that file's tree).
"""

from __future__ import annotations

import difflib
import glob
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import awkward as ak
import numpy as np
import uproot
from tqdm import tqdm

from .errors import DataFormatError
from .hdf5 import (ShardWriter, _as_float32, _check_values, _detector, _existing_shards,
                   _overflowed)

_TREE_CLASSES = {"TTree", "TNtuple", "TNtupleD", "ROOT::RNTuple", "ROOT::Experimental::RNTuple"}
_NAME = re.compile(r"[A-Za-z_][\w.]*")  # looks like a branch name rather than an expression
_MAX_LISTED = 40


# ---- what to read --------------------------------------------------------------------------------
def _as_names(value, what: str) -> list[str]:
    names = [value] if isinstance(value, str) else list(value)
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise ValueError(f"{what}: expected branch names, got {value!r}")
    return [n.strip() for n in names]


def _condition_columns(conditions, detector) -> list[str]:
    """One branch or expression per detector condition, in the detector's order."""
    names = detector.condition_names
    if isinstance(conditions, Mapping):
        missing = [n for n in names if n not in conditions]
        unknown = [k for k in conditions if k not in names]
        if missing or unknown:
            raise ValueError(
                f"conditions: detector {detector.name!r} has conditions {', '.join(names)}; "
                + "; ".join(part for part in (
                    f"missing {', '.join(map(repr, missing))}" if missing else "",
                    f"unknown {', '.join(map(repr, unknown))}" if unknown else "") if part))
        return [_as_names(conditions[n], f"conditions[{n!r}]")[0] for n in names]
    columns = _as_names(conditions, "conditions")
    if len(columns) != len(names):
        raise ValueError(f"conditions: detector {detector.name!r} has {len(names)} condition(s) "
                         f"({', '.join(names)}), got {len(columns)} branch(es): {', '.join(columns)}")
    return columns


def _sample_columns(samples, sample_index, sample_energy, detector) -> tuple[list[str], bool]:
    """``(columns, sparse)``: the dense sample branch(es), or the (index, energy) pair of hits."""
    pair = (sample_index, sample_energy)
    if samples is not None and any(p is not None for p in pair):
        raise ValueError("give either samples (dense branches) or sample_index and sample_energy "
                         "(sparse hits), not both")
    if samples is None:
        if any(p is None for p in pair):
            raise ValueError("no samples: give samples (one array branch or one branch per sample "
                             "value) or both sample_index and sample_energy (sparse hits)")
        return [_as_names(p, w)[0] for p, w in zip(pair, ("sample_index", "sample_energy"))], True
    columns = _as_names(samples, "samples")
    size = math.prod(detector.sample_shape)
    if len(columns) > 1 and len(columns) != size:
        what = f" ({', '.join(detector.sample_names)})" if detector.sample_names else ""
        raise ValueError(f"samples: detector {detector.name!r} has {size} value(s) per event{what}; "
                         f"got {len(columns)} branches: {', '.join(columns)}. Give one branch per "
                         f"value, or a single array branch")
    return columns, False


def _input_files(files) -> list[Path]:
    """Paths from a path, a directory (its ``*.root``), a glob, or a list of those; no duplicates."""
    items = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    if not items:
        raise DataFormatError("no input files given")
    paths = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(path.glob("*.root"))
            if not found:
                raise DataFormatError(f"{path}: directory holds no *.root files")
        elif not path.exists() and re.search(r"[*?[]", str(item)):
            found = sorted(Path(p) for p in glob.glob(str(item)))
            if not found:
                raise DataFormatError(f"{item}: no files match this pattern")
        else:
            found = [path]
        paths.extend(found)
    unique = {}
    for path in paths:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


# ---- opening -------------------------------------------------------------------------------------
def _listing(names, limit: int = _MAX_LISTED) -> str:
    names = list(names)
    shown = ", ".join(map(str, names[:limit]))
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _open(path: Path):
    """``uproot.open`` with every failure turned into a :class:`DataFormatError` naming the file."""
    if not path.exists():
        raise DataFormatError(f"{path}: no such file")
    if path.is_dir():
        raise DataFormatError(f"{path}: is a directory, expected a ROOT file")
    size = path.stat().st_size
    if size == 0:
        raise DataFormatError(f"{path}: empty file (0 bytes), expected a ROOT file")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as error:
        raise DataFormatError(f"{path}: cannot be read ({_reason(error)})") from None
    if magic != b"root":
        raise DataFormatError(f"{path}: not a ROOT file (it starts with {magic!r}, not b'root')")
    try:
        file = uproot.open(path)
    except Exception as error:  # uproot raises OSError, ValueError, DeserializationError, ...
        raise DataFormatError(f"{path}: truncated or corrupt ROOT file ({_reason(error)})") from None
    end = getattr(file.file, "fEND", None)
    if end is not None and end > size:
        file.close()
        raise DataFormatError(f"{path}: truncated ROOT file: its header says {end} bytes, "
                              f"the file has {size}")
    return file


def _reason(error: Exception) -> str:
    kind = type(error)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{name}: {' '.join(lines[:2])}" if lines else name


def _trees(file) -> dict[str, str]:
    return {name: cls for name, cls in file.classnames(cycle=False).items() if cls in _TREE_CLASSES}


def _tree(file, path: Path, tree: str | None):
    """``(name, object)`` of the requested tree; a missing one lists the trees that exist."""
    try:
        trees = _trees(file)
        classes = file.classnames(cycle=False)
    except Exception as error:
        raise DataFormatError(f"{path}: truncated or corrupt ROOT file ({_reason(error)})") from None
    if tree is None:
        if not trees:
            raise DataFormatError(f"{path}: holds no TTree or RNTuple; its keys are "
                                  f"{_listing(f'{n!r} ({c})' for n, c in classes.items()) or 'none'}")
        if len(trees) > 1:
            raise DataFormatError(f"{path}: holds {len(trees)} trees ({_listing(map(repr, trees))}); "
                                  f"name the one to read (tree)")
        tree = next(iter(trees))
    tree = tree.strip("/")
    if tree not in trees:
        if tree in classes:
            raise DataFormatError(f"{path}: {tree!r} is a {classes[tree]}, not a TTree or RNTuple; "
                                  f"trees in the file: {_listing(map(repr, trees)) or 'none'}")
        listed = ", ".join(f"{n!r} ({c})" for n, c in trees.items()) or "no trees"
        raise DataFormatError(f"{path}: no tree {tree!r}; the file holds {listed}")
    try:
        return tree, file[tree]
    except Exception as error:
        raise DataFormatError(f"{path}: tree {tree!r} could not be read ({_reason(error)})") from None


def _is_ttree(obj) -> bool:
    return isinstance(obj, uproot.behaviors.TTree.TTree)


def _branch_listing(obj) -> str:
    if _is_ttree(obj):
        types = obj.typenames()
        return _listing(f"{n!r} ({types.get(n, '?')})" for n in obj.keys())
    return _listing(map(repr, obj.keys()))


def _check_columns(obj, path: Path, tree: str, columns: list[str]) -> None:
    """Every column is a branch of ``obj`` (or, for a TTree, an expression uproot can evaluate)."""
    where = f"{path}: tree {tree!r}"
    keys = set(obj.keys())
    expressions = [c for c in columns if c not in keys]
    for column in expressions:
        if _NAME.fullmatch(column) or not _is_ttree(obj):
            close = difflib.get_close_matches(column, sorted(keys), n=1)
            hint = (f" (did you mean {close[0]!r}?)" if close
                    else "" if _NAME.fullmatch(column) else " (expressions need a TTree)")
            raise DataFormatError(f"{where} has no branch {column!r}{hint}; its branches are "
                                  f"{_branch_listing(obj)}")
    if _is_ttree(obj):
        for column in columns:
            if column in keys and obj[column].num_entries != obj.num_entries:
                raise DataFormatError(f"{where}: branch {column!r} has {obj[column].num_entries} "
                                      f"entries, but the tree has {obj.num_entries}")
    if expressions:  # let uproot parse them on the first entry
        try:
            obj.arrays(expressions, entry_stop=min(1, obj.num_entries), library="ak")
        except uproot.KeyInFileError as error:
            raise DataFormatError(
                f"{where}: expression {_culprit(error, expressions)!r} uses {error.key!r}, which is "
                f"not a branch; its branches are {_branch_listing(obj)}") from None
        except Exception as error:
            raise DataFormatError(f"{where}: cannot evaluate expression(s) "
                                  f"{', '.join(map(repr, expressions))} ({_reason(error)})") from None


def _culprit(error, expressions: list[str]) -> str:
    return next((e for e in expressions if str(error.key) in e), expressions[0])


# ---- chunks to arrays ----------------------------------------------------------------------------
def _leaf(layout):
    """Innermost content of nested lists, and whether any list level has variable length."""
    jagged = False
    while isinstance(layout, (ak.contents.RegularArray, ak.contents.ListOffsetArray,
                              ak.contents.ListArray)):
        jagged |= not isinstance(layout, ak.contents.RegularArray)
        layout = layout.content
    return layout, jagged


def _flat_lists(array, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(values, counts)``: the numbers of every entry, flattened, and how many each entry has."""
    leaf, _ = _leaf(array.layout)
    if not isinstance(leaf, ak.contents.NumpyArray) or leaf.dtype.kind not in "biuf":
        raise DataFormatError(f"{where} has type {array.type}, expected numbers")
    if leaf.dtype.kind == "b":
        array = ak.values_astype(array, np.uint8)
    if array.ndim == 1:
        return ak.to_numpy(array), np.ones(len(array), dtype=np.int64)
    while array.ndim > 2:
        array = ak.flatten(array, axis=2)
    return ak.to_numpy(ak.flatten(array, axis=1)), ak.to_numpy(ak.num(array, axis=1))


def _per_entry(array, size: int, where: str, entry0: int, expected: str) -> np.ndarray:
    """``[n, size]``: exactly ``size`` numbers from every entry, or an error naming the entry."""
    values, counts = _flat_lists(array, where)
    bad = np.flatnonzero(counts != size)
    if bad.size:
        row = int(bad[0])
        if not _leaf(array.layout)[1]:  # the same count in every entry: a property of the branch
            raise DataFormatError(f"{where} holds {counts[row]} value(s) per entry "
                                  f"({array.type.content}), expected {size} {expected}")
        raise DataFormatError(f"{where} entry {entry0 + row} has {counts[row]} value(s) "
                              f"({array.type.content}), expected {size} {expected}")
    return values.reshape(len(counts), size)


def _check(array, where: str, entry0: int, detector=None) -> np.ndarray:
    """:func:`_check_values` with the row counted as the entry of the tree."""
    try:
        return _check_values(array, where, non_negative=detector is not None and detector.non_negative,
                             detector_name=detector.name if detector is not None else "",
                             row_offset=entry0)
    except DataFormatError as error:
        raise DataFormatError(str(error).replace(f"{where} row ", f"{where} entry ", 1)) from None


def _conditions(chunk, columns, where: str, entry0: int, detector) -> np.ndarray:
    out = np.empty((len(chunk), len(columns)), dtype=np.float32)
    for col, (column, condition) in enumerate(zip(columns, detector.conditions)):
        source = f"{where} branch {column!r}"
        values = _check(_per_entry(chunk[column], 1, source, entry0,
                                   f"(condition {condition.name!r})")[:, 0], source, entry0)
        if condition.is_categorical:
            bad = np.flatnonzero((values != np.round(values)) | (values < 0)
                                 | (values >= len(condition.labels)))
            if bad.size:
                row = int(bad[0])
                codes = ", ".join(f"{i} ({label})" for i, label in enumerate(condition.labels))
                raise DataFormatError(f"{source} entry {entry0 + row} has {condition.name} = "
                                      f"{values[row]:g}; expected one of {codes} for detector "
                                      f"{detector.name!r}")
        out[:, col] = values
    return out


def _dense(chunk, columns, where: str, entry0: int, detector) -> np.ndarray:
    shape = tuple(detector.sample_shape)
    size = math.prod(shape)
    if len(columns) == 1:
        source = f"{where} branch {columns[0]!r}"
        expected = f"({' x '.join(map(str, shape))}) for detector {detector.name!r}"
        samples = _per_entry(chunk[columns[0]], size, source, entry0, expected)
        return _check(samples, source, entry0, detector).reshape((len(samples),) + shape)
    parts = []
    for i, column in enumerate(columns):
        source = f"{where} branch {column!r}"
        label = f" ({detector.sample_names[i]})" if detector.sample_names else ""
        values = _per_entry(chunk[column], 1, source, entry0,
                            f"(sample value {i}{label} of detector {detector.name!r})")
        parts.append(_check(values, source, entry0, detector))
    return np.concatenate(parts, axis=1).reshape((len(chunk),) + shape)


def _sparse(chunk, columns, where: str, entry0: int, detector) -> np.ndarray:
    index_name, energy_name = columns
    shape = tuple(detector.sample_shape)
    size = math.prod(shape)
    index, n_index = _flat_lists(chunk[index_name], f"{where} branch {index_name!r}")
    energy, n_energy = _flat_lists(chunk[energy_name], f"{where} branch {energy_name!r}")
    bad = np.flatnonzero(n_index != n_energy)
    if bad.size:
        row = int(bad[0])
        raise DataFormatError(f"{where} entry {entry0 + row} has {n_index[row]} hit(s) in branch "
                              f"{index_name!r} but {n_energy[row]} in {energy_name!r}")
    if index.dtype.kind not in "iu":
        raise DataFormatError(f"{where} branch {index_name!r} has type {chunk[index_name].type}, "
                              f"expected integer cell indices")
    rows = np.repeat(np.arange(len(n_index)), n_index)
    outside = np.flatnonzero((index < 0) | (index >= size))
    if outside.size:
        hit = int(outside[0])
        raise DataFormatError(
            f"{where} branch {index_name!r} entry {entry0 + rows[hit]} has cell index {index[hit]}, "
            f"outside [0, {size}) for detector {detector.name!r} (flat C-order index into "
            f"{' x '.join(map(str, shape))})")
    source = f"{where} branch {energy_name!r}"
    original, energy = energy, _as_float32(energy)
    for test, what in ((np.isnan, "NaN"), (np.isinf, "inf")):
        hits = np.flatnonzero(test(energy))
        if hits.size:
            hit = hits[0]
            raise DataFormatError(f"{source} entry {entry0 + rows[hit]} contains "
                                  f"{_overflowed(original[hit:hit + 1], energy[hit:hit + 1]) or what}")
    if detector.non_negative:
        hits = np.flatnonzero(energy < 0)
        if hits.size:
            raise DataFormatError(
                f"{source} entry {entry0 + rows[hits[0]]} contains negative value "
                f"{energy[hits[0]]:g}, but detector {detector.name!r} requires non-negative samples")
    dense = np.bincount(rows * size + index.astype(np.int64), weights=energy,
                        minlength=len(n_index) * size)
    return dense.astype(np.float32).reshape((len(n_index),) + shape)


def _chunks(obj, columns: list[str], step_size, where: str):
    """``(arrays, first entry)`` per chunk; a read failure names the file, tree and entries."""
    iterator = obj.iterate(columns, step_size=step_size, library="ak", report=True)
    start = 0
    while True:
        try:
            arrays, report = next(iterator)
        except StopIteration:
            return
        except Exception as error:  # decompression, deserialization, short reads, ...
            raise DataFormatError(f"{where}: corrupt or truncated data in entries from {start} on "
                                  f"of branches {', '.join(map(repr, columns))} "
                                  f"({_reason(error)})") from None
        yield arrays, int(report.tree_entry_start)
        start = int(report.tree_entry_stop)


# ---- the conversion ------------------------------------------------------------------------------
def convert_root(files, output_dir, detector, *, tree: str | None = None, conditions,
                 samples=None, sample_index: str | None = None, sample_energy: str | None = None,
                 step_size="100 MB", shard_size: int = 100_000, prefix: str = "shard",
                 compression="lzf", overwrite: bool = False, progress: bool = True) -> list[Path]:
    """Convert ROOT ntuples to ``{prefix}-{i:05d}.h5`` shards for ``detector``; returns their paths.

    Args:
        files: a ROOT file, a directory (its ``*.root``), a glob such as ``"sim/run*.root"``, or a
            list of those. The files are read in the order given (globs sorted); their entries
            are concatenated.
        output_dir: where the shards go.
        detector: a registry name or a :class:`~ddsim_gan.detectors.Detector`.
        tree: the TTree (or RNTuple) to read, e.g. ``"events"`` or ``"dir/events"``; may be left
            out when each file holds exactly one tree.
        conditions: one branch per detector condition, in the detector's order
            (``["E_recoil", "recoil_type"]``), or a mapping condition name -> branch
            (``{"E_total": "E_beam / 1000"}``). On a TTree a branch may be an uproot expression.
        samples: the dense samples: one array branch (``float[4400]`` or ``std::vector<float>``
            with ``prod(sample_shape)`` values per entry, C order), or one branch per sample value
            (``["S1", "S2", "f200"]``).
        sample_index, sample_energy: instead of ``samples``, sparse hits: per entry a list of flat
            C-order cell indices into ``sample_shape`` and a list of energies of the same length.
            Hits in the same cell are summed.
        step_size: entries per chunk (an int) or memory per chunk (``"100 MB"``).
        shard_size, prefix, compression, overwrite: as for :class:`ShardWriter`.
        progress: show a tqdm bar over the entries of all files.

    Every file is opened and its tree and branches checked before anything is written. Values are
    checked chunk by chunk: finite conditions and samples, non-negative samples where the detector
    requires it, valid codes for categorical conditions. Any problem raises
    :class:`DataFormatError` naming the file, tree, branch and first bad entry, and the shards
    with ``prefix`` in ``output_dir`` are removed, so a failed conversion leaves no partial set
    (with ``overwrite``, the set it was replacing is gone too).
    """
    detector = _detector(detector)
    condition_columns = _condition_columns(conditions, detector)
    sample_columns, sparse = _sample_columns(samples, sample_index, sample_energy, detector)
    columns = list(dict.fromkeys(condition_columns + sample_columns))
    paths = _input_files(files)

    plan = []  # (path, tree name, entries): all structure problems surface before any writing
    for path in paths:
        with _open(path) as file:
            name, obj = _tree(file, path, tree)
            _check_columns(obj, path, name, columns)
            plan.append((path, name, int(obj.num_entries)))
    total = sum(n for _, _, n in plan)
    if total == 0:
        where = f"{plan[0][0]}: tree {plan[0][1]!r} has no entries"
        raise DataFormatError(where if len(plan) == 1 else
                              f"{where}, nor in the other {len(plan) - 1} file(s)")

    to_samples = _sparse if sparse else _dense
    writer = ShardWriter(output_dir, detector, shard_size=shard_size, prefix=prefix,
                         compression=compression, overwrite=overwrite)
    try:
        with writer, tqdm(total=total, unit="event", disable=not progress,
                          desc=f"convert to {detector.name}") as bar:
            for path, name, entries in plan:
                if entries == 0:
                    continue
                bar.set_postfix_str(path.name)
                where = f"{path}: tree {name!r}"
                with _open(path) as file:
                    _, obj = _tree(file, path, name)
                    for chunk, entry0 in _chunks(obj, columns, step_size, where):
                        writer.write(_conditions(chunk, condition_columns, where, entry0, detector),
                                     to_samples(chunk, sample_columns, where, entry0, detector))
                        bar.update(len(chunk))
    except BaseException:  # leave no partial set that would read as a complete one
        for shard in set(writer.paths) | set(_existing_shards(writer.directory, prefix)):
            shard.unlink(missing_ok=True)
        raise
    return writer.paths


__all__ = ["convert_root"]
