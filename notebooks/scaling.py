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
# # Scaling out: one training on every device, with sharded `jit`, with `pmap`, and in several processes
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/kinetix-dev/kinetix/blob/main/notebooks/scaling.ipynb)
#
# kinetix's training scripts (`python -m train.classify`, `train.text`, `train.pde`) are
# data-parallel: every device holds a copy of the parameters and the optimizer state (KO's key
# included) and gets a slice of each batch. This notebook trains one small classifier with
# `optax.chain(kinetix.ko_hard(), optax.adamw(...))` from the same seed
#
# 1. on one device,
# 2. on all devices with **sharded `jit`** (the batch split over a device `Mesh`, everything else
#    replicated; `--parallel jit`, the default of the scripts),
# 3. on all devices with **`jax.pmap`** (`--parallel pmap`),
#
# checks that the three runs compute the same thing, shows the same sharded step in bare JAX, and
# finally runs `train.classify` as **two processes** (the way a multi-host GPU cluster or TPU
# pod runs it) and compares it with one process.
#
# **Devices.** On a machine without an accelerator (a laptop, CI, a CPU Colab runtime) the set-up
# cell asks XLA for 8 CPU devices (`--xla_force_host_platform_device_count=8`), so everything
# below really runs on 8 devices, though they share the same CPU cores (no speed-up to expect).
# On a Colab TPU runtime all its TPU cores are used; on a one-GPU runtime there is a single
# device, so the comparisons hold trivially (the multi-process part runs CPU processes anyway).
# On a 2-core CPU the notebook takes 1-2 minutes, most of it in the multi-process part.

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

# No accelerator (or JAX_PLATFORMS=cpu): 8 CPU devices. XLA reads this flag once, when JAX
# starts its CPU backend, so it must be set before `import jax` (restart the kernel after
# changing it). Flags already in XLA_FLAGS are kept.
HAS_ACCELERATOR = os.environ.get("JAX_PLATFORMS") != "cpu" and (
    bool(shutil.which("nvidia-smi")) or os.path.exists("/dev/accel0")
)
if not HAS_ACCELERATOR and "xla_force_host_platform_device_count" not in os.environ.get(
    "XLA_FLAGS", ""
):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()

import jax

print("JAX", jax.__version__, "| backend:", jax.default_backend(), "| devices:", jax.devices())

SMOKE = os.environ.get("KINETIX_SMOKE") == "1"  # set by the tests: tiny sizes, runs in seconds
SCALE = 1  # the one knob for real runs: 4 = a 4x longer run (and, where noted, larger model)

# %% [markdown]
# ## Data and model
# scikit-learn's handwritten digits (offline, 1437 training and 360 test 8x8 images, from
# `kinetix.data.images.load_images`) and a 64-HIDDEN-10 tanh network whose last layer is named
# `classifier`, as in every model of the training scripts. The global batch (128 images) is the
# same in every run; with `n` devices each one gets `128 / n` of them.

# %%
import time

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx

import kinetix
from kinetix.data import images
from train import loop

# GPUs and TPUs may multiply float32 matrices in lower precision by default; full float32
# here, so that the runs below differ only by the order of their sums
jax.config.update("jax_default_matmul_precision", "highest")
NDEV = jax.device_count()
print(f"scaling over {NDEV} devices ({jax.devices()[0].platform})")

