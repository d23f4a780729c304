"""Tests of kinetix.nn.kinn: Kirchhoff cells, cascades and the KINN models.

The references are independent transcriptions in NumPy/SciPy (float64): the
closed-form solution of ``C dv/dt = -G v + I``, the partial-fraction and Erlang
step responses of ``prod 1/(1 + s tau_k)``, ``scipy.integrate.solve_ivp`` on
the cascade ODE and ``scipy.linalg.expm``. Kept small for CPU: jitted functions
are shared between cases so that each compiles once, the models are tiny, and
the large factory models are only traced (``jax.eval_shape``).
"""

import functools
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
    SpectralCoupling,
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


# ---------------------------------------- ZOH numerics over the whole input range
#
# Reference: the closed form in NumPy extended precision (np.longdouble), which
# holds products of any float32 inputs without overflow: x = G dt / C,
# a = exp(-x), b = -expm1(-x) / G (G > 0) or dt / C (G = 0). In float64 it
# would do too for float16/bfloat16/float32 inputs.

_WIDE = np.finfo(np.longdouble).maxexp > 2048  # 80-bit or quad: a float64 sweep fits


def _decades(dtype, per_axis, seed):
    """Positive values of ``dtype`` spread log-uniformly from its smallest subnormal to its max."""
    info = jnp.finfo(dtype)
    lo, hi = math.log10(float(info.smallest_subnormal)), math.log10(float(info.max))
    rng = np.random.default_rng(seed)
    with np.errstate(over="ignore"):  # 10 ** log10(max) may round above max: dropped below
        grid = 10.0 ** np.linspace(lo, hi, per_axis)
    vals = np.concatenate(
        [
            grid,
            10.0 ** rng.uniform(lo, hi, per_axis // 2),
            [float(info.smallest_subnormal), float(info.tiny), float(info.max), 1.0, 0.37],
        ]
    )
    vals = np.unique(np.asarray(vals, np.float64).astype(dtype).astype(np.float64))
    return vals[(vals > 0) & np.isfinite(vals)]


def _zoh_reference(C, G, dt):
    C, G, dt = (np.asarray(v, np.longdouble) for v in (C, G, dt))
    x = G * dt / C
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where(G > 0, -np.expm1(-x) / np.where(G > 0, G, 1), dt / C)
    return x, np.exp(-x), b


def _sweep_inputs(dtype, per_axis=24, seed=0):
    v = _decades(dtype, per_axis, seed)
    C, G, dt = np.meshgrid(v, np.concatenate([[0.0], v]), v, indexing="ij")
    return tuple(w.reshape(-1).astype(dtype) for w in (C, G, dt))


@pytest.mark.parametrize(
    "dtype", [jnp.float16, jnp.bfloat16, jnp.float32, "float64"], ids=lambda d: jnp.dtype(d).name
)
def test_zoh_coefficients_finite_and_accurate_over_the_whole_range(dtype):
    """C, dt over [smallest subnormal, max] of the dtype (G also 0): finite, and accurate
    against the extended-precision closed form wherever that is representable."""
    if dtype == "float64" and not _WIDE:
        pytest.skip("np.longdouble is float64 here: no wider reference")
    with jax.enable_x64(dtype == "float64"):
        dtype = jnp.dtype(dtype)
        C, G, dt = _sweep_inputs(dtype)
        a, b = jax.jit(zoh_coefficients)(C, G, dt)
        assert a.dtype == b.dtype == dtype
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    info, work = jnp.finfo(dtype), jnp.finfo(jnp.promote_types(dtype, jnp.float32))
    big, tiny = float(info.max), float(info.tiny)
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b)), f"{C.size} inputs"
    assert np.all((0 <= a) & (a <= 1)) and np.all((0 <= b) & (b <= big))
    x, a_ref, b_ref = _zoh_reference(C, G, dt)
    b_ref = np.minimum(b_ref, big)  # documented: b beyond the dtype's max is returned as max
    x = np.asarray(np.minimum(x, 1e300), np.float64)
    a_ref, b_ref = np.asarray(a_ref, np.float64), np.asarray(b_ref, np.float64)
    # relative error within a few ulps (a: plus exp's amplification x * eps of the rounding
    # of x), or an absolute error below the smallest normal number (flushed subnormals)
    tol_a = 4 * float(info.eps) + 4 * float(work.eps) * x
    tol_b = 8 * float(info.eps)
    for name, got, want, tol in (("a", a, a_ref, tol_a), ("b", b, b_ref, tol_b)):
        err = np.abs(got - want)
        bad = (err > tol * np.abs(want)) & (err > tiny)
        i = int(np.argmax(bad))
        assert not bad.any(), (
            f"{name}: {int(bad.sum())} of {bad.size} inaccurate, e.g. C={float(C[i])!r} "
            f"G={float(G[i])!r} dt={float(dt[i])!r}: {got[i]!r} vs {want[i]!r}"
        )
    # b saturates exactly where the true value exceeds the max (e.g. G = 0, dt / C > max)
    assert np.array_equal(b == big, b_ref == big)


