"""ROOT ingestion: Geant4-like ntuples written with uproot come back from the shards unchanged.

Every layout a production uses (flat, fixed-size array, jagged and sparse-hit branches, several
trees, files split across inputs, each compression) round-trips; every kind of bad input raises
DataFormatError naming the file, tree, branch and entry.
"""

import subprocess
import sys

import awkward as ak
import numpy as np
import pytest
import uproot

from ddsim_gan import detectors
from ddsim_gan.cli import main
from ddsim_gan.data import DataFormatError, convert_root, read_shards
from ddsim_gan.detectors import Condition, Detector


class Tiny(Detector):
    """2 x 3 cells, one energy condition: small enough to write sparse hits by hand."""

    name = "tiny"
    conditions = (Condition("E", "MeV", 1.0, 100.0),)
    sample_shape = (2, 3)
    sample_unit = "MeV"

    def sample_conditions(self, n, seed=None):
        return np.full((n, 1), 10.0, np.float32)

    def simulate_at(self, conditions, seed=None):
        return np.ones((len(conditions), 2, 3), np.float32)


def write_root(path, trees, compression=None):
    """Write ``{tree: {branch: data}}`` as TTrees (the layout Geant4's analysis manager writes)."""
    kwargs = {} if compression is None else {"compression": compression}
    with uproot.recreate(path, **kwargs) as f:
        for name, branches in trees.items():
            f.mktree(name, branches)
    return path


@pytest.fixture(scope="module")
def darkshine():
    return detectors.get("darkshine")


@pytest.fixture(scope="module")
def shine_data(darkshine):
    return darkshine.simulate(30, seed=3)


@pytest.fixture(scope="module")
def side_data():
    return detectors.get("darkside").simulate(40, seed=4)


def side_branches(conditions, samples):
    return {"E_recoil": conditions[:, 0], "recoil_type": conditions[:, 1].astype(np.int32),
            "S1": samples[:, 0], "S2": samples[:, 1], "f200": samples[:, 2]}


def convert(files, out, detector, **kwargs):
    kwargs.setdefault("progress", False)
    return convert_root(files, out, detector, **kwargs)


# ---- layouts that round-trip ---------------------------------------------------------------------
def jagged(rows, counts):
    """``std::vector`` per entry: the values of ``rows`` cut into lists of ``counts``."""
    return ak.unflatten(np.ravel(rows), counts)


@pytest.mark.parametrize("layout", ["float[20][20][11]", "float[4400]", "std::vector<float>",
                                    "RNTuple vector<vector<float>> per row"])
