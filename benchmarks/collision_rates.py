"""Collision-rate curves: how many pairs collide, vs ``coll_coef``, under each acceptance rule.

Run from the repository root::

    python -m benchmarks.collision_rates            # full run, ~2 min on 2 busy CPU cores
    python -m benchmarks.collision_rates --quick    # smoke test, < 1 min

``--quick`` measures the (512,10) and (512,100) kernels only, width-8 ResNets (12
SGD steps; kinetic blocks on 32x32 inputs only) and the FNO at 128 points.

Writes ``output.txt`` (everything printed), ``rates.json`` (all numbers),
``table.md`` and ``rate_curves.png`` to ``--out-dir`` (default
``results/collision_rates``; ``results/collision_rates/quick`` with ``--quick``).

Rules compared (acceptance, length scale ``ell``), see
:func:`kinetix.collision.acceptance_matrix` and :func:`kinetix.dsmc.acceptance`:

* ``paper``: ``("threshold", 1.0)``, the KO paper's Eq. 7, ``r_ij > 1 - c``;
* ``released``: KO kernels ``("threshold", 20.0)`` with the particles on axis 0
  (input units, as the released KO code); kinetic blocks ``("threshold", 1.0)``
  (the released KITINet code), i.e. the same numbers as ``paper`` there;
* ``threshold+mean`` / ``threshold+median`` / ``threshold+sqrt_d``: Eq. 7's
  threshold with a scale-aware ``ell`` (mean or median pairwise weight/position
  distance of the layer, or ``sqrt(D)``);
* ``quota+mean``: the new default, the ``ceil(c N / 2)`` pairs with the largest
  Eq. 7 ratio collide (``ell`` = mean distance);
* ``quota+mean/matching`` (kinetic blocks only): the default of
  :class:`kinetix.nn.KineticResidual` with ``rule="hard_sphere"``: quota rule on
  a greedy matching, each particle collides at most once.

For each rule, layer and ``coll_coef`` in ``0, 0.02, 0.05, 0.1, 0.2, ..., 0.9,
0.95, 1`` the script reports the fraction of candidate pairs that collide,
``pairs / (B N (N - 1) / 2)``, and the mean number of collisions per particle,
``2 pairs / (B N)`` (``B`` systems of ``N`` particles; ``B = 1`` for a KO
kernel). Only the acceptance masks are computed (no exchange), jitted once per
rule and shape with the coefficients as a traced array. For the threshold
rules it also gives the exact coefficients where the first pair and every pair
collide, ``1 - max r`` and ``1 - min r`` (over pairs with ``r > 0``).

Parts:

1. ``ko``: Flax ``lecun_normal`` kernels (in, out) = (512,10), (512,100),
   (2048,100), (2048,1000) with the gradient of the least-squares loss
   ``0.5 mean_b |x_b W - y_b|^2`` (64 Gaussian inputs, targets of a random
   teacher kernel); particles = output units (axis -1), axis 0 for ``released``.
   The (512,100) kernel is also measured with its weights scaled x0.1 and x10
   (same gradient): a scale-independence check.
2. ``resnet``: the classifier kernel of a plain ResNet-18 (``in_channels=1``)
   trained on the offline ``digits`` and ``mnist5k`` data (``--resnet-datasets``) with SGD (lr 0.05, momentum 0.9, batch
   128, no augmentation, no weight decay), measured at steps 0, 50, 100, 150 on
   the current weights and that step's gradient. ``train.classify``'s default
   width 64 takes ~2 s per step on 2 CPU cores, so the default here is
   ``--resnet-width 32`` (classifier (256, 10)).
3. ``text``: the classifier kernel (64, 2) of ``train.text``'s default
   ``TextEncoder`` (width 64, depth 2, 4 heads, MLP 128, max_len 32) at
   initialisation and its gradient on one batch of 64 synthetic sentences
   (train mode, dropout on).
4. ``kinetic``: the particles ``(x, v)`` that every ``KineticResidual`` sees
   (recorded by wrapping ``KineticResidual.__call__``) in training mode with
   ``rngs``: a kinetic ResNet-18 (width 64, stages 2-4, ``n_divide`` 8, 4, 2) at
   initialisation on 32 ``digits`` images, both at their native 8x8 (stage 2
   has 2 particles per image, stages 3-4 only 1: no pair) and resized to 32x32
   (the CIFAR geometry: 32, 16, 8 particles); a kinetic ``FNO1d`` (defaults:
   modes 16, width 64, ``n_divide`` 4) at initialisation on 16 Burgers initial
   conditions at 256 points (``train.pde --quick``'s resolution: 64 particles
   of dimension 256); and ``N(0, 1)`` features ``x, v`` of shape (2, 8, 8, 16)
   (spatial layout, ``n_divide`` 4: 16 particles of dimension 64), also scaled
   x10 and x0.1. Pairing ``"all"`` for every rule, plus ``matching`` for the
   quota rule.

Default coefficients in ``table.md``: 0.1 for KO layers, 0.5 for the ResNet
kinetic blocks and the ``N(0, 1)`` features, 0.9 for the FNO blocks.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import platform
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import kinetix
from benchmarks.ko_update import git_state
from kinetix import collision, dsmc
from kinetix.nn import kinetic as kinetic_mod

COEFS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
KO_SHAPES = ((512, 10), (512, 100), (2048, 100), (2048, 1000))
QUICK_KO_SHAPES = ((512, 10), (512, 100))
SCALE_SHAPE = (512, 100)
SCALES = (0.1, 10.0)
LOSS_BATCH = 64
FLOOR = 1e-4  # zero collisions per particle are drawn at this value on the log plot

# rule name -> (acceptance, length_scale, pairing) for kinetic blocks;
# KO kernels use (acceptance, length_scale, axis) from KO_RULES.
KO_RULES = {
    "paper": ("threshold", 1.0, -1),
    "released": ("threshold", 20.0, 0),
    "threshold+mean": ("threshold", "mean", -1),
    "threshold+median": ("threshold", "median", -1),
    "threshold+sqrt_d": ("threshold", "sqrt_d", -1),
    "quota+mean": ("quota", "mean", -1),
}
KINETIC_RULES = {
    "paper": ("threshold", 1.0, "all"),
    "released": ("threshold", 1.0, "all"),  # the released KITINet code: same as paper
    "threshold+mean": ("threshold", "mean", "all"),
    "threshold+median": ("threshold", "median", "all"),
    "threshold+sqrt_d": ("threshold", "sqrt_d", "all"),
    "quota+mean": ("quota", "mean", "all"),
    "quota+mean/matching": ("quota", "mean", "matching"),
}
ALL_RULES = tuple(KINETIC_RULES)


# ----------------------------------------------------------------------------- output


class Tee:
    """Writes to the terminal and to ``output.txt`` at once."""

    def __init__(self, path: Path):
        self.file = open(path, "w")  # noqa: SIM115 (closed in main)
        self.stdout = sys.stdout

    def write(self, s):
        self.stdout.write(s)
        self.file.write(s)

    def flush(self):
        self.stdout.flush()
        self.file.flush()

    def close(self):
        self.file.close()


class Timer:
    def __init__(self):
        self.t0 = time.perf_counter()
        self.parts: dict[str, float] = {}

    @contextmanager
    def part(self, name: str):
        t = time.perf_counter()
        print(f"\n===== part {name} =====", flush=True)
        yield
        dt = time.perf_counter() - t
        self.parts[name] = dt
        print(f"----- part {name}: {dt:.1f} s (total {time.perf_counter() - self.t0:.1f} s)")


# ----------------------------------------------------------------------------- counting


@functools.partial(jax.jit, static_argnames=("acceptance", "length_scale"))
def _ko_counts(wp, gp, cs, *, acceptance, length_scale):
    """Colliding pairs for each coefficient in ``cs``, and the extreme Eq. 7 ratios."""

    def one(c):
        acc = collision.acceptance_matrix(wp, gp, c, length_scale, acceptance)
        return jnp.sum(acc, dtype=jnp.int32)

    counts = jax.vmap(one)(cs)
    r = collision.acceptance_ratio(wp, gp, length_scale)
    n = r.shape[-1]
    upper = jnp.arange(n)[:, None] < jnp.arange(n)[None, :]
    r_max = jnp.max(jnp.where(upper, r, 0.0))
    r_min = jnp.min(jnp.where(upper & (r > 0), r, jnp.inf))
    r_zero = jnp.sum(upper & (r <= 0), dtype=jnp.int32)
    return counts, (r_max, r_min, r_zero)


@functools.partial(jax.jit, static_argnames=("acceptance", "length_scale", "pairing"))
def _kinetic_counts(x, v, cs, *, acceptance, length_scale, pairing):
    def one(c):
        acc = dsmc.acceptance(x, v, c, length_scale, pairing, acceptance)
        return jnp.sum(acc, dtype=jnp.int32)

    counts = jax.vmap(one)(cs)
    ratio_fn = functools.partial(collision.acceptance_ratio, length_scale=length_scale)
    r = jax.vmap(ratio_fn)(x, v)
    n = r.shape[-1]
    upper = (jnp.arange(n)[:, None] < jnp.arange(n)[None, :])[None]
    r_max = jnp.max(jnp.where(upper, r, 0.0))
    r_min = jnp.min(jnp.where(upper & (r > 0), r, jnp.inf))
    r_zero = jnp.sum(upper & (r <= 0), dtype=jnp.int32)
    return counts, (r_max, r_min, r_zero)


def _curve(counts, systems: int, n: int, extremes, acceptance: str, coefs) -> dict:
    r_max, r_min, r_zero = extremes
    pairs = [int(p) for p in np.asarray(counts)]
    cand = systems * n * (n - 1) // 2
    frac = [p / cand for p in pairs]
    per_particle = [2 * p / (systems * n) for p in pairs]
    c_any = next((c for c, p in zip(coefs, pairs, strict=True) if p > 0), None)
    c_all = next((c for c, p in zip(coefs, pairs, strict=True) if p == cand), None)
    out = {
        "pairs": pairs,
        "candidates": cand,
        "pair_fraction": frac,
        "collisions_per_particle": per_particle,
        "c_first_any_grid": c_any,
        "c_first_all_grid": c_all,
        "monotone": all(b >= a for a, b in zip(pairs, pairs[1:], strict=False)),
    }
    if acceptance == "threshold":
        r_max, r_min = float(r_max), float(r_min)
        # Pairs collide for c > 1 - r: the first pair just above 1 - max r, all just above
        # 1 - min r (over pairs with r > 0; a pair whose float32 r underflows to 0 never does).
        out["r_max"] = r_max
        out["r_min_positive"] = r_min if math.isfinite(r_min) else None
        out["pairs_with_r_zero"] = int(r_zero)
        out["c_any_exact"] = 1.0 - r_max if r_max > 0 else None
        out["c_all_exact"] = 1.0 - r_min if math.isfinite(r_min) and r_zero == 0 else None
    return out


def ko_layer(name: str, w, g, coefs, *, default_coef=0.1, extra=None) -> dict:
    """Every KO rule on one kernel ``w`` with gradient ``g``."""
    cs = jnp.asarray(coefs, jnp.float32)
    layer = {
        "name": name,
        "group": "ko",
        "kernel_shape": list(w.shape),
        "default_coef": default_coef,
    }
    layer.update(extra or {})
    rules = {}
    t = time.perf_counter()
    for rule, (acceptance, ell, axis) in KO_RULES.items():
        wp, gp = collision.as_particles(w, axis), collision.as_particles(g, axis)
        n, d = wp.shape
        counts, extremes = _ko_counts(wp, gp, cs, acceptance=acceptance, length_scale=ell)
        rules[rule] = {
            "acceptance": acceptance,
            "length_scale": ell,
            "axis": axis,
            "particles": n,
            "dim": d,
            **_curve(counts, 1, n, extremes, acceptance, coefs),
        }
    layer["rules"] = rules
    _print_layer(layer, coefs, time.perf_counter() - t)
    return layer


def kinetic_layer(name: str, xp, vp, coefs, *, default_coef, extra=None) -> dict:
    """Every kinetic rule on particles ``(B, n, d)``."""
    cs = jnp.asarray(coefs, jnp.float32)
    b, n, d = xp.shape
    layer = {
        "name": name,
        "group": "kinetic",
        "systems": b,
        "particles": n,
        "dim": d,
        "default_coef": default_coef,
    }
    layer.update(extra or {})
    t = time.perf_counter()
    if n < 2:
        layer["rules"] = None
        layer["note"] = f"{n} particle per system: no candidate pair"
        print(f"{name}: B={b} n={n} d={d}: no candidate pair (n < 2)", flush=True)
        return layer
    rules = {}
    cache = {}
    for rule, (acceptance, ell, pairing) in KINETIC_RULES.items():
        key = (acceptance, ell, pairing)
        if key not in cache:
            cache[key] = _kinetic_counts(
                xp, vp, cs, acceptance=acceptance, length_scale=ell, pairing=pairing
            )
        counts, extremes = cache[key]
        rules[rule] = {
            "acceptance": acceptance,
            "length_scale": ell,
            "pairing": pairing,
            "particles": n,
            "dim": d,
            **_curve(counts, b, n, extremes, acceptance, coefs),
        }
    layer["rules"] = rules
    _print_layer(layer, coefs, time.perf_counter() - t)
    return layer


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 0.01:
        return f"{x:.3g}"
    return f"{x:.1e}"


def _fmt_c(r: float | None) -> str:
    """The exact threshold coefficient ``1 - r``; written ``1-r`` when ``r`` is small."""
    if r is None or r <= 0:
        return "never"
    if r < 0.01:
        return f"1-{r:.1e}"
    return _fmt(1.0 - r)


def _print_layer(layer: dict, coefs, seconds: float) -> None:
    shape = layer.get("kernel_shape")
    desc = (
        f"kernel {tuple(shape)}"
        if shape
        else (f"B={layer['systems']} n={layer['particles']} d={layer['dim']}")
    )
    print(f"\n{layer['name']}  [{desc}]  ({seconds:.1f} s)", flush=True)
    print("  collisions per particle at c = " + " ".join(f"{c:g}" for c in coefs))
    for rule, r in layer["rules"].items():
        nd = f"N={r['particles']}x{r['dim']}"
        cells = " ".join(_fmt(x) for x in r["collisions_per_particle"])
        exact = ""
        if "c_any_exact" in r:
            r_all = r["r_min_positive"] if r["pairs_with_r_zero"] == 0 else None
            exact = f"  | first pair c > {_fmt_c(r['r_max'])}, all pairs c > {_fmt_c(r_all)}"
            if r["pairs_with_r_zero"]:
                exact += f" ({r['pairs_with_r_zero']} pairs have r = 0 in float32: never)"
        print(f"  {rule:<20s} {nd:<12s} {cells}{exact}")


# ----------------------------------------------------------------------------- part 1: KO kernels


def ko_inputs(shape, seed: int):
    """A Flax-Dense kernel and its least-squares gradient (as benchmarks/ko_update.py --grads loss)."""
    kw, kx, kt = jax.random.split(jax.random.key(seed), 3)
    init = jax.nn.initializers.lecun_normal()
    w = init(kw, shape, jnp.float32)
    x = jax.random.normal(kx, (LOSS_BATCH, shape[0]), jnp.float32)
    y = x @ init(kt, shape, jnp.float32)
    g = jax.grad(lambda w_: 0.5 * jnp.mean(jnp.sum((x @ w_ - y) ** 2, axis=-1)))(w)
    return w, g


def part_ko(args, coefs) -> list[dict]:
    layers = []
    shapes = QUICK_KO_SHAPES if args.quick else KO_SHAPES
    for i, shape in enumerate(shapes):
        w, g = ko_inputs(shape, args.seed + i)
        layers.append(ko_layer(f"KO kernel {shape[0]}x{shape[1]}", w, g, coefs))
        if shape == SCALE_SHAPE:
            for s in SCALES:
                layers.append(
                    ko_layer(
                        f"KO kernel {shape[0]}x{shape[1]} w x{s:g}",
                        w * s,
                        g,
                        coefs,
                        extra={"weight_scale": s, "base": f"KO kernel {shape[0]}x{shape[1]}"},
                    )
                )
    return layers


# ----------------------------------------------------------------------------- part 2: ResNet-18


def part_resnet(args, coefs) -> tuple[list[dict], dict]:
    layers, logs = [], {}
    for dataset in args.resnet_datasets:
        ds_layers, logs[dataset] = _train_resnet(args, coefs, dataset)
        layers += ds_layers
    return layers, logs


def _train_resnet(args, coefs, dataset: str) -> tuple[list[dict], dict]:
    from kinetix.data import images
    from kinetix.nn.resnet import resnet18

    data = images.load_images(dataset)
    width = args.resnet_width
    steps = args.resnet_steps
    measure = sorted({0, steps // 3, 2 * steps // 3, steps})
    model = resnet18(10, in_channels=1, width=width, rngs=nnx.Rngs(args.seed))
    opt = nnx.Optimizer(model, optax.sgd(0.05, momentum=0.9), wrt=nnx.Param)

    def loss_fn(m, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

    @nnx.jit
    def step(m, o, x, y):
        loss, grads = nnx.value_and_grad(loss_fn)(m, x, y)
        o.update(m, grads)
        return loss, grads["classifier"]["kernel"][...]

    n = len(data.train_labels)
    batch = 128
    per_epoch = n // batch
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(n)
    layers, log = [], {"width": width, "steps": steps, "measured_at": measure, "loss": {}}
    t0 = time.perf_counter()
    for s in range(steps + 1):
        if s % per_epoch == 0 and s > 0:
            perm = rng.permutation(n)
        idx = perm[(s % per_epoch) * batch : (s % per_epoch + 1) * batch]
        x = images.normalize(data.train_images[idx], data.mean, data.std)
        y = jnp.asarray(data.train_labels[idx])
        w = model.classifier.kernel[...]
        loss, g = step(model, opt, x, y)
        if s in measure:
            loss = float(loss)
            log["loss"][s] = loss
            print(
                f"ResNet-18 (width {width}) on {dataset} step {s}: train loss {loss:.4f} "
                f"({time.perf_counter() - t0:.1f} s of training so far)",
                flush=True,
            )
            layers.append(
                ko_layer(
                    f"ResNet-18 classifier ({dataset}) step {s}",
                    w,
                    g,
                    coefs,
                    extra={"step": s, "train_loss": loss, "width": width, "dataset": dataset},
                )
            )
    log["train_seconds"] = time.perf_counter() - t0
    return layers, log


# ----------------------------------------------------------------------------- part 3: Transformer head


def part_text(args, coefs) -> list[dict]:
    from kinetix.data import text as text_data
    from kinetix.nn.transformer import TextEncoder

    data = text_data.load_text(
        "synthetic",
        max_len=32,
        vocab_size=20000,
        seed=0,
        num_train=256 if args.quick else 2000,
        num_test=0,
    )
    width = 64
    model = TextEncoder(
        data.vocab_size,
        data.num_classes,
        dim=width,
        depth=2,
        heads=4,
        mlp_dim=2 * width,
        max_len=32,
        dropout=0.1,
        rngs=nnx.Rngs(args.seed),
    )
    tokens = jnp.asarray(data.train_tokens[:LOSS_BATCH])
    labels = jnp.asarray(data.train_labels[:LOSS_BATCH])

    def loss_fn(m):
        logits = m(tokens, tokens != text_data.PAD, rngs=nnx.Rngs(dropout=args.seed + 1))
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads = nnx.jit(nnx.grad(loss_fn))(model)
    w = model.classifier.kernel[...]
    g = grads["classifier"]["kernel"][...]
    return [
        ko_layer(
            f"Transformer head {w.shape[0]}x{w.shape[1]}",
            w,
            g,
            coefs,
            extra={"vocab_size": data.vocab_size},
        )
    ]


# ----------------------------------------------------------------------------- part 4: kinetic blocks


@contextmanager
def record_kinetic_calls(names: dict[int, str]):
    """Records ``(name, x, v, module)`` of every ``KineticResidual`` call (training, with rngs)."""
    calls = []
    original = kinetic_mod.KineticResidual.__call__

    def wrapped(self, x, v, *, rngs=None, deterministic=None):
        calls.append((names.get(id(self), "?"), x, v, self, rngs is not None))
        return original(self, x, v, rngs=rngs, deterministic=deterministic)

    kinetic_mod.KineticResidual.__call__ = wrapped
    try:
        yield calls
    finally:
        kinetic_mod.KineticResidual.__call__ = original


def _particles(x, v, module):
    """The particles a KineticResidual forms from ``(x, v)`` (``n_divide`` clamped like ResNet)."""
    nd = module.n_divide
    if module.layout == "spatial":
        nd = min(nd, math.prod(x.shape[1:-1]))
    xp = kinetic_mod.to_particles(x, module.layout, nd, module.particle_dim)
    vp = kinetic_mod.to_particles(v, module.layout, nd, module.particle_dim)
    return xp, vp, nd


def _measure_model(label, model, x, names, seed, coefs, extra) -> list[dict]:
    """One training-mode forward of ``model``; the rate curves of every kinetic block it calls.

    ``extra(features, n_divide)`` gives each layer's descriptive fields.
    """
    t = time.perf_counter()
    with record_kinetic_calls(names) as calls:
        model(x, rngs=nnx.Rngs(collision=seed + 1))
    print(f"\n{label}: {time.perf_counter() - t:.1f} s", flush=True)
    out = []
    for name, xs, vs, mod, _ in calls:
        xp, vp, nd = _particles(xs, vs, mod)
        out.append(
            kinetic_layer(name, xp, vp, coefs, default_coef=mod.coll_coef, extra=extra(xs, nd))
        )
    return out


def part_kinetic(args, coefs) -> list[dict]:
    from kinetix.data import images, pde
    from kinetix.nn.fno import FNO1d
    from kinetix.nn.resnet import resnet18

    layers = []
    data = images.load_images("digits")
    imgs = images.normalize(data.train_images[:32], data.mean, data.std)
    width = args.kinetic_width
    for size in (32,) if args.quick else (8, 32):
        x = imgs if size == 8 else jax.image.resize(imgs, (32, 32, 32, 1), "linear")
        model = resnet18(
            10, residual="kinetic", in_channels=1, width=width, rngs=nnx.Rngs(args.seed)
        )
        names = {}
        for stage in (2, 3, 4):
            for i, blk in enumerate(getattr(model, f"layer{stage}")):
                names[id(blk.kinetic)] = f"ResNet-18 {size}x{size} layer{stage}/{i}"
        layers += _measure_model(
            f"ResNet-18 kinetic (width {width}) forward on {size}x{size}",
            model,
            x,
            names,
            args.seed,
            coefs,
            lambda xs, nd, size=size: {
                "model": f"resnet18 {size}x{size}",
                "feature_shape": list(xs.shape),
                "n_divide": nd,
                "width": width,
            },
        )

    # FNO-1D on Burgers initial conditions
    u0, _ = pde.burgers(jax.random.key(args.seed), 16, args.fno_resolution, nu=0.1)
    model = FNO1d(residual="kinetic", rngs=nnx.Rngs(params=args.seed))
    names = {id(layer.kinetic): f"FNO-1D layer {i}" for i, layer in enumerate(model.layers)}
    layers += _measure_model(
        f"FNO-1D kinetic forward on 16 x {args.fno_resolution}",
        model,
        u0,
        names,
        args.seed,
        coefs,
        lambda xs, nd: {
            "model": "fno1d",
            "resolution": args.fno_resolution,
            "n_divide": model.layers[0].n_divide,
        },
    )

    # N(0, 1) features, spatial layout, n_divide 4
    kx, kv = jax.random.split(jax.random.key(args.seed + 7))
    fx = jax.random.normal(kx, (2, 8, 8, 16), jnp.float32)
    fv = jax.random.normal(kv, (2, 8, 8, 16), jnp.float32)
    for s in (1.0, 10.0, 0.1):
        xp = kinetic_mod.to_particles(fx * s, "spatial", 4, None)
        vp = kinetic_mod.to_particles(fv * s, "spatial", 4, None)
        layers.append(
            kinetic_layer(
                f"N(0,1) features x{s:g}",
                xp,
                vp,
                coefs,
                default_coef=0.5,
                extra={"model": "gaussian", "feature_scale": s, "feature_shape": [2, 8, 8, 16]},
            )
        )
    return layers


# ----------------------------------------------------------------------------- checks, table, plot


def scale_checks(layers: list[dict]) -> list[dict]:
    """Max |change| of collisions per particle between a scaled copy and its base, per rule."""
    by_name = {ly["name"]: ly for ly in layers}
    out = []
    groups = [
        ("KO kernel 512x100", [f"KO kernel 512x100 w x{s:g}" for s in SCALES]),
        ("N(0,1) features x1", ["N(0,1) features x10", "N(0,1) features x0.1"]),
    ]
    for base_name, scaled in groups:
        base = by_name.get(base_name)
        for name in scaled:
            other = by_name.get(name)
            if base is None or other is None:
                continue
            for rule, r in base["rules"].items():
                a = np.asarray(r["collisions_per_particle"])
                b = np.asarray(other["rules"][rule]["collisions_per_particle"])
                i = int(np.argmax(np.abs(b - a)))
                out.append(
                    {
                        "base": base_name,
                        "scaled": name,
                        "rule": rule,
                        "max_abs_change_collisions_per_particle": float(np.abs(b - a).max()),
                        "at_coef": COEFS[i],
                        "base_value": float(a[i]),
                        "scaled_value": float(b[i]),
                        "identical_pairs": r["pairs"] == other["rules"][rule]["pairs"],
                    }
                )
    return out


def _cell(ly: dict, rule: str) -> str:
    if ly["rules"] is None:
        return "no pair: 1 particle per system" if rule == ALL_RULES[0] else "-"
    r = ly["rules"].get(rule)
    if r is None:
        return "n/a"
    i = COEFS.index(ly["default_coef"])
    return f"{_fmt(r['pair_fraction'][i])} / {_fmt(r['collisions_per_particle'][i])}"


def _step_cell(ly: dict, rule: str) -> str:
    if ly["rules"] is None:
        return "-"
    r = ly["rules"].get(rule)
    if r is None:
        return "n/a"
    if "r_max" in r:  # threshold rule: the exact coefficients 1 - max r, 1 - min r
        r_all = r["r_min_positive"] if r["pairs_with_r_zero"] == 0 else None
        return f"{_fmt_c(r['r_max'])} → {_fmt_c(r_all)}"
    a, b = r["c_first_any_grid"], r["c_first_all_grid"]
    return f"{'never' if a is None else f'{a:g}'} → {'never' if b is None else f'{b:g}'}"


def _layer_label(ly: dict) -> str:
    """The layer's name and particles: ``N×D`` (KO: axis -1, then axis 0 for released)."""
    if ly["group"] == "ko":
        p, r = ly["rules"]["paper"], ly["rules"]["released"]
        return f"{ly['name']} ({p['particles']}×{p['dim']}; axis 0: {r['particles']}×{r['dim']})"
    return f"{ly['name']} ({ly['systems']} × {ly['particles']}×{ly['dim']})"