def test_zoh_coefficients_measured_nan_cases_are_now_finite():
    """The cases of issue 10 that gave NaN: subnormal C, dt / C overflowing, float16 dt = 1e5."""
    cases = [  # C, G, dt, dtype, (a, b)
        (1e-45, 1.0, 1.0, jnp.float32, (0.0, 1.0)),  # subnormal C: x huge, b = 1 / G
        (1e-30, 1.0, 1e30, jnp.float32, (0.0, 1.0)),  # dt / C = 1e60 overflows float32
        (1.0, 1.0, 1e5, jnp.float16, (0.0, 1.0)),  # dt itself is not a float16
        (1e-30, 0.5, 1e30, jnp.bfloat16, (0.0, 2.0)),
        (1.0, 0.0, 1e5, jnp.float16, (1.0, 65504.0)),  # b = dt / C = 1e5 > float16 max: clipped
        (1e-30, 0.0, 1e30, jnp.float32, (1.0, float(jnp.finfo(jnp.float32).max))),
        # subnormal C = 2^-140 with x = G dt / C = 3: b = (1 - e^-3) / G = 1.3e36
        (
            2.0**-140,
            2.0**-120,
            3 * 2.0**-20,
            jnp.float32,
            (math.exp(-3), -math.expm1(-3) * 2.0**120),
        ),
    ]
    for C, G, dt, dtype, want in cases:
        a, b = zoh_coefficients(jnp.asarray(C, dtype), jnp.asarray(G, dtype), dt)
        got = (float(a), float(b))
        assert a.dtype == dtype and all(map(math.isfinite, got)), (C, G, dt, dtype, got)
        np.testing.assert_allclose(got, want, rtol=float(jnp.finfo(dtype).eps), err_msg=str(C))


def _zoh_grad_reference(C, G, dt):
    """Analytic derivatives of a and b (float64): a_C = a G dt / C^2, b_G = r^2 phi_1'(x), ..."""
    x, r = G * dt / C, dt / C
    a = np.exp(-x)
    phi = np.where(x > 0, -np.expm1(-x) / np.where(x > 0, x, 1.0), 1.0)
    dphi = np.where(x > 1e-3, (a - phi) / np.where(x > 1e-3, x, 1.0), -0.5 + x / 3 - x**2 / 8)
    return {
        "a": (a * x / C, -a * r, -a * G / C),
        "b": (-a * dt / C**2, r**2 * dphi, a / C),
    }


def test_zoh_coefficients_gradients_match_analytic_derivatives():
    # x = G dt / C from 0 (G = 0) through the series and both branches to 90 (a subnormal),
    # and inputs near the edges of float32 (subnormal G, tiny C, dt / C = 1e23, x = 1e8)
    C, G, dt = np.array(
        [
            (1.0, 1e-8, 1.0),
            (2.0, 2e-3, 1.0),
            (0.5, 0.025, 1.0),
            (1.0, 0.25, 1.0),
            (1.0, 0.99, 1.0),
            (1.0, 1.01, 1.0),
            (1.0, 5.0, 1.0),
            (3.0, 150.0, 1.0),
            (1e-3, 1.0, 1.0),
            (1.0, 0.0, 1.0),
            (1.0, 90.0, 1.0),
            (1.0, 1e-40, 1.0),
            (1e-15, 1e-15, 0.5),
            (1e-20, 1e-38, 1e-17),
            (1e-30, 1e-2, 1e-20),
        ]
    ).T
    grads = jax.jit(
        jax.vmap(lambda c, g, d: jax.jacobian(lambda p: jnp.stack(zoh_coefficients(*p)))((c, g, d)))
    )(C, G, dt)  # (n, 2) per argument
    want = _zoh_grad_reference(*(np.asarray(v, np.float64) for v in (C, G, dt)))
    for out, row in (("a", 0), ("b", 1)):
        for arg, (got, ref) in enumerate(zip(grads, want[out], strict=True)):
            got = np.asarray(got[:, row], np.float64)
            assert np.all(np.isfinite(got)), (out, arg, got)
            np.testing.assert_allclose(
                got, ref, rtol=2e-5, atol=1e-37, err_msg=f"d{out}/d{'CGt'[arg]}"
            )


