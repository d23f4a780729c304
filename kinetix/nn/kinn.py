r"""KINN: Kirchhoff-inspired neural cells, cascades of them, and models built on them.

A Kirchhoff cell is a node of potential ``v`` (one per channel) that obeys
Kirchhoff's current law: the capacitor current and the leak current balance the
current injected by the input,

.. math::  C \, \frac{dv}{dt} = -G \, v + I(x),

with a learnable per-channel capacitance ``C > 0`` and conductance ``G > 0`` and
a coupling ``I(x)`` (dense, convolution, FNO-style spectral, or any module).
Holding ``I`` constant over a step ``dt`` (zero-order hold, ZOH) the ODE is
solved exactly:

.. math::  v_{t+1} = a \, v_t + \frac{1 - a}{G} \, I, \qquad a = e^{-G\,dt/C} \in (0, 1),

a convex combination of the old state and the steady state ``I / G``, hence
stable for every positive ``C``, ``G`` and ``dt``.

A cascade of ``K`` cells (cell ``k`` driven by cell ``k - 1``) is a ``K``-th
order linear system whose intermediate states ``v_1 .. v_K`` are the decoupled
higher-order components. Cell 1 is driven by ``I(x)``; cell ``k >= 2`` by the
current ``G_k v_{k-1}`` (a unity-gain follower), so

.. math::  C_k \, \dot v_k = -G_k v_k + G_k v_{k-1},\qquad
           \frac{V_k(s)}{I(s)} = \frac{1}{G_1}\prod_{j \le k} \frac{1}{1 + s\tau_j},
           \quad \tau_j = C_j / G_j.

The cascade is discretised exactly for a held input (the matrix exponential of
the bidiagonal system, :func:`cascade_coefficients`), so its sampled step
response is the analytic response of ``prod 1 / (1 + s tau_k)`` at every
``t = n dt``. The states of a step are combined into one output (``"mix"``,
the default: learnable per-order, per-channel weights, initialised to ``1/K``;
or ``"last"``: ``v_K``).

Layout: pure array functions first (:func:`zoh_coefficients`, :func:`zoh_step`,
:func:`cascade_coefficients`, :func:`cascade_step`, :func:`cascade_step_response`),
then the NNX modules (:class:`KirchhoffCell`, :class:`KirchhoffBlock`) and the
models (:class:`KINNResNet` / :func:`kinn_resnet18`, :class:`FNOKINN` /
:class:`FNOKINN1d` / :class:`FNOKINN2d`). Features are channels-last.

Assumptions (the KINN/CHONN abstracts fix none of these; see
``/work/shared/papers/KINN_and_diffusion.md``, section 1):

A1. Cell equation ``C dv/dt = -G v + I(x)``; ``C``, ``G`` per channel (last
    axis), ``softplus(raw) + 1e-4``, initialised to ``C = G = 1``.
A2. Discretisation: exact ZOH with a fixed step ``dt = 1.0`` (a hyperparameter,
    not learned; with learnable ``C`` it only sets the initial time constant).
A3. Cascade coupling: cell ``k >= 2`` is driven by ``G_k v_{k-1}`` (unity DC
    gain per stage), so the block is ``(1/G_1) prod_k 1/(1 + s tau_k)`` and only
    ``tau_k = C_k/G_k`` matters for ``k >= 2``. Default discretisation
    ``"exact"`` (the whole cascade's ZOH); ``"sequential"`` updates the cells one
    after another, cell ``k`` seeing ``v_{k-1}`` already updated (exact for
    ``K = 1``, a first-order-accurate approximation of the cascade otherwise).
A4. Combination of the ``K`` states: ``"mix"`` (default), ``y = sum_k w_k v_k``
    with per-channel ``w`` initialised to ``1/K`` (``K`` poles, ``K - 1`` learnable
    zeros); or ``"last"``, ``y = v_K``. Default order ``K = 2``.
A5. Where time comes from: depth. A model carries the cascade state from one
    block to the next (zeros, the rest potential, at the first block and
    wherever the shape changes, e.g. at each ResNet stage). :class:`FNOKINN`
    also offers ``inner_steps`` iterations per layer, each recomputing the
    current from the layer's own output.
A6. Couplings: ``"dense"`` (``nnx.Linear``), ``"conv"`` (``nnx.Conv``, stride
    1, ``SAME`` padding), ``"spectral"`` (FNO: ``K u + W u``, a
    :class:`~kinetix.nn.fno.SpectralConv` plus a pointwise linear map), no
    activation on the current. :class:`KINNResNet` uses the BasicBlock branch
    (conv-BN-ReLU-conv-BN) as the coupling and adds the shortcut:
    ``relu(shortcut(x) + y)``. :class:`FNOKINN` applies the FNO activation to
    the block output (none after the last layer).
A7. Backbones: the paper's ImageNet backbone and PDE benchmarks are not
    public; here a CIFAR-layout ResNet-18 (:func:`kinn_resnet18`) and the FNO
    of Li et al. (:class:`FNOKINN1d` / :class:`FNOKINN2d`, same lift, projection,
    modes and width as :class:`kinetix.nn.FNO1d` / ``FNO2d``). The models are
    deterministic (``rngs`` is accepted for interface parity only).
A8. Numerics: the cascade's ``(K+1) x (K+1)`` matrix exponential uses a Taylor
    polynomial with a fixed 22 squarings of ``expm - I`` (no data-dependent
    branches); rates ``dt / tau`` above ``1e6`` are clipped there. The
    coefficients are computed in float32 at least (float16 and bfloat16 inputs
    are rounded once at the end), and ``G dt / C``, ``dt / C``, ``1 / G`` are
    formed from mantissas and exponents, so every ``C > 0``, ``G >= 0``,
    ``dt > 0`` representable in the dtype gives finite coefficients (a ``b`` or
    ``Gamma`` beyond the dtype's largest value is returned as that value; see
    :func:`zoh_coefficients`).

Validation: every constructor hyper-parameter is checked when a module is
built, with a ``ValueError`` that names it: integers (Python or NumPy ints, or
concrete 0-d integer arrays; not ``bool`` or ``2.0``), real scalars
(Python/NumPy numbers or concrete 0-d arrays; NaN and inf refused), the
string choices, and ``bool`` flags. ``dt`` must be a finite number ``> 0``
that is a normal float32 number (the parameters are float32), and the initial
``capacitance`` / ``conductance`` must lie in ``(1e-4, float32 max]``.
Hyper-parameters must be concrete: a traced value (a module built under
``jit``/``grad``/``vmap`` from a traced number) is refused, since it can be
neither checked nor stored. The array functions check concrete ``C``, ``G``,
``dt``; traced ones cannot be checked.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kinetix.nn.fno import _ACTIVATIONS, SpectralConv, _GridOperator, _Linear
from kinetix.nn.resnet import _batch_norm, _conv, _Shortcut
from kinetix.validation import (
    check_concrete,
    check_flag,
    check_int_param,
    check_real_param,
    is_traced,
    real_array,
)

__all__ = [
    "FNOKINN",
    "FNOKINN1d",
    "FNOKINN2d",
    "KINNBasicBlock",
    "KINNResNet",
    "KirchhoffBlock",
    "KirchhoffCell",
    "SpectralCoupling",
    "cascade_coefficients",
    "cascade_step",
    "cascade_step_response",
    "kinn_resnet18",
    "shared_coefficients",
    "zoh_coefficients",
    "zoh_step",
]

Coupling = Literal["dense", "conv", "spectral", "follower"]
Combine = Literal["mix", "last"]
Discretization = Literal["exact", "sequential"]
Activation = Literal["gelu", "relu"]

MIN_POSITIVE = 1e-4  # floor of C and G: softplus(raw) + MIN_POSITIVE
_COUPLINGS = ("dense", "conv", "spectral", "follower")
_COMBINES = ("mix", "last")
_DISCRETIZATIONS = ("exact", "sequential")
_EXPM_ORDER = 10  # Taylor order of expm - I after scaling (norm <= 0.48: error < 1e-11)
_EXPM_SQUARINGS = 22  # fixed: 2 * _EXPM_MAX_RATE + 1 < 0.48 * 2^22
_EXPM_MAX_RATE = 1e6  # dt / tau above this is treated as 1e6 (exp(-1e6) = 0 anyway)


# ------------------------------------------------------------------ validation


def _check_dt(dt, dtype=None, *, normal: bool = False) -> None:
    """``ValueError`` unless a concrete ``dt`` is real, finite and ``> 0``.

    With ``dtype`` (the dtype the coefficients are computed in) ``dt`` must also
    stay finite and non-zero when rounded to it, and with ``normal=True`` be at
    least its smallest normal number. A traced ``dt`` cannot be checked.
    """
    if is_traced(dt):
        return
    d = real_array(dt, "dt")
    if d.size == 0 or not (np.all(np.isfinite(d)) and np.all(d > 0)):
        raise ValueError(f"dt must be finite and > 0, got {dt!r}.")
    if dtype is not None:
        info = jnp.finfo(dtype)
        low = float(info.tiny if normal else info.smallest_subnormal)
        with np.errstate(over="ignore", under="ignore"):
            lo, hi = float(d.min().astype(dtype)), float(d.max().astype(dtype))
        if not (math.isfinite(hi) and lo >= low):
            raise ValueError(
                f"dt={dt!r} is not representable in {jnp.dtype(dtype).name}, the dtype the "
                f"coefficients are computed in: need {low:.4g} <= dt <= {float(info.max):.4g}. "
                "Rescale time: a and b depend on dt only through dt / C and G dt / C."
            )


def _check_cg(C, G, dtype) -> None:
    """``ValueError`` unless concrete ``C`` is finite and > 0 and ``G`` finite and >= 0 in ``dtype``.

    The values are checked after rounding to ``dtype`` (in NumPy: under ``jit``
    even a cast of a constant would be traced), so an input that overflows to
    ``inf`` or underflows to ``0`` there is refused too. Traced values are skipped.
    """
    for value, name, what in ((C, "C", "> 0"), (G, "G", ">= 0")):
        if is_traced(value):
            continue
        real_array(value, name)
        arr = np.asarray(np.asarray(value).astype(dtype), np.float64)
        bad = ~np.isfinite(arr) | ((arr <= 0) if name == "C" else (arr < 0))
        if np.any(bad):
            raise ValueError(
                f"{name} must be finite and {what} in {jnp.dtype(dtype).name} "
                f"({'capacitance' if name == 'C' else 'conductance'}); {int(bad.sum())} of "
                f"{arr.size} entries are not, e.g. {float(arr[bad].flat[0])!r} after the cast "
                f"to {jnp.dtype(dtype).name} (a value beyond its range becomes inf or 0: "
                "rescale C, G and dt together)."
            )


# ------------------------------------------------------------------- array functions


def _pow2_scale(m: jax.Array, e: jax.Array) -> jax.Array:
    """``m * 2**e`` for integer ``e`` without spurious overflow or underflow.

    ``2**e`` is applied as four exact power-of-two factors whose exponents all
    have the sign of ``e``, so the running product moves monotonically from
    ``m`` to the result: it overflows to ``inf`` or underflows to ``0`` only when
    the result does. For ``m`` of moderate size (here within ``[2^-8, 2^8]``).
    """
    chunk = jnp.finfo(m.dtype).maxexp // 2
    e = jnp.clip(e, -4 * chunk, 4 * chunk)
    one = jnp.ones((), m.dtype)
    for _ in range(4):
        part = jnp.clip(e, -chunk, chunk)
        m = m * jnp.ldexp(one, part)
        e = e - part
    return m


def _frexp(v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(m, e)`` with ``v = m * 2**e``, ``m`` in ``[0.5, 1)`` (``(0, 0)`` for ``v = 0``).

    As ``jnp.frexp``, but exact for subnormal ``v >= 0`` too: XLA on CPU flushes
    subnormal numbers to zero in arithmetic, and ``jnp.frexp`` returns the same
    ``(0.5, minexp - nmant)`` for all of them. Here their significand bits are
    read as an integer, converted (exactly) to a normal float and split.
    """
    info = jnp.finfo(v.dtype)
    bits = jax.lax.bitcast_convert_type(v, jnp.int32 if info.bits == 32 else jnp.int64)
    frac = bits & ((1 << info.nmant) - 1)
    sub = ((bits >> info.nmant) & ((1 << info.nexp) - 1) == 0) & (frac != 0)
    m, e = jnp.frexp(v)
    ms, es = jnp.frexp(frac.astype(v.dtype))  # v = frac * 2^(minexp - nmant)
    return jnp.where(sub, ms, m), jnp.where(sub, es + (info.minexp - info.nmant), e)