data = images.load_images("digits")
HIDDEN = 64 * SCALE  # hidden units (SCALE also lengthens the run)
STEPS = 22 if SMOKE else 110 * SCALE  # optimizer steps (11 per epoch)
BATCH = -(-128 // NDEV) * NDEV  # 128, rounded up to a multiple of the device count
STEPS_PER_EPOCH = len(data.train_labels) // BATCH
print(f"train {data.train_images.shape} | batch {BATCH} | {STEPS} steps | hidden {HIDDEN}")


def batch_indices(step: int) -> np.ndarray:
    """The examples of global batch ``step``: a new order every epoch, as ``train.classify``."""
    epoch, i = divmod(step, STEPS_PER_EPOCH)
    order = images.epoch_permutation(len(data.train_labels), seed=0, epoch=epoch)
    return order[i * BATCH : (i + 1) * BATCH]


class MLP(nnx.Module):
    """``classifier(tanh(hidden(x)))`` on flattened 8x8 images."""

    def __init__(self, hidden: int, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, hidden, rngs=rngs)
        self.classifier = nnx.Linear(hidden, 10, rngs=rngs)

    def __call__(self, x, *, rngs=None):
        return self.classifier(jnp.tanh(self.hidden(x)))


def apply(model, batch_images, key, train):
    """The loop's model call: uint8 images in, logits out (no augmentation, so ``key`` is unused)."""
    x = images.normalize(batch_images, data.mean, data.std)
    return model(x.reshape(x.shape[0], -1))


def make_model():
    return MLP(HIDDEN, rngs=nnx.Rngs(params=0))  # the same initial weights for every run


def make_optimizer(ko_key: int = 1):
    # KO's collisions draw from their own key, kept in the optimizer state
    return optax.chain(kinetix.ko_hard(key=ko_key), optax.adamw(3e-3, weight_decay=1e-4))


# %% [markdown]
# ## One training function for 1 device, sharded `jit` and `pmap`
# `train.loop` is the machinery of the training scripts, usable on its own:
#
# * `loop.make_mesh(n)`: a 1-D device mesh with axis `"data"` over the first `n` devices;
# * `loop.build_program(model, tx, apply, mesh=..., parallel="jit" | "pmap")`: the compiled
#   training step. With `"jit"` it is one `jax.jit` with `in_shardings` = (state replicated,
#   batch sharded on `"data"`): XLA splits the work and inserts the gradient all-reduce itself,
#   and the program computes the *same function of the global batch* as on one device. With
#   `"pmap"` the step runs once per device on its slice, averaging gradients with `pmean`;
#   per-example randomness (augmentation, dropout, kinetic blocks) then folds in the device
#   index, so only runs without it (like this one) can match the `jit` run draw for draw. KO's
#   collisions use the optimizer state's key, the same on every device, in both modes;
# * `loop.init_state` (step-0 state, replicated on the mesh), `loop.replicate` (a leading device
#   axis for `pmap`), `loop.to_global` (a host batch as a sharded array, or reshaped to
#   `(devices, batch / devices, ...)` for `pmap`), `loop.check_replicas` (every device holds the
#   same bytes of the state).
#
# `train.classify --devices N --parallel jit|pmap` runs exactly this loop (with checkpoints, logs
# and evaluation around it).


# %%
def train(num_devices: int, parallel: str, ko_key: int = 1):
    """Trains ``STEPS`` steps; returns the final state (one copy), the per-step losses and seconds."""
    mesh = loop.make_mesh(num_devices)
    prog, params, rest = loop.build_program(
        make_model(), make_optimizer(ko_key), apply, mesh=mesh, parallel=parallel
    )
    state = loop.init_state(prog, params, rest, seed=0)
    if parallel == "pmap":
        state = loop.replicate(prog, state)
    sums = []
    t0 = time.perf_counter()
    for step in range(STEPS):
        idx = batch_indices(step)  # the same examples at every step of every run
        x = loop.to_global(prog, data.train_images[idx])
        y = loop.to_global(prog, data.train_labels[idx])
        state, batch_sums = prog.train_step(state, x, y)
        sums.append(batch_sums)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - t0  # includes compiling the step
    leaves = loop.check_replicas(state)  # raises if two devices hold different values
    print(f"{parallel} on {num_devices} device(s): {leaves} state leaves identical on every device")
    sums = np.stack([np.asarray(s) for s in sums])
    if parallel == "pmap":
        state, sums = loop.unreplicate(state), sums[:, 0]  # every replica holds the same values
    k = len(prog.task.names)  # sums: [loss sum, correct, examples, steps, collision rates]
    losses = sums[:, 0] / sums[:, k]
    return state, losses, seconds


runs = {
    "1 device": train(1, "jit"),
    f"sharded jit, {NDEV} devices": train(NDEV, "jit"),
    f"pmap, {NDEV} devices": train(NDEV, "pmap"),
}
for name, (_, losses, seconds) in runs.items():
    print(f"{name:22s} final loss {losses[-1]:.6f}  ({seconds:.1f} s with compilation)")

# %% [markdown]
# ## Do they agree?
# The three runs start from the same parameters, see the same batches and draw the same
# collisions, so they differ only by float32 rounding (a sum over 8 partial sums is rounded
# differently from one sum over the whole batch): about `1e-7` relative per step. We compare the
# final parameters and the per-step losses with the 1-device run, against a bound of `1e-4`.
# What a real difference looks like: the same 1-device run with another KO key (other collision
# directions, everything else equal). A wrong batch split or a missing gradient average would
# be larger still. (In ReLU networks with BatchNorm, rounding can flip a unit, after which runs
# drift apart slowly; `tests/test_train_classify.py` therefore compares those step by step.)

# %%
TOL = 1e-4
reference = runs["1 device"]


def max_param_diff(a, b):
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))  # on the host: different meshes
        for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True)
    )


