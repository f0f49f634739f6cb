"""The monitor's best generator belongs to the run that wrote it: a fresh run in a used output
directory removes an earlier run's, a resumed run keeps its own."""

from types import SimpleNamespace

from ddsim_gan import recipe


def _used_directory(tmp_path):
    (tmp_path / "best_generator.keras").write_bytes(b"an earlier run's generator")
    (tmp_path / "best_generator.keras.json").write_text('{"epoch": 3, "value": 0.01}')
    return SimpleNamespace(output_dir=tmp_path)


def test_a_fresh_run_removes_an_earlier_runs_best_generator(tmp_path):
    path, resuming = recipe.best_generator_path(_used_directory(tmp_path))
    assert path == tmp_path / "best_generator.keras"
    assert not resuming
    assert not path.exists() and not (tmp_path / "best_generator.keras.json").exists()


def test_a_resumed_run_keeps_its_best_generator(tmp_path):
    args = _used_directory(tmp_path)
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "latest.weights.h5").write_bytes(b"checkpoint")
    path, resuming = recipe.best_generator_path(args)
    assert resuming
    assert path.read_bytes() == b"an earlier run's generator"
