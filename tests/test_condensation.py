"""Smoke and consistency tests of train/condensation.py (tiny settings, in-process)."""

import json
import math

import numpy as np
import pytest

from train import condensation

TINY = ["--epochs", "3", "--seeds", "2", "--activations", "tanh", "--no-progress"]
RESULT_KEYS = {
    "activation",
    "optimizer",
    "mean_abs_cos",
    "max_abs_cos",
    "final_loss",
    "lr",
    "coll_coef",
    "collision_rate",
}
STAT_KEYS = ("mean_abs_cos", "max_abs_cos", "final_loss", "collision_rate")


def _load(out):
    with open(out / "summary.json") as f:
        summary = json.load(f)
    with np.load(out / "kernels.npz") as z:
        arrays = dict(z)
    return summary, arrays


def _numpy_similarity(kernel):
    """mean and max |cos| over off-diagonal pairs of the columns of (in, out), float64."""
    w = np.asarray(kernel, np.float64).T
    unit = w / np.linalg.norm(w, axis=1, keepdims=True)
    c = np.abs(unit @ unit.T)
    off = ~np.eye(len(c), dtype=bool)
    return c[off].mean(), c[off].max()


def _check_shape(summary, seeds, epochs, activations):
    assert set(summary) == {"results", "seeds", "epochs", "selection"}
    assert summary["seeds"] == seeds and summary["epochs"] == epochs
    assert isinstance(summary["selection"], str) and summary["selection"]
    pairs = [(r["activation"], r["optimizer"]) for r in summary["results"]]
    assert pairs == [(a, o) for a in activations for o in ("adam", "ko_soft", "ko_hard")]
    for r in summary["results"]:
        assert set(r) == RESULT_KEYS
        for k in STAT_KEYS:
            assert set(r[k]) == {"mean", "std"}
            assert all(math.isfinite(v) for v in r[k].values()), (r, k)
        assert math.isfinite(r["lr"]) and r["lr"] > 0
        if r["optimizer"] == "adam":
            assert r["coll_coef"] is None and r["collision_rate"]["mean"] == 0.0
        else:
            assert math.isfinite(r["coll_coef"]) and 0 <= r["collision_rate"]["mean"] <= 1


def test_tiny_run_outputs_and_metrics(tmp_path):
    out = tmp_path / "run"
    returned = condensation.main(["--out", str(out), "--no-sweep", *TINY])
    for name in (
        "summary.json",
        "sweep.json",
        "table.md",
        "heatmaps.png",
        "kernels.npz",
        "run.json",
    ):
        assert (out / name).is_file(), name
    summary, arrays = _load(out)
    assert summary == json.loads(json.dumps(returned))
    _check_shape(summary, seeds=2, epochs=3, activations=["tanh"])
    assert "| tanh | ko_hard |" in (out / "table.md").read_text()

    # Independent check: the similarity statistics, recomputed in float64 NumPy
    # from the saved final kernels of every seed.
    for r in summary["results"]:
        kernels = arrays[f"kernel/{r['activation']}/{r['optimizer']}"]
        assert kernels.shape == (2, 5, 50)
        sims = np.array([_numpy_similarity(k) for k in kernels])
        np.testing.assert_allclose(r["mean_abs_cos"]["mean"], sims[:, 0].mean(), rtol=1e-5)
        np.testing.assert_allclose(r["max_abs_cos"]["mean"], sims[:, 1].mean(), rtol=1e-5)
        np.testing.assert_allclose(r["max_abs_cos"]["std"], sims[:, 1].std(ddof=1), atol=1e-6)
    # The collisions did change the training.
    assert not np.allclose(arrays["kernel/tanh/adam"], arrays["kernel/tanh/ko_soft"])


def test_zero_coll_coef_matches_adam(tmp_path):
    out = tmp_path / "zero"
    condensation.main(
        ["--out", str(out), "--no-sweep", "--soft-coef", "0", "--hard-coef", "0", *TINY]
    )
    summary, arrays = _load(out)
    rates = {r["optimizer"]: r["collision_rate"]["mean"] for r in summary["results"]}
    assert rates["ko_hard"] == 0.0  # coll_coef 0: Eq. 7 accepts no pair
    # Separately compiled programs may round differently, so not bit-exact.
    for name in ("kernel", "losses"):
        adam = arrays[f"{name}/tanh/adam"]
        for opt in ("ko_soft", "ko_hard"):
            np.testing.assert_allclose(arrays[f"{name}/tanh/{opt}"], adam, rtol=1e-4, atol=1e-7)


def test_sweep_selection_follows_its_rule(tmp_path):
    out = tmp_path / "sweep"
    args = ["--out", str(out), "--sweep-seeds", "1", "--lr-grid", "0.003,0.03"]
    args += ["--coef-grid", "0.05,0.1", "--loss-tolerance", "1e9", *TINY]
    summary = condensation.main(args)
    with open(out / "sweep.json") as f:
        sweep = json.load(f)
    assert sweep["ran"] and sweep["seeds"] == [1000]
    adam = {r["lr"]: r["final_loss"]["mean"] for r in sweep["lr"]["rows"]}
    assert set(adam) == {0.003, 0.03}
    best = min(adam, key=adam.get)
    assert sweep["lr"]["chosen"] == best
    for m in ("ko_soft", "ko_hard"):
        # With an unbounded tolerance every grid value passes: the largest wins.
        assert sweep["coll_coef"][m]["chosen"] == 0.1
        assert {r["lr"] for r in sweep["coll_coef"][m]["rows"]} == {best}
    for r in summary["results"]:
        assert r["lr"] == best
        assert r["coll_coef"] == (None if r["optimizer"] == "adam" else 0.1)


def test_greedy_order_groups_condensed_neurons():
    # Neurons on two orthogonal lines, with signs: 0,2 = +e0; 4 = -e0; 1 = -e1; 3,5 = +e1.
    rng = np.random.default_rng(0)
    e = np.eye(5)[:2]
    line = [0, 1, 0, 1, 0, 1]
    sign = [1, -1, 1, 1, -1, 1]
    w = np.stack([s * e[k] + 1e-3 * rng.normal(size=5) for k, s in zip(line, sign, strict=True)])
    unit = w / np.linalg.norm(w, axis=1, keepdims=True)
    # Start at 0, group {0, 2}; jump to its anti-aligned 4; then the first ungrouped
    # neuron, 1; then 1's anti-aligned group {3, 5}.
    assert condensation.greedy_order(unit @ unit.T) == [0, 2, 4, 1, 3, 5]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--lr", "-1"], "--lr must be"),
        (["--hard-coef", "1.5"], "--hard-coef must be in [0, 1]"),
        (["--coef-grid", "0.1,abc"], "comma-separated numbers"),
    ],
)
def test_bad_flags_exit_with_a_clear_error(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exc:
        condensation.main(["--out", str(tmp_path), *flags])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_out_under_a_file_exits_2(tmp_path, capsys):
    # Issue 10 case 7: before, --out under a file raised NotADirectoryError.
    (tmp_path / "f").write_text("x")
    with pytest.raises(SystemExit) as e:
        condensation.main(["--out", str(tmp_path / "f" / "sub")])
    assert e.value.code == 2
    assert "is a file" in capsys.readouterr().err
