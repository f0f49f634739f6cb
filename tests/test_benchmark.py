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


def test_gpu_script_runs_under_jax_in_chunks(tmp_path):
    """tools/gpu_benchmark.py under the JAX backend (here on the CPU): 10 samples in chunks of
    4 (the last padded) give every timing, and the script imports no TensorFlow."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from conftest import MiniCalo, tiny_conditional_gan

    gan = tiny_conditional_gan("dense")
    gan.sampler.save(tmp_path / "generator.keras")
    (tmp_path / "ddsim_gan.json").write_text(json.dumps(
        {"condition_ranges": MiniCalo().condition_ranges.tolist()}))
    script = Path(__file__).resolve().parents[1] / "tools" / "gpu_benchmark.py"
    probe = ("import runpy, sys; sys.argv = sys.argv[1:]; "
             "sys.modules['tensorflow'] = None; runpy.run_path(sys.argv[0], run_name='__main__')")
    completed = subprocess.run(
        [sys.executable, "-c", probe, str(script), str(tmp_path / "generator.keras"),
         "--n", "10", "--chunk", "4", "--repeats", "1", "--max-hits", "8"],
        env={**os.environ, "KERAS_BACKEND": "jax"}, capture_output=True, text=True,
        timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout[:completed.stdout.rindex("}") + 1])
    assert (result["n"], result["chunk"], result["n_chunks"]) == (10, 4, 3)
    assert result["output_shape"] == list(MiniCalo.sample_shape)
    assert set(result["seconds_per_1e5"]) == {"on_device_f32", "to_host_f32", "on_device_bf16",
                                             "to_host_bf16", "to_host_sparse_bf16"}
    assert all(v > 0 for v in result["seconds_per_1e5"].values())
