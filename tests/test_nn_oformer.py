"""Tests of kinetix.nn.oformer: OFormer (linear-attention neural operator) with plain/kinetic residuals.

Kept small for CPU: width 16 (8 particles of 2 per token), depth 1, 2 decoder
heads, 1 propagator MLP, grids of 32-256 points. Models are built by one jitted
initialiser (eager NNX construction compiles every initialiser separately).
Keys use the ``rbg`` PRNG implementation (faster XLA compiles on CPU).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from kinetix.data import pde
from kinetix.nn import collision_rates
from kinetix.nn.oformer import (
    LinearAttention,
    OFormer,
    OFormer1d,
    OFormer2d,
    apply_rotary,
    instance_norm,
    layer_collision_rates,
    linear_attention,
)

SMALL = dict(width=16, latent=16, depth=1, decoder_heads=2, propagator_depth=1)


def key(seed):
    return jax.random.key(seed, impl="rbg")


def build(make):
    """``make()`` with its initialisers in one compiled program (as train.loop.init_model)."""
    graphdef, _ = nnx.split(nnx.eval_shape(make))
    return nnx.merge(graphdef, jax.jit(lambda: nnx.split(make())[1])())


def small(cls=OFormer1d, residual="plain", **kw):
    kw = SMALL | kw
    return build(lambda: cls(residual=residual, rngs=nnx.Rngs(key(0)), **kw))


@nnx.jit
def forward(model, u, rngs):
    return model(u, rngs=rngs)


def smooth(n, shift=0.0):
    x = np.arange(n) / n
    u = np.stack(
        [np.sin(2 * np.pi * (x + shift)) + 0.5 * np.cos(4 * np.pi * x), np.cos(2 * np.pi * x)]
    )
    return jnp.asarray(u, jnp.float32)


@pytest.fixture(scope="module")
def plain():
    return small()


@pytest.fixture(scope="module")
def kinetic():
    return small(residual="kinetic")


# --------------------------------------------------------------- NumPy reference


def np_instance_norm(x):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5)


def np_rotary(t, pos, scale, min_freq):
    """Rotary embedding written pair by pair: features ``(i, i + d/2)`` of each axis block."""
    t = np.array(t, np.float64)
    out = np.empty_like(t)
    ndim = pos.shape[-1]
    d = t.shape[-1] // ndim
    for a in range(ndim):
        for i in range(d // 2):
            theta = pos[:, None, :, a] * scale / min_freq * 10000.0 ** (-2 * i / d)  # (B, 1, n)
            lo, hi = t[..., a * d + i], t[..., a * d + i + d // 2]
            out[..., a * d + i] = lo * np.cos(theta) - hi * np.sin(theta)
            out[..., a * d + i + d // 2] = hi * np.cos(theta) + lo * np.sin(theta)
    return out


def np_attention(layer, x, pos, z=None, z_pos=None):
    """The module's equation, with the sum over keys written out: ``(1/n) sum_j (q_i . k_j) v_j``."""
    z, z_pos = (x, pos) if z is None else (z, z_pos)
    x, z = np.asarray(x, np.float64), np.asarray(z, np.float64)
    h, dh = layer.heads, layer.dim_head

    def heads(t):
        return t.reshape(t.shape[0], t.shape[1], h, dh).transpose(0, 2, 1, 3)

    q = heads(x @ np.asarray(layer.to_q.kernel[...], np.float64))
    k = heads(z @ np.asarray(layer.to_k.kernel[...], np.float64))
    v = heads(z @ np.asarray(layer.to_v.kernel[...], np.float64))
    if layer.kind == "galerkin":
        k, v = np_instance_norm(k), np_instance_norm(v)
    else:
        q, k = np_instance_norm(q), np_instance_norm(k)
    q = np_rotary(q, np.asarray(pos, np.float64), layer.rope_scale, layer.min_freq)
    k = np_rotary(k, np.asarray(z_pos, np.float64), layer.rope_scale, layer.min_freq)
    n = k.shape[2]
    out = np.zeros(q.shape[:3] + (v.shape[-1],))
    for j in range(n):
        score = np.einsum("bhid,bhd->bhi", q, k[:, :, j])  # q_i . k_j
        out += score[..., None] * v[:, :, j][:, :, None, :]
    out = (out / n).transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], h * dh)
    if layer.to_out is not None:
        out = out @ np.asarray(layer.to_out.kernel[...], np.float64) + np.asarray(
            layer.to_out.bias[...], np.float64
        )
    return out


