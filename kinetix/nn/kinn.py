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
    branches); rates ``dt / tau`` above ``1e6`` are clipped there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kinetix.nn.fno import _ACTIVATIONS, SpectralConv, _Linear
from kinetix.nn.resnet import _batch_norm, _conv, _Shortcut

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


# ------------------------------------------------------------------- array functions


def _check_dt(dt) -> None:
    """Raises ``ValueError`` for a concrete ``dt`` that is not a finite number > 0."""
    if isinstance(dt, jax.core.Tracer):
        return
    d = np.asarray(dt)
    if not (np.all(np.isfinite(d)) and np.all(d > 0)):
        raise ValueError(f"dt must be finite and > 0, got {dt!r}.")


def _phi1(z: jax.Array) -> jax.Array:
    """``(1 - exp(-z)) / z`` for ``z >= 0``, ``1`` at ``z = 0``; no NaN value or gradient."""
    small = z < 1e-6
    safe = jnp.where(small, 1.0, z)
    return jnp.where(small, 1.0 - 0.5 * z, -jnp.expm1(-safe) / safe)


def zoh_coefficients(
    C: jax.typing.ArrayLike, G: jax.typing.ArrayLike, dt: jax.typing.ArrayLike
) -> tuple[jax.Array, jax.Array]:
    r"""Exact zero-order-hold coefficients of ``C dv/dt = -G v + I``.

    ``v(t + dt) = a v(t) + b I`` for ``I`` held constant, with
    ``a = exp(-G dt / C)`` and ``b = (1 - a) / G``. ``b`` is computed as
    ``(dt / C) * (1 - exp(-x)) / x`` (``x = G dt / C``), so ``G -> 0`` gives the
    pure integrator ``b = dt / C`` instead of ``0 / 0``.

    Args:
      C: capacitances, ``> 0`` (any shape broadcastable with ``G``).
      G: conductances, ``>= 0``.
      dt: time step, ``> 0``.

    Returns:
      ``(a, b)``, broadcast shapes of the arguments; ``0 <= a <= 1``, ``b >= 0``.

    Example:
      >>> a, b = zoh_coefficients(1.0, 2.0, 0.5)
      >>> round(float(a), 6), round(float(b), 6)  # exp(-1), (1 - exp(-1)) / 2
      (0.367879, 0.31606)
    """
    _check_dt(dt)
    C, G = jnp.asarray(C), jnp.asarray(G)
    dtype = jnp.result_type(C, G, float)
    C, G = C.astype(dtype), G.astype(dtype)
    dt = jnp.asarray(dt, dtype)
    x = G * dt / C
    return jnp.exp(-x), dt / C * _phi1(x)


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

    Args:
      C, G: ``(K, *channels)`` capacitances and conductances, ``> 0``.
      dt: time step, ``> 0``.
      method: ``"exact"`` or ``"sequential"``.

    Returns:
      ``(Phi, Gamma)`` of shapes ``(K, K, *channels)`` (lower triangular in the
      first two axes) and ``(K, *channels)``.

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
    _check_dt(dt)
    C, G = jnp.asarray(C), jnp.asarray(G)
    if C.shape != G.shape or C.ndim < 1 or C.shape[0] < 1:
        raise ValueError(
            f"C and G must have the same shape (K, *channels) with K >= 1, got {C.shape} and {G.shape}."
        )
    dtype = jnp.result_type(C, G, float)
    C, G = C.astype(dtype), G.astype(dtype)
    dt = jnp.asarray(dt, dtype)
    K = C.shape[0]
    if K == 1:  # one cell: both methods are the closed-form ZOH
        a, b = zoh_coefficients(C[0], G[0], dt)
        return a[None, None], b[None]
    rate = G * dt / C  # (K, *ch): dt / tau_k
    if method == "sequential":
        a = jnp.exp(-rate)
        gain = -jnp.expm1(-rate)  # 1 - a, accurate for small rates
        b1 = dt / C[0] * _phi1(rate[0])
        eye = jnp.eye(K, dtype=dtype).reshape((K, K) + (1,) * (C.ndim - 1))
        phi_rows = [a[0] * eye[0]]
        gamma = [b1]
        for k in range(1, K):
            phi_rows.append(a[k] * eye[k] + gain[k] * phi_rows[-1])
            gamma.append(gain[k] * gamma[-1])
        return jnp.stack(phi_rows), jnp.stack(gamma)
    # exact: expm([[A dt, e_1], [0, 0]]) = [[Phi, phi_1(A dt) e_1], [0, 1]],
    # A = diag(-1/tau) + subdiag(1/tau_k); Gamma = (dt / C_1) phi_1(A dt) e_1.
    clipped = jnp.minimum(rate, _EXPM_MAX_RATE)
    r = jnp.moveaxis(clipped, 0, -1)  # (*ch, K)
    m = jnp.zeros(r.shape[:-1] + (K + 1, K + 1), dtype)
    idx = jnp.arange(K)
    m = m.at[..., idx, idx].set(-r)
    m = m.at[..., idx[1:], idx[:-1]].set(r[..., 1:])
    m = m.at[..., 0, K].set(1.0)
    e = _expm(m)
    phi = jnp.moveaxis(e[..., :K, :K], (-2, -1), (0, 1))
    # dt / C_1, times clipped / rate if cell 1's rate was clipped: the steady state stays I / G_1
    ratio = jnp.where(
        rate[0] > _EXPM_MAX_RATE, clipped[0] / jnp.maximum(rate[0], _EXPM_MAX_RATE), 1.0
    )
    scale = dt / C[0] * ratio
    gamma = jnp.moveaxis(e[..., :K, K], -1, 0) * scale
    return phi, gamma


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
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    phi, gamma = cascade_coefficients(C, G, dt, method=method)
    one = jnp.ones(gamma.shape[1:], gamma.dtype)

    def body(v, _):
        v = cascade_step(v, one, phi, gamma)
        return v, v

    _, out = jax.lax.scan(body, jnp.zeros_like(gamma), None, length=int(steps))
    return out


