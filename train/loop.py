"""Shared machinery of ``train.classify`` and ``train.text``.

What lives here (one place, so both scripts behave the same):

* **Optimizers**: ``sgd`` (momentum 0.9, coupled L2 weight decay, as the KO
  paper's PyTorch runs), ``adamw`` and ``lamb`` (decoupled decay), a cosine
  learning-rate schedule over all steps, and KO (``--ko soft|hard``) chained in
  front of the base optimizer on the leaves matching ``--ko-mask``.
* **Data parallelism**: ``--parallel jit`` (default) runs one jitted step on a
  1-D device mesh ``("data",)``: the batch is sharded over the devices with a
  ``NamedSharding``, parameters, optimizer state (KO's included) and the step
  key are replicated. The jitted program computes the same global-batch
  function on 1 or many devices (BatchNorm statistics, augmentation and
  collisions see the global batch), so results match the single-device run
  within float tolerance. ``--parallel pmap`` runs the same step under
  ``jax.pmap``: gradients and metrics are averaged with ``pmean``, BatchNorm
  statistics are synchronised (``axis_name="data"``), and per-example
  randomness (augmentation, dropout, collisions) folds in the device index,
  so it differs from the ``jit`` run's draws (deterministic for a given device
  count). Multi-host: ``jax.distributed.initialize()`` is called when
  ``JAX_COORDINATOR_ADDRESS`` (or ``KINETIX_DISTRIBUTED=1``, for clusters JAX
  detects itself, e.g. TPU pods / SLURM) is set; every process then feeds its
  slice of each global batch.
* **Exact resume**: the data order is a function of ``(seed, epoch)`` only,
  the step key is ``fold_in(key, step)``, the schedule is a function of the
  step, and the checkpoint holds everything else (parameters, batch stats,
  optimizer state with KO's key and count, the running epoch sums). So ``N``
  steps straight through and ``N/2`` steps, a kill, a resume and ``N/2`` steps
  give bitwise-identical states.
* **Checkpoints** (orbax ``CheckpointManager``): every ``--ckpt-every`` steps
  and at the end, keeping the last ``--keep`` (ignored if there is no
  ``--ckpt-dir``). ``--resume`` restores the newest checkpoint that loads; a
  corrupt one is skipped with a warning (none loading, or no ``--ckpt-dir``
  at all, is refused with exit code 2). SIGTERM/SIGINT make the loop save at
  the current step and exit cleanly (exit code 0, ``status: "preempted"``).
* **Outputs** in ``--out``: ``metrics.jsonl`` (one line per epoch),
  ``summary.json``, ``curves.png`` and ``run.json`` (command, versions).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import queue
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import kinetix

# ----------------------------------------------------------------- distributed


class SetupError(ValueError):
    """The command's set-up cannot run as asked (the CLIs print it and exit with code 2)."""


_DIST_ADVICE = (
    "Start every process with the same --coordinator and --num-processes and a distinct "
    "--process-id in 0..N-1 (raise --dist-timeout for slow starts)."
)


class DistributedError(RuntimeError):
    """A multi-process run could not start or lost a peer (wrong address, missing process, timeout)."""


def initialize_distributed(cfg: dict[str, Any]) -> bool:
    """Joins a multi-process run (``jax.distributed.initialize``) when one is configured.

    The settings come from :func:`resolve_training_args`: ``--coordinator
    HOST:PORT --num-processes N --process-id I`` (or the environment variables
    ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``, read
    and passed explicitly), or ``KINETIX_DISTRIBUTED=1`` for clusters JAX
    detects by itself (TPU pods, SLURM, Open MPI). Must run before anything
    touches a JAX device. Joining waits at most ``--dist-timeout`` seconds for
    every process; then a :class:`DistributedError` says what to check. The
    same limit is JAX's heartbeat timeout: when a process dies mid-run, JAX's
    runtime stops the others (non-zero exit, "another task died") after at
    most that long instead of letting them wait in a collective forever.

    Returns:
      whether this process is part of a multi-process run.
    """
    coord, nproc, pid = cfg.get("coordinator"), cfg.get("num_processes"), cfg.get("process_id")
    auto = os.environ.get("KINETIX_DISTRIBUTED") == "1"
    if coord is None and not auto:
        return False
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    timeout = int(cfg.get("dist_timeout") or 300)
    where = (
        f"coordinator {coord}, process {pid} of {nproc}"
        if coord is not None
        else "KINETIX_DISTRIBUTED=1 (cluster auto-detection)"
    )
    if coord is not None:
        # JAX's runtime aborts the process (a C++ fatal error) when a peer is missing;
        # a rendezvous of our own first turns that into a clear, catchable error
        rendezvous(coord, nproc, pid, timeout)
    try:
        if coord is not None:
            jax.distributed.initialize(
                coordinator_address=coord,
                num_processes=nproc,
                process_id=pid,
                initialization_timeout=timeout,
                heartbeat_timeout_seconds=timeout,
            )
        else:
            jax.distributed.initialize(
                initialization_timeout=timeout, heartbeat_timeout_seconds=timeout
            )
    except Exception as e:  # noqa: BLE001 - every failure gets the same advice
        msg = str(e).strip().splitlines()[0][:400] if str(e).strip() else type(e).__name__
        raise DistributedError(
            f"could not join the multi-process run ({where}) within {timeout} s: {msg}. "
            "Process 0 must be reachable at the coordinator address, and every process must "
            f"join before any other JAX work. {_DIST_ADVICE}"
        ) from None
    return jax.process_count() > 1


def rendezvous(coordinator: str, num_processes: int, process_id: int, timeout_s: float) -> None:
    """Waits until all ``num_processes`` processes are up, or raises :class:`DistributedError`.

    Process 0 listens on the coordinator's port + 1 (TCP) and waits for every
    other process to say its id; the others retry connecting until
    ``timeout_s``. Missing, duplicate or inconsistent process ids are reported
    by number. A no-op for one process.
    """
    import socket

    if num_processes <= 1:
        return
    host, _, port_s = coordinator.rpartition(":")
    port = int(port_s) + 1
    deadline = time.monotonic() + timeout_s
    hello = f"kinetix {num_processes}"

    def fail(msg: str):
        raise DistributedError(f"{msg} {_DIST_ADVICE}")

    if process_id == 0:
        try:
            srv = socket.create_server(("", port), reuse_port=False)
        except OSError as e:
            fail(f"process 0 cannot listen on port {port} (the --coordinator port + 1): {e}.")
        peers: dict[int, socket.socket] = {}
        try:
            while len(peers) < num_processes - 1:
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = sorted(set(range(1, num_processes)) - set(peers))
                    fail(
                        f"process(es) {missing} of {num_processes} did not join within "
                        f"{timeout_s:g} s (coordinator {coordinator})."
                    )
                srv.settimeout(left)
                try:
                    conn, _ = srv.accept()
                except TimeoutError:
                    continue
                conn.settimeout(max(1.0, deadline - time.monotonic()))
                try:
                    words = conn.recv(64).decode().split()
                except OSError:
                    conn.close()
                    continue
                if len(words) != 3 or " ".join(words[:2]) != hello or not words[2].isdigit():
                    conn.sendall(f"error {' '.join(words[:2])} != {hello}".encode())
                    conn.close()
                    fail(f"a process joined with different settings ({' '.join(words)!r}).")
                pid = int(words[2])
                if pid in peers or not 0 < pid < num_processes:
                    conn.sendall(b"error duplicate")
                    conn.close()
                    fail(f"two processes joined as --process-id {pid}.")
                peers[pid] = conn
            for conn in peers.values():
                conn.sendall(b"ok")
        finally:
            for conn in peers.values():
                conn.close()
            srv.close()
        return
    last = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=deadline - time.monotonic()) as c:
                c.sendall(f"{hello} {process_id}".encode())
                c.settimeout(max(1.0, deadline - time.monotonic()))
                reply = c.recv(64).decode()
            if reply == "ok":
                return
            fail(f"process 0 refused process {process_id}: {reply}.")
        except OSError as e:  # not listening yet, or it went away: retry until the deadline
            last = e
            time.sleep(0.2)
    fail(
        f"process {process_id} could not reach process 0 at {host}:{port} within "
        f"{timeout_s:g} s ({last})."
    )


def barrier(name: str, timeout_s: float) -> None:
    """Waits until every process reaches barrier ``name``; a clear error after ``timeout_s``.

    A no-op in a single-process run. Uses the distributed runtime's barrier
    (JAX's coordination service), which takes a timeout.
    """
    if jax.process_count() == 1:
        return
    from jax._src import distributed as _dist

    client = getattr(_dist.global_state, "client", None)
    try:
        if client is not None and hasattr(client, "wait_at_barrier"):
            client.wait_at_barrier(name, int(timeout_s * 1000))
        else:  # an older/newer runtime without the client barrier: a collective instead
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)
    except Exception as e:  # noqa: BLE001
        raise DistributedError(
            f"process {jax.process_index()} waited more than {timeout_s:g} s at barrier "
            f"{name!r} for the other {jax.process_count() - 1} process(es) ({e}). One of them "
            "failed or is slower to start: check its output, or raise --dist-timeout."
        ) from None


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is true on any process (a collective: every process must call it)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray([flag], np.int32))))