def test_image_branches_round_trip(tmp_path, darkshine, shine_data, layout):
    conditions, samples = shine_data
    n = len(samples)
    path = tmp_path / "shine.root"
    if layout.startswith("RNTuple"):                                # uproot writes no var * var TTree
        rows = jagged(samples, np.full(n * 20, 220))
        with uproot.recreate(path) as f:
            f["events"] = {"E": conditions[:, 0], "cells": ak.unflatten(rows, np.full(n, 20))}
    else:
        cells = {"float[20][20][11]": samples, "float[4400]": samples.reshape(n, -1),
                 "std::vector<float>": jagged(samples, np.full(n, 4400))}[layout]
        write_root(path, {"events": {"E": conditions[:, 0], "cells": cells}})
    paths = convert(path, tmp_path / "out", darkshine, tree="events", conditions=["E"],
                    samples="cells", step_size=7, shard_size=12)
    assert [p.name for p in paths] == ["shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]
    got_c, got_s = read_shards(paths, "darkshine")
    np.testing.assert_array_equal(got_c, conditions)
    np.testing.assert_array_equal(got_s, samples)


def test_vector_detector_from_flat_branches_with_a_categorical_condition(tmp_path, side_data):
    conditions, samples = side_data
    path = write_root(tmp_path / "g4ds.root", {"events": side_branches(conditions, samples)})
    paths = convert(path, tmp_path / "out", "darkside", tree="events",
                    conditions=["E_recoil", "recoil_type"], samples=["S1", "S2", "f200"])
    got_c, got_s = read_shards(paths, "darkside")
    np.testing.assert_array_equal(got_c, conditions)
    np.testing.assert_array_equal(got_s, samples)


def test_sparse_hits_are_scattered_and_summed_per_cell(tmp_path):
    index = ak.Array([[0, 5, 5], [], [2], [1, 3, 4, 0]])
    energy = ak.Array([[1.0, 2.0, 0.5], [], [7.0], [1.0, 2.0, 3.0, 4.0]])
    path = write_root(tmp_path / "hits.root", {"hits": {
        "E": np.array([10.0, 20.0, 30.0, 40.0]), "cell": index, "edep": energy}})
    paths = convert(path, tmp_path / "out", Tiny(), tree="hits", conditions=["E"],
                    sample_index="cell", sample_energy="edep", step_size=3)
    conditions, samples = read_shards(paths, Tiny())
    expected = np.zeros((4, 6), np.float32)
    expected[0, [0, 5]] = [1.0, 2.5]
    expected[2, 2] = 7.0
    expected[3, [1, 3, 4, 0]] = [1.0, 2.0, 3.0, 4.0]
    np.testing.assert_array_equal(samples, expected.reshape(4, 2, 3))
    np.testing.assert_array_equal(conditions[:, 0], [10, 20, 30, 40])


def test_expressions_and_a_condition_mapping_convert_units(tmp_path, shine_data, darkshine):
    conditions, samples = shine_data
    path = write_root(tmp_path / "gev.root", {"events": {
        "E_GeV": conditions[:, 0].astype(np.float64) / 1000, "cells_keV": samples * 1000.0}})
    paths = convert(path, tmp_path / "out", darkshine, conditions={"E_total": "E_GeV * 1000"},
                    samples="cells_keV / 1000")
    got_c, got_s = read_shards(paths)
    np.testing.assert_allclose(got_c, conditions, rtol=1e-6)
    np.testing.assert_allclose(got_s, samples, rtol=1e-6)


def test_several_trees_choose_one_by_name_including_subdirectories(tmp_path, side_data):
    conditions, samples = side_data
    path = tmp_path / "multi.root"
    with uproot.recreate(path) as f:
        f.mktree("events", side_branches(conditions, samples))
        f.mktree("run", {"seed": np.arange(3, dtype=np.int32)})
        f.mkdir("sim").mktree("events", side_branches(conditions[:10], samples[:10]))
    spec = dict(conditions=["E_recoil", "recoil_type"], samples=["S1", "S2", "f200"])
    with pytest.raises(DataFormatError, match=r"multi\.root: holds 3 trees \('events', 'run', "
                                               r"'sim/events'\)"):
        convert(path, tmp_path / "a", "darkside", **spec)
    _, got = read_shards(convert(path, tmp_path / "b", "darkside", tree="events", **spec))
    np.testing.assert_array_equal(got, samples)
    _, got = read_shards(convert(path, tmp_path / "c", "darkside", tree="sim/events", **spec))
    np.testing.assert_array_equal(got, samples[:10])


CODECS = {"ZLIB": 1, "LZMA": 2, "LZ4": 4, "ZSTD": 5}  # ROOT's algorithm digit of fCompress


@pytest.mark.parametrize("codec", list(CODECS))
def test_each_compression_reads(tmp_path, side_data, codec):
    conditions, samples = side_data
    try:
        path = write_root(tmp_path / f"{codec}.root", {"events": side_branches(conditions, samples)},
                          compression=getattr(uproot, codec)(4))
    except ImportError as error:  # pragma: no cover - codec package missing
        pytest.skip(f"{codec} codec not installed: {error}")
    with uproot.open(path) as f:
        assert f.file.fCompress // 100 == CODECS[codec]
    got_c, got_s = read_shards(convert(path, tmp_path / "out", "darkside",
                                       conditions=["E_recoil", "recoil_type"],
                                       samples=["S1", "S2", "f200"]))
    np.testing.assert_array_equal(got_c, conditions)
    np.testing.assert_array_equal(got_s, samples)


def test_a_production_split_across_three_files(tmp_path, side_data):
    conditions, samples = side_data
    edges = [0, 13, 27, 40]
    (tmp_path / "prod").mkdir()
    for i in range(3):
        rows = slice(edges[i], edges[i + 1])
        write_root(tmp_path / "prod" / f"run{i}.root",
                   {"events": side_branches(conditions[rows], samples[rows])},
                   compression=uproot.LZMA(1) if i == 1 else None)
    spec = dict(tree="events", conditions=["E_recoil", "recoil_type"], samples=["S1", "S2", "f200"])
    for name, files in (("glob", str(tmp_path / "prod" / "run*.root")),
                        ("dir", tmp_path / "prod"),
                        ("list", [tmp_path / "prod" / f"run{i}.root" for i in range(3)])):
        paths = convert(files, tmp_path / name, "darkside", shard_size=16, step_size=5, **spec)
        assert len(paths) == 3                                     # shards span file boundaries
        got_c, got_s = read_shards(paths)
        np.testing.assert_array_equal(got_c, conditions)
        np.testing.assert_array_equal(got_s, samples)


def test_rnntuple_written_by_default_reads_too(tmp_path, side_data):
    conditions, samples = side_data
    path = tmp_path / "rntuple.root"
    with uproot.recreate(path) as f:
        f["events"] = side_branches(conditions, samples)          # uproot >= 5.7: an RNTuple
    got_c, got_s = read_shards(convert(path, tmp_path / "out", "darkside",
                                       conditions=["E_recoil", "recoil_type"],
                                       samples=["S1", "S2", "f200"]))
    np.testing.assert_array_equal(got_c, conditions)
    np.testing.assert_array_equal(got_s, samples)


def test_progress_bar_counts_events(tmp_path, side_data, capsys):
    conditions, samples = side_data
    path = write_root(tmp_path / "p.root", {"events": side_branches(conditions, samples)})
    convert(path, tmp_path / "out", "darkside", conditions=["E_recoil", "recoil_type"],
            samples=["S1", "S2", "f200"], progress=True)
    assert "40/40" in capsys.readouterr().err


# ---- bad files -----------------------------------------------------------------------------------
SIDE = dict(conditions=["E_recoil", "recoil_type"], samples=["S1", "S2", "f200"])


@pytest.fixture()
def side_file(tmp_path, side_data):
    return write_root(tmp_path / "good.root", {"events": side_branches(*side_data)},
                      compression=uproot.ZLIB(1))


def test_missing_empty_and_non_root_files(tmp_path, side_file):
    with pytest.raises(DataFormatError, match=r"nope\.root: no such file"):
        convert(tmp_path / "nope.root", tmp_path / "out", "darkside", **SIDE)
    with pytest.raises(DataFormatError, match=r"run\*\.root: no files match"):
        convert(str(tmp_path / "run*.root"), tmp_path / "out", "darkside", **SIDE)
    (tmp_path / "empty.root").write_bytes(b"")
    with pytest.raises(DataFormatError, match=r"empty\.root: empty file \(0 bytes\)"):
        convert(tmp_path / "empty.root", tmp_path / "out", "darkside", **SIDE)
    (tmp_path / "notes.root").write_text("S1 S2 f200\n1 2 3\n")
    with pytest.raises(DataFormatError, match=r"notes\.root: not a ROOT file \(it starts with b'S1 S', not b'root'\)"):
        convert(tmp_path / "notes.root", tmp_path / "out", "darkside", **SIDE)
    # the good file first: nothing is written when a later input is bad
    with pytest.raises(DataFormatError, match=r"notes\.root"):
        convert([side_file, tmp_path / "notes.root"], tmp_path / "out", "darkside", **SIDE)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("keep", [0.02, 0.5, 0.98])
def test_truncated_files_name_the_file(tmp_path, side_file, keep):
    data = side_file.read_bytes()
    cut = tmp_path / "cut.root"
    cut.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(DataFormatError, match=r"cut\.root: truncated"):
        convert(cut, tmp_path / "out", "darkside", **SIDE)


def test_corrupt_basket_names_file_tree_and_entries(tmp_path, darkshine, shine_data):
    conditions, samples = shine_data
    path = write_root(tmp_path / "corrupt.root", {"events": {"E": conditions[:, 0],
                                                             "cells": samples}},
                      compression=uproot.ZLIB(1))
    with uproot.open(path) as f:
        seek = int(f["events"]["cells"].member("fBasketSeek")[0])
    data = bytearray(path.read_bytes())
    data[seek + 120:seek + 220] = b"\xab" * 100                     # inside the compressed payload
    path.write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match=r"corrupt\.root: tree 'events': corrupt or truncated "
                                               r"data in entries from 0 on"):
        convert(path, tmp_path / "out", darkshine, conditions=["E"], samples="cells")