# ---------------------------------------------------------------------- modules


def _inverse_softplus(y: float) -> float:
    """``raw`` with ``softplus(raw) + MIN_POSITIVE == y``."""
    z = y - MIN_POSITIVE
    if z <= 0:
        raise ValueError(f"initial C and G must be > {MIN_POSITIVE}, got {y}.")
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

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> SpectralCoupling(2, 3, (4,), rngs=nnx.Rngs(0))(jnp.ones((1, 16, 2))).shape
      (1, 16, 3)
    """

    def __init__(
        self, in_features: int, out_features: int, modes: Sequence[int], *, rngs: nnx.Rngs
    ):
        self.spectral = SpectralConv(in_features, out_features, modes, rngs=rngs)
        self.pointwise = _Linear(in_features, out_features, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.spectral(x) + self.pointwise(x)


def _spatial_tuple(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        if ndim < 1:
            raise ValueError(f"ndim must be >= 1, got {ndim}.")
        value = (value,) * ndim
    value = tuple(int(v) for v in value)
    if not value or min(value) < 1:
        raise ValueError(f"{name} must be positive integers, got {value}.")
    return value


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
    """The coupling module (``None`` for the follower); validates the choice."""
    if isinstance(coupling, nnx.Module):
        return coupling
    if coupling not in _COUPLINGS:
        raise ValueError(
            f"coupling must be one of {_COUPLINGS} or an nnx.Module mapping x to the current, "
            f"got {coupling!r}."
        )
    if coupling == "dense":
        return nnx.Linear(in_features, features, rngs=rngs)
    if coupling == "conv":
        ks = _spatial_tuple(kernel_size, ndim, "kernel_size")
        return nnx.Conv(in_features, features, ks, padding="SAME", rngs=rngs)
    if coupling == "spectral":
        if modes is None:
            raise ValueError("coupling='spectral' needs modes (kept Fourier modes per axis).")
        return SpectralCoupling(
            in_features, features, _spatial_tuple(modes, ndim, "modes"), rngs=rngs
        )
    if in_features != features:
        raise ValueError(
            f"coupling='follower' (I = G x) needs in_features == features, got {in_features} "
            f"and {features}."
        )
    return None


def _current(module: KirchhoffCell | KirchhoffBlock, x: jax.Array, name: str) -> jax.Array:
    """``I(x)`` of a cell or of a block's first cell (checks the channel axis)."""
    x = jnp.asarray(x)
    if module.coupling_kind != "module" and (x.ndim < 1 or x.shape[-1] != module.in_features):
        raise ValueError(
            f"{name}: expected input (..., {module.in_features}) (channels last), got {x.shape}."
        )
    if module.coupling is None:  # follower: I = G x
        return module.conductance * x
    return module.coupling(x)


