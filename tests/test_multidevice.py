"""KO on 8 (fake CPU) devices: pmap with replicated state, and jit on sharded arrays."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import kinetix

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices (see conftest.py)")


def _problem():
    params = {
        "dense": {
            "kernel": jax.random.normal(jax.random.key(0), (16, 32)) * 0.02,
            "bias": jnp.zeros(32),
        }
    }
    grads = {
        "dense": {"kernel": jax.random.normal(jax.random.key(1), (16, 32)), "bias": jnp.ones(32)}
    }
    return params, grads


TXS = {
    "soft": lambda: kinetix.ko_soft(0.2),
    "hard": lambda: kinetix.ko_hard(0.3, key=jax.random.key(4)),
    "hard_released": lambda: kinetix.ko_hard(0.5, key=4, rule="released"),
}


@pytest.mark.parametrize("name", list(TXS))
def test_pmap_replicated_state_gives_identical_updates(name):
    tx = TXS[name]()
    params, grads = _problem()
    state = tx.init(params)
    single, single_state = jax.jit(tx.update)(grads, state, params)
    n = jax.device_count()
    rep = lambda t: jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *x.shape)), t)  # noqa: E731
    out, out_state = jax.pmap(tx.update, axis_name="batch")(rep(grads), rep(state), rep(params))
    kernel = np.asarray(out["dense"]["kernel"])
    assert kernel.shape[0] == n
    for d in range(1, n):
        np.testing.assert_array_equal(kernel[d], kernel[0])
    np.testing.assert_allclose(kernel[0], single["dense"]["kernel"], rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(out_state.count) == 1)
    if name != "soft":
        assert float(single_state.collision_rate["dense"]["kernel"]) > 0


@pytest.mark.parametrize("axis_type", ["explicit", "auto"])
@pytest.mark.parametrize("name", list(TXS))
def test_sharded_jit_matches_single_device(name, axis_type):
    tx = TXS[name]()
    params, grads = _problem()
    single, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    kw = {"axis_types": (jax.sharding.AxisType.Auto,)} if axis_type == "auto" else {}
    mesh = jax.make_mesh((8,), ("x",), **kw)
    specs = {"dense": {"kernel": P(None, "x"), "bias": P("x")}}
    with jax.set_mesh(mesh):

        def put(t):
            return jax.tree.map(lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), t, specs)

        p_sh, g_sh = put(params), put(grads)
        out, state = jax.jit(tx.update)(g_sh, tx.init(p_sh), p_sh)
    assert out["dense"]["kernel"].sharding.spec == P(None, "x")
    np.testing.assert_allclose(
        np.asarray(out["dense"]["kernel"]),
        np.asarray(single["dense"]["kernel"]),
        rtol=1e-5,
        atol=1e-5,
    )
