"""Tests of train.sweep's paired differences (the tables' statistics)."""

import pytest

from train import sweep


def test_paired_difference_pairs_by_seed():
    runs = [
        {"variant": "a", "seed": 0, "acc": 0.50},
        {"variant": "a", "seed": 1, "acc": 0.60},
        {"variant": "a", "seed": 2, "acc": None},
        {"variant": "b", "seed": 1, "acc": 0.65},
        {"variant": "b", "seed": 0, "acc": 0.40},
        {"variant": "b", "seed": 2, "acc": 0.70},  # no baseline value: not paired
        {"variant": "b", "seed": 3, "acc": 0.90},  # no baseline run: not paired
    ]
    d = sweep.paired_difference(runs, "b", "a", "acc")
    assert d["n"] == 2 and d["higher"] == 1 and d["lower"] == 1
    assert d["per_seed"] == {0: pytest.approx(-0.10), 1: pytest.approx(0.05)}
    assert d["mean"] == pytest.approx(-0.025)
    assert d["std"] == pytest.approx(((0.075**2) * 2) ** 0.5)  # ddof = 1
