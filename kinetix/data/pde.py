"""PDE data sets for neural-operator learning, generated in JAX (no downloads).

Stand-ins for the FNO benchmark data that KITINet trains on (Li et al. 2021,
"Fourier Neural Operator for Parametric Partial Differential Equations"):

* :func:`burgers`: 1-D viscous Burgers ``u_t + u u_x = nu u_xx`` on the periodic
  unit interval, map ``u(., 0) -> u(., T)``; initial conditions from the FNO
  Gaussian random field ``N(0, 625 (-Laplacian + 25 I)^-2)`` (:func:`grf1d`).
  Pseudo-spectral in space, ETDRK4 in time (:func:`solve_burgers`).
* :func:`heat2d`: 2-D heat equation ``u_t = kappa Laplacian u`` on the periodic
  unit square, solved exactly in Fourier space (:func:`solve_heat2d`), with
  :func:`subsample2d` to make the 32x32 inputs of the 32 -> 64 zero-shot
  super-resolution setting from the 64x64 fields.
* :func:`load_or_generate`: an ``.npz`` disk cache keyed by every parameter.

Grids are ``x_j = j / N``, ``j = 0..N-1`` (the point ``x = 1`` is not stored),
arrays are ``float32`` with the samples first: ``(n, N)`` or ``(n, N, N)`` with
axes ``(x, y)``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import inspect
import json
import math
import operator
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from kinetix.ko import canonicalize_key
from kinetix.validation import check_int_param

__all__ = [
    "burgers",
    "default_cache_dir",
    "grf1d",
    "grf2d",
    "heat2d",
    "load_or_generate",
    "solve_burgers",
    "solve_heat2d",
    "subsample2d",
]

MIN_RESOLUTION = 8
"""Smallest grid accepted (points per dimension)."""

BURGERS_DT_MAX = 0.01
"""Largest ETDRK4 step :func:`solve_burgers` takes when ``dt=None``."""

UNDERRESOLVED_TAIL = 1e-3
"""Spectral-tail fraction at ``t_final`` above which :func:`solve_burgers` warns."""

CACHE_FORMAT = 1
"""Bumped whenever a generator's output for the same parameters changes."""


# --------------------------------------------------------------------------- #
# Argument checks
# --------------------------------------------------------------------------- #


def _check_resolution(value, name: str = "resolution") -> int:
    value = check_int_param(value, name, MIN_RESOLUTION)
    if value % 2:
        raise ValueError(f"{name} must be even, got {value}.")
    return value


def _check_float(value, name: str, *, positive: bool = True, allow_zero: bool = False) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a real number, got {value!r}.")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}.") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}.")
    if positive and not (value > 0 or (allow_zero and value == 0)):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}.")
    return value


def _check_grf(alpha, tau, sigma, ndim: int) -> tuple[float, float, float]:
    alpha = _check_float(alpha, "alpha")
    if alpha <= ndim / 2:
        raise ValueError(
            f"alpha must be > d/2 = {ndim / 2} for the {ndim}-D field to have finite "
            f"variance, got {alpha}."
        )
    return alpha, _check_float(tau, "tau"), _check_float(sigma, "sigma")


# --------------------------------------------------------------------------- #
# Gaussian random fields
# --------------------------------------------------------------------------- #


def _grf_eigenvalues(resolution: int, ndim: int, alpha: float, tau: float, sigma: float):
    """Covariance eigenvalues ``sigma^2 (4 pi^2 |k|^2 + tau^2)^-alpha`` on the FFT index grid."""
    k = np.fft.fftfreq(resolution, 1.0 / resolution)
    k2 = sum(np.meshgrid(*([k**2] * ndim), indexing="ij", sparse=True))
    return sigma**2 * (4 * np.pi**2 * k2 + tau**2) ** (-alpha)


def _grf(key, n_samples, resolution, ndim, alpha, tau, sigma, zero_mean) -> jax.Array:
    lam = _grf_eigenvalues(resolution, ndim, alpha, tau, sigma)
    if zero_mean:
        lam[(0,) * ndim] = 0.0
    amp = jnp.asarray(np.sqrt(lam), jnp.float32)
    return _grf_sample(key, amp, n_samples=n_samples)


