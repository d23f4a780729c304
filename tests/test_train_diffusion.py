"""Smoke and consistency tests of train/diffusion.py (the --quick path, in-process)."""

import json
import math

import numpy as np
import pytest

from train import diffusion as train_diffusion


def test_quick_run_outputs(tmp_path):
    out = tmp_path / "quick"
    summary = train_diffusion.main(["--out", str(out), "--quick", "--no-progress"])
    assert (out / "table.md").exists() and (out / "accuracy.png").stat().st_size > 0
    with open(out / "summary.json") as f:
        on_disk = json.load(f)
    assert on_disk["results"] == json.loads(json.dumps(summary["results"]))
    cfg = summary["config"]
    assert cfg["quick"] and cfg["seeds"] == 2 and cfg["epochs"] == 5
    rows = [(r["dataset"], r["method"], r["normalization"]) for r in summary["results"]]
    assert rows == [
        (ds, m, None if m == "none" else "symmetric")
        for ds in ("moons", "digits")
        for m in ("none", "diffresnet", "coin")
    ]
    for r in summary["results"]:
        accs = r["accuracy"]["values"]
        assert len(accs) == 2 and all(0.0 <= a <= 1.0 for a in accs)
        assert math.isclose(r["accuracy"]["mean"], float(np.mean(accs)), rel_tol=1e-12)
        if r["method"] == "none":
            assert r["delta_vs_none"] is None and r["lambda_max"] is None
        else:
            # Paired delta = mean over seeds of (acc - acc_none).
            base = next(
                b
                for b in summary["results"]
                if b["dataset"] == r["dataset"] and b["method"] == "none"
            )
            diff = np.asarray(accs) - np.asarray(base["accuracy"]["values"])
            assert math.isclose(r["delta_vs_none"]["mean"], float(diff.mean()), abs_tol=1e-12)
            assert 0.0 < r["gamma_lambda_max"]["mean"] <= 2.0 + 1e-5
    table = (out / "table.md").read_text()
    assert "| digits | coin | symmetric | 0.5 | 10 |" in table
    assert "python -m train.diffusion --out" in table and "--quick" in table


def test_unstable_gamma_is_refused(tmp_path):
    # lambda_max(L_sym) of the kNN graph is about 1, so gamma=5 violates gamma * lambda <= 2.
    argv = ["--out", str(tmp_path), "--quick", "--no-progress", "--datasets", "moons"]
    with pytest.raises(ValueError, match=r"gamma \* lambda_max\(L\) <= 2"):
        train_diffusion.main([*argv, "--methods", "diffresnet", "--gamma", "5"])


@pytest.mark.parametrize(
    "flags",
    [["--seeds", "0"], ["--gamma", "-1"], ["--n-top", "1"], ["--methods", "coin", "coin"]],
)
def test_bad_flags_exit(tmp_path, flags, capsys):
    with pytest.raises(SystemExit):
        train_diffusion.main(["--out", str(tmp_path), "--quick", *flags])
    assert "error" in capsys.readouterr().err


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit):
        train_diffusion.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--quick", "--gamma", "--steps", "--normalizations", "--labels-per-class"):
        assert flag in text


def test_out_under_a_file_exits_2(tmp_path, capsys):
    # Issue 10 case 7: before, --out under a file raised NotADirectoryError.
    (tmp_path / "f").write_text("x")
    with pytest.raises(SystemExit) as e:
        train_diffusion.main(["--out", str(tmp_path / "f" / "sub")])
    assert e.value.code == 2
    assert "is a file" in capsys.readouterr().err