def test_zoh_coefficients_gradients_finite_over_the_range():
    """Derivatives never NaN over the float32 sweep; inf only where the analytic one overflows."""
    C, G, dt = (jnp.asarray(v) for v in _sweep_inputs(jnp.float32, per_axis=16, seed=1))
    jac = jax.jit(
        jax.vmap(lambda c, g, d: jax.jacobian(lambda p: jnp.stack(zoh_coefficients(*p)))((c, g, d)))
    )(C, G, dt)
    for j in jac:
        j = np.asarray(j)
        assert not np.isnan(j).any() and not np.isinf(j).any()  # clipped to +-max at worst


def test_zoh_coefficients_validation():
    f32_max = float(jnp.finfo(jnp.float32).max)
    for dt, msg in [
        (0.0, "dt must be finite and > 0"),
        (-1.0, "dt must be finite and > 0"),
        (np.float32("nan"), "dt must be finite and > 0"),
        (jnp.inf, "dt must be finite and > 0"),
        (np.array([1.0, -1.0]), "dt must be finite and > 0"),
        (True, "real number"),
        ("1.0", "real"),
        (1e300, "not representable in float32"),  # would be inf in float32
        (1e-60, "not representable in float32"),  # would be 0 in float32
        (2 * f32_max, "not representable in float32"),
    ]:
        with pytest.raises(ValueError, match=msg):
            zoh_coefficients(1.0, 1.0, dt)
    # float16 inputs are computed in float32: dt = 1e5 (beyond float16) is fine
    assert float(zoh_coefficients(jnp.float16(1.0), jnp.float16(1.0), 1e5)[1]) == 1.0
    for C, G, msg in [
        (0.0, 1.0, "C must be finite and > 0"),
        (-1.0, 1.0, "C must be finite and > 0"),
        (np.float32("nan"), 1.0, "C must be finite"),
        (1e-50, 1.0, "C must be finite and > 0 in float32"),  # underflows to 0 in float32
        (1.0, -1e-3, "G must be finite and >= 0"),
        (1.0, jnp.inf, "G must be finite"),
        (jnp.ones(3), jnp.array([1.0, np.nan, 1.0]), "G must be finite"),
    ]:
        with pytest.raises(ValueError, match=msg):
            zoh_coefficients(C, G, 1.0)
    with pytest.raises(ValueError, match="C must be finite and > 0"):
        cascade_coefficients(jnp.array([1.0, 0.0]), jnp.ones(2), 1.0)
    # traced values cannot be checked (documented): no error under jit
    out = jax.jit(zoh_coefficients)(1.0, 1.0, -1.0)
    assert len(out) == 2


def test_cascade_coefficients_any_dtype_and_range():
    """float16 used to give Phi = I, Gamma = 0 (exact method) and NaN for large rates; now it
    matches float32, and every input in range gives finite coefficients (and no NaN gradient)."""
    C, G = jnp.ones((2, 3)), jnp.array([[1.0, 0.5, 0.0], [1.0, 2.0, 1.0]])
    for method in ("exact", "sequential"):
        ref = cascade_coefficients(C, G, 1.0, method=method)
        for dtype in (jnp.float16, jnp.bfloat16):
            got = cascade_coefficients(C.astype(dtype), G.astype(dtype), 1.0, method=method)
            for g, r in zip(got, ref, strict=True):
                assert g.dtype == dtype
                np.testing.assert_allclose(
                    np.asarray(g, np.float32), r, rtol=float(jnp.finfo(dtype).eps), atol=1e-7
                )
    rng = np.random.default_rng(0)
    for dtype in (jnp.float16, jnp.bfloat16, jnp.float32):
        info = jnp.finfo(dtype)
        lo, hi = math.log10(float(info.smallest_subnormal)), math.log10(float(info.max))
        C = (10.0 ** rng.uniform(lo, hi, (3, 300))).astype(dtype)
        G = (10.0 ** rng.uniform(lo, hi, (3, 300))).astype(dtype)
        G[:, :20] = 0
        for dt in (1.0, float(10 ** (hi / 2)), float(10 ** (lo / 2))):
            for method in ("exact", "sequential"):
                phi, gamma = _coefficients_any(C, G, dt, method)
                assert np.all(np.isfinite(np.asarray(phi, np.float32))), (dtype, dt, method)
                assert np.all(np.isfinite(np.asarray(gamma, np.float32))), (dtype, dt, method)
                assert np.all(np.asarray(gamma, np.float32) >= 0)
                grads = _cascade_grads(C.astype(np.float32), G.astype(np.float32), dt, method)
                # never NaN; +-inf only where the true derivative overflows (e.g. dt / C)
                assert not any(np.isnan(g).any() for g in grads), (dtype, dt, method)


