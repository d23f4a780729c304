"""Condensation experiment of the KO paper (Feng et al., 2025, Fig. 2), small scale.

A 5-50-1 fully connected network is fitted to 80 samples of
``f(x) = sum_k 3.5 sin(5 x_k + 1)`` (``x_k ~ U[-4, 2]``) from a tiny initialisation
(every parameter ``N(0, 0.005^2)``), with full-batch Adam and an MSE loss for 100
epochs (= 100 steps). At small initialisation the hidden neurons' input weights
*condense* onto a few directions; the paper claims that KO's soft and hard
collisions, applied to the first layer (``hidden/kernel``, whose 50 output
neurons are the particles), hinder this condensation.

Run::

    python -m train.condensation --out results/condensation

Phases:

1. Sweep (skipped with ``--no-sweep``, or for each value given on the command
   line). On separate sweep seeds (``1000, 1001, ...``), the learning rate is
   the value of ``--lr-grid`` where plain Adam reaches the lowest final loss,
   averaged over seeds and activations. Then, at that learning rate, each
   method's ``coll_coef`` is the *largest* value of ``--coef-grid`` whose final
   loss, averaged over seeds and activations, stays within ``--loss-tolerance``
   (10%) of Adam's (ratio of the activation-averaged mean losses). The rule looks at
   the loss only, never at the similarity metrics (which are reported for every
   grid point in ``sweep.json`` as a sensitivity table).
2. Main run: seeds ``0 .. N-1`` for every (activation, optimizer). A seed fixes
   the data, the initialisation and the KO key, so the three optimizers of one
   seed start from the same network on the same data.

Every (activation, optimizer) is one ``jax.jit`` of a ``lax.scan`` over the
steps, ``vmap``-ed over seeds (and over grid points during the sweep).

Outputs in ``--out``: ``summary.json``, ``sweep.json``, ``table.md``,
``heatmaps.png`` (seed 0), ``kernels.npz`` (final ``hidden/kernel`` of every
seed and the per-step losses) and ``run.json`` (command, runtime, versions).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

import kinetix

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "xTanh": lambda x: x * jnp.tanh(x),
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
}
OPTIMIZERS = ("adam", "ko_soft", "ko_hard")
KO_OPTIMIZERS = ("ko_soft", "ko_hard")
HIDDEN_PATH = "hidden/kernel"

NUM_SAMPLES = 80
IN_DIM = 5
WIDTH = 50
INIT_STD = 0.005
X_LOW, X_HIGH = -4.0, 2.0

DEFAULT_LR_GRID = (1e-3, 3e-3, 1e-2, 3e-2)
DEFAULT_COEF_GRID = (0.05, 0.1, 0.3, 0.5)
# Used with --no-sweep when no --lr/--soft-coef/--hard-coef is given: the values
# the sweep selected on the default settings (see results/condensation/sweep.json).
NO_SWEEP_LR = 3e-2
NO_SWEEP_SOFT_COEF = 0.1
NO_SWEEP_HARD_COEF = 0.3
SWEEP_SEED_OFFSET = 1000
# Plot recipe of the authors' get_cos_distance.
GROUP_THRESHOLD = 0.6


# --------------------------------------------------------------------------- model


def target_fn(x: jax.Array) -> jax.Array:
    """``f(x) = sum_k 3.5 sin(5 x_k + 1)``, shape ``(n, 5) -> (n, 1)``."""
    return jnp.sum(3.5 * jnp.sin(5.0 * x + 1.0), axis=-1, keepdims=True)


def make_data(key: jax.Array, n: int = NUM_SAMPLES) -> tuple[jax.Array, jax.Array]:
    x = jax.random.uniform(key, (n, IN_DIM), minval=X_LOW, maxval=X_HIGH)
    return x, target_fn(x)


def init_params(key: jax.Array, width: int = WIDTH, std: float = INIT_STD) -> dict[str, Any]:
    """All parameters ``N(0, std^2)``, Flax layout (kernel ``(in, out)``)."""
    k = jax.random.split(key, 4)
    return {
        "hidden": {
            "kernel": std * jax.random.normal(k[0], (IN_DIM, width)),
            "bias": std * jax.random.normal(k[1], (width,)),
        },
        "out": {
            "kernel": std * jax.random.normal(k[2], (width, 1)),
            "bias": std * jax.random.normal(k[3], (1,)),
        },
    }


def forward(params: dict[str, Any], x: jax.Array, activation: str) -> jax.Array:
    h = ACTIVATIONS[activation](x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    return h @ params["out"]["kernel"] + params["out"]["bias"]


def mse(params: dict[str, Any], x: jax.Array, y: jax.Array, activation: str) -> jax.Array:
    return jnp.mean((forward(params, x, activation) - y) ** 2)


def make_optimizer(
    optimizer: str, lr: jax.Array, coll_coef: jax.Array, ko_key: jax.Array, hard_rule: str
) -> optax.GradientTransformationExtraArgs:
    """Adam, or a KO collision on ``hidden/kernel`` chained before Adam."""
    mask = kinetix.path_mask(HIDDEN_PATH)
    if optimizer == "adam":
        return optax.adam(lr)
    if optimizer == "ko_soft":
        ko = kinetix.ko_soft(coll_coef, key=ko_key, mask=mask)
    elif optimizer == "ko_hard":
        ko = kinetix.ko_hard(coll_coef, key=ko_key, mask=mask, rule=hard_rule)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {OPTIMIZERS}.")
    return optax.chain(ko, optax.adam(lr))


def _hidden_collision_rate(opt_state: Any) -> jax.Array:
    """The last step's collision rate of ``hidden/kernel`` (traceable).

    The KO state sits inside ``optax.masked``: ``opt_state[0].inner_state`` is a
    ``KOState`` whose ``collision_rate`` tree holds ``MaskedNode`` for the
    leaves that do not collide.
    """
    is_ko = lambda x: isinstance(x, kinetix.KOState)  # noqa: E731
    found = [x for x in jax.tree.leaves(opt_state, is_leaf=is_ko) if is_ko(x)]
    if len(found) != 1:
        raise ValueError(f"expected one KOState in the optimizer state, found {len(found)}.")
    return found[0].collision_rate["hidden"]["kernel"]


@jax.jit
def make_inputs(seeds: jax.Array) -> dict[str, Any]:
    """Data, initial parameters and KO key of each seed (vmapped over ``seeds``).

    Kept out of :func:`train_batch` so that the PRNG code is compiled once, not
    once per configuration.
    """

    def one(seed):
        data_key, init_key, ko_key = jax.random.split(jax.random.key(seed), 3)
        x, y = make_data(data_key)
        return {"x": x, "y": y, "params": init_params(init_key), "ko_key": ko_key}

    return jax.vmap(one)(seeds)


@functools.partial(jax.jit, static_argnames=("activation", "optimizer", "epochs", "hard_rule"))
def train_batch(
    inputs: dict[str, Any],
    lrs: jax.Array,
    coefs: jax.Array,
    *,
    activation: str,
    optimizer: str,
    epochs: int,
    hard_rule: str = "paper",
) -> dict[str, jax.Array]:
    """Trains one network per entry of ``inputs, lrs, coefs`` (vmapped, leading axis ``M``).

    Returns a dict of arrays with leading axis ``M``: ``kernel`` (final
    ``hidden/kernel``), ``losses`` (loss before each step), ``final_loss`` (loss
    after the last step), ``collision_rate`` (mean over steps of the hidden
    layer's collision rate; 0 for Adam), ``mean_abs_cos`` and ``max_abs_cos``
    (off-diagonal statistics of the final hidden neurons' cosine matrix).
    """

    def one(inp, lr, coef):
        params = inp["params"]
        tx = make_optimizer(optimizer, lr, coef, inp["ko_key"], hard_rule)
        loss_fn = functools.partial(mse, x=inp["x"], y=inp["y"], activation=activation)

        def step(carry, _):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            rate = (
                jnp.zeros([], jnp.float32)
                if optimizer == "adam"
                else _hidden_collision_rate(opt_state)
            )
            return (params, opt_state), (loss, rate)

        (params, _), (losses, rates) = jax.lax.scan(
            step, (params, tx.init(params)), None, length=epochs
        )
        sim = kinetix.metrics.neuron_similarity(params["hidden"]["kernel"])
        return {
            "kernel": params["hidden"]["kernel"],
            "losses": losses,
            "final_loss": loss_fn(params),
            "collision_rate": jnp.mean(rates),
            "mean_abs_cos": sim.mean_abs_cos,
            "max_abs_cos": sim.max_abs_cos,
        }

    return jax.vmap(one)(inputs, lrs, coefs)


def run_config(
    activation: str,
    optimizer: str,
    seeds: Sequence[int],
    lrs: Sequence[float],
    coefs: Sequence[float],
    epochs: int,
    hard_rule: str,
) -> dict[str, np.ndarray]:
    """Trains ``len(seeds)`` networks of one (activation, optimizer); numpy outputs."""
    seeds = np.asarray(seeds, np.int32)
    unique, index = np.unique(seeds, return_inverse=True)
    inputs = jax.tree.map(lambda a: a[index], make_inputs(jnp.asarray(unique)))
    out = train_batch(
        inputs,
        jnp.asarray(lrs, jnp.float32),
        jnp.asarray(coefs, jnp.float32),
        activation=activation,
        optimizer=optimizer,
        epochs=epochs,
        hard_rule=hard_rule,
    )
    return {k: np.asarray(v) for k, v in jax.device_get(out).items()}


# ------------------------------------------------------------------- statistics


def mean_std(x: np.ndarray) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value)."""
    x = np.asarray(x, np.float64)
    std = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    return {"mean": float(np.mean(x)), "std": std}


def greedy_order(cos: np.ndarray, threshold: float = GROUP_THRESHOLD) -> list[int]:
    """Neuron order that makes condensed blocks visible (authors' ``get_cos_distance``).

    Start at neuron 0 and group every ungrouped ``j`` with ``cos[k, j] > threshold``;
    the next start is an ungrouped neuron with ``cos[k, j] < -threshold`` (the
    last such index, as in the authors' loop) if one exists, else the first
    ungrouped neuron. Repeat until every neuron is placed. A start that is not
    grouped with itself (a zero neuron, NaN cosine) is placed alone.
    """
    n = cos.shape[0]
    remaining = list(range(n))
    order: list[int] = []
    k = 0
    while remaining:
        group = [j for j in remaining if cos[k, j] > threshold]
        if k not in group:
            group = [k, *group]
        anti = [j for j in remaining if j not in group and cos[k, j] < -threshold]
        order += group
        remaining = [j for j in remaining if j not in group]
        if remaining:
            k = anti[-1] if anti else remaining[0]
    return order


# ------------------------------------------------------------------------ sweep


def sweep(
    activations: Sequence[str],
    lr_grid: Sequence[float] | None,
    coef_grid: Sequence[float],
    fixed_lr: float | None,
    fixed_coefs: dict[str, float | None],
    sweep_seeds: Sequence[int],
    epochs: int,
    hard_rule: str,
    tolerance: float,
    progress: bool = True,
) -> tuple[float, dict[str, float], dict[str, Any]]:
    """Selects lr and each method's coll_coef (see the module docstring)."""
    ns = len(sweep_seeds)
    record: dict[str, Any] = {
        "seeds": list(sweep_seeds),
        "epochs": epochs,
        "activations": list(activations),
        "loss_tolerance": tolerance,
        "lr": None,
        "coll_coef": {},
    }
    todo = []
    if fixed_lr is None:
        todo += [(a, "adam") for a in activations]
    todo += [(a, m) for m in KO_OPTIMIZERS if fixed_coefs[m] is None for a in activations]
    if fixed_lr is not None:
        todo += [(a, "adam") for a in activations]  # Adam reference at the given lr
    bar = tqdm(total=len(todo), desc="sweep", unit="config", disable=not progress)

    def grid_rows(activation, optimizer, lrs, coefs):
        out = run_config(
            activation,
            optimizer,
            np.tile(sweep_seeds, len(lrs)),
            np.repeat(lrs, ns),
            np.repeat(coefs, ns),
            epochs,
            hard_rule,
        )
        bar.update(1)
        bar.set_postfix_str(f"{activation}/{optimizer}")
        rows = []
        for g in range(len(lrs)):
            sl = slice(g * ns, (g + 1) * ns)
            rows.append(
                {
                    "activation": activation,
                    "optimizer": optimizer,
                    "lr": float(lrs[g]),
                    "coll_coef": float(coefs[g]) if optimizer != "adam" else None,
                    "final_loss": mean_std(out["final_loss"][sl]),
                    "mean_abs_cos": mean_std(out["mean_abs_cos"][sl]),
                    "max_abs_cos": mean_std(out["max_abs_cos"][sl]),
                    "collision_rate": mean_std(out["collision_rate"][sl]),
                }
            )
        return rows

    # Phase 1: learning rate, plain Adam.
    if fixed_lr is None:
        lrs = np.asarray(lr_grid, np.float64)
        rows = [r for a in activations for r in grid_rows(a, "adam", lrs, np.zeros_like(lrs))]
        by_lr = {
            float(lr): float(
                np.mean([r["final_loss"]["mean"] for r in rows if r["lr"] == float(lr)])
            )
            for lr in lrs
        }
        finite = {lr: v for lr, v in by_lr.items() if math.isfinite(v)}
        if not finite:
            raise RuntimeError("every learning rate of the sweep diverged (non-finite loss).")
        lr = min(finite, key=finite.get)
        at_edge = len(lrs) > 1 and lr in (float(lrs.min()), float(lrs.max()))
        record["lr"] = {
            "grid": [float(v) for v in lrs],
            "adam_loss_mean_over_activations": by_lr,
            "chosen": lr,
            "rule": "lowest final Adam loss, mean over sweep seeds and activations",
            "at_grid_edge": at_edge,
            "rows": rows,
        }
    else:
        lr = fixed_lr
        rows = [r for a in activations for r in grid_rows(a, "adam", np.array([lr]), np.zeros(1))]
        record["lr"] = {"chosen": lr, "rule": "given by --lr", "rows": rows}
    adam_rows = [r for r in rows if r["lr"] == float(lr)]
    adam_loss = float(np.mean([r["final_loss"]["mean"] for r in adam_rows]))

    # Phase 2: coll_coef per method at the chosen lr.
    coefs: dict[str, float] = {}
    for method in KO_OPTIMIZERS:
        if fixed_coefs[method] is not None:
            coefs[method] = float(fixed_coefs[method])
            record["coll_coef"][method] = {
                "chosen": coefs[method],
                "rule": "given on the command line",
            }
            continue
        grid = np.asarray(coef_grid, np.float64)
        m_rows = [
            r for a in activations for r in grid_rows(a, method, np.full_like(grid, lr), grid)
        ]
        ratio = {}
        for c in grid:
            loss = float(
                np.mean([r["final_loss"]["mean"] for r in m_rows if r["coll_coef"] == float(c)])
            )
            ratio[float(c)] = loss / adam_loss
        ok = [c for c, q in ratio.items() if math.isfinite(q) and q <= 1.0 + tolerance]
        if ok:
            chosen, note = max(ok), ""
        else:
            chosen = float(min(grid))
            note = f" (no grid value passed; fell back to the smallest, {chosen})"
        coefs[method] = chosen
        record["coll_coef"][method] = {
            "grid": [float(v) for v in grid],
            "loss_ratio_to_adam": ratio,
            "adam_loss_mean_over_activations": adam_loss,
            "chosen": chosen,
            "rule": (
                f"largest coll_coef with mean final loss <= {1 + tolerance:g} x Adam's "
                f"(means over sweep seeds and activations, at lr={lr:g}){note}"
            ),
            "rows": m_rows,
        }
    bar.close()
    return lr, coefs, record


def selection_text(args, lr: float, coefs: dict[str, float], record: dict[str, Any] | None) -> str:
    ko = (
        "ko_soft: paper form (threshold=None, include_self=True, no noise); "
        f"ko_hard: rule={args.hard_rule!r} (Eq. 5-8, length_scale 1). "
        "Collisions on hidden/kernel only (50 particles = output neurons, in R^5)."
    )
    if record is None:
        return (
            f"No sweep (--no-sweep): lr={lr:g}, ko_soft coll_coef={coefs['ko_soft']:g}, "
            f"ko_hard coll_coef={coefs['ko_hard']:g} taken from the command line or the "
            "script defaults (the values the default sweep selected). " + ko
        )
    seeds = record["seeds"]
    parts = []
    lr_rec = record["lr"]
    if "grid" in lr_rec:
        parts.append(
            f"lr={lr:g}: the value of the grid {lr_rec['grid']} with the lowest final loss "
            f"of plain Adam, averaged over {len(seeds)} sweep seeds ({seeds[0]}..{seeds[-1]}, "
            "disjoint from the evaluation seeds) and the activations"
            + (" (NOTE: an end point of the grid)" if lr_rec.get("at_grid_edge") else "")
        )
    else:
        parts.append(f"lr={lr:g}: given by --lr")
    for m in KO_OPTIMIZERS:
        rec = record["coll_coef"][m]
        if "grid" in rec:
            parts.append(
                f"{m} coll_coef={coefs[m]:g}: the largest value of the grid {rec['grid']} whose "
                f"final loss (mean over sweep seeds and activations, at that lr) is within "
                f"{100 * record['loss_tolerance']:g}% of Adam's"
                + (" (none passed; smallest grid value used)" if "fell back" in rec["rule"] else "")
            )
        else:
            parts.append(f"{m} coll_coef={coefs[m]:g}: given on the command line")
    return (
        "; ".join(parts)
        + ". The rule uses the loss only, never the similarity metrics (all grid points are "
        "in sweep.json). " + ko
    )


# ------------------------------------------------------------------------ plots


def plot_heatmaps(kernels: dict[tuple[str, str], np.ndarray], activations, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nrows, ncols = len(activations), len(OPTIMIZERS)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(3.0 * ncols + 1.2, 3.0 * nrows + 0.6),
        squeeze=False,
        layout="constrained",
    )
    im = None
    for r, act in enumerate(activations):
        for c, opt in enumerate(OPTIMIZERS):
            cos = np.asarray(kinetix.metrics.cosine_matrix(jnp.asarray(kernels[act, opt])))
            order = greedy_order(cos)
            mat = cos[np.ix_(order, order)]
            ax = axes[r, c]
            im = ax.imshow(mat, cmap="YlGnBu_r", vmin=-1, vmax=1, interpolation="nearest")
            ax.invert_yaxis()  # as the authors' plot
            off = ~np.eye(len(cos), dtype=bool)
            ax.set_title(f"{act} / {opt}\nmean|cos|={np.abs(cos[off]).mean():.2f}", fontsize=9)
            ax.set_xticks([0, len(cos) - 1])
            ax.set_yticks([0, len(cos) - 1])
            ax.tick_params(labelsize=7)
            if r == nrows - 1:
                ax.set_xlabel("neuron (reordered)", fontsize=8)
            if c == 0:
                ax.set_ylabel("neuron (reordered)", fontsize=8)
    cb = fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, ticks=[-1, -0.5, 0, 0.5, 1])
    cb.set_label("cosine similarity of input weights")
    fig.suptitle("Hidden neurons' input-weight cosine similarity at the last epoch (seed 0)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------ table


def _pm(d: dict[str, float], fmt: str = ".3f") -> str:
    return f"{d['mean']:{fmt}} ± {d['std']:{fmt}}"


def write_table(summary: dict[str, Any], sweep_record, command: str, runtime_s, path: str) -> None:
    lines = [
        "# Condensation experiment (KO paper, Fig. 2), 5-50-1 network",
        "",
        f"{summary['seeds']} seeds, {summary['epochs']} epochs (full batch), mean ± std over seeds "
        "(sample std). |cos| statistics are over the off-diagonal pairs of the 50 hidden "
        "neurons' input weights at the last epoch; collision rate is the mean over steps of "
        "the fraction of the 1225 neuron pairs that collided (for ko_soft: pairs with a "
        "non-zero coupling S_ij).",
        "",
        "| activation | optimizer | lr | coll_coef | mean abs cos | max abs cos | final loss "
        "| collision rate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["results"]:
        coef = "-" if r["coll_coef"] is None else f"{r['coll_coef']:g}"
        lines.append(
            f"| {r['activation']} | {r['optimizer']} | {r['lr']:g} | {coef} "
            f"| {_pm(r['mean_abs_cos'])} | {_pm(r['max_abs_cos'])} "
            f"| {_pm(r['final_loss'], '.3g')} | {_pm(r['collision_rate'])} |"
        )
    lines += ["", "## Selection", "", summary["selection"], ""]
    if sweep_record is not None:
        lines += [
            "## Sweep (sensitivity; sweep seeds "
            f"{sweep_record['seeds'][0]}..{sweep_record['seeds'][-1]})",
            "",
            "| activation | optimizer | lr | coll_coef | final loss | mean abs cos "
            "| collision rate |",
            "|---|---|---|---|---|---|---|",
        ]
        rows = list(sweep_record["lr"]["rows"])
        for m in KO_OPTIMIZERS:
            rows += sweep_record["coll_coef"][m].get("rows", [])
        for r in rows:
            coef = "-" if r["coll_coef"] is None else f"{r['coll_coef']:g}"
            lines.append(
                f"| {r['activation']} | {r['optimizer']} | {r['lr']:g} | {coef} "
                f"| {_pm(r['final_loss'], '.3g')} | {_pm(r['mean_abs_cos'])} "
                f"| {_pm(r['collision_rate'])} |"
            )
        lines.append("")
    lines += ["## Command", "", "```", command, "```", ""]
    if runtime_s is not None:
        lines += [
            f"Runtime: {runtime_s:.1f} s on {platform.machine()} CPU ({os.cpu_count()} cores).",
            "",
        ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


# ------------------------------------------------------------------------- main


def _float_list(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one number")
    return vals


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.condensation",
        description=(
            "Condensation experiment of the KO paper (Fig. 2): a 5-50-1 network trained "
            "with Adam, Adam + KO soft collision and Adam + KO hard collision (on the "
            "first layer), for the activations tanh, xTanh, sigmoid and softplus. First "
            "sweeps the learning rate and the collision coefficients (unless given or "
            "--no-sweep), then trains every configuration on --seeds seeds and writes "
            "summary.json, sweep.json, table.md, heatmaps.png, kernels.npz and run.json."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--seeds", type=int, default=5, help="number of evaluation seeds (0..N-1)")
    p.add_argument("--epochs", type=int, default=100, help="full-batch epochs (= Adam steps)")
    p.add_argument(
        "--activations",
        nargs="+",
        default=list(ACTIVATIONS),
        choices=list(ACTIVATIONS),
        help="activations to run (heat-map rows)",
    )
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (skips its sweep)")
    p.add_argument(
        "--soft-coef", type=float, default=None, help="ko_soft coll_coef >= 0 (skips its sweep)"
    )
    p.add_argument(
        "--hard-coef",
        type=float,
        default=None,
        help="ko_hard coll_coef in [0, 1] (skips its sweep)",
    )
    p.add_argument(
        "--no-sweep",
        action="store_true",
        help=f"skip the sweep; unset values default to lr={NO_SWEEP_LR:g}, "
        f"soft coef={NO_SWEEP_SOFT_COEF:g}, hard coef={NO_SWEEP_HARD_COEF:g}",
    )
    p.add_argument(
        "--lr-grid",
        type=_float_list,
        default=list(DEFAULT_LR_GRID),
        help="comma-separated learning rates for the sweep",
    )
    p.add_argument(
        "--coef-grid",
        type=_float_list,
        default=list(DEFAULT_COEF_GRID),
        help="comma-separated coll_coef values for the sweep (each in [0, 1])",
    )
    p.add_argument("--sweep-seeds", type=int, default=3, help="number of sweep seeds (1000..)")
    p.add_argument(
        "--loss-tolerance",
        type=float,
        default=0.10,
        help="a coll_coef is admissible if its mean final loss <= (1 + tol) x Adam's",
    )
    p.add_argument(
        "--hard-rule",
        choices=["paper", "released"],
        default="paper",
        help="ko_hard rule: Eq. 5-8 of the paper, or the authors' released code",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p


def _validate(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    def finite(v):
        return v is not None and math.isfinite(v)

    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.sweep_seeds < 1:
        p.error(f"--sweep-seeds must be >= 1, got {args.sweep_seeds}")
    if args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.lr is not None and not (finite(args.lr) and args.lr > 0):
        p.error(f"--lr must be a finite number > 0, got {args.lr}")
    if args.soft_coef is not None and not (finite(args.soft_coef) and args.soft_coef >= 0):
        p.error(f"--soft-coef must be a finite number >= 0, got {args.soft_coef}")
    if args.hard_coef is not None and not (finite(args.hard_coef) and 0 <= args.hard_coef <= 1):
        p.error(f"--hard-coef must be in [0, 1], got {args.hard_coef}")
    if any(not (finite(v) and v > 0) for v in args.lr_grid):
        p.error(f"--lr-grid values must be finite and > 0, got {args.lr_grid}")
    if any(not (finite(v) and 0 <= v <= 1) for v in args.coef_grid):
        p.error(f"--coef-grid values must be in [0, 1], got {args.coef_grid}")
    if not (finite(args.loss_tolerance) and args.loss_tolerance >= 0):
        p.error(f"--loss-tolerance must be >= 0, got {args.loss_tolerance}")
    if len(set(args.activations)) != len(args.activations):
        p.error(f"--activations has duplicates: {args.activations}")
    from train.loop import SetupError, check_output_dir  # noqa: PLC0415 - only for this check

    try:
        check_output_dir(args.out, "--out")
    except SetupError as e:
        p.error(str(e))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the experiment; returns the summary dict (also written to ``--out``)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    _validate(parser, args)
    os.makedirs(args.out, exist_ok=True)
    command = "python -m train.condensation " + shlex.join(argv)
    t0 = time.perf_counter()

    fixed = {"ko_soft": args.soft_coef, "ko_hard": args.hard_coef}
    record = None
    if args.no_sweep:
        lr = NO_SWEEP_LR if args.lr is None else args.lr
        coefs = {
            "ko_soft": NO_SWEEP_SOFT_COEF if args.soft_coef is None else args.soft_coef,
            "ko_hard": NO_SWEEP_HARD_COEF if args.hard_coef is None else args.hard_coef,
        }
    elif args.lr is not None and all(v is not None for v in fixed.values()):
        lr, coefs = args.lr, {k: float(v) for k, v in fixed.items()}
    else:
        sweep_seeds = [SWEEP_SEED_OFFSET + i for i in range(args.sweep_seeds)]
        lr, coefs, record = sweep(
            args.activations,
            args.lr_grid,
            args.coef_grid,
            args.lr,
            fixed,
            sweep_seeds,
            args.epochs,
            args.hard_rule,
            args.loss_tolerance,
            progress=not args.no_progress,
        )
    t_sweep = time.perf_counter() - t0
    with open(os.path.join(args.out, "sweep.json"), "w") as f:
        json.dump({"ran": record is not None, **(record or {})}, f, indent=2)

    seeds = list(range(args.seeds))
    results, kernels, arrays = [], {}, {}
    configs = [(a, o) for a in args.activations for o in OPTIMIZERS]
    for act, opt in tqdm(configs, desc="train", unit="config", disable=args.no_progress):
        coef = 0.0 if opt == "adam" else coefs[opt]
        out = run_config(
            act, opt, seeds, [lr] * len(seeds), [coef] * len(seeds), args.epochs, args.hard_rule
        )
        kernels[act, opt] = out["kernel"][0]
        arrays[f"kernel/{act}/{opt}"] = out["kernel"]
        arrays[f"losses/{act}/{opt}"] = out["losses"]
        results.append(
            {
                "activation": act,
                "optimizer": opt,
                "mean_abs_cos": mean_std(out["mean_abs_cos"]),
                "max_abs_cos": mean_std(out["max_abs_cos"]),
                "final_loss": mean_std(out["final_loss"]),
                "lr": float(lr),
                "coll_coef": None if opt == "adam" else float(coef),
                "collision_rate": mean_std(out["collision_rate"]),
            }
        )
    summary = {
        "results": results,
        "seeds": args.seeds,
        "epochs": args.epochs,
        "selection": selection_text(args, lr, coefs, record),
    }
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    np.savez_compressed(os.path.join(args.out, "kernels.npz"), **arrays)
    plot_heatmaps(kernels, args.activations, os.path.join(args.out, "heatmaps.png"))
    runtime = time.perf_counter() - t0
    write_table(summary, record, command, runtime, os.path.join(args.out, "table.md"))
    with open(os.path.join(args.out, "run.json"), "w") as f:
        json.dump(
            {
                "command": command,
                "runtime_s": runtime,
                "sweep_runtime_s": t_sweep,
                "hard_rule": args.hard_rule,
                "jax": jax.__version__,
                "optax": optax.__version__,
                "kinetix": kinetix.__version__,
                "backend": jax.default_backend(),
                "cpu_count": os.cpu_count(),
            },
            f,
            indent=2,
        )
    print(f"lr={lr:g} coefs={coefs}; wrote {args.out} in {runtime:.1f} s")
    return summary


if __name__ == "__main__":
    main()
