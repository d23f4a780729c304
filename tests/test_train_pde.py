"""Smoke tests of train/pde.py (tiny settings, in-process) and of its flag checks."""

import json

import pytest

from train import pde

TINY = ["--epochs", "2", "--ntrain", "8", "--ntest", "4", "--batch-size", "4", "--no-progress"]
SUMMARY_KEYS = {
    "equation",
    "model",
    "test_rel_l2",
    "test_rel_l2_std",
    "collision_rate",
    "params",
    "train_seconds",
    "seeds",
    "settings",
    "per_seed",
    "condensation_w_top_k",
}
ROW_KEYS = {
    "seed",
    "epoch",
    "train_loss",
    "test_rel_l2",
    "condensation_w_top_k",
    "condensation_k_top_k",
    "lr",
    "epoch_seconds",
}


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
    assert 0 < on_disk["test_rel_l2"] < 10 and 0 < on_disk["test_rel_l2_64"] < 10
    assert isinstance(on_disk["params"], int) and on_disk["params"] > 0
    assert on_disk["train_seconds"] > 0
    rate = on_disk["collision_rate"]
    assert len(rate["per_block"]) == 4
    assert all(0 <= r <= 1 for r in rate["per_block"])
    assert rate["overall"] == pytest.approx(sum(rate["per_block"]) / 4)
    assert on_disk["settings"]["rule"] == "hard_sphere" and on_disk["settings"]["coll_coef"] == 0.9

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert ROW_KEYS | {"test_rel_l2_64", "collision_rate"} <= set(r)
        assert len(r["collision_rate"]) == 4 and len(r["condensation_w_top_k"]) == 4
        # top-8 share of 20 channels: between uniform (8/20) and 1
        assert all(8 / 20 - 1e-6 <= s <= 1 for s in r["condensation_w_top_k"])
    assert (out / "condensation.png").stat().st_size > 0
    assert (out / "run.json").exists()


def test_burgers_plain_run(tmp_path):
    out = tmp_path / "b"
    argv = ["--equation", "burgers", "--model", "fno", "--out", str(out), "--resolution", "64"]
    summary = pde.main(argv + TINY + ["--cache-dir", str(tmp_path / "cache")])
    assert summary["collision_rate"] is None
    assert "test_rel_l2_64" not in summary
    assert summary["settings"]["resolution"] == 64
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2 and "collision_rate" not in json.loads(rows[0])


def test_burgers_kinn_run(tmp_path):
    out = tmp_path / "k"
    argv = ["--equation", "burgers", "--model", "fno_kinn", "--out", str(out), "--resolution", "64"]
    summary = pde.main(argv + TINY + ["--kinn-order", "3", "--cache-dir", str(tmp_path / "cache")])
    assert summary["collision_rate"] is None and 0 < summary["test_rel_l2"] < 10
    assert summary["settings"]["kinn_order"] == 3 and summary["settings"]["rule"] is None
    tau = summary["kinn_tau"]["median_per_layer_order"]
    assert len(tau) == 4 and all(len(row) == 3 and min(row) > 0 for row in tau)
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert len(first["condensation_w_top_k"]) == 4  # W branches of the KINN couplings


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
        for m in pde.MODELS
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
    assert bad["per_seed"][0]["final_train_loss"] == good["per_seed"][0]["final_train_loss"]


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
