"""Tests of train.text_table: the sweep's table plus command, wall time and the BoW baseline.

``train.text`` is replaced by a fake that writes a summary with made-up numbers,
so the tabulation is checked exactly and fast (the real runs are tested in
tests/test_train_text.py).
"""

from __future__ import annotations

import json
import os
import types

import pytest

from train import loop, sweep, text_table

# test accuracy of each (variant, seed), and of the BoW baseline
ACC = {
    ("adamw", 0): 0.70,
    ("adamw", 1): 0.72,
    ("adamw+soft", 0): 0.71,
    ("adamw+soft", 1): 0.75,
    ("adamw+hard", 0): 0.60,
    ("adamw+hard", 1): 0.64,
}


def _fake_text(bow_of_seed):
    calls = []

    def main(argv):
        seed = int(argv[argv.index("--seed") + 1])
        out = argv[argv.index("--out") + 1]
        variant = {"soft": "adamw+soft", "hard": "adamw+hard"}.get(
            argv[argv.index("--ko") + 1] if "--ko" in argv else "", "adamw"
        )
        calls.append((variant, seed, argv))
        acc = ACC[variant, seed]
        summary = {
            "status": "completed",
            "test_accuracy": acc,
            "best_test_accuracy": acc,
            "train_seconds": 10.0,
            "bow_test_accuracy": bow_of_seed(seed),
        }
        os.makedirs(out, exist_ok=True)
        loop.write_json(os.path.join(out, "summary.json"), summary)
        return summary

    return types.SimpleNamespace(main=main), calls


def test_table(tmp_path, monkeypatch, capsys):
    fake, calls = _fake_text(lambda seed: 0.7)
    monkeypatch.setitem(sweep.SCRIPTS, "text", fake)
    out = str(tmp_path / "t")
    summary = text_table.main([out, "--seeds", "0", "1", "--common", "--epochs 3"])
    assert len(calls) == 6
    assert all(argv[:2] == ["--epochs", "3"] for _, _, argv in calls)
    assert summary["bow_test_accuracy"] == 0.7
    assert summary["command"] == "python -m train.text_table " + out + (
        " --seeds 0 1 --common '--epochs 3'"
    )
    soft = summary["paired_differences"]["adamw+soft"]["test_accuracy"]
    assert soft["mean"] == pytest.approx(0.02) and soft["higher"] == 2
    with open(os.path.join(out, "table.md")) as f:
        table = f.read()
    assert table.startswith(f"Command: `{summary['command']}`")
    assert (
        "test accuracy **0.7000**; AdamW Transformer: 0.7100 ± 0.0141 (difference +0.0100)" in table
    )
    assert "60 s of training in all runs" in table
    assert "(difference +0.0100).\n\n`python -m train.text --epochs 3`" in table
    assert "| adamw+hard | -0.0900 ± 0.0141 |" in table  # the sweep's paired rows follow
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f)["bow_test_accuracy"] == 0.7
    # Restarted: nothing is run again.
    text_table.main([out, "--seeds", "0", "1", "--common", "--epochs 3"])
    assert len(calls) == 6
    assert "Command:" in capsys.readouterr().out


def test_different_baselines_are_refused(tmp_path, monkeypatch):
    fake, _ = _fake_text(lambda seed: 0.7 + 0.01 * seed)
    monkeypatch.setitem(sweep.SCRIPTS, "text", fake)
    with pytest.raises(SystemExit, match="different"):
        text_table.main([str(tmp_path), "--seeds", "0", "1"])