def _phi1(z: jax.Array) -> jax.Array:
    """``(1 - exp(-z)) / z`` for ``z >= 0`` (``1`` at ``0``), accurate value and gradient.

    Near 0 a Taylor polynomial (5 terms; relative error below the float's
    epsilon), where the autodiff derivative of the quotient would cancel.
    """
    small = z < (0.1 if jnp.finfo(z.dtype).bits <= 32 else 1e-3)
    safe = jnp.where(small, 1.0, z)
    series = 1.0 - z * (1 / 2 - z * (1 / 6 - z * (1 / 24 - z / 120)))
    # z >= 1: 1 - exp(-z) has no cancellation, and its derivative exp(-z) keeps full
    # relative precision (the JVP of expm1, expm1 + 1, rounds it to 0 for large z)
    one_minus = jnp.where(safe >= 1.0, 1.0 - jnp.exp(-safe), -jnp.expm1(-safe))
    return jnp.where(small, series, one_minus / safe)


def _dphi1(z: jax.Array) -> jax.Array:
    """``d/dz (1 - exp(-z)) / z = (exp(-z) - phi_1(z)) / z`` for ``0 <= z < 1`` (series below 0.5)."""
    small = z < 0.5
    safe = jnp.where(small, 0.75, z)
    # sum_{k>=1} k (-z)^(k-1) (-1) / (k+1)!, 9 terms: error < 1e-8 at z = 0.5
    series = jnp.zeros_like(z)
    for k in range(9, 0, -1):
        series = series * z + (-1) ** k * k / math.factorial(k + 1)
    return jnp.where(small, series, (jnp.exp(-safe) + jnp.expm1(-safe) / safe) / safe)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _monomial(powers: tuple[int, ...], *vs: jax.Array) -> jax.Array:
    """``prod_i vs[i] ** powers[i]`` (``vs >= 0``, same shape and dtype; ``powers`` in -2..2).

    Formed as one number ``m 2^e`` from the mantissas and exponents (exact for
    subnormal inputs, no intermediate overflow or underflow) and clipped to the
    largest finite value; so is each derivative ``p_i prod / vs[i]``. A zero
    input with a negative power is not allowed (pass 1 where it is not used).
    """
    m = jnp.ones_like(vs[0])
    e = jnp.zeros(vs[0].shape, jnp.int32 if jnp.finfo(vs[0].dtype).bits <= 32 else jnp.int64)
    for p, v in zip(powers, vs, strict=True):
        mv, ev = _frexp(v)
        m, e = m * mv**p, e + p * ev.astype(e.dtype)
    big = jnp.finfo(m.dtype).max
    return jnp.minimum(_pow2_scale(m, e), big)


@_monomial.defjvp
def _monomial_jvp(powers, primals, tangents):
    out = _monomial(powers, *primals)
    tangent = jnp.zeros_like(out)
    for i, (p, t) in enumerate(zip(powers, tangents, strict=True)):
        if p == 0:
            continue
        lowered = tuple(q - (j == i) for j, q in enumerate(powers))
        tangent = tangent + p * _monomial(lowered, *primals) * t
    return out, tangent


def _zoh_parts(C, G, dt, b_max):
    """``a``, ``b`` and what their derivatives need, from mantissas and exponents (see zoh_coefficients)."""
    mc, ec = _frexp(C)
    mg, eg = _frexp(G)
    md, ed = _frexp(dt)
    x = _pow2_scale(mg * md / mc, eg + ed - ec)  # G dt / C; 0 for G = 0
    a = jnp.exp(-x)
    big = x >= 1.0
    # x >= 1: (1 - a) / G, as ((1 - a) / m_G) 2^-e_G (G > 0 here; no cancellation in 1 - a)
    b_big = _pow2_scale((1.0 - jnp.where(big, a, 0.5)) / jnp.where(big, mg, 1.0), -eg)
    # x < 1: (dt / C) phi_1(x), as (m_dt / m_C) phi_1(x) 2^(e_dt - e_C)
    b_small = _pow2_scale(md / mc * _phi1(jnp.where(big, 0.0, x)), ed - ec)
    b = jnp.where(big, b_big, b_small)
    clipped = b > b_max
    return a, jnp.minimum(b, b_max), (mc, ec, mg, eg, md, ed, x, big, clipped)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _zoh(C, G, dt, b_max):
    a, b, _ = _zoh_parts(C, G, dt, b_max)
    return a, b


