"""Tests of kinetix.nn.kinn: Kirchhoff cells, cascades and the KINN models.

The references are independent transcriptions in NumPy/SciPy (float64): the
closed-form solution of ``C dv/dt = -G v + I``, the partial-fraction and Erlang
step responses of ``prod 1/(1 + s tau_k)``, ``scipy.integrate.solve_ivp`` on
the cascade ODE and ``scipy.linalg.expm``. Kept small for CPU: jitted functions
are shared between cases so that each compiles once, the models are tiny, and
the large factory models are only traced (``jax.eval_shape``).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

import kinetix.nn as knn
from kinetix.nn.kinn import (
    FNOKINN,
    FNOKINN1d,
    FNOKINN2d,
    KINNBasicBlock,
    KINNResNet,
    KirchhoffBlock,
    KirchhoffCell,
    cascade_coefficients,
    cascade_step,
    cascade_step_response,
    kinn_resnet18,
    shared_coefficients,
    zoh_coefficients,
    zoh_step,
)


def key(seed):
    return jax.random.key(seed, impl="rbg")


def rngs(seed=0):
    return nnx.Rngs(key(seed))


# ----------------------------------------------------------- NumPy references


def ode_solution(v0, current, C, G, t):
    """Exact solution of C dv/dt = -G v + I (I constant) at time t; G = 0: v0 + I t / C."""
    v0, current, C, G, t = np.broadcast_arrays(*map(np.float64, (v0, current, C, G, t)))
    with np.errstate(divide="ignore", invalid="ignore"):
        relax = current / G + (v0 - current / G) * np.exp(-G * t / C)
    return np.where(G == 0, v0 + current * t / C, relax)


def lag_step_response(taus, t):
    """Unit step response of prod_k 1/(1 + s tau_k) at times t (distinct or all-equal taus)."""
    taus = np.asarray(taus, np.float64)
    t = np.asarray(t, np.float64)
    K = len(taus)
    if np.allclose(taus, taus[0]):  # Erlang-K CDF
        x = t / taus[0]
        return 1.0 - np.exp(-x) * sum(x**n / math.factorial(n) for n in range(K))
    out = np.ones_like(t)
    for k in range(K):  # partial fractions
        others = np.delete(taus, k)
        out -= taus[k] ** (K - 1) / np.prod(taus[k] - others) * np.exp(-t / taus[k])
    return out


def cascade_ivp(taus, t):
    """The same step responses by integrating the cascade ODE (all stages), SciPy RK45."""
    taus = np.asarray(taus, np.float64)

    def rhs(_, v):
        drive = np.concatenate([[1.0], v[:-1]])
        return (drive - v) / taus

    sol = scipy.integrate.solve_ivp(
        rhs, (0.0, t[-1]), np.zeros(len(taus)), t_eval=t, rtol=1e-11, atol=1e-13
    )
    return sol.y.T  # (len(t), K)


# ------------------------------------------------------------------- ZOH cell

_STEPS = 12


@jax.jit
def _simulate_zoh(v0, currents, C, G, dt):
    a, b = zoh_coefficients(C, G, dt)

    def body(v, i):
        v = zoh_step(v, i, a, b)
        return v, v

    return jax.lax.scan(body, v0, currents)[1]


def test_zoh_equals_exact_ode_solution():
    C = np.array([1.0, 0.3, 2.0, 5.0, 1e-2, 1.0, 1.0])
    G = np.array([1.0, 2.0, 0.05, 3.0, 10.0, 0.0, 1e-9])  # G = 0: pure integrator
    dt = 0.37
    v0 = np.array([0.5, -1.0, 2.0, 0.0, 1.0, 0.3, -0.2])
    current = np.array([1.0, 0.7, -2.0, 3.0, -0.5, 1.5, 0.4])
    currents = np.broadcast_to(current, (_STEPS, len(C)))
    got = np.asarray(_simulate_zoh(v0, currents, C, G, dt))
    t = dt * np.arange(1, _STEPS + 1)[:, None]
    want = ode_solution(v0, current, C, G, t)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@jax.jit
def _zoh_limits():
    ab = zoh_coefficients(jnp.array([1.0, 2.0, 1e-4, 1.0]), jnp.array([0.0, 0.0, 1e4, 1e30]), 1.0)
    grads = jax.grad(lambda g: jnp.sum(jnp.stack(zoh_coefficients(1.0, g, 0.5))))(jnp.zeros(3))
    return ab, grads


def test_zoh_coefficients_limits_and_no_nan():
    (a, b), grads = _zoh_limits()
    np.testing.assert_allclose(a, [1.0, 1.0, 0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(b, [1.0, 0.5, 1e-4, 1e-30], rtol=1e-5)  # dt / C at G = 0, 1 / G
    assert np.all(np.isfinite(grads))
    np.testing.assert_allclose(grads, -0.5 - 0.125, rtol=1e-5)  # d/dG [exp(-G/2) + b] at 0
    with pytest.raises(ValueError, match="dt must be finite and > 0"):
        zoh_coefficients(1.0, 1.0, 0.0)


_pos = st.floats(-3.0, 3.0).map(lambda e: 10.0**e)  # log-uniform in [1e-3, 1e3]


@settings(deadline=None, max_examples=40)
@given(C=_pos, G=_pos, dt=_pos, v0=st.floats(-10, 10), seed=st.integers(0, 2**31 - 1))
def test_cell_state_stays_bounded(C, G, dt, v0, seed):
    currents = np.random.default_rng(seed).uniform(-5, 5, (_STEPS,))
    v = np.asarray(_simulate_zoh(np.float32(v0), currents.astype(np.float32), C, G, dt))
    bound = max(abs(v0), np.abs(currents).max() / np.float32(G))
    assert np.all(np.isfinite(v))
    assert np.all(np.abs(v) <= bound * (1 + 1e-5) + 1e-30)


# ------------------------------------------------------------------- cascade


@jax.jit
def _response(C, G, dt):
    return cascade_step_response(C, G, dt, _STEPS)


@pytest.mark.parametrize(
    "taus",
    [(0.5, 1.3, 2.9), (1.0, 1.0, 1.0), (0.7, 0.7, 2.0), (2.0, 0.25, 2.0)],
    ids=["distinct", "equal", "two-equal", "equal-apart"],
)
def test_cascade_step_response_is_analytic(taus):
    K, dt = len(taus), 0.6
    G = np.array([0.8, 1.7, 0.4])[:K]
    C = np.asarray(taus) * G
    resp = np.asarray(_response(C, G, dt)) * G[0]  # (steps, K), unit steady state
    t = dt * np.arange(1, _STEPS + 1)
    ivp = cascade_ivp(taus, t)
    for k in range(K):
        np.testing.assert_allclose(resp[:, k], ivp[:, k], atol=3e-6)
    if len(set(taus)) in (1, K):  # closed forms for distinct or all-equal taus
        for k in range(K):
            np.testing.assert_allclose(resp[:, k], lag_step_response(taus[: k + 1], t), atol=3e-6)


@jax.jit
def _coefficients(C, G, dt):
    return cascade_coefficients(C, G, dt)


def test_cascade_coefficients_match_scipy_expm():
    rng = np.random.default_rng(0)
    K, F, dt = 3, 6, 0.9
    C = 10.0 ** rng.uniform(-2, 2, (K, F))
    G = 10.0 ** rng.uniform(-2, 2, (K, F))
    C[:, 0] = G[:, 0]  # equal time constants in channel 0
    phi, gamma = _coefficients(jnp.asarray(C, jnp.float32), jnp.asarray(G, jnp.float32), dt)
    for f in range(F):
        r = G[:, f] / C[:, f]
        m = np.zeros((K + 1, K + 1))
        m[:K, :K] = (np.diag(-r) + np.diag(r[1:], -1)) * dt
        m[0, K] = dt / C[0, f]
        e = scipy.linalg.expm(m)
        np.testing.assert_allclose(phi[:, :, f], e[:K, :K], atol=2e-6)
        np.testing.assert_allclose(gamma[:, f], e[:K, K], rtol=1e-5, atol=1e-9)
    # one cell: the closed-form ZOH
    a, b = zoh_coefficients(C[0], G[0], dt)
    phi1, gamma1 = cascade_coefficients(C[:1], G[:1], dt)
    np.testing.assert_allclose(phi1[0, 0], a, rtol=1e-6)
    np.testing.assert_allclose(gamma1[0], b, rtol=1e-6)


@jax.jit
def _simulate_cascade(v0, currents, C, G, dt):
    out = []
    for method in ("exact", "sequential"):
        phi, gamma = cascade_coefficients(C, G, dt, method=method)

        def body(v, i, phi=phi, gamma=gamma):
            v = cascade_step(v, i, phi, gamma)
            return v, v

        out.append(jax.lax.scan(body, v0, currents)[1])
    return jnp.stack(out)


@settings(deadline=None, max_examples=30)
@given(
    C=st.lists(_pos, min_size=3, max_size=3),
    G=st.lists(_pos, min_size=3, max_size=3),
    dt=_pos,
    seed=st.integers(0, 2**31 - 1),
)
def test_cascade_state_stays_bounded(C, G, dt, seed):
    rng = np.random.default_rng(seed)
    v0 = rng.uniform(-3, 3, (3,)).astype(np.float32)
    currents = rng.uniform(-5, 5, (_STEPS,)).astype(np.float32)
    v = np.asarray(
        _simulate_cascade(v0, currents, np.float32(C), np.float32(G), np.float32(dt))
    )  # (2 methods, steps, K)
    bound = max(np.abs(v0).max(), np.abs(currents).max() / np.float32(G[0]))
    assert np.all(np.isfinite(v))
    assert np.all(np.abs(v) <= bound * (1 + 1e-4) + 1e-30)


@jax.jit
@jax.vmap
def _one_step_gap(dt):
    C, G = jnp.array([1.0, 0.5, 2.0]), jnp.array([1.0, 1.0, 1.0])
    exact = cascade_coefficients(C, G, dt)
    seq = cascade_coefficients(C, G, dt, method="sequential")
    return jnp.max(jnp.abs(exact[1] - seq[1])), jnp.max(jnp.abs(exact[0] - seq[0]))


def test_sequential_is_first_order_accurate():
    """One sequential step differs from the exact one by O(dt^2) (global error O(dt))."""
    gaps = np.asarray(_one_step_gap(jnp.array([0.08, 0.04, 0.02])))  # (2, 3): Gamma, Phi
    for g in gaps:
        assert np.all(g > 0)
        np.testing.assert_allclose(g[:-1] / g[1:], 4.0, rtol=0.15)


def test_cascade_errors():
    with pytest.raises(ValueError, match="same shape"):
        cascade_coefficients(jnp.ones((2, 3)), jnp.ones((3, 3)), 1.0)
    with pytest.raises(ValueError, match="method"):
        cascade_coefficients(jnp.ones((2,)), jnp.ones((2,)), 1.0, method="euler")
    with pytest.raises(ValueError, match="dt must be"):
        cascade_coefficients(jnp.ones((2,)), jnp.ones((2,)), -1.0)
    with pytest.raises(ValueError, match="K=3"):
        cascade_step(jnp.zeros((3, 4)), jnp.ones((4,)), jnp.zeros((2, 2)), jnp.zeros((2,)))
    with pytest.raises(ValueError, match="steps must be"):
        cascade_step_response(jnp.ones((1,)), jnp.ones((1,)), 1.0, 0)


# ------------------------------------------------------------------- modules


@nnx.jit
def _cells_forward(dense, conv, x1, x2):
    v = dense(x1)
    return v, dense(x1, v), dense.current(x1), conv(x2), dense.coefficients()


def test_cell_couplings_and_state_carry():
    dense = KirchhoffCell(3, 4, rngs=rngs())
    conv = KirchhoffCell(2, 3, coupling="conv", kernel_size=(3,), rngs=rngs())
    x1 = jax.random.normal(key(1), (2, 3))
    v, v2, i, c, (a, b) = _cells_forward(dense, conv, x1, jnp.ones((1, 8, 2)))
    assert v.shape == (2, 4) and c.shape == (1, 8, 3)
    np.testing.assert_allclose(v, b * i, rtol=1e-5)  # from rest
    np.testing.assert_allclose(v2, a * v + b * i, rtol=1e-5)  # carried state
    np.testing.assert_allclose(a, np.exp(-1.0), rtol=1e-5)  # initial C = G = 1, dt = 1
    spec = jax.eval_shape(  # shapes only; the spectral coupling runs in the FNO-KINN tests
        lambda: KirchhoffCell(2, 3, coupling="spectral", modes=3, rngs=rngs())(
            jnp.ones((1, 8, 8, 2))
        )
    )
    assert spec.shape == (1, 8, 8, 3)


def test_module_errors():
    cell = KirchhoffCell(3, 4, rngs=rngs())
    with pytest.raises(ValueError, match=r"expected input \(\.\.\., 3\)"):
        cell(jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="state v has shape"):
        cell(jnp.ones((2, 3)), jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match="coupling must be one of"):
        KirchhoffCell(3, 4, coupling="fourier", rngs=rngs())
    with pytest.raises(ValueError, match="needs modes"):
        KirchhoffCell(3, 4, coupling="spectral", rngs=rngs())
    with pytest.raises(ValueError, match="in_features == features"):
        KirchhoffCell(3, 4, coupling="follower", rngs=rngs())
    with pytest.raises(ValueError, match="dt must be"):
        KirchhoffCell(3, 4, dt=float("nan"), rngs=rngs())
    with pytest.raises(ValueError, match="initial C and G"):
        KirchhoffCell(3, 4, capacitance=0.0, rngs=rngs())
    with pytest.raises(ValueError, match="order must be"):
        KirchhoffBlock(3, 4, order=0, rngs=rngs())
    with pytest.raises(ValueError, match="combine must be"):
        KirchhoffBlock(3, 4, combine="sum", rngs=rngs())
    with pytest.raises(ValueError, match="discretization must be"):
        KirchhoffBlock(3, 4, discretization="euler", rngs=rngs())
    with pytest.raises(ValueError, match="first cell needs an input coupling"):
        KirchhoffBlock(4, 4, coupling="follower", rngs=rngs())
    block = KirchhoffBlock(3, 4, order=2, rngs=rngs())
    with pytest.raises(ValueError, match=r"expected \(2, 2, 4\)"):
        block(jnp.ones((2, 3)), jnp.zeros((3, 2, 4)))
    with pytest.raises(ValueError, match="must share"):
        shared_coefficients([block, KirchhoffBlock(3, 4, order=3, rngs=rngs())])
    with pytest.raises(ValueError, match="FNOKINN"):
        jax.eval_shape(lambda: FNOKINN1d(width=4, modes=2, rngs=rngs())(jnp.ones((2, 8, 8))))
    with pytest.raises(ValueError, match="modes must have 2 entries"):
        FNOKINN(2, modes=(2,), width=4, rngs=rngs())
    with pytest.raises(ValueError, match="inner_steps must be"):
        FNOKINN1d(width=4, modes=2, inner_steps=0, rngs=rngs())
    with pytest.raises(ValueError, match="NHWC"):
        jax.eval_shape(
            lambda: KINNResNet((1, 1, 1, 1), in_channels=1, width=2, rngs=rngs())(
                jnp.ones((2, 8, 8, 3))
            )
        )
    with pytest.raises(ValueError, match="num_blocks"):
        KINNResNet((1, 1, 1), rngs=rngs())


@nnx.jit
def _chain_vs_block(block, cells, last, other, x):
    K = len(cells)
    states = None
    for _ in range(3):
        y, states = block(x, states)
    vs = [None] * K
    for _ in range(3):
        vs[0] = cells[0](x, vs[0])
        for k in range(1, K):
            vs[k] = cells[k](vs[k - 1], vs[k])
    coefs = [b.coefficients() for b in (last, other)]
    return y, states, jnp.stack(vs), last(x), shared_coefficients([last, other]), coefs


def test_block_matches_chained_cells_and_combination():
    """A sequential block equals cell 1 (dense) followed by follower cells with the same C, G."""
    K, x = 3, jax.random.normal(key(1), (2, 3))
    block = KirchhoffBlock(3, 4, order=K, discretization="sequential", rngs=rngs())
    cells = [KirchhoffCell(3, 4, rngs=rngs())] + [
        KirchhoffCell(4, 4, coupling="follower", rngs=rngs()) for _ in range(K - 1)
    ]
    raw = 0.3 * jax.random.normal(key(2), (2, K, 4))
    block.raw_capacitance[...], block.raw_conductance[...] = raw[0], raw[1]
    for k, cell in enumerate(cells):
        cell.raw_capacitance[...], cell.raw_conductance[...] = raw[0, k], raw[1, k]
    cells[0].coupling = block.coupling
    last = KirchhoffBlock(3, 4, order=K, combine="last", rngs=rngs())
    other = KirchhoffBlock(3, 5, order=K, rngs=rngs())
    other.raw_conductance[...] = 0.5 * jax.random.normal(key(4), (K, 5))
    y, states, chained, (y_last, s_last), shared, separate = _chain_vs_block(
        block, nnx.List(cells), last, other, x
    )
    np.testing.assert_allclose(states, chained, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y, jnp.mean(states, axis=0), rtol=1e-5, atol=1e-6)  # mix = 1/K
    np.testing.assert_allclose(y_last, s_last[-1])
    assert last.mix is None
    for got, want in zip(shared, separate, strict=True):  # batched == per block
        np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-6, atol=1e-7)


def test_block_jit_matches_eager():
    block = KirchhoffBlock(2, 3, order=2, rngs=rngs())
    x = jax.random.normal(key(5), (4, 2))

    def two_steps(m, x):
        y, s = m(x)
        return m(x, s)

    eager = two_steps(block, x)
    jitted = nnx.jit(two_steps)(block, x)
    for e, j in zip(eager, jitted, strict=True):
        np.testing.assert_allclose(e, j, rtol=1e-5, atol=1e-6)


# -------------------------------------------------------------------- models


TINY_FNO = {"width": 4, "modes": 3, "depth": 2, "proj_width": 8}


@jax.jit
def _fno_kinn_checks(u):
    """Built inside jit (one compilation for init, loss, gradients and the carry check)."""
    model = FNOKINN1d(**TINY_FNO, rngs=rngs())
    reset = FNOKINN1d(**TINY_FNO, carry_state=False, rngs=rngs())  # same parameters

    def loss(m):
        return jnp.mean((m(u, rngs=None) - jnp.sin(u)) ** 2)

    value, grads = nnx.value_and_grad(loss)(model)
    return value, nnx.state(grads), model(u), reset(u), model.time_constants()


def test_fno_kinn_grads_and_options():
    u = jax.random.normal(key(6), (2, 16))
    loss, grads, carried, reset, taus = _fno_kinn_checks(u)
    assert np.isfinite(float(loss))
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    for name in ("raw_capacitance", "raw_conductance", "mix"):  # the KINN parameters learn
        assert np.any(grads["layers"][0][name][...] != 0)
    assert taus.shape == (2, 2, 4)  # (depth, order, width)
    assert carried.shape == reset.shape == (2, 16)
    assert not np.allclose(carried, reset)  # the state carried across layers matters

    def traced():  # shapes only, no compilation
        inner = FNOKINN1d(**TINY_FNO, inner_steps=2, rngs=rngs())
        assert inner.layers[0].coupling.pointwise.kernel.shape == (4, 4)
        two = FNOKINN2d(**TINY_FNO, in_channels=2, out_channels=3, rngs=rngs())
        default = FNOKINN2d(rngs=rngs())
        assert default.modes == (12, 12) and default.width == 20
        return inner(u), two(jnp.ones((1, 8, 8, 2))), two(jnp.ones((1, 16, 16, 2)))  # any grid

    shapes = [o.shape for o in jax.eval_shape(traced)]
    assert shapes == [(2, 16), (1, 8, 8, 3), (1, 16, 16, 3)]


@jax.jit
def _kinn_stage(x):
    """A ResNet stage of two KINN blocks (stride 2, then stride 1 with the carried state)."""
    first = KINNBasicBlock(2, 4, 2, rngs=rngs())
    second = KINNBasicBlock(4, 4, 1, rngs=rngs())
    h, states = first(x)
    out, new_states = second(h, states)
    carried = second.kirchhoff.coefficients()[0][..., None, None, None, :]  # (K, K, ..., C)
    return h, states, out, new_states, carried


def test_kinn_resnet_blocks_and_resnet18_convention():
    h, states, out, new_states, phi = _kinn_stage(jax.random.normal(key(8), (2, 8, 8, 2)))
    assert h.shape == out.shape == (2, 4, 4, 4) and states.shape == (2, 2, 4, 4, 4)
    assert np.all(np.isfinite(out)) and np.all(out >= 0)  # relu(shortcut + y)
    # the second block's new states contain the decayed carried states: Phi @ states + Gamma I
    assert np.all(np.isfinite(new_states))
    assert np.any(np.abs(new_states[1] - phi[1, 1] * states[1]) > 0)

    # the factory, traced only: resnet18's calling convention on digits and CIFAR shapes
    def build_and_call(shape, **kw):
        m = kinn_resnet18(num_classes=7, in_channels=shape[-1], width=4, rngs=rngs(), **kw)
        assert isinstance(m.classifier, nnx.Linear)
        paths = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(m, nnx.Param))}
        assert {"classifier/kernel", "classifier/bias"} <= paths
        assert m.layer2[1].kirchhoff.order == kw.get("order", 2)
        return m(jnp.ones(shape), rngs=nnx.Rngs(1))

    assert jax.eval_shape(lambda: build_and_call((2, 8, 8, 1))).shape == (2, 7)
    assert jax.eval_shape(lambda: build_and_call((2, 32, 32, 3), order=3)).shape == (2, 7)


def test_public_exports():
    for name in ("KirchhoffCell", "KirchhoffBlock", "KINNResNet", "FNOKINN1d", "kinn_resnet18"):
        assert name in knn.__all__ and hasattr(knn, name)
    assert knn.__all__ == sorted(knn.__all__)
