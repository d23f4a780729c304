"""Tests of train/pde.py: outputs, the shared loop's resume / SIGTERM / multi-device paths, flags."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from train import loop, pde

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--epochs", "2", "--ntrain", "8", "--ntest", "4", "--batch-size", "4", "--no-progress"]
TINY += ["--devices", "1"]  # the tests see 8 fake CPU devices (conftest); batch 4
SUMMARY_KEYS = {
    "equation",
    "model",
    "status",
    "test_rel_l2",
    "test_rel_l2_std",
    "baseline_mean_rel_l2",
    "collision_rate",
    "params",
    "train_seconds",
    "seeds",
    "settings",
    "per_seed",
    "condensation_w_top_k",
}
ROW_KEYS = {
    "epoch",
    "step",
    "train_rel_l2",
    "test_rel_l2",
    "condensation_w_top_k",
    "condensation_k_top_k",
    "learning_rate",
    "train_seconds",
    "collision_rates",
}


def _rows(out, seed=0):
    return loop.read_metrics(os.path.join(out, f"seed_{seed}", "metrics.jsonl"))


def test_heat_kinetic_run_writes_documented_outputs(tmp_path):
    out = tmp_path / "run"
    argv = ["--equation", "heat", "--model", "fno_kinetic", "--out", str(out)]
    argv += TINY + ["--cache-dir", str(tmp_path / "cache")]
    summary = pde.main(argv)
    with open(out / "summary.json") as f:
        on_disk = json.load(f)
    assert on_disk == json.loads(json.dumps(summary))
    assert SUMMARY_KEYS | {"test_rel_l2_64"} <= set(on_disk)
    assert on_disk["equation"] == "heat" and on_disk["model"] == "fno_kinetic"
    assert on_disk["status"] == "completed"
    assert 0 < on_disk["test_rel_l2"] < 10 and 0 < on_disk["test_rel_l2_64"] < 10
    assert isinstance(on_disk["params"], int) and on_disk["params"] > 0
    assert on_disk["train_seconds"] > 0
    rate = on_disk["collision_rate"]
    assert len(rate["per_block"]) == 4
    assert all(0 <= r <= 1 for r in rate["per_block"])
    assert rate["overall"] == pytest.approx(sum(rate["per_block"]) / 4)
    assert on_disk["settings"]["rule"] == "hard_sphere" and on_disk["settings"]["coll_coef"] == 0.9

    rows = _rows(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert ROW_KEYS | {"test_rel_l2_64", "kinetic_collision_rate"} <= set(r)
        assert len(r["collision_rates"]) == 4 and len(r["condensation_w_top_k"]) == 4
        assert all(k.startswith("kinetic/") for k in r["collision_rates"])
        # top-8 share of 20 channels: between uniform (8/20) and 1
        assert all(8 / 20 - 1e-6 <= s <= 1 for s in r["condensation_w_top_k"])
    # the per-seed summary is the loop's; its errors are the last row's
    with open(out / "seed_0" / "summary.json") as f:
        seed_summary = json.load(f)
    assert seed_summary["test_rel_l2"] == rows[-1]["test_rel_l2"] == on_disk["test_rel_l2"]
    assert seed_summary["best_test_rel_l2"] == min(r["test_rel_l2"] for r in rows)
    for name in ("condensation.png", "errors.png", "seed_0/curves.png", "seed_0/predictions.png"):
        assert (out / name).stat().st_size > 1000, name
    assert (out / "run.json").exists()


def test_burgers_plain_run(tmp_path):
    out = tmp_path / "b"
    argv = ["--equation", "burgers", "--model", "fno", "--out", str(out), "--resolution", "64"]
    summary = pde.main(argv + TINY + ["--cache-dir", str(tmp_path / "cache")])
    assert summary["collision_rate"] is None
    assert "test_rel_l2_64" not in summary
    assert summary["settings"]["resolution"] == 64
    rows = _rows(out)
    assert len(rows) == 2 and rows[0]["collision_rates"] == {}
    assert rows[0]["kinetic_collision_rate"] is None


def test_mean_baseline_is_the_conserved_mean():
    """Predicting mean(u0) everywhere: exact when the solution is that constant."""
    x = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
    y = np.broadcast_to(x.mean(axis=1, keepdims=True), x.shape)
    assert pde.mean_baseline(x, y) == pytest.approx(0.0, abs=1e-6)
    assert pde.mean_baseline(x, y + 1.0) > 0.1


def test_burgers_kinn_run(tmp_path):
    out = tmp_path / "k"
    argv = ["--equation", "burgers", "--model", "fno_kinn", "--out", str(out), "--resolution", "64"]
    summary = pde.main(argv + TINY + ["--kinn-order", "3", "--cache-dir", str(tmp_path / "cache")])
    assert summary["collision_rate"] is None and 0 < summary["test_rel_l2"] < 10
    assert summary["settings"]["kinn_order"] == 3 and summary["settings"]["rule"] is None
    tau = summary["kinn_tau"]["median_per_layer_order"]
    assert len(tau) == 4 and all(len(row) == 3 and min(row) > 0 for row in tau)
    assert len(_rows(out)[0]["condensation_w_top_k"]) == 4  # W branches of the KINN couplings


def test_burgers_oformer_kinetic_run(tmp_path):
    """OFormer with KITINet residuals from the CLI: collisions logged for its 8 encoder adds."""
    out = tmp_path / "o"
    argv = ["--equation", "burgers", "--model", "oformer_kinetic", "--out", str(out)]
    summary = pde.main(argv + ["--resolution", "64", *TINY, "--cache-dir", str(tmp_path / "c")])
    assert summary["settings"]["coll_coef"] == pde.COLL_COEF["oformer_kinetic"]
    assert summary["settings"]["n_divide"] is None and 0 < summary["test_rel_l2"] < 10
    rate = summary["collision_rate"]
    assert len(rate["per_block"]) == 8 and min(rate["per_block"]) > 0  # defaults act
    rows = _rows(out)
    assert rows[0]["condensation_w_top_k"] == [] and len(rows[0]["collision_rates"]) == 8
    assert (out / "seed_0" / "predictions.png").stat().st_size > 1000
    assert not (out / "condensation.png").exists()  # OFormer has no W/K branches


def test_oformer_flags():
    _, _, base = pde.parse(["--equation", "heat", "--model", "oformer_kinetic", "--out", "x"])
    cfg = pde.resolve_config(base, "heat", "oformer_kinetic")
    assert cfg["coll_coef"] == 0.5 and cfg["rule"] == "hard_sphere" and cfg["n_divide"] is None
    _, _, base = pde.parse(["--equation", "heat", "--model", "fno_kinetic", "--out", "x"])
    assert pde.resolve_config(base, "heat", "fno_kinetic")["coll_coef"] == 0.9


# ---------------------------------------------------------- the shared loop's guarantees

RUN = [
    "--equation", "burgers", "--model", "fno_kinetic", "--resolution", "64", *TINY,
    "--ckpt-every", "1", "--keep", "10",
]  # fmt: skip
_TIMING = {"train_seconds", "data_wait_seconds", "examples_per_second", "data_wait_fraction"}


def _final_state(ckpt: str):
    mngr = ocp.CheckpointManager(os.path.abspath(ckpt))
    step = mngr.latest_step()
    tree = mngr.restore(step, args=ocp.args.StandardRestore())
    mngr.close()
    leaves = []
    for x in jax.tree.leaves(tree):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        leaves.append(np.asarray(x))
    return step, leaves


def _assert_bitwise(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def _main(tmp, name, *extra):
    out = os.path.join(tmp, name)
    cache = os.path.join(tmp, "cache")
    argv = [*RUN, "--out", out, "--ckpt-dir", out + "/ckpt", "--cache-dir", cache, *extra]
    return pde.main(argv), out


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("pde_straight"))
    summary, out = _main(tmp, "straight")
    return tmp, summary, out, _final_state(out + "/ckpt/seed_0")


@pytest.mark.parametrize("stop_at", [1, 2, 3])
def test_preempt_and_resume_is_bitwise(straight, tmp_path, stop_at):
    """4 steps straight vs. stopped after ``stop_at`` steps and resumed: the same state,
    metrics and summary (timings aside); 2 ends the first epoch."""
    cache, ref_summary, ref_out, (_, reference) = straight
    out = str(tmp_path / "resumed")
    argv = [*RUN, "--out", out, "--ckpt-dir", out + "/ckpt", "--cache-dir", cache + "/cache"]
    first = pde.main([*argv, "--stop-after-steps", str(stop_at)])
    assert first["status"] == "preempted" and first["seeds_completed"] == []
    second = pde.main([*argv, "--resume"])
    assert second["status"] == "completed"
    step, state = _final_state(out + "/ckpt/seed_0")
    assert step == 4
    _assert_bitwise(state, reference)
    strip = [{k: v for k, v in r.items() if k not in _TIMING} for r in _rows(out)]
    assert strip == [{k: v for k, v in r.items() if k not in _TIMING} for r in _rows(ref_out)]
    assert second["test_rel_l2"] == ref_summary["test_rel_l2"]
    assert second["collision_rate"] == ref_summary["collision_rate"]


def test_resume_refuses_other_settings(straight, tmp_path, capsys):
    cache, _, _, _ = straight
    out = str(tmp_path / "other")
    argv = [*RUN, "--out", out, "--ckpt-dir", out + "/ckpt", "--cache-dir", cache + "/cache"]
    pde.main([*argv, "--stop-after-steps", "1"])
    with pytest.raises(SystemExit) as err:
        pde.main([*argv, "--resume", "--lr", "0.01"])
    assert err.value.code == 2
    assert "lr" in capsys.readouterr().err


def test_sigterm_saves_and_resume_is_bitwise(straight, tmp_path):
    """A real SIGTERM to ``python -m train.pde``; resuming here matches the straight run."""
    cache, _, _, (_, reference) = straight
    out = str(tmp_path / "sig")
    ckpt = out + "/ckpt/seed_0"
    argv = [*RUN, "--out", out, "--ckpt-dir", out + "/ckpt", "--cache-dir", cache + "/cache"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "train.pde", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if os.path.isdir(ckpt) and any(d.isdigit() for d in os.listdir(ckpt)):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    if summary["status"] == "completed":  # the signal came after the end: nothing to test
        pytest.skip("training finished before the signal arrived")
    assert b"stopped by signal" in err and b"--resume" in err
    resumed = pde.main([*argv, "--resume"])
    assert resumed["status"] == "completed"
    _assert_bitwise(_final_state(ckpt)[1], reference)


@pytest.mark.parametrize("model", ["fno", "fno_kinetic"])
def test_eight_devices_match_one(tmp_path, model):
    """jit over 8 devices (batch 8 sharded 1 per device) computes the 1-device run.

    Two steps; parameters agree to float32 rounding (GELU networks, no
    collision cut crossed in 2 steps on this data), the 8 replicas are bitwise
    equal (the loop's own check), and pmap gives the same numbers as jit for
    the plain model.
    """
    base = [
        "--equation", "burgers", "--model", model, "--resolution", "64", "--epochs", "1",
        "--ntrain", "16", "--ntest", "4", "--batch-size", "8", "--no-progress",
        "--cache-dir", str(tmp_path / "cache"), "--ckpt-every", "100",
    ]  # fmt: skip
    states = {}
    for name, extra in (
        ("one", ["--devices", "1"]),
        ("eight", ["--devices", "8"]),
        ("pmap", ["--devices", "8", "--parallel", "pmap"]),
    ):
        out = str(tmp_path / name)
        summary = pde.main([*base, *extra, "--out", out, "--ckpt-dir", out + "/ckpt"])
        assert summary["status"] == "completed"
        with open(os.path.join(out, "seed_0", "summary.json")) as f:
            seed_summary = json.load(f)
        assert seed_summary["devices"] == (1 if name == "one" else 8)
        if name == "eight":
            assert seed_summary["replicas_checked"] > 0
        states[name] = _final_state(out + "/ckpt/seed_0")[1]
    for other in ("eight", "pmap") if model == "fno" else ("eight",):
        for a, b in zip(states["one"], states[other], strict=True):
            if a.dtype.kind in "iub":
                np.testing.assert_array_equal(a, b)
            else:
                # float32 partial sums differ (8 shards vs 1), and Adam's m / sqrt(v) can amplify
                # that for tiny gradients: measured 1.2e-6 on a weight of 8e-4. A wrong batch or a
                # missing gradient mean moves every weight by ~lr = 1e-3.
                np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_sweep_table(tmp_path):
    """write_sweep_table on hand-made summaries (no training)."""

    def summary(eq, model, errs):
        s = {
            "equation": eq,
            "model": model,
            "test_rel_l2": sum(errs) / len(errs),
            "test_rel_l2_std": 0.01,
            "collision_rate": {"per_block": [0.1, 0.2], "overall": 0.15}
            if model == "fno_kinetic"
            else None,
            "train_seconds": 3.0,
            "train_seconds_std": 0.5,
            "median_epoch_seconds": 0.1,
            "params": 10,
            "settings": {"rule": "hard_sphere" if model == "fno_kinetic" else None},
            "per_seed": [
                {"seed": i, "test_rel_l2": e, "test_rel_l2_64": e} for i, e in enumerate(errs)
            ],
        }
        if eq == "heat":
            s.update(test_rel_l2_64=s["test_rel_l2"], test_rel_l2_64_std=0.02)
        return s

    summaries = {
        f"{eq}_{m}": summary(eq, m, [0.1, 0.2] if m == "fno" else [0.2, 0.4])
        for eq in pde.EQUATIONS
        for m in pde.SWEEP_MODELS
    }
    sizes = {eq: dict(pde.SWEEP[eq], batch_size=20) for eq in pde.EQUATIONS}
    path = tmp_path / "table.md"
    pde.write_sweep_table(summaries, sizes, [0, 1], 12.0, str(path))
    text = path.read_text()
    assert "| burgers | fno_kinetic | hard_sphere | 0.3000 ± 0.0100 |" in text
    assert "0.1000, 0.2000" in text
    assert "burgers `test_rel_l2`: 0.1500 ± 0.0707" in text  # paired differences 0.1, 0.2
    assert "| heat | fno_kinn | order None | 0.3000 ± 0.0100 |" in text
    assert "Paired difference KINN − plain" in text


@pytest.mark.parametrize(
    "argv,message",
    [
        ([], "--equation is required"),
        (["--equation", "heat", "--model", "fno"], "--out is required"),
        (["--equation", "wave", "--model", "fno", "--out", "x"], "invalid choice"),
        (
            ["--equation", "heat", "--model", "fno", "--out", "x", "--epochs", "0"],
            "--epochs must be >= 1",
        ),
        (["--equation", "heat", "--model", "fno", "--out", "x", "--lr", "-1"], "--lr must be"),
        (["--equation", "heat", "--model", "fno", "--out", "x", "--lr", "nan"], "--lr must be"),
        (
            ["--equation", "heat", "--model", "fno_kinetic", "--out", "x", "--coll-coef", "2"],
            "--coll-coef",
        ),
        (
            ["--equation", "heat", "--model", "fno", "--out", "x", "--coll-coef", "0.5"],
            "only applies",
        ),
        (
            ["--equation", "heat", "--model", "fno", "--out", "x", "--resolution", "64"],
            "burgers only",
        ),
        (
            ["--equation", "burgers", "--model", "fno", "--out", "x", "--resolution", "24"],
            "--resolution",
        ),
        (
            ["--equation", "burgers", "--model", "fno_kinetic", "--out", "x", "--resolution", "34"],
            "--n-divide",
        ),
        (["--equation", "heat", "--model", "fno", "--out", "x", "--ntrain", "5"], "--batch-size"),
        (["--equation", "heat", "--model", "fno", "--out", "x", "--seeds", "1", "1"], "--seeds"),
        (["--equation", "heat", "--model", "fno", "--out", "x", "--seeds", "-1"], "--seeds"),
        (
            ["--equation", "heat", "--model", "fno_kinetic", "--out", "x", "--n-divide", "0"],
            "--n-divide",
        ),
        (
            ["--equation", "heat", "--model", "fno_kinetic", "--out", "x", "--n-divide", "3"],
            "--n-divide",
        ),
        (
            ["--equation", "heat", "--model", "oformer_kinetic", "--out", "x", "--n-divide", "4"],
            "--n-divide only applies to --model fno_kinetic",
        ),
        (
            ["--equation", "heat", "--model", "oformer", "--out", "x", "--coll-coef", "0.5"],
            "only applies",
        ),
        (
            ["--equation", "heat", "--model", "fno", "--out", "x", "--rule", "soft"],
            "invalid choice",
        ),
        (["--sweep-results", "d", "--equation", "heat"], "cannot be combined"),
        (
            ["--equation", "heat", "--model", "fno", "--out", "x", "--kinn-order", "3"],
            "--kinn-order only applies",
        ),
        (
            ["--equation", "heat", "--model", "fno_kinn", "--out", "x", "--kinn-order", "0"],
            "--kinn-order must be",
        ),
        (
            ["--equation", "heat", "--model", "fno_kinn", "--out", "x", "--rule", "released"],
            "only applies to --model fno_kinetic",
        ),
    ],
)
def test_bad_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as err:
        pde.parse(argv)
    assert err.value.code == 2
    assert message in capsys.readouterr().err


def test_out_must_be_a_directory(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(SystemExit):
        pde.parse(["--equation", "heat", "--model", "fno", "--out", str(path)])
    assert "not a directory" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--out", "--sweep-results"])
def test_out_under_a_file_exits_2_with_one_line(tmp_path, capsys, flag):
    (tmp_path / "file").write_text("")
    argv = [flag, str(tmp_path / "file" / "sub")]
    if flag == "--out":
        argv += ["--equation", "heat", "--model", "fno"]
    with pytest.raises(SystemExit) as err:
        pde.parse(argv)
    assert err.value.code == 2
    out = capsys.readouterr().err
    assert f"{flag} {tmp_path / 'file' / 'sub'} cannot be created" in out and "is a file" in out
    assert len(out.strip().splitlines()) == 1  # the message, no usage block


def test_unusable_cache_dir_runs_uncached(tmp_path):
    """A --cache-dir under a file: one warning, and the same run as with a working cache."""
    (tmp_path / "file").write_text("")
    argv = ["--equation", "burgers", "--model", "fno", "--resolution", "64", *TINY]
    with pytest.warns(RuntimeWarning, match="not usable") as caught:
        bad = pde.main(
            [*argv, "--out", str(tmp_path / "a"), "--cache-dir", str(tmp_path / "file/c")]
        )
    assert len([w for w in caught if "cache dir" in str(w.message)]) == 1
    good = pde.main([*argv, "--out", str(tmp_path / "b"), "--cache-dir", str(tmp_path / "cache")])
    assert bad["per_seed"][0]["test_rel_l2"] == good["per_seed"][0]["test_rel_l2"]
    assert bad["per_seed"][0]["final_train_rel_l2"] == good["per_seed"][0]["final_train_rel_l2"]


def test_size_precedence():
    _, _, base = pde.parse(
        ["--equation", "burgers", "--model", "fno", "--out", "x", "--quick", "--epochs", "3"]
    )
    cfg = pde.resolve_config(base, "burgers", "fno")
    assert cfg["epochs"] == 3 and cfg["ntrain"] == pde.QUICK["burgers"]["ntrain"]
    _, _, base = pde.parse(["--sweep-results", "d"])
    assert base["seeds"] == list(pde.SWEEP_SEEDS)
    cfg = pde.resolve_config(base, "heat", "fno_kinetic")
    assert cfg["epochs"] == pde.SWEEP["heat"]["epochs"] and cfg["n_divide"] == "auto"
    _, _, base = pde.parse(["--equation", "heat", "--model", "fno", "--out", "x"])
    assert pde.resolve_config(base, "heat", "fno")["epochs"] == pde.PAPER["heat"]["epochs"]