@_zoh.defjvp
def _zoh_jvp(b_max, primals, tangents):
    """Analytic derivatives, each one number ``m 2^e`` formed from the mantissas and exponents.

    With ``x = G dt / C`` and ``r = dt / C`` (``a_C`` is ``da/dC``, and so on):
    ``a_C = a G dt / C^2``, ``a_G = -a dt / C``, ``a_dt = -a G / C``,
    ``b_C = -a dt / C^2``, ``b_dt = a / C``, ``b_G = r^2 phi_1'(x)`` (``x < 1``)
    or ``-(1 - (1 + x) a) / G^2`` (``x >= 1``). ``a`` itself is split as
    ``m_a 2^e_a`` by range reduction, so that ``a / C`` stays right when ``a``
    alone would underflow. Coefficients are clipped to the largest finite value
    (so a zero cotangent never meets ``inf``); ``b``'s are 0 where ``b`` was clipped.
    """
    C, G, dt = primals
    tC, tG, tdt = tangents
    a, b, (mc, ec, mg, eg, md, ed, x, big, clipped) = _zoh_parts(C, G, dt, b_max)
    info = jnp.finfo(C.dtype)
    # a = m_a 2^e_a: frexp while a is normal, else x = k ln2 + f, a = e^-f 2^-k
    limit = 2 * math.log(2) * (info.maxexp - info.minexp + info.nmant)  # beyond: every a-term is 0
    xc = jnp.minimum(x, limit)
    k = jnp.floor(xc / math.log(2))
    ma_red, ea_red = jnp.exp(-(xc - k * math.log(2))), -k.astype(ec.dtype)
    ma_n, ea_n = _frexp(a)
    normal = a >= info.tiny
    ma = jnp.where(normal, ma_n, jnp.where(x > limit, 0.0, ma_red))
    ea = jnp.where(normal, ea_n, ea_red)

    def num(m, e):
        return jnp.clip(_pow2_scale(m, e), -info.max, info.max)

    a_c = num(ma * mg * md / (mc * mc), ea + eg + ed - 2 * ec)
    a_g = -num(ma * md / mc, ea + ed - ec)
    a_dt = -num(ma * mg / mc, ea + eg - ec)
    b_c = -num(ma * md / (mc * mc), ea + ed - 2 * ec)
    b_dt = num(ma / mc, ea - ec)
    xs = jnp.where(big, 0.0, x)
    b_g_small = num((md / mc) ** 2 * _dphi1(xs), 2 * (ed - ec))
    rest = 1.0 - jnp.where(big & (x <= limit), (1.0 + x) * a, 0.0)  # 1 - (1 + x) a in [0.26, 1]
    b_g_big = -num(rest / jnp.where(big, mg * mg, 1.0), -2 * eg)
    b_g = jnp.where(big, b_g_big, b_g_small)
    b_c, b_g, b_dt = (jnp.where(clipped, 0.0, v) for v in (b_c, b_g, b_dt))
    ta = a_c * tC + a_g * tG + a_dt * tdt
    tb = b_c * tC + b_g * tG + b_dt * tdt
    return (a, b), (ta, tb)


def zoh_coefficients(
    C: jax.typing.ArrayLike, G: jax.typing.ArrayLike, dt: jax.typing.ArrayLike
) -> tuple[jax.Array, jax.Array]:
    r"""Exact zero-order-hold coefficients of ``C dv/dt = -G v + I``.

    ``v(t + dt) = a v(t) + b I`` for ``I`` held constant, with ``x = G dt / C``,
    ``a = exp(-x)`` and ``b = (1 - a) / G = (dt / C) (1 - exp(-x)) / x`` (the
    pure integrator ``b = dt / C`` at ``G = 0``).

    Numerics: finite for every input in range, in float16, bfloat16, float32
    and float64. ``C``, ``G`` and ``dt`` are split into mantissa and exponent
    (exact for subnormal numbers), so no intermediate product overflows or
    underflows unless the result does; float16 and bfloat16 are computed in
    float32 and rounded once at the end. ``b`` is ``(1 - a) / G`` for
    ``x >= 1`` and ``(dt / C) phi_1(x)`` below (a Taylor polynomial near
    ``x = 0``): within a few units in the last place; ``a`` within about
    ``(1 + x)`` units (``exp`` amplifies the rounding of ``x``). Two things are
    not representable and are returned as follows:

    * a ``b`` above the dtype's largest finite value (``dt / C`` or ``1 / G``
      beyond it) is returned as that largest value, never ``inf``;
    * results below the smallest normal number may be flushed to ``0`` (XLA on
      CPU flushes subnormal float32/float64); the absolute error is then below
      that number.

    Derivatives (w.r.t. ``C``, ``G`` and ``dt``) are the analytic ones (e.g.
    ``da/dG = -a dt / C``, ``db/dC = -a dt / C^2``), each formed as one number
    from the mantissas and exponents, so they are accurate wherever they are
    representable (``G = 0`` included); beyond the largest finite value they
    are clipped to it, and ``b``'s are 0 where ``b`` was clipped.

    Args:
      C: capacitances, ``> 0`` (any shape broadcastable with ``G``).
      G: conductances, ``>= 0``.
      dt: time step, ``> 0`` (a scalar or an array broadcastable with them),
        representable in the computation dtype
        ``promote_types(result_type(C, G, float), float32)``.

    Returns:
      ``(a, b)`` of the broadcast shape, in ``result_type(C, G, float)``;
      ``0 <= a <= 1`` and ``0 <= b <= finfo.max``.

    Raises:
      ValueError: for a concrete ``dt`` that is not finite and ``> 0`` or that
        overflows or underflows in the computation dtype, and for concrete ``C``
        or ``G`` that are not finite, ``C > 0`` and ``G >= 0`` once cast to the
        result dtype. Traced values (under ``jit``/``grad``/``vmap``) cannot be
        checked; for them out-of-range inputs give unspecified results (NaN for NaN).

    Example:
      >>> a, b = zoh_coefficients(1.0, 2.0, 0.5)
      >>> round(float(a), 6), round(float(b), 6)  # exp(-1), (1 - exp(-1)) / 2
      (0.367879, 0.31606)
    """
    C_in, G_in = C, G
    C, G = jnp.asarray(C), jnp.asarray(G)
    dtype = jnp.result_type(C, G, float)
    work = jnp.promote_types(dtype, jnp.float32)
    _check_dt(dt, work)
    _check_cg(C_in, G_in, dtype)
    C, G = C.astype(dtype).astype(work), G.astype(dtype).astype(work)
    C, G, dt = jnp.broadcast_arrays(C, G, jnp.asarray(dt, work))
    a, b = _zoh(C, G, dt, float(jnp.finfo(dtype).max))
    return a.astype(dtype), b.astype(dtype)


def zoh_step(
    v: jax.typing.ArrayLike,
    current: jax.typing.ArrayLike,
    a: jax.typing.ArrayLike,
    b: jax.typing.ArrayLike,
) -> jax.Array:
    """One exact ZOH step of a Kirchhoff cell: ``a * v + b * current``.

    Args:
      v: state (potential) before the step.
      current: input current, held over the step (broadcast with ``v``).
      a, b: from :func:`zoh_coefficients` (per channel: shape ``(C,)`` broadcasts
        on the last axis).

    Returns:
      The state after the step, ``a v + (1 - a) I / G``.

    Example:
      >>> a, b = zoh_coefficients(1.0, 1.0, 1.0)
      >>> round(float(zoh_step(0.0, 1.0, a, b)), 6)  # 1 - exp(-1)
      0.632121
    """
    return jnp.asarray(a) * jnp.asarray(v) + jnp.asarray(b) * jnp.asarray(current)


def _matmul(x: jax.Array, y: jax.Array) -> jax.Array:
    """Batched product of small matrices as broadcast-multiply-sum (cheap to compile on CPU)."""
    return jnp.sum(x[..., :, :, None] * y[..., None, :, :], axis=-2)


