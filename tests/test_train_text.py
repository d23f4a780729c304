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


def test_missing_data_dir_says_it_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(SystemExit) as e:
        text.main(["--dataset", "imdb_reviews", "--data-dir", str(missing), "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"the data dir {str(missing)!r} does not exist" in err and "TFRECORD" not in err
    assert f"tfds build imdb_reviews --data_dir {missing}" in err


def test_corrupt_imdb_record_file_is_a_clear_error(tmp_path, capsys, monkeypatch):
    """A damaged array_record file (mocked: array_record's RuntimeError on a read) exits 2."""
    import tensorflow_datasets as tfds

    class Damaged:
        def __len__(self):
            return 300

        def __getitem__(self, i):
            raise RuntimeError("Corrupted Riegeli/records file: chunk data hash mismatch")

    monkeypatch.setattr(tfds, "data_source", lambda *args, **kwargs: Damaged())
    with pytest.raises(SystemExit) as e:
        text.main([*TINY, "--dataset", "imdb_reviews", "--data-dir", str(tmp_path),
                   "--out", str(tmp_path / "out")])  # fmt: skip
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: TFDS data set 'imdb_reviews' is damaged")
    assert "Corrupted Riegeli" in err and str(tmp_path) in err
    assert f"tfds build imdb_reviews --data_dir {tmp_path} --file_format=array_record" in err
    assert "Traceback" not in err


def test_out_under_a_file_exits_2_before_loading_data(tmp_path, capsys, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("the set-up check must come before loading the data")

    monkeypatch.setattr(text.text_data, "load_text", no_data)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as e:
        text.main([*TINY, "--out", str(tmp_path / "file" / "sub")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--out" in err and "is a file, not a directory" in err
    assert len(err.strip().splitlines()) == 1


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
