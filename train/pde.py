"""FNO vs. kinetic (KITINet) FNO vs. KINN FNO (and OFormer) on 1-D Burgers and 2-D heat, after the authors' scripts.

Single run (one or several seeds)::

    python -m train.pde --equation burgers --model fno_kinetic --out runs/burgers_kin --quick
    python -m train.pde --equation burgers --model fno_kinn --out /tmp/burgers_kinn --quick
    python -m train.pde --equation heat --model fno --out /tmp/heat --seeds 0 1 2 --epochs 50
    python -m train.pde --equation burgers --model oformer --out /tmp/oformer --quick

Results driver (plain, kinetic and KINN FNO, both equations, 5 seeds, at the
``--quick`` sizes; writes ``table.md`` and ``summary.json``)::

    python -m train.pde --sweep-results results/pde

Set-up (released KITINet FNO scripts, after Li et al. 2021):

* **Burgers**: the operator ``u(., 0) -> u(., 1)`` of ``u_t + u u_x = 0.1 u_xx``
  on the periodic unit interval (:func:`kinetix.data.pde.burgers`; the paper
  reads ``burgers_data_R10.mat`` at 1024 points). FNO-1D, modes 16, width 64,
  kinetic ``n_divide = 4``.
* **Heat**: the operator ``u(., 0) -> u(., T)`` of the periodic 2-D heat
  equation (:func:`kinetix.data.pde.heat2d`, ``kappa T = 0.01``, generated at
  64x64). Trained on the 32x32 subsample, tested at 32x32 and, zero-shot, at
  64x64. FNO-2D, modes 12, width 20, kinetic ``n_divide = "auto"`` (128
  particles at every resolution). Simplification: the released code maps the
  first ``T_in = 10`` time steps to the next ``T = 10`` autoregressively; here
  it is a single-step map ``u0 -> uT`` with one input channel. The initial
  field is :func:`kinetix.data.pde.grf2d`'s default times ``HEAT_AMPLITUDE = 4``
  (pointwise std ~1, like the Burgers inputs, instead of ~0.24): with the
  default amplitude the plain FNO learned more slowly in short runs (test
  rel-L2 0.41 vs. 0.30 after 150 steps, one seed). The released heat data set
  is not public.
* Training: AdamW (lr 1e-3, decoupled weight decay 1e-4; the released code
  uses PyTorch Adam's coupled L2 ``weight_decay=1e-4``), step decay halving the
  learning rate every ``epochs / 10`` epochs (``StepLR(100, 0.5)`` for 1000
  epochs, scaled to the epoch count), batch 20, loss = relative L2 error
  (``LpLoss``) averaged over the batch (the released code sums it; Adam is
  nearly scale-free). The last incomplete batch of an epoch is dropped.
* KINN (``fno_kinn``, :class:`kinetix.nn.FNOKINN1d` / ``FNOKINN2d``): the same
  lift, projection, modes and width, each Fourier layer replaced by a
  Kirchhoff cascade of order ``--kinn-order`` (default 2) driven by the layer's
  ``K u + W u`` current, its state carried from layer to layer (exact ZOH,
  ``dt = 1``, learnable per-order mixing; see :mod:`kinetix.nn.kinn`). The
  final time constants ``tau = C / G`` (median over channels, per layer and
  order) are reported as ``kinn_tau``.
* Kinetic residual: ``coll_coef = 0.9``; rule ``--rule`` (``hard_sphere``, the
  kinetix default, or ``released``, the authors' code). Collisions act only in
  training; evaluation is in eval mode (exactly ``W u + K u``). Gradients go
  through the collided velocities (accepted pairs and directions held fixed),
  as autograd does in the released code.

Training runs on the shared loop of ``train.classify`` and ``train.text``
(:func:`train.loop.run_training`), so the PDE runs get the same data
parallelism (``--devices``, ``--parallel jit|pmap``), multi-process runs,
checkpoints (``--ckpt-dir``, one sub-directory ``seed_<s>`` per seed),
``--resume`` (bitwise identical to a straight run), SIGTERM saves, progress
bars and metrics. The loss and metric is the per-sample relative L2 error
(:func:`make_task`).

Randomness: one ``--seeds`` entry fixes the train/test split of the data pool,
the initialisation (``loop.param_rngs(seed)``), the shuffling (a permutation
per ``(seed, epoch)``) and the collision keys (the loop's step key
``fold_in(key, step)``). For a given seed ``fno`` and ``fno_kinetic`` start
from the same parameters on the same split. The data pool itself is fixed by
``--data-seed``.

Outputs in ``--out``: per seed, ``seed_<s>/`` holds the loop's
``metrics.jsonl`` (one line per epoch: ``train_rel_l2``, ``test_rel_l2`` and
for heat ``test_rel_l2_64`` (``null`` on epochs skipped by ``--eval-every``),
per-block ``collision_rates``, top-k share of each layer's ``W`` kernel and
``K`` weights, learning rate), ``summary.json``, ``curves.png`` and
``predictions.png`` (truth vs. prediction on 4 test samples). The run's own
``summary.json`` holds means over seeds plus ``per_seed`` (``collision_rate``
is the mean over training steps of the fraction of candidate particle pairs
that collided, per Fourier layer and overall, ``null`` for ``fno``;
``baseline_mean_rel_l2`` is the error of predicting the conserved mean of
``u0`` everywhere, see :func:`mean_baseline`), ``errors.png`` (train and test
error per epoch, every seed), ``condensation.png`` (sorted channel norms of
the pointwise ``W`` kernels at the end; their top-k share over epochs) and
``run.json`` (command, versions). ``train_seconds`` is the wall time of the
training loop, including JIT compilation and the per-epoch evaluation.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from kinetix.data import pde
from kinetix.metrics import channel_condensation
from kinetix.nn.fno import FNO, FNO1d, FNO2d
from kinetix.nn.kinn import FNOKINN, FNOKINN1d, FNOKINN2d
from kinetix.nn.oformer import OFormer, OFormer1d, OFormer2d
from train import loop, report

EQUATIONS = ("burgers", "heat")
MODELS = ("fno", "fno_kinetic", "fno_kinn", "oformer", "oformer_kinetic")
SWEEP_MODELS = ("fno", "fno_kinetic", "fno_kinn")  # --sweep-results (OFormer: see README)
KINETIC_MODELS = ("fno_kinetic", "oformer_kinetic")
RULES = ("hard_sphere", "released")

BURGERS_NU = 0.1
HEAT_TRAIN_RES = 32
HEAT_TEST_RES = 64
HEAT_AMPLITUDE = (
    4.0  # x the default sigma of kinetix.data.pde.grf2d: pointwise std ~1 instead of ~0.24
)
LR = 1e-3
WEIGHT_DECAY = 1e-4
BATCH_SIZE = 20
COLL_COEF = {"fno_kinetic": 0.9, "oformer_kinetic": 0.5}  # --coll-coef defaults
KINN_ORDER = 2
TOP_K = 8
LR_STEP_FRACTION = 0.1  # StepLR(step_size=100) over 1000 epochs
LR_GAMMA = 0.5
EVAL_BATCH = 50

# Settings of the released scripts (the defaults without --quick).
PAPER = {
    "burgers": {"resolution": 1024, "ntrain": 1000, "ntest": 100, "epochs": 1000, "eval_every": 1},
    "heat": {
        "resolution": HEAT_TEST_RES,
        "ntrain": 20,
        "ntest": 20,
        "epochs": 1000,
        "eval_every": 1,
    },
}
# --quick: a run that learns (test rel-L2 well below the mean(u0) baseline) in about
# 1 (fno) to 3 (fno_kinetic) minutes per seed on 2 CPU cores; measured in README.md.
QUICK = {
    "burgers": {"resolution": 256, "ntrain": 400, "ntest": 100, "epochs": 40, "eval_every": 1},
    "heat": {
        "resolution": HEAT_TEST_RES,
        "ntrain": 200,
        "ntest": 50,
        "epochs": 40,
        "eval_every": 1,
    },
}
# --sweep-results: every equation x model x seed at the --quick sizes (about 50-60 minutes
# for 5 seeds on 2 CPU cores; README.md has the measured time)
SWEEP = QUICK
SWEEP_SEEDS = (0, 1, 2, 3, 4)
SIZE_KEYS = ("resolution", "ntrain", "ntest", "epochs", "eval_every")
# the shared loop's flags (train.loop.add_system_args)
SYSTEM_KEYS = (
    "devices",
    "parallel",
    "ckpt_dir",
    "ckpt_every",
    "keep",
    "resume",
    "overwrite",
    "stop_after_steps",
    "coordinator",
    "num_processes",
    "process_id",
    "dist_timeout",
)
# settings a --resume must agree on (they shape the model, data, optimizer or schedule)
RESUME_KEYS = (
    "equation",
    "model",
    "seed",
    "resolution",
    "ntrain",
    "ntest",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "coll_coef",
    "rule",
    "n_divide",
    "kinn_order",
    "data_seed",
)


# --------------------------------------------------------------------------- data


def rel_l2(pred: jax.Array, y: jax.Array) -> jax.Array:
    """Per-sample relative L2 error ``||pred - y|| / ||y||`` over all but the first axis."""
    axes = tuple(range(1, y.ndim))
    return jnp.sqrt(jnp.sum((pred - y) ** 2, axis=axes)) / jnp.sqrt(jnp.sum(y**2, axis=axes))


def load_data(cfg: dict[str, Any], seed: int) -> dict[str, np.ndarray]:
    """The data pool (fixed by ``data_seed``), split into train/test by ``seed``."""
    n = cfg["ntrain"] + cfg["ntest"]
    if cfg["equation"] == "burgers":
        u0, ut = pde.load_or_generate(
            "burgers",
            cfg["data_seed"],
            n,
            cache_dir=cfg["cache_dir"],
            resolution=cfg["resolution"],
            nu=BURGERS_NU,
        )
    else:
        sigma = (
            HEAT_AMPLITUDE * 7.0**1.5
        )  # grf2d's default sigma is tau^(alpha - 1), tau 7, alpha 2.5
        u0, ut = pde.load_or_generate(
            "heat2d",
            cfg["data_seed"],
            n,
            cache_dir=cfg["cache_dir"],
            resolution=HEAT_TEST_RES,
            sigma=sigma,
        )
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(jax.random.key(seed), 0), n))
    tr, te = perm[: cfg["ntrain"]], perm[cfg["ntrain"] :]
    data = {"x_test": u0[te], "y_test": ut[te]}
    if cfg["equation"] == "heat":
        factor = HEAT_TEST_RES // HEAT_TRAIN_RES
        data["x_train"] = np.asarray(pde.subsample2d(u0[tr], factor))
        data["y_train"] = np.asarray(pde.subsample2d(ut[tr], factor))
        data["x_test_64"], data["y_test_64"] = data["x_test"], data["y_test"]
        data["x_test"] = np.asarray(pde.subsample2d(u0[te], factor))
        data["y_test"] = np.asarray(pde.subsample2d(ut[te], factor))
    else:
        data["x_train"], data["y_train"] = u0[tr], ut[tr]
    return data


# -------------------------------------------------------------------------- model


def build_model(cfg: dict[str, Any], rngs: nnx.Rngs) -> FNO | FNOKINN | OFormer:
    if cfg["model"].startswith("oformer"):
        cls = OFormer1d if cfg["equation"] == "burgers" else OFormer2d
        if cfg["model"] == "oformer":
            return cls(rngs=rngs)
        return cls(residual="kinetic", coll_coef=cfg["coll_coef"], rule=cfg["rule"], rngs=rngs)
    if cfg["model"] == "fno_kinn":
        cls = FNOKINN1d if cfg["equation"] == "burgers" else FNOKINN2d
        return cls(order=cfg["kinn_order"], rngs=rngs)
    kw = {"residual": "kinetic" if cfg["model"] == "fno_kinetic" else "plain", "rngs": rngs}
    if cfg["model"] == "fno_kinetic":
        kw.update(coll_coef=cfg["coll_coef"], rule=cfg["rule"], n_divide=cfg["n_divide"])
    return FNO1d(**kw) if cfg["equation"] == "burgers" else FNO2d(**kw)


def count_params(params: Any) -> int:
    """Number of real scalars (a complex weight counts twice, as in the FNO code)."""
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def lr_schedule(cfg: dict[str, Any], steps_per_epoch: int) -> optax.Schedule:
    step_epochs = max(1, round(cfg["epochs"] * LR_STEP_FRACTION))
    return optax.exponential_decay(
        cfg["lr"], step_epochs * steps_per_epoch, LR_GAMMA, staircase=True
    )


def _branches(model: FNO | FNOKINN) -> list[Any]:
    """Each layer's module with the ``pointwise`` (W) and ``spectral`` (K) branches.

    An FNO layer (``FourierLayer``) has them itself; a KINN layer in its coupling.
    """
    return [getattr(layer, "coupling", layer) for layer in model.layers]


def pointwise_kernels(model: FNO | FNOKINN) -> list[jax.Array]:
    """The ``(width, width)`` kernels of the pointwise W branches, one per layer."""
    return [b.pointwise.kernel[...] for b in _branches(model)]


def spectral_weights(model: FNO | FNOKINN) -> list[jax.Array]:
    """The complex spectral weights of the K branches, one per layer."""
    return [b.spectral.complex_weight() for b in _branches(model)]


def condensation(model: FNO | FNOKINN | OFormer, k: int) -> dict[str, Any]:
    """Top-k share and sorted channel norms of each layer's W kernel and K weights.

    Empty lists for OFormer (it has no W/K branches).
    """
    out: dict[str, Any] = {"w_top_k": [], "k_top_k": [], "w_sorted_norms": []}
    if isinstance(model, OFormer):
        return out
    for w in pointwise_kernels(model):
        c = channel_condensation(w, k=min(k, w.shape[-1]), axis=-1)
        out["w_top_k"].append(float(c.top_k_share))
        out["w_sorted_norms"].append(np.asarray(c.sorted_norms).tolist())
    for w in spectral_weights(model):
        # (blocks, in, out, *modes) complex -> real/imag stacked; output channels on axis 3
        ri = jnp.stack([jnp.real(w), jnp.imag(w)])
        c = channel_condensation(ri, k=min(k, w.shape[2]), axis=3)
        out["k_top_k"].append(float(c.top_k_share))
    return out


def mean_baseline(x: np.ndarray, y: np.ndarray) -> float:
    """Test rel-L2 of predicting the constant ``mean(u0)`` everywhere (no learning).

    Both equations conserve the spatial mean on a periodic domain, so this
    predictor knows part of the answer for free; at Burgers' ``nu = 0.1``,
    ``T = 1`` the solution has nearly flattened to it (about 0.036 on the
    default data). A model has learned something only well below this number.
    """
    axes = tuple(range(1, y.ndim))
    pred = np.broadcast_to(np.mean(x, axis=axes, keepdims=True), y.shape)
    return float(np.mean(rel_l2(jnp.asarray(pred), jnp.asarray(y))))


def make_task(cfg: dict[str, Any]) -> loop.Task:
    """The PDE task for the shared loop: relative L2 error, condensation per epoch.

    Training calls the model with the step's collision key (kinetic blocks
    collide); evaluation without one (eval mode, exactly ``W u + K u``).
    """

    def apply(model: FNO | FNOKINN, u: jax.Array, key: jax.Array | None, train: bool):
        return model(u, rngs=nnx.Rngs(collision=key) if train and key is not None else None)

    def terms(pred: jax.Array, y: jax.Array) -> jax.Array:
        return rel_l2(pred.astype(jnp.float32), y.astype(jnp.float32))[:, None]

    def epoch_metrics(model: FNO | FNOKINN) -> dict[str, Any]:
        cond = condensation(model, cfg["top_k"])
        return {
            "condensation_w_top_k": cond["w_top_k"],
            "condensation_k_top_k": cond["k_top_k"],
        }

    return loop.Task(
        apply=apply,
        terms=terms,
        names=("rel_l2",),
        best=("rel_l2", "min"),
        log_scale=("rel_l2",),
        epoch_metrics=epoch_metrics,
    )


def seed_dir(out: str, seed: int) -> str:
    return os.path.join(out, f"seed_{seed}")


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The data order of one epoch: a function of ``(seed, epoch)`` only (exact resume)."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 1), epoch)
    return np.asarray(jax.random.permutation(key, n))


def train_seed(
    cfg: dict[str, Any], seed: int, out: str, progress: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Trains one seed with the shared loop (:func:`train.loop.run_training`) into ``out``.

    Writes ``out/{metrics.jsonl, summary.json, curves.png, predictions.png}``
    (and checkpoints under ``cfg["ckpt_dir"]/seed_<seed>``); returns the
    per-seed result that :func:`run` aggregates and the seed's metrics rows.
    """
    data = load_data(cfg, seed)
    steps = cfg["ntrain"] // cfg["batch_size"]
    schedule = lr_schedule(cfg, steps)
    tx = optax.adamw(schedule, weight_decay=cfg["weight_decay"])
    model = loop.init_model(lambda: build_model(cfg, loop.param_rngs(seed)))
    mesh = loop.make_mesh(cfg["devices"])
    key = ("pde", loop.program_key(cfg, (*RESUME_KEYS, "top_k")))
    prog, params, rest = loop.build_program(
        model, tx, make_task(cfg), mesh=mesh, parallel=cfg["parallel"], cache_key=key
    )
    ckpt_dir = seed_dir(cfg["ckpt_dir"], seed) if cfg.get("ckpt_dir") else None
    run_cfg = dict(
        cfg,
        seed=seed,
        schedule=schedule,
        ckpt_dir=ckpt_dir,
        # a seed that had not started when the run stopped has no directory yet: it starts afresh
        resume=bool(cfg.get("resume") and ckpt_dir and os.path.isdir(ckpt_dir)),
        resume_keys=RESUME_KEYS,
        eval_batch_size=EVAL_BATCH,
        dataset=cfg["equation"],
    )
    extra = {}
    if cfg["equation"] == "heat":
        extra["64"] = (data["x_test_64"], data["y_test_64"])

    def final_hook(final: FNO | FNOKINN) -> dict[str, Any]:
        cond = condensation(final, cfg["top_k"])
        plot_predictions(final, data, cfg, seed, os.path.join(out, "predictions.png"))
        res: dict[str, Any] = {"w_sorted_norms": cond["w_sorted_norms"]}
        if isinstance(final, FNOKINN):
            # (depth, order): median over channels of the final time constants tau = C / G
            res["kinn_tau"] = np.median(np.asarray(final.time_constants()), axis=-1).tolist()
        return res

    summary = loop.run_training(
        prog=prog,
        params=params,
        rest=rest,
        data=loop.Data(data["x_train"], data["y_train"], data["x_test"], data["y_test"], extra),
        cfg=run_cfg,
        out=out,
        title=f"{cfg['equation']}/{cfg['model']} seed {seed}",
        epoch_permutation=epoch_permutation,
        progress=progress,
        final_hook=final_hook,
    )
    rows = loop.read_metrics(os.path.join(out, "metrics.jsonl"))
    result = seed_result(cfg, seed, summary, rows, count_params(params))
    result["baseline_mean_rel_l2"] = mean_baseline(data["x_test"], data["y_test"])
    return result, rows