def _expm(m: jax.Array) -> jax.Array:
    """Matrix exponential of a batch ``(..., n, n)`` of small matrices with norm ``<~ 4e6``.

    Scaling and squaring with a fixed number of squarings, so one traced program
    serves every matrix and vectorises without branches: ``X = m / 2^22``,
    ``Y = expm(X) - I`` by a Taylor polynomial, then 22 doublings
    ``Y <- 2 Y + Y Y``. Working with ``expm - I`` instead of ``expm`` keeps full
    relative precision for small norms, where ``I + X`` would round ``X`` away.
    """
    eye = jnp.eye(m.shape[-1], dtype=m.dtype)
    x = m / 2.0**_EXPM_SQUARINGS
    r = eye + x / _EXPM_ORDER
    for k in range(_EXPM_ORDER - 1, 1, -1):
        r = eye + _matmul(x, r) / k
    y = _matmul(x, r)

    def double(y, _):
        return 2.0 * y + _matmul(y, y), None

    y, _ = jax.lax.scan(double, y, None, length=_EXPM_SQUARINGS)
    return y + eye


def cascade_coefficients(
    C: jax.typing.ArrayLike,
    G: jax.typing.ArrayLike,
    dt: jax.typing.ArrayLike,
    *,
    method: Discretization = "exact",
) -> tuple[jax.Array, jax.Array]:
    r"""ZOH coefficients of a cascade of ``K`` Kirchhoff cells.

    The cascade (assumption A3 of this module)::

        C_1 dv_1/dt = -G_1 v_1 + I
        C_k dv_k/dt = -G_k v_k + G_k v_{k-1},   k = 2 .. K

    is advanced by ``v_k <- sum_j Phi[k, j] v_j + Gamma[k] I`` (:func:`cascade_step`).

    * ``"exact"``: the exact solution for ``I`` held over ``dt``:
      ``Phi = expm(A dt)``, ``Gamma = int_0^dt expm(A s) ds e_1 / C_1``, from one
      ``(K+1) x (K+1)`` augmented matrix exponential per channel. Works for equal
      or distinct time constants; the sampled step response equals the analytic
      response of ``(1/G_1) prod_k 1/(1 + s tau_k)``. Rates ``dt / tau_k`` above
      ``1e6`` are treated as ``1e6`` (``exp(-1e6) = 0``; cell 1's gain is
      corrected so the steady state stays ``I / G_1``).
    * ``"sequential"``: each cell's exact ZOH step in turn, cell ``k`` holding
      the *updated* ``v_{k-1}`` over the step: ``v_k <- a_k v_k + (1 - a_k) v_{k-1}'``.
      Exact for ``K = 1``; otherwise first-order accurate in ``dt``.

    Both are stable: every state is a convex combination of its old value and
    its driving value, so ``|v_k| <= max(max_j |v_j(0)|, max |I| / G_1)``.

    Numerics as in :func:`zoh_coefficients`: float16 and bfloat16 are computed
    in float32 and rounded at the end, the rates ``G_k dt / C_k``, ``dt / C_1``
    and ``1 / G_1`` are formed from mantissas and exponents, so every input in
    range gives finite coefficients; a ``Gamma`` entry above the dtype's
    largest finite value is returned as that value.

    Args:
      C, G: ``(K, *channels)`` capacitances ``> 0`` and conductances ``>= 0``.
      dt: time step, ``> 0`` (broadcast against ``C``), representable in the
        computation dtype (at least float32).
      method: ``"exact"`` or ``"sequential"``.

    Returns:
      ``(Phi, Gamma)`` of shapes ``(K, K, *channels)`` (lower triangular in the
      first two axes) and ``(K, *channels)``, in ``result_type(C, G, float)``.

    Raises:
      ValueError: on an unknown ``method``, mismatched shapes, or concrete
        ``dt``, ``C``, ``G`` out of range (see :func:`zoh_coefficients`; traced
        values cannot be checked).

    Example:
      >>> import jax.numpy as jnp
      >>> phi, gamma = cascade_coefficients(jnp.ones((2, 3)), jnp.ones((2, 3)), 1.0)
      >>> phi.shape, gamma.shape
      ((2, 2, 3), (2, 3))
      >>> round(float(gamma[1, 0]), 6)  # 1 - 2 exp(-1): the Erlang-2 step response at t = 1
      0.264241
    """
    if method not in _DISCRETIZATIONS:
        raise ValueError(f"method must be one of {_DISCRETIZATIONS}, got {method!r}.")
    C_in, G_in = C, G
    C, G = jnp.asarray(C), jnp.asarray(G)
    if C.shape != G.shape or C.ndim < 1 or C.shape[0] < 1:
        raise ValueError(
            f"C and G must have the same shape (K, *channels) with K >= 1, got {C.shape} and {G.shape}."
        )
    K = C.shape[0]
    if K == 1:  # one cell: both methods are the closed-form ZOH
        a, b = zoh_coefficients(C[0], G[0], dt)
        return a[None, None], b[None]
    dtype = jnp.result_type(C, G, float)
    work = jnp.promote_types(dtype, jnp.float32)
    _check_dt(dt, work)
    _check_cg(C_in, G_in, dtype)
    C, G = C.astype(dtype).astype(work), G.astype(dtype).astype(work)
    dt = jnp.broadcast_to(jnp.asarray(dt, work), C.shape)
    b_max = float(jnp.finfo(dtype).max)
    rate = _monomial((1, 1, -1), G, dt, C)  # (K, *ch): G dt / C = dt / tau_k
    if method == "sequential":
        a1, b1 = _zoh(C[0], G[0], dt[0], b_max)
        a = jnp.exp(-rate)
        gain = -jnp.expm1(-rate)  # 1 - a, accurate for small rates
        eye = jnp.eye(K, dtype=work).reshape((K, K) + (1,) * (C.ndim - 1))
        phi_rows = [a1 * eye[0]]
        gamma = [b1]
        for k in range(1, K):
            phi_rows.append(a[k] * eye[k] + gain[k] * phi_rows[-1])
            gamma.append(gain[k] * gamma[-1])
        return jnp.stack(phi_rows).astype(dtype), jnp.stack(gamma).astype(dtype)
    # exact: expm([[A dt, e_1], [0, 0]]) = [[Phi, phi_1(A dt) e_1], [0, 1]],
    # A = diag(-1/tau) + subdiag(1/tau_k); Gamma = (dt / C_1) phi_1(A dt) e_1.
    clipped = jnp.minimum(rate, _EXPM_MAX_RATE)
    r = jnp.moveaxis(clipped, 0, -1)  # (*ch, K)
    m = jnp.zeros(r.shape[:-1] + (K + 1, K + 1), work)
    idx = jnp.arange(K)
    m = m.at[..., idx, idx].set(-r)
    m = m.at[..., idx[1:], idx[:-1]].set(r[..., 1:])
    m = m.at[..., 0, K].set(1.0)
    e = _expm(m)
    phi = jnp.moveaxis(e[..., :K, :K], (-2, -1), (0, 1))
    # Gamma = (dt / C_1) e[:K, K] (times clipped / rate if cell 1's rate was clipped, so that
    # the steady state stays I / G_1). Equal to (e rho) / G_1 with rho = min(rate_1, 1e6):
    # used for rho >= 1, where e rho <= 1 (dt / C_1 may overflow while Gamma does not)
    col = jnp.moveaxis(e[..., :K, K], -1, 0)
    hi = rate[0] >= 1.0
    from_g = col * clipped[0] * _monomial((-1,), jnp.where(hi, G[0], 1.0))
    from_c = col * _monomial((1, -1), dt[0], C[0])
    gamma = jnp.minimum(jnp.where(hi, from_g, from_c), b_max)
    return phi.astype(dtype), gamma.astype(dtype)


