"""Smoke and consistency tests of train/condensation.py (tiny settings, in-process)."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
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
        (["--lrs", "1e-3,-1"], "--lrs values must be finite and > 0"),
        (["--lrs", "1e-3,1e-3"], "--lrs has duplicates"),
        (["--flow-factors", "0.5"], "--flow-factors values must be finite and >= 1"),
        (["--flow-factors", "1"], "repeated step counts"),
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


# --------------------------------------------------------------- learning-rate sweep

SWEEP_LRS = [1e-2, 1e-4, 1e-3]  # given unsorted on purpose
# Same epochs, seeds and activation as TINY, so the compiled programs are shared.
SWEEP = [
    "--epochs", "3", "--seeds", "2", "--activations", "tanh", "--no-progress",
    "--lrs", ",".join(map(str, SWEEP_LRS)), "--flow-factors", "2.5", "--coef-grid", "0.1,0.5",
]  # fmt: skip
FILES = ("summary.json", "sweep.json", "table.md", "heatmaps.png", "lr_sweep.png", "kernels.npz")


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "run"
    summary = condensation.main(["--out", str(out), *SWEEP])
    with open(out / "sweep.json") as f:
        record = json.load(f)
    return out, summary, record


def _rows(record, protocol, **match):
    return [
        r
        for r in record["runs"]
        if r["protocol"] == protocol and all(r[k] == v for k, v in match.items())
    ]


def test_sweep_covers_the_given_lrs(sweep_run):
    _, summary, record = sweep_run
    assert record["ran"] and record["lrs"] == sorted(SWEEP_LRS)
    assert record["seeds"] == [0, 1] and record["epochs"] == 3
    for lr in SWEEP_LRS:
        for opt in ("adam", "ko_soft", "ko_hard"):
            (r,) = _rows(record, "epochs", lr=lr, optimizer=opt)
            assert r["steps"] == 3 and r["activation"] == "tanh"
            for m in condensation.METRICS:
                vals = r["per_seed"][m]
                assert len(vals) == 2 and all(math.isfinite(v) for v in vals)
                np.testing.assert_allclose(r["stats"][m]["mean"], np.mean(vals), rtol=1e-12)
    # lr*: Adam's largest mean |cos|, recomputed from the per-seed values.
    adam = {
        r["lr"]: np.mean(r["per_seed"]["mean_abs_cos"])
        for r in _rows(record, "epochs", optimizer="adam")
    }
    lr_star = max(adam, key=adam.get)
    assert record["lr_star"] == lr_star
    assert {r["lr"] for r in summary["results"]} == {lr_star}
    # Fixed training time: lr x steps = lr* x epochs, steps = k x epochs.
    assert record["flow"]["steps"] == [3, 8]  # round(2.5 x 3)
    for steps in (3, 8):
        rows = _rows(record, "flow", steps=steps)
        assert len(rows) == 3
        for r in rows:
            np.testing.assert_allclose(r["lr"] * r["steps"], lr_star * 3, rtol=1e-12)
    # coll_coef sensitivity at lr*, and the paired differences (same seed).
    for opt in ("ko_soft", "ko_hard"):
        assert sorted(r["coll_coef"] for r in _rows(record, "coef", optimizer=opt)) == [0.1, 0.5]
    for protocol in ("epochs", "flow"):
        for r in _rows(record, protocol):
            if r["optimizer"] == "adam":
                continue
            (ref,) = _rows(record, protocol, lr=r["lr"], steps=r["steps"], optimizer="adam")
            d = np.subtract(r["per_seed"]["mean_abs_cos"], ref["per_seed"]["mean_abs_cos"])
            p = r["paired_vs_adam"]["mean_abs_cos"]
            np.testing.assert_allclose(p["mean"], d.mean(), atol=1e-12)
            np.testing.assert_allclose(p["std"], d.std(ddof=1), atol=1e-12)
            assert p["negative"] == int(np.sum(d < 0)) and p["n"] == 2


def test_sweep_matches_single_lr_runs(sweep_run, tmp_path):
    """A sweep point is the same training as a run of that lr alone (same seeds)."""
    _, _, record = sweep_run
    lr_star = record["lr_star"]
    single = condensation.main(["--out", str(tmp_path / "a"), "--lr", repr(lr_star), *SWEEP])
    for res in single["results"]:
        (r,) = _rows(record, "epochs", lr=lr_star, optimizer=res["optimizer"])
        for m in ("mean_abs_cos", "max_abs_cos", "final_loss", "collision_rate"):
            assert res[m] == r["stats"][m], (res["optimizer"], m)
    # The fixed-time point: lr*/2.5 for 2.5 x 3 = 8 steps (rounded), lr x steps = lr* x 3.
    for opt, coef in (("adam", 0.0), ("ko_soft", 0.1), ("ko_hard", 0.3)):
        (r,) = _rows(record, "flow", steps=8, optimizer=opt)
        out = condensation.run_config("tanh", opt, [0, 1], lr_star * 3 / 8, coef, 8, 3, "paper")
        np.testing.assert_array_equal(out["mean_abs_cos"], r["per_seed"]["mean_abs_cos"])


def test_sweep_outputs_are_deterministic(sweep_run, tmp_path):
    out, _, record = sweep_run
    again = tmp_path / "again"
    condensation.main(["--out", str(again), *SWEEP])
    for name in FILES:
        first = (out / name).read_bytes()
        if name == "table.md":  # its last section is the command, which names --out
            first = first.replace(str(out).encode(), str(again).encode())
        assert first == (again / name).read_bytes(), name
    # A seed fixes its run: seed 0 alone trains the same network as in a batch of 2.
    _, arrays = _load(out)
    alone = condensation.run_config("tanh", "adam", [0], record["lr_star"], 0.0, 3, 3, "paper")
    np.testing.assert_allclose(
        alone["kernel"][0], arrays["kernel/tanh/adam"][0], rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(alone["losses"][0], arrays["losses/tanh/adam"][0], rtol=1e-5)


def test_tiny_sweep_writes_figure_and_table(sweep_run):
    import matplotlib.image

    out, _, record = sweep_run
    for name in FILES:
        assert (out / name).is_file(), name
    img = matplotlib.image.imread(out / "lr_sweep.png")
    assert img.ndim == 3 and img.shape[0] > 500 and img.shape[1] > 300
    table = (out / "table.md").read_text()
    for heading in (
        "## At a glance",
        "## Learning-rate sweep",
        "## Small-lr limit",
        "## coll_coef",
    ):
        assert heading in table
    for lr in SWEEP_LRS:
        assert f"| {lr:.3g} | 3 | tanh | ko_hard | 0.3 |" in table, lr
    assert "(lr* × 3)" in table and f"lr*={record['lr_star']:g}" in table


def test_loss_curve_and_kernel_match_an_eager_optax_loop():
    """jit + fori_loop vs a plain Python loop of optax.adam; the loss curve samples
    the loss before every k-th step when steps = k x record."""
    lr, steps, record = 1e-2, 6, 3
    out = condensation.run_config("tanh", "adam", [0], lr, 0.0, steps, record, "paper")
    inp = jax.tree.map(lambda a: a[0], condensation.make_inputs(jnp.array([0])))
    params, tx = inp["params"], optax.adam(lr)
    state, losses = tx.init(params), []
    for _ in range(steps):
        loss, grads = jax.value_and_grad(condensation.mse)(params, inp["x"], inp["y"], "tanh")
        losses.append(float(loss))
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(out["losses"][0], losses[1::2], rtol=1e-5)  # t = 1, 3, 5
    np.testing.assert_allclose(out["kernel"][0], params["hidden"]["kernel"], rtol=1e-4, atol=1e-7)
    final = condensation.mse(params, inp["x"], inp["y"], "tanh")
    np.testing.assert_allclose(out["final_loss"][0], final, rtol=1e-5)
