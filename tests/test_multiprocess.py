"""train.classify / train.text as 2 processes x 4 CPU devices on localhost.

JAX's distributed runtime (coordination service + gloo collectives on CPU) runs
real processes here, so the multi-host path is tested, not assumed:

* a 2-process run computes, at every step, the 1-process 8-device step from the
  same state (the tolerance of the 8-vs-1 test), every device of both processes
  holds bitwise-identical replicas (KO's key, count and rates included), and
  only process 0 writes the reports;
* a 2-process run stopped and resumed equals the straight 2-process run;
* a missing peer fails within ``--dist-timeout`` with a clear error (exit 2).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.test_train_classify import BASE, ROOT, replay_matches
from tests.test_train_text import TINY
from train import classify, loop, pde, text

CLASSIFY_ARGS = [*BASE, "--epochs", "1", "--keep", "10"]
TEXT_ARGS = [*TINY, "--ko", "hard", "--coll-coef", "0.5", "--ckpt-every", "1", "--keep", "10"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(module: str, args: list[str], *, n: int = 2, devices: int = 4,
          dist_timeout: int = 120, only: list[int] | None = None) -> list[subprocess.Popen]:  # fmt: skip
    """Starts ``python -m module args`` as ``n`` processes of one distributed run."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        PYTHONUNBUFFERED="1",
    )
    procs = []
    for i in range(n) if only is None else only:
        cmd = [sys.executable, "-m", module, *args, "--coordinator", f"127.0.0.1:{port}",
               "--num-processes", str(n), "--process-id", str(i),
               "--dist-timeout", str(dist_timeout)]  # fmt: skip
        procs.append(
            subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        )
    return procs


def wait(procs: list[subprocess.Popen], timeout: float = 600):
    """``[(returncode, stdout, stderr)]`` of every process; kills them all after ``timeout``."""
    results = []
    deadline = time.time() + timeout
    try:
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.time()))
            results.append((p.returncode, out.decode(), err.decode()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return results


def launch(module: str, args: list[str], *, timeout: float = 600, **kw):
    """Runs a distributed run to its end: ``[(returncode, stdout, stderr)]`` per process."""
    return wait(start(module, args, **kw), timeout)


def _ok(results):
    for i, (rc, out, err) in enumerate(results):
        assert rc == 0, f"process {i} exited {rc}:\n{out[-2000:]}\n{err[-4000:]}"


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mp")
    out = str(tmp / "run")
    results = launch("train.classify", [*CLASSIFY_ARGS, "--out", out, "--ckpt-dir", out + "/ckpt"])
    _ok(results)
    return out, results


def test_two_processes_match_one_process_every_step(two_process_run):
    out, results = two_process_run
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["processes"] == 2 and summary["devices"] == 8 and summary["steps"] == 5
    # the loop checked every leaf of the final state (params, BatchNorm statistics,
    # optimizer state with KO's key, count and collision rates) bitwise across the
    # 8 devices of the 2 processes
    _, state = loop.read_checkpoint(out + "/ckpt")
    assert summary["replicas_checked"] == len(jax.tree.leaves(state))
    assert "opt_state" in state
    # only process 0 reports
    assert "test_accuracy" in results[0][1] and "test_accuracy" not in results[1][1]
    assert len(loop.read_metrics(os.path.join(out, "metrics.jsonl"))) == 1
    # every step equals the 1-process 8-device step from the same state
    worst = replay_matches(out, 5, CLASSIFY_ARGS, [])
    assert max(worst) < 1e-3, worst  # one ReLU flip moved parameters by 2.9e-5 (docstring)


def test_resume_across_processes_equals_straight_run(two_process_run, tmp_path):
    straight, _ = two_process_run
    out = str(tmp_path / "resumed")
    args = [*CLASSIFY_ARGS, "--out", out, "--ckpt-dir", out + "/ckpt"]
    _ok(launch("train.classify", [*args, "--stop-after-steps", "2"]))
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f)["status"] == "preempted"
    _ok(launch("train.classify", [*args, "--resume"]))
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["status"] == "completed" and summary["resumed_from_step"] == 2
    step, a = loop.read_checkpoint(out + "/ckpt")
    step_ref, b = loop.read_checkpoint(straight + "/ckpt")
    assert step == step_ref == 5
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)  # same processes, same program: bitwise


def test_text_two_processes_match_one_process(tmp_path):
    out = str(tmp_path / "text")
    args = [*TEXT_ARGS, "--out", out, "--ckpt-dir", out + "/ckpt", "--stop-after-steps", "2"]
    _ok(launch("train.text", args))
    replay_matches(out, 2, TEXT_ARGS, [], main=text.main)