def cascade_step(
    states: jax.typing.ArrayLike,
    current: jax.typing.ArrayLike,
    phi: jax.typing.ArrayLike,
    gamma: jax.typing.ArrayLike,
) -> jax.Array:
    """One step of a ``K``-cell cascade: ``v_k <- sum_{j<=k} Phi[k, j] v_j + Gamma[k] I``.

    Args:
      states: ``(K, *shape)`` states ``v_1 .. v_K``.
      current: ``shape``-broadcastable input current of cell 1, held over the step.
      phi, gamma: from :func:`cascade_coefficients`, ``(K, K, *ch)`` and ``(K, *ch)``
        with ``ch`` broadcasting against the trailing axes of ``shape``.

    Returns:
      The ``(K, *shape)`` states after the step.

    Example:
      >>> import jax.numpy as jnp
      >>> phi, gamma = cascade_coefficients(jnp.ones((2, 1)), jnp.ones((2, 1)), 1.0)
      >>> cascade_step(jnp.zeros((2, 4, 1)), jnp.ones((4, 1)), phi, gamma)[:, 0, 0]
      Array([0.63212055, 0.26424113], dtype=float32)
    """
    states, current = jnp.asarray(states), jnp.asarray(current)
    phi, gamma = jnp.asarray(phi), jnp.asarray(gamma)
    K = states.shape[0]
    if phi.shape[:2] != (K, K) or gamma.shape[0] != K:
        raise ValueError(
            f"cascade_step: states hold K={K} cells but phi/gamma have shapes {phi.shape}, "
            f"{gamma.shape}; expected (K, K, ...) and (K, ...)."
        )
    out = []
    for k in range(K):
        v = gamma[k] * current
        for j in range(k + 1):
            v = v + phi[k, j] * states[j]
        out.append(v)
    return jnp.stack(out)


def cascade_step_response(
    C: jax.typing.ArrayLike,
    G: jax.typing.ArrayLike,
    dt: jax.typing.ArrayLike,
    steps: int,
    *,
    method: Discretization = "exact",
) -> jax.Array:
    """States of a cascade at rest driven by a unit current, at ``t = dt, 2 dt, ..., steps dt``.

    With ``method="exact"``, ``G_1 * response[n - 1, k]`` is the analytic unit
    step response of ``prod_{j <= k} 1 / (1 + s tau_j)`` at ``t = n dt``.

    Args:
      C, G: ``(K, *channels)`` cascade parameters.
      dt: time step.
      steps: number of steps, ``>= 1``.
      method: see :func:`cascade_coefficients`.

    Returns:
      ``(steps, K, *channels)`` states.

    Example:
      >>> import jax.numpy as jnp
      >>> r = cascade_step_response(jnp.ones((1,)), jnp.ones((1,)), 0.5, 4)
      >>> r.shape  # (steps, K)
      (4, 1)
    """
    steps = check_int_param(steps, "steps")
    phi, gamma = cascade_coefficients(C, G, dt, method=method)
    one = jnp.ones(gamma.shape[1:], gamma.dtype)

    def body(v, _):
        v = cascade_step(v, one, phi, gamma)
        return v, v

    _, out = jax.lax.scan(body, jnp.zeros_like(gamma), None, length=steps)
    return out


# ---------------------------------------------------------------------- modules


def _dt_param(dt) -> float:
    """The step of a module: finite, ``> 0`` and a normal float32 number (the parameters' dtype)."""
    check_concrete(dt, "dt")
    if real_array(dt, "dt").ndim != 0:
        raise ValueError(f"dt must be a scalar (one step for all channels), got {dt!r}.")
    _check_dt(dt, jnp.float32, normal=True)  # the parameters, hence the coefficients, are float32
    return float(np.asarray(dt))


def _check_choices(combine, discretization) -> None:
    """``ValueError`` unless ``combine`` and ``discretization`` are among the options of a block."""
    if not isinstance(combine, str) or combine not in _COMBINES:
        raise ValueError(f"combine must be one of {_COMBINES}, got {combine!r}.")
    if not isinstance(discretization, str) or discretization not in _DISCRETIZATIONS:
        raise ValueError(
            f"discretization must be one of {_DISCRETIZATIONS}, got {discretization!r}."
        )


def _inverse_softplus(y, name: str) -> float:
    """``raw`` with ``softplus(raw) + MIN_POSITIVE == y``, for a valid initial ``C`` or ``G``."""
    y = check_real_param(y, name)
    z = y - MIN_POSITIVE
    if z <= 0:
        raise ValueError(
            f"{name} must be > {MIN_POSITIVE} (the initial C and G; C and G are "
            f"softplus(raw) + {MIN_POSITIVE}), got {y}."
        )
    if y > float(jnp.finfo(jnp.float32).max):
        raise ValueError(
            f"{name} must be at most {float(jnp.finfo(jnp.float32).max):.4g} (the parameters are "
            f"float32), got {y}."
        )
    return float(z + math.log(-math.expm1(-z)))


def _positive(raw: jax.Array) -> jax.Array:
    return jax.nn.softplus(raw) + MIN_POSITIVE


class SpectralCoupling(nnx.Module):
    """FNO-style coupling ``K u + W u``: a spectral convolution plus a pointwise linear map.

    The same two branches as :class:`kinetix.nn.fno.FourierLayer` (``spectral``,
    ``pointwise``, PyTorch-like initialisation), with ``in_features`` and
    ``out_features`` allowed to differ.

    Args:
      in_features, out_features: channels.
      modes: kept Fourier modes per spatial axis (its length is the number of
        spatial axes).
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    Raises:
      ValueError: on an invalid hyper-parameter (type, range, NaN/inf, or a traced
        value; module docstring, "Validation").

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> SpectralCoupling(2, 3, (4,), rngs=nnx.Rngs(0))(jnp.ones((1, 16, 2))).shape
      (1, 16, 3)
    """

    def __init__(
        self, in_features: int, out_features: int, modes: Sequence[int], *, rngs: nnx.Rngs
    ):
        in_features = check_int_param(in_features, "in_features")
        out_features = check_int_param(out_features, "out_features")
        if isinstance(modes, str) or not isinstance(modes, Sequence | np.ndarray | jax.Array):
            raise ValueError(
                f"modes must be a sequence of integers >= 1 (one per spatial axis), got {modes!r}."
            )
        modes = _spatial_tuple(modes, 1, "modes")
        self.spectral = SpectralConv(in_features, out_features, modes, rngs=rngs)
        self.pointwise = _Linear(in_features, out_features, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.spectral(x) + self.pointwise(x)


def _spatial_tuple(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    """``value`` per spatial axis: an int (repeated ``ndim`` times) or a sequence of ints >= 1."""
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence | np.ndarray | jax.Array)
        or (np.ndim(value) == 0)
    ):
        value = (check_int_param(value, name),) * check_int_param(ndim, "ndim")
    values = tuple(check_int_param(v, f"{name}[{i}]") for i, v in enumerate(value))
    if not values:
        raise ValueError(f"{name} must be positive integers (one per spatial axis), got {value!r}.")
    return values


def _make_coupling(
    coupling: Coupling | nnx.Module,
    in_features: int,
    features: int,
    *,
    kernel_size: int | Sequence[int],
    modes: int | Sequence[int] | None,
    ndim: int,
    rngs: nnx.Rngs,
) -> nnx.Module | None:
    """The coupling module (``None`` for the follower); validates the choice and its options.

    ``ndim``, ``kernel_size`` and ``modes`` (when given) are checked whatever the
    coupling, so an invalid value is never silently ignored.
    """
    ndim = check_int_param(ndim, "ndim")
    kernel_size = _spatial_tuple(kernel_size, ndim, "kernel_size")
    if modes is not None:
        modes = _spatial_tuple(modes, ndim, "modes")
    if isinstance(coupling, nnx.Module):
        return coupling
    if not isinstance(coupling, str) or coupling not in _COUPLINGS:
        raise ValueError(
            f"coupling must be one of {_COUPLINGS} or an nnx.Module mapping x to the current, "
            f"got {coupling!r}."
        )
    if coupling == "dense":
        return nnx.Linear(in_features, features, rngs=rngs)
    if coupling == "conv":
        return nnx.Conv(in_features, features, kernel_size, padding="SAME", rngs=rngs)
    if coupling == "spectral":
        if modes is None:
            raise ValueError("coupling='spectral' needs modes (kept Fourier modes per axis).")
        return SpectralCoupling(in_features, features, modes, rngs=rngs)
    if in_features != features:
        raise ValueError(
            f"coupling='follower' (I = G x) needs in_features == features, got {in_features} "
            f"and {features}."
        )
    return None