def test_missing_tree_lists_the_trees(tmp_path, side_data):
    path = tmp_path / "trees.root"
    with uproot.recreate(path) as f:
        f.mktree("events", side_branches(*side_data))
        f.mktree("run", {"seed": np.arange(2, dtype=np.int32)})
        f["edep"] = np.histogram(np.arange(10.0), bins=5)
    with pytest.raises(DataFormatError, match=r"trees\.root: no tree 'evts'; the file holds "
                                               r"'events' \(TTree\), 'run' \(TTree\)"):
        convert(path, tmp_path / "out", "darkside", tree="evts", **SIDE)
    with pytest.raises(DataFormatError, match=r"trees\.root: 'edep' is a TH1D, not a TTree"):
        convert(path, tmp_path / "out", "darkside", tree="edep", **SIDE)
    with uproot.recreate(tmp_path / "histograms.root") as f:
        f["edep"] = np.histogram(np.arange(10.0), bins=5)
    with pytest.raises(DataFormatError, match=r"histograms\.root: holds no TTree or RNTuple; its "
                                               r"keys are 'edep' \(TH1D\)"):
        convert(tmp_path / "histograms.root", tmp_path / "out", "darkside", **SIDE)


def test_wrong_branch_names_list_the_branches(tmp_path, side_file):
    with pytest.raises(DataFormatError) as info:
        convert(side_file, tmp_path / "out", "darkside", tree="events",
                conditions=["E_recoil", "recoil_type"], samples=["S1", "S2", "f_200"])
    message = str(info.value)
    assert message.startswith(f"{side_file}: tree 'events' has no branch 'f_200' (did you mean "
                              f"'f200'?); its branches are ")
    for branch in ("'E_recoil' (float)", "'recoil_type' (int32_t)", "'S1'", "'S2'", "'f200'"):
        assert branch in message
    with pytest.raises(DataFormatError, match=r"expression 'S1 \+ S3' uses 'S3', which is not a "
                                               r"branch; its branches are 'E_recoil'"):
        convert(side_file, tmp_path / "out", "darkside", tree="events",
                conditions={"E_recoil": "S1 + S3", "recoil_type": "recoil_type"},
                samples=["S1", "S2", "f200"])


