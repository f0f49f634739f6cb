"""The ddsim-gan command line on the quick DarkSHINE run: info, generate, evaluate, errors."""

import json

import h5py
import numpy as np
import pytest

from ddsim_gan.cli import main
from ddsim_gan.data import read_shards

pytestmark = pytest.mark.slow


def test_info_on_a_shard_a_savedmodel_and_a_keras_file(quick_run, capsys):
    shard = sorted((quick_run / "data").glob("*.h5"))[0]
    assert main(["info", str(shard)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["detector"] == "darkshine" and info["sample_shape"] == [20, 20, 11]
    version = quick_run / "saved_models" / "darkshine_nnls_cgan" / "1"
    assert main(["info", str(version)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["signatures"]["serving_default"]["inputs"] == {
        "conditions": ["float32", [None, 1]], "seed": ["int64", []]}
    assert info["signatures"]["serving_default"]["outputs"]["samples"] == [
        "float32", [None, 20, 20, 11]]
    assert info["metadata"]["detector"] == "darkshine"
    assert main(["info", str(quick_run / "generator.keras")]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"] == [[None, 20, 20, 11]]


def test_generate_is_reproducible_and_evaluate_writes_a_report(quick_run, tmp_path, capsys):
    model = str(quick_run / "saved_models" / "darkshine_nnls_cgan" / "1")
    for name in ("a", "b"):
        assert main(["generate", "--model", model, "--n", "2500", "--batch-size", "1000",
                     "--seed", "5", "--output-dir", str(tmp_path / name)]) == 0
    (c_a, s_a), (c_b, s_b) = (read_shards(tmp_path / n) for n in ("a", "b"))
    assert s_a.shape == (2500, 20, 20, 11)
    np.testing.assert_array_equal(s_a, s_b)
    np.testing.assert_array_equal(c_a, c_b)
    assert c_a.min() >= 200.0 and c_a.max() <= 8000.0          # drawn from the NNLS spectrum

    assert main(["generate", "--model", model, "--conditions", str(quick_run / "data"),
                 "--n", "600", "--output-dir", str(tmp_path / "at")]) == 0
    conditions, _ = read_shards(tmp_path / "at")
    np.testing.assert_array_equal(conditions, read_shards(quick_run / "data")[0][:600])

    report = tmp_path / "report"
    assert main(["evaluate", "--generated", str(tmp_path / "at"), "--reference",
                 str(quick_run / "data"), "--detector", "darkshine", "--output-dir", str(report),
                 "--no-classifier", "--no-plots", "--bars", '{"W1/sigma:E_total": 100}']) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["n_generated"] == 600 and metrics["passed"] is True
    assert "| W1/sigma:E_total |" in (report / "report.md").read_text()


def test_user_errors_exit_2_with_one_line(quick_run, tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.h5")]) == 2
    assert "missing.h5: no such file" in capsys.readouterr().err
    broken = tmp_path / "broken.h5"
    with h5py.File(broken, "w") as f:
        f["samples"] = np.zeros((3, 4))
    assert main(["info", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "broken.h5" in err and "conditions" in err and "Traceback" not in err
    model = str(quick_run / "saved_models" / "darkshine_nnls_cgan" / "1")
    out = tmp_path / "twice"
    assert main(["generate", "--model", model, "--n", "10", "--output-dir", str(out)]) == 0
    assert main(["generate", "--model", model, "--n", "10", "--output-dir", str(out)]) == 2
    assert "already exist" in capsys.readouterr().err
    assert main(["evaluate", "--generated", str(out), "--reference", str(out),
                 "--detector", "no_such_detector", "--output-dir", str(tmp_path / "r")]) == 2
    assert "known detectors" in capsys.readouterr().err
