"""Tests of kinetix.nn.fno: shapes, resolution independence, eval parity, spectral conv vs. a DFT."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from kinetix.nn import KineticResidual
from kinetix.nn.fno import (
    FNO1d,
    FNO2d,
    FourierLayer,
    SpectralConv,
    layer_collision_rates,
    pointwise_kernels,
    resolve_n_divide,
    spectral_weights,
)

SMALL = {"width": 8, "modes": 4, "proj_width": 16}


def _field(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape)


# Jitted applications: on XLA:CPU one compiled program is several times quicker to
# build than the op-by-op compilations of an eager call.
@nnx.jit
def _apply(module, u):
    return module(u)


@nnx.jit
def _apply_rngs(module, u, rngs):
    return module(u, rngs=rngs)


# ------------------------------------------------------------------ shapes


def test_fno1d_shapes():
    model = FNO1d(**SMALL, rngs=nnx.Rngs(params=0))
    assert _apply(model, _field((3, 32))).shape == (3, 32)
    assert _apply(model, _field((3, 32, 1))).shape == (3, 32, 1)
    two = FNO1d(**SMALL, in_channels=2, out_channels=3, rngs=nnx.Rngs(params=0))
    assert _apply(two, _field((2, 16, 2))).shape == (2, 16, 3)
    assert len(pointwise_kernels(model)) == 4
    assert pointwise_kernels(model)[0].shape == (8, 8)
    assert spectral_weights(model)[0].shape == (1, 8, 8, 4)
    assert spectral_weights(model)[0].dtype == jnp.complex64


def test_fno2d_shapes_and_released_defaults():
    model = FNO2d(rngs=nnx.Rngs(params=0))
    assert _apply(model, _field((1, 32, 32))).shape == (1, 32, 32)
    assert spectral_weights(model)[0].shape == (2, 20, 20, 12, 12)
    n_real = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    # Li et al.'s FNO2d (modes 12, width 20, 3 input channels, 128-wide projection)
    spectral = 4 * 2 * 20 * 20 * 12 * 12 * 2
    pointwise = 4 * (20 * 20 + 20)
    assert n_real == spectral + pointwise + (3 * 20 + 20) + (20 * 128 + 128) + (128 + 1)


def test_fno2d_kinetic_runs_at_32_and_64():
    """One model, training-mode collisions at 32x32 (n_divide 8) and 64x64 (n_divide 32)."""
    model = FNO2d(
        width=4, modes=4, proj_width=8, depth=1, residual="kinetic", rngs=nnx.Rngs(params=0)
    )
    for res in (32, 64):
        u = 0.1 * _field((1, res, res))
        out = model(u, rngs=nnx.Rngs(collision=1))
        assert out.shape == (1, res, res)
        assert bool(jnp.all(jnp.isfinite(out)))
        rate = float(layer_collision_rates(model)[0])
        assert 0.0 < rate <= 1.0
        # the collisions change the training-mode output; eval mode has none
        model.eval()
        assert not np.array_equal(np.asarray(out), np.asarray(_apply(model, u)))
        model.train()


def test_resolve_n_divide():
    assert resolve_n_divide("auto", 128, 32 * 32) == 8
    assert resolve_n_divide("auto", 128, 64 * 64) == 32
    assert resolve_n_divide(4, 128, 1024) == 4
    with pytest.raises(ValueError, match="multiple of 128"):
        resolve_n_divide("auto", 128, 100)
    with pytest.raises(ValueError, match="must divide"):
        resolve_n_divide(3, 128, 64)


# -------------------------------------------------------------- eval parity


@pytest.mark.parametrize("ndim", [1, 2])
def test_kinetic_equals_plain_in_eval_mode(ndim):
    cls, shape = (FNO1d, (3, 32)) if ndim == 1 else (FNO2d, (2, 16, 16))
    kw = dict(SMALL, n_divide=4, depth=2)
    plain = cls(**kw, residual="plain", rngs=nnx.Rngs(params=7))
    kin = cls(**kw, residual="kinetic", coll_coef=1.0, rngs=nnx.Rngs(params=7))
    p_plain, p_kin = nnx.state(plain, nnx.Param), nnx.state(kin, nnx.Param)
    for a, b in zip(jax.tree.leaves(p_plain), jax.tree.leaves(p_kin), strict=True):
        np.testing.assert_array_equal(a, b)  # same seed -> same parameters
    u = _field(shape, 1)
    ref = np.asarray(_apply(plain, u))
    # no rngs: no collision even in training mode
    np.testing.assert_array_equal(np.asarray(_apply(kin, u)), ref)
    # eval mode: no collision even with rngs (coll_coef=1 would make every pair eligible)
    kin.eval()
    np.testing.assert_array_equal(np.asarray(_apply_rngs(kin, u, nnx.Rngs(collision=3))), ref)


def test_kinetic_layer_equals_kinetic_residual_on_the_grid():
    """The layer's particle grouping = KineticResidual(n_divide=k) on (B, H, W, C)."""
    # the particle shape (1, 128, 8 * 4) of test_fno2d_kinetic_runs_at_32_and_64: one compile
    layer = FourierLayer(4, (4, 4), residual="kinetic", n_divide="auto", rngs=nnx.Rngs(0))
    # small inputs: close particles, so that some pairs pass the exp(-|x_i - x_j|) test
    u = 0.02 * _field((1, 32, 32, 4), 2)
    out = layer(u, rngs=nnx.Rngs(collision=5))
    res = KineticResidual(layout="spatial", n_divide=32 * 32 // 128, coll_coef=0.9)
    ref = res(layer.pointwise(u), layer.spectral(u), rngs=nnx.Rngs(collision=5))
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=0, atol=1e-6)
    assert float(layer.kinetic.collision_rate[...]) == pytest.approx(float(res.collision_rate[...]))
    assert not np.allclose(np.asarray(out), np.asarray(layer.pointwise(u) + layer.spectral(u)))