class _KirchhoffBase(nnx.Module):
    """What :class:`KirchhoffCell` and :class:`KirchhoffBlock` share: the input coupling,
    the step ``dt`` and the ``C``, ``G`` parameters (``softplus(raw) + 1e-4``)."""

    def _setup(
        self,
        in_features: int,
        features: int,
        coupling: Coupling | nnx.Module,
        *,
        cells: tuple[int, ...],
        dt: float,
        capacitance: float,
        conductance: float,
        kernel_size: int | Sequence[int],
        modes: int | Sequence[int] | None,
        ndim: int,
        rngs: nnx.Rngs,
    ) -> None:
        """Validates the shared hyper-parameters and creates the coupling and ``C``, ``G``.

        ``raw_capacitance`` and ``raw_conductance`` get the shape ``cells +
        (features,)``: ``()`` for a cell, ``(K,)`` for a block (row ``k``: cell
        ``k + 1``; one array per block, cheap to compile).
        """
        self.in_features = check_int_param(in_features, "in_features")
        self.features = check_int_param(features, "features")
        self.dt = _dt_param(dt)
        raw_c = _inverse_softplus(capacitance, "capacitance")
        raw_g = _inverse_softplus(conductance, "conductance")
        self.coupling_kind = coupling if isinstance(coupling, str) else "module"
        self.coupling = _make_coupling(
            coupling,
            self.in_features,
            self.features,
            kernel_size=kernel_size,
            modes=modes,
            ndim=ndim,
            rngs=rngs,
        )
        shape = cells + (self.features,)
        self.raw_capacitance = nnx.Param(jnp.full(shape, raw_c))
        self.raw_conductance = nnx.Param(jnp.full(shape, raw_g))

    @property
    def capacitance(self) -> jax.Array:
        """``C``: ``(features,)`` for a cell, ``(K, features)`` for a block (row ``k``: cell ``k + 1``)."""
        return _positive(self.raw_capacitance[...])

    @property
    def conductance(self) -> jax.Array:
        """``G``, the shape of :attr:`capacitance`."""
        return _positive(self.raw_conductance[...])

    def current(self, x: jax.Array) -> jax.Array:
        """The input current ``I(x)`` (of cell 1 in a block), shape ``(..., features)``."""
        x = jnp.asarray(x)
        if self.coupling_kind != "module" and (x.ndim < 1 or x.shape[-1] != self.in_features):
            raise ValueError(
                f"{type(self).__name__}: expected input (..., {self.in_features}) (channels last), "
                f"got {x.shape}."
            )
        if self.coupling is None:  # follower: I = G x
            return self.conductance * x
        return self.coupling(x)


class KirchhoffCell(_KirchhoffBase):
    r"""One Kirchhoff neural cell: ``C dv/dt = -G v + I(x)``, advanced by one exact ZOH step.

    ``v_new = a v + (1 - a) I(x) / G`` with ``a = exp(-G dt / C)``, per channel
    (the last axis). ``C`` and ``G`` are ``softplus(raw) + 1e-4``. The state is
    carried by the caller: across depth (pass one cell's output as the next
    cell's ``v``) or across inner steps (call the cell repeatedly on changing
    inputs). See the module docstring for the assumptions.

    Args:
      in_features: channels of ``x``.
      features: channels of the state ``v``.
      coupling: ``"dense"``, ``"conv"``, ``"spectral"``, ``"follower"``
        (``I = G x``: the unity-gain drive of a cascade cell; needs
        ``in_features == features``) or an ``nnx.Module`` mapping ``x`` to the
        current.
      dt: the step (fixed, not learned): a finite number ``> 0``, a normal
        float32 number (``1.2e-38 .. 3.4e38``).
      capacitance, conductance: initial ``C`` and ``G`` (all channels), finite,
        ``> 1e-4`` and at most float32's largest value.
      kernel_size: conv kernel (an int: the same on ``ndim`` axes), ints ``>= 1``.
      modes: spectral coupling's kept modes (an int: the same on ``ndim`` axes).
      ndim: spatial axes for an int ``kernel_size`` / ``modes``, ``>= 1``.
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    Raises:
      ValueError: on any invalid hyper-parameter (wrong type, out of range,
        NaN/inf, or traced; see the module docstring, "Validation"). Checked
        even where unused (e.g. ``kernel_size`` with a dense coupling).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> cell = KirchhoffCell(3, 4, rngs=nnx.Rngs(0))
      >>> v = cell(jnp.ones((2, 3)))  # from rest
      >>> cell(jnp.ones((2, 3)), v).shape  # carried state
      (2, 4)
    """

    def __init__(
        self,
        in_features: int,
        features: int,
        *,
        coupling: Coupling | nnx.Module = "dense",
        dt: float = 1.0,
        capacitance: float = 1.0,
        conductance: float = 1.0,
        kernel_size: int | Sequence[int] = 3,
        modes: int | Sequence[int] | None = None,
        ndim: int = 2,
        rngs: nnx.Rngs,
    ):
        self._setup(
            in_features,
            features,
            coupling,
            cells=(),
            dt=dt,
            capacitance=capacitance,
            conductance=conductance,
            kernel_size=kernel_size,
            modes=modes,
            ndim=ndim,
            rngs=rngs,
        )

    def coefficients(self) -> tuple[jax.Array, jax.Array]:
        """``(a, b)`` of :func:`zoh_coefficients` for the current parameters."""
        return zoh_coefficients(self.capacitance, self.conductance, self.dt)

    def __call__(self, x: jax.Array, v: jax.Array | None = None) -> jax.Array:
        """One step from state ``v`` (``None``: rest, zeros) driven by ``I(x)``; returns the new state."""
        i = self.current(x)
        if v is None:
            v = jnp.zeros_like(i)
        elif jnp.shape(v) != i.shape:
            raise ValueError(
                f"KirchhoffCell: state v has shape {jnp.shape(v)}, the current I(x) {i.shape}; "
                "pass the state returned by the previous call (or None to start at rest)."
            )
        a, b = self.coefficients()
        return zoh_step(v, i, a.astype(i.dtype), b.astype(i.dtype))