def _key_data(x: jax.Array) -> jax.Array:
    """A typed PRNG key array as its ``uint32`` key data; any other array unchanged."""
    return jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x


def replica_fingerprint(tree: Any, *, all_shards: bool = True) -> np.ndarray:
    """One CRC32 per leaf of the data this process holds of a replicated ``tree``.

    Args:
      tree: replicated arrays (typed PRNG keys are read as their key data).
      all_shards: also check that every local device holds the same bytes
        (else only the first local copy is read).

    Raises:
      RuntimeError: when two local devices hold different values of a leaf
        that should be replicated (they must be bitwise identical).
    """
    import zlib

    out = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        leaf = _key_data(leaf)
        copies = leaf.addressable_shards if all_shards else leaf.addressable_shards[:1]
        shards = [np.asarray(sh.data) for sh in copies]
        for sh in shards[1:]:
            if sh.tobytes() != shards[0].tobytes():
                raise RuntimeError(
                    f"replicas diverged: the devices of process {jax.process_index()} hold "
                    f"different values of {jax.tree_util.keystr(path)}."
                )
        out.append(zlib.crc32(shards[0].tobytes()))
    return np.asarray(out, np.uint32)


def check_replicas(tree: Any) -> int:
    """Checks that every device of every process holds the same replicated ``tree``, bitwise.

    Returns:
      the number of leaves checked. Raises ``RuntimeError`` naming the first
      leaf that differs between processes (or between local devices).
    """
    mine = replica_fingerprint(tree)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        every = np.asarray(multihost_utils.process_allgather(mine.view(np.int32))).view(np.uint32)
        every = every.reshape(jax.process_count(), -1)
        bad = np.nonzero(np.any(every != every[0], axis=0))[0]
        if bad.size:
            paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]
            raise RuntimeError(
                f"replicas diverged across processes: {[paths[i] for i in bad[:5]]} differ."
            )
    return int(mine.size)


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D ``("data",)`` mesh over the first ``num_devices`` devices (all by default).

    In a multi-process run the mesh spans every device of every process (the
    global devices, in process order) and ``num_devices`` must be left out.
    """
    devices = jax.devices()
    if num_devices is not None and jax.process_count() > 1 and num_devices != len(devices):
        raise ValueError(
            f"--devices {num_devices}: a multi-process run uses every device of every "
            f"process ({len(devices)} here); leave --devices out."
        )
    if num_devices is not None:
        if not 1 <= num_devices <= len(devices):
            raise ValueError(
                f"--devices {num_devices}: this machine has {len(devices)} device(s); "
                f"pass a number between 1 and {len(devices)}."
            )
        devices = devices[:num_devices]
    # Auto axis: the step is written for compiler-chosen shardings (jit in/out shardings)
    return jax.make_mesh(
        (len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
    )


# ----------------------------------------------------------------- optimizer

OPTIMIZERS = ("sgd", "adamw", "lamb")
KO_KINDS = ("none", "soft", "hard", "hard-paper", "hard-released")


def make_schedule(lr: float, total_steps: int, warmup_steps: int = 0) -> optax.Schedule:
    """Cosine decay from ``lr`` to 0 over ``total_steps`` (after a linear warm-up)."""
    if warmup_steps > 0:
        return optax.warmup_cosine_decay_schedule(
            0.0, lr, warmup_steps, max(total_steps, warmup_steps + 1)
        )
    return optax.cosine_decay_schedule(lr, max(total_steps, 1))


def make_optimizer(
    name: str,
    schedule: optax.Schedule,
    *,
    weight_decay: float,
    momentum: float = 0.9,
    ko: str = "none",
    coll_coef: float = 0.1,
    ko_mask: str = r"classifier/kernel",
    ko_key: int = 0,
) -> optax.GradientTransformation:
    """The base optimizer, with KO (``ko_soft``/``ko_hard``) chained in front of it.

    KO acts on the gradients of the leaves whose path matches the regular
    expression ``ko_mask`` (:func:`kinetix.path_mask`), before weight decay and
    the base optimizer, as ``optax.chain(kinetix.ko_hard(...), optax.sgd(...))``.
    """
    if name == "sgd":
        base = optax.chain(
            optax.add_decayed_weights(weight_decay),
            optax.sgd(schedule, momentum=momentum or None),
        )
    elif name == "adamw":
        base = optax.adamw(schedule, weight_decay=weight_decay)
    elif name == "lamb":
        base = optax.lamb(schedule, weight_decay=weight_decay)
    else:
        raise ValueError(f"--optimizer must be one of {OPTIMIZERS}, got {name!r}.")
    if ko == "none":
        return base
    mask = kinetix.path_mask(ko_mask)
    if ko == "soft":
        collide = kinetix.ko_soft(coll_coef, key=ko_key, mask=mask)
    elif ko == "hard":  # kinetix's default: the quota rule (collides at every scale)
        collide = kinetix.ko_hard(coll_coef, key=ko_key, mask=mask)
    elif ko in ("hard-paper", "hard-released"):  # the papers' threshold rules, exactly
        collide = kinetix.ko_hard(coll_coef, key=ko_key, mask=mask, rule=ko.split("-")[1])
    else:
        raise ValueError(f"--ko must be one of {KO_KINDS}, got {ko!r}.")
    return optax.chain(collide, base)


def check_ko_mask(params: Any, ko: str, ko_mask: str) -> list[str]:
    """The leaf paths KO will act on; a clear error if the mask selects none."""
    if ko == "none":
        return []
    mask = kinetix.path_mask(ko_mask)(params)
    paths = kinetix.leaf_paths(params)
    chosen = [p for p, m in zip(jax.tree.leaves(paths), jax.tree.leaves(mask), strict=True) if m]
    if not chosen:
        raise ValueError(
            f"--ko-mask {ko_mask!r} matches no parameter; parameter paths are e.g. "
            f"{jax.tree.leaves(paths)[-4:]}."
        )
    return chosen


# ----------------------------------------------------------------- train state


class TrainState(NamedTuple):
    """Everything a resume needs, as one pytree (checkpointed as is).

    Attributes:
      step: number of optimizer steps taken.
      params: the model's ``nnx.Param`` state.
      rest: the model's other state (BatchNorm statistics, collision rates).
      opt_state: the optimizer state (with KO's key and count).
      key: raw ``uint32`` key data of the run's root key; step ``s`` uses
        ``fold_in(key, s)``.
      sums: running ``[*term sums, examples, steps, *rates]`` of the current
        epoch: one sum per :attr:`Task.names` (classification: loss,
        correct), then the per-step collision rates of the program's
        :attr:`Program.rate_names` (KO leaves, kinetic blocks).
    """

    step: jax.Array
    params: Any
    rest: Any
    opt_state: Any
    key: jax.Array
    sums: jax.Array


_PROGRAMS: dict[Any, Program] = {}

ApplyFn = Callable[[nnx.Module, Any, jax.Array, bool], jax.Array]


@dataclasses.dataclass(frozen=True)
class Task:
    """What a training script supplies to the shared loop: its model call and its metrics.

    The loop owns everything else (data order, keys, sharding, checkpoints,
    logging). Per-example ``terms`` are summed over each batch (in the
    optimizer step and in evaluation, padded rows weighted 0) and divided by
    the example count at the end of an epoch, so a metric is an example mean
    on 1 or many devices and processes.

    Attributes:
      apply: ``(model, inputs, key, train) -> outputs``; ``key`` is the step key
        (``None`` in evaluation), to split into augmentation/collision keys.
      terms: ``(outputs, targets) -> (batch, K)`` per-example ``float32`` terms;
        the loss minimised is the batch mean of column 0.
      names: the ``K`` metric names; rows log ``train_<name>``/``test_<name>``.
      best: ``(name, "max" | "min")``: the summary's ``best_test_<name>``.
      log_scale: names plotted on a log axis.
      epoch_metrics: ``model -> dict`` of extra scalars (or lists) logged each
        epoch and in the summary, from the eval-mode model on the host
        (classifier neuron similarity, channel condensation).
      curve_keys: keys of ``epoch_metrics`` plotted in one panel of ``curves.png``.
      curve_title: that panel's title.

    Example::

        task = loop.classification_task(apply, lambda m: m.classifier.kernel[...])
    """

    apply: ApplyFn
    terms: Callable[[jax.Array, jax.Array], jax.Array]
    names: tuple[str, ...]
    best: tuple[str, str]
    log_scale: tuple[str, ...] = ()
    epoch_metrics: Callable[[nnx.Module], dict[str, Any]] | None = None
    curve_keys: tuple[str, ...] = ()
    curve_title: str = ""


def _classification_terms(logits: jax.Array, labels: jax.Array) -> jax.Array:
    logits = logits.astype(jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return jnp.stack([losses, correct], axis=-1)


def classification_task(
    apply: ApplyFn, classifier_kernel: Callable[[nnx.Module], jax.Array] | None = None
) -> Task:
    """Cross-entropy and accuracy; with ``classifier_kernel`` also the classifier's
    neuron similarity (mean and max ``|cos|`` between its output neurons)."""

    def similarity(model: nnx.Module) -> dict[str, Any]:
        sim = kinetix.metrics.neuron_similarity(classifier_kernel(model), axis=-1)
        return {
            "neuron_similarity_mean": float(sim.mean_abs_cos),
            "neuron_similarity_max": float(sim.max_abs_cos),
        }

    return Task(
        apply=apply,
        terms=_classification_terms,
        names=("loss", "accuracy"),
        best=("accuracy", "max"),
        epoch_metrics=similarity if classifier_kernel is not None else None,
        curve_keys=("neuron_similarity_mean", "neuron_similarity_max")
        if classifier_kernel is not None
        else (),
        curve_title="classifier neuron similarity (|cos|)",
    )


@dataclasses.dataclass
class Program:
    """The compiled pieces of one training configuration."""

    graphdef_train: Any
    graphdef_eval: Any
    tx: optax.GradientTransformation
    task: Task
    mesh: Mesh
    parallel: str
    train_step: Callable
    eval_step: Callable
    rate_names: tuple[str, ...] = ()


# ------------------------------------------------------- collision diagnostics

_RATE_FIELD = "collision_rate"


def _path_name(path) -> str:
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
    if parts and parts[-1] == "value":  # an nnx.Variable's payload
        parts.pop()
    return "/".join(parts)


def rate_leaves(opt_state: Any, rest: Any) -> list[tuple[str, Any]]:
    """Every collision-rate leaf: ``("ko/<param path>", rate)`` and ``("kinetic/<block>", rate)``.

    KO's ``KOState.collision_rate`` (one rate per parameter leaf, found
    anywhere in a chained or masked state) and each
    :class:`kinetix.nn.KineticResidual`'s ``collision_rate`` variable.
    """
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
        name = _path_name(path)
        if f"{_RATE_FIELD}/" in name:
            out.append(("ko/" + name.split(f"{_RATE_FIELD}/", 1)[1], leaf))
    for path, leaf in jax.tree_util.tree_flatten_with_path(rest)[0]:
        name = _path_name(path)
        if f"/{_RATE_FIELD}" in name:
            out.append(("kinetic/" + name.split(f"/{_RATE_FIELD}", 1)[0], leaf))
    return out


def watched_rates(model: nnx.Module, params: Any, tx: optax.GradientTransformation) -> tuple:
    """The names of :func:`rate_leaves` that should collide: KO leaves that are
    collided (float, >= 2 dims, non-empty, selected by the mask) and kinetic
    blocks with ``coll_coef > 0``."""
    from kinetix.nn import KineticResidual

    opt_state = jax.eval_shape(tx.init, params)
    rest = nnx.split(model, nnx.Param, ...)[2]
    shapes = {_path_name(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    active_blocks = {
        "/".join(str(k) for k in path)
        for path, node in nnx.iter_graph(model)
        if isinstance(node, KineticResidual) and float(node.coll_coef) > 0
    }
    names = []
    for name, _ in rate_leaves(opt_state, rest):
        kind, where = name.split("/", 1)
        if kind == "ko":
            leaf = shapes.get(where)
            if leaf is not None and leaf.ndim >= 2 and leaf.size > 0:
                if jnp.issubdtype(leaf.dtype, jnp.floating):
                    names.append(name)
        elif where in active_blocks:
            names.append(name)
    return tuple(names)


def init_model(make: Callable[[], nnx.Module]) -> nnx.Module:
    """Builds ``make()`` with its initialisers in one compiled program.

    Eager NNX construction compiles every initialiser separately (tens of
    seconds for a ResNet on a small CPU). ``make`` must build its own
    ``nnx.Rngs``, e.g. :func:`param_rngs`.
    """
    abstract = nnx.eval_shape(make)
    graphdef, _ = nnx.split(abstract)
    state = jax.jit(lambda: nnx.split(make())[1])()
    return nnx.merge(graphdef, state)


def param_rngs(seed: int) -> nnx.Rngs:
    """The initialisation streams of the training scripts: ``rbg`` keys from ``seed``.

    The initialisers run once, on one device, before the state is replicated,
    so the result does not depend on the device count. The ``rbg`` PRNG
    (XLA's RngBitGenerator) compiles a ResNet's initialisers about 6x faster
    than ``threefry`` on CPU; the per-step keys (augmentation, collisions,
    dropout) stay ``threefry``, whose values do not depend on sharding.
    """
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def split_model(model: nnx.Module) -> tuple[Any, Any, Any, Any]:
    """``(graphdef_train, graphdef_eval, params, rest)`` of an NNX model."""
    model.train()
    graphdef_train, params, rest = nnx.split(model, nnx.Param, ...)
    model.eval()
    graphdef_eval, _, _ = nnx.split(model, nnx.Param, ...)
    model.train()
    return graphdef_train, graphdef_eval, params, rest


def _set_batchnorm_axis(model: nnx.Module, axis_name: str | None) -> None:
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.BatchNorm):
            node.axis_name = axis_name


def _loss(graphdef, task: Task, params, rest, inputs, targets, key) -> tuple[jax.Array, tuple]:
    model = nnx.merge(graphdef, params, rest, copy=True)
    terms = task.terms(task.apply(model, inputs, key, True), targets)
    new_rest = nnx.split(model, nnx.Param, ...)[2]
    return jnp.mean(terms[:, 0]), (jnp.sum(terms, axis=0), new_rest)


def program_key(cfg: dict[str, Any], keys: tuple[str, ...]) -> tuple:
    """A cache key for :func:`build_program` from the configuration entries that shape it."""
    extra = ("epochs", "devices", "parallel", "resume_keys")
    return tuple((k, repr(cfg.get(k))) for k in sorted(set(keys) | set(extra)))


def build_program(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    task: Task | ApplyFn,
    *,
    mesh: Mesh,
    parallel: str = "jit",
    cache_key: Any = None,
) -> tuple[Program, Any, Any]:
    """Jitted train/eval steps for ``model``; returns ``(program, params, rest)``.

    ``task`` says what the model computes and what to measure (a bare
    ``apply`` function means :func:`classification_task`). With a hashable
    ``cache_key`` (which must determine the model, the task, the optimizer and
    the mesh), a later call in the same process reuses the program and so its
    compiled code (seed sweeps, tests).
    """
    if not isinstance(task, Task):
        task = classification_task(task)
    if parallel not in ("jit", "pmap"):
        raise ValueError(f"--parallel must be 'jit' or 'pmap', got {parallel!r}.")
    if cache_key is not None and cache_key in _PROGRAMS:
        prog = _PROGRAMS[cache_key]
        if parallel == "pmap":
            _set_batchnorm_axis(model, "data")
        _, _, params, rest = split_model(model)
        _set_batchnorm_axis(model, None)
        return prog, params, rest
    if parallel == "pmap":
        _set_batchnorm_axis(model, "data")
    graphdef_train, graphdef_eval, params, rest = split_model(model)
    if parallel == "pmap":
        _set_batchnorm_axis(model, None)
        graphdef_eval = split_model(model)[1]
    rate_names = watched_rates(model, params, tx)

    def step_fn(state: TrainState, inputs, targets, axis: str | None):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
        if axis is not None:
            key = jax.random.fold_in(key, jax.lax.axis_index(axis))
        grad_fn = jax.value_and_grad(
            lambda p: _loss(graphdef_train, task, p, state.rest, inputs, targets, key),
            has_aux=True,
        )
        (_, (term_sums, new_rest)), grads = grad_fn(state.params)
        count = jnp.asarray(targets.shape[0], jnp.float32)
        if axis is not None:
            grads = jax.lax.pmean(grads, axis)
            new_rest = jax.tree.map(lambda x: jax.lax.pmean(x, axis), new_rest)
            term_sums, count = (jax.lax.psum(v, axis) for v in (term_sums, count))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        found = dict(rate_leaves(opt_state, new_rest))
        rates = [jnp.asarray(found[n], jnp.float32).reshape(()) for n in rate_names]
        one = jnp.ones((), jnp.float32)
        batch = jnp.concatenate([term_sums.astype(jnp.float32), jnp.stack([count, one, *rates])])
        new = TrainState(state.step + 1, params, new_rest, opt_state, state.key, state.sums + batch)
        return new, batch

    def eval_fn(params, rest, inputs, targets, weights):
        model = nnx.merge(graphdef_eval, params, rest, copy=True)
        terms = task.terms(task.apply(model, inputs, None, False), targets)
        # padded rows (weight 0) may give NaN terms (a relative error of zeros): drop, not multiply
        terms = jnp.where(weights[:, None] > 0, terms, 0.0)
        return jnp.concatenate([weights @ terms, jnp.sum(weights)[None]])

    repl = NamedSharding(mesh, P())
    data = NamedSharding(mesh, P("data"))
    if parallel == "jit":
        train_step = jax.jit(
            lambda s, x, y: step_fn(s, x, y, None),
            in_shardings=(repl, data, data),
            out_shardings=(repl, repl),
            donate_argnums=0,
        )
    else:
        train_step = jax.pmap(
            lambda s, x, y: step_fn(s, x, y, "data"),
            axis_name="data",
            devices=list(mesh.devices.flat),
            donate_argnums=0,
        )
    eval_step = jax.jit(eval_fn, in_shardings=(repl, repl, data, data, data), out_shardings=repl)
    prog = Program(
        graphdef_train, graphdef_eval, tx, task, mesh, parallel, train_step, eval_step, rate_names
    )
    if cache_key is not None:
        _PROGRAMS[cache_key] = prog
    return prog, params, rest


def init_state(prog: Program, params, rest, seed: int) -> TrainState:
    """The step-0 state, replicated over the program's mesh."""
    key = jax.random.key_data(jax.random.fold_in(jax.random.key(seed), 7))
    state = TrainState(
        step=jnp.asarray(0, jnp.int32),
        params=params,
        rest=rest,
        opt_state=prog.tx.init(params),
        key=key,
        sums=jnp.zeros((len(prog.task.names) + 2 + len(prog.rate_names),), jnp.float32),
    )
    return put_replicated(state, prog.mesh)


def put_replicated(tree: Any, mesh: Mesh) -> Any:
    """``tree`` (the same values on every process) replicated on every device of ``mesh``.

    ``jax.device_put`` only reaches this process's devices; with several
    processes each one supplies its local copies (``make_array_from_callback``).
    """
    sharding = NamedSharding(mesh, P())
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = put(jax.random.key_data(x))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        arr = np.asarray(x)
        return jax.make_array_from_callback(arr.shape, sharding, lambda idx: arr[idx])

    return jax.tree.map(put, tree)


def replicate(prog: Program, tree: Any) -> Any:
    """For ``--parallel pmap``: stack ``tree`` over the program's devices (leading axis)."""
    n = prog.mesh.devices.size
    sharding = NamedSharding(prog.mesh, P("data"))
    return jax.tree.map(lambda x: jax.device_put(jnp.stack([x] * n), sharding), tree)


def unreplicate(state: TrainState) -> TrainState:
    """For ``--parallel pmap``: the first replica, on its own device.

    Reads the first device's shard (``x.addressable_shards[0]``) instead of
    ``x[0]``, which runs a gather over all the pmap devices (it aborted XLA:CPU
    now and then under pytest-xdist with 8 fake devices).
    """
    return jax.tree.map(lambda x: x.addressable_shards[0].data[0], state)


# ----------------------------------------------------------------- data feeding


def _local_rows(batch_size: int) -> slice:
    """This process's rows of a global batch (all rows on one host)."""
    n = jax.process_count()
    per = batch_size // n
    i = jax.process_index()
    return slice(i * per, (i + 1) * per)


def to_global(prog: Program, arr: np.ndarray) -> jax.Array:
    """A host batch (this process's rows) as a global array sharded on ``data``."""
    if prog.parallel == "pmap":
        n = prog.mesh.devices.size
        return arr.reshape((n, arr.shape[0] // n) + arr.shape[1:])
    return jax.make_array_from_process_local_data(NamedSharding(prog.mesh, P("data")), arr)


class Prefetcher:
    """Prepares the next batches on a background thread; measures the time the loop waits.

    ``make(i)`` builds batch ``i`` (host gather + device transfer). ``wait_s``
    accumulates the time ``next()`` blocked, i.e. the loop waited for data.
    """

    def __init__(self, make: Callable[[int], Any], indices: range, depth: int = 2):
        self.wait_s = 0.0
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._n = len(indices)

        def work():
            for i in indices:
                if self._stop.is_set():
                    return
                try:
                    item = make(i)
                except BaseException as e:  # surfaced in the main thread
                    self._q.put(e)
                    return
                self._q.put(item)

        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[Any]:
        for _ in range(self._n):
            t = time.perf_counter()
            item = self._q.get()
            self.wait_s += time.perf_counter() - t
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        while not self._q.empty():
            self._q.get_nowait()


# ----------------------------------------------------------------- checkpoints


class Checkpoints:
    """Periodic orbax checkpoints with a corrupt-checkpoint fallback.

    Args:
      directory: where the checkpoints go (created).
      keep: how many of the newest checkpoints to keep.
      config: the run's configuration; saved as ``config.json`` and compared
        on resume (a different model/data/optimizer set-up is refused).
    """

    def __init__(
        self,
        directory: str,
        keep: int,
        config: dict[str, Any],
        *,
        fresh: bool = False,
        overwrite: bool = False,
    ):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = os.path.abspath(directory)
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise SetupError(f"--ckpt-dir {self.directory} is a file; pass a directory.")
        try:
            os.makedirs(self.directory, exist_ok=True)
            probe = os.path.join(self.directory, f".write-test-{os.getpid()}")
            with open(probe, "w") as f:
                f.write("ok")
            os.remove(probe)
        except OSError as e:
            raise SetupError(
                f"--ckpt-dir {self.directory} is not writable ({e.strerror}); choose another."
            ) from None
        if fresh:
            self._claim(overwrite)
        opts = ocp.CheckpointManagerOptions(
            max_to_keep=max(1, keep), create=True, enable_async_checkpointing=False
        )
        self._options = opts
        self.manager = ocp.CheckpointManager(self.directory, options=opts)
        self.config = config
        self.unreadable: list[int] = []
        self._saved: set[int] = set()

    def _claim(self, overwrite: bool) -> None:
        """A fresh run needs an empty directory: refuse, or move what is there aside."""
        entries = sorted(e for e in os.listdir(self.directory) if not e.startswith(".write-test-"))
        if not entries:
            return
        if not overwrite:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise SetupError(
                f"--ckpt-dir {self.directory} is not empty ({len(entries)} entries: {shown}). "
                "Pass --resume to continue the run saved there, choose an empty --ckpt-dir, or "
                "pass --overwrite to move its contents to a replaced-<time> folder inside it "
                "(nothing is deleted)."
            )
        if jax.process_index() == 0:
            aside = os.path.join(self.directory, f"replaced-{time.strftime('%Y%m%d-%H%M%S')}")
            os.makedirs(aside, exist_ok=True)
            for e in entries:
                if not e.startswith("replaced-"):
                    os.replace(os.path.join(self.directory, e), os.path.join(aside, e))
            print(f"--overwrite: moved the previous contents of --ckpt-dir to {aside}.",
                  file=sys.stderr)  # fmt: skip

    def save(self, step: int, state: TrainState) -> None:
        """Saves ``state`` as checkpoint ``step`` (once per step and process)."""
        if step in self._saved:
            return
        if step in self.manager.all_steps():  # a stale one from before a resume
            self.manager.delete(step)
        self.manager.save(step, args=self._ocp.args.StandardSave(state), force=True)
        self.manager.wait_until_finished()
        self._saved.add(step)
        if jax.process_index() == 0:
            # an integrity record (CRC32 of every array), checked when the checkpoint is restored
            crcs = replica_fingerprint(state, all_shards=False)
            record = {"step": step, "crc32": [int(c) for c in crcs]}
            write_json(os.path.join(self.directory, str(step), INTEGRITY_FILE), record)
            write_json(os.path.join(self.directory, "config.json"), self.config)

    def check_config(self) -> None:
        path = os.path.join(self.directory, "config.json")
        if not os.path.exists(path):
            return
        try:
            with open(path) as f:
                saved = json.load(f)
        except (OSError, ValueError) as e:
            warnings.warn(
                f"{path} is unreadable ({e}); the set-up of the saved run cannot be compared "
                "with this one. Resuming anyway: the checkpoints' structure is still checked.",
                stacklevel=2,
            )
            return
        diff = [
            f"--{k.replace('_', '-')} {saved.get(k)!r} (saved) vs {v!r} (now)"
            for k, v in self.config.items()
            if saved.get(k) != v
        ]
        if diff:
            raise SetupError(
                f"--resume: the checkpoints in {self.directory} were written by a different "
                f"set-up: {'; '.join(diff)}. Resume with the saved values, or drop --resume and "
                "pass a new --ckpt-dir."
            )

    def restore_latest(self, target: TrainState) -> TrainState | None:
        """The newest checkpoint that restores; older ones are tried after a warning.

        Returns ``None`` when none restores; :attr:`unreadable` then lists the
        steps that failed (empty: the directory holds no checkpoint). Failed
        checkpoints are moved aside (``<step>.unreadable-<time>``) only when an
        older one restores; when all fail they are left in place.
        """
        self.check_config()
        self.manager.reload()
        abstract = jax.tree.map(self._ocp.utils.to_shape_dtype_struct, target)
        bad = []
        restored = None
        with _orbax_reads_drained():
            steps = sorted(self.manager.all_steps(), reverse=True)
            for i, step in enumerate(steps):
                try:
                    # a standalone reader per step: a failed restore leaves no state behind
                    path = os.path.join(self.directory, str(step), "default")
                    if not os.path.isdir(path):
                        raise FileNotFoundError(f"{path} is missing (half-written checkpoint)")
                    with self._ocp.StandardCheckpointer() as reader:
                        state = reader.restore(path, abstract)
                    _check_restored(state, target, step)
                    _check_integrity(state, os.path.join(self.directory, str(step)))
                    restored = state
                    break
                except Exception as e:  # noqa: BLE001 - any failure means "unusable"
                    msg = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
                    then = "trying the previous one" if i + 1 < len(steps) else "no older one"
                    warnings.warn(
                        f"checkpoint {step} in {self.directory} could not be restored "
                        f"({type(e).__name__}: {msg}); {then}.",
                        stacklevel=2,
                    )
                    bad.append(step)
        self.unreadable = bad
        if restored is not None and jax.process_index() == 0:
            for step in bad:  # set aside, so that they are neither resumed nor overwritten
                src = os.path.join(self.directory, str(step))
                if os.path.isdir(src):
                    os.replace(src, f"{src}.unreadable-{int(time.time())}")
        if bad:  # a fresh manager: a failed restore can leave it in a confused state
            self.manager.close()
            self.manager = self._ocp.CheckpointManager(self.directory, options=self._options)
        return restored

    def close(self) -> None:
        self.manager.close()


@contextlib.contextmanager
def _orbax_reads_drained(timeout_s: float = 60.0) -> Iterator[None]:
    """Within it, orbax lets a failed restore's other reads finish before closing its event loop.

    orbax (0.12) runs every restore on a fresh event loop and closes that loop
    as soon as the first array read fails. The reads still in flight then
    complete on the closed loop, and tensorstore reports each one as an
    unraisable ``RuntimeError: Event loop is closed``: hundreds of tracebacks
    on stderr after one corrupt checkpoint. Here the loop first waits (at most
    ``timeout_s``) for its remaining tasks. A no-op where orbax has no such
    helper.
    """
    try:
        from orbax.checkpoint._src import asyncio_utils
    except ImportError:  # pragma: no cover - another orbax layout
        asyncio_utils = None
    original = getattr(asyncio_utils, "_run_sync_via_new_loop", None)
    if original is None:  # pragma: no cover
        yield
        return

    def run(coro):
        loop = asyncio.new_event_loop()
        try:
            asyncio.set_event_loop(loop)
            return loop.run_until_complete(coro)
        finally:
            pending = asyncio.all_tasks(loop)
            if pending:  # their exceptions are collected (not logged as "never retrieved")
                rest = asyncio.gather(*pending, return_exceptions=True)
                with contextlib.suppress(Exception):
                    loop.run_until_complete(asyncio.wait_for(rest, timeout_s))
            asyncio.set_event_loop(None)
            loop.close()

    asyncio_utils._run_sync_via_new_loop = run
    try:
        yield
    finally:
        asyncio_utils._run_sync_via_new_loop = original


def read_checkpoint(directory: str, step: int | None = None) -> tuple[int, Any]:
    """A checkpoint of :class:`Checkpoints` as NumPy arrays, whatever topology wrote it.

    Reads checkpoint ``step`` (the newest by default) of ``directory`` onto this
    process's first device, so a checkpoint written by 8 devices or by several
    processes can be inspected on a laptop. Typed PRNG keys come back as their
    ``uint32`` key data.

    Returns:
      ``(step, tree)``: the nested dicts/lists of the saved :class:`TrainState`.
    """
    import orbax.checkpoint as ocp

    directory = os.path.abspath(directory)
    if step is None:
        steps = sorted(int(d) for d in os.listdir(directory) if d.isdigit())
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {directory}.")
        step = steps[-1]
    path = os.path.join(directory, str(step), "default")
    dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    absl_log = logging.getLogger("absl")
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)  # orbax warns that an item has no step metadata
    with ocp.StandardCheckpointer() as reader:
        try:
            meta = reader.metadata(path)
        finally:
            absl_log.setLevel(level)
        meta = getattr(meta, "item_metadata", meta)
        abstract = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=dev), meta
        )
        tree = reader.restore(path, abstract)
    return step, jax.tree.map(lambda x: np.asarray(_key_data(x)), tree)


