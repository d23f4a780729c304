"""Tests of the optax transforms kinetix.ko_soft / kinetix.ko_hard."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import kinetix
from kinetix import collision
from tests import reference


def _params(seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    return {
        "conv": {"kernel": jax.random.normal(k1, (3, 3, 2, 4)) * 0.05, "bias": jnp.zeros(4)},
        "classifier": {"kernel": jax.random.normal(k2, (6, 5)) * 0.02, "bias": jnp.zeros(5)},
        "scale": jax.random.normal(k3, ()),
    }


def _grads(seed=1):
    p = _params(seed + 100)
    return jax.tree.map(lambda x: x * 40.0 + 0.1, p)


TRANSFORMS = {
    "soft": lambda **kw: kinetix.ko_soft(0.3, **kw),
    "hard": lambda **kw: kinetix.ko_hard(0.5, key=jax.random.key(3), **kw),
    "hard_paper": lambda **kw: kinetix.ko_hard(0.5, key=jax.random.key(3), rule="paper", **kw),
    "hard_released": lambda **kw: kinetix.ko_hard(0.5, key=7, rule="released", **kw),
}


@pytest.fixture(scope="module")
def update_fns():
    """One jitted update per transform, shared by the tests (compiles are slow on 2 cores)."""
    return {name: (make(), jax.jit(make().update)) for name, make in TRANSFORMS.items()}


def test_public_api():
    assert callable(kinetix.ko_soft) and callable(kinetix.ko_hard)
    assert isinstance(kinetix.ko_hard(), optax.GradientTransformationExtraArgs)
    assert isinstance(kinetix.ko_soft(), optax.GradientTransformationExtraArgs)
    assert sorted(kinetix.__all__) == kinetix.__all__


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_update_matches_per_leaf_collision(update_fns, name):
    tx, update = update_fns[name]
    params, grads = _params(), _grads()
    state = tx.init(params)
    out, new_state = update(grads, state, params)
    # 1-D and 0-D leaves pass through unchanged.
    np.testing.assert_array_equal(out["conv"]["bias"], grads["conv"]["bias"])
    np.testing.assert_array_equal(out["scale"], grads["scale"])
    # The classifier kernel (6, 5): 5 particles in R^6 (axis -1), or 6 in R^5 (released, axis 0).
    w, g = params["classifier"]["kernel"], grads["classifier"]["kernel"]
    if name == "soft":
        ref = reference.soft(np.asarray(w).T, np.asarray(g).T, 0.3).T
        np.testing.assert_allclose(out["classifier"]["kernel"], ref, rtol=1e-4, atol=1e-5)
    else:
        axis = 0 if name == "hard_released" else -1
        # The default is the paper's update with the quota rule and ell = mean distance.
        options = {
            "hard": {"rule": "paper", "acceptance": "quota", "length_scale": "mean"},
            "hard_paper": {"rule": "paper"},
            "hard_released": {"rule": "released"},
        }[name]
        ref, _ = collision.hard_collide(
            collision.as_particles(w, axis),
            collision.as_particles(g, axis),
            # leaf 1 in flattening order (classifier/bias, classifier/kernel, conv/..): find it
            _leaf_key(state.key, 0, params, ("classifier", "kernel")),
            0.5,
            **options,
        )
        ref = collision.from_particles(ref, w.shape, axis)
        np.testing.assert_allclose(out["classifier"]["kernel"], ref, rtol=1e-5, atol=1e-6)
        # momentum of the particles is conserved
        np.testing.assert_allclose(
            out["classifier"]["kernel"].sum(axis), g.sum(axis), rtol=1e-4, atol=1e-4
        )
    assert int(new_state.count) == 1
    assert new_state.key.dtype == state.key.dtype
    rates = kinetix.collision_rates(new_state)
    assert set(rates) == {
        "classifier/bias",
        "classifier/kernel",
        "conv/bias",
        "conv/kernel",
        "scale",
    }
    assert rates["scale"] == 0.0 and 0.0 < rates["classifier/kernel"] <= 1.0


def _leaf_key(key, count, tree, path):
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    idx = [tuple(k.key for k in p) for p, _ in leaves].index(path)
    return jax.random.split(jax.random.fold_in(jax.random.fold_in(key, count), idx))[0]


@pytest.mark.parametrize("name", ["hard", "hard_released"])
def test_same_key_same_updates_different_key_differs(update_fns, name):
    tx, update = update_fns[name]
    params, grads = _params(), _grads()
    s = tx.init(params)
    a, s1 = update(grads, s, params)
    b, _ = update(grads, tx.init(params), params)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    # The next step uses fold_in(key, 1): different directions from step 0.
    c, _ = update(grads, s1, params)
    assert not np.array_equal(a["conv"]["kernel"], c["conv"]["kernel"])
    other = TRANSFORMS[name]()
    s_other = other.init(params)._replace(key=jax.random.key(12345))
    d, _ = update(grads, s_other, params)
    assert not np.array_equal(a["conv"]["kernel"], d["conv"]["kernel"])


@pytest.mark.parametrize("name", ["soft", "hard"])
def test_jit_equals_eager(update_fns, name):
    tx, update = update_fns[name]
    params, grads = _params(), _grads()
    state = tx.init(params)
    jitted, _ = update(grads, state, params)
    with jax.disable_jit():
        eager, _ = tx.update(grads, state, params)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), jitted, eager)


def test_key_forms_are_equivalent(update_fns):
    params = _params()
    ref = jax.random.key_data(jax.random.key(5))
    for key in (5, jax.random.key(5), np.int32(5), jax.random.key_data(jax.random.key(5))):
        state = kinetix.ko_hard(0.5, key=key).init(params)
        assert jnp.issubdtype(state.key.dtype, jax.dtypes.prng_key)
        np.testing.assert_array_equal(jax.random.key_data(state.key), ref)


def test_chain_with_base_optimizers_and_training_decreases_loss():
    # A small regression problem: chaining KO before adamw still trains.
    x = jax.random.normal(jax.random.key(0), (64, 6))
    y = jnp.sin(x @ jnp.arange(1.0, 7.0))[:, None]
    params = {
        "hidden": {
            "kernel": jax.random.normal(jax.random.key(1), (6, 16)) * 0.3,
            "bias": jnp.zeros(16),
        },
        "out": {"kernel": jax.random.normal(jax.random.key(2), (16, 1)) * 0.3},
    }

    def loss(p):
        h = jnp.tanh(x @ p["hidden"]["kernel"] + p["hidden"]["bias"])
        return jnp.mean((h @ p["out"]["kernel"] - y) ** 2)

    for ko in (kinetix.ko_soft(0.1), kinetix.ko_hard(0.1, key=0)):
        tx = optax.chain(ko, optax.adamw(1e-2))

        @jax.jit
        def step(p, s, tx=tx):
            g = jax.grad(loss)(p)
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        p, s = params, tx.init(params)
        l0 = loss(p)
        for _ in range(60):
            p, s = step(p, s)
        assert loss(p) < 0.5 * l0


def test_mask_forms():
    params, grads = _params(), _grads()
    bool_tree = {
        "conv": {"kernel": False, "bias": False},
        "classifier": {"kernel": True, "bias": False},
        "scale": False,
    }
    outs = []
    for mask in (bool_tree, kinetix.path_mask("classifier/kernel"), lambda p: bool_tree):
        tx = kinetix.ko_soft(0.3, mask=mask)
        out, state = jax.jit(tx.update)(grads, tx.init(params), params)
        np.testing.assert_array_equal(out["conv"]["kernel"], grads["conv"]["kernel"])
        assert not np.array_equal(out["classifier"]["kernel"], grads["classifier"]["kernel"])
        outs.append(out)
        rates = kinetix.collision_rates(state)
        assert list(rates) == ["classifier/kernel"]
    for o in outs[1:]:
        jax.tree.map(np.testing.assert_array_equal, outs[0], o)
    # optax.masked around KO gives the same result as KO's own mask.
    tx = optax.masked(kinetix.ko_soft(0.3), bool_tree)
    out, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    jax.tree.map(np.testing.assert_array_equal, outs[0], out)


def test_inject_hyperparams_schedule():
    params, grads = _params(), _grads()
    sched = optax.linear_schedule(0.0, 0.5, transition_steps=4)
    tx = optax.inject_hyperparams(kinetix.ko_hard)(coll_coef=sched, key=3)
    state = tx.init(params)
    update = jax.jit(tx.update)
    out0, state = update(grads, state, params)
    # coll_coef = 0 at step 0: identity.
    jax.tree.map(np.testing.assert_array_equal, out0, grads)
    for _ in range(3):
        _, state = update(grads, state, params)
    out4, state = update(grads, state, params)
    np.testing.assert_allclose(float(state.hyperparams["coll_coef"]), 0.5)
    # At step 4 it equals a constant-coefficient ko_hard at its 5th step (count 4).
    const = kinetix.ko_hard(0.5, key=3)
    cs = const.init(params)._replace(count=jnp.asarray(4, jnp.int32))
    ref, _ = jax.jit(const.update)(grads, cs, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), out4, ref)
    # Soft with a constant, injected coefficient.
    tx = optax.inject_hyperparams(kinetix.ko_soft)(coll_coef=0.2)
    out, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    ref, _ = kinetix.ko_soft(0.2).update(grads, kinetix.ko_soft(0.2).init(params), params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), out, ref)


def test_inject_hyperparams_with_callable_mask_needs_static_args():
    params = _params()
    with pytest.raises(TypeError, match="static_args"):
        optax.inject_hyperparams(kinetix.ko_soft)(0.1, mask=kinetix.path_mask("classifier")).init(
            params
        )
    tx = optax.inject_hyperparams(kinetix.ko_soft, static_args=("mask",))(
        0.1, mask=kinetix.path_mask("classifier/kernel")
    )
    out, _ = jax.jit(tx.update)(_grads(), tx.init(params), params)
    np.testing.assert_array_equal(out["conv"]["kernel"], _grads()["conv"]["kernel"])


def test_soft_noise_option_uses_key():
    params, grads = _params(), _grads()
    a = kinetix.ko_soft(0.0, noise_scale=1e-2, key=1)
    b = kinetix.ko_soft(0.0, noise_scale=1e-2, key=2)
    ua, _ = a.update(grads, a.init(params), params)
    ua2, _ = a.update(grads, a.init(params), params)
    ub, _ = b.update(grads, b.init(params), params)
    jax.tree.map(np.testing.assert_array_equal, ua, ua2)
    diff = np.asarray(ua["conv"]["kernel"] - grads["conv"]["kernel"])
    assert 0.005 < diff.std() < 0.02
    assert not np.array_equal(ua["conv"]["kernel"], ub["conv"]["kernel"])


def test_orbax_round_trip_reproduces_next_step(tmp_path):
    import orbax.checkpoint as ocp

    params, grads = _params(), _grads()
    tx = optax.chain(kinetix.ko_hard(0.5, key=jax.random.key(9)), optax.adamw(1e-3))
    update = jax.jit(tx.update)
    state = tx.init(params)
    _, state = update(grads, state, params)
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(tmp_path / "state", state)
    ckpt.wait_until_finished()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    restored = ckpt.restore(tmp_path / "state", abstract)
    assert restored[0].key.dtype == state[0].key.dtype
    np.testing.assert_array_equal(
        jax.random.key_data(restored[0].key), jax.random.key_data(state[0].key)
    )
    a, sa = update(grads, state, params)
    b, sb = update(grads, restored, params)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert int(sb[0].count) == 2


def test_bad_inputs():
    params, grads = _params(), _grads()
    for tx in (kinetix.ko_soft(), kinetix.ko_hard()):
        state = tx.init(params)
        with pytest.raises(ValueError, match="need the current parameters"):
            tx.update(grads, state)
        with pytest.raises(ValueError, match="trees differ"):
            tx.update({"a": grads["scale"]}, state, params)
        bad = jax.tree.map(lambda x: x, params)
        bad["classifier"]["kernel"] = jnp.ones((5, 6))
        with pytest.raises(ValueError, match="shape"):
            tx.update(grads, state, bad)
    with pytest.raises(ValueError, match="coll_coef"):
        kinetix.ko_hard(1.5)
    with pytest.raises(ValueError, match="coll_coef"):
        kinetix.ko_soft(-0.1)
    with pytest.raises(ValueError, match="rule"):
        kinetix.ko_hard(rule="pytorch")
    with pytest.raises(TypeError, match="key"):
        kinetix.ko_hard(key="seed").init(params)
    with pytest.raises(TypeError, match="single bool"):
        kinetix.ko_hard(mask=True)
    with pytest.raises(ValueError, match="matched no leaf"):
        kinetix.ko_soft(mask=kinetix.path_mask("nonexistent")).init(params)
    with pytest.raises(ValueError, match="out of range"):
        kinetix.ko_soft(axis=3).update(grads, kinetix.ko_soft().init(params), params)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_nonfinite_gradient_is_passed_through_and_counted(update_fns, name):
    tx, update = update_fns[name]
    params, grads = _params(), _grads()
    grads["classifier"]["kernel"] = grads["classifier"]["kernel"].at[0, 0].set(jnp.nan)
    grads["conv"]["kernel"] = grads["conv"]["kernel"].at[0, 0, 0, 0].set(jnp.inf)
    out, state = update(grads, tx.init(params), params)
    # The non-finite leaves are returned as they came (their NaN/inf are not spread
    # to other particles); the finite leaves still collide and stay finite.
    np.testing.assert_array_equal(out["classifier"]["kernel"], grads["classifier"]["kernel"])
    np.testing.assert_array_equal(out["conv"]["kernel"], grads["conv"]["kernel"])
    assert int(state.nonfinite_skips) == 2
    assert np.isfinite(np.asarray(out["classifier"]["kernel"])).sum() == 29


def test_integer_and_one_particle_leaves_pass_through():
    params = {
        "table": jnp.arange(6, dtype=jnp.int32).reshape(2, 3),
        "one": jnp.ones((4, 1)),
        "w": jnp.ones((4, 3)) * jnp.arange(3.0),
    }
    grads = {
        "table": jnp.ones((2, 3), jnp.int32),
        "one": jnp.full((4, 1), 2.0),
        "w": jnp.ones((4, 3)),
    }
    for tx in (kinetix.ko_soft(0.5), kinetix.ko_hard(1.0)):
        out, state = tx.update(grads, tx.init(params), params)
        np.testing.assert_array_equal(out["table"], grads["table"])
        if "hard" in repr(tx):
            np.testing.assert_array_equal(out["one"], grads["one"])
        assert np.all(np.isfinite(np.asarray(out["w"])))
    # one particle under soft collision: its own gradient scaled by (1 - c).
    tx = kinetix.ko_soft(0.5)
    out, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(out["one"], 0.5 * grads["one"])
    tx = kinetix.ko_hard(1.0)
    out, state = tx.update(grads, tx.init(params), params)
    np.testing.assert_array_equal(out["one"], grads["one"])
    assert float(state.collision_rate["one"]) == 0.0


def test_nnx_optimizer():
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.body = nnx.Linear(4, 8, rngs=rngs)
            self.classifier = nnx.Linear(8, 3, rngs=rngs)

        def __call__(self, x):
            return self.classifier(jax.nn.relu(self.body(x)))

    model = Net(nnx.Rngs(0))
    tx = optax.chain(
        kinetix.ko_hard(0.5, key=1, mask=kinetix.path_mask("classifier/kernel")), optax.sgd(0.1)
    )
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(0), (16, 4))
    y = jax.random.randint(jax.random.key(1), (16,), 0, 3)

    @nnx.jit
    def step(model, opt):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    losses = [float(step(model, opt)) for _ in range(5)]
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    rates = kinetix.collision_rates(opt.opt_state)
    assert list(rates) and all("classifier" in k for k in rates)


class _BNNet:
    """A conv + BatchNorm + classifier network (built lazily: flax is imported in the test)."""

    @staticmethod
    def make(seed: int):
        from flax import nnx

        class Net(nnx.Module):
            def __init__(self, rngs):
                self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
                self.bn = nnx.BatchNorm(4, momentum=0.9, rngs=rngs)
                self.classifier = nnx.Linear(4, 6, rngs=rngs)

            def __call__(self, x):
                h = jax.nn.relu(self.bn(self.conv(x)))
                return self.classifier(h.mean(axis=(1, 2)))

        return Net(nnx.Rngs(seed))


@pytest.mark.parametrize("kind", ["soft", "hard", "optax_masked_hard"])
def test_masked_ko_inside_nnx_optimizer_with_batchnorm(kind):
    """path_mask + nnx.Optimizer(wrt=nnx.Param) on a BatchNorm model equals plain optax.

    The same update computed by ``optax`` on the pure parameter pytree (an
    independent path, no NNX) must give the same parameters and KO state; the
    BatchNorm statistics are updated by the forward pass and untouched by the
    optimizer; only the masked leaf collides.
    """
    from flax import nnx

    mask = kinetix.path_mask(r"classifier/kernel")

    def make_tx():
        if kind == "soft":
            ko = kinetix.ko_soft(0.5, mask=mask)
        elif kind == "hard":
            ko = kinetix.ko_hard(1.0, key=3, mask=mask)
        else:
            ko = optax.masked(kinetix.ko_hard(1.0, key=3), mask)
        return optax.chain(ko, optax.sgd(0.1, momentum=0.9))

    model = _BNNet.make(0)
    opt = nnx.Optimizer(model, make_tx(), wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(0), (32, 6, 6, 1))
    y = jax.random.randint(jax.random.key(1), (32,), 0, 6)

    def loss_fn(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    @nnx.jit
    def step(model, opt):
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss, grads

    # the independent path: pure pytrees, optax only
    ref_model = _BNNet.make(0)
    graphdef, params, rest = nnx.split(ref_model, nnx.Param, ...)
    params = nnx.to_pure_dict(params)
    tx = make_tx()
    ref_state = tx.init(params)
    stats_before = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))

    @jax.jit
    def ref_step(params, rest, opt_state):
        def f(p):
            m = nnx.merge(graphdef, p, rest, copy=True)
            loss = loss_fn(m)
            return loss, nnx.state(m, nnx.BatchStat)

        (loss, stats), g = jax.value_and_grad(f, has_aux=True)(params)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, stats

    for _ in range(3):
        loss, grads = step(model, opt)
        # (training-mode BatchNorm normalises with the batch's statistics, so the
        # running averages in `rest` do not enter the loss)
        params, ref_state, ref_loss, _ = ref_step(params, rest, ref_state)
        np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-6)
    got = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, params)
    # only the classifier kernel collided; BatchNorm statistics moved, and not via the optimizer
    rates = kinetix.collision_rates(opt.opt_state)
    assert list(rates) and all("classifier" in k and "kernel" in k for k in rates), rates
    assert all(v > 0 for v in rates.values()), rates
    stats_after = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
    assert not np.allclose(stats_after["bn"]["mean"], stats_before["bn"]["mean"])
    opt_paths = jax.tree.leaves(kinetix.leaf_paths(opt.opt_state))
    assert not any("bn/mean" in p or "bn/var" in p for p in opt_paths), opt_paths


@pytest.mark.parametrize(
    "factory, kwargs, match",
    [
        (kinetix.ko_soft, {"coll_coef": float("inf")}, "coll_coef"),
        (kinetix.ko_soft, {"noise_scale": float("inf")}, "noise_scale"),
        (kinetix.ko_soft, {"noise_scale": -1.0}, "noise_scale"),
        (kinetix.ko_soft, {"coll_coef": np.float32(-1)}, "coll_coef"),
        (kinetix.ko_soft, {"coll_coef": jnp.float32(-1)}, "coll_coef"),
        (kinetix.ko_soft, {"threshold": float("nan")}, "threshold"),
        (kinetix.ko_hard, {"coll_coef": np.float32(5)}, "coll_coef"),
        (kinetix.ko_hard, {"coll_coef": float("nan")}, "coll_coef"),
        (kinetix.ko_hard, {"length_scale": -1}, "length_scale"),
        (kinetix.ko_hard, {"length_scale": float("inf")}, "length_scale"),
        (kinetix.ko_hard, {"scale": np.float64(-2)}, "scale"),
        (kinetix.ko_hard, {"chunk_size": 0}, "chunk_size"),
        (kinetix.ko_hard, {"axis": 1.0}, "axis"),
    ],
)
def test_hyperparameters_are_validated_for_numpy_and_jax_scalars(factory, kwargs, match):
    # Issue 10 case 6: before, NumPy/JAX scalars and inf skipped the range check.
    with pytest.raises((ValueError, TypeError), match=match):
        factory(**kwargs)


@pytest.mark.parametrize("key", [2**70, -(2**63) - 1, True, np.bool_(False), 1.5])
def test_bad_keys_raise_type_error(key):
    with pytest.raises(TypeError, match="key"):
        kinetix.ko_hard(0.1, key=key)


def test_in_range_seeds_and_numpy_seeds_are_accepted():
    for key in (0, 2**63 - 1, -(2**63), np.int64(7), jnp.int32(7)):
        kinetix.ko_hard(0.1, key=key).init({"w": jnp.ones((2, 2))})


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_zero_size_leaves_pass_through(update_fns, name):
    # Issue 10 case 7: before, a (10, 0) leaf raised ZeroDivisionError.
    tx, update = update_fns[name]
    params = {"a": jnp.zeros((10, 0)), "b": jnp.zeros((0, 10)), "c": jnp.zeros((3, 0, 2))}
    params["w"] = jax.random.normal(jax.random.key(0), (4, 3))
    grads = jax.tree.map(lambda p: p + 1.0, params)
    out, state = update(grads, tx.init(params), params)
    for k in ("a", "b", "c"):
        assert out[k].shape == params[k].shape
    assert int(state.nonfinite_skips) == 0


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_extreme_gradient_scales_through_the_optimizer(scale):
    params = {"w": jax.random.normal(jax.random.key(0), (16, 8)) * 0.05}
    grads = {"w": jax.random.normal(jax.random.key(1), (16, 8))}
    for tx in (kinetix.ko_hard(0.5, key=3), kinetix.ko_soft(0.5)):
        ref, ref_state = tx.update(grads, tx.init(params), params)
        big = jax.tree.map(lambda g: g * scale, grads)
        out, state = tx.update(big, tx.init(params), params)
        assert bool(jnp.all(jnp.isfinite(out["w"])))
        assert int(state.nonfinite_skips) == 0
        np.testing.assert_allclose(
            float(state.collision_rate["w"]), float(ref_state.collision_rate["w"])
        )
        np.testing.assert_allclose(
            np.asarray(out["w"], np.float64) / scale, ref["w"], atol=1e-5, rtol=1e-5
        )


def test_released_rule_on_a_conv_kernel_takes_every_input_position_as_a_particle():
    # Issue 11 item 5: the code's particles are the columns of the PyTorch
    # weight.view(out, -1): each (kh, kw, in) position, a vector over `out`.
    w = jax.random.normal(jax.random.key(0), (3, 3, 4, 8)) * 0.1
    g = jax.random.normal(jax.random.key(1), (3, 3, 4, 8))
    tx = kinetix.ko_hard(0.9, key=5, rule="released")
    state = tx.init({"k": w})
    out, _ = tx.update({"k": g}, state, {"k": w})
    ref, info = collision.hard_collide(
        w.reshape(36, 8),
        g.reshape(36, 8),
        _leaf_key(state.key, 0, {"k": w}, ("k",)),
        0.9,
        rule="released",
    )
    assert int(info.num_pairs) > 0
    np.testing.assert_array_equal(np.asarray(out["k"]), np.asarray(ref.reshape(w.shape)))
    # On a 2-D (in, out) kernel this is axis 0, as before.
    w2 = w.reshape(36, 8)
    np.testing.assert_array_equal(
        collision.as_particles(w2, "inputs"), collision.as_particles(w2, 0)
    )


def test_include_self_false_differs_from_the_code_wg_i_only_on_zero_rows():
    # Documented difference (README): the code's "wg_i" subtracts I from S, so a
    # zero weight row (cosine 0 with everything, itself included) gets
    # g_i* = g_i - c * (0 - 1) * g_i = (1 + c) g_i; kinetix zeroes the diagonal
    # instead and leaves such a row's gradient as it is.
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 4)).astype(np.float32)
    g = rng.normal(size=(5, 4)).astype(np.float32)
    c = 0.3
    out, _ = collision.soft_collide(w, g, c, include_self=False)

    def code_wg_i(w, g):
        s = reference.cos_matrix(w) * reference.cos_matrix(g) - np.eye(len(w))
        return g - c * s @ g

    np.testing.assert_allclose(np.asarray(out), code_wg_i(w, g), rtol=1e-4, atol=1e-5)
    w[2] = 0.0
    out, _ = collision.soft_collide(w, g, c, include_self=False)
    code = code_wg_i(w, g)
    np.testing.assert_allclose(np.asarray(out[2]), g[2], rtol=1e-6)
    np.testing.assert_allclose(code[2], (1 + c) * g[2], rtol=1e-6)


@pytest.mark.parametrize("shape", [(512, 10), (512, 100)])
def test_default_ko_hard_collides_on_a_lecun_normal_kernel(shape):
    # Issue 11: the paper's threshold (rule="paper") collides no pair here; the
    # default quota rule collides ceil(0.1 * N / 2) pairs of the N output units.
    kw, kg = jax.random.split(jax.random.key(0))
    params = {"kernel": jax.nn.initializers.lecun_normal()(kw, shape)}
    grads = {"kernel": jax.random.normal(kg, shape) * 1e-2}
    rates = {}
    for name, tx in (("default", kinetix.ko_hard()), ("paper", kinetix.ko_hard(rule="paper"))):
        _, state = tx.update(grads, tx.init(params), params)
        rates[name] = float(state.collision_rate["kernel"])
    n = shape[1]
    assert rates["default"] == pytest.approx(np.ceil(0.1 * n / 2) / (n * (n - 1) / 2))
    assert rates["paper"] == 0.0
