"""Tests of kinetix.nn.KineticResidual (the KITINet residual)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from kinetix.nn import CollisionRate, KineticResidual, kinetic


def _xv(shape, seed=0, x_scale=0.02):
    kx, kv = jax.random.split(jax.random.key(seed))
    return jax.random.normal(kx, shape) * x_scale, jax.random.normal(kv, shape)


@pytest.mark.parametrize("dt", [1.0, 0.5])
def test_eval_and_no_rngs_are_bitwise_plain_residual(dt):
    x, v = _xv((2, 8, 8, 3))
    res = KineticResidual(layout="spatial", n_divide=4, coll_coef=0.9, dt=dt)
    plain = np.asarray(x + v * dt) if dt != 1.0 else np.asarray(x + v)
    np.testing.assert_array_equal(np.asarray(res(x, v)), plain)  # no rngs
    res.eval()
    np.testing.assert_array_equal(np.asarray(res(x, v, rngs=nnx.Rngs(collision=0))), plain)
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda a, b: res(a, b))(x, v)), plain)
    res.train()
    assert not np.array_equal(np.asarray(res(x, v, rngs=nnx.Rngs(collision=0))), plain)


def test_train_mode_collides_records_rate_and_is_deterministic():
    x, v = _xv((2, 8, 8, 3))
    res = KineticResidual(layout="spatial", n_divide=4, coll_coef=0.9)
    a = res(x, v, rngs=nnx.Rngs(collision=3))
    rate = float(res.collision_rate[...])
    assert 0.0 < rate <= 1.0
    assert float(nnx.state(res, CollisionRate)["collision_rate"][...]) == rate
    b = res(x, v, rngs=nnx.Rngs(collision=3))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    c = res(x, v, rngs=nnx.Rngs(collision=4))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    # Momentum: the sum over particles of the displacement equals the sum of v.
    pa = kinetic.to_particles(a - x, "spatial", 4, None)
    pv = kinetic.to_particles(v, "spatial", 4, None)
    np.testing.assert_allclose(np.asarray(pa.sum(1)), np.asarray(pv.sum(1)), atol=1e-4)


def test_under_nnx_jit():
    x, v = _xv((2, 16, 4))
    res = KineticResidual(layout="spatial", n_divide=2, coll_coef=0.9)

    @nnx.jit
    def f(res, x, v, rngs):
        return res(x, v, rngs=rngs)

    out = f(res, x, v, nnx.Rngs(collision=0))
    assert out.shape == x.shape and float(res.collision_rate[...]) > 0


def test_spatial_layout_groups_positions():
    b, h, w, c, nd = 1, 4, 4, 2, 4
    x = jnp.arange(b * h * w * c, dtype=jnp.float32).reshape(b, h, w, c)
    p = kinetic.to_particles(x, "spatial", nd, None)
    n = h * w // nd
    assert p.shape == (b, n, nd * c)
    flat = np.asarray(x).reshape(b, h * w, c)
    for k in range(n):
        expected = np.concatenate([flat[0, k + m * n] for m in range(nd)])
        np.testing.assert_array_equal(np.asarray(p[0, k]), expected)
    np.testing.assert_array_equal(
        np.asarray(kinetic.from_particles(p, x.shape, "spatial", nd, None)), np.asarray(x)
    )


def test_token_layout_splits_each_token():
    x = jnp.arange(2 * 3 * 8, dtype=jnp.float32).reshape(2, 3, 8)
    p = kinetic.to_particles(x, "token", 1, 2)  # particle_dim 2 -> 4 particles per token
    assert p.shape == (6, 4, 2)
    # particle j of token t holds dims {c * n + j}
    np.testing.assert_array_equal(np.asarray(p[0, 1]), np.asarray(x[0, 0, [1, 5]]))
    np.testing.assert_array_equal(
        np.asarray(kinetic.from_particles(p, x.shape, "token", 1, 2)), np.asarray(x)
    )
    res = KineticResidual(layout="token", particle_dim=2, coll_coef=0.9)
    xx, vv = _xv((2, 3, 8))
    out = res(xx, vv, rngs=nnx.Rngs(0))
    assert out.shape == xx.shape and float(res.collision_rate[...]) > 0


def test_bad_configuration_errors():
    with pytest.raises(ValueError, match="layout"):
        KineticResidual(layout="image")
    with pytest.raises(ValueError, match="coll_coef"):
        KineticResidual(coll_coef=2.0)
    with pytest.raises(ValueError, match="particle_dim"):
        KineticResidual(layout="token")
    res = KineticResidual(layout="spatial", n_divide=3)
    x, v = _xv((1, 4, 4, 2))
    with pytest.raises(ValueError, match="n_divide=3 must divide"):
        res(x, v, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="same shape"):
        res(x, v[:, :2], rngs=nnx.Rngs(0))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dt": float("nan")}, "dt"),
        ({"dt": float("inf")}, "dt"),
        ({"length_scale": -1.0}, "length_scale"),
        ({"coll_coef": np.float32(-1)}, "coll_coef"),
        ({"coll_coef": float("nan")}, "coll_coef"),
        ({"n_divide": np.int64(0)}, "n_divide"),
        ({"layout": "token", "particle_dim": 0}, "particle_dim"),
    ],
)
def test_hyperparameters_are_validated(kwargs, match):
    # Issue 10 case 6: before, dt=nan/inf and np.float32(-1) were accepted.
    with pytest.raises((ValueError, TypeError), match=match):
        KineticResidual(**kwargs)


@pytest.mark.parametrize(
    "layout, shape, kw",
    [("spatial", (0, 8, 8, 16), {"n_divide": 4}), ("token", (0, 5, 16), {"particle_dim": 4})],
)
def test_empty_batch(layout, shape, kw):
    # Issue 10 case 7: before, an empty batch raised a gather TypeError.
    res = KineticResidual(layout=layout, coll_coef=0.9, **kw)
    x = jnp.zeros(shape)
    out = res(x, x, rngs=nnx.Rngs(collision=1))
    assert out.shape == shape


def test_nanogpt_variant_half_step_drift_is_dt_one_half():
    # Issue 11 item 5 (documented in the README): the nanoGPT KINET_DSMC drifts
    # by x + v * dt / 2 with dt = 1, so its eval output is x + a / 2; kinetix
    # reproduces it with dt=0.5 (the FNO/ResNet copies use x + v * dt, dt = 1).
    x, v = _xv((2, 5, 8))
    res = KineticResidual(layout="token", particle_dim=2, rule="released", dt=0.5)
    res.eval()
    np.testing.assert_allclose(np.asarray(res(x, v)), np.asarray(x + v / 2), rtol=1e-6)
    res.train()
    out = res(x, v, rngs=nnx.Rngs(collision=0))
    assert out.shape == x.shape and float(res.collision_rate[...]) >= 0.0


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0])
def test_default_collides_on_unit_scale_features(scale):
    # Issue 11: with the released threshold (ell = 1) N(0,1) features collide
    # nothing; the default quota rule collides a fixed share at every scale.
    x, v = _xv((2, 8, 8, 16), x_scale=1.0)
    res = KineticResidual(layout="spatial", n_divide=4)
    res(x * scale, v * scale, rngs=nnx.Rngs(collision=0))
    # 16 particles per system, matching: ceil(0.5 * 16 / 2) = 4 pairs of 120.
    assert float(res.collision_rate[...]) == pytest.approx(4 / 120)
    thr = KineticResidual(layout="spatial", n_divide=4, acceptance="threshold", length_scale=1.0)
    thr(x * scale, v * scale, rngs=nnx.Rngs(collision=0))
    if scale >= 1.0:
        assert float(thr.collision_rate[...]) == 0.0
