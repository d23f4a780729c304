# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # KINN: Kirchhoff cells and the FNO-KINN operator
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/kinetix-dev/kinetix/blob/main/notebooks/kinn.ipynb)
#
# A Kirchhoff cell is a node of potential `v` (one per channel) where the capacitor current and
# the leak current balance the current `I(x)` that the input injects:
# `C dv/dt = -G v + I(x)`, with learnable `C, G > 0`. `kinetix.nn.KirchhoffCell` advances it by
# one exact zero-order-hold step, `v <- a v + (1 - a) I / G` with `a = exp(-G dt / C)`, which is
# stable for any positive `C`, `G`, `dt`. A `KirchhoffBlock` cascades `K` cells (a `K`-th order
# system) and `FNOKINN1d` replaces the Fourier layers of an FNO with such blocks, carrying the
# cascade state from layer to layer (depth plays the role of time). This notebook checks a cell
# against the analytic solution, then trains FNO and FNO-KINN on the 1-D Burgers equation.

# %%
# Set-up. On Colab this installs kinetix and the versions its CI tests (the "newest" stack of
# the README); anywhere else (your machine, CI) it uses the kinetix already installed.
# ruff: noqa: E402
import os
import shutil
import subprocess
import sys

IN_COLAB = "google.colab" in sys.modules
KINETIX_REF = "main"  # a tag or commit of the repository, to pin kinetix itself
if IN_COLAB:
    if shutil.which("nvidia-smi"):
        jax_spec = "jax[cuda12]"  # GPU runtime
    elif os.path.exists("/dev/accel0"):
        jax_spec = "jax[tpu]"  # TPU runtime
    else:
        jax_spec = "jax"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            f"kinetix[train] @ git+https://github.com/kinetix-dev/kinetix@{KINETIX_REF}",
            f"{jax_spec}==0.12.0.1",
            "flax==0.12.12",
            "optax==0.2.8",
            "orbax-checkpoint==0.12.8",
        ],
        check=True,
    )

import jax

print("JAX", jax.__version__, "| backend:", jax.default_backend(), "| devices:", jax.devices())

SMOKE = os.environ.get("KINETIX_SMOKE") == "1"  # set by the tests: tiny sizes, runs in seconds
SCALE = 1  # the one knob for real runs: 4 = a 4x longer run (and, where noted, larger model)

# %% [markdown]
# ## One cell, driven by a constant input
# From rest, with `I` held constant, `v_n = (I / G) (1 - a^n)`: the cell charges towards `I / G`
# with time constant `tau = C / G`. We compare the cell, called step after step, with that formula
# for three capacitances.

# %%
import jax.numpy as jnp
import matplotlib.pyplot as plt
import optax
from flax import nnx

from kinetix.data import pde
from kinetix.nn import FNO1d, FNOKINN1d, KirchhoffBlock, KirchhoffCell

x = jnp.ones((1, 3))
fig, ax = plt.subplots(figsize=(7, 3.2))
matches = []
for capacitance in (0.5, 2.0, 8.0):
    cell = KirchhoffCell(3, 2, capacitance=capacitance, conductance=1.0, rngs=nnx.Rngs(0))
    current = cell.current(x)
    a = jnp.exp(-cell.conductance[0] * 1.0 / cell.capacitance[0])  # dt = 1
    v, trajectory = None, []
    for _ in range(20):
        v = cell(x, v)
        trajectory.append(v[0, 0])
    n = jnp.arange(1, 21)
    exact = current[0, 0] / cell.conductance[0] * (1 - a**n)
    matches.append(bool(jnp.allclose(jnp.stack(trajectory), exact, rtol=1e-4, atol=1e-6)))
    ax.plot(n, trajectory, "o", ms=3, label=f"cell, C = {capacitance}")
    ax.plot(n, exact, "k-", lw=0.8)
ax.set(xlabel="step n", ylabel="v_n (channel 0)", title="KirchhoffCell (dots) vs exact (lines)")
ax.legend()
plt.show()
print("cell matches the exact solution:", all(matches))

# %% [markdown]
# ## A cascade block
# `KirchhoffBlock(order=K)` returns the combined output and the `K` intermediate states, which
# the caller passes back to carry the block's memory.

# %%
block = KirchhoffBlock(3, 4, order=3, rngs=nnx.Rngs(0))
y, states = block(x)
y, states = block(x, states)
print("output", y.shape, "| states", states.shape, "| time constants", block.time_constants.shape)

# %% [markdown]
# ## FNO and FNO-KINN on Burgers
# The data of `python -m train.pde` (`u(x, 0) -> u(x, 1)`, viscosity 0.1), smaller by default.

# %%
RES = 64 if SMOKE else 256  # grid points
NTRAIN, NTEST = (32, 8) if SMOKE else (200 * SCALE, 50)
EPOCHS = 2 if SMOKE else 40 * SCALE
WIDTH, MODES, DEPTH = (8, 4, 1) if SMOKE else (32, 16, 4)
u0, ut = pde.load_or_generate("burgers", 0, NTRAIN + NTEST, resolution=RES)
u0_train, ut_train = jnp.asarray(u0[:NTRAIN]), jnp.asarray(ut[:NTRAIN])
u0_test, ut_test = jnp.asarray(u0[NTRAIN:]), jnp.asarray(ut[NTRAIN:])


def rel_l2(pred, target):
    return jnp.mean(jnp.linalg.norm(pred - target, axis=-1) / jnp.linalg.norm(target, axis=-1))


@nnx.jit
def train_step(model, optimizer, u, target):
    loss, grads = nnx.value_and_grad(lambda m: rel_l2(m(u), target))(model)
    optimizer.update(model, grads)
    return loss


def fit(model, epochs, batch=16):
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    for epoch in range(epochs):
        perm = jax.random.permutation(jax.random.key(epoch), NTRAIN)
        for i in range(0, NTRAIN - batch + 1, batch):
            loss = train_step(
                model, optimizer, u0_train[perm[i : i + batch]], ut_train[perm[i : i + batch]]
            )
    return float(loss)


models = {
    "FNO": FNO1d(modes=MODES, width=WIDTH, depth=DEPTH, rngs=nnx.Rngs(params=0)),
    "FNO-KINN": FNOKINN1d(modes=MODES, width=WIDTH, depth=DEPTH, order=2, rngs=nnx.Rngs(params=0)),
}
for name, model in models.items():
    loss = fit(model, EPOCHS)
    n_params = sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    print(
        f"{name:8s} {n_params} parameters  train loss {loss:.4f}  test rel. L2 {float(rel_l2(model(u0_test), ut_test)):.4f}"
    )

# %% [markdown]
# ## Learned time constants and a test prediction
# `FNOKINN.time_constants()` is `(depth, order, width)`: `tau = C / G` of every cell after training
# (all 1 at initialisation).

# %%
tau = models["FNO-KINN"].time_constants()
print(
    "time constants: min",
    float(tau.min()),
    "median",
    float(jnp.median(tau)),
    "max",
    float(tau.max()),
)
grid = jnp.arange(RES) / RES
fig, ax = plt.subplots(figsize=(8, 3.5))
ax.plot(grid, ut_test[0], "k", lw=2, label="u(x, 1), solver")
for name, model in models.items():
    ax.plot(grid, model(u0_test[:1])[0], "--", label=name)
ax.set(xlabel="x", ylabel="u(x, 1)", title="Burgers: a test sample, solver vs predictions")
ax.legend()
plt.show()