@functools.partial(jax.jit, static_argnums=(3,))
def _coefficients_any(C, G, dt, method):
    return cascade_coefficients(C, G, dt, method=method)


@functools.partial(jax.jit, static_argnums=(3,))
def _cascade_grads(C, G, dt, method):
    def total(c, g):
        phi, gamma = cascade_coefficients(c, g, dt, method=method)
        return jnp.sum(phi) + jnp.sum(gamma * 1e-38)

    return jax.grad(total, argnums=(0, 1))(C, G)


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


_NAN, _INF = float("nan"), float("inf")
_BAD_HYPERPARAMETERS = [  # (constructor, keyword arguments, message)
    (KirchhoffCell, {"capacitance": _NAN}, "capacitance must be a finite number"),
    (KirchhoffCell, {"capacitance": np.float32(_NAN)}, "capacitance must be a finite number"),
    (KirchhoffCell, {"capacitance": jnp.float32(_NAN)}, "capacitance must be a finite number"),
    (KirchhoffCell, {"conductance": _INF}, "conductance must be a finite number"),
    (KirchhoffCell, {"capacitance": -1.0}, r"capacitance must be > 0.0001 \(the initial C and G"),
    (KirchhoffCell, {"capacitance": np.float32(-1)}, "capacitance must be > 0.0001"),
    (KirchhoffCell, {"conductance": jnp.array(1e-4)}, "conductance must be > 0.0001"),
    (KirchhoffCell, {"capacitance": 1e300}, "at most 3.403e.38 .the parameters are float32"),
    (KirchhoffCell, {"capacitance": np.ones(2)}, "capacitance must be a scalar"),
    (KirchhoffCell, {"capacitance": True}, "capacitance must be a real number"),
    (KirchhoffCell, {"capacitance": "1"}, "capacitance must be real"),
    (KirchhoffCell, {"dt": _NAN}, "dt must be finite and > 0"),
    (KirchhoffCell, {"dt": np.float32(-1)}, "dt must be finite and > 0"),
    (KirchhoffCell, {"dt": jnp.float32(_INF)}, "dt must be finite and > 0"),
    (KirchhoffCell, {"dt": 0.0}, "dt must be finite and > 0"),
    (KirchhoffCell, {"dt": 1e-60}, "not representable in float32"),
    (KirchhoffCell, {"dt": 1e-40}, "not representable in float32"),  # subnormal float32
    (KirchhoffCell, {"dt": 1e39}, "not representable in float32"),
    (KirchhoffCell, {"dt": np.ones(3)}, "dt must be a scalar"),
    (KirchhoffCell, {"in_features": 2.5}, "in_features must be an integer >= 1, got 2.5"),
    (KirchhoffCell, {"in_features": 3.0}, "in_features must be an integer"),
    (KirchhoffCell, {"features": np.float32(4)}, "features must be an integer"),
    (KirchhoffCell, {"features": True}, "features must be an integer"),
    (KirchhoffCell, {"features": 0}, "features must be an integer >= 1, got 0"),
    (KirchhoffCell, {"coupling": 3}, "coupling must be one of"),
    (KirchhoffCell, {"kernel_size": 0}, "kernel_size must be an integer >= 1"),  # even if unused
    (KirchhoffCell, {"kernel_size": (3, 2.5)}, r"kernel_size\[1\] must be an integer"),
    (KirchhoffCell, {"modes": -1}, "modes must be an integer >= 1"),
    (KirchhoffCell, {"ndim": 0}, "ndim must be an integer >= 1"),
    (KirchhoffBlock, {"order": 0}, "order must be an integer >= 1"),
    (KirchhoffBlock, {"order": 2.0}, "order must be an integer"),
    (KirchhoffBlock, {"order": np.float64(2)}, "order must be an integer"),
    (KirchhoffBlock, {"capacitance": np.float64(_NAN)}, "capacitance must be a finite number"),
    (KirchhoffBlock, {"conductance": 0.0}, "conductance must be > 0.0001"),
    (KirchhoffBlock, {"dt": np.float32(_NAN)}, "dt must be finite and > 0"),
    (KirchhoffBlock, {"combine": ["mix"]}, "combine must be one of"),
    (KirchhoffBlock, {"discretization": None}, "discretization must be one of"),
]
_BAD_MODEL_HYPERPARAMETERS = [
    (dict(width=4.5), "width must be an integer"),
    (dict(depth=0), "depth must be an integer >= 1"),
    (dict(in_channels=np.float32(1)), "in_channels must be an integer"),
    (dict(out_channels=-1), "out_channels must be an integer >= 1"),
    (dict(proj_width=True), "proj_width must be an integer"),
    (dict(inner_steps=1.5), "inner_steps must be an integer"),
    (dict(modes=(2.5,)), r"modes\[0\] must be an integer"),
    (dict(modes=0), "modes must be an integer >= 1"),
    (dict(activation="tanh"), "activation must be one of"),
    (dict(carry_state="no"), "carry_state must be True or False"),
    (dict(carry_state=1), "carry_state must be True or False"),
    (dict(order=0), "order must be an integer >= 1"),
    (dict(dt=_NAN), "dt must be finite and > 0"),
    (dict(dt=np.float32(-1)), "dt must be finite and > 0"),
    (dict(combine="sum"), "combine must be one of"),
    (dict(discretization="euler"), "discretization must be one of"),
]


