"""Transductive classification with and without graph diffusion (Diff-ResNet / COIN), offline.

Run (the measured results in ``results/diffusion``)::

    python -m train.diffusion --out results/diffusion

Set-up, after the authors' released scripts (``shwangtangjun/Diff-ResNet`` and
``shwangtangjun/COIN``):

* **Data** (no download): *two moons* from ``sklearn.datasets.make_moons``
  (1000 points, Gaussian noise 0.05, as in ``synthetic/two_moon_example.py``;
  a new draw per seed; raw coordinates), and *digits* from
  ``sklearn.datasets.load_digits`` (1797 8x8 images of 10 classes, shipped with
  scikit-learn; pixels z-scored over all points). Per seed,
  ``--labels-per-class`` points of each class are labelled (5 by default). All
  other points are the unlabelled test points, which the model sees but whose
  labels it never sees (transductive, as in the papers).
* **Graph**: :func:`kinetix.diffusion.graph_laplacian` on the inputs, with the
  code's kernel (``n_top=8, sigma=4``) and, as separate rows,
  ``normalization="symmetric"`` (kinetix's default,
  ``L = I - D^-1/2 W D^-1/2``) and ``"released_code"`` (the code's
  ``diag(W~ 1) - W~``). The graph is built once per data draw, as in the
  code's few-shot scripts, and passed to the layer as a sparse BCOO matrix.
  The stability bound ``gamma * lambda_max(L) <= 2`` is checked outside
  ``jit`` with the exact ``lambda_max`` (:func:`kinetix.diffusion.check_stability`),
  and an unstable setting stops the run with that error.
* **Models** (the code's ``SimpleResNet`` base model, at input width ``d``):
  ``h = x + relu(Linear(d, d)(x))``; ``logits = Linear(d, C)(h)``.

  - ``none``: no diffusion; cross-entropy on the labelled rows.
  - ``diffresnet``: ``h <- DiffusionLayer(h)`` before the classifier (Diff-ResNet).
  - ``coin``: ``u = DiffusionLayer(softmax(logits))``; loss ``NLL(log u)`` on the
    labelled rows, as in ``COIN/*/train.py``. ``u`` is clamped at ``1e-12``
    before the log: with ``L_sym`` the rows of ``u`` no longer sum to 1, and a
    large step could make entries negative.
* **Step size and number of steps** are the released scripts' values for the
  most similar setting. They were not tuned on these test points. Moons:
  ``gamma=1.0``, 60 steps (``two_moon_example.py``), for both methods. Digits,
  a 5-shot 10-way task: Diff-ResNet ``gamma=0.5``, 6 steps (Diff-ResNet README,
  mini-ImageNet 1-shot); COIN ``gamma=0.5``, 10 steps (COIN README, few-shot).
  ``--gamma`` / ``--steps`` override both.
* **Training**: full batch, Adam (lr 0.01) with L2 weight decay 5e-4 (the
  COIN/Diff-ResNet graph scripts' optimiser), 200 epochs, no early stopping (no
  validation split: the accuracy after the last epoch is reported). A seed
  fixes the data draw (moons), the labelled subset and the initialisation;
  every method of one seed starts from the same weights on the same labels,
  so "delta vs none" is a paired difference.

Outputs in ``--out``: ``summary.json`` (every setting, per-seed accuracies,
command, runtime, versions), ``table.md`` and ``accuracy.png`` (bars with
std, plus the seed-0 two-moons predictions).
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
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.experimental import sparse as jsparse
from tqdm.auto import tqdm

import kinetix
from kinetix import diffusion
from kinetix.nn.diffusion import DiffusionLayer
from train import report

DATASETS = ("moons", "digits")
METHODS = ("none", "diffresnet", "coin")
DIFFUSION_METHODS = ("diffresnet", "coin")
# (gamma, steps) from the released scripts; see the module docstring.
DEFAULT_DIFFUSION = {
    ("moons", "diffresnet"): (1.0, 60),
    ("moons", "coin"): (1.0, 60),
    ("digits", "diffresnet"): (0.5, 6),
    ("digits", "coin"): (0.5, 10),
}
LOG_FLOOR = 1e-12
QUICK = {"seeds": 2, "epochs": 5, "moons_samples": 120, "digits_samples": 200}


# ------------------------------------------------------------------------- data


def load_dataset(
    name: str, seed: int, *, moons_samples: int, moons_noise: float, digits_samples: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` float32 / int32 arrays of one data set (offline, from scikit-learn)."""
    from sklearn.datasets import load_digits, make_moons

    if name == "moons":
        x, y = make_moons(n_samples=moons_samples, noise=moons_noise, random_state=seed)
        return x.astype(np.float32), y.astype(np.int32)
    if name == "digits":
        data = load_digits()
        x, y = data.data.astype(np.float64), data.target.astype(np.int32)
        if digits_samples is not None:
            x, y = x[:digits_samples], y[:digits_samples]
        x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-8)  # z-score; constant pixels -> 0
        return x.astype(np.float32), y
    raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}.")


