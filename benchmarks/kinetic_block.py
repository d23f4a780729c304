"""Benchmark: a KITINet kinetic residual vs the plain residual vs a dense implementation.

Run: ``python -m benchmarks.kinetic_block [--quick] [--out results/benchmarks/kinetic_block.json]``

For features ``(B, H, W, C)`` grouped into ``n`` particles of ``C * n_divide``
dimensions, it times one jitted training step of the block alone (forward and
backward of ``loss = sum(sin(block(x, v)))`` w.r.t. ``x`` and ``v``) for:

* ``plain``: ``x + v``;
* ``kinetic``: ``kinetix.nn.KineticResidual`` (pair list + chunked loop, custom VJP);
* ``dense``: the released code's formulation, materialising ``(B, d, n, n)``
  tensors (pairwise differences, centre-of-mass velocities, scattered relative
  velocities), differentiated by autodiff;

plus the eval-mode forward of the kinetic block against the plain residual.
Memory is XLA's own accounting of the compiled program (``memory_analysis``:
temporaries, arguments and outputs). Times are medians over ``--repeats``
calls; the machine may be shared, so compare the ratios printed in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kinetix.nn import KineticResidual
from kinetix.nn.kinetic import from_particles, to_particles


def dense_released(x, v, key, coll_coef, n_divide):
    """The released KINET_DSMC ("fyf") with dense (B, d, n, n) tensors, as in PyTorch."""
    shape = x.shape
    xp = to_particles(x, "spatial", n_divide, None).transpose(0, 2, 1)  # (B, d, n)
    vp = to_particles(v, "spatial", n_divide, None).transpose(0, 2, 1)
    b, d, n = xp.shape
    diff_x = xp[..., :, None] - xp[..., None, :]  # (B, d, n, n)
    diff_v = vp[..., :, None] - vp[..., None, :]
    x_r = jnp.sqrt(jnp.sum(diff_x**2, axis=1) + 1e-12)
    v_r = jnp.sqrt(jnp.sum(diff_v**2, axis=1) + 1e-12)
    v_cm = (vp[..., :, None] + vp[..., None, :]) / 2
    x_cm = (xp[..., :, None] + xp[..., None, :]) / 2
    v_max = jnp.max(v_r, axis=(1, 2), keepdims=True)
    mask = jax.lax.stop_gradient(v_r / v_max * jnp.exp(-x_r) > 1 - coll_coef)
    mask = mask & ~jnp.eye(n, dtype=bool)
    z = jax.random.normal(key, (b, d, n, n))
    upper = jnp.triu(jnp.ones((n, n), bool), 1)
    z = jnp.where(upper, z, 0.0)
    z = z - jnp.swapaxes(z, -1, -2)
    r = z / jnp.maximum(jnp.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    leaving = v_r[:, None] * r
    delta_v = v_cm + leaving - vp[..., :, None]
    m = mask[:, None].astype(x.dtype)
    v_new = vp + jnp.sum(delta_v * m, axis=2)
    deg = jnp.sum(m, axis=2)
    x_mix = (xp + jnp.sum(x_cm * m, axis=2)) / (1 + deg)
    out = (x_mix + v_new).transpose(0, 2, 1)
    return from_particles(out, shape, "spatial", n_divide, None)


def _time(fn, args, repeats):
    out = fn(*args)
    jax.block_until_ready(out)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _memory_mb(jitted, args):
    mem = jitted.lower(*args).compile().memory_analysis()
    if mem is None:
        return None
    return (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes) / 2**20


def run(batch, hw, channels, n_divide, coll_coef, rule, repeats, x_scale):
    key = jax.random.key(0)
    kx, kv, kc = jax.random.split(key, 3)
    shape = (batch, hw, hw, channels)
    x = jax.random.normal(kx, shape) * x_scale
    v = jax.random.normal(kv, shape)
    block = KineticResidual(layout="spatial", n_divide=n_divide, coll_coef=coll_coef, rule=rule)
    graphdef, state = nnx.split(block)

    def kinetic_loss(x, v, k):
        blk = nnx.merge(
            graphdef, jax.tree.map(jnp.asarray, state)
        )  # fresh variables inside the trace
        return jnp.sum(jnp.sin(blk(x, v, rngs=nnx.Rngs(collision=k))))

    def plain_loss(x, v, k):
        del k
        return jnp.sum(jnp.sin(x + v))

    def dense_loss(x, v, k):
        return jnp.sum(jnp.sin(dense_released(x, v, k, coll_coef, n_divide)))

    results = {}
    args = (x, v, kc)
    for name, loss in (("plain", plain_loss), ("kinetic", kinetic_loss), ("dense", dense_loss)):
        step = jax.jit(jax.grad(loss, argnums=(0, 1)))
        t0 = time.perf_counter()
        compiled_mb = _memory_mb(step, args)
        compile_s = time.perf_counter() - t0
        results[name] = {
            "step_s": _time(step, args, repeats),
            "memory_mb": compiled_mb,
            "compile_s": compile_s,
        }

    # collision rate of the kinetic block on these inputs
    blk = nnx.merge(graphdef, state)
    blk(x, v, rngs=nnx.Rngs(collision=kc))
    results["collision_rate"] = float(blk.collision_rate[...])
    eval_blk = KineticResidual(layout="spatial", n_divide=n_divide, coll_coef=coll_coef, rule=rule)
    eval_blk.eval()
    eval_fn = jax.jit(lambda x, v: eval_blk(x, v))
    plain_fn = jax.jit(lambda x, v: x + v)
    results["eval_kinetic_s"] = _time(eval_fn, (x, v), repeats)
    results["eval_plain_s"] = _time(plain_fn, (x, v), repeats)
    results["eval_bitwise_equal"] = bool(jnp.array_equal(eval_fn(x, v), plain_fn(x, v)))
    n = hw * hw // n_divide
    results["config"] = {
        "features": list(shape),
        "n_divide": n_divide,
        "particles": n,
        "particle_dim": channels * n_divide,
        "coll_coef": coll_coef,
        "rule": rule,
        "x_scale": x_scale,
    }
    return results


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (median)")
    p.add_argument(
        "--out",
        default="results/benchmarks/kinetic_block.json",
        help="JSON file for the raw numbers",
    )
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.quick:
        configs = [dict(batch=8, hw=16, channels=16, n_divide=8)]
    else:
        # The released CIFAR ResNet-18 stage 2: 16x16x128 features, n_divide 8 -> 32 particles x 1024.
        configs = [
            dict(batch=32, hw=16, channels=128, n_divide=8),
            dict(batch=128, hw=16, channels=128, n_divide=8),
        ]
    rows = []
    for cfg in configs:
        for rule, coll_coef, x_scale in (
            ("released", 0.5, 1.0),
            ("released", 0.5, 0.01),
            ("hard_sphere", 0.5, 0.01),
            ("hard_sphere", 0.5, 1.0),  # the default (quota rule): acts at unit scale
        ):
            r = run(**cfg, coll_coef=coll_coef, rule=rule, repeats=args.repeats, x_scale=x_scale)
            rows.append(r)
            c = r["config"]
            print(
                f"B={c['features'][0]} {c['particles']}x{c['particle_dim']} {rule:11s} x_scale={x_scale:<5} "
                f"plain {r['plain']['step_s'] * 1e3:8.1f} ms  kinetic {r['kinetic']['step_s'] * 1e3:8.1f} ms "
                f"dense {r['dense']['step_s'] * 1e3:8.1f} ms | mem MB plain {r['plain']['memory_mb']:.0f} "
                f"kinetic {r['kinetic']['memory_mb']:.0f} dense {r['dense']['memory_mb']:.0f} | "
                f"rate {r['collision_rate']:.3f} | eval {r['eval_kinetic_s'] / r['eval_plain_s']:.2f}x plain, "
                f"bitwise={r['eval_bitwise_equal']}",
                flush=True,
            )
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(
            {"jax": jax.__version__, "devices": str(jax.devices()), "rows": rows}, f, indent=1
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
