"""The benchmark tool runs on tiny sizes and writes well-formed output (no speed is asserted:
figures come from benchmark runs reported in docs/BENCHMARKS.md, not from tests)."""

import json

import pytest

from ddsim_gan.cli import main

pytestmark = pytest.mark.slow


def test_quick_benchmark_writes_every_section(quick_run, tmp_path, capsys):
    model = quick_run / "saved_models" / "darkshine_nnls_cgan" / "1"
    out = tmp_path / "bench.json"
    assert main(["benchmark", "--quick", "--models", str(model), "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["matmul_peak"]["gflops"] > 0
    (generation,) = result["generation"]
    assert generation["recipe"] == "darkshine_nnls_cgan"
    assert [row["batch"] for row in generation["rows"]] == [1, 10, 100]
    assert all(row["savedmodel_per_s"] > 0 and row["keras_per_s"] > 0
               for row in generation["rows"])
    # the recipe resamples 8 candidates per shower: its generator alone is timed beside it
    assert all(row["generator_alone_per_s"] > 0 for row in generation["rows"])
    # a dense/factorized generator of ~1e6 weights does ~2 FLOPs per weight per sample
    assert 1e5 < generation["flops_per_sample"] < 1e8
    pipeline = result["input_pipeline"]
    assert pipeline["h5py_rows_per_s"] > 0 and pipeline["tfdata_rows_per_s"] > 0
    assert result["train_step"]["ddsim_gan"]["samples_per_s"] > 0
    printed = capsys.readouterr().out
    assert "matmul peak" in printed and "train step" in printed