def _check_features(in_features: int, features: int) -> None:
    if in_features < 1 or features < 1:
        raise ValueError(f"in_features and features must be >= 1, got {in_features}, {features}.")


class KirchhoffCell(nnx.Module):
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
      dt: the step, a positive float (fixed, not learned).
      capacitance, conductance: initial ``C`` and ``G`` (all channels).
      kernel_size: conv kernel (an int: the same on ``ndim`` axes).
      modes: spectral coupling's kept modes (an int: the same on ``ndim`` axes).
      ndim: spatial axes for an int ``kernel_size`` / ``modes``.
      rngs: ``nnx.Rngs`` with a ``params`` stream.

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
        _check_features(in_features, features)
        _check_dt(dt)
        self.in_features = in_features
        self.features = features
        self.dt = float(dt)
        self.coupling_kind = coupling if isinstance(coupling, str) else "module"
        self.coupling = _make_coupling(
            coupling,
            in_features,
            features,
            kernel_size=kernel_size,
            modes=modes,
            ndim=ndim,
            rngs=rngs,
        )
        self.raw_capacitance = nnx.Param(jnp.full((features,), _inverse_softplus(capacitance)))
        self.raw_conductance = nnx.Param(jnp.full((features,), _inverse_softplus(conductance)))

    @property
    def capacitance(self) -> jax.Array:
        """``C``, shape ``(features,)``."""
        return _positive(self.raw_capacitance[...])

    @property
    def conductance(self) -> jax.Array:
        """``G``, shape ``(features,)``."""
        return _positive(self.raw_conductance[...])

    def coefficients(self) -> tuple[jax.Array, jax.Array]:
        """``(a, b)`` of :func:`zoh_coefficients` for the current parameters."""
        return zoh_coefficients(self.capacitance, self.conductance, self.dt)

    def current(self, x: jax.Array) -> jax.Array:
        """The input current ``I(x)``, shape ``(..., features)``."""
        return _current(self, x, "KirchhoffCell")

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


class KirchhoffBlock(nnx.Module):
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
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(
                f"order must be an integer >= 1 (cells in the cascade), got {order!r}."
            )
        if combine not in _COMBINES:
            raise ValueError(f"combine must be one of {_COMBINES}, got {combine!r}.")
        if discretization not in _DISCRETIZATIONS:
            raise ValueError(
                f"discretization must be one of {_DISCRETIZATIONS}, got {discretization!r}."
            )
        if isinstance(coupling, str) and coupling == "follower":
            raise ValueError(
                "KirchhoffBlock: the first cell needs an input coupling ('dense', 'conv', "
                "'spectral' or a module); 'follower' is what cells 2..K use."
            )
        _check_features(in_features, features)
        _check_dt(dt)
        self.order = order
        self.features = features
        self.combine = combine
        self.discretization = discretization
        self.dt = float(dt)
        self.coupling_kind = coupling if isinstance(coupling, str) else "module"
        self.in_features = in_features
        self.coupling = _make_coupling(
            coupling,
            in_features,
            features,
            kernel_size=kernel_size,
            modes=modes,
            ndim=ndim,
            rngs=rngs,
        )
        # row k holds cell k + 1 (one array per block: cheap to compile)
        self.raw_capacitance = nnx.Param(
            jnp.full((order, features), _inverse_softplus(capacitance))
        )
        self.raw_conductance = nnx.Param(
            jnp.full((order, features), _inverse_softplus(conductance))
        )
        self.mix = nnx.Param(jnp.full((order, features), 1.0 / order)) if combine == "mix" else None

    @property
    def capacitance(self) -> jax.Array:
        """``(K, features)`` capacitances (row ``k``: cell ``k + 1``)."""
        return _positive(self.raw_capacitance[...])

    @property
    def conductance(self) -> jax.Array:
        """``(K, features)`` conductances."""
        return _positive(self.raw_conductance[...])

    @property
    def time_constants(self) -> jax.Array:
        """``(K, features)`` time constants ``tau_k = C_k / G_k``."""
        return self.capacitance / self.conductance

    def coefficients(self) -> tuple[jax.Array, jax.Array]:
        """``(Phi, Gamma)`` of :func:`cascade_coefficients`, ``(K, K, features)`` and ``(K, features)``."""
        return cascade_coefficients(
            self.capacitance, self.conductance, self.dt, method=self.discretization
        )

    def current(self, x: jax.Array) -> jax.Array:
        """The input current ``I(x)`` of cell 1, shape ``(..., features)``."""
        return _current(self, x, "KirchhoffBlock")

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
        num_blocks = tuple(int(n) for n in num_blocks)
        if len(num_blocks) != 4 or min(num_blocks) < 1:
            raise ValueError(f"num_blocks must be 4 positive integers, got {num_blocks}.")
        if width < 1 or in_channels < 1 or num_classes < 1:
            raise ValueError(
                f"need width, in_channels, num_classes >= 1; got {width=}, {in_channels=}, {num_classes=}."
            )
        self.in_channels = in_channels
        self.carry_state = bool(carry_state)
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