@functools.partial(jax.jit, static_argnames=("n_samples",))
def _grf_sample(key, amp, *, n_samples: int) -> jax.Array:
    shape = (n_samples,) + amp.shape
    # Drawn flat and reshaped: on XLA:CPU, random bits of a rank-3 shape take ~4 s to compile,
    # a rank-1 shape well under 1 s.
    z = jax.random.normal(key, (2 * math.prod(shape),), jnp.float32).reshape((2,) + shape)
    xi = jax.lax.complex(z[0], z[1])
    # Re(sum_k sqrt(lam_k) xi_k e^{2 pi i k.x}), xi_k standard complex normal (E|xi|^2 = 2):
    # a real Gaussian field with covariance sum_k lam_k cos(2 pi k.(x - y)), exactly.
    axes = tuple(range(1, len(shape)))
    field = jnp.fft.ifftn(amp * xi, axes=axes, norm="forward")
    return jnp.real(field)


def grf1d(
    key: jax.Array | int,
    n_samples: int,
    resolution: int,
    *,
    alpha: float = 2.0,
    tau: float = 5.0,
    sigma: float = 25.0,
    zero_mean: bool = False,
) -> jax.Array:
    """Samples of the periodic 1-D Gaussian random field of the FNO Burgers data.

    ``u ~ N(0, sigma^2 (-d^2/dx^2 + tau^2 I)^-alpha)`` on the periodic unit
    interval; the defaults give the FNO paper's ``N(0, 625 (-Laplacian + 25 I)^-2)``.
    The covariance has eigenfunctions ``e^{2 pi i k x}`` with eigenvalues
    ``lam_k = sigma^2 (4 pi^2 k^2 + tau^2)^-alpha``, so each sample is the
    Karhunen-Loeve sum truncated to the ``resolution`` grid frequencies
    ``k = -N/2 .. N/2-1``::

        u(x) = Re( sum_k sqrt(lam_k) xi_k e^{2 pi i k x} ),  xi_k = a_k + i b_k,  a, b ~ N(0, 1)

    which is real and has exactly the covariance ``sum_k lam_k cos(2 pi k (x - y))``
    on the grid: the DFT coefficient ``c_k = (1/N) sum_j u_j e^{-2 pi i k j / N}``
    has ``E|c_k|^2 = lam_k`` and the pointwise variance is ``sum_k lam_k``.

    Choices: the mean mode ``k = 0`` is kept, with the variance the formula
    gives it, ``sigma^2 tau^(-2 alpha)`` (= 1 for the defaults); the FNO MATLAB
    generator instead fixes the mean to 0, which ``zero_mean=True`` reproduces.
    The Nyquist mode ``k = -N/2`` is kept. Sampling is in float32.

    Args:
      key: a ``jax.random.key`` (or an int seed).
      n_samples: number of fields, >= 1.
      resolution: grid points ``N`` (even, >= 8).
      alpha: smoothness exponent, > 1/2.
      tau: inverse length scale, > 0.
      sigma: amplitude, > 0.
      zero_mean: drop the ``k = 0`` mode.

    Returns:
      ``float32`` array of shape ``(n_samples, resolution)``, values at ``x_j = j / N``.
    """
    key = canonicalize_key(key)
    n_samples = check_int_param(n_samples, "n_samples", 1)
    resolution = _check_resolution(resolution)
    alpha, tau, sigma = _check_grf(alpha, tau, sigma, 1)
    return _grf(key, n_samples, resolution, 1, alpha, tau, sigma, bool(zero_mean))