# ----------------------------------------------------------------------- tests


def test_shapes_1d_2d_channels_and_query(plain):
    u = jnp.zeros((3, 32))
    assert nnx.eval_shape(lambda m: m(u), plain).shape == (3, 32)
    q = jnp.linspace(0.0, 1.0, 7)[:, None]
    assert nnx.eval_shape(lambda m: m(u, query=q), plain).shape == (3, 7)
    m2 = nnx.eval_shape(
        lambda: OFormer(2, in_channels=2, out_channels=3, rngs=nnx.Rngs(0), **SMALL)
    )
    assert nnx.eval_shape(lambda m: m(jnp.zeros((2, 8, 12, 2))), m2).shape == (2, 8, 12, 3)
    assert nnx.eval_shape(
        lambda m: m(jnp.zeros((2, 8, 8, 2)), query=jnp.zeros((2, 5, 2))), m2
    ).shape == (2, 5, 3)
    m2d = small(OFormer2d, residual="kinetic", depth=1)
    y = forward(
        m2d,
        jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8)), jnp.float32),
        nnx.Rngs(collision=key(1)),
    )
    assert y.shape == (2, 8, 8) and np.all(np.isfinite(y))
    assert min(float(r) for r in layer_collision_rates(m2d)) > 0
    # the released Burgers model's size (Encoder1D(2, 96, 96, 4) + PointWiseDecoder1D(96, 1, 3))
    full = nnx.eval_shape(lambda: OFormer1d(rngs=nnx.Rngs(0)))
    assert sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(full, nnx.Param))) == 660_719
    assert full.layers[0].attn.to_out is None and full.cross.attn.to_out is not None


def test_resolution_invariance(plain):
    """One model on 128- and 256-point grids; they agree where they overlap."""
    model = nnx.clone(plain)
    model.eval()
    ys = {n: np.asarray(forward(model, smooth(n), None)) for n in (128, 256)}
    assert {n: y.shape for n, y in ys.items()} == {128: (2, 128), 256: (2, 256)}
    gap = np.abs(ys[256][:, ::2] - ys[128]).max()
    spread = np.abs(
        ys[128] - ys[128].mean(axis=1, keepdims=True)
    ).max()  # the output's own variation
    assert gap < 0.05 * spread, (gap, spread)
    # the same model evaluated at the 128 grid's points through `query` from the 256 grid
    q = jnp.arange(128.0)[:, None] / 128
    yq = np.asarray(nnx.jit(lambda m, u: m(u, query=q))(model, smooth(256)))
    np.testing.assert_allclose(yq, ys[256][:, ::2], rtol=1e-5, atol=1e-6)


def test_linear_attention_matches_numpy_transcription():
    configs = (  # (ndim, kind, heads, cross)
        (1, "galerkin", 1, False),
        (1, "galerkin", 2, True),
        (2, "galerkin", 2, False),
        (1, "fourier", 1, False),
    )
    layers = build(
        lambda: nnx.List(
            [
                LinearAttention(
                    12,
                    kind=kind,
                    heads=heads,
                    ndim=ndim,
                    rope_scale=4.0,
                    min_freq=1 / 16,
                    cross=cross,
                    rngs=nnx.Rngs(key(i)),
                )
                for i, (ndim, kind, heads, cross) in enumerate(configs)
            ]
        )
    )
    rng = np.random.default_rng(0)
    for layer, (ndim, kind, heads, cross) in zip(layers, configs, strict=True):
        x = rng.normal(size=(2, 9, 12)).astype(np.float32)
        pos = rng.uniform(size=(2, 9, ndim)).astype(np.float32)
        z = rng.normal(size=(2, 5, 12)).astype(np.float32) if cross else None
        z_pos = rng.uniform(size=(2, 5, ndim)).astype(np.float32) if cross else None
        got = layer(
            jnp.asarray(x),
            jnp.asarray(pos),
            None if z is None else jnp.asarray(z),
            None if z_pos is None else jnp.asarray(z_pos),
        )
        np.testing.assert_allclose(
            got,
            np_attention(layer, x, pos, z, z_pos),
            rtol=2e-4,
            atol=2e-5,
            err_msg=f"{ndim}-D {kind} heads={heads} cross={cross}",
        )