class KirchhoffBlock(_KirchhoffBase):
    r"""A cascade of ``K`` Kirchhoff cells in one block, with its intermediate states.

    Cell 1 is driven by the coupling's current ``I(x)``; cell ``k >= 2`` by
    ``G_k v_{k-1}`` (unity-gain follower), so the block is the ``K``-th order
    system ``(1/G_1) prod_k 1/(1 + s tau_k)`` per channel (assumption A3).
    One call advances all cells by one step (``"exact"`` ZOH of the whole
    cascade by default, see :func:`cascade_coefficients`) and returns

    * ``y``: the combined output, ``"mix"`` (default) ``sum_k w_k v_k`` with
      learnable per-channel weights ``w`` (``(K, features)``, initialised to
      ``1/K``), or ``"last"``: ``v_K``;
    * ``states``: the ``(K, *shape)`` states ``v_1 .. v_K`` after the step, the
      decoupled higher-order components. Pass them back as ``states`` to carry
      the block's memory across depth or inner steps.

    Args:
      in_features: channels of ``x``.
      features: channels of every state and of ``y``.
      order: ``K >= 1``, cells in the cascade.
      coupling: ``"dense"``, ``"conv"``, ``"spectral"`` or an ``nnx.Module``
        (see :class:`KirchhoffCell`).
      combine: ``"mix"`` or ``"last"``.
      discretization: ``"exact"`` or ``"sequential"``.
      dt, capacitance, conductance, kernel_size, modes, ndim: as in
        :class:`KirchhoffCell` (``C`` and ``G`` initialised equal in all cells).
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    Raises:
      ValueError: on an invalid hyper-parameter (type, range, NaN/inf, or a traced
        value; module docstring, "Validation").

    Attributes:
      coupling: the input coupling (cell 1).
      raw_capacitance, raw_conductance: ``(K, features)`` parameters, row ``k``
        for cell ``k + 1`` (``C = softplus(raw) + 1e-4``).
      mix: ``(K, features)`` combination weights (``None`` for ``"last"``).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> block = KirchhoffBlock(3, 4, order=3, rngs=nnx.Rngs(0))
      >>> y, states = block(jnp.ones((2, 3)))
      >>> y.shape, states.shape
      ((2, 4), (3, 2, 4))
      >>> y, states = block(jnp.ones((2, 3)), states)  # carry the state
    """

    def __init__(
        self,
        in_features: int,
        features: int,
        *,
        order: int = 2,
        coupling: Coupling | nnx.Module = "dense",
        combine: Combine = "mix",
        discretization: Discretization = "exact",
        dt: float = 1.0,
        capacitance: float = 1.0,
        conductance: float = 1.0,
        kernel_size: int | Sequence[int] = 3,
        modes: int | Sequence[int] | None = None,
        ndim: int = 2,
        rngs: nnx.Rngs,
    ):
        order = check_int_param(order, "order")
        _check_choices(combine, discretization)
        if isinstance(coupling, str) and coupling == "follower":
            raise ValueError(
                "KirchhoffBlock: the first cell needs an input coupling ('dense', 'conv', "
                "'spectral' or a module); 'follower' is what cells 2..K use."
            )
        self.order = order
        self.combine = combine
        self.discretization = discretization
        self._setup(
            in_features,
            features,
            coupling,
            cells=(order,),
            dt=dt,
            capacitance=capacitance,
            conductance=conductance,
            kernel_size=kernel_size,
            modes=modes,
            ndim=ndim,
            rngs=rngs,
        )
        self.mix = nnx.Param(jnp.full((order, features), 1.0 / order)) if combine == "mix" else None

    @property
    def time_constants(self) -> jax.Array:
        """``(K, features)`` time constants ``tau_k = C_k / G_k``."""
        return self.capacitance / self.conductance

    def coefficients(self) -> tuple[jax.Array, jax.Array]:
        """``(Phi, Gamma)`` of :func:`cascade_coefficients`, ``(K, K, features)`` and ``(K, features)``."""
        return cascade_coefficients(
            self.capacitance, self.conductance, self.dt, method=self.discretization
        )

    def combine_states(self, states: jax.Array) -> jax.Array:
        """The block output from ``(K, *shape)`` states (``"mix"`` or ``"last"``)."""
        if self.mix is None:
            return states[-1]
        w = self.mix[...].astype(states.dtype)
        return jnp.einsum("k...f,kf->...f", states, w)

    def __call__(
        self,
        x: jax.Array,
        states: jax.Array | None = None,
        *,
        coefficients: tuple[jax.Array, jax.Array] | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """One step from ``states`` (``None``: all cells at rest); returns ``(y, new_states)``.

        ``coefficients``: this block's ``(Phi, Gamma)`` if already computed
        (:func:`shared_coefficients`); by default :meth:`coefficients`.
        """
        i = self.current(x)
        shape = (self.order,) + i.shape
        if states is not None and jnp.shape(states) != shape:
            raise ValueError(
                f"KirchhoffBlock: states have shape {jnp.shape(states)}, expected {shape} "
                f"(order K={self.order}, then the current's shape {i.shape}); pass the states "
                "returned by the previous call, or None to start at rest."
            )
        phi, gamma = self.coefficients() if coefficients is None else coefficients
        gamma = gamma.astype(i.dtype)
        if states is None:  # from rest: only the input term
            states = jnp.stack([gamma[k] * i for k in range(self.order)])
        else:
            states = cascade_step(states, i, phi.astype(i.dtype), gamma)
        return self.combine_states(states), states


def shared_coefficients(blocks: Sequence[KirchhoffBlock]) -> list[tuple[jax.Array, jax.Array]]:
    """Every block's ``(Phi, Gamma)`` from one :func:`cascade_coefficients` call.

    Same values as ``[b.coefficients() for b in blocks]``, but the parameter
    transforms and matrix exponentials of all blocks are one batched
    computation, which compiles several times faster than one per block. The blocks must share ``order``,
    ``discretization`` and ``dt`` (as in the models of this module).

    Args:
      blocks: :class:`KirchhoffBlock` s.

    Returns:
      One ``(Phi, Gamma)`` per block, ``(K, K, features)`` and ``(K, features)``.

    Example:
      >>> from flax import nnx
      >>> blocks = [KirchhoffBlock(2, f, rngs=nnx.Rngs(0)) for f in (3, 5)]
      >>> [phi.shape for phi, _ in shared_coefficients(blocks)]
      [(2, 2, 3), (2, 2, 5)]
    """
    blocks = list(blocks)
    if not blocks:
        return []
    first = blocks[0]
    key = (first.order, first.discretization, first.dt)
    for b in blocks[1:]:
        if (b.order, b.discretization, b.dt) != key:
            raise ValueError(
                "shared_coefficients: blocks must share (order, discretization, dt); got "
                f"{key} and {(b.order, b.discretization, b.dt)}."
            )
    raw_c = jnp.concatenate([b.raw_capacitance[...] for b in blocks], axis=-1)
    raw_g = jnp.concatenate([b.raw_conductance[...] for b in blocks], axis=-1)
    C, G = _positive(raw_c), _positive(raw_g)
    phi, gamma = cascade_coefficients(C, G, first.dt, method=first.discretization)
    cuts = list(np.cumsum([b.features for b in blocks])[:-1])
    return list(zip(jnp.split(phi, cuts, axis=-1), jnp.split(gamma, cuts, axis=-1), strict=True))


# ------------------------------------------------------------------------ ResNet


class _ConvBranch(nnx.Module):
    """The BasicBlock branch ``bn2(conv2(relu(bn1(conv1(x)))))``, used as a KINN coupling."""

    def __init__(self, in_planes: int, planes: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1 = _conv(in_planes, planes, 3, stride, rngs)
        self.bn1 = _batch_norm(planes, rngs)
        self.conv2 = _conv(planes, planes, 3, 1, rngs)
        self.bn2 = _batch_norm(planes, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn2(self.conv2(jax.nn.relu(self.bn1(self.conv1(x)))))


class KINNBasicBlock(nnx.Module):
    """ResNet BasicBlock whose branch drives a :class:`KirchhoffBlock`: ``relu(shortcut(x) + y)``.

    The branch (conv-BN-ReLU-conv-BN, stride on the first conv) is the coupling
    ``I(x)`` of the cascade; ``y`` is the cascade's combined output after one
    step from ``states``.

    Args:
      in_planes, planes, stride: as the ResNet BasicBlock.
      order, combine, discretization, dt: see :class:`KirchhoffBlock`.
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    Raises:
      ValueError: on an invalid hyper-parameter (type, range, NaN/inf, or a traced
        value; module docstring, "Validation").
    """

    expansion = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        order: int = 2,
        combine: Combine = "mix",
        discretization: Discretization = "exact",
        dt: float = 1.0,
        rngs: nnx.Rngs,
    ):
        in_planes = check_int_param(in_planes, "in_planes")
        planes = check_int_param(planes, "planes")
        stride = check_int_param(stride, "stride")
        self.kirchhoff = KirchhoffBlock(
            in_planes,
            planes,
            order=order,
            coupling=_ConvBranch(in_planes, planes, stride, rngs=rngs),
            combine=combine,
            discretization=discretization,
            dt=dt,
            rngs=rngs,
        )
        self.shortcut = _Shortcut(in_planes, planes, stride, rngs=rngs)

    def __call__(
        self,
        x: jax.Array,
        states: jax.Array | None = None,
        *,
        coefficients: tuple[jax.Array, jax.Array] | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """``(relu(shortcut(x) + y), states)``; arguments as :class:`KirchhoffBlock`."""
        y, states = self.kirchhoff(x, states, coefficients=coefficients)
        return jax.nn.relu(self.shortcut(x) + y), states


class KINNResNet(nnx.Module):
    """A CIFAR-layout ResNet whose blocks are KINN blocks (:class:`KINNBasicBlock`).

    The layout of :class:`kinetix.nn.ResNet` (3x3 stem, four stages of widths
    ``w, 2w, 4w, 8w``, global average pooling, ``nnx.Linear`` named
    ``classifier``). Within a stage the cascade state is carried from block to
    block (depth is time); it starts at rest (zeros) in each stage's first
    block, where the shape changes (assumption A5). ``carry_state=False``
    restarts every block at rest.

    Input ``(B, H, W, in_channels)`` NHWC images; output ``(B, num_classes)``
    logits. Small inputs work (8x8 digits: stages at 8, 4, 2, 1 pixels).

    Args:
      num_blocks: blocks per stage (4 integers).
      num_classes, in_channels, width: as :class:`kinetix.nn.ResNet`.
      order, combine, discretization, dt: of every :class:`KirchhoffBlock`.
      carry_state: carry the cascade state across the blocks of a stage.
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    Raises:
      ValueError: on an invalid hyper-parameter (type, range, NaN/inf, or a traced
        value; module docstring, "Validation").

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> model = kinn_resnet18(10, in_channels=1, width=4, rngs=nnx.Rngs(0))
      >>> model(jnp.ones((2, 8, 8, 1))).shape
      (2, 10)
    """

    def __init__(
        self,
        num_blocks: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 10,
        *,
        in_channels: int = 3,
        width: int = 64,
        order: int = 2,
        combine: Combine = "mix",
        discretization: Discretization = "exact",
        dt: float = 1.0,
        carry_state: bool = True,
        rngs: nnx.Rngs,
    ):
        if isinstance(num_blocks, str) or not isinstance(num_blocks, Sequence | np.ndarray):
            raise ValueError(f"num_blocks must be 4 positive integers, got {num_blocks!r}.")
        if len(num_blocks) != 4:
            raise ValueError(f"num_blocks must be 4 positive integers, got {tuple(num_blocks)}.")
        num_blocks = tuple(check_int_param(n, f"num_blocks[{i}]") for i, n in enumerate(num_blocks))
        num_classes = check_int_param(num_classes, "num_classes")
        in_channels = check_int_param(in_channels, "in_channels")
        width = check_int_param(width, "width")
        self.in_channels = in_channels
        self.carry_state = check_flag(carry_state, "carry_state")
        self.conv1 = _conv(in_channels, width, 3, 1, rngs)
        self.bn1 = _batch_norm(width, rngs)
        in_planes = width
        for stage in range(1, 5):
            planes = width * 2 ** (stage - 1)
            blocks = []
            for i in range(num_blocks[stage - 1]):
                stride = 2 if (stage > 1 and i == 0) else 1
                blocks.append(
                    KINNBasicBlock(
                        in_planes,
                        planes,
                        stride,
                        order=order,
                        combine=combine,
                        discretization=discretization,
                        dt=dt,
                        rngs=rngs,
                    )
                )
                in_planes = planes
            setattr(self, f"layer{stage}", nnx.List(blocks))
        self.classifier = nnx.Linear(in_planes, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Logits of NHWC images ``x``. ``rngs`` is accepted for interface parity (unused)."""
        del rngs  # deterministic model
        x = jnp.asarray(x)
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"KINNResNet expects NHWC images (B, H, W, {self.in_channels}), got shape {x.shape}."
            )
        layers = (self.layer1, self.layer2, self.layer3, self.layer4)
        coefs = iter(shared_coefficients([blk.kirchhoff for layer in layers for blk in layer]))
        out = jax.nn.relu(self.bn1(self.conv1(x)))
        for layer in layers:
            states = None
            for blk in layer:
                states = states if self.carry_state else None
                out, states = blk(out, states, coefficients=next(coefs))
        return self.classifier(out.mean(axis=(1, 2)))


def kinn_resnet18(
    num_classes: int = 10,
    *,
    in_channels: int = 3,
    width: int = 64,
    rngs: nnx.Rngs,
    **kw,
) -> KINNResNet:
    """KINN ResNet-18 (2-2-2-2 KINN blocks); ``kw`` goes to :class:`KINNResNet`.

    Same calling convention as :func:`kinetix.nn.resnet18`: ``model(x, rngs=rngs)``
    gives logits and the last layer is ``model.classifier``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> model = kinn_resnet18(10, width=8, order=3, rngs=nnx.Rngs(0))
      >>> model(jnp.ones((1, 32, 32, 3))).shape
      (1, 10)
    """
    return KINNResNet(
        (2, 2, 2, 2), num_classes, in_channels=in_channels, width=width, rngs=rngs, **kw
    )


# --------------------------------------------------------------------------- FNO


class FNOKINN(_GridOperator):
    """An FNO whose Fourier layers are KINN blocks with spectral coupling.

    As :class:`kinetix.nn.FNO` (lift of ``[u, grid]`` to ``width`` channels,
    ``depth`` layers, projection ``width -> proj_width -> out_channels``), but
    layer ``l`` is a :class:`KirchhoffBlock` with the FNO coupling
    ``I_l = K_l h + W_l h`` (:class:`SpectralCoupling`): its cascade state is
    carried from layer to layer (depth is time; zeros before the first layer),
    and ``h <- act(y_l)`` (no activation after the last layer). With
    ``inner_steps = n > 1`` each layer takes ``n`` steps, recomputing the current
    from its own output ``act(y)`` between them.

    Input ``u``: ``(B, *spatial)`` (one channel in and out) or
    ``(B, *spatial, in_channels)``; works on any grid fine enough for ``modes``.

    Args:
      ndim: spatial dimensions.
      modes: kept Fourier modes (int: all axes).
      width: channels of the KINN layers.
      depth: KINN layers.
      in_channels, out_channels, proj_width, activation: as :class:`kinetix.nn.FNO`.
      order, combine, discretization, dt: of every :class:`KirchhoffBlock`.
      carry_state: carry the cascade state across layers (``False``: every
        layer starts at rest).
      inner_steps: steps per layer, ``>= 1``.
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    Raises:
      ValueError: on an invalid hyper-parameter (type, range, NaN/inf, or a traced
        value; module docstring, "Validation").

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> model = FNOKINN2d(width=8, modes=4, rngs=nnx.Rngs(0))
      >>> model(jnp.zeros((2, 16, 16))).shape
      (2, 16, 16)
    """

    label = "FNOKINN"

    def __init__(
        self,
        ndim: int,
        *,
        modes: int | Sequence[int],
        width: int,
        depth: int = 4,
        in_channels: int = 1,
        out_channels: int = 1,
        proj_width: int = 128,
        activation: Activation = "gelu",
        order: int = 2,
        combine: Combine = "mix",
        discretization: Discretization = "exact",
        dt: float = 1.0,
        carry_state: bool = True,
        inner_steps: int = 1,
        rngs: nnx.Rngs,
    ):
        ndim = check_int_param(ndim, "ndim")
        modes = _spatial_tuple(modes, ndim, "modes")
        if len(modes) != ndim:
            raise ValueError(f"modes must have {ndim} entries, got {modes}.")
        width = check_int_param(width, "width")
        depth = check_int_param(depth, "depth")
        in_channels = check_int_param(in_channels, "in_channels")
        out_channels = check_int_param(out_channels, "out_channels")
        proj_width = check_int_param(proj_width, "proj_width")
        inner_steps = check_int_param(inner_steps, "inner_steps")
        if not isinstance(activation, str) or activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}."
            )
        carry_state = check_flag(carry_state, "carry_state")
        # the options of every layer, checked once here (before any parameter is created)
        check_int_param(order, "order")
        _dt_param(dt)
        _check_choices(combine, discretization)
        self.modes = modes
        self.activation = activation
        self.carry_state = carry_state
        self.inner_steps = inner_steps

        def layer() -> KirchhoffBlock:
            coupling = SpectralCoupling(width, width, modes, rngs=rngs)
            return KirchhoffBlock(
                width,
                width,
                order=order,
                coupling=coupling,
                combine=combine,
                discretization=discretization,
                dt=dt,
                rngs=rngs,
            )

        self.build_io(ndim, width, in_channels, out_channels, proj_width, depth, layer, rngs=rngs)

    def time_constants(self) -> jax.Array:
        """``(depth, order, width)`` time constants ``tau = C / G`` of every layer's cells."""
        return jnp.stack([layer.time_constants for layer in self.layers])

    def __call__(self, u: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """The output field; ``rngs`` is accepted for interface parity with FNO (unused)."""
        del rngs  # deterministic model
        h, squeeze = self.lift_input(u)
        coefs = shared_coefficients(self.layers)
        states = None
        for i, (layer, coef) in enumerate(zip(self.layers, coefs, strict=True)):
            if not self.carry_state:
                states = None
            y, states = layer(h, states, coefficients=coef)
            for _ in range(self.inner_steps - 1):
                y, states = layer(self.act(y), states, coefficients=coef)
            h = self.act(y) if i < len(self.layers) - 1 else y
        return self.project(h, squeeze)


class FNOKINN1d(FNOKINN):
    """1-D :class:`FNOKINN` with the FNO-1D defaults of :class:`kinetix.nn.FNO1d` (modes 16, width 64)."""

    def __init__(self, *, modes: int = 16, width: int = 64, rngs: nnx.Rngs, **kwargs):
        super().__init__(1, modes=modes, width=width, rngs=rngs, **kwargs)


class FNOKINN2d(FNOKINN):
    """2-D :class:`FNOKINN` with the FNO-2D defaults of :class:`kinetix.nn.FNO2d` (modes 12, width 20)."""

    def __init__(
        self, *, modes: int | Sequence[int] = 12, width: int = 20, rngs: nnx.Rngs, **kwargs
    ):
        super().__init__(2, modes=modes, width=width, rngs=rngs, **kwargs)