def labelled_subset(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of ``per_class`` random points of every class (NumPy generator ``seed``)."""
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        if len(members) <= per_class:
            raise ValueError(
                f"class {c} has {len(members)} points, too few for {per_class} labels and at "
                "least one unlabelled point; lower --labels-per-class."
            )
        picks.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(picks))


def sparse_laplacian(lap: jax.Array, n_top: int) -> jsparse.BCOO:
    """``lap`` as a BCOO matrix with a fixed ``nse``, so every data draw reuses one compilation.

    Each row of the kernel keeps at most ``n_top - 1`` entries including itself,
    so the symmetrised graph has at most ``N + 2 N (n_top - 2)`` non-zeros.
    Padding entries carry the out-of-range index ``N`` and value 0, which BCOO
    products ignore. Built in NumPy (no per-shape compilation).
    """
    dense = np.asarray(lap)
    n = dense.shape[0]
    idx = np.argwhere(dense != 0).astype(np.int32)
    nse = max(n + 2 * n * max(n_top - 2, 0), len(idx))  # ties only lower the count
    indices = np.full((nse, 2), n, np.int32)
    data = np.zeros(nse, dense.dtype)
    indices[: len(idx)] = idx
    data[: len(idx)] = dense[idx[:, 0], idx[:, 1]]
    return jsparse.BCOO((jnp.asarray(data), jnp.asarray(indices)), shape=(n, n))


# ------------------------------------------------------------------------ model


class Net(nnx.Module):
    """The released code's ``SimpleResNet`` base model, with optional diffusion.

    ``h = x + relu(fc(x))``; ``none``: ``log_softmax(classifier(h))``;
    ``diffresnet``: ``log_softmax(classifier(diffuse(h)))``; ``coin``:
    ``log(max(diffuse(softmax(classifier(h))), 1e-12))``. Returns log-probabilities.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        method: str,
        gamma: float,
        steps: int,
        *,
        rngs: nnx.Rngs,
    ):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
        self.method = method
        self.fc = nnx.Linear(in_features, in_features, rngs=rngs)
        self.classifier = nnx.Linear(in_features, num_classes, rngs=rngs)
        # Stability is checked once outside jit (check_stability), hence check="none".
        self.diffusion = DiffusionLayer(gamma, steps, check="none") if method != "none" else None

    def __call__(self, x: jax.Array, laplacian: Any) -> jax.Array:
        h = x + jax.nn.relu(self.fc(x))
        if self.method == "diffresnet":
            h = self.diffusion(h, laplacian)
        logits = self.classifier(h)
        if self.method == "coin":
            u = self.diffusion(jax.nn.softmax(logits), laplacian)
            return jnp.log(jnp.maximum(u, LOG_FLOOR))
        return jax.nn.log_softmax(logits)