def seed_result(
    cfg: dict[str, Any], seed: int, summary: dict[str, Any], rows: list[dict[str, Any]], n: int
) -> dict[str, Any]:
    """One seed's entry of ``per_seed``: errors, times, collision rates, condensation."""
    times = np.diff([0.0] + [r["train_seconds"] for r in rows])
    result: dict[str, Any] = {
        "seed": seed,
        "status": summary["status"],
        "test_rel_l2": summary["test_rel_l2"],
        "final_train_rel_l2": rows[-1]["train_rel_l2"] if rows else None,
        "train_seconds": summary["train_seconds"],
        "first_epoch_seconds": float(times[0]) if len(times) else None,
        "median_epoch_seconds": (
            float(np.median(times[1:] if len(times) > 1 else times)) if len(times) else None
        ),
        "params": n,
        "condensation_w_top_k": summary.get("condensation_w_top_k"),
        "condensation_k_top_k": summary.get("condensation_k_top_k"),
        "w_sorted_norms": summary.get("w_sorted_norms"),
    }
    if cfg["equation"] == "heat":
        result["test_rel_l2_64"] = summary["test_rel_l2_64"]
    if cfg["model"] in KINETIC_MODELS and rows:
        per_epoch = np.asarray([list(r["collision_rates"].values()) for r in rows])
        result["collision_rate"] = {
            "per_block": per_epoch.mean(axis=0).tolist(),
            "overall": float(per_epoch.mean()),
            "first_epoch_per_block": per_epoch[0].tolist(),
            "last_epoch_per_block": per_epoch[-1].tolist(),
        }
    else:
        result["collision_rate"] = None
    if "kinn_tau" in summary:
        result["kinn_tau"] = summary["kinn_tau"]
    return result


