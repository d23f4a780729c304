"""Condensation experiment of the KO paper (Feng et al., 2025, Fig. 2) across learning rates.

A 5-50-1 fully connected network is fitted to 80 samples of
``f(x) = sum_k 3.5 sin(5 x_k + 1)`` (``x_k ~ U[-4, 2]``) from a tiny initialisation
(every parameter ``N(0, 0.005^2)``), with full-batch Adam and an MSE loss. At small
initialisation the hidden neurons' input weights *condense* onto a few directions;
the paper claims that KO's soft and hard collisions, applied to the first layer
(``hidden/kernel``, whose 50 output neurons are the particles), hinder this
condensation, and its Thm. 3.3 states this for "a small enough learning rate".

Run::

    python -m train.condensation --out results/condensation

Phases (all on the evaluation seeds ``0 .. N-1``; a seed fixes the data, the
initialisation and the KO key, so the three optimizers of one seed start from the
same network on the same data, and differences are paired by seed):

1. **Learning-rate sweep at the paper's length** (``--epochs``, 100): every value
   of ``--lrs`` (default ``3e-8 .. 3e-2``, with the appendix values 3e-8 and 5e-6).
   ``lr*`` is the value where plain Adam condenses most: the largest mean |cos|,
   averaged over seeds and activations (the smallest such lr on a tie). The
   rule looks at Adam only, never at KO.
2. **Small-lr limit at fixed training time** (the regime of Thm. 3.3): Adam moves
   each weight by about ``lr`` per step, so at a fixed number of steps a tiny lr
   moves nothing. This phase keeps the training time ``T* = lr* x epochs`` fixed
   and shrinks the lr: for every ``k`` of ``--flow-factors`` (default 3, 10, 30,
   100) it runs ``steps = round(k x epochs)`` steps at ``lr = T*/steps`` (about
   ``lr*/k``). As ``k`` grows the runs approach the continuous-time (small-lr)
   limit of Adam; a fixed step count at a tiny lr is not that limit, it is no
   training at all.
3. **coll_coef sensitivity** at ``lr*`` for every value of ``--coef-grid``.

KO uses the same ``coll_coef`` at every lr (``--soft-coef`` 0.1, ``--hard-coef``
0.3: the values a loss-only rule picked at lr 3e-2 in an earlier version), so each
line of the figure is one optimizer.

With ``--no-sweep`` (or ``--lr``) only one learning rate is run (``--lr``,
default :data:`NO_SWEEP_LR`).

Every (activation, optimizer) is one ``jax.jit`` of a ``lax.fori_loop`` whose
step count is a traced argument, ``vmap``-ed over seeds, so each is compiled once
for all learning rates and step counts.

Outputs in ``--out``: ``lr_sweep.png`` (mean |cos| vs lr per activation, the
paired KO - Adam difference, and the fixed-time row), ``heatmaps.png`` (seed 0 at
``lr*``), ``table.md``, ``sweep.json`` (per-seed values of every run),
``summary.json`` (the runs at ``lr*``), ``kernels.npz`` (final ``hidden/kernel`` of
every seed and the loss curves at ``lr*``) and ``run.json`` (command, runtimes,
versions; the only file whose content changes between identical runs).
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import math
import os
import platform
import shlex
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

import kinetix
from train import report

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "xTanh": lambda x: x * jnp.tanh(x),
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
}
OPTIMIZERS = ("adam", "ko_soft", "ko_hard")
KO_OPTIMIZERS = ("ko_soft", "ko_hard")
HIDDEN_PATH = "hidden/kernel"
METRICS = ("mean_abs_cos", "max_abs_cos", "final_loss", "collision_rate")

NUM_SAMPLES = 80
IN_DIM = 5
WIDTH = 50
INIT_STD = 0.005
X_LOW, X_HIGH = -4.0, 2.0

# 3e-8 and 5e-6 are the paper's appendix (B.1) learning rates.
DEFAULT_LRS = (3e-8, 1e-6, 5e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
DEFAULT_FLOW_FACTORS = (3.0, 10.0, 30.0, 100.0)
DEFAULT_COEF_GRID = (0.05, 0.1, 0.3, 0.5)
DEFAULT_SOFT_COEF = 0.1
DEFAULT_HARD_COEF = 0.3
# Used with --no-sweep when no --lr is given: the lr* the default sweep selects
# (see results/condensation/sweep.json).
NO_SWEEP_LR = 1e-3
# Plot recipe of the authors' get_cos_distance.
GROUP_THRESHOLD = 0.6


# --------------------------------------------------------------------------- model


def target_fn(x: jax.Array) -> jax.Array:
    """``f(x) = sum_k 3.5 sin(5 x_k + 1)``, shape ``(n, 5) -> (n, 1)``."""
    return jnp.sum(3.5 * jnp.sin(5.0 * x + 1.0), axis=-1, keepdims=True)


def make_data(key: jax.Array, n: int = NUM_SAMPLES) -> tuple[jax.Array, jax.Array]:
    """``n`` inputs ``x ~ U[-4, 2]^5`` and their targets ``target_fn(x)``."""
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
    """The 5-50-1 network, ``(n, 5) -> (n, 1)``."""
    h = ACTIVATIONS[activation](x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    return h @ params["out"]["kernel"] + params["out"]["bias"]


def mse(params: dict[str, Any], x: jax.Array, y: jax.Array, activation: str) -> jax.Array:
    """Mean squared error of :func:`forward`."""
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


@functools.partial(jax.jit, static_argnames=("activation", "optimizer", "record", "hard_rule"))
def train_batch(
    inputs: dict[str, Any],
    lrs: jax.Array,
    coefs: jax.Array,
    steps: jax.Array,
    *,
    activation: str,
    optimizer: str,
    record: int,
    hard_rule: str = "paper",
) -> dict[str, jax.Array]:
    """Trains one network per entry of ``inputs, lrs, coefs`` (vmapped, leading axis ``M``).

    ``steps`` (an int32 scalar, shared by the batch) is traced, so one compiled
    program serves every step count. Step ``t`` writes the loss before it into
    slot ``t * record // steps`` of the loss curve, so for ``steps == record`` the
    curve is the loss before each step, and for ``steps = k * record`` it is sampled
    every ``k`` steps (the same training-time axis).

    Returns a dict of arrays with leading axis ``M``: ``kernel`` (final
    ``hidden/kernel``), ``losses`` (``(M, record)`` loss curve; NaN in slots a
    run with ``steps < record`` never reaches), ``final_loss`` (loss after the last
    step), ``collision_rate`` (mean over steps of the hidden layer's collision rate;
    0 for Adam), ``mean_abs_cos`` and ``max_abs_cos`` (off-diagonal statistics of
    the final hidden neurons' cosine matrix).
    """

    def one(inp, lr, coef):
        params = inp["params"]
        tx = make_optimizer(optimizer, lr, coef, inp["ko_key"], hard_rule)
        loss_fn = functools.partial(mse, x=inp["x"], y=inp["y"], activation=activation)

        def body(t, carry):
            params, opt_state, losses, rate_sum = carry
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            rate = (
                jnp.zeros([], jnp.float32)
                if optimizer == "adam"
                else _hidden_collision_rate(opt_state)
            )
            losses = losses.at[(t * record) // steps].set(loss, mode="drop")
            return params, opt_state, losses, rate_sum + rate

        init = (params, tx.init(params), jnp.full((record,), jnp.nan), jnp.zeros([]))
        params, _, losses, rate_sum = jax.lax.fori_loop(0, steps, body, init)
        sim = kinetix.metrics.neuron_similarity(params["hidden"]["kernel"])
        return {
            "kernel": params["hidden"]["kernel"],
            "losses": losses,
            "final_loss": loss_fn(params),
            "collision_rate": rate_sum / steps,
            "mean_abs_cos": sim.mean_abs_cos,
            "max_abs_cos": sim.max_abs_cos,
        }

    return jax.vmap(one)(inputs, lrs, coefs)


def run_config(
    activation: str,
    optimizer: str,
    seeds: Sequence[int],
    lr: float,
    coef: float,
    steps: int,
    record: int,
    hard_rule: str,
) -> dict[str, np.ndarray]:
    """Trains ``len(seeds)`` networks of one (activation, optimizer, lr, coef); numpy outputs.

    Example:
      >>> out = run_config("tanh", "adam", [0, 1], 1e-3, 0.0, steps=5, record=5,
      ...                  hard_rule="paper")
      >>> out["kernel"].shape, out["losses"].shape
      ((2, 5, 50), (2, 5))
    """
    seeds = np.asarray(seeds, np.int32)
    n = len(seeds)
    out = train_batch(
        make_inputs(jnp.asarray(seeds)),
        jnp.full((n,), lr, jnp.float32),
        jnp.full((n,), coef, jnp.float32),
        jnp.asarray(steps, jnp.int32),
        activation=activation,
        optimizer=optimizer,
        record=record,
        hard_rule=hard_rule,
    )
    return {k: np.asarray(v) for k, v in jax.device_get(out).items()}


def initial_similarity(seeds: Sequence[int]) -> np.ndarray:
    """Mean |cos| of each seed's *initial* ``hidden/kernel`` (the no-training baseline)."""
    kernels = make_inputs(jnp.asarray(seeds, jnp.int32))["params"]["hidden"]["kernel"]
    sims = jax.vmap(kinetix.metrics.neuron_similarity)(kernels)
    return np.asarray(sims.mean_abs_cos)


# ------------------------------------------------------------------- statistics


mean_std = report.mean_std_dict  # {"mean", "std"}: sample std (ddof=1), 0.0 for one value


def paired(ko: np.ndarray, adam: np.ndarray) -> dict[str, float]:
    """Per-seed difference ``ko - adam``: mean, sample std, and how many are < 0."""
    d = np.asarray(ko, np.float64) - np.asarray(adam, np.float64)
    return {**mean_std(d), "negative": int(np.sum(d < 0)), "n": int(d.size)}


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


def choose_lr_star(runs: list[dict[str, Any]], lrs: Sequence[float]) -> float:
    """``lr*``: the lr of ``lrs`` with the largest Adam mean |cos|, averaged over seeds and
    activations (at the paper's epoch count); the smallest such lr on a tie.

    Args:
      runs: rows of the epoch sweep (``protocol == "epochs"``), with per-seed values.
      lrs: the swept learning rates.

    Returns:
      The chosen learning rate.
    """
    score = []
    for lr in lrs:
        vals = [
            np.mean(r["per_seed"]["mean_abs_cos"])
            for r in runs
            if r["optimizer"] == "adam" and r["lr"] == lr
        ]
        score.append(float(np.mean(vals)))
    finite = [(s, i) for i, s in enumerate(score) if math.isfinite(s)]
    if not finite:
        raise RuntimeError("every learning rate of the sweep gave a non-finite similarity.")
    best = max(s for s, _ in finite)
    return float(lrs[min(i for s, i in finite if s == best)])


# ------------------------------------------------------------------------ sweep


def _row(protocol, activation, optimizer, lr, steps, coef, out) -> dict[str, Any]:
    return {
        "protocol": protocol,
        "activation": activation,
        "optimizer": optimizer,
        "lr": float(lr),
        "steps": int(steps),
        "coll_coef": None if optimizer == "adam" else float(coef),
        "per_seed": {m: [float(v) for v in out[m]] for m in METRICS},
        "stats": {m: mean_std(out[m]) for m in METRICS},
    }


def _add_paired(runs: list[dict[str, Any]], lr_star: float, epochs: int) -> None:
    """Adds ``paired_vs_adam`` (KO - Adam, same seed) to every KO row, in place."""
    adam = {
        (r["protocol"], r["activation"], r["lr"], r["steps"]): r
        for r in runs
        if r["optimizer"] == "adam"
    }
    for r in runs:
        if r["optimizer"] == "adam":
            continue
        if r["protocol"] == "coef":  # reference: Adam of the epoch sweep at lr*
            ref = adam["epochs", r["activation"], lr_star, epochs]
        else:
            ref = adam[r["protocol"], r["activation"], r["lr"], r["steps"]]
        r["paired_vs_adam"] = {
            m: paired(r["per_seed"][m], ref["per_seed"][m])
            for m in METRICS
            if m != "collision_rate"
        }


def lr_sweep(
    activations: Sequence[str],
    lrs: Sequence[float],
    flow_factors: Sequence[float],
    coef_grid: Sequence[float],
    coefs: dict[str, float],
    seeds: Sequence[int],
    epochs: int,
    hard_rule: str,
    progress: bool = True,
) -> tuple[float, dict[str, Any], dict[tuple[str, str], dict[str, np.ndarray]]]:
    """Runs the three phases of the module docstring.

    Args:
      activations: activation names (keys of :data:`ACTIVATIONS`).
      lrs: learning rates of the epoch sweep, ascending.
      flow_factors: step factors ``k > 1`` of the fixed-time phase (``k x epochs`` steps
        at ``lr* x epochs / steps``).
      coef_grid: ``coll_coef`` values of the sensitivity phase at ``lr*``.
      coefs: ``coll_coef`` of ``ko_soft`` and ``ko_hard`` in phases 1 and 2.
      seeds: evaluation seeds.
      epochs: full-batch steps of the epoch sweep.
      hard_rule: ``"paper"`` or ``"released"``.
      progress: show a progress bar.

    Returns:
      ``(lr_star, record, at_lr_star)``: the chosen lr, the JSON-able record
      (``sweep.json``) and the raw outputs of every (activation, optimizer) at ``lr*``.
    """
    runs: list[dict[str, Any]] = []
    kept: dict[tuple[str, str, float], dict[str, np.ndarray]] = {}
    configs = [(a, o) for a in activations for o in OPTIMIZERS]
    total = len(configs) * (len(lrs) + len(flow_factors))
    total += len(activations) * len(KO_OPTIMIZERS) * len(coef_grid)
    bar = tqdm(total=total, desc="sweep", unit="run", disable=not progress)

    def run(act, opt, lr, coef, steps):
        bar.set_postfix_str(f"{act}/{opt} lr={lr:.2g} steps={steps}")
        out = run_config(act, opt, seeds, lr, coef, steps, epochs, hard_rule)
        bar.update(1)
        return out

    # Phase 1: the paper's epoch count, every lr.
    for act, opt in configs:
        coef = 0.0 if opt == "adam" else coefs[opt]
        for lr in lrs:
            out = run(act, opt, lr, coef, epochs)
            kept[act, opt, lr] = out
            runs.append(_row("epochs", act, opt, lr, epochs, coef, out))
    lr_star = choose_lr_star(runs, lrs)
    time_star = lr_star * epochs

    # Phase 2: fixed training time lr * steps = T*, smaller lr (k = 1 is phase 1's lr*).
    flow_steps = [epochs] + [int(round(k * epochs)) for k in flow_factors]
    for act, opt in configs:
        coef = 0.0 if opt == "adam" else coefs[opt]
        for steps in flow_steps:
            lr = lr_star if steps == epochs else time_star / steps
            out = kept[act, opt, lr_star] if steps == epochs else run(act, opt, lr, coef, steps)
            runs.append(_row("flow", act, opt, lr, steps, coef, out))

    # Phase 3: coll_coef sensitivity at lr*.
    for act in activations:
        for opt in KO_OPTIMIZERS:
            for coef in coef_grid:
                out = run(act, opt, lr_star, coef, epochs)
                runs.append(_row("coef", act, opt, lr_star, epochs, coef, out))
    bar.close()
    _add_paired(runs, lr_star, epochs)

    init = initial_similarity(seeds)
    record = {
        "ran": True,
        "seeds": list(seeds),
        "epochs": epochs,
        "activations": list(activations),
        "lrs": [float(v) for v in lrs],
        "coll_coef": {m: float(coefs[m]) for m in KO_OPTIMIZERS},
        "lr_star": lr_star,
        "lr_star_rule": (
            f"largest mean |cos| of plain Adam after {epochs} epochs, averaged over seeds "
            "and activations (smallest lr on a tie)"
        ),
        "flow": {
            "time": time_star,
            "steps": flow_steps,
            "lrs": [lr_star if s == epochs else time_star / s for s in flow_steps],
            "rule": f"lr * steps = lr* x {epochs} fixed; lr = T*/steps",
        },
        "coef_grid": [float(v) for v in coef_grid],
        "initial_mean_abs_cos": {"per_seed": [float(v) for v in init], **mean_std(init)},
        "runs": runs,
    }
    at_lr_star = {(a, o): kept[a, o, lr_star] for a, o in configs}
    return lr_star, record, at_lr_star


def results_rows(
    outs: dict[tuple[str, str], dict[str, np.ndarray]], lr: float, coefs: dict[str, float]
) -> list[dict[str, Any]]:
    """``summary.json`` rows of one learning rate, in (activation, optimizer) order."""
    rows = []
    for (act, opt), out in outs.items():
        rows.append(
            {
                "activation": act,
                "optimizer": opt,
                "mean_abs_cos": mean_std(out["mean_abs_cos"]),
                "max_abs_cos": mean_std(out["max_abs_cos"]),
                "final_loss": mean_std(out["final_loss"]),
                "lr": float(lr),
                "coll_coef": None if opt == "adam" else float(coefs[opt]),
                "collision_rate": mean_std(out["collision_rate"]),
            }
        )
    return rows


def selection_text(args, lr: float, coefs: dict[str, float], record: dict | None) -> str:
    """One paragraph saying how the lr and the collision coefficients were set."""
    ko = (
        f"ko_soft coll_coef={coefs['ko_soft']:g}, ko_hard coll_coef={coefs['ko_hard']:g} "
        "at every lr (--soft-coef/--hard-coef). ko_soft: paper form (threshold=None, "
        f"include_self=True, no noise); ko_hard: rule={args.hard_rule!r} (Eq. 5-8, "
        "length_scale 1). Collisions on hidden/kernel only (50 particles = output "
        "neurons, in R^5)."
    )
    if record is None:
        how = "given by --lr" if args.lr is not None else "the script default (--no-sweep)"
        return f"lr={lr:g}: {how}; no learning-rate sweep. " + ko
    return (
        f"lr*={lr:g}: of the swept {record['lrs']}, the {record['lr_star_rule']}. "
        "The rule looks at Adam only, never at KO. " + ko
    )


# ------------------------------------------------------------------------ plots

_STYLE = {
    "adam": {"color": "black", "marker": "o", "label": "Adam"},
    "ko_soft": {"color": "tab:blue", "marker": "s", "label": "Adam + soft"},
    "ko_hard": {"color": "tab:red", "marker": "^", "label": "Adam + hard"},
}


def plot_lr_sweep(record: dict[str, Any], path: str) -> None:
    """``lr_sweep.png``: mean |cos| vs lr (3 rows x one column per activation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acts = record["activations"]
    epochs, lr_star = record["epochs"], record["lr_star"]
    fig, axes = plt.subplots(
        3, len(acts), figsize=(3.6 * len(acts) + 0.4, 9.6), squeeze=False, layout="constrained"
    )

    def series(protocol, act, opt, key, paired_key=None):
        rows = [
            r
            for r in record["runs"]
            if r["protocol"] == protocol and r["activation"] == act and r["optimizer"] == opt
        ]
        rows.sort(key=lambda r: r["lr"])
        x = np.array([r["lr"] for r in rows])
        src = [r["paired_vs_adam"][paired_key] if paired_key else r["stats"][key] for r in rows]
        return x, np.array([s["mean"] for s in src]), np.array([s["std"] for s in src])

    init = record["initial_mean_abs_cos"]["mean"]
    for c, act in enumerate(acts):
        for r, protocol in ((0, "epochs"), (2, "flow")):
            ax = axes[r, c]
            for opt in OPTIMIZERS:
                x, m, s = series(protocol, act, opt, "mean_abs_cos")
                st = _STYLE[opt]
                ax.fill_between(x, m - s, m + s, color=st["color"], alpha=0.15, lw=0)
                ax.plot(x, m, color=st["color"], marker=st["marker"], ms=4, label=st["label"])
            ax.axhline(init, color="grey", ls=":", lw=1, label="at initialisation")
            ax.set_xscale("log")
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
        axes[0, c].axvline(lr_star, color="grey", ls="--", lw=1)
        axes[0, c].set_title(f"{act}: {epochs} epochs", fontsize=10)
        axes[2, c].set_title(f"{act}: lr x steps = {record['flow']['time']:.3g}", fontsize=10)
        axes[2, c].set_xlabel("learning rate (steps = T*/lr)")
        ax = axes[1, c]
        for opt in KO_OPTIMIZERS:
            x, m, s = series("epochs", act, opt, None, paired_key="mean_abs_cos")
            st = _STYLE[opt]
            ax.fill_between(x, m - s, m + s, color=st["color"], alpha=0.15, lw=0)
            ax.plot(x, m, color=st["color"], marker=st["marker"], ms=4, label=st["label"])
        ax.axhline(0, color="black", lw=0.8)
        ax.axvline(lr_star, color="grey", ls="--", lw=1)
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.set_title(f"{act}: KO − Adam, paired by seed", fontsize=10)
        axes[0, c].set_xlabel("learning rate")
        ax.set_xlabel("learning rate")
    axes[0, 0].set_ylabel("mean |cos| (hidden neurons)")
    axes[1, 0].set_ylabel("paired difference in mean |cos|\n(< 0: KO less condensed)")
    axes[2, 0].set_ylabel("mean |cos| (hidden neurons)")
    axes[0, 0].legend(fontsize=8, loc="upper left")
    n = len(record["seeds"])
    fig.suptitle(
        f"Condensation vs learning rate (mean ± std over {n} seeds)\n"
        f"dashed: lr*={lr_star:g}, where Adam condenses most",
        fontsize=11,
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_heatmaps(
    kernels: dict[tuple[str, str], np.ndarray], activations, lr: float, path: str
) -> None:
    """``heatmaps.png``: the authors' reordered cosine heat-map of seed 0, one per config."""
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
    fig.suptitle(
        f"Hidden neurons' input-weight cosine similarity at the last epoch (seed 0, lr={lr:g})"
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------ table


def _pm(d: dict[str, float], fmt: str = ".3f") -> str:
    return f"{d['mean']:{fmt}} ± {d['std']:{fmt}}"


def _delta(p: dict[str, Any] | None, fmt: str = "+.3f") -> str:
    if p is None:
        return "-"
    return f"{p['mean']:{fmt}} ± {p['std']:{fmt.lstrip('+')}} ({p['negative']}/{p['n']})"


def _sweep_rows(record: dict[str, Any], protocol: str) -> list[str]:
    lines = [
        "| lr | steps | activation | optimizer | coll_coef | mean abs cos | max abs cos "
        "| final loss | collision rate | Δ mean abs cos vs Adam (seeds < 0) "
        "| Δ final loss vs Adam (seeds < 0) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    acts = record["activations"]
    rows = [r for r in record["runs"] if r["protocol"] == protocol]
    rows.sort(
        key=lambda r: (
            r["lr"],
            acts.index(r["activation"]),
            OPTIMIZERS.index(r["optimizer"]),
            r["coll_coef"] or 0.0,
        )
    )
    for r in rows:
        p = r.get("paired_vs_adam")
        coef = "-" if r["coll_coef"] is None else f"{r['coll_coef']:g}"
        lines.append(
            f"| {r['lr']:.3g} | {r['steps']} | {r['activation']} | {r['optimizer']} | {coef} "
            f"| {_pm(r['stats']['mean_abs_cos'])} | {_pm(r['stats']['max_abs_cos'])} "
            f"| {_pm(r['stats']['final_loss'], '.3g')} | {_pm(r['stats']['collision_rate'])} "
            f"| {_delta(p and p['mean_abs_cos'])} | {_delta(p and p['final_loss'], '+.3g')} |"
        )
    return lines


def _glance(record: dict[str, Any], protocol: str) -> list[str]:
    acts = record["activations"]
    head = "| lr | steps | " + " | ".join(f"{a} soft | {a} hard" for a in acts) + " |"
    lines = [head, "|---|---|" + "---|" * (2 * len(acts))]
    cells: dict[tuple[float, int], dict[tuple[str, str], str]] = {}
    for r in record["runs"]:
        if r["protocol"] != protocol or r["optimizer"] == "adam":
            continue
        p = r["paired_vs_adam"]["mean_abs_cos"]
        key = (r["lr"], r["steps"])
        cells.setdefault(key, {})[r["activation"], r["optimizer"]] = (
            f"{p['mean']:+.3f} ({p['negative']}/{p['n']})"
        )
    for (lr, steps), c in sorted(cells.items()):
        vals = " | ".join(f"{c[a, 'ko_soft']} | {c[a, 'ko_hard']}" for a in acts)
        lines.append(f"| {lr:.3g} | {steps} | {vals} |")
    return lines


def write_table(summary: dict[str, Any], record: dict | None, command: str, path: str) -> None:
    """``table.md``: results at the heat-map lr, then (if swept) every sweep row."""
    n = summary["seeds"]
    lines = [
        "# Condensation experiment (KO paper, Fig. 2), 5-50-1 network",
        "",
        f"{n} seeds (0..{n - 1}), full batch, mean ± std over seeds (sample std). |cos| "
        "statistics are over the off-diagonal pairs of the 50 hidden neurons' input weights "
        "at the last step; collision rate is the mean over steps of the fraction of the 1225 "
        "neuron pairs that collided (for ko_soft: pairs with a non-zero coupling S_ij). "
        "Δ columns: KO minus Adam on the same seed (same data, initialisation and KO key), "
        "mean ± sample std over seeds, and in brackets how many seeds have a negative "
        "difference (KO less condensed, or lower loss).",
        "",
        f"## At the heat-map learning rate ({summary['epochs']} epochs)",
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
    if record is not None:
        init = record["initial_mean_abs_cos"]
        flow = record["flow"]
        lines += [
            "## At a glance: paired Δ mean abs cos (KO − Adam, seeds < 0)",
            "",
            f"Mean |cos| at initialisation (no training): {_pm(init)}.",
            "",
            f"### {record['epochs']} epochs, every lr",
            "",
            *_glance(record, "epochs"),
            "",
            f"### Fixed training time lr × steps = {flow['time']:.3g} (lr* × {record['epochs']})",
            "",
            *_glance(record, "flow"),
            "",
            f"## Learning-rate sweep, {record['epochs']} epochs",
            "",
            *_sweep_rows(record, "epochs"),
            "",
            f"## Small-lr limit: lr × steps = {flow['time']:.3g} fixed",
            "",
            *_sweep_rows(record, "flow"),
            "",
            f"## coll_coef sensitivity at lr*={record['lr_star']:g}, {record['epochs']} epochs "
            "(Δ against Adam at lr*)",
            "",
            *_sweep_rows(record, "coef"),
            "",
        ]
    lines += ["## Command", "", "```", command, "```", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` with fixed zip timestamps, so equal arrays give equal bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


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
    """The command-line interface (see the module docstring)."""
    p = argparse.ArgumentParser(
        prog="python -m train.condensation",
        description=(
            "Condensation experiment of the KO paper (Fig. 2): a 5-50-1 network trained "
            "with Adam, Adam + KO soft collision and Adam + KO hard collision (on the "
            "first layer), for the activations tanh, xTanh, sigmoid and softplus, over a "
            "learning-rate sweep (--lrs) at --epochs steps, a fixed-training-time sweep "
            "towards small lr, and a coll_coef sensitivity check. Writes lr_sweep.png, "
            "heatmaps.png, table.md, sweep.json, summary.json, kernels.npz and run.json."
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
        help="activations to run (heat-map rows, figure columns)",
    )
    p.add_argument(
        "--lrs",
        type=_float_list,
        default=list(DEFAULT_LRS),
        help="comma-separated learning rates of the sweep (3e-8 and 5e-6: the paper's appendix)",
    )
    p.add_argument(
        "--flow-factors",
        type=_float_list,
        default=list(DEFAULT_FLOW_FACTORS),
        help="fixed-time phase: runs lr*/k for k x epochs steps, for each k (>= 1)",
    )
    p.add_argument(
        "--coef-grid",
        type=_float_list,
        default=list(DEFAULT_COEF_GRID),
        help="coll_coef values of the sensitivity check at lr* (each in [0, 1])",
    )
    p.add_argument(
        "--soft-coef", type=float, default=DEFAULT_SOFT_COEF, help="ko_soft coll_coef >= 0"
    )
    p.add_argument(
        "--hard-coef", type=float, default=DEFAULT_HARD_COEF, help="ko_hard coll_coef in [0, 1]"
    )
    p.add_argument("--lr", type=float, default=None, help="run only this learning rate (no sweep)")
    p.add_argument(
        "--no-sweep",
        action="store_true",
        help=f"run one learning rate only: --lr, default {NO_SWEEP_LR:g} (the default lr*)",
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
    if args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.lr is not None and not (finite(args.lr) and args.lr > 0):
        p.error(f"--lr must be a finite number > 0, got {args.lr}")
    if not (finite(args.soft_coef) and args.soft_coef >= 0):
        p.error(f"--soft-coef must be a finite number >= 0, got {args.soft_coef}")
    if not (finite(args.hard_coef) and 0 <= args.hard_coef <= 1):
        p.error(f"--hard-coef must be in [0, 1], got {args.hard_coef}")
    if any(not (finite(v) and v > 0) for v in args.lrs):
        p.error(f"--lrs values must be finite and > 0, got {args.lrs}")
    if len(set(args.lrs)) != len(args.lrs):
        p.error(f"--lrs has duplicates: {args.lrs}")
    if any(not (finite(v) and v >= 1) for v in args.flow_factors):
        p.error(f"--flow-factors values must be finite and >= 1, got {args.flow_factors}")
    steps = [int(round(k * args.epochs)) for k in args.flow_factors]
    if len(set(steps)) != len(steps) or args.epochs in steps:
        p.error(
            f"--flow-factors give repeated step counts {steps} (k x {args.epochs}); "
            "use distinct values > 1"
        )
    if max(steps, default=0) > 10**7:
        p.error(f"--flow-factors x --epochs must stay <= 1e7 steps, got {max(steps)}")
    if any(not (finite(v) and 0 <= v <= 1) for v in args.coef_grid):
        p.error(f"--coef-grid values must be in [0, 1], got {args.coef_grid}")
    if len(set(args.activations)) != len(args.activations):
        p.error(f"--activations has duplicates: {args.activations}")
    from train.loop import SetupError, check_output_dir  # noqa: PLC0415 - only for this check

    try:
        check_output_dir(args.out, "--out")
    except SetupError as e:
        p.error(str(e))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the experiment; returns the summary dict (also written to ``--out``).

    Example (about 20 s on 2 CPU cores)::

        main(["--out", "/tmp/cond", "--epochs", "20", "--seeds", "2",
              "--activations", "tanh", "--lrs", "1e-3,1e-2", "--flow-factors", "3"])
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    _validate(parser, args)
    os.makedirs(args.out, exist_ok=True)
    command = "python -m train.condensation " + shlex.join(argv)
    t0 = time.perf_counter()
    coefs = {"ko_soft": float(args.soft_coef), "ko_hard": float(args.hard_coef)}
    seeds = list(range(args.seeds))

    record = None
    if args.no_sweep or args.lr is not None:
        lr = NO_SWEEP_LR if args.lr is None else args.lr
        outs = {}
        configs = [(a, o) for a in args.activations for o in OPTIMIZERS]
        for act, opt in tqdm(configs, desc="train", unit="config", disable=args.no_progress):
            coef = 0.0 if opt == "adam" else coefs[opt]
            outs[act, opt] = run_config(
                act, opt, seeds, lr, coef, args.epochs, args.epochs, args.hard_rule
            )
    else:
        lr, record, outs = lr_sweep(
            args.activations,
            sorted(args.lrs),
            args.flow_factors,
            args.coef_grid,
            coefs,
            seeds,
            args.epochs,
            args.hard_rule,
            progress=not args.no_progress,
        )
    t_train = time.perf_counter() - t0
    with open(os.path.join(args.out, "sweep.json"), "w") as f:
        json.dump(record if record is not None else {"ran": False}, f, indent=2)

    summary = {
        "results": results_rows(outs, lr, coefs),
        "seeds": args.seeds,
        "epochs": args.epochs,
        "selection": selection_text(args, lr, coefs, record),
    }
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    arrays = {}
    for (act, opt), out in outs.items():
        arrays[f"kernel/{act}/{opt}"] = out["kernel"]
        arrays[f"losses/{act}/{opt}"] = out["losses"]
    save_npz(os.path.join(args.out, "kernels.npz"), arrays)
    kernels = {k: v["kernel"][0] for k, v in outs.items()}
    plot_heatmaps(kernels, args.activations, lr, os.path.join(args.out, "heatmaps.png"))
    if record is not None:
        plot_lr_sweep(record, os.path.join(args.out, "lr_sweep.png"))
    write_table(summary, record, command, os.path.join(args.out, "table.md"))
    runtime = time.perf_counter() - t0
    with open(os.path.join(args.out, "run.json"), "w") as f:
        json.dump(
            {
                "command": command,
                "runtime_s": runtime,
                "train_runtime_s": t_train,
                "hard_rule": args.hard_rule,
                "jax": jax.__version__,
                "optax": optax.__version__,
                "kinetix": kinetix.__version__,
                "backend": jax.default_backend(),
                "machine": platform.machine(),
                "cpu_count": os.cpu_count(),
            },
            f,
            indent=2,
        )
    print(f"lr={lr:g} coefs={coefs}; wrote {args.out} in {runtime:.1f} s")
    return summary


if __name__ == "__main__":
    main()