@functools.partial(jax.jit, static_argnames=("graphdef", "epochs", "lr", "weight_decay"))
def train_and_predict(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    x: jax.Array,
    y: jax.Array,
    labelled: jax.Array,
    laplacian: Any,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
) -> tuple[jax.Array, jax.Array]:
    """Full-batch training on the labelled rows; returns (predictions of all rows, losses)."""
    tx = optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(lr))
    mask = labelled.astype(x.dtype)

    def loss_fn(st):
        logp = nnx.merge(graphdef, st)(x, laplacian)
        nll = -jnp.take_along_axis(logp, y[:, None], axis=1)[:, 0]
        return jnp.sum(mask * nll) / jnp.sum(mask)

    def step(carry, _):
        st, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(st)
        updates, opt_state = tx.update(grads, opt_state, st)
        return (optax.apply_updates(st, updates), opt_state), loss

    (state, _), losses = jax.lax.scan(step, (state, tx.init(state)), None, length=epochs)
    logp = nnx.merge(graphdef, state)(x, laplacian)
    return jnp.argmax(logp, axis=1), losses


# ------------------------------------------------------------------ experiment


def settings_for(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The (dataset, method, normalization, gamma, steps) rows to run."""
    rows = []
    for ds in args.datasets:
        for method in args.methods:
            if method == "none":
                rows.append(
                    {"dataset": ds, "method": method, "normalization": None, "gamma": None}
                    | {"steps": 0}
                )
                continue
            gamma, steps = DEFAULT_DIFFUSION[ds, method]
            gamma = args.gamma if args.gamma is not None else gamma
            steps = args.steps if args.steps is not None else steps
            for norm in args.normalizations:
                rows.append(
                    {"dataset": ds, "method": method, "normalization": norm}
                    | {"gamma": gamma, "steps": steps}
                )
    return rows


def run(args: argparse.Namespace, progress: bool = True) -> dict[str, Any]:
    """Trains every setting on every seed; returns the summary dict."""
    seeds = list(range(args.seeds))
    settings = settings_for(args)
    per_seed: dict[int, dict[str, list]] = {i: {"acc": [], "lam": []} for i in range(len(settings))}
    predictions: dict[tuple[str, str, str | None], np.ndarray] = {}
    moons_seed0: tuple[np.ndarray, np.ndarray] | None = None
    bar = tqdm(total=len(settings) * len(seeds), desc="train", unit="run", disable=not progress)
    data_cache: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    graph_cache: dict[tuple[str, int], dict[str, tuple[jsparse.BCOO, float, jax.Array]]] = {}
    for seed in seeds:
        for ds in args.datasets:
            key = (ds, 0 if ds == "digits" else seed)  # digits: same points every seed
            if key not in data_cache:
                data_cache[key] = load_dataset(
                    ds,
                    seed,
                    moons_samples=args.moons_samples,
                    moons_noise=args.moons_noise,
                    digits_samples=args.digits_samples,
                )
            x, y = data_cache[key]
            if ds == "moons" and seed == 0:
                moons_seed0 = (x, y)
            lab_idx = labelled_subset(y, args.labels_per_class, seed)
            labelled = np.zeros(len(y), bool)
            labelled[lab_idx] = True
            if key not in graph_cache:  # built once per data draw
                graph_cache[key] = {}
                for norm in args.normalizations:
                    lap = diffusion.graph_laplacian(x, args.n_top, args.sigma, normalization=norm)
                    lam = float(diffusion.lambda_max(lap, "exact"))
                    graph_cache[key][norm] = (sparse_laplacian(lap, args.n_top), lam, lap)
            laps = graph_cache[key]
            for i, s in enumerate(settings):
                if s["dataset"] != ds:
                    continue
                if s["method"] == "none":
                    lap_sp, lam = laps[args.normalizations[0]][0], float("nan")
                    gamma, steps = 0.0, 0
                else:
                    lap_sp, lam, lap_dense = laps[s["normalization"]]
                    gamma, steps = s["gamma"], s["steps"]
                    diffusion.check_stability(lap_dense, gamma, lam_max=lam)
                init_key = jax.random.fold_in(jax.random.key(seed), 1)
                model = Net(
                    x.shape[1],
                    int(y.max()) + 1,
                    s["method"],
                    gamma,
                    steps,
                    rngs=nnx.Rngs(params=init_key),
                )
                graphdef, state = nnx.split(model)
                pred, losses = train_and_predict(
                    graphdef,
                    state,
                    jnp.asarray(x),
                    jnp.asarray(y),
                    jnp.asarray(labelled),
                    lap_sp,
                    epochs=args.epochs,
                    lr=args.lr,
                    weight_decay=args.weight_decay,
                )
                pred = np.asarray(pred)
                if not np.all(np.isfinite(np.asarray(losses))):
                    raise FloatingPointError(f"non-finite training loss in {s}, seed {seed}.")
                acc = float(np.mean(pred[~labelled] == y[~labelled]))
                per_seed[i]["acc"].append(acc)
                per_seed[i]["lam"].append(lam)
                if ds == "moons" and seed == 0:
                    predictions[s["method"], s["normalization"]] = pred
                bar.update(1)
                bar.set_postfix_str(f"{ds}/{s['method']}/{s['normalization']} acc={acc:.3f}")
    bar.close()

    results = []
    for i, s in enumerate(settings):
        accs = per_seed[i]["acc"]
        base = next(
            (
                j
                for j, t in enumerate(settings)
                if t["dataset"] == s["dataset"] and t["method"] == "none"
            ),
            None,
        )
        delta = (
            report.mean_std_dict(np.asarray(accs) - np.asarray(per_seed[base]["acc"]))
            if base is not None and base != i
            else None
        )
        lams = [v for v in per_seed[i]["lam"] if math.isfinite(v)]
        results.append(
            s
            | {
                "accuracy": report.mean_std_dict(accs) | {"values": accs},
                "delta_vs_none": delta,
                "lambda_max": report.mean_std_dict(lams) if lams else None,
                "gamma_lambda_max": (
                    report.mean_std_dict([s["gamma"] * v for v in lams]) if lams else None
                ),
            }
        )
    return {"results": results, "predictions": predictions, "moons_seed0": moons_seed0}


# ---------------------------------------------------------------------- output


def _pm(d: dict[str, float] | None, fmt: str = ".3f", signed: bool = False) -> str:
    if d is None:
        return "-"
    mean = f"{d['mean']:+{fmt}}" if signed else f"{d['mean']:{fmt}}"
    return f"{mean} ± {d['std']:{fmt}}"


def write_table(summary: dict[str, Any], path: str) -> None:
    cfg = summary["config"]
    lines = [
        "# Transductive classification with graph diffusion (Diff-ResNet / COIN)",
        "",
        f"{cfg['seeds']} seeds, {cfg['labels_per_class']} labelled points per class, "
        f"{cfg['epochs']} full-batch Adam epochs (lr {cfg['lr']:g}, weight decay "
        f"{cfg['weight_decay']:g}), kNN graph on the inputs (n_top={cfg['n_top']}, "
        f"sigma={cfg['sigma']}). Accuracy on the unlabelled points after the last epoch, "
        "mean ± sample std over seeds; delta is the paired difference to `none` on the "
        "same seed (same labels, same initial weights).",
        "",
        "| dataset | method | Laplacian | gamma | steps | gamma·λmax | test accuracy "
        "| delta vs none | per seed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["results"]:
        gamma = "-" if r["gamma"] is None else f"{r['gamma']:g}"
        vals = " ".join(f"{v:.3f}" for v in r["accuracy"]["values"])
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['normalization'] or '-'} | {gamma} "
            f"| {r['steps']} | {_pm(r['gamma_lambda_max'], '.2f')} | {_pm(r['accuracy'])} "
            f"| {_pm(r['delta_vs_none'], signed=True)} | {vals} |"
        )
    lines += [
        "",
        "Data: two moons = `sklearn.datasets.make_moons` "
        f"({cfg['moons_samples']} points, noise {cfg['moons_noise']:g}, new draw per seed); "
        "digits = `sklearn.datasets.load_digits` "
        f"({cfg['digits_samples'] or 1797} images, z-scored pixels).",
        "",
        "## Command",
        "",
        "```",
        summary["command"],
        "```",
        "",
        f"Runtime: {summary['runtime_s']:.1f} s on {platform.machine()} CPU "
        f"({os.cpu_count()} cores, shared), JAX {jax.__version__}.",
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def plot(summary: dict[str, Any], extra: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = summary["results"]
    datasets = list(dict.fromkeys(r["dataset"] for r in results))
    moons = extra["moons_seed0"]
    preds = extra["predictions"]
    n_scatter = len(preds) if moons is not None else 0
    ncols = max(len(datasets), n_scatter, 1)
    nrows = 2 if n_scatter else 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for ax, ds in zip(axes[0], datasets, strict=False):
        ax.set_visible(True)
        rows = [r for r in results if r["dataset"] == ds]
        short = {"symmetric": "L_sym", "released_code": "L_code", "unnormalized": "D-W"}
        labels = [
            r["method"]
            + ("" if not r["normalization"] else "\n" + short.get(r["normalization"], "L_rw"))
            for r in rows
        ]
        means = [r["accuracy"]["mean"] for r in rows]
        stds = [r["accuracy"]["std"] for r in rows]
        colors = [
            "0.6" if r["method"] == "none" else ("C0" if r["method"] == "diffresnet" else "C1")
            for r in rows
        ]
        ax.bar(range(len(rows)), means, yerr=stds, color=colors, capsize=4)
        ax.set_xticks(range(len(rows)), labels, fontsize=7)
        lo = max(0.0, min(m - s for m, s in zip(means, stds, strict=True)) - 0.05)
        ax.set_ylim(lo, 1.0)
        ax.set_title(f"{ds}: accuracy on unlabelled points\n(mean ± std over seeds)", fontsize=9)
    if n_scatter:
        x, y = moons
        for ax, ((method, norm), pred) in zip(axes[1], preds.items(), strict=False):
            ax.set_visible(True)
            acc = float(np.mean(pred == y))
            ax.scatter(x[:, 0], x[:, 1], c=pred, cmap="coolwarm", s=3)
            wrong = pred != y
            ax.scatter(x[wrong, 0], x[wrong, 1], facecolors="none", edgecolors="k", s=12, lw=0.5)
            ax.set_title(
                f"moons seed 0: {method} {norm or ''}\nall points, acc={acc:.3f} (o = wrong)",
                fontsize=8,
            )
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.diffusion",
        description=(
            "Transductive few-label classification with and without graph diffusion: "
            "the released code's SimpleResNet base model alone ('none'), with a "
            "Diff-ResNet diffusion layer on its hidden features ('diffresnet'), and "
            "with COIN's diffusion of its softmax output ('coin'), on two moons and "
            "scikit-learn's digits (both offline). Several seeds; writes summary.json, "
            "table.md and accuracy.png to --out."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--seeds", type=int, default=10, help="number of seeds (0..N-1)")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument(
        "--normalizations",
        nargs="+",
        default=["symmetric", "released_code"],
        choices=diffusion.NORMALIZATIONS,
        help="graph Laplacians to run the diffusion methods with (one row each)",
    )
    p.add_argument("--labels-per-class", type=int, default=5, help="labelled points per class")
    p.add_argument("--epochs", type=int, default=200, help="full-batch Adam epochs")
    p.add_argument("--lr", type=float, default=0.01, help="Adam learning rate")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="L2 weight decay")
    p.add_argument(
        "--gamma",
        type=float,
        default=None,
        help="diffusion step size for every diffusion method (default: the released "
        "scripts' values, see the module docstring)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="number of diffusion steps for every diffusion method (default: the "
        "released scripts' values)",
    )
    p.add_argument("--n-top", type=int, default=8, help="kernel truncation rank (code: 8)")
    p.add_argument("--sigma", type=int, default=4, help="kernel bandwidth rank (code: 4)")
    p.add_argument("--moons-samples", type=int, default=1000, help="two-moons points")
    p.add_argument("--moons-noise", type=float, default=0.05, help="two-moons noise std")
    p.add_argument(
        "--digits-samples",
        type=int,
        default=None,
        help="use only the first N digits (default: all 1797)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"tiny smoke run for tests: {QUICK['seeds']} seeds, {QUICK['epochs']} epochs, "
        f"{QUICK['moons_samples']} moons points, {QUICK['digits_samples']} digits, "
        "symmetric Laplacian only (explicit flags still win)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def _apply_quick(argv: Sequence[str], args: argparse.Namespace) -> None:
    given = {a.split("=")[0] for a in argv if a.startswith("--")}
    for name, value in QUICK.items():
        if "--" + name.replace("_", "-") not in given:
            setattr(args, name, value)
    if "--normalizations" not in given:
        args.normalizations = ["symmetric"]


def _validate(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.labels_per_class < 1:
        p.error(f"--labels-per-class must be >= 1, got {args.labels_per_class}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        p.error(f"--lr must be a finite number > 0, got {args.lr}")
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        p.error(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if args.gamma is not None and not (math.isfinite(args.gamma) and args.gamma >= 0):
        p.error(f"--gamma must be a finite number >= 0, got {args.gamma}")
    if args.steps is not None and args.steps < 0:
        p.error(f"--steps must be >= 0, got {args.steps}")
    if args.n_top < 2 or args.sigma < 2:
        p.error(f"--n-top and --sigma must be >= 2, got {args.n_top} and {args.sigma}")
    if args.moons_samples < 2 * (args.labels_per_class + 1) or args.moons_samples < args.n_top:
        p.error(f"--moons-samples={args.moons_samples} is too small for the labels and n_top")
    if not (math.isfinite(args.moons_noise) and args.moons_noise >= 0):
        p.error(f"--moons-noise must be >= 0, got {args.moons_noise}")
    if args.digits_samples is not None and not (max(args.n_top, 20) <= args.digits_samples):
        p.error(f"--digits-samples must be >= max(n_top, 20), got {args.digits_samples}")
    for opt in ("datasets", "methods", "normalizations"):
        vals = getattr(args, opt)
        if len(set(vals)) != len(vals):
            p.error(f"--{opt} has duplicates: {vals}")
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
    if args.quick:
        _apply_quick(argv, args)
    _validate(parser, args)
    os.makedirs(args.out, exist_ok=True)
    command = "python -m train.diffusion " + shlex.join(argv)
    t0 = time.perf_counter()
    out = run(args, progress=not args.no_progress)
    runtime = time.perf_counter() - t0
    config = {
        k: getattr(args, k)
        for k in (
            "seeds",
            "datasets",
            "methods",
            "normalizations",
            "labels_per_class",
            "epochs",
            "lr",
            "weight_decay",
            "gamma",
            "steps",
            "n_top",
            "sigma",
            "moons_samples",
            "moons_noise",
            "digits_samples",
            "quick",
        )
    }
    summary = {
        "results": out["results"],
        "config": config,
        "command": command,
        "runtime_s": runtime,
        "versions": {
            "jax": jax.__version__,
            "flax": getattr(__import__("flax"), "__version__", "?"),
            "optax": optax.__version__,
            "kinetix": kinetix.__version__,
            "backend": jax.default_backend(),
            "cpu_count": os.cpu_count(),
        },
    }
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    write_table(summary, os.path.join(args.out, "table.md"))
    plot(summary, out, os.path.join(args.out, "accuracy.png"))
    print(f"wrote {args.out} in {runtime:.1f} s")
    return summary


if __name__ == "__main__":
    main()