def test_jagged_samples_of_the_wrong_length_name_file_and_entry(tmp_path, darkshine, shine_data):
    conditions, samples = shine_data
    counts = np.full(len(samples), 4400)
    good = write_root(tmp_path / "run0.root", {"events": {"E": conditions[:, 0],
                                                          "cells": jagged(samples, counts)}})
    counts[17] -= 1
    short = np.delete(samples.ravel(), 18 * 4400 - 1)              # entry 17 loses its last cell
    bad = write_root(tmp_path / "run1.root", {"events": {"E": conditions[:, 0],
                                                         "cells": jagged(short, counts)}})
    with pytest.raises(DataFormatError, match=r"run1\.root: tree 'events' branch 'cells' entry 17 "
                                               r"has 4399 value\(s\) \(var \* float32\), expected "
                                               r"4400 \(20 x 20 x 11\) for detector 'darkshine'"):
        convert([good, bad], tmp_path / "out", darkshine, conditions=["E"], samples="cells",
                step_size=5, shard_size=10)
    assert not list((tmp_path / "out").glob("*.h5"))             # no partial set left behind


def test_a_branch_of_the_wrong_size_names_the_branch(tmp_path, darkshine, shine_data):
    conditions, samples = shine_data
    path = write_root(tmp_path / "small.root", {"events": {"E": conditions[:, 0],
                                                           "cells": samples[:, :, :, :10]}})
    with pytest.raises(DataFormatError, match=r"small\.root: tree 'events' branch 'cells' holds "
                                               r"4000 value\(s\) per entry"):
        convert(path, tmp_path / "out", darkshine, conditions=["E"], samples="cells")


