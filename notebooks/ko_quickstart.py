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
# # KO in five minutes: kinetic collisions as optax transforms
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/kinetix-dev/kinetix/blob/main/notebooks/ko_quickstart.ipynb)
#
# KO (Feng et al., 2025, arXiv:2505.14777) reads a layer's neurons as particles: weights are
# positions, gradients are velocities. Before the base optimizer steps, pairs of particles
# *collide*, which keeps neurons from condensing onto a few directions. Here a one-hidden-layer
# network learns scikit-learn's handwritten digits (offline, 1797 8x8 images) with AdamW and
# with `optax.chain(kinetix.ko_hard(), optax.adamw(...))`, and we compare how similar the
# hidden neurons become. It runs on a CPU in well under a minute.

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
# ## Data: scikit-learn's digits, shipped offline
# `kinetix.data.images.load_images` returns uint8 images and a stratified train/test split.

# %%
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import kinetix
from kinetix.data import images

data = images.load_images("digits")
x_train = jnp.asarray(
    images.normalize(data.train_images, data.mean, data.std).reshape(len(data.train_images), -1)
)
x_test = jnp.asarray(
    images.normalize(data.test_images, data.mean, data.std).reshape(len(data.test_images), -1)
)
y_train, y_test = jnp.asarray(data.train_labels), jnp.asarray(data.test_labels)
HIDDEN = 64 * SCALE  # hidden neurons: the particles that collide
STEPS = 15 if SMOKE else 300 * SCALE  # full-batch steps
print("train", x_train.shape, "test", x_test.shape, "| hidden", HIDDEN, "| steps", STEPS)


# %% [markdown]
# ## A small network with small initial weights
# A 64-HIDDEN-10 tanh network. Small initial weights (std 0.01) are the regime where plain
# optimizers *condense*: many hidden neurons turn to the same few directions (the paper's Fig. 2).


# %%
def init(key):
    k1, k2 = jax.random.split(key)
    return {
        "hidden": {"kernel": 0.01 * jax.random.normal(k1, (64, HIDDEN)), "bias": jnp.zeros(HIDDEN)},
        "classifier": {"kernel": 0.01 * jax.random.normal(k2, (HIDDEN, 10)), "bias": jnp.zeros(10)},
    }


def logits_fn(p, x):
    h = jnp.tanh(x @ p["hidden"]["kernel"] + p["hidden"]["bias"])
    return h @ p["classifier"]["kernel"] + p["classifier"]["bias"]


def loss_fn(p):
    return optax.softmax_cross_entropy_with_integer_labels(logits_fn(p, x_train), y_train).mean()


# %% [markdown]
# ## AdamW with and without collisions
# `ko_hard()` collides every weight matrix (here both kernels; biases pass through), with its
# defaults: `coll_coef=0.1` collisions per neuron per step, chosen among the pairs ranked by the
# paper's Eq. 7. It takes an explicit key. Each step also records the hidden layer's
# neuron similarity (mean |cos| between its neurons' input weights) and the collision rates.

# %%
optimizers = {
    "adamw": optax.adamw(3e-3),
    "ko_hard + adamw": optax.chain(kinetix.ko_hard(key=jax.random.key(1)), optax.adamw(3e-3)),
}


def train(name, tx):
    params = init(jax.random.key(0))
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        return params, state, loss, kinetix.metrics.neuron_similarity(params["hidden"]["kernel"])

    history = {"loss": [], "mean|cos|": [], "rates": []}
    for _ in range(STEPS):
        params, state, loss, sim = step(params, state)
        history["loss"].append(float(loss))
        history["mean|cos|"].append(float(sim.mean_abs_cos))
        if "ko" in name:
            history["rates"].append(kinetix.collision_rates(state))
    return params, state, history


results = {}
for name, tx in optimizers.items():
    results[name] = train(name, tx)
    params, state, history = results[name]
    accuracy = float(jnp.mean(jnp.argmax(logits_fn(params, x_test), axis=1) == y_test))
    print(
        f"{name:16s} loss {history['loss'][-1]:.3f}  test accuracy {accuracy:.3f}  "
        f"mean|cos| {history['mean|cos|'][-1]:.3f}"
    )

# %% [markdown]
# ## Collision rates
# `kinetix.collision_rates(opt_state)` finds the KO state inside the chain and returns each
# colliding leaf's fraction of colliding pairs at the last step. With the quota rule it is the
# same on every layer and at every step: `ceil(0.1 * N / 2)` pairs out of `N (N - 1) / 2`.

# %%
for path, rate in kinetix.collision_rates(results["ko_hard + adamw"][1]).items():
    print(f"collision rate {path}: {rate:.4f}")

# %% [markdown]
# ## Neuron similarity during training
# Mean |cos| between the hidden neurons' input-weight vectors, step by step (one seed; the
# repository's `python -m train.condensation` runs the paper's experiment with several seeds).

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for name, (_, _, history) in results.items():
    axes[0].plot(history["loss"], label=name)
    axes[1].plot(history["mean|cos|"], label=name)
axes[0].set(xlabel="step", ylabel="train loss", yscale="log", title="training loss")
axes[1].set(xlabel="step", ylabel="hidden neurons' mean |cos|", title="neuron similarity")
axes[0].legend()
axes[1].legend()
plt.show()

# %% [markdown]
# ## Heat-maps: without and with collisions
# Cosine similarity of every pair of hidden neurons, neurons ordered by their leading principal
# direction so that condensed groups show as blocks.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
for ax, (name, (params, _, _)) in zip(axes, results.items(), strict=True):
    w = params["hidden"]["kernel"]
    order = np.argsort(np.asarray(jnp.linalg.svd(w, full_matrices=False)[2][0]))
    im = ax.imshow(
        kinetix.metrics.cosine_matrix(w)[order][:, order], cmap="RdBu_r", vmin=-1, vmax=1
    )
    ax.set(title=f"{name}: cos(w_i, w_j)", xlabel="hidden neuron j", ylabel="hidden neuron i")
fig.colorbar(im, ax=axes, shrink=0.8, label="cosine similarity")
plt.show()