INTEGRITY_FILE = "kinetix_integrity.json"
"""Per checkpoint: the CRC32 of every saved array (in ``<ckpt-dir>/<step>/``)."""


def _check_integrity(state: TrainState, step_dir: str) -> None:
    """Raises ``ValueError`` when a restored array differs from what was saved."""
    path = os.path.join(step_dir, INTEGRITY_FILE)
    if not os.path.exists(path):
        warnings.warn(
            f"{step_dir} has no integrity record ({INTEGRITY_FILE}; written by an older kinetix?): "
            "its arrays cannot be verified.",
            stacklevel=3,
        )
        return
    with open(path) as f:
        saved = json.load(f)["crc32"]
    now = replica_fingerprint(state, all_shards=False)
    if len(saved) != len(now):
        raise ValueError(f"integrity record lists {len(saved)} arrays, the checkpoint {len(now)}")
    bad = [i for i, (a, b) in enumerate(zip(saved, now.tolist(), strict=True)) if a != b]
    if bad:
        paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(state)]
        raise ValueError(
            f"integrity check failed: {len(bad)} array(s) differ from what was saved "
            f"(e.g. {paths[bad[0]]}); the checkpoint is corrupt"
        )


def _check_same_restore(restored: TrainState | None) -> None:
    """Every process must resume from the same checkpoint (a collective)."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    mine = -1 if restored is None else int(restored.step)
    steps = np.asarray(multihost_utils.process_allgather(np.asarray([mine], np.int32))).ravel()
    if np.any(steps != steps[0]):
        raise DistributedError(
            f"the processes restored different checkpoints (steps {steps.tolist()}, -1 = none): "
            "every process must see the same --ckpt-dir (a shared file system or bucket)."
        )


def _check_restored(state: TrainState, target: TrainState, step: int) -> None:
    if jax.tree.structure(state) != jax.tree.structure(target):
        raise ValueError("checkpoint tree structure differs from the model's")
    if int(state.step) != step:
        raise ValueError(f"checkpoint {step} holds step {int(state.step)}")
    for leaf in jax.tree.leaves(state.params):
        if not bool(jnp.all(jnp.isfinite(leaf))):
            raise ValueError("checkpoint holds non-finite parameters")


# ----------------------------------------------------------------- preemption


class StopFlag:
    """Set by SIGTERM/SIGINT while training; the loop saves and exits."""

    def __init__(self):
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def __bool__(self) -> bool:
        return self.signal is not None


# ----------------------------------------------------------------- outputs


def versions() -> dict[str, str]:
    import flax

    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "platform": jax.default_backend(),
        "devices": str(jax.device_count()),
    }


def write_json(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def check_output_dir(path: str, flag: str) -> None:
    """Raises :class:`SetupError` unless ``path`` is, or can be made, a writable directory.

    Creates nothing: an existing directory is probed with a temporary file, a
    missing one must have a writable directory as its nearest existing parent.
    ``flag`` (e.g. ``"--out"``) names the option in the message.
    """
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        try:
            fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test-")
            os.close(fd)
            os.remove(probe)
        except OSError as e:
            raise SetupError(
                f"{flag} {path} is not writable ({e.strerror}); pass a directory you can write to."
            ) from None
        return
    if os.path.exists(path):
        raise SetupError(f"{flag} {path} is a file, not a directory; pass a directory path.")
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise SetupError(
            f"{flag} {path} cannot be created: {parent} is a file, not a directory; "
            "pass another path."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SetupError(
            f"{flag} {path} cannot be created: {parent} is not writable; "
            "pass a directory you can write to."
        )


def preflight(cfg: dict[str, Any]) -> None:
    """Checks ``--out`` and ``--ckpt-dir`` before any data is loaded or anything compiled.

    Raises :class:`SetupError` (the CLIs exit with code 2) when a directory is
    a file, lies under a file or is not writable, and when ``--resume`` names a
    ``--ckpt-dir`` that does not exist.
    """
    check_output_dir(cfg["out"], "--out")
    ckpt = cfg.get("ckpt_dir")
    if not ckpt:
        return
    if cfg.get("resume") and not os.path.exists(ckpt):
        raise SetupError(
            f"--resume: no checkpoint directory {os.path.abspath(ckpt)}; drop --resume to start "
            "a new run (or correct the --ckpt-dir path)."
        )
    check_output_dir(ckpt, "--ckpt-dir")


def read_metrics(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class InertCollisionWarning(UserWarning):
    """A KO leaf or kinetic block collided no pair during a whole epoch."""


def warn_inert(epoch_rates: dict[str, float], epoch: int, warned: set[str]) -> list[str]:
    """One warning naming every watched layer that collided no pair this epoch (once per layer).

    Returns the newly reported names.
    """
    inert = [n for n, r in epoch_rates.items() if r == 0.0 and n not in warned]
    if inert:
        warned.update(inert)
        warnings.warn(
            f"epoch {epoch}: no pair collided in {', '.join(inert)} during the whole epoch, so "
            "these collisions do nothing. Raise --coll-coef, or use the quota rule (--ko hard, "
            "the default of kinetix.ko_hard() and KineticResidual(), which collides a fixed "
            "share of each layer's particles at any scale) instead of a fixed threshold. A "
            "kinetic block with fewer than 2 particles per system (small feature maps) cannot "
            "collide: lower its n_divide or make it plain.",
            InertCollisionWarning,
            stacklevel=2,
        )
    return inert


def plot_curves(
    rows: list[dict[str, Any]],
    path: str,
    title: str,
    task: Task | None = None,
    extra_tests: Sequence[str] = (),
) -> None:
    """``curves.png``: one panel per task metric (train and test), the task's curve
    panel (e.g. classifier neuron similarity) and the collision rates per epoch.

    Markers on every point, so runs of 1-2 epochs are visible; metrics listed in
    ``task.log_scale``, metrics spanning more than two decades, and collision rates
    on log axes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    task = task or classification_task(lambda *a: None)
    ep = [r["epoch"] for r in rows]

    def series(key):
        return [np.nan if r.get(key) is None else r[key] for r in rows]

    panels = len(task.names) + bool(task.curve_keys) + 1
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.4))
    for ax, name in zip(axes, task.names, strict=False):
        ax.plot(ep, series(f"train_{name}"), marker="o", label="train")
        for suffix in ["", *(f"_{x}" for x in extra_tests)]:
            label = "test" + (f" {suffix[1:]}" if suffix else "")
            ax.plot(ep, series(f"test_{name}{suffix}"), marker="o", label=label)
        values = [v for line in ax.get_lines() for v in line.get_ydata() if np.isfinite(v)]
        spans = values and min(values) > 0 and max(values) / min(values) > 100
        if name in task.log_scale or spans:  # e.g. a short run's first eval loss in the hundreds
            ax.set_yscale("log")
        ax.set_title(name.replace("_", " "))
    if task.curve_keys:
        ax = axes[len(task.names)]
        for key in task.curve_keys:
            ax.plot(ep, series(key), marker=".", label=key)
        ax.set_title(task.curve_title)
    ax = axes[-1]
    for key, label in (("collision_rate", "KO"), ("kinetic_collision_rate", "kinetic blocks")):
        if any(r.get(key) is not None for r in rows):
            ax.plot(ep, series(key), marker="o", label=label)
    if any(
        v and v > 0
        for r in rows
        for v in (r.get("collision_rate"), r.get("kinetic_collision_rate"))
    ):
        ax.set_yscale("log")
    ax.set_title("collision rate (epoch mean, fraction of pairs)")
    for ax in axes:
        ax.set_xlabel("epoch")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def format_table(rows: list[tuple[str, str]]) -> str:
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)