def test_pure_functions():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 4, 10)).astype(np.float32) * 5 + 2
    np.testing.assert_allclose(
        instance_norm(jnp.asarray(x)), np_instance_norm(x), rtol=1e-4, atol=1e-5
    )
    q, k, v = (rng.normal(size=s).astype(np.float32) for s in ((2, 3, 4), (2, 6, 4), (2, 6, 5)))
    ref = np.einsum("bij,bkj,bkl->bil", q, k, v) / 6
    np.testing.assert_allclose(
        linear_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)), ref, rtol=1e-5, atol=1e-5
    )
    # rotary scores depend on the coordinates only through their difference
    t = jnp.asarray(rng.normal(size=(1, 1, 2, 8)), jnp.float32)
    pos = jnp.array([[[0.1], [0.35]]])

    def score(p):
        r = apply_rotary(t, p, 4.0, 1 / 16)
        return float(jnp.sum(r[0, 0, 0] * r[0, 0, 1]))

    assert score(pos) == pytest.approx(score(pos + 0.2), rel=1e-4, abs=1e-4)
    assert score(pos) != pytest.approx(score(pos * 2), rel=1e-3)


def test_plain_layer_is_x_plus_branch(plain, kinetic):
    """``kinetic=False``: ``x + attn(x, pos)`` then ``+ ffn``; the kinetic layer without rngs too."""
    layer, kin = plain.layers[0], kinetic.layers[0]
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 32, 16)), jnp.float32)
    pos = jnp.broadcast_to(jnp.arange(32.0)[:, None] / 32, (2, 32, 1))
    h = x + layer.attn(x, pos)
    expected = h + layer.ffn(h)
    np.testing.assert_array_equal(layer(x, pos), expected)
    np.testing.assert_array_equal(kin(x, pos), expected)
    assert layer.res1 is None and layer.ln1 is None
    assert (kin.res1.layout, kin.res1.particle_dim, kin.res1.coll_coef) == ("token", 2, 0.9)


def test_eval_and_no_rngs_equal_plain_bitwise(plain, kinetic):
    p, k = nnx.state(plain, nnx.Param), nnx.state(kinetic, nnx.Param)
    assert jax.tree.structure(p) == jax.tree.structure(k)
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(k), strict=True):
        np.testing.assert_array_equal(a, b)
    u = smooth(32)
    y_plain = forward(plain, u, None)
    assert np.all(np.isfinite(y_plain))
    model = nnx.clone(kinetic)
    np.testing.assert_array_equal(forward(model, u, None), y_plain)  # train mode, rngs=None
    model.eval()
    np.testing.assert_array_equal(forward(model, u, nnx.Rngs(collision=key(1))), y_plain)
    assert set(collision_rates(model).values()) == {0.0}
    assert layer_collision_rates(plain) is None
    # `query` at the grid's own points is the grid evaluation
    q = jnp.arange(32.0)[:, None] / 32
    yq = nnx.jit(lambda m, u: m(u, query=q))(plain, u)
    np.testing.assert_allclose(yq, y_plain, rtol=1e-6, atol=1e-6)


@nnx.jit
def loss_and_grads(model, u, y, rngs):
    def loss(m, rngs):
        pred = m(u, rngs=rngs)
        return jnp.mean((pred - y) ** 2), pred

    (_, pred), grads = nnx.value_and_grad(loss, has_aux=True)(model, rngs)
    return pred, grads


