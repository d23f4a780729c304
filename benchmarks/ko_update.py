"""Cost of one KO update (soft, hard, hard ``rule="released"``) against ``optax.adamw``.

Run from the repository root::

    python -m benchmarks.ko_update                 # kernels (512,10) ... (4096,4096)
    python -m benchmarks.ko_update --quick         # (512,10) and (512,100) only
    python -m benchmarks.ko_update --sizes 2048x1000 --repeats 3

For every Flax kernel shape ``(in, out)`` and every transform, on one leaf:

* compile time of the jitted update (``jax.jit(f).lower(...).compile()``);
* the median wall time of the compiled update over ``--repeats`` calls after one
  warm-up call, each call followed by ``jax.block_until_ready``;
* the same for a jitted ``optax.adamw(1e-3)`` update of the same leaf, timed again
  right next to each KO case (so both see the same machine load), the ratio
  KO / adamw, and the ratio ``optax.chain(ko, optax.adamw(1e-3))`` / adamw, which is
  what a user pays per step;
* XLA's memory analysis of the compiled KO update (temp, argument and output bytes)
  and the growth of the process's peak RSS during the first KO call (Linux only);
* for the hard collision: the number of colliding pairs (counted beforehand with the
  acceptance test, and read back from ``state.collision_rate`` after the update).

Inputs: the weight is initialised as a Flax ``nn.Dense`` kernel
(``jax.nn.initializers.lecun_normal()``: truncated normal, variance ``1/in``). The
gradient is i.i.d. ``N(0, 1e-2^2)`` (``--grads normal``, the default) or the gradient
of a small least-squares loss ``0.5 * mean_b |x_b W - y_b|^2`` with a batch of 64
Gaussian inputs and targets from a random teacher kernel (``--grads loss``).

The hard collision's time grows with (colliding pairs) x (particle dimension), and at
``coll_coef=1`` every pair collides. Before running a hard case the pairs are counted
and the time of one call is predicted from a calibration run on a (512, 256) kernel
(and from the hard cases measured so far); a case predicted to take longer than
``--max-call-s`` per call is not run: a note is printed and compile time, memory
analysis and pair count are still reported. Repeats are cut so that the timed
repeats of one measurement stay within ``--budget-s`` (at least one repeat).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

import kinetix
from kinetix import collision

DEFAULT_SIZES = ((512, 10), (512, 100), (2048, 1000), (4096, 4096))
QUICK_SIZES = ((512, 10), (512, 100))
DEFAULT_COEFS = (0.1, 0.5, 1.0)
SOFT_COEF = 0.1
ADAMW_LR = 1e-3
GRAD_STD = 1e-2
LOSS_BATCH = 64
CALIBRATION_SHAPE = (512, 256)  # 256 particles in R^512; all 32640 pairs collide at coef 1
MB = 1e6  # bytes; memory is reported in MB = 10^6 bytes


@dataclass(frozen=True)
class Case:
    """One KO transform to benchmark."""

    kind: str  # "soft" or "hard"
    coef: float
    rule: str = "paper"  # hard only: "paper" or "released"

    @property
    def label(self) -> str:
        if self.kind == "soft":
            return "soft"
        return "hard" if self.rule == "paper" else "hard-released"

    @property
    def axis(self) -> int:
        # ko_soft / ko_hard defaults: output units (-1), or input units (0) for "released".
        return 0 if (self.kind == "hard" and self.rule == "released") else -1

    @property
    def length_scale(self) -> float:
        # ko_hard defaults: ell = 1 (paper), 20 (released).
        return 20.0 if self.rule == "released" else 1.0

    @property
    def passes(self) -> int:
        # "released" draws every colliding pair's normal vector twice (norm pass + update).
        return 2 if (self.kind == "hard" and self.rule == "released") else 1

    def make(self, seed: int) -> optax.GradientTransformationExtraArgs:
        if self.kind == "soft":
            return kinetix.ko_soft(self.coef)
        return kinetix.ko_hard(self.coef, key=jax.random.key(seed), rule=self.rule)


# ----------------------------------------------------------------------------- helpers


def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS counter (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def compile_fn(f, *args):
    t0 = time.perf_counter()
    compiled = jax.jit(f).lower(*args).compile()
    return compiled, time.perf_counter() - t0


def memory_stats(compiled) -> dict | None:
    try:
        ma = compiled.memory_analysis()
    except Exception as e:  # not every backend implements it
        return {"error": repr(e)}
    if ma is None:
        return None
    return {
        "temp_mb": ma.temp_size_in_bytes / MB,
        "argument_mb": ma.argument_size_in_bytes / MB,
        "output_mb": ma.output_size_in_bytes / MB,
        "alias_mb": ma.alias_size_in_bytes / MB,
        "generated_code_mb": ma.generated_code_size_in_bytes / MB,
    }


def time_compiled(fn, args, repeats: int, budget_s: float, track_rss: bool = False):
    """One warm-up call, then up to ``repeats`` timed calls within ``budget_s``."""
    rss_before = _proc_status_kb("VmRSS") if track_rss else None
    reset = track_rss and rss_before is not None and _reset_peak_rss()
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    rss_growth = None
    if reset:
        peak = _proc_status_kb("VmHWM")
        rss_growth = None if peak is None else max(peak - rss_before, 0) * 1024 / MB
    n = repeats
    if first * repeats > budget_s:
        n = max(1, int(budget_s // max(first, 1e-9)))
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    timing = {
        "first_call_s": first,
        "times_s": times,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "repeats": n,
    }
    if track_rss:
        timing["peak_rss_growth_mb"] = rss_growth
    return out, timing


def make_inputs(shape: tuple[int, int], grads: str, seed: int):
    """A Flax-Dense-like kernel and a gradient for it."""
    kw, kg, kx, kt = jax.random.split(jax.random.key(seed), 4)
    init = jax.nn.initializers.lecun_normal()
    w = init(kw, shape, jnp.float32)
    if grads == "normal":
        g = GRAD_STD * jax.random.normal(kg, shape, jnp.float32)
    else:
        x = jax.random.normal(kx, (LOSS_BATCH, shape[0]), jnp.float32)
        y = x @ init(kt, shape, jnp.float32)
        g = jax.grad(lambda w_: 0.5 * jnp.mean(jnp.sum((x @ w_ - y) ** 2, axis=-1)))(w)
    return jax.block_until_ready(w), jax.block_until_ready(g)


def count_pairs(w, g, case: Case, coefs: list[float]):
    """Exact number of colliding pairs for each coef (the acceptance test of hard_collide)."""
    wp = collision.as_particles(w, case.axis)
    gp = collision.as_particles(g, case.axis)
    ell = case.length_scale

    def counts(wp, gp, cs):
        def one(c):
            return jnp.sum(collision.acceptance_matrix(wp, gp, c, ell), dtype=jnp.int32)

        return jax.vmap(one)(cs)

    cs = jnp.asarray(coefs, jnp.float32)
    compiled, _ = compile_fn(counts, wp, gp, cs)
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(wp, gp, cs))
    dt = time.perf_counter() - t0
    return {c: int(n) for c, n in zip(coefs, out.tolist(), strict=True)}, dt


def calibrate_hard(seed: int, repeats: int) -> float:
    """Seconds per (pair x particle dimension) of the hard collision, all pairs colliding."""
    w, g = make_inputs(CALIBRATION_SHAPE, "normal", seed)
    tx = kinetix.ko_hard(1.0, key=jax.random.key(seed))
    state = tx.init(w)
    compiled, _ = compile_fn(tx.update, g, state, w)
    _, t = time_compiled(compiled, (g, state, w), max(repeats, 2), 30.0)
    n, d = CALIBRATION_SHAPE[1], CALIBRATION_SHAPE[0]
    return t["median_s"] / (n * (n - 1) // 2 * d)


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1.0:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


def _fmt_ratio(r: float | None) -> str:
    return "-" if r is None else (f"{r:.3g}" if r < 1000 else f"{r:.0f}")


def _fmt_mb(x: float | None) -> str:
    return "-" if x is None else (f"{x:.3g}" if x < 1000 else f"{x:.0f}")


# ----------------------------------------------------------------------------- benchmark


def run_case(case: Case, shape, w, g, adamw_compiled, args, hard_ctx: dict) -> dict:
    n = shape[case.axis]
    d = w.size // n
    candidates = n * (n - 1) // 2
    row: dict = {
        "kernel": list(shape),
        "transform": case.label,
        "rule": case.rule if case.kind == "hard" else None,
        "coll_coef": case.coef,
        "particles": n,
        "particle_dim": d,
        "candidate_pairs": candidates,
    }
    tx = case.make(args.seed)
    state = tx.init(w)
    compiled, row["compile_s"] = compile_fn(tx.update, g, state, w)
    row["memory"] = memory_stats(compiled)

    if case.kind == "hard":
        pairs = hard_ctx["counts"][case.rule][case.coef]
        work = pairs * d * case.passes
        predicted = hard_ctx["accept_s"][case.rule] + work * hard_ctx["s_per_elem"]
        row["pairs_precount"] = pairs
        row["predicted_call_s"] = predicted
        if predicted > args.max_call_s:
            row["skipped"] = (
                f"not run: {pairs} pairs x D={d} x {case.passes} pass(es), predicted "
                f"{predicted:.0f} s per call > --max-call-s {args.max_call_s:g}"
            )
            print(f"    NOTE {case.label} coef={case.coef}: {row['skipped']}", flush=True)
            return row

    out, row["ko"] = time_compiled(
        compiled, (g, state, w), args.repeats, args.budget_s, track_rss=True
    )
    rate = float(out[1].collision_rate)
    row["collision_rate"] = rate
    row["pairs"] = round(rate * candidates)
    if case.kind == "hard":
        row["pairs"] = row["pairs_precount"]
        row["rate_matches_precount"] = abs(rate * candidates - row["pairs_precount"]) <= 1.0
        if work >= 1e7:  # keep the cost model conservative for the larger cases
            per_elem = max(row["ko"]["median_s"] - hard_ctx["accept_s"][case.rule], 0.0) / work
            hard_ctx["s_per_elem"] = max(hard_ctx["s_per_elem"], per_elem)
    del out

    # adamw again, right next to this case, so the ratio sees the same machine load.
    _, row["adamw"] = time_compiled(
        adamw_compiled, (g, adamw_compiled.state0, w), args.repeats, args.budget_s
    )

    chain = optax.chain(case.make(args.seed), optax.adamw(ADAMW_LR))
    c_state = chain.init(w)
    c_compiled, row["chain_compile_s"] = compile_fn(chain.update, g, c_state, w)
    _, row["chain"] = time_compiled(c_compiled, (g, c_state, w), args.repeats, args.budget_s)

    a = row["adamw"]["median_s"]
    row["ko_over_adamw"] = row["ko"]["median_s"] / a
    row["chain_over_adamw"] = row["chain"]["median_s"] / a
    return row


class _Compiled:
    """A compiled adamw update together with its initial state."""

    def __init__(self, compiled, state0):
        self._compiled = compiled
        self.state0 = state0

    def __call__(self, *args):
        return self._compiled(*args)


def run(args) -> dict:
    cases = [Case("soft", SOFT_COEF)]
    cases += [Case("hard", c, "paper") for c in args.coefs]
    cases += [Case("hard", c, "released") for c in args.coefs]

    print(
        f"jax {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}), "
        f"{os.cpu_count()} CPUs; grads={args.grads}; repeats={args.repeats}",
        flush=True,
    )
    t0 = time.perf_counter()
    s_per_elem = calibrate_hard(args.seed, args.repeats)
    calibration = {
        "shape": list(CALIBRATION_SHAPE),
        "s_per_pair_dim": s_per_elem,
        "seconds": time.perf_counter() - t0,
    }
    print(f"calibration: hard collision costs {s_per_elem * 1e9:.1f} ns per pair x dim", flush=True)
    hard_ctx = {"s_per_elem": s_per_elem, "counts": {}, "accept_s": {}}

    rows, sizes_meta = [], []
    for shape in args.sizes:
        print(f"\n== kernel {shape} ==", flush=True)
        w, g = make_inputs(shape, args.grads, args.seed)
        adamw = optax.adamw(ADAMW_LR)
        a_state = adamw.init(w)
        a_compiled, a_compile_s = compile_fn(adamw.update, g, a_state, w)
        adamw_c = _Compiled(a_compiled, a_state)
        _, a_t = time_compiled(adamw_c, (g, a_state, w), args.repeats, args.budget_s)
        sizes_meta.append(
            {
                "kernel": list(shape),
                "adamw_compile_s": a_compile_s,
                "adamw": a_t,
                "adamw_memory": memory_stats(a_compiled),
            }
        )
        print(f"  adamw: {_fmt_s(a_t['median_s'])} (compile {a_compile_s:.2f} s)", flush=True)
        for rule in ("paper", "released"):
            probe = Case("hard", 0.0, rule)
            counts, dt = count_pairs(w, g, probe, list(args.coefs))
            hard_ctx["counts"][rule] = counts
            hard_ctx["accept_s"][rule] = dt
            n = shape[probe.axis]
            print(
                f"  hard {rule}: {n} particles in R^{w.size // n}, colliding pairs of "
                f"{n * (n - 1) // 2}: "
                + ", ".join(f"coef {c:g}: {k}" for c, k in counts.items())
                + f" (acceptance test {_fmt_s(dt)})",
                flush=True,
            )
        for case in cases:
            row = run_case(case, shape, w, g, adamw_c, args, hard_ctx)
            rows.append(row)
            if "skipped" not in row:
                print(
                    f"  {case.label:13s} coef={case.coef:<4g} KO {_fmt_s(row['ko']['median_s'])} "
                    f"(x{row['ko']['repeats']}), adamw {_fmt_s(row['adamw']['median_s'])}, "
                    f"KO/adamw {_fmt_ratio(row['ko_over_adamw'])}, "
                    f"chain/adamw {_fmt_ratio(row['chain_over_adamw'])}, "
                    f"compile {row['compile_s']:.2f} s, temp {_fmt_mb((row['memory'] or {}).get('temp_mb'))} MB, "
                    f"pairs {row['pairs']} (rate {row['collision_rate']:.4g})",
                    flush=True,
                )
        del w, g

    return {
        "meta": {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": "python -m benchmarks.ko_update " + " ".join(sys.argv[1:]),
            "jax": jax.__version__,
            "optax": optax.__version__,
            "kinetix": kinetix.__version__,
            "git": git_state(),
            "backend": jax.default_backend(),
            "device": jax.devices()[0].device_kind,
            "cpu_count": os.cpu_count(),
            "cpu": _cpu_name(),
            "python": platform.python_version(),
            "grads": args.grads,
            "grad_std": GRAD_STD if args.grads == "normal" else None,
            "weights": "lecun_normal (truncated normal, variance 1/in), as flax nn.Dense",
            "soft_coef": SOFT_COEF,
            "adamw_lr": ADAMW_LR,
            "repeats": args.repeats,
            "budget_s": args.budget_s,
            "max_call_s": args.max_call_s,
            "calibration": calibration,
            "total_s": time.perf_counter() - t0,
        },
        "sizes": sizes_meta,
        "results": rows,
    }


def git_state() -> str | None:
    """``HEAD`` of the checkout kinetix is imported from, with ``+dirty`` if kinetix/ differs."""
    root = Path(kinetix.__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "kinetix"],
            cwd=root,
            capture_output=True,
            text=True,
        )
    except OSError:
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def markdown_table(results: dict) -> str:
    head = (
        "| kernel (in,out) | transform | coef | particles N x D | colliding pairs (rate) "
        "| KO update | adamw | KO / adamw | chain / adamw | compile | temp MB | peak RSS +MB |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in results["results"]:
        mem = r.get("memory") or {}
        kernel = f"({r['kernel'][0]},{r['kernel'][1]})"
        nd = f"{r['particles']} x {r['particle_dim']}"
        coef = f"{r['coll_coef']:g}"
        if "skipped" in r:
            pairs = f"{r['pairs_precount']} ({r['pairs_precount'] / r['candidate_pairs']:.3g})"
            ko = f"not run (predicted {r['predicted_call_s']:.0f} s)"
            cells = [kernel, r["transform"], coef, nd, pairs, ko, "-", "-", "-"]
        else:
            pairs = f"{r['pairs']} ({r['collision_rate']:.3g})"
            cells = [
                kernel,
                r["transform"],
                coef,
                nd,
                pairs,
                _fmt_s(r["ko"]["median_s"]) + ("" if r["ko"]["repeats"] > 1 else " (1 rep)"),
                _fmt_s(r["adamw"]["median_s"]),
                _fmt_ratio(r["ko_over_adamw"]),
                _fmt_ratio(r["chain_over_adamw"]),
            ]
        cells += [
            f"{r['compile_s']:.2f} s",
            _fmt_mb(mem.get("temp_mb")),
            _fmt_mb((r.get("ko") or {}).get("peak_rss_growth_mb")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def _parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    sizes = []
    for item in text.split(","):
        a, b = item.lower().split("x")
        sizes.append((int(a), int(b)))
    return tuple(sizes)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--sizes",
        type=_parse_sizes,
        default=DEFAULT_SIZES,
        help="kernel shapes in,out as e.g. 512x10,2048x1000 (default: 512x10,512x100,2048x1000,4096x4096)",
    )
    g.add_argument("--quick", action="store_true", help="smallest sizes only (512x10,512x100)")
    p.add_argument(
        "--repeats", type=int, default=5, help="timed calls after the warm-up (default 5)"
    )
    p.add_argument(
        "--coefs",
        type=lambda s: tuple(float(x) for x in s.split(",")),
        default=DEFAULT_COEFS,
        help="coll_coef values of the hard cases (default 0.1,0.5,1.0)",
    )
    p.add_argument("--grads", choices=("normal", "loss"), default="normal", help="gradient source")
    p.add_argument(
        "--max-call-s",
        type=float,
        default=120.0,
        help="do not run a hard case predicted to take longer per call (default 120)",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=60.0,
        help="time for the timed repeats of one measurement; repeats are cut to fit (default 60)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("results/benchmarks/ko_update.json"),
        help="JSON file for the raw numbers (default results/benchmarks/ko_update.json)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = QUICK_SIZES
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    results = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nraw numbers: {args.out}   total {results['meta']['total_s']:.0f} s\n")
    print(markdown_table(results))


if __name__ == "__main__":
    main()
