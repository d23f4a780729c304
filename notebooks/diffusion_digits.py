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
# # Convection-diffusion on a data graph: Diff-ResNet and COIN on digits
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/kinetix-dev/kinetix/blob/main/notebooks/diffusion_digits.ipynb)
#
# Diff-ResNet and COIN add graph diffusion `x <- x - gamma L x` (explicit Euler steps of the heat
# equation on a k-nearest-neighbour graph of the data) to a network: Diff-ResNet diffuses the
# hidden features, COIN the predicted class probabilities. With few labels, diffusion spreads the
# information of the labelled points to their neighbours. The setting is transductive: the graph
# holds all points, labelled or not. `kinetix.diffusion` builds the graph Laplacian and checks that
# the step is stable; `kinetix.nn.DiffusionLayer` is the layer. This notebook
#
# 1. builds the kNN graph of scikit-learn's digits (offline) and diffuses on it,
# 2. trains the same small residual network with no diffusion, Diff-ResNet and COIN from 5 labels
#    per class, and measures accuracy on all other points (the repository's
#    `python -m train.diffusion` runs this over 10 seeds).

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
# ## The graph and one diffusion
# With the unnormalised Laplacian `L = D - W`, diffusion conserves the sum of `x` and never
# increases the Dirichlet energy `tr(x^T L x)` (smoothness) for a stable step
# (`gamma <= kinetix.diffusion.max_stable_gamma(L)`).

# %%
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx

from kinetix import diffusion
from kinetix.data import images
from kinetix.nn import DiffusionLayer

N = 300 if SMOKE else 1797  # points of the graph (1797: all of digits)
EPOCHS = 30 if SMOKE else 200
SEEDS = 1 if SMOKE else 2 * SCALE
data = images.load_images("digits")
pixels = np.concatenate([data.train_images, data.test_images])[:N].reshape(N, -1)
x = jnp.asarray(images.normalize(pixels, data.mean, data.std))
y = jnp.asarray(np.concatenate([data.train_labels, data.test_labels])[:N])

lap = diffusion.graph_laplacian(x, normalization="unnormalized")
gamma = 0.9 * diffusion.max_stable_gamma(lap)
u = diffusion.diffuse(x, lap, gamma, steps=10)
print(f"{N} points, stable gamma {gamma:.4f}")
print("diffusion conserves the sum:", bool(jnp.allclose(u.sum(0), x.sum(0), atol=1e-2)))
energies = [
    float(diffusion.dirichlet_energy(diffusion.diffuse(x, lap, gamma, steps=s), lap))
    for s in range(6)
]
print("Dirichlet energy over steps:", [f"{e:.1f}" for e in energies])


# %% [markdown]
# ## A residual network with and without diffusion
# `h = x + relu(W x)`, then a linear classifier (the released code's `SimpleResNet`). The
# diffusion layers use the default symmetric Laplacian `I - D^-1/2 W D^-1/2` of the input graph,
# stored in the layer (its stability is checked once there), with the released scripts' digits
# settings: gamma 0.5, 6 steps (Diff-ResNet) and 10 steps (COIN).


# %%
class Net(nnx.Module):
    def __init__(self, method: str, laplacian, *, rngs: nnx.Rngs):
        self.method = method
        self.fc = nnx.Linear(64, 64, rngs=rngs)
        self.classifier = nnx.Linear(64, 10, rngs=rngs)
        steps = {"none": 0, "diffresnet": 6, "coin": 10}[method]
        self.diffusion = DiffusionLayer(gamma=0.5, steps=steps, laplacian=laplacian)

    def __call__(self, x):
        h = x + jax.nn.relu(self.fc(x))
        if self.method == "diffresnet":
            h = self.diffusion(h)  # diffuse the hidden features
        logits = self.classifier(h)
        if self.method == "coin":  # diffuse the probabilities
            return jnp.log(jnp.maximum(self.diffusion(jax.nn.softmax(logits)), 1e-12))
        return jax.nn.log_softmax(logits)


@nnx.jit
def train_step(model, optimizer, labelled):
    def loss_fn(model):
        logp = model(x)
        nll = -jnp.take_along_axis(logp, y[:, None], axis=1)[:, 0]
        return jnp.sum(labelled * nll) / jnp.sum(labelled)  # labelled points only

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def labelled_mask(seed, per_class=5):
    rng = np.random.default_rng(seed)
    picks = [
        rng.choice(np.flatnonzero(np.asarray(y) == c), per_class, replace=False) for c in range(10)
    ]
    return jnp.zeros(N).at[np.concatenate(picks)].set(1.0)


sym = diffusion.graph_laplacian(x)  # the default: symmetric normalisation
accuracy = {m: [] for m in ("none", "diffresnet", "coin")}
for seed in range(SEEDS):
    labelled = labelled_mask(seed)
    for method in accuracy:
        model = Net(method, sym, rngs=nnx.Rngs(seed))
        optimizer = nnx.Optimizer(model, optax.adamw(0.01, weight_decay=5e-4), wrt=nnx.Param)
        for _ in range(EPOCHS):
            train_step(model, optimizer, labelled)
        correct = jnp.argmax(model(x), axis=1) == y
        accuracy[method].append(float(jnp.sum(correct * (1 - labelled)) / jnp.sum(1 - labelled)))
for method, acc in accuracy.items():
    print(
        f"{method:10s} accuracy {np.mean(acc):.3f} ± {np.std(acc):.3f} (unlabelled points, {SEEDS} seeds)"
    )

# %% [markdown]
# ## Accuracy per method

# %%
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.bar(
    list(accuracy),
    [np.mean(a) for a in accuracy.values()],
    yerr=[np.std(a) for a in accuracy.values()],
)
ax.set(
    xlabel="method",
    ylabel="accuracy on unlabelled points",
    ylim=(0, 1),
    title="digits, 5 labels per class (mean ± std over seeds)",
)
plt.show()