def test_kinetic_train_deterministic_rates_gradients(kinetic, plain):
    u = pde.grf1d(jax.random.key(0), 2, 32)  # Burgers initial conditions: realistic tokens
    y = jnp.roll(u, 3, axis=1)
    m1, m2 = nnx.clone(kinetic), nnx.clone(kinetic)
    y1, g = loss_and_grads(m1, u, y, nnx.Rngs(collision=key(7)))
    y2, _ = loss_and_grads(m2, u, y, nnx.Rngs(collision=key(7)))
    np.testing.assert_array_equal(y1, y2)
    y3, _ = loss_and_grads(nnx.clone(kinetic), u, y, nnx.Rngs(collision=key(8)))
    assert not np.array_equal(y1, y3)
    assert not np.allclose(y1, forward(plain, u, None), atol=1e-4)  # collisions change the output
    rates = [float(r) for r in layer_collision_rates(m1)]
    assert rates == [float(r) for r in layer_collision_rates(m2)]
    # the library's KineticResidual defaults (hard sphere, quota acceptance, mean length
    # scale), 8 particles per token: ceil(0.9 * 8 / 2) = 4 of the 28 pairs collide per token
    res = kinetic.layers[0].res1
    assert (res.layout, res.particle_dim, res.rule, res.acceptance, res.length_scale) == (
        "token",
        2,
        "hard_sphere",
        "quota",
        "mean",
    )
    np.testing.assert_allclose(rates, [4 / 28] * 2, rtol=1e-5)
    assert list(collision_rates(m1)) == [
        "layers/0/res1/collision_rate",
        "layers/0/res2/collision_rate",
    ]
    leaves = jax.tree.leaves(nnx.state(g, nnx.Param))
    assert all(np.all(np.isfinite(x)) for x in leaves)
    assert all(float(jnp.abs(x).max()) > 0 for x in leaves)  # every parameter gets a gradient


def test_kinetic_layer_jit_equals_eager(kinetic):
    """On one kinetic encoder layer (the whole model eagerly would compile op by op)."""
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 32, 16)), jnp.float32)
    pos = jnp.broadcast_to(jnp.arange(32.0)[:, None] / 32, (2, 32, 1))
    layer_jit, layer_eager = nnx.clone(kinetic.layers[0]), nnx.clone(kinetic.layers[0])
    jitted = nnx.jit(lambda m, x, r: m(x, pos, rngs=r))(layer_jit, x, nnx.Rngs(collision=key(9)))
    eager = layer_eager(x, pos, rngs=nnx.Rngs(collision=key(9)))
    np.testing.assert_allclose(eager, jitted, rtol=1e-5, atol=1e-5)
    assert not np.allclose(eager, layer_eager(x, pos), atol=1e-3)  # it did collide
    assert float(layer_eager.res2.collision_rate[...]) == float(layer_jit.res2.collision_rate[...])
    assert float(layer_jit.res2.collision_rate[...]) > 0


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(ndim=3), "ndim"),
        (dict(ndim=1, width=0), "width"),
        (dict(ndim=2, width=18), "divisible"),
        (dict(ndim=1, latent=3), "latent"),
        (dict(ndim=1, attention="softmax"), "attention"),
        (dict(ndim=1, residual="kinetic", particle_dim=5), "particle_dim"),
        (dict(ndim=1, depth=2, rope_scales=[1.0]), "rope_scales"),
        (dict(ndim=1, min_freq=0.0), "min_freq"),
        (dict(ndim=1, residual="dense"), "residual"),
        (dict(ndim=1, coll_coef=1.5), "coll_coef"),
    ],
)
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        nnx.eval_shape(lambda: OFormer(rngs=nnx.Rngs(0), **(SMALL | kw)))


def test_bad_inputs(plain):
    with pytest.raises(ValueError, match="expected input"):
        plain(jnp.zeros((2, 16, 16)))
    with pytest.raises(ValueError, match="query"):
        plain(jnp.zeros((2, 16)), query=jnp.zeros((5, 2)))