def test_kinetic_gradient_is_finite():
    model = FNO1d(**SMALL, depth=1, residual="kinetic", coll_coef=1.0, rngs=nnx.Rngs(params=0))
    u, y = _field((2, 32), 1), _field((2, 32), 2)

    @nnx.jit
    def grads(model, rngs):
        def loss(model, rngs):
            return jnp.mean((model(u, rngs=rngs) - y) ** 2)

        return nnx.grad(loss)(model, rngs)

    g = grads(model, nnx.Rngs(collision=1))
    leaves = jax.tree.leaves(nnx.state(g, nnx.Param))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)
    assert any(float(jnp.abs(x).max()) > 0 for x in leaves)
    assert float(layer_collision_rates(model)[0]) > 0


# ------------------------------------------------------------ spectral conv


def _dft_1d(x, w, modes):
    """y_n = Re sum_{k < modes} c_k (sum_i X_{k,i} W_{i,o,k}) e^{2 pi i k n / N} / N, by explicit sums."""
    b, n, cin = x.shape
    cout = w.shape[1]
    j = np.arange(n)
    y = np.zeros((b, n, cout))
    for k in range(modes):
        xk = np.einsum("bni,n->bi", x, np.exp(-2j * np.pi * k * j / n))
        yk = xk @ w[:, :, k]
        c = 1.0 if k == 0 or 2 * k == n else 2.0
        y += c * np.real(yk[:, None, :] * np.exp(2j * np.pi * k * j / n)[None, :, None]) / n
    return y


def _dft_2d(x, w, m1, m2):
    """Same for 2-D: frequencies k1 in {0..m1-1} (w[0]) and {N1-m1..N1-1} (w[1]), k2 < m2."""
    b, n1, n2, cin = x.shape
    cout = w.shape[2]
    j1, j2 = np.arange(n1), np.arange(n2)
    y = np.zeros((b, n1, n2, cout))
    for block, k1s in enumerate((range(m1), range(n1 - m1, n1))):
        for a, k1 in enumerate(k1s):
            for k2 in range(m2):
                phase = np.exp(-2j * np.pi * (k1 * j1[:, None] / n1 + k2 * j2[None, :] / n2))
                xk = np.einsum("bxyi,xy->bi", x, phase)
                yk = xk @ w[block, :, :, a, k2]
                c = 1.0 if k2 == 0 or 2 * k2 == n2 else 2.0
                y += (
                    c * np.real(yk[:, None, None, :] * np.conj(phase)[None, :, :, None]) / (n1 * n2)
                )
    return y


@pytest.mark.parametrize("n,modes", [(8, 3), (10, 6)])  # (10, 6) includes the Nyquist mode
def test_spectral_conv_1d_matches_direct_dft(n, modes):
    conv = SpectralConv(3, 2, (modes,), rngs=nnx.Rngs(params=0))
    x = np.asarray(_field((2, n, 3), 4), np.float64)
    w = np.asarray(conv.complex_weight(), np.complex128)[0]
    got = np.asarray(_apply(conv, jnp.asarray(x, jnp.float32)), np.float64)
    np.testing.assert_allclose(got, _dft_1d(x, w, modes), rtol=0, atol=1e-5)