# ------------------------------------------------------------------------ outputs


def plot_predictions(model, data: dict[str, np.ndarray], cfg, seed: int, path: str, n: int = 4):
    """``predictions.png``: truth vs. prediction (eval mode) on the first ``n`` test samples.

    Burgers: ``u(x, 0)``, ``u(x, 1)`` and the prediction, one panel per sample.
    Heat: truth, prediction and error images (32x32 test set).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = data["x_test"][:n], data["y_test"][:n]
    pred = np.asarray(model(jnp.asarray(x)))
    err = np.asarray(rel_l2(jnp.asarray(pred), jnp.asarray(y)))
    if cfg["equation"] == "burgers":
        fig, axes = plt.subplots(1, len(x), figsize=(3.6 * len(x), 3.0), squeeze=False)
        grid = np.linspace(0.0, 1.0, x.shape[-1], endpoint=False)
        for i, ax in enumerate(axes[0]):
            ax.plot(grid, x[i], color="0.6", lw=1, label="u(x, 0)")
            ax.plot(grid, y[i], color="k", lw=1.5, label="u(x, 1) truth")
            ax.plot(grid, pred[i], color="C3", ls="--", lw=1.5, label="prediction")
            ax.set_title(f"test sample {i}: rel-L2 {err[i]:.3f}", fontsize=9)
            ax.set_xlabel("x")
        axes[0][0].legend(fontsize=7)
    else:
        fig, axes = plt.subplots(3, len(x), figsize=(2.6 * len(x), 7.2), squeeze=False)
        for i in range(len(x)):
            lo, hi = float(y[i].min()), float(y[i].max())
            panels = ((y[i], "truth"), (pred[i], "prediction"), (pred[i] - y[i], "error"))
            for row, (img, name) in enumerate(panels):
                ax = axes[row][i]
                kw = {"vmin": lo, "vmax": hi} if row < 2 else {"cmap": "RdBu_r"}
                im = ax.imshow(img, **kw)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{name} {i}" + (f" ({err[i]:.3f})" if row == 2 else ""), fontsize=8)
                fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"{cfg['equation']} / {cfg['model']} seed {seed}: test set, eval mode")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_errors(per_seed_rows: dict[int, list[dict[str, Any]]], cfg, path: str) -> None:
    """``errors.png``: train and test rel-L2 per epoch, every seed, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, (seed, rows) in enumerate(per_seed_rows.items()):
        ep = [r["epoch"] for r in rows]
        ax.plot(ep, [r["train_rel_l2"] for r in rows], color=f"C{i}", ls="--", marker=".")
        test = [(r["epoch"], r["test_rel_l2"]) for r in rows if r.get("test_rel_l2") is not None]
        if test:
            ax.plot(*zip(*test, strict=True), color=f"C{i}", marker="o", label=f"seed {seed}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("relative L2 error")
    ax.set_title(f"{cfg['equation']} / {cfg['model']}: test (solid), train (dashed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_condensation(results: list[dict[str, Any]], rows: list[dict[str, Any]], cfg, path: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    first = results[0]
    for layer, norms in enumerate(first["w_sorted_norms"]):
        axes[0].plot(np.arange(1, len(norms) + 1), norms, marker=".", label=f"layer {layer}")
    axes[0].set_xlabel("channel rank")
    axes[0].set_ylabel("L2 norm of output channel")
    axes[0].set_title(f"W kernels at the end (seed {first['seed']})")
    axes[0].legend(fontsize=8)
    seeds = [r["seed"] for r in results]
    nlayers = len(first["w_sorted_norms"])
    for layer in range(nlayers):
        per_seed = [
            [row["condensation_w_top_k"][layer] for row in rows if row["seed"] == s] for s in seeds
        ]
        arr = np.asarray(per_seed)
        epochs = np.arange(1, arr.shape[1] + 1)
        axes[1].plot(epochs, arr.mean(axis=0), marker=".", label=f"layer {layer}")
        if len(seeds) > 1:
            axes[1].fill_between(epochs, arr.min(axis=0), arr.max(axis=0), alpha=0.2)
    width = len(first["w_sorted_norms"][0])
    k = min(cfg["top_k"], width)
    axes[1].axhline(k / width, color="gray", ls="--", lw=0.8, label=f"uniform ({k}/{width})")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel(f"top-{k} share of squared norm")
    axes[1].set_title(f"W condensation ({len(seeds)} seed(s): mean, min-max)")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"{cfg['equation']} / {cfg['model']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(cfg: dict[str, Any], out: str, progress: bool = True, command: str = "") -> dict[str, Any]:
    """Trains ``cfg['seeds']`` (each in ``out/seed_<s>``); writes the aggregate ``summary.json``,
    ``errors.png``, ``condensation.png`` and ``run.json`` in ``out``."""
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    results, rows, per_seed_rows = [], [], {}
    for seed in cfg["seeds"]:
        res, seed_rows = train_seed(cfg, seed, seed_dir(out, seed), progress)
        results.append(res)
        per_seed_rows[seed] = seed_rows
        rows.extend(dict(r, seed=seed) for r in seed_rows)
        if res["status"] != "completed":
            break  # preempted: this and the remaining seeds continue after --resume
    status = "completed" if all(r["status"] == "completed" for r in results) else "preempted"
    if status != "completed" or not rows:
        summary = {"equation": cfg["equation"], "model": cfg["model"], "status": status}
        summary["seeds_completed"] = [r["seed"] for r in results if r["status"] == "completed"]
        if jax.process_index() == 0:
            report.write_json(os.path.join(out, "summary.json"), summary)
        return summary
    summary: dict[str, Any] = {"equation": cfg["equation"], "model": cfg["model"], "status": status}
    m, s = report.mean_std([r["test_rel_l2"] for r in results])
    summary.update(test_rel_l2=m, test_rel_l2_std=s)
    m, s = report.mean_std([r["baseline_mean_rel_l2"] for r in results])
    summary.update(baseline_mean_rel_l2=m, baseline_mean_rel_l2_std=s)
    if cfg["equation"] == "heat":
        m, s = report.mean_std([r["test_rel_l2_64"] for r in results])
        summary.update(test_rel_l2_64=m, test_rel_l2_64_std=s)
    if cfg["model"] in KINETIC_MODELS:
        per_block = np.mean([r["collision_rate"]["per_block"] for r in results], axis=0)
        summary["collision_rate"] = {
            "per_block": per_block.tolist(),
            "overall": float(per_block.mean()),
            "note": "mean over training steps (and seeds) of the fraction of candidate pairs "
            "that collided",
        }
    else:
        summary["collision_rate"] = None
    if cfg["model"] == "fno_kinn":
        summary["kinn_tau"] = {
            "median_per_layer_order": np.mean([r["kinn_tau"] for r in results], axis=0).tolist(),
            "note": "final tau = C / G per layer (rows) and cascade order (columns), median over "
            "channels, mean over seeds; dt = 1",
        }
    m, s = report.mean_std([r["train_seconds"] for r in results])
    summary.update(
        params=results[0]["params"],
        train_seconds=m,
        train_seconds_std=s,
        median_epoch_seconds=float(np.mean([r["median_epoch_seconds"] for r in results])),
        condensation_w_top_k=np.mean([r["condensation_w_top_k"] for r in results], axis=0).tolist(),
        seeds=list(cfg["seeds"]),
        settings={k: v for k, v in cfg.items() if k not in ("seeds", "cache_dir")},
        per_seed=[{k: v for k, v in r.items() if k != "w_sorted_norms"} for r in results],
    )
    if jax.process_index() == 0:
        report.write_json(os.path.join(out, "summary.json"), summary)
        plot_errors(per_seed_rows, cfg, os.path.join(out, "errors.png"))
        if results[0]["w_sorted_norms"]:  # FNO and KINN (OFormer has no W kernels)
            plot_condensation(results, rows, cfg, os.path.join(out, "condensation.png"))
        info = report.run_info(command, runtime_s=time.perf_counter() - t0)
        report.write_json(os.path.join(out, "run.json"), info)
    return summary


def write_sweep_table(summaries: dict[str, dict[str, Any]], sizes: dict, seeds, runtime, path: str):
    lines = [
        "# Plain vs. kinetic (KITINet) vs. KINN FNO",
        "",
        f"Seeds {list(seeds)} (mean ± sample std over seeds; a seed fixes split, init, shuffling "
        "and collision keys, so `fno` and `fno_kinetic` of one seed start from the same "
        "parameters; `fno_kinn` has extra parameters, so only split and shuffling are shared). "
        "Test error = relative L2, eval mode (no collisions). Heat: trained at 32², tested at 32² "
        "and zero-shot at 64². Collision rate = fraction of candidate particle pairs that collided, "
        "mean over all training steps and seeds, per Fourier layer. KINN: Kirchhoff cascade of "
        "the given order per layer, state carried across layers (`kinetix.nn.FNOKINN1d/2d`). "
        "`predict mean(u0)`: the test error of predicting the conserved spatial mean of the "
        "input everywhere (no learning; mean over seeds' test splits).",
        "",
        "| equation | model | rule / order | test rel-L2 | predict mean(u0) | test rel-L2 @64² | collision rate per block | overall | train s | s/epoch | params | test rel-L2 per seed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries.values():
        eq, model = s["equation"], s["model"]
        rate = s["collision_rate"]
        per_block = ", ".join(f"{r:.4f}" for r in rate["per_block"]) if rate else "–"
        overall = f"{rate['overall']:.4f}" if rate else "–"
        t64 = (
            report.fmt_mean_std(s["test_rel_l2_64"], s["test_rel_l2_64_std"])
            if eq == "heat"
            else "–"
        )
        variant = {
            "fno_kinetic": s["settings"].get("rule"),
            "fno_kinn": f"order {s['settings'].get('kinn_order')}",
        }.get(model, "–")
        per_seed = ", ".join(f"{r['test_rel_l2']:.4f}" for r in s["per_seed"])
        base = (
            f"{s['baseline_mean_rel_l2']:.4f}" if s.get("baseline_mean_rel_l2") is not None else "–"
        )
        lines.append(
            f"| {eq} | {model} | {variant} | {report.fmt_mean_std(s['test_rel_l2'], s['test_rel_l2_std'])} | "
            f"{base} | {t64} | {per_block} | {overall} | "
            f"{s['train_seconds']:.1f} ± {s['train_seconds_std']:.1f} | "
            f"{s['median_epoch_seconds']:.2f} | {s['params']} | {per_seed} |"
        )
    for other, label in (("fno_kinetic", "kinetic"), ("fno_kinn", "KINN")):
        block = []
        for eq in EQUATIONS:
            plain, var = summaries.get(f"{eq}_fno"), summaries.get(f"{eq}_{other}")
            if not (plain and var):
                continue
            keys = ["test_rel_l2"] + (["test_rel_l2_64"] if eq == "heat" else [])
            for key in keys:
                p = {r["seed"]: r[key] for r in plain["per_seed"]}
                d = [r[key] - p[r["seed"]] for r in var["per_seed"] if r["seed"] in p]
                m, sd = report.mean_std(d)
                block.append(
                    f"- {eq} `{key}`: {report.fmt_mean_std(m, sd)} (per seed: {', '.join(f'{x:+.4f}' for x in d)})"
                )
        if block:
            lines += ["", f"Paired difference {label} − plain (same seed), test rel-L2:", ""]
            lines += block
    lines += [
        "",
        "Sizes used here vs. the released scripts:",
        "",
        "| equation | resolution | ntrain | ntest | epochs | batch | paper (resolution, ntrain, ntest, epochs, batch) |",
        "|---|---|---|---|---|---|---|",
    ]
    for eq in (e for e in EQUATIONS if e in sizes):
        z, p = sizes[eq], PAPER[eq]
        res = f"{z['resolution']}" if eq == "burgers" else "train 32², test 32² + 64²"
        pres = f"{p['resolution']}" if eq == "burgers" else "train 32², test 64²"
        lines.append(
            f"| {eq} | {res} | {z['ntrain']} | {z['ntest']} | {z['epochs']} | {z['batch_size']} | "
            f"{pres}, {p['ntrain']}, {p['ntest']}, {p['epochs']}, {BATCH_SIZE} |"
        )
    lines += ["", f"Total wall time of the sweep: {runtime:.0f} s."]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def sweep(base: dict[str, Any], out: str, progress: bool, command: str) -> dict[str, Any]:
    """Runs plain, kinetic and KINN FNO on both equations; writes table.md and summary.json."""
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    summaries, sizes = {}, {}
    for eq in EQUATIONS:
        for model in SWEEP_MODELS:
            cfg = resolve_config(base, eq, model)
            sizes[eq] = cfg
            name = f"{eq}_{model}"
            if cfg["ckpt_dir"]:
                cfg["ckpt_dir"] = os.path.join(cfg["ckpt_dir"], name)
            summaries[name] = run(cfg, os.path.join(out, name), progress, command)
    runtime = time.perf_counter() - t0
    write_sweep_table(summaries, sizes, base["seeds"], runtime, os.path.join(out, "table.md"))
    combined = {
        "runs": {
            k: {kk: vv for kk, vv in s.items() if kk != "per_seed"} | {"per_seed": s["per_seed"]}
            for k, s in summaries.items()
        },
        "seeds": list(base["seeds"]),
        "runtime_s": runtime,
        "command": command,
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(combined, f, indent=2)
    return combined


# --------------------------------------------------------------------------- main


def _n_divide(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= 1 or 'auto', got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or 'auto', got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.pde",
        description=(
            "Train an FNO (plain residual W u + K u), a kinetic FNO (KITINet collision step "
            "between the W and K branches) or a KINN FNO (Kirchhoff cell cascade per layer, "
            "driven by W u + K u) on 1-D Burgers (u(.,0) -> u(.,1), nu = 0.1) or the "
            "2-D heat equation (u0 -> uT; train at 32x32, test at 32x32 and zero-shot 64x64). "
            "Writes summary.json, metrics.jsonl, condensation.png and run.json to --out. "
            "With --sweep-results DIR instead: runs all three models on both equations for "
            "several seeds and writes DIR/table.md and DIR/summary.json."
        ),
    )
    p.add_argument(
        "--equation", choices=EQUATIONS, help="PDE data set (required unless --sweep-results)"
    )
    p.add_argument(
        "--model",
        choices=MODELS,
        help="fno: plain residual; fno_kinetic: KITINet residual; fno_kinn: Kirchhoff cascade "
        "layers; oformer / oformer_kinetic: OFormer (Li et al. 2023; the released Burgers "
        "configuration, about 12x the cost of the FNO per step) with plain or KITINet "
        "residuals in its encoder (required unless --sweep-results)",
    )
    p.add_argument(
        "--out", help="output directory, created if missing (required unless --sweep-results)"
    )
    p.add_argument(
        "--sweep-results",
        metavar="DIR",
        help="results driver: run fno, fno_kinetic and fno_kinn on burgers and heat for --seeds "
        f"(default {list(SWEEP_SEEDS)}) at CPU-feasible sizes ({SWEEP}); size flags override them",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"small sizes for a run of about 1-3 minutes on 2 CPU cores ({QUICK}); "
        "explicit size flags override them",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="seeds (each fixes split, init, shuffling and collision keys); default: 0, "
        f"or {list(SWEEP_SEEDS)} with --sweep-results",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs (default: paper, 1000; see --quick)",
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=None,
        help="evaluate on the test set(s) every N epochs and at the last one; other epochs log "
        "null test errors (default 1; heat 5 with --quick / --sweep-results)",
    )
    p.add_argument(
        "--ntrain",
        type=int,
        default=None,
        help="training samples (default: paper, burgers 1000, heat 20)",
    )
    p.add_argument(
        "--ntest",
        type=int,
        default=None,
        help="test samples (default: paper, burgers 100, heat 20)",
    )
    p.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="burgers only: grid points (even, >= 30 for 16 modes; default 1024, 256 with --quick)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=BATCH_SIZE,
        help="minibatch size, <= --ntrain (default %(default)s)",
    )
    p.add_argument(
        "--lr", type=float, default=LR, help="initial AdamW learning rate (default %(default)s)"
    )
    p.add_argument(
        "--weight-decay",
        type=float,
        default=WEIGHT_DECAY,
        help="AdamW weight decay (default %(default)s)",
    )
    p.add_argument(
        "--coll-coef",
        type=float,
        default=None,
        help="collision coefficient of the kinetic residual, in [0, 1] (kinetic models only; "
        f"default {', '.join(f'{k} {v}' for k, v in COLL_COEF.items())})",
    )
    p.add_argument(
        "--rule",
        choices=RULES,
        default="hard_sphere",
        help="collision rule: textbook hard sphere (each particle collides at most once per step) "
        "or the authors' released code (all accepted pairs; several times slower here) (fno_kinetic only; default %(default)s)",
    )
    p.add_argument(
        "--n-divide",
        type=_n_divide,
        default=None,
        help="grid points per particle, integer or 'auto' (128 particles); default: burgers 4, heat auto",
    )
    p.add_argument(
        "--kinn-order",
        type=int,
        default=KINN_ORDER,
        help="cells per Kirchhoff cascade, >= 1 (fno_kinn only; default %(default)s)",
    )
    p.add_argument(
        "--top-k",
        type=int,
        default=TOP_K,
        help="k of the channel-condensation top-k share (default %(default)s)",
    )
    p.add_argument(
        "--data-seed",
        type=int,
        default=0,
        help="seed of the generated data pool (default %(default)s)",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="PDE data cache directory (default: $KINETIX_CACHE or ~/.cache/kinetix/pde)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    loop.add_system_args(p)
    return p


def resolve_config(base: dict[str, Any], equation: str, model: str) -> dict[str, Any]:
    """Fills the sizes of one (equation, model) run: explicit flag > preset > paper."""
    preset = base["preset"][equation]
    cfg = dict(base, equation=equation, model=model)
    del cfg["preset"], cfg["explicit"]
    for key in SIZE_KEYS:
        value = base["explicit"].get(key)
        cfg[key] = preset[key] if value is None else value
    if equation == "heat":
        cfg["resolution"] = HEAT_TEST_RES
    if cfg["n_divide"] is None:
        cfg["n_divide"] = 4 if equation == "burgers" else "auto"
    if model in KINETIC_MODELS and cfg["coll_coef"] is None:
        cfg["coll_coef"] = COLL_COEF[model]
    if model not in KINETIC_MODELS:
        cfg["coll_coef"], cfg["rule"] = None, None
    if model != "fno_kinetic":
        cfg["n_divide"] = None
    if model != "fno_kinn":
        cfg["kinn_order"] = None
    return cfg


def _check_sizes(p: argparse.ArgumentParser, cfg: dict[str, Any]) -> None:
    eq = cfg["equation"]
    if cfg["batch_size"] > cfg["ntrain"]:
        p.error(
            f"--batch-size ({cfg['batch_size']}) must be <= --ntrain ({cfg['ntrain']}) for {eq}"
        )
    if eq == "burgers":
        r = cfg["resolution"]
        if r < 30 or r % 2:
            p.error(f"--resolution must be even and >= 30 (16 Fourier modes), got {r}")
        nd = cfg["n_divide"]
        if cfg["model"] == "fno_kinetic":
            if nd == "auto" and r % 128:
                p.error(f"--n-divide auto needs --resolution divisible by 128 particles, got {r}")
            if nd != "auto" and (r % nd or r // nd < 2):
                p.error(f"--n-divide ({nd}) must divide --resolution ({r}) into >= 2 particles")
    elif cfg["model"] == "fno_kinetic" and cfg["n_divide"] != "auto":
        nd = cfg["n_divide"]
        if HEAT_TRAIN_RES**2 % nd or HEAT_TEST_RES**2 % nd or HEAT_TRAIN_RES**2 // nd < 2:
            p.error(f"--n-divide ({nd}) must divide 32*32 and 64*64 into >= 2 particles")


def parse(
    argv: Sequence[str],
) -> tuple[argparse.ArgumentParser, argparse.Namespace, dict[str, Any]]:
    p = build_parser()
    args = p.parse_args(argv)
    if args.sweep_results is not None:
        for flag, value in (
            ("--equation", args.equation),
            ("--model", args.model),
            ("--out", args.out),
        ):
            if value is not None:
                p.error(
                    f"{flag} cannot be combined with --sweep-results (it runs every equation and model)"
                )
        out = args.sweep_results
    else:
        for flag, value in (
            ("--equation", args.equation),
            ("--model", args.model),
            ("--out", args.out),
        ):
            if value is None:
                p.error(f"{flag} is required (unless --sweep-results is given)")
        out = args.out
    try:
        loop.check_output_dir(out, "--out" if args.sweep_results is None else "--sweep-results")
    except loop.SetupError as e:  # not a flag-syntax problem: the message alone, no usage
        p.exit(2, f"{p.prog}: error: {e}\n")
    seeds = args.seeds
    if seeds is None:
        seeds = list(SWEEP_SEEDS) if args.sweep_results is not None else [0]
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        p.error(f"--seeds must be distinct integers >= 0, got {seeds}")
    for flag, value in (
        ("--epochs", args.epochs),
        ("--ntrain", args.ntrain),
        ("--ntest", args.ntest),
        ("--eval-every", args.eval_every),
    ):
        if value is not None and value < 1:
            p.error(f"{flag} must be >= 1, got {value}")
    if args.batch_size < 1:
        p.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        p.error(f"--lr must be a finite number > 0, got {args.lr}")
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        p.error(f"--weight-decay must be a finite number >= 0, got {args.weight_decay}")
    if args.coll_coef is not None and not (
        math.isfinite(args.coll_coef) and 0 <= args.coll_coef <= 1
    ):
        p.error(f"--coll-coef must be in [0, 1], got {args.coll_coef}")
    if args.top_k < 1:
        p.error(f"--top-k must be >= 1, got {args.top_k}")
    if args.data_seed < 0:
        p.error(f"--data-seed must be >= 0, got {args.data_seed}")
    if args.resolution is not None and args.equation == "heat":
        p.error(
            "--resolution applies to burgers only (heat is trained at 32x32 and tested at 32x32 and 64x64)"
        )
    if args.kinn_order < 1:
        p.error(f"--kinn-order must be >= 1, got {args.kinn_order}")
    if args.sweep_results is None:
        for flag, given, models in (
            ("--coll-coef", args.coll_coef is not None, KINETIC_MODELS),
            ("--rule", args.rule != "hard_sphere", KINETIC_MODELS),
            ("--n-divide", args.n_divide is not None, ("fno_kinetic",)),
        ):
            if given and args.model not in models:
                p.error(f"{flag} only applies to --model {' or '.join(models)}")
    if args.sweep_results is None and args.model != "fno_kinn" and args.kinn_order != KINN_ORDER:
        p.error("--kinn-order only applies to --model fno_kinn")
    if args.quick:
        preset = QUICK
    else:
        preset = SWEEP if args.sweep_results is not None else PAPER
    base = {
        "preset": preset,
        "explicit": {
            "resolution": args.resolution,
            "ntrain": args.ntrain,
            "ntest": args.ntest,
            "epochs": args.epochs,
            "eval_every": args.eval_every,
        },
        "seeds": seeds,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "coll_coef": args.coll_coef,
        "rule": args.rule,
        "n_divide": args.n_divide,
        "kinn_order": args.kinn_order,
        "top_k": args.top_k,
        "data_seed": args.data_seed,
        "cache_dir": args.cache_dir,
        "quick": args.quick,
    }
    system = {k: getattr(args, k) for k in SYSTEM_KEYS}
    base.update(loop.resolve_system_args(system, p))
    if args.ckpt_dir:
        if args.resume and not os.path.isdir(args.ckpt_dir):
            p.exit(
                2,
                f"{p.prog}: error: --resume: no checkpoint directory "
                f"{os.path.abspath(args.ckpt_dir)}; drop --resume to start a new run (or "
                "correct the --ckpt-dir path).\n",
            )
        try:
            loop.check_output_dir(args.ckpt_dir, "--ckpt-dir")
        except loop.SetupError as e:
            p.exit(2, f"{p.prog}: error: {e}\n")
    pairs = (
        [(e, m) for e in EQUATIONS for m in SWEEP_MODELS]
        if args.sweep_results is not None
        else [(args.equation, args.model)]
    )
    for e, m in pairs:
        _check_sizes(p, resolve_config(base, e, m))
    return p, args, base


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the command line; returns the summary dict (also written to disk)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _, args, base = parse(argv)
    command = "python -m train.pde " + shlex.join(argv)
    progress = not args.no_progress
    try:
        loop.initialize_distributed(base)
        if args.sweep_results is not None:
            summary = sweep(base, args.sweep_results, progress, command)
            print(
                f"wrote {args.sweep_results}/table.md and summary.json in "
                f"{summary['runtime_s']:.0f} s"
            )
            return summary
        cfg = resolve_config(base, args.equation, args.model)
        summary = run(cfg, args.out, progress, command)
    except (loop.DistributedError, loop.SetupError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if jax.process_index() != 0:
        return summary
    if summary["status"] != "completed":
        print(
            f"preempted; seeds completed: {summary['seeds_completed']}. Run the same command "
            "with --resume to continue.",
            file=sys.stderr,
        )
        return summary
    msg = (
        f"test rel-L2 {summary['test_rel_l2']:.4f} (predicting mean(u0): "
        f"{summary['baseline_mean_rel_l2']:.4f})"
    )
    if args.equation == "heat":
        msg += f", at 64x64 {summary['test_rel_l2_64']:.4f}"
    if summary["collision_rate"] is not None:
        msg += f", collision rate {summary['collision_rate']['overall']:.4f}"
    print(f"{msg}; wrote {args.out} ({summary['train_seconds']:.1f} s training)")
    return summary


if __name__ == "__main__":
    main()