def test_sparse_hits_of_unequal_length_or_outside_the_detector_name_the_entry(tmp_path):
    index = ak.Array([[0], [1, 2], [3, 4, 5], [0]])
    energy = ak.Array([[1.0], [1.0, 2.0], [1.0, 2.0], [1.0]])
    path = write_root(tmp_path / "hits.root", {"hits": {"E": np.ones(4) * 10, "cell": index,
                                                        "edep": energy}})
    with pytest.raises(DataFormatError, match=r"hits\.root: tree 'hits' entry 2 has 3 hit\(s\) in "
                                               r"branch 'cell' but 2 in 'edep'"):
        convert(path, tmp_path / "out", Tiny(), conditions=["E"], sample_index="cell",
                sample_energy="edep")
    path = write_root(tmp_path / "far.root", {"hits": {
        "E": np.ones(3) * 10, "cell": ak.Array([[0], [5], [1, 6]]),
        "edep": ak.Array([[1.0], [1.0], [1.0, 2.0]])}})
    with pytest.raises(DataFormatError, match=r"far\.root: tree 'hits' branch 'cell' entry 2 has "
                                               r"cell index 6, outside \[0, 6\)"):
        convert(path, tmp_path / "out", Tiny(), conditions=["E"], sample_index="cell",
                sample_energy="edep")


@pytest.mark.parametrize("branch, value, expected", [
    ("S2", np.nan, "contains NaN"),
    ("E_recoil", np.inf, "contains inf"),
    ("S1", -3.0, "contains negative value -3, but detector 'darkside' requires non-negative samples"),
    ("recoil_type", 2, "has recoil_type = 2; expected one of 0 (NR), 1 (ER) for detector 'darkside'"),
])
def test_bad_values_name_file_branch_and_first_entry(tmp_path, side_data, branch, value, expected):
    branches = side_branches(*side_data)
    branches[branch] = branches[branch].copy()
    branches[branch][[23, 31]] = value
    path = write_root(tmp_path / "bad.root", {"events": branches})
    with pytest.raises(DataFormatError) as info:
        convert(path, tmp_path / "out", "darkside", step_size=8, **SIDE)  # entry 23: chunk 2
    assert str(info.value) == f"{path}: tree 'events' branch {branch!r} entry 23 {expected}"


@pytest.mark.parametrize("last, expected", [(np.nan, "entry 2 contains NaN"),
                                             (1.0, "entry 1 contains negative value -0.5")])
def test_bad_sparse_energies_name_the_entry(tmp_path, last, expected):
    path = write_root(tmp_path / "hits.root", {"hits": {
        "E": np.ones(3) * 10, "cell": ak.Array([[0], [1, 2], [3]]),
        "edep": ak.Array([[1.0], [1.0, -0.5], [last]])}})
    with pytest.raises(DataFormatError) as info:
        convert(path, tmp_path / "out", Tiny(), conditions=["E"], sample_index="cell",
                sample_energy="edep")
    assert str(info.value).startswith(f"{path}: tree 'hits' branch 'edep' {expected}")


def test_empty_tree_and_bad_arguments(tmp_path, side_file):
    empty = write_root(tmp_path / "empty_tree.root", {"events": {"E": np.float32}})
    with pytest.raises(DataFormatError, match=r"empty_tree\.root: tree 'events' has no entries"):
        convert(empty, tmp_path / "out", Tiny(), conditions=["E"], samples="E")
    with pytest.raises(ValueError, match=r"detector 'darkside' has 2 condition\(s\) "
                                         r"\(E_recoil, recoil_type\), got 1"):
        convert(side_file, tmp_path / "out", "darkside", conditions=["E_recoil"],
                samples=["S1", "S2", "f200"])
    with pytest.raises(ValueError, match=r"3 value\(s\) per event \(S1, S2, f200\); got 2"):
        convert(side_file, tmp_path / "out", "darkside", conditions=SIDE["conditions"],
                samples=["S1", "S2"])
    with pytest.raises(ValueError, match="not both"):
        convert(side_file, tmp_path / "out", "darkside", conditions=SIDE["conditions"],
                samples="S1", sample_index="S2", sample_energy="f200")