def test_spectral_conv_2d_matches_direct_dft():
    conv = SpectralConv(2, 3, (2, 3), rngs=nnx.Rngs(params=1))
    # give the weights O(1) size so that an error would show
    conv.weight_real[...] = _field(conv.weight_real[...].shape, 8)
    conv.weight_imag[...] = _field(conv.weight_imag[...].shape, 9)
    x = np.asarray(_field((2, 6, 8, 2), 5), np.float64)
    w = np.asarray(conv.complex_weight(), np.complex128)
    got = np.asarray(_apply(conv, jnp.asarray(x, jnp.float32)), np.float64)
    np.testing.assert_allclose(got, _dft_2d(x, w, 2, 3), rtol=0, atol=1e-4)


def test_spectral_conv_rejects_coarse_grid():
    conv = SpectralConv(1, 1, (12, 12), rngs=nnx.Rngs(params=0))
    with pytest.raises(ValueError, match="non-last axis"):
        conv(jnp.zeros((1, 16, 32, 1)))
    with pytest.raises(ValueError, match="last axis"):
        conv(jnp.zeros((1, 32, 16, 1)))


# --------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"residual": "add"}, "residual"),
        ({"n_divide": 0}, "n_divide"),
        ({"n_divide": "half"}, "n_divide"),
        ({"coll_coef": 1.5}, "coll_coef"),
        ({"rule": "soft"}, "rule"),
        ({"activation": "tanh"}, "activation"),
        ({"modes": (4, 4)}, "modes"),
    ],
)
def test_fno_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FNO1d(**{**SMALL, **kwargs}, rngs=nnx.Rngs(params=0))


def test_fno_rejects_bad_input_shape():
    model = FNO1d(**SMALL, rngs=nnx.Rngs(params=0))
    with pytest.raises(ValueError, match="expected input"):
        model(jnp.zeros((2, 16, 16, 1)))
    kin = FNO1d(**SMALL, residual="kinetic", n_divide=3, rngs=nnx.Rngs(params=0))
    with pytest.raises(ValueError, match="must divide"):
        kin(jnp.zeros((2, 16)), rngs=nnx.Rngs(collision=0))


# ------------------------------------------------------- lift and projection


def _param_shapes(build):
    """``{path: shape}`` of a module's parameters, traced only (no compilation)."""
    flat = nnx.to_flat_state(nnx.state(nnx.eval_shape(build), nnx.Param))
    return {"/".join(map(str, p)): tuple(v.shape) for p, v in flat}


def test_fno_parameter_paths_are_the_checkpoint_layout():
    """Checkpoints written by earlier versions restore only if these names and shapes stay."""
    shapes = _param_shapes(lambda: FNO1d(**SMALL, depth=2, rngs=nnx.Rngs(params=0)))
    want = {"lift/kernel": (2, 8), "lift/bias": (8,)}
    for i in range(2):
        want |= {
            f"layers/{i}/spectral/weight_real": (1, 8, 8, 4),
            f"layers/{i}/spectral/weight_imag": (1, 8, 8, 4),
            f"layers/{i}/pointwise/kernel": (8, 8),
            f"layers/{i}/pointwise/bias": (8,),
        }
    want |= {"proj1/kernel": (8, 16), "proj1/bias": (16,), "proj2/kernel": (16, 1)}
    want |= {"proj2/bias": (1,)}
    assert shapes == want


def _gelu(x):
    """Exact (erf) GELU, transcribed with math.erf."""
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def test_lift_and_projection_match_a_numpy_transcription():
    model = FNO2d(
        width=4, modes=2, proj_width=5, in_channels=2, out_channels=3, rngs=nnx.Rngs(params=0)
    )
    u = np.random.default_rng(0).normal(size=(2, 6, 4, 2)).astype(np.float32)
    h, squeeze = model.lift_input(u)
    gx, gy = np.meshgrid(np.arange(6) / 6, np.arange(4) / 4, indexing="ij")
    feats = np.concatenate([u, np.broadcast_to(np.stack([gx, gy], -1), (2, 6, 4, 2))], -1)
    p = {k: np.asarray(v[...], np.float64) for k, v in nnx.to_flat_state(nnx.state(model))}
    want_h = feats @ p[("lift", "kernel")] + p[("lift", "bias")]
    np.testing.assert_allclose(h, want_h, rtol=1e-5, atol=1e-5)
    assert not squeeze
    hidden = _gelu(want_h @ p[("proj1", "kernel")] + p[("proj1", "bias")])
    want = hidden @ p[("proj2", "kernel")] + p[("proj2", "bias")]
    np.testing.assert_allclose(model.project(h, squeeze), want, rtol=1e-5, atol=1e-5)
    # one input and output channel: (B, *spatial) in and out
    one = FNO1d(**SMALL, rngs=nnx.Rngs(params=1))
    h1, squeeze1 = one.lift_input(np.ones((3, 16), np.float32))
    assert squeeze1 and h1.shape == (3, 16, 8) and one.project(h1, squeeze1).shape == (3, 16)