def grf2d(
    key: jax.Array | int,
    n_samples: int,
    resolution: int,
    *,
    alpha: float = 2.5,
    tau: float = 7.0,
    sigma: float | None = None,
    zero_mean: bool = False,
) -> jax.Array:
    """Samples of a periodic 2-D Gaussian random field ``N(0, sigma^2 (-Laplacian + tau^2 I)^-alpha)``.

    Same construction as :func:`grf1d` on the unit square: eigenvalues
    ``lam_k = sigma^2 (4 pi^2 |k|^2 + tau^2)^-alpha`` for ``k`` in the 2-D FFT
    index grid, ``u(x) = Re(sum_k sqrt(lam_k) xi_k e^{2 pi i k.x})`` with
    standard complex normal ``xi_k``, so ``E|c_k|^2 = lam_k`` for the 2-D DFT
    coefficients and the pointwise variance is ``sum_k lam_k``.

    Choices: the defaults ``alpha = 2.5, tau = 7, sigma = tau^(alpha - 1)``
    are those of the FNO 2-D (Navier-Stokes) data generator; the FNO heat data
    set's own generator is not public. As in :func:`grf1d` the mean mode keeps
    its formula variance ``sigma^2 tau^(-2 alpha)`` (= 1/49 for the defaults)
    unless ``zero_mean=True`` (the FNO 2-D generator's choice).

    Args:
      key: a ``jax.random.key`` (or an int seed).
      n_samples: number of fields, >= 1.
      resolution: grid points per side ``N`` (even, >= 8).
      alpha: smoothness exponent, > 1.
      tau: inverse length scale, > 0.
      sigma: amplitude, > 0; ``None`` means ``tau^(alpha - 1)``.
      zero_mean: drop the ``k = 0`` mode.

    Returns:
      ``float32`` array of shape ``(n_samples, resolution, resolution)``; entry
      ``[s, i, j]`` is the value at ``(x, y) = (i / N, j / N)``.
    """
    key = canonicalize_key(key)
    n_samples = check_int_param(n_samples, "n_samples", 1)
    resolution = _check_resolution(resolution)
    if sigma is None:
        tau_f = _check_float(tau, "tau")
        sigma = tau_f ** (_check_float(alpha, "alpha") - 1.0)
    alpha, tau, sigma = _check_grf(alpha, tau, sigma, 2)
    return _grf(key, n_samples, resolution, 2, alpha, tau, sigma, bool(zero_mean))


# --------------------------------------------------------------------------- #
# Burgers
# --------------------------------------------------------------------------- #


