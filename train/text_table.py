"""The published text table: AdamW vs AdamW + KO soft vs AdamW + KO hard, several seeds.

Runs :mod:`train.sweep` on ``train.text`` (three variants x ``--seeds``; mean ±
std over seeds and paired differences against AdamW, seed by seed), then adds to
its ``table.md`` what the sweep does not know: the exact command, the wall time,
and the bag-of-words logistic-regression baseline that every run fitted on the
same split (:func:`train.text.bow_baseline`; it depends on the data only, so it
is one number, checked to be the same in every run). The published table::

    python -m train.text_table results/text_rotten_tomatoes --seeds 0 1 2 3 4

Finished runs are not repeated (as in :mod:`train.sweep`), so an interrupted
table can be restarted with the same command.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

from train import loop, sweep

VARIANTS = (("adamw", ""), ("adamw+soft", "--ko soft"), ("adamw+hard", "--ko hard"))
"""The three variants (name, extra ``train.text`` flags); KO uses ``--coll-coef``'s default."""


def bow_rows(out: str) -> list[tuple[str, int, float | None]]:
    """``(variant, seed, bow_test_accuracy)`` of every run directory of a sweep in ``out``."""
    with open(os.path.join(out, "summary.json")) as f:
        runs = json.load(f)["runs"]
    rows = []
    for r in runs:
        path = os.path.join(out, "runs", f"{r['variant']}_seed{r['seed']}", "summary.json")
        with open(path) as f:
            rows.append((r["variant"], r["seed"], json.load(f).get("bow_test_accuracy")))
    return rows


def main(argv: list[str] | None = None) -> dict:
    """Runs the sweep and writes ``table.md`` and ``summary.json`` (with ``bow``) to ``out``.

    Args:
      argv: command-line arguments (``None``: ``sys.argv[1:]``).

    Returns:
      The sweep's summary, with ``"bow_test_accuracy"``, ``"command"`` and
      ``"wall_seconds"`` added.
    """
    p = argparse.ArgumentParser(
        prog="python -m train.text_table",
        description="AdamW vs AdamW+KO soft vs AdamW+KO hard on train.text over seeds, "
        "with paired differences and the bag-of-words baseline, into OUT/table.md.",
    )
    p.add_argument("out", help="output directory")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--common", default="", help="train.text flags given to every run (one string)")
    args = p.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    command = "python -m train.text_table " + shlex.join(argv)
    sweep_argv = ["text", args.out, "--seeds", *map(str, args.seeds), "--common", args.common]
    for name, flags in VARIANTS:
        sweep_argv += ["--variant", name, flags]
    t0 = time.perf_counter()
    summary = sweep.main(sweep_argv)
    wall = time.perf_counter() - t0

    bows = {acc for _, _, acc in bow_rows(args.out)}
    if len(bows) != 1 or None in bows:
        raise SystemExit(
            f"error: the runs report different (or no) bag-of-words accuracies {sorted(bows, key=str)}; "
            "the baseline depends on the data only: were they run with other --common flags?"
        )
    (bow,) = bows
    adamw = summary["mean_std"]["adamw"]["test_accuracy"]
    summary.update({"bow_test_accuracy": bow, "command": command, "wall_seconds": wall})
    loop.write_json(os.path.join(args.out, "summary.json"), summary)
    table_path = os.path.join(args.out, "table.md")
    with open(table_path) as f:
        table = f.read()
    seconds = sum(summary["mean_std"][n]["train_seconds"][0] for n, _ in VARIANTS)
    header = [
        f"Command: `{command}` ({wall:.0f} s wall time for the runs this call made; "
        f"{seconds * len(args.seeds):.0f} s of training in all runs).",
        "",
        f"Bag-of-words logistic regression on the same tokens and split (`train.text.bow_baseline`, "
        f"C = 1, the same for every seed): test accuracy **{bow:.4f}**; "
        f"AdamW Transformer: {adamw[0]:.4f} ± {adamw[1]:.4f} "
        f"(difference {adamw[0] - bow:+.4f}).",
        "",
    ]
    with open(table_path, "w") as f:
        f.write("\n".join(header) + "\n" + table)
    print("\n".join(header))
    return summary


if __name__ == "__main__":
    main()