def test_pde_two_processes_match_one_process(tmp_path):
    """train.pde on the shared loop: 2 processes x 4 devices = the 1-process 8-device run.

    Same tolerance as the 8-vs-1-device test of tests/test_train_pde.py; the
    loop checks the replicas bitwise across both processes; only process 0
    writes the reports (and draws the predictions from its local copy).
    """
    args = [
        "--equation", "burgers", "--model", "fno_kinetic", "--resolution", "64", "--epochs", "1",
        "--ntrain", "16", "--ntest", "4", "--batch-size", "8", "--no-progress",
        "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    out = str(tmp_path / "mp")
    _ok(launch("train.pde", [*args, "--out", out, "--ckpt-dir", out + "/ckpt"]))
    with open(os.path.join(out, "seed_0", "summary.json")) as f:
        summary = json.load(f)
    assert summary["processes"] == 2 and summary["devices"] == 8 and summary["steps"] == 2
    assert summary["replicas_checked"] > 0
    assert os.path.getsize(os.path.join(out, "seed_0", "predictions.png")) > 1000
    ref = str(tmp_path / "one")
    pde.main([*args, "--out", ref, "--ckpt-dir", ref + "/ckpt"])
    _, a = loop.read_checkpoint(out + "/ckpt/seed_0")
    _, b = loop.read_checkpoint(ref + "/ckpt/seed_0")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if x.dtype.kind in "iub":
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-5)


def _wait_for_checkpoint(out: str, procs, limit: float = 300) -> None:
    deadline = time.time() + limit
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if os.path.isdir(out + "/ckpt") and any(d.isdigit() for d in os.listdir(out + "/ckpt")):
            return
        time.sleep(0.05)


def test_sigterm_to_one_process_stops_all_at_the_same_step(tmp_path):
    """SIGTERM to process 1 only: both save the same step and exit 0; --resume completes."""
    out = str(tmp_path / "sig")
    args = [*CLASSIFY_ARGS, "--epochs", "4", "--out", out, "--ckpt-dir", out + "/ckpt"]
    procs = start("train.classify", args)
    _wait_for_checkpoint(out, procs)
    procs[1].send_signal(signal.SIGTERM)
    results = wait(procs)
    _ok(results)
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    if summary["status"] == "completed":  # the signal came after the end: nothing to test
        pytest.skip("training finished before the signal arrived")
    assert summary["status"] == "preempted"
    assert f"stopped by signal {int(signal.SIGTERM)}" in results[1][2]
    assert "stopped by a signal to another process" in results[0][2]
    step, _ = loop.read_checkpoint(out + "/ckpt")
    assert step == summary["steps"] < 20
    _ok(launch("train.classify", [*args, "--resume"]))
    with open(os.path.join(out, "summary.json")) as f:
        resumed = json.load(f)
    assert resumed["status"] == "completed" and resumed["resumed_from_step"] == step
    assert resumed["steps"] == 20


def test_killed_process_stops_the_others(tmp_path):
    """A process killed mid-run (SIGKILL): the other exits non-zero within --dist-timeout."""
    out = str(tmp_path / "kill")
    args = [*CLASSIFY_ARGS, "--epochs", "20", "--out", out, "--ckpt-dir", out + "/ckpt"]
    procs = start("train.classify", args, dist_timeout=10)
    _wait_for_checkpoint(out, procs)
    t = time.time()
    procs[1].kill()
    [(rc0, _, err0), _] = wait(procs, timeout=120)
    assert rc0 != 0, err0[-2000:]
    assert time.time() - t < 90


def test_missing_peer_fails_within_timeout(tmp_path):
    out = str(tmp_path / "alone")
    t = time.time()
    [(rc, _, err)] = launch(
        "train.classify",
        [*CLASSIFY_ARGS, "--out", out],
        only=[0],
        dist_timeout=5,
        timeout=120,
    )
    assert rc == 2, err[-2000:]
    assert "process(es) [1] of 2 did not join within 5 s" in err and "--dist-timeout" in err
    [(rc, _, err)] = launch(
        "train.classify", [*CLASSIFY_ARGS, "--out", out], only=[1], dist_timeout=3, timeout=120
    )
    assert rc == 2 and "process 1 could not reach process 0" in err, err[-2000:]
    assert time.time() - t < 100


@pytest.mark.parametrize(
    ("argv", "env", "msg"),
    [
        (["--coordinator", "127.0.0.1:1234"], {}, "missing: --num-processes"),
        (["--num-processes", "2", "--process-id", "0"], {}, "missing: --coordinator"),
        (["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"], {},
         "HOST:PORT"),
        (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], {}, "0..1"),
        (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "0", "--parallel",
          "pmap"], {}, "--parallel jit"),
        ([], {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"}, "JAX_PROCESS_ID"),
        ([], {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two",
              "JAX_PROCESS_ID": "0"}, "must be an integer"),
    ],
)  # fmt: skip
def test_bad_distributed_settings_exit_2(argv, env, msg, monkeypatch, capsys):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as e:
        classify.main(["--out", "unused", *argv])
    assert e.value.code == 2
    assert msg in capsys.readouterr().err
