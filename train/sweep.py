"""Results tables: several seeds of each variant of ``train.classify`` or ``train.text``.

Each variant is a set of extra flags; every (variant, seed) run writes its own
directory, and the sweep writes ``summary.json`` (per run and mean ± std per
variant) and ``table.md``. Runs already finished (their ``summary.json`` says
``completed``) are not repeated, so an interrupted sweep can be restarted.

The published tables::

    python -m train.sweep classify results/classify_digits --seeds 0 1 2 \\
        --common "--width 16 --epochs 15" \\
        --variant sgd "" --variant sgd+soft "--ko soft" --variant sgd+hard "--ko hard"

    python -m train.sweep text results/text_synthetic --seeds 0 1 2 \\
        --variant adamw "" --variant adamw+soft "--ko soft" --variant adamw+hard "--ko hard"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import time

import numpy as np

from train import classify, loop, report, text

SCRIPTS = {"classify": classify, "text": text}
METRICS = (
    "test_accuracy",
    "best_test_accuracy",
    "neuron_similarity_mean",
    "neuron_similarity_max",
    "collision_rate",
    "kinetic_collision_rate",
    "train_seconds",
)
PAIRED = ("test_accuracy", "best_test_accuracy", "neuron_similarity_max")


def mean_std(values: list[float | None]) -> tuple[float, float]:
    """:func:`train.report.mean_std` of the values that are not ``None`` (``nan`` if none)."""
    present = [v for v in values if v is not None]
    return report.mean_std(present) if present else (float("nan"), float("nan"))


def paired_difference(runs: list[dict], variant: str, baseline: str, metric: str) -> dict:
    """``variant - baseline`` of ``metric`` per seed (seeds both ran), with mean ± std.

    Returns:
      ``{"n", "mean", "std", "higher", "lower", "per_seed"}``: the number of
      paired seeds, the mean and sample std (ddof=1) of the differences
      (:func:`train.report.paired_difference`), and how many seeds the variant
      scored higher / lower than the baseline.
    """

    def of(name: str) -> dict:
        return {
            r["seed"]: r[metric] for r in runs if r["variant"] == name and r.get(metric) is not None
        }

    d = report.paired_difference(of(variant), of(baseline))
    nan = float("nan")
    return {
        "n": d["n"],
        "mean": nan if d["mean"] is None else d["mean"],
        "std": nan if d["std"] is None else d["std"],
        "higher": sum(v > 0 for v in d["values"]),
        "lower": sum(v < 0 for v in d["values"]),
        "per_seed": dict(zip(d["seeds"], d["values"], strict=True)),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m train.sweep",
        description="Run variants x seeds of train.classify or train.text and tabulate them.",
    )
    p.add_argument("script", choices=sorted(SCRIPTS))
    p.add_argument("out", help="output directory")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--common", default="", help="flags given to every run (one string)")
    p.add_argument(
        "--variant",
        nargs=2,
        action="append",
        metavar=("NAME", "FLAGS"),
        required=True,
        help="a named variant and its extra flags (one string); repeatable",
    )
    args = p.parse_args(argv)
    script = SCRIPTS[args.script]
    os.makedirs(args.out, exist_ok=True)
    runs = []
    t0 = time.perf_counter()
    for name, flags in args.variant:
        for seed in args.seeds:
            run_dir = os.path.join(args.out, "runs", f"{name}_seed{seed}")
            path = os.path.join(run_dir, "summary.json")
            done = None
            if os.path.exists(path):
                with open(path) as f:
                    done = json.load(f)
            if done is None or done.get("status") != "completed":
                argv_run = shlex.split(args.common) + shlex.split(flags)
                argv_run += ["--seed", str(seed), "--out", run_dir, "--no-progress"]
                print(f"[sweep] {name} seed {seed}: {shlex.join(argv_run)}", flush=True)
                done = script.main(argv_run)
            runs.append({"variant": name, "seed": seed, **{k: done.get(k) for k in METRICS}})
    table = {}
    for name, _ in args.variant:
        rows = [r for r in runs if r["variant"] == name]
        table[name] = {k: mean_std([r[k] for r in rows]) for k in METRICS}
    baseline = args.variant[0][0]
    paired = {
        name: {k: paired_difference(runs, name, baseline, k) for k in PAIRED}
        for name, _ in args.variant[1:]
    }
    summary = {
        "script": args.script,
        "common": args.common,
        "variants": dict(args.variant),
        "seeds": args.seeds,
        "runs": runs,
        "mean_std": table,
        "paired_vs": baseline,
        "paired_differences": paired,
        "sweep_seconds": time.perf_counter() - t0,
        "versions": loop.versions(),
    }
    loop.write_json(os.path.join(args.out, "summary.json"), summary)
    lines = [
        f"`python -m train.{args.script} {args.common}` + variant flags, seeds {args.seeds} "
        "(mean ± std over seeds; std with ddof=1).",
        "",
        "| variant | flags | test acc. (last) | best test acc. | neuron sim. mean | "
        "neuron sim. max | KO collision rate | kinetic collision rate | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, flags in args.variant:
        t = table[name]

        def f(k, d=4, t=t):
            m, s = t[k]
            return "n/a" if np.isnan(m) else f"{m:.{d}f} ± {s:.{d}f}"

        lines.append(
            f"| {name} | `{flags}` | {f('test_accuracy')} | {f('best_test_accuracy')} | "
            f"{f('neuron_similarity_mean', 3)} | {f('neuron_similarity_max', 3)} | "
            f"{f('collision_rate', 4)} | {f('kinetic_collision_rate', 4)} | "
            f"{f('train_seconds', 0)} |"
        )
    lines += [
        "",
        f"Paired differences against `{baseline}` (same seed: same initialisation and data "
        "order), mean ± std over seeds; higher/lower = seeds where the variant scored "
        "higher/lower:",
        "",
        "| variant | Δ test acc. (last) | Δ best test acc. | Δ neuron sim. max | higher/lower (last acc.) |",
        "|---|---|---|---|---|",
    ]
    for name, _ in args.variant[1:]:
        d = paired[name]

        def g(k, d=d):
            return "n/a" if not d[k]["n"] else f"{d[k]['mean']:+.4f} ± {d[k]['std']:.4f}"

        acc = d["test_accuracy"]
        lines.append(
            f"| {name} | {g('test_accuracy')} | {g('best_test_accuracy')} | "
            f"{g('neuron_similarity_max')} | {acc['higher']}/{acc['lower']} of {acc['n']} |"
        )
    with open(os.path.join(args.out, "table.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return summary


if __name__ == "__main__":
    main()
