#!/usr/bin/env python
"""Put the metrics of several recipe runs side by side in one markdown table.

    python tools/compare_runs.py runs/siw_wgangp runs/siw_conservation runs/siw_conv3d \\
        --output runs/siw_comparison.md
    python tools/compare_runs.py runs/lhcb_aux runs/lhcb_no_regressor --metrics \\
        "W1/sigma:asymmetry" "W1/sigma:centre_x"

Each argument is a run directory holding ``metrics.json`` (or the file itself). Rows are the
metrics (default: every metric with a bar in any run, then ``classifier_auc`` and ``FPD``),
columns the runs (headed by ``metrics.json``'s ``"model"`` when present, else the directory
name; the directory added where two runs share a model), each cell ``value ± error`` with a
mark when the run fails that metric's bar; the last columns give the bar and the
reference-vs-reference floor of the first run. The table ends with a line per run: bars
passed, training minutes and steps.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

EXTRA_DEFAULT = ("classifier_auc", "FPD")


def load(path) -> dict:
    path = Path(path)
    file = path / "metrics.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no metrics.json (is this a recipe's output directory?)")
    result = json.loads(file.read_text())
    result.setdefault("_label", result.get("model") or file.parent.name)
    result.setdefault("_directory", file.parent.name)
    return result


def _fmt(value, error=None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    text = f"{value:.3g}"
    if error is not None and isinstance(error, (int, float)) and math.isfinite(error):
        text += f" ± {error:.1g}"
    return text


def table(results, metrics=None) -> str:
    """The markdown table (module docstring) of ``results`` (loaded ``metrics.json`` dicts)."""
    by_run = [{m["name"]: m for m in r["metrics"]} for r in results]
    if metrics is None:
        metrics = []
        for run in by_run:
            metrics += [n for n, m in run.items() if m.get("bar") is not None and n not in metrics]
        metrics += [n for n in EXTRA_DEFAULT if any(n in run for run in by_run)
                    and n not in metrics]
    labels = [r["_label"] for r in results]
    # two runs of one model (an ablation) are told apart by their directories
    labels = [f"{label} ({r['_directory']})" if labels.count(label) > 1 else label
              for label, r in zip(labels, results)]
    lines = ["| metric | " + " | ".join(labels) + " | bar | floor |",
             "|---" * (len(labels) + 3) + "|"]
    for name in metrics:
        cells, bar, floor = [], None, None
        for run in by_run:
            m = run.get(name)
            if m is None:
                cells.append("–")
                continue
            mark = " **✗**" if m.get("passed") is False else (" ✓" if m.get("passed") else "")
            cells.append(_fmt(m.get("value"), m.get("error")) + mark)
            bar = bar if bar is not None else m.get("bar")
            floor = floor if floor is not None else m.get("floor")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_fmt(bar)} | {_fmt(floor)} |")
    lines.append("")
    for r, label, run in zip(results, labels, by_run):
        with_bar = [m for m in run.values() if m.get("bar") is not None]
        passed = sum(1 for m in with_bar if m.get("passed"))
        settings = r.get("settings", {})
        steps = None
        if settings.get("epochs") and settings.get("steps_per_epoch"):
            steps = settings["epochs"] * settings["steps_per_epoch"]
        lines.append(f"- **{label}**: {passed}/{len(with_bar)} bars met; "
                     f"{settings.get('minutes', '?')} min (planned steps {steps or '?'}, "
                     f"time limit {settings.get('time_limit_minutes')} min)")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories (or metrics.json files)")
    parser.add_argument("--metrics", nargs="+", help="metric names (rows); default: see above")
    parser.add_argument("--output", type=Path, help="write the table here (also printed)")
    args = parser.parse_args(argv)
    try:
        results = [load(run) for run in args.runs]
    except (FileNotFoundError, json.JSONDecodeError) as error:
        print(f"compare_runs: {error}", file=sys.stderr)
        return 2
    text = table(results, args.metrics)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