class FNOKINN(nnx.Module):
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

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> model = FNOKINN2d(width=8, modes=4, rngs=nnx.Rngs(0))
      >>> model(jnp.zeros((2, 16, 16))).shape
      (2, 16, 16)
    """

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
        if ndim < 1:
            raise ValueError(f"ndim must be >= 1, got {ndim}.")
        modes = (int(modes),) * ndim if isinstance(modes, int) else tuple(int(m) for m in modes)
        if len(modes) != ndim:
            raise ValueError(f"modes must have {ndim} entries, got {modes}.")
        for name, value in (
            ("width", width),
            ("depth", depth),
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("proj_width", proj_width),
            ("inner_steps", inner_steps),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}."
            )
        self.ndim = ndim
        self.modes = modes
        self.width = width
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.carry_state = bool(carry_state)
        self.inner_steps = int(inner_steps)
        self.lift = _Linear(in_channels + ndim, width, rngs=rngs)
        self.layers = nnx.List(
            [
                KirchhoffBlock(
                    width,
                    width,
                    order=order,
                    coupling=SpectralCoupling(width, width, modes, rngs=rngs),
                    combine=combine,
                    discretization=discretization,
                    dt=dt,
                    rngs=rngs,
                )
                for _ in range(depth)
            ]
        )
        self.proj1 = _Linear(width, proj_width, rngs=rngs)
        self.proj2 = _Linear(proj_width, out_channels, rngs=rngs)

    def grid(self, spatial: Sequence[int], dtype=jnp.float32) -> jax.Array:
        """Coordinates ``(x_j = j / N, ...)`` of a grid, shape ``(*spatial, ndim)``."""
        axes = [jnp.arange(n, dtype=dtype) / n for n in spatial]
        return jnp.stack(jnp.meshgrid(*axes, indexing="ij"), axis=-1)

    def time_constants(self) -> jax.Array:
        """``(depth, order, width)`` time constants ``tau = C / G`` of every layer's cells."""
        return jnp.stack([layer.time_constants for layer in self.layers])

    def __call__(self, u: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """The output field; ``rngs`` is accepted for interface parity with FNO (unused)."""
        del rngs  # deterministic model
        u = jnp.asarray(u)
        squeeze = u.ndim == self.ndim + 1
        if squeeze:
            if self.in_channels != 1:
                raise ValueError(
                    f"FNOKINN: input {u.shape} has no channel axis but in_channels={self.in_channels}."
                )
            u = u[..., None]
        if u.ndim != self.ndim + 2 or u.shape[-1] != self.in_channels:
            raise ValueError(
                f"FNOKINN({self.ndim}-D): expected input (B, *{self.ndim} spatial) or "
                f"(B, *spatial, {self.in_channels}), got {u.shape}."
            )
        spatial = u.shape[1:-1]
        grid = jnp.broadcast_to(self.grid(spatial, u.dtype), u.shape[:1] + spatial + (self.ndim,))
        h = self.lift(jnp.concatenate([u, grid], axis=-1))
        act = _ACTIVATIONS[self.activation]
        coefs = shared_coefficients(self.layers)
        states = None
        for i, (layer, coef) in enumerate(zip(self.layers, coefs, strict=True)):
            if not self.carry_state:
                states = None
            y, states = layer(h, states, coefficients=coef)
            for _ in range(self.inner_steps - 1):
                y, states = layer(act(y), states, coefficients=coef)
            h = act(y) if i < len(self.layers) - 1 else y
        out = self.proj2(act(self.proj1(h)))
        return out[..., 0] if squeeze and self.out_channels == 1 else out


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