@pytest.mark.parametrize(("cls", "kw", "msg"), _BAD_HYPERPARAMETERS)
def test_cell_and_block_reject_bad_hyperparameters(cls, kw, msg):
    """Python floats and NumPy/JAX scalars alike; NaN/inf refused; a ValueError naming the value."""
    with pytest.raises(ValueError, match=msg):
        cls(**{"in_features": 3, "features": 4, **kw}, rngs=rngs())


@pytest.mark.parametrize(("kw", "msg"), _BAD_MODEL_HYPERPARAMETERS)
def test_models_reject_bad_hyperparameters(kw, msg):
    kw = {"width": 4, "modes": 2, "proj_width": 4, **kw}
    with pytest.raises(ValueError, match=msg):
        jax.eval_shape(lambda: FNOKINN1d(**kw, rngs=rngs()))  # checked before any parameter


def test_hyperparameters_accept_numpy_and_jax_scalars_and_refuse_traced_ones():
    cell = KirchhoffCell(
        np.int64(3),
        jnp.int32(4),
        dt=np.float32(0.5),
        capacitance=jnp.float32(2.0),
        conductance=np.float64(0.5),
        kernel_size=np.int32(3),
        rngs=rngs(),
    )
    assert (cell.in_features, cell.features, cell.dt) == (3, 4, 0.5)
    assert isinstance(cell.in_features, int) and isinstance(cell.dt, float)
    np.testing.assert_allclose(cell.capacitance, 2.0, rtol=1e-6)
    np.testing.assert_allclose(cell.conductance, 0.5, rtol=1e-6)
    block = KirchhoffBlock(3, 4, order=np.int64(3), rngs=rngs())
    assert block.order == 3 and block.raw_capacitance.shape == (3, 4)
    shape = jax.eval_shape(lambda: FNOKINN(np.int64(1), modes=np.int64(2), width=4, rngs=rngs()))
    assert shape is not None
    with pytest.raises(ValueError, match="KINNBasicBlock|stride must be an integer >= 1"):
        KINNBasicBlock(2, 4, 0, rngs=rngs())
    with pytest.raises(ValueError, match=r"num_blocks\[1\] must be an integer"):
        KINNResNet((1, 1.5, 1, 1), rngs=rngs())
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1"):
        KINNResNet(num_classes=0, rngs=rngs())
    with pytest.raises(ValueError, match="carry_state must be True or False"):
        KINNResNet(carry_state=None, rngs=rngs())
    with pytest.raises(ValueError, match="steps must be an integer"):
        cascade_step_response(jnp.ones((1,)), jnp.ones((1,)), 1.0, 2.5)
    with pytest.raises(ValueError, match="out_features must be an integer"):
        SpectralCoupling(2, 2.0, (4,), rngs=rngs())
    with pytest.raises(ValueError, match="modes must be a sequence"):
        SpectralCoupling(2, 2, 4, rngs=rngs())
    # a traced hyper-parameter can be neither checked nor stored: refused, saying so
    for kw in ({"capacitance": None}, {"dt": None}):
        name = next(iter(kw))

        def build(value, name=name):
            return KirchhoffCell(3, 4, **{name: value}, rngs=rngs()).raw_capacitance[...]

        with pytest.raises(ValueError, match=f"{name} must be a concrete value"):
            jax.jit(build)(1.0)


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


