"""Recipe settings as TOML configs: what ``ddsim-gan train --config FILE`` reads.

A config names a recipe (a script in ``recipes/``), a mode, and any of the recipe's command-line
options, each under its option name with ``_`` for ``-`` (``--output-dir`` is ``output_dir``)::

    recipe = "darkshine_nnls_cgan"
    mode = "full"                  # or "quick"
    data = "data/darkshine"        # HDF5 shards instead of the reference simulator
    output_dir = "runs/mine"
    epochs = 50                    # a preset override
    no_plots = true                # a flag: true sets it, false leaves it off

The config becomes the recipe's argv (:func:`config_argv`), options given on the command line
after it are appended (the later value wins), and the recipe's ``main(argv)`` runs. Keys are
checked against the recipe's own argparse parser, so a config cannot drift from the recipe:
an unknown key stops with one line listing the valid ones. Relative paths are taken from the
working directory, as on the recipe's command line. ``configs/<recipe>.toml`` holds every
recipe's options with their defaults.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tomllib
from pathlib import Path

MODES = ("quick", "full")
#: keys of a config that are not recipe options
RESERVED = ("recipe", "mode")
#: recipe options a config does not take as keys (``mode`` stands for ``--quick``)
_NOT_KEYS = ("help", "quick")


def recipes_dir() -> Path:
    """``recipes/`` of the source checkout this package is installed from (editable install)."""
    package = Path(__file__).resolve().parent
    path = package.parent / "recipes"
    checkout = any((package.parent / name).is_file() for name in ("setup.cfg", "pyproject.toml"))
    if not (path.is_dir() and checkout):
        raise FileNotFoundError(
            f"no recipes/ directory next to the ddsim_gan package ({package}): the recipes are "
            "scripts of the source checkout, not part of the installed package; install it from "
            "a checkout with `pip install -e .` to use `ddsim-gan train`")
    return path


def recipe_names() -> list[str]:
    """The recipes shipped in ``recipes/`` (one script each)."""
    return sorted(p.stem for p in recipes_dir().glob("*.py") if not p.name.startswith("_"))


def load_recipe(name: str):
    """Import ``recipes/<name>.py`` by path (the recipes are scripts, not a package)."""
    path = recipes_dir() / f"{name}.py"
    if not path.is_file():
        raise ValueError(f"recipe {name!r}: no {path}; recipes: {', '.join(recipe_names())}")
    module_name = f"ddsim_gan_recipes.{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def recipe_parser(name: str) -> argparse.ArgumentParser:
    """The recipe's own argparse parser (its ``main`` stopped before it parses anything)."""
    from .recipe import recipe_parser as capture

    return capture(load_recipe(name).main)


def option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """``{config key: argparse action}`` of a recipe's options (``--quick`` is ``mode``)."""
    return {action.dest: action for action in parser._actions
            if action.option_strings and action.dest not in _NOT_KEYS}


def valid_keys(parser: argparse.ArgumentParser) -> list[str]:
    return [*RESERVED, *option_actions(parser)]


def load_config(path) -> dict:
    """The TOML file as a dict; a missing file or a syntax error names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML: {error}") from None


def config_argv(config: dict, parser: argparse.ArgumentParser, *, mode: str | None = None,
                source: str = "config") -> list[str]:
    """The recipe argv a config stands for (``recipe`` is not part of it).

    ``mode`` replaces the config's ``mode``. Raises ValueError, naming ``source`` and the key, for
    an unknown key (with the list of valid keys), a missing or bad mode, or a value of the wrong
    kind (a flag takes true/false; other options a string, number or, where the option takes
    several values, an array)."""
    actions = option_actions(parser)
    keys = {}
    for key in config:
        option = key.replace("-", "_")
        if option in keys.values():
            raise ValueError(f"{source}: {key!r} given twice (as {option!r} and with dashes)")
        keys[key] = option
    unknown = [key for key, option in keys.items()
               if option not in actions and option not in RESERVED]
    if unknown:
        hint = " (use mode = \"quick\")" if "quick" in [keys[k] for k in unknown] else ""
        raise ValueError(f"{source}: unknown key{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(map(repr, unknown))}{hint} for recipe "
                         f"{config.get('recipe', '?')}; valid keys: "
                         f"{', '.join(valid_keys(parser))}")
    values = {keys[key]: value for key, value in config.items()}
    mode = mode if mode is not None else values.get("mode", "full")
    if mode not in MODES:
        raise ValueError(f"{source}: mode = {mode!r}, expected one of "
                         f"{', '.join(map(repr, MODES))}")
    argv = ["--quick"] if mode == "quick" else []
    for option, action in actions.items():
        if option not in values:
            continue
        value, flag = values[option], action.option_strings[-1]
        where = f"{source}: {option} = {value!r}"
        if action.nargs == 0:                                       # store_true and the like
            if not isinstance(value, bool):
                raise ValueError(f"{where}: {flag} is a flag, expected true or false")
            if value:
                argv.append(flag)
            continue
        items = value if isinstance(value, list) else [value]
        if isinstance(value, list) and action.nargs not in ("*", "+") and not (
                isinstance(action.nargs, int) and action.nargs > 1):
            raise ValueError(f"{where}: {flag} takes one value, got an array")
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise ValueError(f"{where}: {flag} takes a value (string or number), got "
                                 f"{type(item).__name__}")
        argv += [flag, *map(str, items)]
    return argv


class _ParseError(Exception):
    pass


def check_argv(parser: argparse.ArgumentParser, argv: list[str],
               source: str = "arguments") -> argparse.Namespace:
    """Parse ``argv`` with the recipe's parser, turning its usage error into one ValueError line
    (types and choices, unknown command-line options)."""
    def error(message):
        raise _ParseError(message)

    parser.error = error
    try:
        return parser.parse_args(argv)
    except _ParseError as failure:
        raise ValueError(f"{source}: {failure}") from None


def recipe_argv(path, overrides=(), mode: str | None = None) -> tuple[str, list[str]]:
    """``(recipe name, argv)`` for a config file plus command-line ``overrides`` (appended, so
    they win), checked against the recipe's parser."""
    config = load_config(path)
    name = config.get("recipe")
    if not isinstance(name, str):
        available = ", ".join(recipe_names())
        raise ValueError(f"{path}: no recipe = \"...\" line; recipes: {available}")
    parser = recipe_parser(name)
    argv = config_argv(config, parser, mode=mode, source=str(path)) + list(overrides)
    check_argv(parser, argv, source=f"{path} + command line" if overrides else str(path))
    return name, argv


def train(path, overrides=(), mode: str | None = None, dry_run: bool = False) -> int:
    """Run the recipe a config names (``ddsim-gan train``); ``dry_run`` only prints its command."""
    name, argv = recipe_argv(path, overrides, mode)
    print(f"recipe {name}: python recipes/{name}.py {' '.join(map(_quote, argv))}", flush=True)
    if dry_run:
        return 0
    status = load_recipe(name).main(argv)
    return int(status or 0)


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