# ----------------------------------------------------------------- the loop


@dataclasses.dataclass
class Data:
    """In-memory arrays for one task (inputs: images, token ids or fields; targets: labels or fields).

    ``extra_tests`` maps a suffix to another test set, logged as
    ``test_<name>_<suffix>`` (e.g. ``{"64": (x, y)}``: heat at 64x64).
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    extra_tests: dict[str, tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict)


def _local_copy(x: Any) -> Any:
    """A replicated global array as one local device's full copy (other leaves unchanged)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return x.addressable_shards[0].data
    return x


# row entries that describe one epoch only (the summary takes the last row's other entries)
_ROW_ONLY = ("epoch", "step", "learning_rate", "data_wait_seconds", "train_seconds")


def run_training(
    *,
    prog: Program,
    params: Any,
    rest: Any,
    data: Data,
    cfg: dict[str, Any],
    out: str,
    title: str,
    epoch_permutation: Callable[[int, int, int], np.ndarray],
    progress: bool = True,
    final_hook: Callable[[nnx.Module], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Trains for ``cfg["epochs"]``; writes metrics, checkpoints, plots, summary; returns the summary.

    ``cfg`` keys used: ``seed, epochs, batch_size, eval_batch_size, ckpt_dir,
    ckpt_every, keep, resume, stop_after_steps`` and optionally ``eval_every``
    (evaluate every N epochs and at the last; other rows log ``None``).
    ``stop_after_steps`` (a test and debugging aid) behaves like a SIGTERM
    after that many steps of this process. ``final_hook(model)`` (process 0,
    eval-mode model with the final parameters) may write extra outputs and
    returns entries added to the summary.
    """
    os.makedirs(out, exist_ok=True)
    n_train = len(data.train_y)
    bs = cfg["batch_size"]
    ndev = prog.mesh.devices.size  # every device of every process
    if bs % ndev:
        raise ValueError(
            f"--batch-size {bs} must be divisible by the number of devices ({ndev}); "
            f"use e.g. --batch-size {max(ndev, bs // ndev * ndev)} or --devices 1."
        )
    steps_per_epoch = n_train // bs
    if steps_per_epoch < 1:
        raise ValueError(f"--batch-size {bs} is larger than the training set ({n_train} examples).")
    total_steps = steps_per_epoch * cfg["epochs"]
    state = init_state(prog, params, rest, cfg["seed"])

    ckpt = None
    metrics_path = os.path.join(out, "metrics.jsonl")
    if cfg.get("ckpt_dir"):
        ckpt_cfg = {k: cfg[k] for k in cfg.get("resume_keys", ()) if k in cfg}
        ckpt = Checkpoints(
            cfg["ckpt_dir"],
            cfg.get("keep", 3),
            ckpt_cfg,
            fresh=not cfg.get("resume"),
            overwrite=bool(cfg.get("overwrite")),
        )
    resumed_from = None
    if cfg.get("resume"):
        if ckpt is None:
            raise SetupError("--resume needs --ckpt-dir (where the checkpoints are).")
        try:
            restored = ckpt.restore_latest(state)
            _check_same_restore(restored)
        except BaseException:
            ckpt.close()
            raise
        if restored is not None:
            state = restored
            resumed_from = int(state.step)
        elif ckpt.unreadable:
            ckpt.close()
            raise SetupError(
                f"--resume: none of the {len(ckpt.unreadable)} checkpoint(s) in {ckpt.directory} "
                f"could be restored (steps {sorted(ckpt.unreadable)}; the warnings above say why). "
                "Pass a --ckpt-dir holding an intact copy, or drop --resume and pass --overwrite "
                "to start a new run there (the checkpoints are moved aside, not deleted)."
            )
        elif jax.process_index() == 0:
            print(
                f"--resume: no checkpoint in {ckpt.directory}; starting a new run from step 0.",
                file=sys.stderr,
            )
    start = int(state.step)
    rows = [r for r in read_metrics(metrics_path) if r["epoch"] * steps_per_epoch <= start]
    if start == 0:
        rows = []
    if jax.process_index() == 0:
        with open(metrics_path, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    train_seconds = rows[-1]["train_seconds"] if rows else 0.0
    data_wait = sum(r.get("data_wait_seconds", 0.0) for r in rows)
    warned: set[str] = set()  # layers already reported as inert
    task = prog.task
    names, k = task.names, len(task.names)
    suffixes = [""] + [f"_{x}" for x in data.extra_tests]
    test_keys = [f"test_{n}{x}" for x in suffixes for n in names]
    eval_every = int(cfg.get("eval_every") or 1)

    local = _local_rows(bs)

    def make_batch(step: int, perm: np.ndarray):
        pos = step % steps_per_epoch
        idx = perm[pos * bs : (pos + 1) * bs][local]
        return to_global(prog, data.train_x[idx]), to_global(prog, data.train_y[idx])

    if prog.parallel == "pmap":
        state = replicate(prog, state)

    def host_state(s: TrainState) -> TrainState:
        return unreplicate(s) if prog.parallel == "pmap" else s

    status = "completed"
    stopped_by_peer = False
    steps_this_run = 0
    stop_after = cfg.get("stop_after_steps")
    t_loop = time.perf_counter()
    bar = None
    multi = jax.process_count() > 1
    timeout = float(cfg.get("dist_timeout") or 300.0)
    barrier("kinetix-train-start", timeout)
    if progress and jax.process_index() == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=start, desc=title, unit="step", dynamic_ncols=True)
    with StopFlag() as stop:
        step = start
        while step < total_steps:
            epoch = step // steps_per_epoch
            perm = epoch_permutation(n_train, cfg["seed"], epoch)
            end = (epoch + 1) * steps_per_epoch
            t0 = time.perf_counter()
            first = step
            feed = Prefetcher(lambda s, perm=perm: make_batch(s, perm), range(step, end))
            last = None
            try:
                for x, y in feed:
                    state, last = prog.train_step(state, x, y)
                    step += 1
                    steps_this_run += 1
                    if bar is not None and (step % 10 == 0 or step == end):
                        b = np.asarray(last[0] if prog.parallel == "pmap" else last)
                        elapsed = max(time.perf_counter() - t0, 1e-9)
                        done = step - first
                        shown = {n[:4]: f"{b[i] / b[k]:.3g}" for i, n in enumerate(names)}
                        bar.set_postfix(**shown, ex_s=f"{done * bs / elapsed:.0f}", refresh=False)
                        bar.update(step - bar.n)
                    due = bool(cfg.get("ckpt_every")) and step % cfg["ckpt_every"] == 0
                    # an epoch's last step is saved after its evaluation (below), so that a
                    # resume there finds the epoch's metrics row written and the sums reset
                    if ckpt and due and step != end:
                        ckpt.save(step, host_state(state))
                    # a signal to any process stops every process at the same step
                    stopping = any_process(bool(stop)) if multi else bool(stop)
                    if stopping and not stop:
                        stopped_by_peer = True
                    if stopping or (stop_after is not None and steps_this_run >= stop_after):
                        status = "preempted"
                        break
            finally:
                feed.close()
            jax.block_until_ready(state)
            train_seconds += time.perf_counter() - t0
            data_wait += feed.wait_s
            if status == "preempted" and step != end:
                break
            # ---- end of epoch: evaluate and log
            hs = host_state(state)
            sums = np.asarray(hs.sums)
            do_eval = (epoch + 1) % eval_every == 0 or epoch + 1 == cfg["epochs"]
            if do_eval:
                test = evaluate(prog, hs.params, hs.rest, data, cfg["eval_batch_size"])
            else:
                test = dict.fromkeys(test_keys)
            epoch_rates = {
                n: float(r / max(sums[k + 1], 1.0))
                for n, r in zip(prog.rate_names, sums[k + 2 :], strict=True)
            }
            ko_rates = [v for n, v in epoch_rates.items() if n.startswith("ko/")]
            kin_rates = [v for n, v in epoch_rates.items() if n.startswith("kinetic/")]
            row = {"epoch": epoch + 1, "step": step}
            row.update({f"train_{n}": float(sums[i] / sums[k]) for i, n in enumerate(names)})
            row.update(test)
            if task.epoch_metrics is not None:
                row.update(task.epoch_metrics(nnx.merge(prog.graphdef_eval, hs.params, hs.rest)))
            row.update(
                {
                    "collision_rate": float(np.mean(ko_rates)) if ko_rates else None,
                    "kinetic_collision_rate": float(np.mean(kin_rates)) if kin_rates else None,
                    "collision_rates": epoch_rates,
                    "learning_rate": float(cfg["schedule"](step)),
                    "train_seconds": train_seconds,
                    "data_wait_seconds": feed.wait_s,
                }
            )
            rows.append(row)
            if jax.process_index() == 0:
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                warn_inert(epoch_rates, epoch + 1, warned)
            if bar is not None:
                train_part = " ".join(f"{n} {row[f'train_{n}']:.4f}" for n in names)
                test_part = " ".join(
                    f"{key[5:]} {row[key]:.4f}" for key in test_keys if row[key] is not None
                )
                bar.write(
                    f"epoch {epoch + 1}/{cfg['epochs']}: train {train_part}"
                    + (f" | test {test_part}" if test_part else "")
                )
            zero = np.zeros(hs.sums.shape, hs.sums.dtype)
            if prog.parallel == "pmap":
                state = state._replace(sums=replicate(prog, zero))
            else:
                state = state._replace(sums=put_replicated(zero, prog.mesh))
            if ckpt and (status == "preempted" or due):  # `due` of the epoch's last step
                ckpt.save(step, host_state(state))
            if status == "preempted":
                break
        if bar is not None:
            bar.close()
        final = host_state(state)
        replicas_checked = None
        if prog.parallel == "jit" and (ndev > 1 or multi):
            replicas_checked = check_replicas(final)  # bitwise, every device of every process
        if ckpt:
            ckpt.save(int(final.step), final)
            ckpt.close()
    wall = time.perf_counter() - t_loop
    summary = {
        "status": status,
        "dataset": cfg.get("dataset"),
        "model": cfg.get("model"),
        "optimizer": cfg.get("optimizer"),
        "ko": cfg.get("ko"),
        "coll_coef": cfg.get("coll_coef"),
        "seed": cfg["seed"],
        "epochs": cfg["epochs"],
        "epochs_completed": len(rows),
        "steps": int(final.step),
        "batch_size": bs,
        "devices": ndev,
        "parallel": prog.parallel,
        "processes": jax.process_count(),
        "replicas_checked": replicas_checked,
        "resumed_from_step": resumed_from,
    }
    last = rows[-1] if rows else {}
    for key in test_keys:
        summary[key] = last.get(key)
    best_name, best_mode = task.best
    seen = [r[f"test_{best_name}"] for r in rows if r.get(f"test_{best_name}") is not None]
    summary[f"best_test_{best_name}"] = (max if best_mode == "max" else min)(seen) if seen else None
    for key in last:
        if key not in summary and key not in _ROW_ONLY:
            summary[key] = last[key]
    summary.update(
        {
            "train_seconds": train_seconds,
            "data_wait_fraction": data_wait / train_seconds if train_seconds > 0 else None,
            "examples_per_second": (steps_this_run * bs / wall) if wall > 0 else None,
            "versions": versions(),
        }
    )
    if final_hook is not None and jax.process_index() == 0:
        # process 0 alone: computing on arrays that span other processes' devices would wait
        # for them, so the hook gets this process's copy of the (replicated) state
        local = jax.tree.map(_local_copy, (final.params, final.rest))
        summary.update(final_hook(nnx.merge(prog.graphdef_eval, *local)))
    if jax.process_index() == 0:
        write_json(os.path.join(out, "summary.json"), summary)
        plot_curves(rows, os.path.join(out, "curves.png"), title, task, list(data.extra_tests))
    barrier("kinetix-train-end", timeout)
    if status == "preempted":
        if stop.signal is not None:
            why = f"signal {stop.signal}"
        elif stopped_by_peer:
            why = "a signal to another process of this run"
        else:
            why = "--stop-after-steps"
        where = f" to {ckpt.directory}" if ckpt else " (no --ckpt-dir: nothing saved)"
        print(f"stopped by {why} at step {int(final.step)}; state saved{where}.", file=sys.stderr)
    return summary


def evaluate(prog: Program, params, rest, data: Data, batch_size: int) -> dict[str, float]:
    """``test_<name>`` (and ``test_<name>_<suffix>`` of the extra test sets): example means
    of the task's terms over each whole test set (the last batch is padded, weight 0)."""
    out = {}
    sets = {"": (data.test_x, data.test_y)}
    sets.update({f"_{k}": v for k, v in data.extra_tests.items()})
    for suffix, (xs, ys) in sets.items():
        means = _evaluate_set(prog, params, rest, xs, ys, batch_size)
        out.update({f"test_{n}{suffix}": m for n, m in zip(prog.task.names, means, strict=True)})
    return out


def _evaluate_set(prog: Program, params, rest, xs, ys, batch_size: int) -> list[float]:
    ndev = prog.mesh.devices.size
    bs = max(ndev, batch_size // ndev * ndev)
    n = len(ys)
    totals = np.zeros(len(prog.task.names) + 1)
    for i in range(0, n, bs):
        x = xs[i : i + bs]
        y = ys[i : i + bs]
        w = np.ones(len(y), np.float32)
        pad = bs - len(y)
        if pad:
            x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
            y = np.concatenate([y, np.zeros((pad,) + y.shape[1:], y.dtype)])
            w = np.concatenate([w, np.zeros((pad,), np.float32)])
        sh = NamedSharding(prog.mesh, P("data"))
        rows = _local_rows(bs)
        arrays = (jax.make_array_from_process_local_data(sh, a[rows]) for a in (x, y, w))
        out = prog.eval_step(params, rest, *arrays)
        totals += np.asarray(out, np.float64)
    return [float(t / totals[-1]) for t in totals[:-1]]


def summary_lines(summary: dict[str, Any]) -> str:
    keys = [
        "status",
        "dataset",
        "model",
        "optimizer",
        "ko",
        "epochs_completed",
        "steps",
        "test_accuracy",
        "best_test_accuracy",
        "neuron_similarity_mean",
        "collision_rate",
        "train_seconds",
        "examples_per_second",
        "data_wait_fraction",
    ]

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"
        return str(v)

    return format_table([(k, fmt(summary.get(k))) for k in keys if k in summary])


# ----------------------------------------------------------------- command line


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` except where the default is ``None``/``False`` (explained in the text)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def add_training_args(
    p: argparse.ArgumentParser,
    *,
    default_optimizer: str,
    default_epochs: int,
    default_batch: int,
    default_lr: dict[str, float],
    default_wd: dict[str, float],
) -> None:
    """The optimizer, training and checkpoint flags shared by the training scripts."""
    g = p.add_argument_group("optimizer")
    g.add_argument(
        "--optimizer", choices=OPTIMIZERS, default=default_optimizer, help="base optimizer"
    )
    g.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate of the cosine schedule; default: "
        + ", ".join(f"{k} {v:g}" for k, v in default_lr.items()),
    )
    g.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help="weight decay: coupled L2 for sgd, decoupled for adamw/lamb; default: "
        + ", ".join(f"{k} {v:g}" for k, v in default_wd.items()),
    )
    g.add_argument("--momentum", type=float, default=0.9, help="sgd momentum (0 = none)")
    g.add_argument(
        "--warmup-epochs", type=float, default=0.0, help="linear warm-up before the cosine decay"
    )
    g.add_argument(
        "--ko",
        choices=KO_KINDS,
        default="none",
        help="KO collisions on the gradients of the --ko-mask leaves: soft (Alg. 2) or hard "
        "(Alg. 1)",
    )
    g.add_argument(
        "--coll-coef",
        type=float,
        default=0.1,
        help="KO collision coefficient (the paper gives no value)",
    )
    g.add_argument(
        "--ko-mask",
        default=r"classifier/kernel",
        help="regular expression on parameter paths selecting the leaves KO collides",
    )
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=default_epochs, help="training epochs")
    g.add_argument("--batch-size", type=int, default=default_batch, help="global batch size")
    g.add_argument("--eval-batch-size", type=int, default=512, help="test batch size")
    g.add_argument("--seed", type=int, default=0, help="seed of init, data order, keys")
    g.add_argument("--out", required=True, help="output directory")
    add_system_args(p, g)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_system_args(p: argparse.ArgumentParser, g: Any = None) -> None:
    """Devices, parallelism, checkpoints and multi-process flags (every training script).

    ``g``: the argument group that gets ``--devices`` and ``--parallel`` (default ``p``).
    """
    g = p if g is None else g
    g.add_argument(
        "--devices",
        type=int,
        default=None,
        help="use the first N local devices (default: all)",
    )
    g.add_argument(
        "--parallel",
        choices=("jit", "pmap"),
        default="jit",
        help="data parallelism: jit + NamedSharding (default) or jax.pmap",
    )
    g = p.add_argument_group("checkpoints")
    g.add_argument("--ckpt-dir", default=None, help="orbax checkpoint directory (none: no saves)")
    g.add_argument(
        "--ckpt-every", type=int, default=500, help="save every N steps (and at the end)"
    )
    g.add_argument("--keep", type=int, default=3, help="keep the last K checkpoints")
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest readable checkpoint in --ckpt-dir (which must exist; "
        "without a checkpoint in it the run starts at step 0)",
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in a non-empty --ckpt-dir, moving its contents to a replaced-<time> "
        "folder inside it (without it, a fresh run refuses a non-empty --ckpt-dir)",
    )
    g.add_argument(
        "--stop-after-steps",
        type=int,
        default=None,
        help="testing aid: behave as if preempted (save and exit) after N steps of this run",
    )
    g = p.add_argument_group(
        "multi-process (one process per host; all flags fall back to the JAX_* variables)"
    )
    g.add_argument(
        "--coordinator",
        default=None,
        help="HOST:PORT of process 0's coordination service (env JAX_COORDINATOR_ADDRESS); "
        "with --num-processes and --process-id this process joins a multi-process run",
    )
    g.add_argument(
        "--num-processes", type=int, default=None, help="processes in all (env JAX_NUM_PROCESSES)"
    )
    g.add_argument(
        "--process-id", type=int, default=None, help="this process, 0..N-1 (env JAX_PROCESS_ID)"
    )
    g.add_argument(
        "--dist-timeout",
        type=float,
        default=300.0,
        help="seconds to wait for the other processes at start-up and at every barrier",
    )


def resolve_training_args(
    cfg: dict[str, Any],
    parser: argparse.ArgumentParser,
    default_lr: dict[str, float],
    default_wd: dict[str, float],
) -> dict[str, Any]:
    """Fills optimizer defaults and rejects bad values with ``parser.error`` (exit code 2)."""
    cfg["lr"] = default_lr[cfg["optimizer"]] if cfg["lr"] is None else cfg["lr"]
    if cfg["weight_decay"] is None:
        cfg["weight_decay"] = default_wd[cfg["optimizer"]]
    for name in ("epochs", "batch_size", "eval_batch_size"):
        if cfg[name] < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {cfg[name]}.")
    if not (cfg["lr"] > 0 and math.isfinite(cfg["lr"])):
        parser.error(f"--lr must be a positive finite number, got {cfg['lr']}.")
    if not (cfg["weight_decay"] >= 0 and math.isfinite(cfg["weight_decay"])):
        parser.error(f"--weight-decay must be >= 0, got {cfg['weight_decay']}.")
    if not 0.0 <= cfg["momentum"] < 1.0:
        parser.error(f"--momentum must be in [0, 1), got {cfg['momentum']}.")
    if not cfg["warmup_epochs"] >= 0:
        parser.error(f"--warmup-epochs must be >= 0, got {cfg['warmup_epochs']}.")
    if not 0.0 <= cfg["coll_coef"] <= 1.0:
        parser.error(f"--coll-coef must be in [0, 1], got {cfg['coll_coef']}.")
    return resolve_system_args(cfg, parser)


def resolve_system_args(cfg: dict[str, Any], parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Checks the :func:`add_system_args` flags (``parser.error``: exit code 2)."""
    for name in ("keep", "ckpt_every"):
        if cfg[name] < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {cfg[name]}.")
    if cfg["stop_after_steps"] is not None and cfg["stop_after_steps"] < 1:
        parser.error(f"--stop-after-steps must be >= 1, got {cfg['stop_after_steps']}.")
    if cfg["resume"] and not cfg["ckpt_dir"]:
        parser.error("--resume needs --ckpt-dir (where the checkpoints are).")
    _resolve_distributed(cfg, parser)
    return cfg


_DIST_ENV = {
    "coordinator": "JAX_COORDINATOR_ADDRESS",
    "num_processes": "JAX_NUM_PROCESSES",
    "process_id": "JAX_PROCESS_ID",
}


def _resolve_distributed(cfg: dict[str, Any], parser: argparse.ArgumentParser) -> None:
    """Fills the multi-process settings from the flags, else the ``JAX_*`` variables; checks them."""
    for key, env in _DIST_ENV.items():
        if cfg.get(key) is None and os.environ.get(env):
            value = os.environ[env]
            if key != "coordinator":
                try:
                    value = int(value)
                except ValueError:
                    parser.error(f"{env}={value!r} must be an integer.")
            cfg[key] = value
    given = [k for k in _DIST_ENV if cfg.get(k) is not None]
    if given and len(given) < 3:
        missing = [
            f"--{k.replace('_', '-')} (or {_DIST_ENV[k]})" for k in _DIST_ENV if k not in given
        ]
        parser.error(
            f"a multi-process run needs all three settings; missing: {', '.join(missing)}."
        )
    if not given:
        return
    coord = str(cfg["coordinator"])
    host, _, port = coord.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--coordinator must be HOST:PORT (e.g. 127.0.0.1:8476), got {coord!r}.")
    if cfg["num_processes"] < 1:
        parser.error(f"--num-processes must be >= 1, got {cfg['num_processes']}.")
    if not 0 <= cfg["process_id"] < cfg["num_processes"]:
        parser.error(
            f"--process-id must be in 0..{cfg['num_processes'] - 1}, got {cfg['process_id']}."
        )
    if cfg.get("parallel") == "pmap" and cfg["num_processes"] > 1:
        parser.error("--parallel pmap runs in one process only; use --parallel jit (the default).")
    if not cfg.get("dist_timeout", 300.0) > 0:
        parser.error(f"--dist-timeout must be > 0, got {cfg['dist_timeout']}.")