def markdown_tables(results: dict) -> str:
    layers = results["layers"]
    lines = [
        "# Collision rates per acceptance rule",
        "",
        f"Made by `{results['meta']['command']}` ({results['meta']['date']}, "
        f"{results['meta']['total_s']:.0f} s on {results['meta']['cpu_count']} CPU cores). "
        "Raw numbers for the whole `coll_coef` grid: `rates.json`; curves: `rate_curves.png`.",
        "",
        "## At the default coefficient",
        "",
        "Each cell: fraction of candidate pairs that collide / mean collisions per particle, "
        "at the layer's default `coll_coef`: 0.1 for KO layers (kernels, ResNet-18 classifier, "
        "Transformer head), 0.5 for ResNet-18 kinetic blocks and N(0,1) features, 0.9 for "
        "FNO-1D kinetic blocks. KO `released` uses axis 0 (input units) as particles; for "
        "kinetic blocks `released` is the KITINet code's threshold with ell = 1, i.e. the same "
        "as `paper`. `quota+mean/matching` is KineticResidual's default (kinetic blocks only).",
        "",
        "| layer | c | " + " | ".join(ALL_RULES) + " |",
        "|---|---|" + "---|" * len(ALL_RULES),
    ]
    for ly in layers:
        cells = [_cell(ly, rule) for rule in ALL_RULES]
        lines.append(f"| {_layer_label(ly)} | {ly['default_coef']:g} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## The step: where the first pair and where every pair collides",
        "",
        "`a → b`: no pair collides for `c <= a`, every candidate pair collides for `c > b`. "
        "Threshold rules: the exact values `a = 1 - max r`, `b = 1 - min r` (`1-x`: `1 - x` "
        "for a tiny `x`; `never`: some pair's float32 ratio `r` underflows to 0, so it never "
        "collides, not even at `c = 1`). Quota rules: the first grid coefficient (of "
        + ", ".join(f"{c:g}" for c in COEFS)
        + ") with a colliding pair, and with every pair colliding (`never` for N > 3: at "
        "most `ceil(N / 2)` pairs collide).",
        "",
        "| layer | " + " | ".join(ALL_RULES) + " |",
        "|---|" + "---|" * len(ALL_RULES),
    ]
    for ly in layers:
        if ly["rules"] is None:
            continue
        cells = [_step_cell(ly, rule) for rule in ALL_RULES]
        lines.append(f"| {ly['name']} | " + " | ".join(cells) + " |")
    if results["scale_checks"]:
        lines += [
            "",
            "## Scale check",
            "",
            "Largest change of collisions per particle over the grid when the weights "
            "(KO 512x100, same gradient) or the features (N(0,1), both x and v) are scaled.",
            "",
            "| base | scaled | " + " | ".join(ALL_RULES) + " |",
            "|---|---|" + "---|" * len(ALL_RULES),
        ]
        seen = []
        for chk in results["scale_checks"]:
            key = (chk["base"], chk["scaled"])
            if key not in seen:
                seen.append(key)
        for base, scaled in seen:
            cells = []
            for rule in ALL_RULES:
                m = [
                    c
                    for c in results["scale_checks"]
                    if (c["base"], c["scaled"], c["rule"]) == (base, scaled, rule)
                ]
                if not m:
                    cells.append("n/a")
                else:
                    c = m[0]
                    val = _fmt(c["max_abs_change_collisions_per_particle"])
                    cells.append(
                        "0 (same pairs)" if c["identical_pairs"] else f"{val} (c={c['at_coef']:g})"
                    )
            lines.append(f"| {base} | {scaled} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [ly for ly in results["layers"] if ly["rules"] is not None]
    fig, axes = plt.subplots(2, 4, figsize=(22, 10), sharex=True, sharey=True)
    axes = axes.ravel()
    colors = list(plt.get_cmap("tab20").colors) + list(plt.get_cmap("tab20b").colors)
    markers = "os^vD<>ph*Xd"
    styles = {}
    for i, ly in enumerate(layers):
        styles[ly["name"]] = dict(
            color=colors[i % len(colors)],
            marker=markers[i % len(markers)],
            ls="-" if ly["group"] == "ko" else "--",
        )
    for ax, rule in zip(axes, ALL_RULES, strict=False):
        for ly in layers:
            r = ly["rules"].get(rule)
            if r is None:
                continue
            y = np.maximum(np.asarray(r["collisions_per_particle"]), FLOOR)
            ax.plot(COEFS, y, ms=4, lw=1.2, label=ly["name"], **styles[ly["name"]])
        acc, ell = KO_RULES.get(rule, KINETIC_RULES[rule])[:2]
        sub = f"{acc}, ell={ell}"
        if rule == "released":
            sub = "KO: threshold, ell=20, axis 0; kinetic: threshold, ell=1"
        if rule == "quota+mean/matching":
            sub = "kinetic blocks only, each particle at most once"
        ax.set_title(f"{rule}\n({sub})", fontsize=10)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.axhline(FLOOR, color="k", lw=0.6)
    for ax in axes[4:7]:
        ax.set_xlabel("coll_coef")
    for ax in (axes[0], axes[4]):
        ax.set_ylabel(f"collisions per particle (2 pairs / N; 0 drawn at {FLOOR:g})")
    handles, labels = axes[0].get_legend_handles_labels()
    axes[7].axis("off")
    axes[7].legend(handles, labels, loc="center", fontsize=7, ncol=1, frameon=False)
    fig.suptitle(
        "Collision rate vs coll_coef per acceptance rule (solid: KO layers, dashed: kinetic blocks)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def summarize(results: dict) -> None:
    print("\n===== summary =====")
    ko = [ly for ly in results["layers"] if ly["group"] == "ko"]
    i = COEFS.index(0.1)
    for ly in ko:
        p = ly["rules"]["paper"]
        q = ly["rules"]["quota+mean"]
        print(
            f"{ly['name']:<38s} c=0.1: paper {p['pairs'][i]} pairs, released "
            f"{ly['rules']['released']['pairs'][i]}, quota+mean {q['pairs'][i]} "
            f"({_fmt(q['collisions_per_particle'][i])} per particle)"
        )
    nonmono = [
        (ly["name"], rule)
        for ly in results["layers"]
        if ly["rules"]
        for rule, r in ly["rules"].items()
        if not r["monotone"]
    ]
    print(f"non-monotone curves (pairs decreasing somewhere in c): {nonmono or 'none'}")
    for chk in results["scale_checks"]:
        head = f"scale {chk['scaled']:<26s} {chk['rule']:<20s}"
        if chk["identical_pairs"]:
            print(f"{head} same pair counts as {chk['base']} at every c")
            continue
        print(
            f"{head} max |Δ collisions/particle| "
            f"{_fmt(chk['max_abs_change_collisions_per_particle'])} at c={chk['at_coef']:g} "
            f"({_fmt(chk['base_value'])} -> {_fmt(chk['scaled_value'])})"
        )


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="KO kernels 512x10/512x100, width-8 ResNets (12 SGD steps, 32x32 kinetic only), "
        "FNO at 128 points (< 1 min)",
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="output folder (default results/collision_rates, or .../quick with --quick)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--resnet-width",
        type=int,
        default=None,
        help="width of the trained ResNet-18 (default 32; 8 with --quick)",
    )
    p.add_argument(
        "--resnet-datasets",
        nargs="+",
        choices=("digits", "mnist5k"),
        default=None,
        help="offline data sets the ResNet-18 is trained on (default digits and mnist5k; "
        "digits with --quick)",
    )
    p.add_argument(
        "--resnet-steps",
        type=int,
        default=None,
        help="SGD steps; measured at 0, 1/3, 2/3 and the end (default 150; 12 with --quick)",
    )
    p.add_argument(
        "--kinetic-width",
        type=int,
        default=None,
        help="width of the kinetic ResNet-18 (default 64; 8 with --quick)",
    )
    p.add_argument(
        "--fno-resolution",
        type=int,
        default=None,
        help="Burgers grid points (default 256, train.pde --quick's; 128 with --quick)",
    )
    args = p.parse_args(argv)
    if args.out_dir is None:
        args.out_dir = Path("results/collision_rates") / ("quick" if args.quick else "")
    if args.resnet_width is None:
        args.resnet_width = 8 if args.quick else 32
    if args.resnet_datasets is None:
        args.resnet_datasets = ["digits"] if args.quick else ["digits", "mnist5k"]
    if args.resnet_steps is None:
        args.resnet_steps = 12 if args.quick else 150
    if args.fno_resolution is None:
        args.fno_resolution = 128 if args.quick else 256
    if args.kinetic_width is None:
        args.kinetic_width = 8 if args.quick else 64
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    tee = Tee(args.out_dir / "output.txt")
    sys.stdout = tee
    try:
        timer = Timer()
        command = "python -m benchmarks.collision_rates " + " ".join(
            sys.argv[1:] if argv is None else argv
        )
        print(
            f"{command}\njax {jax.__version__}, backend {jax.default_backend()}, "
            f"{os.cpu_count()} CPU cores, git {git_state()}"
        )
        coefs = list(COEFS)
        layers = []
        with timer.part("1 KO kernels"):
            layers += part_ko(args, coefs)
        with timer.part("2 ResNet-18 classifier during training"):
            res_layers, resnet_log = part_resnet(args, coefs)
            layers += res_layers
        with timer.part("3 Transformer head"):
            layers += part_text(args, coefs)
        with timer.part("4 kinetic blocks"):
            layers += part_kinetic(args, coefs)
        results = {
            "meta": {
                "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                "command": command.strip(),
                "jax": jax.__version__,
                "kinetix": kinetix.__version__,
                "git": git_state(),
                "backend": jax.default_backend(),
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
                "quick": args.quick,
                "seed": args.seed,
                "coefs": coefs,
                "floor": FLOOR,
                "ko_rules": {k: list(v) for k, v in KO_RULES.items()},
                "kinetic_rules": {k: list(v) for k, v in KINETIC_RULES.items()},
                "resnet": resnet_log,
                "kinetic_resnet_width": args.kinetic_width,
                "fno_resolution": args.fno_resolution,
            },
            "layers": layers,
        }
        results["scale_checks"] = scale_checks(layers)
        summarize(results)
        results["meta"]["part_seconds"] = timer.parts
        results["meta"]["total_s"] = time.perf_counter() - timer.t0
        (args.out_dir / "rates.json").write_text(json.dumps(results, indent=1) + "\n")
        (args.out_dir / "table.md").write_text(markdown_tables(results))
        plot(results, args.out_dir / "rate_curves.png")
        print(
            f"\ntotal {results['meta']['total_s']:.1f} s; parts: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in timer.parts.items())
        )
        print(f"outputs in {args.out_dir}/: output.txt rates.json table.md rate_curves.png")
    finally:
        sys.stdout = tee.stdout
        tee.close()


if __name__ == "__main__":
    main()
