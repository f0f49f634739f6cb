"""TOML configs for the recipes: keys checked against each recipe's own parser, the argv they stand
for, command-line overrides, the shipped configs/*.toml, and `ddsim-gan train` calling main(argv).

No recipe trains here: a tiny DarkSHINE run through `ddsim-gan train` takes about a minute on two
cores, so the end-to-end test replaces the recipe's main and checks the argv it receives."""

import re
from pathlib import Path

import pytest

from ddsim_gan import config
from ddsim_gan.cli import main

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("darkshine_nnls_cgan", "darkside_argan", "lhcb_rich_gan", "luxe_split_wgan",
           "siw_ecal_wgangp", "lhcb_ecal_aux_gan", "mpd_tpc_gan")


def write(path, text):
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def shine_parser():
    return config.recipe_parser("darkshine_nnls_cgan")


def test_an_unknown_key_is_rejected_with_the_valid_keys(tmp_path, shine_parser, capsys):
    with pytest.raises(ValueError, match=r"unknown key 'epoch' for recipe darkshine_nnls_cgan; "
                                         r"valid keys: recipe, mode, output_dir, data, ") as info:
        config.config_argv({"recipe": "darkshine_nnls_cgan", "epoch": 3}, shine_parser)
    message = str(info.value)
    assert "\n" not in message
    for key in ("epochs", "steps_per_epoch", "no_plots", "architecture", "scattered_mev"):
        assert key in message.split("valid keys: ")[1].split(", ")
    # `quick` is an option of the recipe but not a key: the config says it with `mode`
    with pytest.raises(ValueError, match=r"'quick' \(use mode = \"quick\"\)"):
        config.config_argv({"recipe": "darkshine_nnls_cgan", "quick": True}, shine_parser)

    # on the command line: status 2, one line, no traceback (as every user error of ddsim-gan)
    path = write(tmp_path / "typo.toml", 'recipe = "darkshine_nnls_cgan"\nepoch = 3\n')
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ddsim-gan train: {path}: unknown key 'epoch'")
    assert err.count("\n") == 1 and "Traceback" not in err and "scattered_mev" in err


def test_a_config_becomes_the_recipe_argv(shine_parser):
    argv = config.config_argv({
        "recipe": "darkshine_nnls_cgan", "mode": "quick", "data": "shards/", "epochs": 3,
        "no-plots": True, "no_jit": False, "scattered_mev": 0.5, "architecture": "dense",
        "output_dir": "runs/x"}, shine_parser)
    # in the parser's order; a false flag is left out; dashed keys are the same options
    assert argv == ["--quick", "--output-dir", "runs/x", "--data", "shards/", "--no-plots",
                    "--epochs", "3", "--architecture", "dense", "--scattered-mev", "0.5"]

    rich = config.recipe_parser("lhcb_rich_gan")
    argv = config.config_argv({"recipe": "lhcb_rich_gan", "mode": "full", "seed": 7,
                               "learning_rate": 1e-4, "no_ties": True, "n_bar": 1000,
                               "precision": "mixed_bfloat16"}, rich)
    assert argv == ["--precision", "mixed_bfloat16", "--seed", "7", "--learning-rate", "0.0001",
                    "--no-ties", "--n-bar", "1000"]
    args = rich.parse_args(argv)
    assert (args.quick, args.seed, args.learning_rate, args.no_ties, args.n_bar) == (
        False, 7, 1e-4, True, 1000)


@pytest.mark.parametrize("config_entry, message", [
    ({"mode": "fast"}, r"mode = 'fast', expected one of 'quick', 'full'"),
    ({"no_plots": "yes"}, r"no_plots = 'yes': --no-plots is a flag, expected true or false"),
    ({"epochs": True}, r"epochs = True: --epochs takes a value"),
    ({"epochs": [1, 2]}, r"--epochs takes one value, got an array"),
    ({"output_dir": {"a": 1}}, r"--output-dir takes a value \(string or number\), got dict"),
    ({"data": "a", "output-dir": "x", "output_dir": "y"}, r"'output_dir' given twice"),
])
def test_values_of_the_wrong_kind_are_named(shine_parser, config_entry, message):
    with pytest.raises(ValueError, match=message):
        config.config_argv({"recipe": "darkshine_nnls_cgan", **config_entry}, shine_parser)


def test_command_line_options_override_the_config(tmp_path):
    path = write(tmp_path / "c.toml", 'recipe = "darkshine_nnls_cgan"\nmode = "full"\n'
                 'output_dir = "runs/a"\nepochs = 3\narchitecture = "dense"\n')
    name, argv = config.recipe_argv(path, ["--quick", "--output-dir", "X", "--epochs", "5"])
    assert name == "darkshine_nnls_cgan"
    args = config.recipe_parser(name).parse_args(argv)
    assert (args.quick, args.output_dir, args.epochs, args.architecture) == (
        True, Path("X"), 5, "dense")

    quick = write(tmp_path / "q.toml", 'recipe = "darkshine_nnls_cgan"\nmode = "quick"\n')
    assert config.recipe_argv(quick)[1] == ["--quick"]
    assert config.recipe_argv(quick, mode="full")[1] == []            # --mode full

    # overrides go through the recipe's parser too: a bad one is one line, not a usage dump
    with pytest.raises(ValueError, match=r"c.toml \+ command line: argument --epochs: "
                                         r"invalid int value: 'many'"):
        config.recipe_argv(path, ["--epochs", "many"])
    with pytest.raises(ValueError, match=r"unrecognized arguments: --bogus"):
        config.recipe_argv(path, ["--bogus"])
    with pytest.raises(ValueError, match=r"argument --architecture: invalid choice: 'conv'"):
        config.recipe_argv(write(tmp_path / "b.toml", 'recipe = "darkshine_nnls_cgan"\n'
                                 'architecture = "conv"\n'))


