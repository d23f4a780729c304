"""Reporting shared by every experiment script: mean ± std, paired differences, tables, run info.

One place for how results are summarised, so every table in the repository reads
the same way:

* spread is the **sample** standard deviation (``ddof=1``; ``0.0`` for one value);
* a paired difference is ``variant - baseline`` of the same seed, reported as the
  mean ± std of the per-seed differences, with the per-seed values;
* tables are GitHub markdown.

Example::

    from train import report

    report.mean_std([0.1, 0.2, 0.3])                  # (0.2, 0.1)
    report.fmt_mean_std(0.2, 0.1)                     # '0.2000 ± 0.1000'
    d = report.paired_difference({0: 1.0, 1: 2.0}, {0: 0.5, 1: 1.0})
    report.markdown_table(["a", "b"], [["1", "2"]])
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; ``0.0`` for a single value).

    Raises:
      ValueError: for an empty sequence.
    """
    a = np.asarray(values, np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError("mean_std needs at least one value.")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def mean_std_dict(values: Sequence[float]) -> dict[str, float]:
    """:func:`mean_std` as ``{"mean": m, "std": s}`` (the JSON form of the summaries)."""
    m, s = mean_std(values)
    return {"mean": m, "std": s}


def fmt_mean_std(mean: float, std: float, digits: int = 4, signed: bool = False) -> str:
    """``"m ± s"`` with ``digits`` decimals (``signed``: a leading ``+`` on positive means)."""
    sign = "+" if signed else ""
    return f"{mean:{sign}.{digits}f} ± {std:.{digits}f}"


def paired_difference(
    variant: Mapping[Any, float], baseline: Mapping[Any, float]
) -> dict[str, Any]:
    """``variant - baseline`` over the seeds both have.

    Args:
      variant, baseline: seed -> metric value.

    Returns:
      ``{"seeds", "values", "mean", "std", "better_count", "n"}``: the paired
      seeds (sorted), the per-seed differences, their mean and sample std, how
      many are ``< 0`` (for errors and losses that means the variant is
      better; read it the other way for accuracies), and the number of pairs.
      ``mean``/``std`` are ``None`` when no seed is shared.
    """
    seeds = sorted(set(variant) & set(baseline))
    d = [float(variant[s]) - float(baseline[s]) for s in seeds]
    out: dict[str, Any] = {"seeds": seeds, "values": d, "n": len(d)}
    if d:
        out["mean"], out["std"] = mean_std(d)
    else:
        out["mean"] = out["std"] = None
    out["better_count"] = sum(v < 0 for v in d)
    return out


def fmt_paired(diff: Mapping[str, Any], digits: int = 4) -> str:
    """``"+m ± s (per seed: +a, -b, ...)"`` for a :func:`paired_difference`."""
    if diff["mean"] is None:
        return "no shared seeds"
    per = ", ".join(f"{v:+.{digits}f}" for v in diff["values"])
    return f"{fmt_mean_std(diff['mean'], diff['std'], digits, signed=True)} (per seed: {per})"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table (cells converted with ``str``)."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def run_info(command: str, **extra: Any) -> dict[str, Any]:
    """What ``run.json`` records: the command, library versions and the machine."""
    import jax
    import optax

    import kinetix

    return {
        "command": command,
        **extra,
        "jax": jax.__version__,
        "optax": optax.__version__,
        "kinetix": kinetix.__version__,
        "backend": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


def write_json(path: str, obj: Any) -> None:
    """Writes ``obj`` as indented JSON atomically (a temporary file, then a rename)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)