# ------------------------------------------------------ shared set-up and layout


def _param_shapes(build):
    """``{path: shape}`` of a module's parameters, traced only (no compilation)."""
    flat = nnx.to_flat_state(nnx.state(nnx.eval_shape(build), nnx.Param))
    return {"/".join(map(str, p)): tuple(v.shape) for p, v in flat}


def test_parameter_paths_are_the_checkpoint_layout():
    """Checkpoints written by earlier versions restore only if these names and shapes stay."""
    cell = {"coupling/kernel": (3, 4), "coupling/bias": (4,)}
    assert _param_shapes(lambda: KirchhoffCell(3, 4, rngs=rngs())) == cell | {
        "raw_capacitance": (4,),
        "raw_conductance": (4,),
    }
    assert _param_shapes(lambda: KirchhoffBlock(3, 4, order=3, rngs=rngs())) == cell | {
        "raw_capacitance": (3, 4),
        "raw_conductance": (3, 4),
        "mix": (3, 4),
    }
    shapes = _param_shapes(lambda: FNOKINN1d(**TINY_FNO, rngs=rngs()))
    want = {"lift/kernel": (2, 4), "lift/bias": (4,), "proj1/kernel": (4, 8)}
    want |= {"proj1/bias": (8,), "proj2/kernel": (8, 1), "proj2/bias": (1,)}
    for i in range(2):
        want |= {
            f"layers/{i}/coupling/spectral/weight_real": (1, 4, 4, 3),
            f"layers/{i}/coupling/spectral/weight_imag": (1, 4, 4, 3),
            f"layers/{i}/coupling/pointwise/kernel": (4, 4),
            f"layers/{i}/coupling/pointwise/bias": (4,),
            f"layers/{i}/raw_capacitance": (2, 4),
            f"layers/{i}/raw_conductance": (2, 4),
            f"layers/{i}/mix": (2, 4),
        }
    assert shapes == want


def test_cell_and_block_share_their_set_up():
    """Same rngs: the same coupling; every row of a block's C, G is the cell's initial value."""
    kw = {"dt": 0.5, "capacitance": 2.0, "conductance": 0.25}
    cell = KirchhoffCell(3, 4, **kw, rngs=rngs(3))
    block = KirchhoffBlock(3, 4, order=2, **kw, rngs=rngs(3))
    np.testing.assert_array_equal(cell.coupling.kernel[...], block.coupling.kernel[...])
    assert cell.dt == block.dt == 0.5 and cell.in_features == block.in_features == 3
    for got, want in ((cell.capacitance, 2.0), (block.capacitance, 2.0)):
        np.testing.assert_allclose(got, np.full(got.shape, want), rtol=1e-6)
    np.testing.assert_allclose(block.conductance, np.full((2, 4), 0.25), rtol=1e-6)
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(cell.current(x), block.current(x))
    for module in (cell, block):  # the message names the class
        with pytest.raises(ValueError, match=f"{type(module).__name__}: expected input"):
            module.current(np.ones((2, 5)))


def test_fno_kinn_shares_the_fno_lift_and_projection():
    """Lift and projection come from the same code as kinetix.nn.FNO: with the same rngs the lift
    (the first parameters drawn) is the same, and FNO's projection maps the same features alike."""
    from kinetix.nn.fno import FNO1d

    kinn = FNOKINN1d(**TINY_FNO, rngs=nnx.Rngs(params=4))
    fno = FNO1d(**TINY_FNO, rngs=nnx.Rngs(params=4))
    np.testing.assert_array_equal(kinn.lift.kernel[...], fno.lift.kernel[...])
    u = jax.random.normal(key(9), (2, 16))
    h, squeeze = kinn.lift_input(u)
    np.testing.assert_array_equal(h, fno.lift_input(u)[0])
    fno.proj1, fno.proj2 = kinn.proj1, kinn.proj2
    np.testing.assert_array_equal(kinn.project(h, squeeze), fno.project(h, squeeze))