for name, (state, losses, _) in list(runs.items())[1:]:
    kind = name.split(",")[0]
    dp = max_param_diff(state, reference[0])
    dl = float(np.max(np.abs(losses - reference[1])))
    print(f"{kind} vs 1 device: max |param diff| {dp:.2e}, max |loss diff| {dl:.2e}")
    print(f"{kind} agrees with 1 device within {TOL:g}: {dp < TOL and dl < TOL}")
other_key = train(1, "jit", ko_key=2)
print(
    f"another KO key vs 1 device: max |param diff| {max_param_diff(other_key[0], reference[0]):.2e}"
)
ko_state = runs[f"sharded jit, {NDEV} devices"][0].opt_state
for path, rate in kinetix.collision_rates(ko_state).items():
    print(f"KO collision rate {path}: {rate:.4f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
steps = np.arange(1, STEPS + 1)
curves = {**runs, "1 device, another KO key": other_key}
styles = ["-", "--", ":", "-."]
for i, (name, (_, losses, _)) in enumerate(curves.items()):
    if name != "1 device, another KO key":
        axes[0].plot(steps, losses, styles[i], color=f"C{i}", lw=2, label=name)
    if name != "1 device":
        diff = np.maximum(np.abs(losses - reference[1]), 1e-10)  # log axis: 0 drawn at 1e-10
        axes[1].semilogy(steps, diff, styles[i], color=f"C{i}", label=name)
axes[0].set(title="training loss, same seed", xlabel="step", ylabel="cross-entropy")
axes[1].axhline(TOL, color="gray", lw=1, label=f"bound {TOL:g}")
axes[1].set(
    title="difference from the 1-device run (0 shown as 1e-10)",
    xlabel="step",
    ylabel="|loss difference|",
)
axes[0].legend()
axes[1].legend(loc="center right", fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The same in bare JAX
# What `build_program(..., parallel="jit")` does, in a few lines: put the batch on a
# `NamedSharding` that splits its first axis over the mesh axis `"data"`, keep parameters and
# optimizer state replicated (`PartitionSpec()`), and give `jax.jit` these shardings. The
# function itself is ordinary single-device code. Trained on the same batches from the same
# start, it ends where the 1-device run of `train.loop` ended.

# %%
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

# Auto axes: XLA propagates the shardings through the step (newer JAX defaults to Explicit
# axes, where every operation's output sharding is part of its type)
mesh = jax.make_mesh((NDEV,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
replicated, batch_sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
tx = make_optimizer()
graphdef, params = nnx.split(make_model(), nnx.Param)


def loss_fn(params, x, y):
    logits = apply(nnx.merge(graphdef, params), x, None, True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


sharded_step = jax.jit(
    step,
    in_shardings=(replicated, replicated, batch_sharded, batch_sharded),
    out_shardings=(replicated, replicated, replicated),
)
params, opt_state = jax.device_put((params, tx.init(params)), replicated)
for i in range(STEPS):
    x = jax.device_put(data.train_images[batch_indices(i)], batch_sharded)
    y = jax.device_put(data.train_labels[batch_indices(i)], batch_sharded)
    params, opt_state, loss = sharded_step(params, opt_state, x, y)
print("batch", x.shape, x.sharding.spec, "-> per device", x.addressable_shards[0].data.shape)
diff = max(
    float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reference[0].params), strict=True)
)
print(f"bare JAX sharded jit vs train.loop on 1 device: max |param diff| {diff:.2e}")

# %% [markdown]
# ## Several processes
# On a cluster, one process runs per host, each driving that host's devices; together they form
# one mesh over all devices. The training scripts join such a run with three flags (or the
# variables `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`); each process loads
# the data, feeds its own slice of every global batch, and only process 0 writes the reports.
# Checkpoints (`--ckpt-dir`) must be on storage every host sees. `--parallel pmap` is single
# process only.
#
# ```
# # on host 0 (whose address is the coordinator's):
# python -m train.classify --out runs/mp --coordinator host0:8476 --num-processes 2 --process-id 0
# # on host 1:
# python -m train.classify --out runs/mp --coordinator host0:8476 --num-processes 2 --process-id 1
# ```
#
# Process 0 must accept connections on the coordinator's port and on the next one (kinetix
# checks that every process has arrived before JAX's runtime starts). `--dist-timeout` (default
# 300 s) bounds the wait for the other processes at start-up and at every barrier; a missing or
# dead process ends the run with a clear error instead of a hang.
#
# **TPU pods and SLURM.** There JAX finds the coordinator, the number of processes and each
# process's id by itself (`jax.distributed.initialize()` with no arguments): start the same
# command on every host with `KINETIX_DISTRIBUTED=1`, e.g.
# `gcloud compute tpus tpu-vm ssh NAME --worker=all --command="KINETIX_DISTRIBUTED=1 python -m
# train.classify ..."` on a pod slice, or `srun` under SLURM.
#
# Below, two local CPU processes of 4 devices each run the real thing (JAX's coordination
# service, gloo collectives between the processes) for one epoch of `train.classify` (ResNet-18
# of width 4, KO hard + AdamW), next to one process of 8 devices. Both use the CPU whatever this
# runtime has, and the same 8-device mesh, so they should end with the same state.

# %%
import json
import socket
import tempfile

# a fixed, short demo (5 steps) in every mode; SCALE does not change it
ARGS = ["--model", "resnet18", "--width", "4", "--epochs", "1", "--batch-size", "256",
        "--optimizer", "adamw", "--ko", "hard", "--no-progress"]  # fmt: skip
work = tempfile.mkdtemp(prefix="kinetix-scaling-")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(name: str, devices: int, extra: list[str], log: str) -> subprocess.Popen:
    """Starts ``python -m train.classify`` on ``devices`` CPU devices; output to ``log``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env |= {
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
    }
    out = os.path.join(work, name)
    cmd = [sys.executable, "-m", "train.classify", *ARGS, "--out", out, "--ckpt-dir", f"{out}/ckpt"]
    print(f"XLA_FLAGS={env['XLA_FLAGS']}", " ".join(["python", *cmd[1:], *extra]))
    with open(os.path.join(work, log), "w") as f:
        return subprocess.Popen([*cmd, *extra], env=env, stdout=f, stderr=subprocess.STDOUT)


t0 = time.perf_counter()
coordinator = f"127.0.0.1:{free_port()}"
logs = ["process0.log", "process1.log", "one_process.log"]
procs = [
    launch("two_processes", 4, ["--coordinator", coordinator, "--num-processes", "2",
                                "--process-id", str(i), "--dist-timeout", "120"], logs[i])
    for i in range(2)
] + [launch("one_process", 8, [], logs[2])]  # fmt: skip
for p, log in zip(procs, logs, strict=True):
    p.wait(timeout=600)
    with open(os.path.join(work, log)) as f:
        text = f.read()
    if p.returncode != 0:
        raise RuntimeError(f"{log}: exit code {p.returncode}\n{text[-3000:]}")
    if log == "process0.log":
        report = "\n".join(line for line in text.splitlines() if not line.startswith("[Gloo]"))
print(f"3 processes finished in {time.perf_counter() - t0:.1f} s; process 0 of 2 printed:")
print(report)

# %%
summaries = {}
for name in ("two_processes", "one_process"):
    with open(os.path.join(work, name, "summary.json")) as f:
        summaries[name] = json.load(f)
    s = summaries[name]
    print(
        f"{name}: processes {s['processes']}, devices {s['devices']}, steps {s['steps']}, "
        f"train loss {s['train_loss']:.6f}, replicas checked {s['replicas_checked']}"
    )
_, two = loop.read_checkpoint(os.path.join(work, "two_processes", "ckpt"))
_, one = loop.read_checkpoint(os.path.join(work, "one_process", "ckpt"))
mp_diff = max(
    float(np.max(np.abs(a - b)))
    for a, b in zip(jax.tree.leaves(two["params"]), jax.tree.leaves(one["params"]), strict=True)
)
print(f"2 processes vs 1 process: max |param diff| {mp_diff:.2e}")
print(f"2 processes agree with 1 process within {TOL:g}: {mp_diff < TOL}")
shutil.rmtree(work)