def test_file_and_recipe_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.toml: no such config file"):
        config.recipe_argv(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match=r"bad.toml: not valid TOML"):
        config.recipe_argv(write(tmp_path / "bad.toml", "recipe = darkshine\n"))
    with pytest.raises(ValueError, match=r'no recipe = "..." line; recipes: darkshine_nnls_cgan'):
        config.recipe_argv(write(tmp_path / "none.toml", "mode = 'quick'\n"))
    with pytest.raises(ValueError, match=r"recipe 'darkshin': no .*darkshin.py; recipes: "):
        config.recipe_argv(write(tmp_path / "typo.toml", "recipe = 'darkshin'\n"))


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_shipped_config_holds_every_option_and_the_recipes_defaults(recipe):
    path = ROOT / "configs" / f"{recipe}.toml"
    parser = config.recipe_parser(recipe)
    name, argv = config.recipe_argv(path)
    assert name == recipe and "--quick" not in argv                 # shipped in full mode
    # as written, the config runs the recipe exactly as its bare command line does
    assert vars(parser.parse_args(argv)) == vars(parser.parse_args([]))
    # every option is there, set or commented out, so the file documents the whole recipe
    text = path.read_text()
    listed = set(re.findall(r"^(?:# )?(\w+) = ", text, flags=re.M))
    assert set(config.valid_keys(parser)) <= listed
    assert listed <= set(config.valid_keys(parser))                 # and nothing else
    assert f"docs/{recipe}.md" in text and (ROOT / "docs" / f"{recipe}.md").is_file()


def test_train_calls_the_recipes_main_with_the_argv(tmp_path, monkeypatch, capsys):
    """The real main receives the argv and parses it; it is stopped right after (at
    ``settings_for``, before anything is simulated or trained)."""
    from ddsim_gan import recipe

    class Stop(Exception):
        pass

    module = config.load_recipe("darkshine_nnls_cgan")
    original, calls, parsed = module.main, [], []
    monkeypatch.setattr(module, "main", lambda argv: calls.append(argv) or original(argv))
    monkeypatch.setattr(recipe, "settings_for",
                        lambda args, presets: parsed.append(args) or (_ for _ in ()).throw(Stop))
    path = write(tmp_path / "mine.toml", 'recipe = "darkshine_nnls_cgan"\nmode = "quick"\n'
                 f'data = "{tmp_path / "shards"}"\nepochs = 1\nno_plots = true\n')
    with pytest.raises(Stop):
        main(["train", "--config", str(path), "--output-dir", str(tmp_path / "out"),
              "--steps-per-epoch", "2"])
    assert calls[-1] == ["--quick", "--data", str(tmp_path / "shards"), "--no-plots", "--epochs",
                         "1", "--output-dir", str(tmp_path / "out"), "--steps-per-epoch", "2"]
    args = parsed[-1]
    assert (args.quick, args.data, args.no_plots, args.epochs, args.steps_per_epoch,
            args.output_dir, args.architecture) == (True, str(tmp_path / "shards"), True, 1, 2,
                                                    tmp_path / "out", "components")
    assert "recipe darkshine_nnls_cgan: python recipes/darkshine_nnls_cgan.py --quick" in (
        capsys.readouterr().out)
    # --dry-run checks and prints the command, and runs nothing
    n_calls = len(calls)
    assert main(["train", "--config", str(path), "--dry-run"]) == 0
    assert len(parsed) == 1 and calls[n_calls:] == [[]]           # only the parser's capture
    assert not (tmp_path / "out").exists()


def test_recipe_parser_does_not_run_the_recipe(tmp_path, monkeypatch):
    """Capturing the parser stops main at parse_args: nothing is simulated or written."""
    monkeypatch.chdir(tmp_path)
    for recipe in RECIPES:
        parser = config.recipe_parser(recipe)
        assert "--output-dir" in parser._option_string_actions
    assert list(tmp_path.iterdir()) == []


def test_a_non_editable_install_gets_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(config, "__file__", str(tmp_path / "site-packages" / "ddsim_gan" /
                                                "config.py"))
    with pytest.raises(FileNotFoundError, match=r"no recipes/ directory next to the ddsim_gan "
                                                r"package .*pip install -e \."):
        config.recipes_dir()
    path = write(tmp_path / "c.toml", 'recipe = "darkshine_nnls_cgan"\n')
    assert main(["train", "--config", str(path)]) == 2
    assert "pip install -e ." in capsys.readouterr().err


def test_train_help_stands_on_its_own(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "ddsim-gan train --config configs/darkshine_nnls_cgan.toml --quick" in text
    assert 'recipe = "darkshine_nnls_cgan"' in text and "output_dir" in text
    assert all(recipe in text for recipe in RECIPES)
    # other commands still refuse options they do not know
    with pytest.raises(SystemExit) as exit_info:
        main(["info", "x.h5", "--bogus"])
    assert exit_info.value.code == 2