@functools.lru_cache(maxsize=32)
def _etdrk4_coefficients(n: int, nu: float, h: float, contour_points: int = 64):
    """ETDRK4 coefficients for ``v' = L v + N(v)``, ``L = -nu k^2`` (Kassam & Trefethen 2005).

    The phi-functions are evaluated in float64 by the mean over a circle of
    radius 1 around each ``h L`` (their contour-integral form), which avoids the
    cancellation of the closed forms at small ``|h L|`` and is exact at ``L = 0``.
    """
    m = np.arange(n // 2 + 1)
    k = 2 * np.pi * m
    hl = -nu * k**2 * h
    r = np.exp(1j * np.pi * (np.arange(1, contour_points + 1) - 0.5) / contour_points)
    z = hl[:, None] + r[None, :]
    ez = np.exp(z)
    e = np.exp(hl)
    e2 = np.exp(hl / 2)
    q = h * np.real(np.mean((np.exp(z / 2) - 1) / z, axis=1))
    f1 = h * np.real(np.mean((-4 - z + ez * (4 - 3 * z + z**2)) / z**3, axis=1))
    f2 = h * np.real(np.mean((2 + z + ez * (-2 + z)) / z**3, axis=1))
    f3 = h * np.real(np.mean((-4 - 3 * z - z**2 + ez * (4 - z)) / z**3, axis=1))
    # 2/3 rule: the quadratic term only sees, and only feeds, modes with 3 m < n, so
    # products of retained modes never alias back onto retained modes.
    mask = (3 * m < n).astype(np.float64)
    g = -0.5j * k * mask  # d/dx (u^2 / 2) -> i k (u^2)^/2, with a minus sign on the RHS
    arrays = (e, e2, q, f1, f2, f3)
    return tuple(a.astype(np.float32) for a in arrays) + (
        g.astype(np.complex64),
        mask.astype(np.float32),
    )


@functools.partial(jax.jit, static_argnames=("n_steps", "n"))
def _burgers_etdrk4(u0, coefs, *, n_steps: int, n: int):
    e, e2, q, f1, f2, f3, g, mask = coefs

    def nonlinear(v):
        u = jnp.fft.irfft(v * mask, n=n)
        return g * jnp.fft.rfft(u * u)

    def step(_, v):
        nv = nonlinear(v)
        a = e2 * v + q * nv
        na = nonlinear(a)
        b = e2 * v + q * na
        nb = nonlinear(b)
        c = e2 * a + q * (2 * nb - nv)
        nc = nonlinear(c)
        return e * v + f1 * nv + 2 * f2 * (na + nb) + f3 * nc

    v = jax.lax.fori_loop(0, n_steps, step, jnp.fft.rfft(u0))
    power = jnp.abs(v) ** 2
    m = jnp.arange(v.shape[-1])
    # norm fraction of the non-mean solution in the modes m > N/4
    tail = jnp.sum(jnp.where(4 * m > n, power, 0.0), -1)
    total = jnp.sum(jnp.where(m > 0, power, 0.0), -1)
    ratio = jnp.sqrt(tail / jnp.maximum(total, jnp.finfo(jnp.float32).tiny))
    return jnp.fft.irfft(v, n=n), jnp.max(ratio)


def _burgers_time_step(nu: float, t_final: float, dt: float | None, u_max: float):
    if dt is None:
        dt = BURGERS_DT_MAX
        if u_max > 0:
            dt = min(dt, nu / u_max**2)
    n_steps = max(1, math.ceil(t_final / dt - 1e-9))
    return n_steps, t_final / n_steps


def solve_burgers(
    u0: ArrayLike,
    *,
    nu: float = 0.1,
    t_final: float = 1.0,
    dt: float | None = None,
) -> jax.Array:
    """Solves the periodic viscous Burgers equation from ``u0`` up to ``t_final``.

    ``u_t + u u_x = nu u_xx`` on ``[0, 1)`` with periodic boundary conditions,
    written in conservative form ``u_t = -(u^2 / 2)_x + nu u_xx``.

    Method: Fourier pseudo-spectral in space (``rfft``) with 2/3-rule
    dealiasing (the product ``u^2`` is formed from the modes ``|m| < N/3`` only
    and only those modes receive it; the other modes evolve by diffusion
    alone); ETDRK4 in time (Cox & Matthews 2002, with the contour-integral
    coefficients of Kassam & Trefethen 2005), which integrates the stiff
    diffusion exactly, so the step is not limited by ``nu k^2``. One
    ``jax.lax.fori_loop`` under ``jax.jit``, computed in float32.

    Time step: with ``dt=None`` the step is ``min(0.01, nu / max|u0|^2)``,
    then shrunk so that a whole number of steps reaches ``t_final``. ``max|u0|``
    is over the whole batch, so a field solved in another batch may get another
    step and differ at round-off level (~1e-7). Reasoning (a linearised,
    frozen-coefficient heuristic, not a proof): viscous Burgers obeys the maximum
    principle, so ``|u| <= c = max|u0|`` at all times. A Fourier mode of angular
    wavenumber ``k`` has the explicit (advective) rate ``c k`` and the implicit
    (diffusive) rate ``nu k^2``. If ``dt <= nu / c^2`` then either
    ``nu k^2 dt <= 1``, whence ``c k dt <= c sqrt(dt / nu) <= 1``, well inside the
    RK4 stability interval ``2.83`` on the imaginary axis, or ``nu k^2 dt > 1``,
    whence ``c k < nu k^2`` and diffusion, integrated exactly, dominates.
    Measured on GRF data at ``N = 256``: stable up to 10x this step at
    ``nu = 0.1`` (unstable at 30x) and up to 3x at ``nu = 0.01`` (unstable at
    10x). The 0.01 cap is for accuracy: against Cole-Hopf exact solutions the
    float32 error is ~1e-7 to 1e-6 relative (see ``tests/test_data_pde.py``).

    Args:
      u0: initial values at ``x_j = j / N``, shape ``(..., N)`` with ``N`` even
        and >= 8.
      nu: viscosity, > 0.
      t_final: end time, >= 0.
      dt: time step (> 0), or ``None`` for the automatic choice above.

    Returns:
      ``float32`` array shaped like ``u0``: the solution at ``t_final``.

    Raises:
      ValueError: bad arguments.
      FloatingPointError: the solution became non-finite or broke the maximum
        principle ``max|u(T)| <= max|u0|`` by more than a factor 2, i.e. the
        time stepping was unstable (try a smaller ``dt``).

    Warns:
      RuntimeWarning: if at ``t_final`` more than 1e-3 (in norm) of the
        non-mean solution lies in the modes ``m > N/4`` (the upper part of the
        dealiased band ``m < N/3`` and above): the grid may not resolve the
        solution (e.g. small ``nu``); increase the resolution. Measured: this
        fraction tracks the relative error against a 4096-point solution
        within a factor ~10.
    """
    u0 = jnp.asarray(u0, jnp.float32)
    if u0.ndim < 1:
        raise ValueError("u0 must have at least one dimension (the grid).")
    n = _check_resolution(u0.shape[-1], "u0.shape[-1] (the resolution)")
    nu = _check_float(nu, "nu")
    t_final = _check_float(t_final, "t_final", allow_zero=True)
    if dt is not None:
        dt = _check_float(dt, "dt")
    if u0.size == 0 or t_final == 0:
        return u0
    # (checked with isfinite: XLA:CPU's max reduction does not reliably propagate NaN)
    if not bool(jnp.all(jnp.isfinite(u0))):
        raise ValueError("u0 holds NaN or inf.")
    u_max = float(jnp.max(jnp.abs(u0)))
    n_steps, h = _burgers_time_step(nu, t_final, dt, u_max)
    coefs = tuple(jnp.asarray(c) for c in _etdrk4_coefficients(n, nu, h))
    out, tail = _burgers_etdrk4(u0, coefs, n_steps=n_steps, n=n)
    tail = float(tail)
    if not (math.isfinite(tail) and bool(jnp.all(jnp.isfinite(out)))):
        raise FloatingPointError(
            f"Burgers solver unstable (nu={nu}, dt={h:.3g}): the solution became non-finite; "
            "try a smaller dt."
        )
    # Maximum principle: max|u(t)| <= max|u0|. Allow Gibbs overshoot, not a doubling.
    out_max = float(jnp.max(jnp.abs(out)))
    if out_max > 2 * u_max + 1e-6:
        raise FloatingPointError(
            f"Burgers solver unstable (nu={nu}, dt={h:.3g}): max|u(T)| = {out_max:.3g} > "
            f"2 max|u0| = {2 * u_max:.3g}; try a smaller dt."
        )
    if tail > UNDERRESOLVED_TAIL:
        warnings.warn(
            f"Burgers solution may be under-resolved at N={n}, nu={nu}: fraction {tail:.2g} "
            f"of its norm lies in modes m > N/4. Increase the resolution.",
            RuntimeWarning,
            stacklevel=2,
        )
    return out


def burgers(
    key: jax.Array | int,
    n_samples: int,
    resolution: int = 1024,
    *,
    nu: float = 0.1,
    t_final: float = 1.0,
    dt: float | None = None,
    subsample: int = 1,
    zero_mean: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Input/output pairs of the 1-D viscous Burgers operator ``u(., 0) -> u(., T)``.

    ``u_t + u u_x = nu u_xx`` on the periodic unit interval, the FNO Burgers
    benchmark: ``u0 ~ N(0, 625 (-Laplacian + 25 I)^-2)`` (:func:`grf1d` with its
    defaults), ``nu = 0.1``, ``T = 1``. The initial fields are sampled and the
    equation solved (:func:`solve_burgers`: pseudo-spectral, 2/3 dealiasing,
    ETDRK4) on a grid of ``resolution * subsample`` points; both are then
    returned at every ``subsample``-th point. FNO's ``burgers_data_R10`` was
    made at 8192 points and read with ``sub = 8``, i.e. ``resolution=1024,
    subsample=8``. At ``nu = 0.1`` the solution is smooth: solving the same
    1024-point initial fields on 8192 points changed ``u(T)`` by 6e-8 (relative
    L2), so ``subsample=1`` is enough there and 8x cheaper. (The 8192-point
    fields also hold the tiny GRF modes above 512, so ``subsample`` changes the
    random draws.)

    Cost: ``4 * ceil(T / dt)`` pairs of FFTs of size ``resolution * subsample``
    per sample (100 to ~300 steps with the default ``dt``); the whole batch is
    one array, so memory grows with ``n_samples * resolution * subsample``.

    Args:
      key: a ``jax.random.key`` (or an int seed).
      n_samples: number of pairs, >= 1.
      resolution: output grid points (even, >= 8).
      nu: viscosity, > 0.
      t_final: final time ``T``, > 0.
      dt: ETDRK4 time step, or ``None`` for ``min(0.01, nu / max|u0|^2)``.
      subsample: solve on a grid ``subsample`` times finer (integer >= 1).
      zero_mean: drop the mean mode of the initial field (FNO's MATLAB choice).

    Returns:
      ``(u0, uT)``, two ``float32`` arrays of shape ``(n_samples, resolution)``
      with values at ``x_j = j / resolution``.
    """
    key = canonicalize_key(key)
    n_samples = check_int_param(n_samples, "n_samples", 1)
    resolution = _check_resolution(resolution)
    subsample = check_int_param(subsample, "subsample", 1)
    nu = _check_float(nu, "nu")
    t_final = _check_float(t_final, "t_final")
    if dt is not None:
        dt = _check_float(dt, "dt")
    fine = resolution * subsample
    u0 = grf1d(key, n_samples, fine, zero_mean=zero_mean)
    ut = solve_burgers(u0, nu=nu, t_final=t_final, dt=dt)
    return u0[:, ::subsample], ut[:, ::subsample]


# --------------------------------------------------------------------------- #
# Heat equation
# --------------------------------------------------------------------------- #


@jax.jit
def _heat2d_exact(u0, kappa_t):
    n = u0.shape[-1]
    kx = jnp.fft.fftfreq(n, 1.0 / n)
    ky = jnp.fft.rfftfreq(n, 1.0 / n)
    k2 = kx[:, None] ** 2 + ky[None, :] ** 2
    decay = jnp.exp(-4 * jnp.pi**2 * kappa_t * k2).astype(jnp.float32)
    return jnp.fft.irfft2(jnp.fft.rfft2(u0) * decay, s=(n, n))


def solve_heat2d(u0: ArrayLike, *, kappa: float, t: float) -> jax.Array:
    """Exact solution of the periodic 2-D heat equation ``u_t = kappa (u_xx + u_yy)``.

    On the unit square with periodic boundaries each Fourier mode
    ``e^{2 pi i (k_x x + k_y y)}`` decays as ``exp(-kappa 4 pi^2 (k_x^2 + k_y^2) t)``,
    so for a field given on the grid (i.e. band-limited to its grid frequencies)
    ``u(t) = IFFT(FFT(u0) * exp(-kappa |2 pi k|^2 t))`` is exact up to float32
    rounding. The mean (``k = 0``) is conserved. The Nyquist frequency
    ``N/2`` is decayed with ``|k| = N/2``.

    Args:
      u0: values at ``(i / N, j / N)``, shape ``(..., N, N)`` with ``N`` even, >= 8.
      kappa: diffusivity, > 0.
      t: time, >= 0.

    Returns:
      ``float32`` array shaped like ``u0``: the solution at time ``t``.
    """
    u0 = jnp.asarray(u0, jnp.float32)
    if u0.ndim < 2 or u0.shape[-1] != u0.shape[-2]:
        raise ValueError(f"u0 must have shape (..., N, N), got {u0.shape}.")
    _check_resolution(u0.shape[-1], "u0.shape[-1] (the resolution)")
    kappa = _check_float(kappa, "kappa")
    t = _check_float(t, "t", allow_zero=True)
    return _heat2d_exact(u0, jnp.float32(kappa * t))


def heat2d(
    key: jax.Array | int,
    n_samples: int,
    resolution: int = 64,
    *,
    kappa: float = 0.01,
    t_final: float = 1.0,
    alpha: float = 2.5,
    tau: float = 7.0,
    sigma: float | None = None,
    zero_mean: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Input/output pairs of the 2-D periodic heat operator ``u(., 0) -> u(., T)``.

    ``u_t = kappa (u_xx + u_yy)`` on the periodic unit square; ``u0`` is a
    Gaussian random field (:func:`grf2d`) and ``u(T)`` is exact
    (:func:`solve_heat2d`). For the KITINet/FNO zero-shot super-resolution
    setting (train at 32x32, test at 64x64) generate at 64 and take the
    32x32 inputs with :func:`subsample2d` (every other grid point; the two
    grids share the points ``(2i / 64, 2j / 64) = (i / 32, j / 32)``).

    Choice of ``kappa = 0.01, T = 1``: the mode ``|k| = 1`` keeps
    ``exp(-0.01 * 4 pi^2) = 0.67`` of its amplitude, ``|k| = 2`` 0.21 and
    ``|k| = 3`` 0.029, so the output is visibly smoother but not ~0. For the
    default field the expected ratios are ``||u(T)|| / ||u0|| = 0.75`` and
    ``||u(T) - u0|| / ||u0|| = 0.44`` (0.54 and 0.56 with ``zero_mean=True``;
    the conserved mean holds 37 % of the variance). Only the product
    ``kappa * T`` matters.

    Args:
      key: a ``jax.random.key`` (or an int seed).
      n_samples: number of pairs, >= 1.
      resolution: grid points per side (even, >= 8).
      kappa: diffusivity, > 0.
      t_final: final time ``T``, > 0.
      alpha, tau, sigma, zero_mean: the initial field, see :func:`grf2d`.

    Returns:
      ``(u0, uT)``, two ``float32`` arrays of shape ``(n_samples, resolution,
      resolution)``; entry ``[s, i, j]`` is the value at ``(i / N, j / N)``.
    """
    key = canonicalize_key(key)
    n_samples = check_int_param(n_samples, "n_samples", 1)
    resolution = _check_resolution(resolution)
    kappa = _check_float(kappa, "kappa")
    t_final = _check_float(t_final, "t_final")
    u0 = grf2d(key, n_samples, resolution, alpha=alpha, tau=tau, sigma=sigma, zero_mean=zero_mean)
    return u0, solve_heat2d(u0, kappa=kappa, t=t_final)


def subsample2d(u: ArrayLike, factor: int = 2) -> jax.Array:
    """Every ``factor``-th grid point of 2-D fields: ``u[..., ::factor, ::factor]``.

    Turns 64x64 fields into the 32x32 inputs of the 32 -> 64 super-resolution
    setting (``factor=2``) without resampling, so both resolutions hold the
    same values at the shared points.

    Args:
      u: array of shape ``(..., N, N)``.
      factor: integer >= 1 dividing ``N``.

    Returns:
      Array of shape ``(..., N // factor, N // factor)``.
    """
    u = jnp.asarray(u)
    factor = check_int_param(factor, "factor", 1)
    if u.ndim < 2:
        raise ValueError(f"u must have shape (..., N, N), got {u.shape}.")
    if u.shape[-1] % factor or u.shape[-2] % factor:
        raise ValueError(f"factor {factor} does not divide the grid shape {u.shape[-2:]}.")
    return u[..., ::factor, ::factor]


# --------------------------------------------------------------------------- #
# Disk cache
# --------------------------------------------------------------------------- #

_GENERATORS: dict[str, Callable[..., tuple[jax.Array, jax.Array]]] = {
    "burgers": burgers,
    "heat2d": heat2d,
}


def default_cache_dir() -> Path:
    """``$KINETIX_CACHE`` if set (used as is), else ``~/.cache/kinetix/pde``."""
    env = os.environ.get("KINETIX_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "kinetix" / "pde"


def _resolved_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    fn = _GENERATORS[name]
    sig = inspect.signature(fn)
    keyword = {
        p.name: p.default
        for p in sig.parameters.values()
        if p.name not in ("key", "n_samples") and p.default is not inspect.Parameter.empty
    }
    unknown = sorted(set(params) - set(keyword))
    if unknown:
        raise ValueError(
            f"{name}: unknown parameter(s) {unknown}; expected some of {sorted(keyword)}."
        )
    resolved = {**keyword, **params}
    for k, v in resolved.items():
        if isinstance(v, np.generic):
            resolved[k] = v.item()
        if not (resolved[k] is None or isinstance(resolved[k], bool | int | float | str)):
            raise ValueError(
                f"{name}: parameter {k}={v!r} must be None, bool, int, float or str to be cached."
            )
    return resolved


def _checksum(u0: np.ndarray, ut: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (u0, ut):
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _read_cache(path: Path, meta: str) -> tuple[np.ndarray, np.ndarray]:
    """Loads and verifies a cache file; raises ``ValueError`` (or I/O errors) if it is bad."""
    with np.load(path, allow_pickle=False) as f:
        missing = {"u0", "uT", "meta", "sha256"} - set(f.files)
        if missing:
            raise ValueError(f"missing arrays {sorted(missing)}")
        u0, ut = f["u0"], f["uT"]
        stored_meta, stored_sum = str(f["meta"]), str(f["sha256"])
    if stored_meta != meta:
        raise ValueError("parameters stored in the file do not match its name")
    if stored_sum != _checksum(u0, ut):
        raise ValueError("checksum mismatch")
    return u0, ut


def _write_cache(path: Path, u0: np.ndarray, ut: np.ndarray, meta: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, u0=u0, uT=ut, meta=np.array(meta), sha256=np.array(_checksum(u0, ut)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_or_generate(
    name: str,
    key_seed: int,
    n: int,
    *,
    cache_dir: str | os.PathLike | None = None,
    **params: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """``(u0, uT)`` of :func:`burgers` or :func:`heat2d`, from the disk cache or freshly made.

    The data are ``GENERATOR(jax.random.key(key_seed), n, **params)``. The cache
    file is ``{cache_dir}/{name}_n{n}_seed{key_seed}_{hash}.npz`` where ``hash``
    is the SHA-256 of the JSON of the name, seed, ``n``, every generator
    parameter (defaults filled in, so passing a default explicitly hits the
    same file) and :data:`CACHE_FORMAT`. The file stores ``u0``, ``uT``, that
    JSON and a SHA-256 of the arrays. It is written to a temporary file in the
    same directory, fsynced and renamed over the target (atomic on POSIX), so
    readers never see a partial file and concurrent writers are harmless. A
    file that cannot be read, lacks an array, or fails the parameter or
    checksum check is reported with a ``RuntimeWarning`` and regenerated. A
    cache dir that cannot be written (read-only, or a path under a file) is
    reported with a ``RuntimeWarning`` and the data are returned uncached.

    Args:
      name: ``"burgers"`` or ``"heat2d"``.
      key_seed: integer seed of ``jax.random.key``.
      n: number of samples, >= 1.
      cache_dir: directory of the cache; ``None`` means :func:`default_cache_dir`
        (``$KINETIX_CACHE`` or ``~/.cache/kinetix/pde``).
      **params: keyword arguments of the generator (``resolution``, ``nu``,
        ``kappa``, ...), each ``None``, bool, int, float or str.

    Returns:
      ``(u0, uT)`` as ``float32`` numpy arrays, as the generator returns them.
    """
    if name not in _GENERATORS:
        raise ValueError(f"unknown data set {name!r}; expected one of {sorted(_GENERATORS)}.")
    if isinstance(key_seed, bool):
        raise ValueError(f"key_seed must be an integer, got {key_seed!r}.")
    try:
        key_seed = operator.index(key_seed)
    except TypeError:
        raise ValueError(f"key_seed must be an integer, got {key_seed!r}.") from None
    n = check_int_param(n, "n", 1)
    resolved = _resolved_params(name, params)
    meta = json.dumps(
        {"format": CACHE_FORMAT, "name": name, "key_seed": key_seed, "n": n, "params": resolved},
        sort_keys=True,
    )
    digest = hashlib.sha256(meta.encode()).hexdigest()[:16]
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = cache_dir / f"{name}_n{n}_seed{key_seed}_{digest}.npz"

    try:
        cached = path.exists()
    except OSError:  # e.g. a cache dir that cannot be searched
        cached = False
    if cached:
        try:
            return _read_cache(path, meta)
        except Exception as err:  # any failure to read or verify: regenerate
            warnings.warn(
                f"PDE cache file {path} is corrupt or unreadable ({type(err).__name__}: {err}); "
                "regenerating it.",
                RuntimeWarning,
                stacklevel=2,
            )
    u0, ut = _GENERATORS[name](jax.random.key(key_seed), n, **params)
    u0, ut = np.asarray(u0), np.asarray(ut)
    try:
        _write_cache(path, u0, ut, meta)
    except OSError as err:  # a read-only cache dir, or one under a file: go on uncached
        if os.path.isfile(cache_dir):
            why = "it is a file"
        elif err.errno == errno.ENOTDIR:
            why = "a part of its path is a file"
        else:
            why = err.strerror or str(err)
        warnings.warn(
            f"PDE cache dir {cache_dir} is not usable ({why}); the data are generated but not "
            "cached. Pass a writable cache dir (--cache-dir, or set KINETIX_CACHE) to cache them.",
            RuntimeWarning,
            stacklevel=2,
        )
    return u0, ut