def test_existing_shards_need_overwrite_and_a_failed_overwrite_leaves_no_set(tmp_path, side_data,
                                                                             side_file):
    convert(side_file, tmp_path / "out", "darkside", shard_size=10, **SIDE)
    with pytest.raises(FileExistsError, match="overwrite"):
        convert(side_file, tmp_path / "out", "darkside", **SIDE)
    assert len(convert(side_file, tmp_path / "out", "darkside", overwrite=True, **SIDE)) == 1
    convert(side_file, tmp_path / "out", "darkside", shard_size=10, overwrite=True, **SIDE)
    branches = side_branches(*side_data)
    branches["S1"] = branches["S1"].copy()
    branches["S1"][35] = np.nan
    bad = write_root(tmp_path / "bad.root", {"events": branches})
    with pytest.raises(DataFormatError, match="entry 35 contains NaN"):
        convert(bad, tmp_path / "out", "darkside", shard_size=10, step_size=10, overwrite=True,
                **SIDE)
    assert not list((tmp_path / "out").glob("*.h5"))


def test_a_boolean_branch_is_a_categorical_condition(tmp_path, side_data):
    conditions, samples = side_data
    branches = side_branches(conditions, samples)
    branches["is_ER"] = branches.pop("recoil_type").astype(bool)
    path = write_root(tmp_path / "bool.root", {"events": branches})
    got_c, _ = read_shards(convert(path, tmp_path / "out", "darkside", conditions=["E_recoil", "is_ER"],
                                   samples=["S1", "S2", "f200"]))
    np.testing.assert_array_equal(got_c, conditions)


# ---- command line --------------------------------------------------------------------------------
def test_cli_convert(tmp_path, side_data, side_file, capsys):
    out = tmp_path / "out"
    assert main(["convert", str(side_file), "--detector", "darkside", "--tree", "events",
                 "--conditions", "E_recoil,recoil_type", "--samples", "S1,S2,f200",
                 "--output-dir", str(out), "--shard-size", "25", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 40 events in 2 shard(s) to {out}"
    got_c, got_s = read_shards(out)
    np.testing.assert_array_equal(got_c, side_data[0])
    np.testing.assert_array_equal(got_s, side_data[1])

    hits = write_root(tmp_path / "hits.root", {"hits": {
        "E_GeV": np.array([1.0, 2.0]), "cell": ak.Array([[0, 0], [4399]]),
        "edep": ak.Array([[1.0, 2.0], [3.0]])}})
    args = ["convert", str(hits), "--detector", "darkshine", "--sample-index", "cell",
            "--sample-energy", "edep", "--no-progress"]
    assert main(args + ["--conditions", "E_total=E_GeV*1000", "--output-dir", str(tmp_path / "h")]) == 0
    conditions, samples = read_shards(tmp_path / "h")
    np.testing.assert_array_equal(conditions[:, 0], [1000.0, 2000.0])
    assert samples[0, 0, 0, 0] == 3.0 and samples[1, 19, 19, 10] == 3.0 and samples.sum() == 6.0
    capsys.readouterr()
    assert main(args + ["--conditions", "E=E_GeV", "--output-dir", str(tmp_path / "x")]) == 2
    assert "detector 'darkshine' has conditions E_total; missing 'E_total'; unknown 'E'" in (
        capsys.readouterr().err)


def test_cli_wrong_branch_exits_2_with_the_branches(tmp_path, side_file, capsys):
    assert main(["convert", str(side_file), "--detector", "darkside", "--tree", "events",
                 "--conditions", "E_recoil,recoil_type", "--samples", "S1,S2,S3",
                 "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"ddsim-gan convert: {side_file}: tree 'events' has no branch 'S3'")
    assert "its branches are 'E_recoil' (float), 'recoil_type' (int32_t), 'S1' (float)" in err


def test_cli_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    out = capsys.readouterr().out
    assert "--sample-index" in out and "examples:" in out and "ddsim-gan convert" in out


def test_importing_the_data_package_does_not_import_uproot():
    code = "import sys, ddsim_gan.data; assert 'uproot' not in sys.modules; ddsim_gan.data.convert_root"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
