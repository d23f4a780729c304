"""The published PDE table from separate ``train.pde`` runs, one per equation and model.

``python -m train.pde --sweep-results DIR`` runs every equation and model in one go and writes
``DIR/table.md``. On a small machine the models are often run one at a time instead, each with
``python -m train.pde --equation E --model M --seeds ... --out DIR/E_M``. This script collects
those runs' ``summary.json`` files (every direct subdirectory of ``DIR`` that has one) and writes
the same table, with paired differences against the plain FNO of the same equation and seeds,
followed by the command and run time of every run::

    python -m train.pde_table results/pde
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from train import pde

SIZE_KEYS = ("resolution", "ntrain", "ntest", "epochs", "batch_size")


def collect(directory: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict], list[dict]]:
    """The runs under ``directory``: ``(summaries, sizes, runs)``.

    Args:
      directory: holds one subdirectory per run (``E_M`` by convention), each with the
        ``summary.json`` and ``run.json`` that ``train.pde`` writes.

    Returns:
      ``summaries``: ``{"E_M": summary}`` in the order of ``pde.EQUATIONS`` x ``pde.MODELS``;
      ``sizes``: ``{equation: {resolution, ntrain, ntest, epochs, batch_size}}``;
      ``runs``: ``[{"name", "command", "runtime_s"}, ...]`` in the same order.

    Raises:
      ValueError: no run found; two runs of one equation and model; a run that did not
        complete; runs of one equation at different sizes (their table would mix settings).
    """
    found: dict[str, tuple[dict, dict]] = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name, "summary.json")
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            summary = json.load(f)
        if "equation" not in summary or "model" not in summary:
            continue  # not a single-model train.pde run (e.g. a --sweep-results summary)
        key = f"{summary['equation']}_{summary['model']}"
        if key in found:
            raise ValueError(f"two runs of {key} in {directory}: keep one")
        if summary.get("status") != "completed":
            raise ValueError(f"{path}: the run did not complete; finish it with --resume first")
        run_path = os.path.join(directory, name, "run.json")
        run = {}
        if os.path.isfile(run_path):
            with open(run_path) as f:
                run = json.load(f)
        found[key] = (summary, {"name": name, **run})
    if not found:
        raise ValueError(f"no train.pde run (a subdirectory with summary.json) in {directory}")
    order = [f"{e}_{m}" for e in pde.EQUATIONS for m in pde.MODELS]
    summaries, sizes, runs = {}, {}, []
    for key in sorted(found, key=order.index):
        summary, run = found[key]
        size = {k: summary["settings"][k] for k in SIZE_KEYS}
        eq = summary["equation"]
        if sizes.setdefault(eq, size) != size:
            raise ValueError(
                f"{run['name']}: {eq} runs at different sizes ({size} vs {sizes[eq]}); "
                "a table must compare runs at the same sizes"
            )
        summaries[key] = summary
        runs.append(
            {"name": run["name"], "command": run.get("command"), "runtime_s": run.get("runtime_s")}
        )
    return summaries, sizes, runs


def write(directory: str) -> str:
    """Writes ``directory/table.md`` from the runs in it; returns its path."""
    summaries, sizes, runs = collect(directory)
    seeds = sorted({s for summary in summaries.values() for s in summary["seeds"]})
    runtime = sum(r["runtime_s"] or 0.0 for r in runs)
    path = os.path.join(directory, "table.md")
    pde.write_sweep_table(summaries, sizes, seeds, runtime, path)
    lines = ["", "The runs of this table (`python -m train.pde_table " + directory + "`):", ""]
    for r in runs:
        t = f"{r['runtime_s']:.0f} s" if r["runtime_s"] is not None else "time not recorded"
        lines.append(f"- `{r['name']}` ({t}): `{r['command']}`")
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(
        prog="python -m train.pde_table",
        description="Write DIR/table.md from the train.pde runs in DIR's subdirectories.",
    )
    p.add_argument("directory", help="holds one subdirectory per train.pde run")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if not os.path.isdir(args.directory):
        p.exit(2, f"{p.prog}: error: {args.directory} is not a directory\n")
    try:
        path = write(args.directory)
    except ValueError as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    print("wrote", path)
    return path


if __name__ == "__main__":
    main()
