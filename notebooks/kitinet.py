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
# # KITINet: residual connections as particle collisions
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/kinetix-dev/kinetix/blob/main/notebooks/kitinet.ipynb)
#
# KITINet reads a residual connection `x + f(x)` as one time step of particles: `x` are their
# positions, the branch output `f(x)` their velocities. `kinetix.nn.KineticResidual` adds one
# Direct Simulation Monte Carlo (DSMC) collision step before the drift: pairs of particles
# exchange momentum, then every particle moves. This notebook
#
# 1. runs one kinetic residual on random features and inside a small residual block,
# 2. trains a plain and a kinetic Fourier neural operator (`FNO1d(residual="kinetic")`) on the 1-D
#    Burgers equation (the data of `python -m train.pde`, generated here by
#    `kinetix.data.pde.load_or_generate` and cached),
# 3. prints the collision rates and plots a prediction.

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
# ## One kinetic residual
# In the `"spatial"` layout, features `(batch, points, channels)` are cut into particles of
# `n_divide` neighbouring points (so here 32 particles of 4 x 8 dimensions per sample). With
# `coll_coef=0.9`, 90 % of the particles collide (once each). In eval mode, or without `rngs`, it is
# exactly `x + v`. Collisions conserve each sample's total momentum, so the sum of the new
# positions equals that of `x + v`.

# %%
import jax.numpy as jnp
import matplotlib.pyplot as plt
import optax
from flax import nnx

import kinetix
from kinetix.data import pde
from kinetix.nn import FNO1d, KineticResidual

x = jax.random.normal(jax.random.key(0), (2, 128, 8))
v = jax.random.normal(jax.random.key(1), (2, 128, 8))
res = KineticResidual(layout="spatial", n_divide=4, coll_coef=0.9)
y = res(x, v, rngs=nnx.Rngs(collision=2))
print(f"KineticResidual collision rate: {float(res.collision_rate[...]):.4f}")
print(
    "total momentum conserved:",
    bool(jnp.allclose(y.sum(axis=(1, 2)), (x + v).sum(axis=(1, 2)), atol=1e-3)),
)
res.eval()
print("eval mode equals x + v:", bool(jnp.array_equal(res(x, v), x + v)))


# %% [markdown]
# ## A kinetic residual block
# Any residual block becomes kinetic by replacing its `x + branch(x)` with the module. The rngs
# stream `collision` supplies the keys; `kinetix.nn.collision_rates(model)` reads every block's
# last rate.


# %%
class KineticBlock(nnx.Module):
    """``x + conv(relu(conv(x)))`` with the sum replaced by a DSMC collision step."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(channels, channels, kernel_size=(3,), rngs=rngs)
        self.conv2 = nnx.Conv(channels, channels, kernel_size=(3,), rngs=rngs)
        self.kinetic = KineticResidual(layout="spatial", n_divide=4, coll_coef=0.5)

    def __call__(self, x, *, rngs=None):
        return self.kinetic(x, self.conv2(jax.nn.relu(self.conv1(x))), rngs=rngs)


block = KineticBlock(8, rngs=nnx.Rngs(params=0))
print("block output", block(x, rngs=nnx.Rngs(collision=3)).shape, kinetix.nn.collision_rates(block))

# %% [markdown]
# ## Burgers data
# `u(x, 0) -> u(x, 1)` for `u_t + u u_x = 0.1 u_xx` on the periodic unit interval, initial fields
# from a Gaussian random field, solved pseudo-spectrally (ETDRK4). `train.pde` uses 1024 points and
# 1000 training pairs; the defaults here are smaller (raise `SCALE`).

# %%
RES = 64 if SMOKE else 256  # grid points
NTRAIN, NTEST = (32, 8) if SMOKE else (200 * SCALE, 50)
EPOCHS = 2 if SMOKE else 40 * SCALE
WIDTH, MODES, DEPTH = (8, 4, 1) if SMOKE else (32, 16, 4)
u0, ut = pde.load_or_generate("burgers", 0, NTRAIN + NTEST, resolution=RES)
u0_train, ut_train = jnp.asarray(u0[:NTRAIN]), jnp.asarray(ut[:NTRAIN])
u0_test, ut_test = jnp.asarray(u0[NTRAIN:]), jnp.asarray(ut[NTRAIN:])
print("train", u0_train.shape, "test", u0_test.shape)


# %% [markdown]
# ## Plain and kinetic FNO
# `FNO1d(residual="kinetic")` puts a kinetic residual in each Fourier layer (`W u + K u` becomes
# a collision step with `u` the positions and `K u` the velocities). Both models train with Adam
# on the relative L2 error, in minibatches of 16; collisions act only in training (`rngs` given).


# %%
def rel_l2(pred, target):
    return jnp.mean(jnp.linalg.norm(pred - target, axis=-1) / jnp.linalg.norm(target, axis=-1))


@nnx.jit
def train_step(model, optimizer, key, u, target):
    def loss_fn(model):
        return rel_l2(model(u, rngs=nnx.Rngs(collision=key)), target)  # a new key per step

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def fit(model, epochs, batch=16):
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    step = 0
    for epoch in range(epochs):
        perm = jax.random.permutation(jax.random.key(epoch), NTRAIN)
        for i in range(0, NTRAIN - batch + 1, batch):
            key = jax.random.fold_in(jax.random.key(1), step)
            loss = train_step(
                model, optimizer, key, u0_train[perm[i : i + batch]], ut_train[perm[i : i + batch]]
            )
            step += 1
    return float(loss)


models = {}
for residual in ("plain", "kinetic"):
    model = FNO1d(modes=MODES, width=WIDTH, depth=DEPTH, residual=residual, rngs=nnx.Rngs(params=0))
    loss = fit(model, EPOCHS)
    model.eval()
    models[residual] = model
    print(
        f"{residual} FNO  train loss {loss:.4f}  test rel. L2 {float(rel_l2(model(u0_test), ut_test)):.4f}"
    )

# %% [markdown]
# ## Collision rates
# Fraction of candidate particle pairs that collided in each kinetic Fourier layer at the last
# training step (with the default quota rule, about `0.9 / (N - 1)` for `N` particles).

# %%
for path, rate in kinetix.nn.collision_rates(models["kinetic"]).items():
    print(f"collision rate {path}: {rate:.4f}")

# %% [markdown]
# ## A test prediction

# %%
grid = jnp.arange(RES) / RES
fig, ax = plt.subplots(figsize=(8, 3.5))
ax.plot(grid, u0_test[0], ":", color="gray", label="u(x, 0)")
ax.plot(grid, ut_test[0], "k", lw=2, label="u(x, 1), solver")
for name, model in models.items():
    ax.plot(grid, model(u0_test[:1])[0], "--", label=f"{name} FNO")
ax.set(xlabel="x", ylabel="u", title="Burgers: a test sample, solver vs predictions")
ax.legend()
plt.show()
