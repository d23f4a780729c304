"""Why an 8-device run drifts from a 1-device run, measured (the 8-vs-1 test's root cause).

The set-up of ``tests/test_train_classify.py`` (ResNet-18 at width 4 on digits,
batch 256, SGD lr 0.01, KO soft), stepped by the training loop's own jitted
programs on a 1-device and an 8-device mesh::

    python -m benchmarks.device_divergence            # float32 and float64, ~2 minutes

It prints, per step, the largest parameter difference between the two
trajectories, in float32 (the training dtype) and in float64 (every parameter
and statistic cast up); the difference after one step from the *same* state;
the effect of perturbing that state by a relative ``eps`` (float64, 1 device);
and the smallest ``|pre-activation|`` of every ReLU in step 2.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


def _setup(x64: bool) -> None:
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if x64:
        os.environ["JAX_ENABLE_X64"] = "1"


def run(x64: bool, steps: int, lr: float, ko: str) -> None:
    _setup(x64)
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from kinetix.data import images as image_data
    from train import classify, loop, registry

    data = image_data.load_images("digits", data_dir=None, split_seed=0)
    tx = loop.make_optimizer("sgd", loop.make_schedule(lr, 5), weight_decay=5e-4, ko=ko,
                             coll_coef=0.5)  # fmt: skip
    apply = classify.make_apply(data.mean, data.std, 1, False)

    def cast(t):
        def up(x):
            return x.astype(jnp.float64) if x64 and jnp.issubdtype(x.dtype, jnp.floating) else x

        return jax.tree.map(up, t)

    def model():
        return loop.init_model(
            lambda: registry.build("resnet18", "image", 10, in_channels=1, width=4,
                                   rngs=loop.param_rngs(0))
        )  # fmt: skip

    progs, states = {}, {}
    for n in (8, 1):
        prog, params, rest = loop.build_program(model(), tx, apply, mesh=loop.make_mesh(n))
        progs[n], states[n] = prog, loop.init_state(prog, cast(params), cast(rest), 0)
    perm = image_data.epoch_permutation(len(data.train_labels), seed=0, epoch=0)

    def feed(n, s):
        idx = perm[s * 256 : (s + 1) * 256]
        prog = progs[n]
        return loop.to_global(prog, data.train_images[idx]), loop.to_global(
            prog, data.train_labels[idx]
        )

    def maxdiff(a, b):
        return max(
            float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        )

    def host(t):
        def one(x):
            if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
                data = np.array(jax.random.key_data(x))
                return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
            return np.array(x)

        return jax.tree.map(one, t)

    def on(n, t):
        return jax.device_put(host(t), NamedSharding(progs[n].mesh, P()))

    dtype = "float64" if x64 else "float32"
    print(f"\n== {dtype}: 8-device vs 1-device trajectories (lr {lr}, ko {ko})")
    history = {8: [], 1: []}
    for s in range(steps):
        for n in (8, 1):
            history[n].append(host(states[n]))
            states[n], _ = progs[n].train_step(states[n], *feed(n, s))
        print(f"  after step {s + 1}: params max|8-dev - 1-dev| = "
              f"{maxdiff(states[8].params, states[1].params):.3g}")  # fmt: skip
    # one step from the same state (the 8-device state after step 1), on 8 and on 1 device
    base = host(history[8][1])
    a, _ = progs[8].train_step(on(8, base), *feed(8, 1))
    b, _ = progs[1].train_step(on(1, base), *feed(1, 1))
    print(f"  step 2 from the same state, 8 vs 1 devices: params max|d| = "
          f"{maxdiff(a.params, b.params):.3g}")  # fmt: skip
    if x64:
        print("\n== float64, 1 device: step 2 from the step-1 state perturbed by a relative eps")
        s1 = host(history[1][1])
        ref, _ = progs[1].train_step(on(1, s1), *feed(1, 1))
        for eps in (1e-10, 1e-8, 3e-8, 1e-7, 1e-6):
            rng = np.random.default_rng(0)

            def shake(x, eps=eps, rng=rng):
                return x * (1 + eps * rng.standard_normal(x.shape))

            pert = s1._replace(params=jax.tree.map(shake, s1.params))
            out, _ = progs[1].train_step(on(1, pert), *feed(1, 1))
            print(f"  eps {eps:g}: params max|d| after the step = "
                  f"{maxdiff(out.params, ref.params):.3g}")  # fmt: skip
    # the smallest |pre-activation| of each ReLU in step 2 (1-device state)
    from flax import nnx

    s1 = history[1][1]
    real = jax.nn.relu
    seen = []

    def spy(z):
        seen.append(jnp.min(jnp.abs(z)))
        return real(z)

    jax.nn.relu = spy
    try:
        key = jax.random.fold_in(jax.random.wrap_key_data(jnp.asarray(s1.key)), 1)
        x, y = (jnp.asarray(np.asarray(v)) for v in feed(1, 1))

        @jax.jit
        def pre(params, rest):
            seen.clear()
            m = nnx.merge(progs[1].graphdef_train, params, rest, copy=True)
            apply(m, x, key, True)
            return list(seen)

        mins = [float(v) for v in pre(s1.params, s1.rest)]
    finally:
        jax.nn.relu = real
    print(f"  step 2, smallest |ReLU input| per ReLU (17 ReLUs): "
          f"{', '.join(f'{v:.1e}' for v in mins)}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.device_divergence", description=__doc__)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--ko", default="soft", choices=("none", "soft", "hard"))
    p.add_argument("--dtype", choices=("both", "float32", "float64"), default="both")
    a = p.parse_args(argv)
    if a.dtype == "both":  # x64 is a process-wide switch: one subprocess per dtype
        for dtype in ("float32", "float64"):
            args = ["--steps", str(a.steps), "--lr", str(a.lr), "--ko", a.ko, "--dtype", dtype]
            subprocess.run([sys.executable, "-m", "benchmarks.device_divergence", *args],
                           check=True)  # fmt: skip
        return
    run(a.dtype == "float64", a.steps, a.lr, a.ko)


if __name__ == "__main__":
    main()
