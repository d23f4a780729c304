"""Tests of train/report.py (the shared reporting helpers)."""

import json
import statistics

import pytest

from train import report


def test_mean_std_is_the_sample_std():
    values = [0.3, 0.1, 0.7, 0.2]
    m, s = report.mean_std(values)
    assert m == pytest.approx(statistics.fmean(values))
    assert s == pytest.approx(statistics.stdev(values))  # ddof = 1
    assert report.mean_std([2.5]) == (2.5, 0.0)
    assert report.mean_std_dict([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(2**0.5)}
    with pytest.raises(ValueError, match="at least one"):
        report.mean_std([])


def test_paired_difference_uses_shared_seeds_only():
    d = report.paired_difference({0: 1.0, 1: 0.5, 2: 3.0}, {0: 0.5, 1: 1.0, 5: 9.0})
    assert d["seeds"] == [0, 1] and d["values"] == [0.5, -0.5] and d["n"] == 2
    assert d["mean"] == 0.0 and d["std"] == pytest.approx(statistics.stdev([0.5, -0.5]))
    assert d["better_count"] == 1
    assert report.fmt_paired(d, 2) == "+0.00 ± 0.71 (per seed: +0.50, -0.50)"
    empty = report.paired_difference({0: 1.0}, {1: 1.0})
    assert empty["mean"] is None and report.fmt_paired(empty) == "no shared seeds"


def test_formatting():
    assert report.fmt_mean_std(0.2, 0.1) == "0.2000 ± 0.1000"
    assert report.fmt_mean_std(0.2, 0.1, 2, signed=True) == "+0.20 ± 0.10"
    assert report.markdown_table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |"


def test_write_json_and_run_info(tmp_path):
    path = tmp_path / "s.json"
    report.write_json(str(path), {"a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    assert not (tmp_path / "s.json.tmp").exists()
    info = report.run_info("python -m x", runtime_s=1.5)
    assert info["command"] == "python -m x" and info["runtime_s"] == 1.5
    assert {"jax", "optax", "kinetix", "backend", "cpu_count", "platform"} <= set(info)
