"""train.text: the offline synthetic default, IMDb through mocked TFDS, clear errors."""

from __future__ import annotations

import json
import os

import pytest

from train import loop, text

TINY = [
    "--width", "16", "--depth", "1", "--heads", "2", "--epochs", "1", "--batch-size", "64",
    "--num-train", "256", "--num-test", "100", "--no-progress",
]  # fmt: skip


def test_synthetic_default_runs(tmp_path):
    summary = text.main([*TINY, "--ko", "soft", "--out", str(tmp_path)])
    assert summary["status"] == "completed" and summary["steps"] == 4
    assert summary["dataset"] == "synthetic" and summary["ko"] == "soft"
    with open(tmp_path / "summary.json") as f:
        on_disk = json.load(f)
    assert on_disk["test_accuracy"] == summary["test_accuracy"]
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    rows = loop.read_metrics(str(tmp_path / "metrics.jsonl"))
    assert len(rows) == 1 and 0 <= rows[0]["collision_rate"] <= 1
    assert os.path.exists(tmp_path / "curves.png")


def test_imdb_from_mocked_tfds(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=256):
        summary = text.main(
            [*TINY, "--dataset", "imdb_reviews", "--max-len", "32", "--out", str(tmp_path)]
        )
    assert summary["status"] == "completed" and summary["dataset"] == "imdb_reviews"


def test_unprepared_imdb_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        text.main(["--dataset", "imdb_reviews", "--data-dir", str(tmp_path), "--out", "x"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "tfds build" in err and "imdb_reviews" in err


def test_bad_flags(capsys):
    for argv, msg in (
        (["--out", "x", "--width", "30", "--heads", "4"], "must divide --width"),
        (["--out", "x", "--dropout", "1.5"], "--dropout must be"),
        (
            ["--out", "x", "--model", "transformer_kinetic", "--width", "12", "--heads", "2"],
            "multiple of 8",
        ),
    ):
        with pytest.raises(SystemExit) as e:
            text.main(argv)
        assert e.value.code == 2 and msg in capsys.readouterr().err
