"""train.pde_table: the PDE table from separate runs (synthetic summaries with known values)."""

from __future__ import annotations

import json
import os

import pytest

from train import pde_table


def _summary(eq: str, model: str, per_seed: list[float], **size) -> dict:
    sizes = {"resolution": 256, "ntrain": 400, "ntest": 100, "epochs": 40, "batch_size": 20}
    sizes |= size
    rows = [{"seed": s, "test_rel_l2": v, "test_rel_l2_64": 2 * v} for s, v in enumerate(per_seed)]
    kinetic = model == "fno_kinetic"
    return {
        "equation": eq,
        "model": model,
        "status": "completed",
        "test_rel_l2": sum(per_seed) / len(per_seed),
        "test_rel_l2_std": 0.0,
        "test_rel_l2_64": 0.0,
        "test_rel_l2_64_std": 0.0,
        "baseline_mean_rel_l2": 0.032,
        "collision_rate": {"per_block": [0.01, 0.02], "overall": 0.015} if kinetic else None,
        "params": 123,
        "train_seconds": 10.0,
        "train_seconds_std": 1.0,
        "median_epoch_seconds": 0.5,
        "seeds": list(range(len(per_seed))),
        "settings": {"rule": "hard_sphere", "kinn_order": 2, **sizes},
        "per_seed": rows,
    }


def _write_run(directory, name: str, summary: dict, runtime: float | None = 12.0) -> None:
    os.makedirs(directory / name)
    with open(directory / name / "summary.json", "w") as f:
        json.dump(summary, f)
    if runtime is not None:
        with open(directory / name / "run.json", "w") as f:
            json.dump({"command": f"python -m train.pde --out {name}", "runtime_s": runtime}, f)


def test_table_pairs_by_seed_and_lists_the_runs(tmp_path):
    _write_run(tmp_path, "b_kin", _summary("burgers", "fno_kinetic", [0.13, 0.19]))
    _write_run(tmp_path, "b_fno", _summary("burgers", "fno", [0.10, 0.20]), runtime=30.0)
    _write_run(tmp_path, "h_fno", _summary("heat", "fno", [0.5, 0.25], resolution=64), None)
    os.makedirs(tmp_path / "not_a_run")
    path = pde_table.main([str(tmp_path)])
    text = open(path).read()
    # rows in equation x model order, whatever the directory names
    rows = [line for line in text.splitlines() if line.startswith("| burgers | fno")]
    assert [r.split("|")[2].strip() for r in rows] == ["fno", "fno_kinetic"]
    assert "| heat | fno |" in text
    # kinetic - plain per seed: +0.03, -0.01 (mean 0.01)
    assert "(per seed: +0.0300, -0.0100)" in text
    assert "burgers `test_rel_l2`: 0.0100 ±" in text
    assert "0.0100, 0.0200" in text  # the kinetic run's collision rate per block
    assert "Total wall time of the sweep: 42 s." in text
    assert "- `h_fno` (time not recorded)" in text
    assert "- `b_fno` (30 s): `python -m train.pde --out b_fno`" in text


def test_refuses_mixed_sizes_duplicates_and_unfinished_runs(tmp_path, capsys):
    _write_run(tmp_path, "a", _summary("burgers", "fno", [0.1]))
    _write_run(tmp_path, "b", _summary("burgers", "fno_kinetic", [0.1], epochs=10))
    with pytest.raises(ValueError, match="different sizes"):
        pde_table.collect(str(tmp_path))
    _write_run(tmp_path / "dup", "x", _summary("heat", "fno", [0.1]))
    _write_run(tmp_path / "dup", "y", _summary("heat", "fno", [0.1]))
    with pytest.raises(ValueError, match="two runs of heat_fno"):
        pde_table.collect(str(tmp_path / "dup"))
    unfinished = _summary("heat", "fno", [0.1]) | {"status": "preempted"}
    _write_run(tmp_path / "pre", "x", unfinished)
    with pytest.raises(SystemExit) as e:
        pde_table.main([str(tmp_path / "pre")])
    assert e.value.code == 2 and "--resume" in capsys.readouterr().err
    os.makedirs(tmp_path / "empty")
    for target in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(SystemExit) as e:
            pde_table.main([str(target)])
        assert e.value.code == 2
