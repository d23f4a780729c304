r"""Graph diffusion on a set of samples: the diffusion half of COIN and Diff-ResNet.

The convection-diffusion view of a network (Wang, Bao, Shi) evolves a base
model's output by :math:`\partial_t u = v \cdot \nabla u + \sigma^2 \Delta u`. In the
authors' released code the diffusion is graph-heat diffusion over the samples
themselves, which are the rows of a matrix. All labelled and unlabelled points
of a task are processed together (transductively), and each step is an
explicit-Euler step

.. math::  x \leftarrow x - \gamma L x                       \qquad (1)

with a graph Laplacian ``L`` built from a kNN graph with a self-tuning Gaussian
kernel. Diff-ResNet applies (1) to hidden features, COIN to the softmax output.
``T`` steps approximate :math:`e^{-T \gamma L} x`, so :math:`T\gamma` is the
diffusion time ("scale").

This module provides pure array functions, with no parameters and no state:

* :func:`pairwise_distances`: ``(N, D) -> (N, N)`` by the Gram trick
  (``O(N^2)`` memory, never ``O(N^2 D)``).
* :func:`knn_graph`: boolean adjacency of the ``k`` nearest neighbours.
* :func:`kernel_weights`: the released code's truncated self-tuning kernel, Eq. (2).
* :func:`symmetrize`, :func:`laplacian`, :func:`graph_laplacian`: Eqs. (3)-(6).
* :func:`lambda_max`, :func:`gershgorin_bound`, :func:`max_stable_gamma`,
  :func:`check_stability`: the stability bound of Eq. (7).
* :func:`diffusion_step`, :func:`diffuse`: Eq. (1), with the stability check.
* :func:`dirichlet_energy`: Eq. (8), which (1) never increases.

**Kernel, Eq. (2)** (``calculate_weight`` in ``fewshot/utils.py`` of both
repositories; ``n_top=8, sigma=4``). Let :math:`d_{i(k)}` be the ``k``-th
smallest entry of row ``i`` of the distance matrix, with the point itself
counted as the first (distance 0). Then

.. math::  W_{ij} = \exp\!\big(-(d_{ij} / s_i)^2\big)\,[d_{ij} < d_{i(n_{top})}],
           \qquad s_i = d_{i(\sigma)}                               \qquad (2)

So row ``i`` keeps at most ``n_top - 1`` entries, itself included (``W_ii = 1``).
``W`` is not symmetric, because the bandwidth :math:`s_i` and the cut-off belong
to the row.

**Laplacians.** With a symmetric ``W`` and degrees :math:`d_i = \sum_j W_{ij}`:

.. math::
   L_{un} &= D - W                                    &\qquad (3) \\
   L_{sym} &= I - D^{-1/2} W D^{-1/2}                &\qquad (4) \\
   L_{rw} &= I - D^{-1} W                              &\qquad (5)

and the released code's Laplacian

.. math::  \tilde W = \tfrac12\big(D^{-1/2} W D^{-1/2} + (D^{-1/2} W D^{-1/2})^T\big),
           \quad L_{code} = \operatorname{diag}(\tilde W \mathbf 1) - \tilde W   \qquad (6)

where ``W`` is the non-symmetric kernel (2) and ``D`` holds its row sums.
Rows and columns of an isolated node (:math:`d_i = 0`) are zero in every
Laplacian: the diagonal of (4) and (5) is ``1`` only where :math:`d_i > 0`
(Chung's convention). So an isolated node keeps its value and nothing is
ever divided by zero.

**What each Laplacian conserves** (``x`` of shape ``(N, F)``, per column):

* (3) and (6): :math:`\mathbf 1^T L = 0`, so the plain sum :math:`\sum_i x_i`
  (the mean) is conserved. Also :math:`L \mathbf 1 = 0`, so the rows of a
  softmax output keep summing to 1 (COIN).
* (4): :math:`(D^{1/2}\mathbf 1)^T L_{sym} = 0`, so the
  :math:`\sqrt{d}`-weighted sum :math:`\sum_i \sqrt{d_i}\, x_i` is conserved,
  *not* the plain mean (unless the graph is regular).
* (5), symmetric ``W``: :math:`\mathbf 1^T D L_{rw} = 0`, so the
  degree-weighted sum :math:`\sum_i d_i x_i` is conserved.

**Stability, Eq. (7).** Step (1) multiplies each eigen-component of ``L`` by
:math:`1 - \gamma\lambda`, so it is stable if and only if
:math:`|1 - \gamma\lambda| \le 1` for every eigenvalue :math:`\lambda`, i.e.
:math:`\gamma |\lambda|^2 \le 2 \operatorname{Re}\lambda`. With
:math:`\lambda_{eff} = \max_\lambda |\lambda|^2 / \operatorname{Re}\lambda`:

.. math::  0 \le \gamma\,\lambda_{eff}(L) \le 2,                     \qquad (7)

which for a symmetric positive semi-definite ``L`` (eigenvalues in
:math:`[0, \lambda_{max}]`, every Laplacian of a symmetric ``W``) is
:math:`0 \le \gamma\lambda_{max} \le 2`. For a non-symmetric ``L``
(``symmetrize_mode="none"``) the eigenvalues may be complex and the largest
real part is not enough: the eigenvalues ``1 +- i`` of ``[[1, -1], [1, 1]]``
need :math:`\gamma \le 1`, not :math:`\gamma \le 2`.
For (4) and (5), :math:`\lambda_{eff} \le 2` even for a non-symmetric ``W``
(the Gershgorin discs of (5), to which (4) is similar, have centres
:math:`c_i \le 1` and radii :math:`c_i`), so any :math:`\gamma \le 1` is stable
whatever the data. For (3) and (6) the bound
depends on the data: :math:`\lambda_{eff} \le 2 \max_i d_i` (Gershgorin).
:func:`diffuse` refuses a step that violates (7) with a ``ValueError``.

**Dirichlet energy, Eq. (8).** :math:`E(x) = \operatorname{tr}(x^T L x)`. For (3),
:math:`E = \tfrac12 \sum_{ij} W_{ij} \lVert x_i - x_j \rVert^2`. For a symmetric
``L`` and :math:`\gamma` within (7), each step multiplies the energy of each
eigen-component by :math:`(1 - \gamma\lambda)^2 \le 1`, so ``E`` never increases.

**Choices left open** by the papers or the code (the options of
:func:`graph_laplacian`; the defaults are in brackets). Only the abstracts of
the papers could be read, not their bodies, so "paper" below means the
textbook objects named in the issue:

1. Laplacian normalisation [``"symmetric"``, Eq. (4)], because its spectrum lies
   in ``[0, 2]`` so the bound (7) holds for ``gamma <= 1`` on any data. The
   released code's (6) is ``normalization="released_code"``. ``"unnormalized"``
   (3) and ``"random_walk"`` (5) are also offered.
2. Symmetrisation of ``W`` [``"mean"``: ``(W + W^T)/2``, as in the code]; also
   ``"max"`` (kNN "or" graph), ``"min"`` (mutual kNN) and ``"none"``. The code
   symmetrises *after* normalising, which is what (6) does. For (3)-(5)
   ``W`` is symmetrised before the Laplacian is formed.
3. Kernel bandwidth [``"row"``: :math:`s_i` per row, as in the code]; also
   ``"local_scaling"``, :math:`\exp(-d_{ij}^2 / (s_i s_j))` (Zelnik-Manor and
   Perona's self-tuning kernel, symmetric), or a fixed ``fixed_bandwidth``
   (the toy ``two_moon_example.py`` uses ``0.5``).
4. Truncation [``"strict"``: the code's ``d_ij < d_i(n_top)``, which keeps at
   most ``n_top - 1`` entries including self and drops ties at the cut-off];
   also ``"knn"``, which keeps self plus exactly the ``n_top - 1`` nearest
   others (:func:`knn_graph`; ties broken by index).
5. Self-loops [kept, ``W_ii = 1``, as in the code; they cancel in (3) but
   change ``D`` in (4)-(6)]. With ``self_loops=True`` the diagonal is 1 even
   for duplicated points, where the code's strict cut-off would drop it and
   divide by zero.
6. Gradients: the code detaches ``W``. These functions stay differentiable
   and never give NaN, even at zero distances. The gradient flows through the
   distances :math:`d_{ij}` but not through the rank statistics (the cut-off
   and the bandwidth :math:`s_i`), which are piecewise constant selections.
   :class:`kinetix.nn.diffusion.DiffusionLayer` stops the gradient through the
   whole graph by default.
7. Stability check: exact :math:`\lambda_{eff}` (float64 NumPy ``eigvalsh``, or
   ``eigvals`` for a non-symmetric ``L``) for a concrete ``L`` with
   ``N <= EXACT_MAX_N`` once the cheap Gershgorin bound is inconclusive, with a
   relative slack ``STABILITY_RTOL = 1e-5``. The Gershgorin bound assumes a
   symmetric ``L`` positive semi-definite; for a non-symmetric ``L`` it is used
   only when ``L`` is diagonally dominant (its discs then lie in the stable
   disc). This ignores the transient growth of non-normal matrices. COIN also needs the
   diffused probabilities to stay non-negative, which holds when
   :math:`\gamma \max_i L_{ii} \le 1` (every off-diagonal ``L_ij <= 0``). That
   is a separate condition, not implied by (7), and it is not checked.
8. Dense ``(N, N)`` matrices throughout (``O(N^2)`` memory, ``O(N^2 D)`` time
   for the Gram product). :func:`diffuse` also accepts a
   ``jax.experimental.sparse.BCOO`` Laplacian, which makes each step ``O(nnz)``.

References:
  Wang, Dou, Bao, Shi, `Diffusion Mechanism in Residual Neural Network: Theory
  and Applications <https://arxiv.org/abs/2105.03155>`_, TPAMI 2024 (Diff-ResNet;
  code: github.com/shwangtangjun/Diff-ResNet).
  Wang, Bao, Shi, `Convection-Diffusion Equation: A Theoretically Certified
  Framework for Neural Networks <https://arxiv.org/abs/2403.15726>`_, 2024
  (COIN; code: github.com/shwangtangjun/COIN).
  Zelnik-Manor, Perona, *Self-Tuning Spectral Clustering*, NeurIPS 2004.
  Chung, *Spectral Graph Theory*, AMS 1997.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse
from jax.typing import ArrayLike

from kinetix.validation import check_flag, check_int, is_traced, real_scalar

Normalization = Literal["symmetric", "unnormalized", "random_walk", "released_code"]
Symmetrize = Literal["mean", "max", "min", "none"]
Truncation = Literal["strict", "knn"]
Bandwidth = Literal["row", "local_scaling"]
LambdaMethod = Literal["auto", "exact", "gershgorin"]
Check = Literal["raise", "clip", "none"]

NORMALIZATIONS = ("symmetric", "unnormalized", "random_walk", "released_code")
SYMMETRIZE_MODES = ("mean", "max", "min", "none")
TRUNCATIONS = ("strict", "knn")
BANDWIDTHS = ("row", "local_scaling")
LAMBDA_METHODS = ("auto", "exact", "gershgorin")
CHECKS = ("raise", "clip", "none")

#: Largest ``N`` for which ``lambda_max(method="auto")`` runs a dense ``eigvalsh``.
EXACT_MAX_N = 2048
#: Relative slack of the stability check, for round-off in ``lambda_max``.
STABILITY_RTOL = 1e-5
# Ratios d / s above this give exp(-ratio^2) == 0 in any float; clipping them
# keeps the gradient finite (no inf * 0).
_MAX_RATIO = 1e3
# Bandwidths at or below this (about sqrt of float32's smallest normal) count as 0.
_MIN_BANDWIDTH = 1e-19
_HIGHEST = jax.lax.Precision.HIGHEST


# ----------------------------------------------------------------- validation


def _to_numpy(a: Any) -> np.ndarray | None:
    """A concrete array (dense or BCOO) as NumPy, or ``None`` when it is traced.

    Checks on concrete values are done in NumPy: under ``jit`` even an operation
    on a closed-over constant array is staged and would give a tracer.
    """
    if is_traced(a):
        return None
    if isinstance(a, jsparse.BCOO):
        idx = np.asarray(a.indices)
        data = np.asarray(a.data)
        n, m = a.shape
        ok = (idx[:, 0] < n) & (idx[:, 1] < m)  # drop padding entries
        out = np.zeros((n, m), data.dtype)
        np.add.at(out, (idx[ok, 0], idx[ok, 1]), data[ok])
        return out
    return np.asarray(a)


def _float_dtype(dtype) -> jnp.dtype:
    return jnp.promote_types(dtype, jnp.float32)


def _nonnegative(value: Any, name: str, hint: str = "", *, allow_inf: bool = False) -> float | None:
    """A concrete real scalar that is ``>= 0`` and finite (or ``+inf`` if allowed); ``None`` if traced."""
    v = real_scalar(value, name)
    if v is not None and (math.isnan(v) or v < 0 or (math.isinf(v) and not allow_inf)):
        what = "a number >= 0 (inf allowed)" if allow_inf else "a finite number >= 0"
        raise ValueError(f"{name} must be {what}, got {v}.{hint if v < 0 else ''}")
    return v


def _bandwidth_value(fixed_bandwidth: Any) -> float | None:
    """``fixed_bandwidth`` as a Python float (a static, hashable argument): finite and > 0."""
    if fixed_bandwidth is None:
        return None
    v = real_scalar(fixed_bandwidth, "fixed_bandwidth")
    if v is None:
        raise ValueError(
            "fixed_bandwidth must be a concrete number (it is traced under jit/grad/vmap): pass a "
            "Python or NumPy number."
        )
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"fixed_bandwidth must be a finite number > 0 (or None), got {v}.")
    return v


def _choice(value: str, name: str, options: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}.")
    return value


def _check_finite(a: Any, name: str, hint: str = "") -> None:
    arr = _to_numpy(a)
    if arr is not None and not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise ValueError(f"{name} has {bad} non-finite entries (NaN or inf).{hint}")


def _check_points(x: ArrayLike, name: str = "x") -> jax.Array:
    shape = np.shape(x)
    if len(shape) != 2:
        raise ValueError(
            f"{name} must be a 2-D array of N points in R^D (one row per point), got shape "
            f"{shape}. Flatten the trailing dimensions with x.reshape(len(x), -1)."
        )
    if shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 points to build a graph, got shape {shape}.")
    dtype = jnp.result_type(x)
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(f"{name} must be a real array, got dtype {dtype}.")
    _check_finite(
        x, name, " A graph cannot be built from them: remove or impute those points first."
    )
    return jnp.asarray(x).astype(_float_dtype(dtype))


def _shape_of(laplacian: Any) -> tuple[int, ...]:
    return (
        tuple(np.shape(laplacian)) if not isinstance(laplacian, jsparse.BCOO) else laplacian.shape
    )


def _check_laplacian(laplacian: Any, name: str = "laplacian") -> Any:
    shape = _shape_of(laplacian)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"{name} must be a square (N, N) matrix, got shape {shape}.")
    if isinstance(laplacian, jsparse.BCOO):
        if laplacian.n_batch or laplacian.n_dense:
            raise ValueError(f"{name}: only an unbatched 2-D BCOO matrix is supported.")
        _check_finite(laplacian.data, name)
        return laplacian
    _check_finite(laplacian, name)
    lap = jnp.asarray(laplacian)
    if not jnp.issubdtype(lap.dtype, jnp.floating):
        lap = lap.astype(jnp.float32)
    return lap


def _dense(laplacian: Any) -> jax.Array:
    return laplacian.todense() if isinstance(laplacian, jsparse.BCOO) else laplacian


# ------------------------------------------------------------- graph building


def _safe_sqrt(x: jax.Array) -> jax.Array:
    """``sqrt(x)`` for ``x >= 0`` with a zero (not infinite) gradient at 0."""
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


def pairwise_distances(x: ArrayLike) -> jax.Array:
    r"""Euclidean distance matrix of the rows of ``x``, by the Gram trick.

    :math:`d_{ij}^2 = \lVert x_i\rVert^2 + \lVert x_j\rVert^2 - 2 x_i\cdot x_j` on
    mean-centred rows (distances are translation invariant; centring limits the
    cancellation error), clamped at 0, with an exact-zero diagonal. Memory is
    ``O(N^2)``, never ``O(N^2 D)``. The square root has a finite gradient at 0,
    so duplicated points give no NaN gradients.

    Args:
      x: ``(N, D)`` points, ``N >= 2``.

    Returns:
      ``(N, N)`` float distances (float32 at least).

    Example:
      >>> import jax.numpy as jnp
      >>> from kinetix import diffusion
      >>> diffusion.pairwise_distances(jnp.array([[0.0, 0.0], [3.0, 4.0]]))
      Array([[0., 5.],
             [5., 0.]], dtype=float32)
    """
    return _distances(_check_points(x))


@jax.jit
def _distances(x: jax.Array) -> jax.Array:
    x = x - jnp.mean(x, axis=0, keepdims=True)
    sq = jnp.sum(x * x, axis=-1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * jnp.matmul(x, x.T, precision=_HIGHEST)
    d2 = jnp.maximum(d2, 0.0) * (1.0 - jnp.eye(x.shape[0], dtype=x.dtype))
    return _safe_sqrt(d2)


def _kth_smallest(d: jax.Array, ks: tuple[int, ...]) -> list[jax.Array]:
    """The ``k``-th smallest entry of each row (1-based, self included), for each ``k``."""
    smallest = -jax.lax.top_k(-d, max(ks))[0]
    return [smallest[:, k - 1] for k in ks]


def knn_graph(x: ArrayLike, k: int) -> jax.Array:
    """Boolean adjacency of the ``k`` nearest neighbours of each point (self excluded).

    Row ``i`` is true at the ``k`` points closest to ``x_i``, other than ``i``;
    ties are broken by the lower index. The result is not symmetric (``j`` may
    be among ``i``'s neighbours without the converse); see :func:`symmetrize`.

    Args:
      x: ``(N, D)`` points.
      k: number of neighbours, ``1 <= k <= N - 1``.

    Returns:
      ``(N, N)`` bool array with exactly ``k`` true entries per row and a false
      diagonal.

    Example:
      >>> import jax.numpy as jnp
      >>> from kinetix import diffusion
      >>> x = jnp.array([[0.0], [1.0], [3.0], [7.0]])
      >>> diffusion.knn_graph(x, 1).astype(int)
      Array([[0, 1, 0, 0],
             [1, 0, 0, 0],
             [0, 1, 0, 0],
             [0, 0, 1, 0]], dtype=int32)
    """
    x = _check_points(x)
    n = x.shape[0]
    k = check_int(k, "k", low=1)
    if k >= n:
        raise ValueError(
            f"knn_graph: k={k} neighbours need at least k + 1 = {k + 1} points, got N={n}. "
            f"Use k <= {n - 1}."
        )
    return _knn_mask(_distances(x), k)


@functools.partial(jax.jit, static_argnames=("k",))
def _knn_mask(d: jax.Array, k: int) -> jax.Array:
    n = d.shape[0]
    d = jnp.where(jnp.eye(n, dtype=bool), jnp.inf, jax.lax.stop_gradient(d))
    idx = jax.lax.top_k(-d, k)[1]
    return jnp.zeros((n, n), bool).at[jnp.arange(n)[:, None], idx].set(True)


def kernel_weights(
    x: ArrayLike,
    n_top: int = 8,
    sigma: int = 4,
    *,
    truncation: Truncation = "strict",
    bandwidth: Bandwidth = "row",
    fixed_bandwidth: float | None = None,
    self_loops: bool = True,
) -> jax.Array:
    r"""The released code's truncated self-tuning Gaussian kernel, Eq. (2).

    ``W_ij = exp(-(d_ij / s_i)^2)`` for the ``j`` kept by the truncation and 0
    elsewhere, where ``s_i`` is the ``sigma``-th smallest distance of row ``i``
    (self counted as the first, so ``sigma=4`` is the third nearest other point).
    The result is generally **not symmetric**.

    Args:
      x: ``(N, D)`` points (finite).
      n_top: truncation rank, ``2 <= n_top <= N``. With ``truncation="strict"``
        (the code's ``distance < kthvalue(distance, n_top)``) row ``i`` keeps the
        points strictly closer than its ``n_top``-th smallest distance (self
        included), i.e. at most ``n_top - 1`` entries including self, fewer on
        ties. With ``"knn"`` it keeps self plus exactly the ``n_top - 1`` nearest
        others (:func:`knn_graph`).
      sigma: bandwidth rank, ``1 <= sigma <= N`` (self counted). ``sigma=1``
        is the zero self-distance, so it is refused unless ``fixed_bandwidth``
        is given.
      truncation: ``"strict"`` (code) or ``"knn"``.
      bandwidth: ``"row"`` (code: ``exp(-(d_ij/s_i)^2)``) or ``"local_scaling"``
        (Zelnik-Manor & Perona: ``exp(-d_ij^2 / (s_i s_j))``, symmetric before
        truncation).
      fixed_bandwidth: if given, ``exp(-(d_ij / fixed_bandwidth)^2)`` replaces the
        self-tuning bandwidth (``sigma`` and ``bandwidth`` are then unused), as in
        the code's toy ``two_moon_example.py`` (``0.5``).
      self_loops: keep ``W_ii = 1`` (code) or set the diagonal to 0.

    Returns:
      ``(N, N)`` non-negative weights with entries in ``[0, 1]``. A zero
      bandwidth ``s_i`` (``sigma`` or more duplicated points) is treated as the
      limit ``s_i -> 0+``: weight 1 for the duplicates, 0 for the others. Never
      NaN for finite ``x``.

    Example:
      >>> import jax
      >>> from kinetix import diffusion
      >>> x = jax.random.normal(jax.random.key(0), (40, 3))
      >>> w = diffusion.kernel_weights(x, n_top=8, sigma=4)
      >>> int((w > 0).sum(axis=1).max()) <= 7
      True
    """
    x = _check_points(x)
    n = x.shape[0]
    n_top = check_int(n_top, "n_top", low=2)
    sigma = check_int(sigma, "sigma", low=1)
    _choice(truncation, "truncation", TRUNCATIONS)
    _choice(bandwidth, "bandwidth", BANDWIDTHS)
    if n_top > n:
        raise ValueError(
            f"n_top={n_top} exceeds the number of points N={n} (n_top counts the point itself). "
            f"Use n_top <= {n}."
        )
    if fixed_bandwidth is None:
        if sigma > n:
            raise ValueError(f"sigma={sigma} exceeds the number of points N={n}; use sigma <= {n}.")
        if sigma == 1:
            raise ValueError(
                "sigma=1 selects the point's zero distance to itself as its bandwidth; "
                "use sigma >= 2 (the code uses 4), or pass fixed_bandwidth."
            )
    fixed_bandwidth = _bandwidth_value(fixed_bandwidth)
    self_loops = check_flag(self_loops, "self_loops")
    return _kernel(x, n_top, sigma, truncation, bandwidth, fixed_bandwidth, self_loops)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5, 6))
def _kernel(
    x: jax.Array,
    n_top: int,
    sigma: int,
    truncation: str,
    bandwidth: str,
    fixed_bandwidth: float | None,
    self_loops: bool,
) -> jax.Array:
    n = x.shape[0]
    d = _distances(x)
    eye = jnp.eye(n, dtype=bool)
    if truncation == "strict":
        (cut,) = _kth_smallest(jax.lax.stop_gradient(d), (n_top,))
        keep = d < cut[:, None]
    else:
        keep = _knn_mask(d, n_top - 1) | eye

    if fixed_bandwidth is not None:
        ratio = d / fixed_bandwidth
    else:
        # The bandwidth is a rank statistic: not differentiated (d_ij still is).
        (s,) = _kth_smallest(jax.lax.stop_gradient(d), (sigma,))
        if bandwidth == "local_scaling":
            s = jnp.sqrt(s)[:, None] * jnp.sqrt(s)[None, :]
        else:
            s = s[:, None]
        # A (numerically) zero bandwidth is the limit s -> 0+: weight 1 at
        # distance 0, weight 0 elsewhere. Double `where` keeps gradients finite.
        pos = s > _MIN_BANDWIDTH
        ratio = jnp.where(pos, d / jnp.where(pos, s, 1.0), jnp.where(d > 0, _MAX_RATIO, 0.0))
    ratio = jnp.where(keep, jnp.minimum(ratio, _MAX_RATIO), 0.0)
    w = jnp.where(keep, jnp.exp(-jnp.square(ratio)), 0.0)
    return jnp.where(eye, 1.0 if self_loops else 0.0, w).astype(d.dtype)


def symmetrize(w: ArrayLike, mode: Symmetrize = "mean") -> jax.Array:
    """Symmetrises a weight matrix.

    Args:
      w: ``(N, N)`` weights.
      mode: ``"mean"`` (``(W + W^T) / 2``, the code's), ``"max"`` (an edge if
        either endpoint chose it), ``"min"`` (mutual neighbours only) or
        ``"none"`` (returned unchanged).

    Returns:
      The ``(N, N)`` symmetrised weights.
    """
    _choice(mode, "mode", SYMMETRIZE_MODES)
    return _symmetrize(jnp.asarray(w), mode)


@functools.partial(jax.jit, static_argnums=(1,))
def _symmetrize(w: jax.Array, mode: str) -> jax.Array:
    if mode == "mean":
        return 0.5 * (w + w.T)
    if mode == "max":
        return jnp.maximum(w, w.T)
    if mode == "min":
        return jnp.minimum(w, w.T)
    return w


def _inv(d: jax.Array, power: float) -> jax.Array:
    """``d ** -power`` where ``d > 0``, 0 elsewhere (isolated nodes); finite gradients."""
    pos = d > 0
    return jnp.where(pos, jnp.where(pos, d, 1.0) ** -power, 0.0)


def laplacian(w: ArrayLike, normalization: Normalization = "symmetric") -> jax.Array:
    r"""Graph Laplacian of the weights ``w``, Eqs. (3)-(6) of the module docstring.

    Args:
      w: ``(N, N)`` non-negative weights. Symmetric for ``"unnormalized"``,
        ``"symmetric"`` and ``"random_walk"`` (see :func:`symmetrize`); for
        ``"released_code"`` pass the *raw*, non-symmetric kernel
        (:func:`kernel_weights`): Eq. (6) normalises it by its row sums and then
        symmetrises it.
      normalization: ``"symmetric"`` (4), ``"unnormalized"`` (3),
        ``"random_walk"`` (5) or ``"released_code"`` (6).

    Returns:
      The ``(N, N)`` Laplacian. It is symmetric except for ``"random_walk"``.
      Rows and columns of nodes with zero degree are zero.

    Example:
      >>> import jax.numpy as jnp
      >>> from kinetix import diffusion
      >>> w = jnp.array([[0.0, 1.0], [1.0, 0.0]])
      >>> diffusion.laplacian(w, "unnormalized")
      Array([[ 1., -1.],
             [-1.,  1.]], dtype=float32)
    """
    _choice(normalization, "normalization", NORMALIZATIONS)
    shape = np.shape(w)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"laplacian: w must be a square (N, N) matrix, got shape {shape}.")
    w_np = _to_numpy(w)
    if w_np is not None:
        if not np.all(np.isfinite(w_np)):
            raise ValueError("laplacian: w has non-finite entries (NaN or inf).")
        if np.any(w_np < 0):
            raise ValueError(
                f"laplacian: weights must be non-negative, got min {float(np.min(w_np)):.3g}."
            )
    w = jnp.asarray(w)
    return _laplacian(w.astype(_float_dtype(w.dtype)), normalization)


@functools.partial(jax.jit, static_argnums=(1,))
def _laplacian(w: jax.Array, normalization: str) -> jax.Array:
    deg = jnp.sum(w, axis=1)
    if normalization == "unnormalized":
        return jnp.diag(deg) - w
    if normalization == "released_code":
        r = _inv(deg, 0.5)
        a = r[:, None] * w * r[None, :]
        a = 0.5 * (a + a.T)
        return jnp.diag(jnp.sum(a, axis=1)) - a
    has_edges = (deg > 0).astype(w.dtype)
    if normalization == "symmetric":
        r = _inv(deg, 0.5)
        return jnp.diag(has_edges) - r[:, None] * w * r[None, :]
    pos = deg > 0
    return jnp.diag(has_edges) - jnp.where(pos[:, None], w / jnp.where(pos, deg, 1.0)[:, None], 0.0)


def graph_laplacian(
    x: ArrayLike,
    n_top: int = 8,
    sigma: int = 4,
    *,
    normalization: Normalization = "symmetric",
    symmetrize_mode: Symmetrize = "mean",
    truncation: Truncation = "strict",
    bandwidth: Bandwidth = "row",
    fixed_bandwidth: float | None = None,
    self_loops: bool = True,
) -> jax.Array:
    r"""kNN-graph Laplacian of the points ``x``: :func:`kernel_weights`, then :func:`laplacian`.

    With the defaults this returns
    :math:`L_{sym} = I - D^{-1/2} W_s D^{-1/2}`, where
    :math:`W_s = (W + W^T)/2` and ``W`` is the code's kernel (2).
    ``normalization="released_code"`` reproduces ``calculate_weight`` plus
    ``L = diag(W.sum(1)) - W`` of the authors' few-shot / prostate scripts exactly.
    There ``symmetrize_mode`` is applied after the normalisation and must be
    ``"mean"``.

    Args:
      x: ``(N, D)`` points (finite).
      n_top, sigma, truncation, bandwidth, fixed_bandwidth, self_loops: see
        :func:`kernel_weights` (defaults ``n_top=8, sigma=4`` as in the code).
      normalization: see :func:`laplacian`.
      symmetrize_mode: see :func:`symmetrize`.

    Returns:
      The ``(N, N)`` Laplacian.

    Example:
      >>> import jax
      >>> from kinetix import diffusion
      >>> x = jax.random.normal(jax.random.key(0), (40, 3))
      >>> lap = diffusion.graph_laplacian(x, n_top=8, sigma=4)
      >>> bool(diffusion.lambda_max(lap) <= 2.0 + 1e-5)
      True
    """
    _choice(normalization, "normalization", NORMALIZATIONS)
    _choice(symmetrize_mode, "symmetrize_mode", SYMMETRIZE_MODES)
    if normalization == "released_code" and symmetrize_mode != "mean":
        raise ValueError(
            "normalization='released_code' symmetrises after normalising with "
            f"(W + W^T)/2, as the code does; got symmetrize_mode={symmetrize_mode!r}. "
            "Use symmetrize_mode='mean', or another normalization."
        )
    w = kernel_weights(
        x,
        n_top,
        sigma,
        truncation=truncation,
        bandwidth=bandwidth,
        fixed_bandwidth=fixed_bandwidth,
        self_loops=self_loops,
    )
    if normalization == "released_code":
        return _laplacian(w, "released_code")
    return _laplacian(_symmetrize(w, symmetrize_mode), normalization)


# ------------------------------------------------------------------ stability


def gershgorin_bound(laplacian: Any) -> jax.Array:
    r"""Gershgorin upper bound on the spectral radius: :math:`\max_i \sum_j |L_{ij}|`.

    Cheap (``O(N^2)``, or ``O(nnz)`` for a BCOO matrix) and safe under ``jit``.
    For (3) it is :math:`2 \max_i d_i` (self-loops aside). For (5) it is at most
    2. For (4) it may exceed the true bound 2.
    """
    lap = _check_laplacian(laplacian)
    if isinstance(lap, jsparse.BCOO):
        rows = lap.indices[:, 0]
        return jnp.max(jax.ops.segment_sum(jnp.abs(lap.data), rows, num_segments=lap.shape[0]))
    return jnp.max(jnp.sum(jnp.abs(lap), axis=1))


def lambda_max(laplacian: Any, method: LambdaMethod = "auto") -> jax.Array:
    r"""Largest eigenvalue of a Laplacian, or an upper bound on it.

    Args:
      laplacian: ``(N, N)`` dense array or ``jax.experimental.sparse.BCOO``.
      method: ``"exact"``: ``O(N^3)``. A concrete ``L`` is solved in float64
        NumPy: ``eigvalsh`` if it is symmetric, else the largest real part of
        ``eigvals`` (for :math:`L_{rw}` of a symmetric ``W`` the eigenvalues are
        real, those of :math:`L_{sym}`). A traced ``L`` uses ``jnp.linalg.eigvalsh``,
        which reads only the lower triangle, so pass a symmetric ``L`` (for
        :math:`L_{rw}`, its :math:`L_{sym}`). ``"gershgorin"``: the
        upper bound :func:`gershgorin_bound`. ``"auto"``: ``"exact"`` when
        ``N <= EXACT_MAX_N`` (2048; a BCOO matrix is densified), else
        ``"gershgorin"``.

    Returns:
      A float scalar. ``"gershgorin"`` never underestimates the spectral radius.
      For a non-symmetric ``L`` with complex eigenvalues the largest real part is
      *not* the stability bound: :math:`\gamma \le 2 / \lambda_{max}` may be
      unstable there; use :func:`max_stable_gamma` or :func:`check_stability`.
    """
    _choice(method, "method", LAMBDA_METHODS)
    lap = _check_laplacian(laplacian)
    n = _shape_of(lap)[0]
    if method == "auto":
        method = "exact" if n <= EXACT_MAX_N else "gershgorin"
    if method == "gershgorin":
        return gershgorin_bound(lap)
    lap_np = _to_numpy(lap)
    if lap_np is not None:
        return jnp.asarray(_lambda_max_np(lap_np, "exact")[0], _float_dtype(lap.dtype))
    return jnp.linalg.eigvalsh(_dense(lap))[-1]


def _is_symmetric(lap_np: np.ndarray) -> bool:
    scale = float(np.max(np.abs(lap_np))) or 1.0
    return float(np.max(np.abs(lap_np - lap_np.T))) <= 1e-5 * scale


def _lambda_max_np(lap_np: np.ndarray, method: str) -> tuple[float, str]:
    """``lambda_max`` of a concrete Laplacian in float64 NumPy, and how it was obtained.

    A non-symmetric ``L`` gets the largest real part of its eigenvalues
    (``numpy.linalg.eigvals``); for ``I - D^-1 W`` with a symmetric ``W`` they are
    real and equal to those of ``L_sym``. (This is not the stability bound of a
    non-symmetric ``L``: see :func:`_stability_np`.)
    """
    n = lap_np.shape[0]
    if method == "auto":
        method = "exact" if n <= EXACT_MAX_N else "gershgorin"
    if method == "gershgorin":
        return float(np.max(np.sum(np.abs(lap_np), axis=1))), "Gershgorin upper bound"
    lap64 = lap_np.astype(np.float64)
    if _is_symmetric(lap_np):
        return float(np.linalg.eigvalsh(lap64)[-1]), "exact eigvalsh"
    return float(np.max(np.linalg.eigvals(lap64).real)), "exact eigvals (non-symmetric L)"


class _Bound(NamedTuple):
    """What the stability check of a concrete ``L`` found (see :func:`_stability_np`)."""

    lam: float  # lambda_eff = max |lambda|^2 / Re(lambda) (or an upper bound); inf: no gamma > 0
    how: str  # how it was obtained
    symmetric: bool
    eigenvalue: complex | None = None  # the binding eigenvalue (exact method only)


def _gershgorin_np(lap_np: np.ndarray) -> _Bound | None:
    """An upper bound on ``lambda_eff`` from Gershgorin discs, or ``None`` if they cannot give one.

    * symmetric ``L`` (assumed positive semi-definite, as every graph Laplacian):
      the eigenvalues are real and at most ``max_i sum_j |L_ij|``;
    * otherwise, if ``L`` is diagonally dominant with a non-negative diagonal by
      rows (or by columns), every eigenvalue lies in a disc of centre ``L_ii``
      and radius ``R_i <= L_ii``, and such a disc lies inside the stable disc
      ``{|1 - gamma lambda| <= 1}`` (centre and radius ``1 / gamma``) iff
      ``gamma (L_ii + R_i) <= 2``: so ``lambda_eff <= max_i sum_j |L_ij|``.
      (Laplacians (3), (5) and (6) are such, for any non-negative ``W``.)
    """
    a = np.abs(lap_np.astype(np.float64))
    diag = np.diagonal(lap_np).astype(np.float64)
    if _is_symmetric(lap_np):
        return _Bound(float(np.max(a.sum(axis=1))), "Gershgorin upper bound", True)
    for axis, what in ((1, "rows"), (0, "columns")):
        total = a.sum(axis=axis)
        radius = total - np.abs(diag)
        if np.all(diag >= radius - STABILITY_RTOL * total):
            how = f"Gershgorin upper bound (non-symmetric L, diagonally dominant by {what})"
            return _Bound(float(np.max(total)), how, False)
    return None


def _exact_np(lap_np: np.ndarray) -> _Bound:
    r"""``lambda_eff = max |lambda|^2 / Re(lambda)`` over the eigenvalues of a concrete ``L`` (float64).

    Eigenvalues with ``|lambda| <= STABILITY_RTOL * max |lambda|`` count as 0
    (round-off of a zero eigenvalue; they change ``|1 - gamma lambda|^2`` by at
    most ``4 STABILITY_RTOL``). ``inf`` if another one has ``Re(lambda) <= 0``:
    then no ``gamma > 0`` is stable. For a symmetric ``L`` (real eigenvalues,
    ``eigvalsh``) this is ``lambda_max`` when ``L`` is positive semi-definite.
    """
    lap64 = lap_np.astype(np.float64)
    symmetric = _is_symmetric(lap_np)
    if symmetric:
        eig = np.linalg.eigvalsh(lap64).astype(complex)
        how = "exact eigvalsh"
    else:
        eig = np.linalg.eigvals(lap64)
        how = "exact eigvals (non-symmetric L)"
    rho = float(np.max(np.abs(eig))) if eig.size else 0.0
    live = eig[np.abs(eig) > STABILITY_RTOL * rho]
    if live.size == 0:
        return _Bound(0.0, how, symmetric)
    if np.any(live.real <= 0):
        worst = live[np.argmin(live.real)]
        return _Bound(math.inf, how, symmetric, complex(worst))
    ratio = np.abs(live) ** 2 / live.real
    i = int(np.argmax(ratio))
    return _Bound(float(ratio[i]), how, symmetric, complex(live[i]))


def _stability_np(lap_np: np.ndarray, method: str, gamma: float | None = None) -> _Bound:
    """The ``lambda_eff`` bound the check uses, for ``method`` (and ``gamma`` when known).

    ``"gershgorin"``: the disc bound (``ValueError`` if the discs give none).
    ``"exact"``: the eigenvalues. ``"auto"``: with ``gamma``, the disc bound when
    it exists and already proves ``gamma`` stable; otherwise (or without
    ``gamma``) the eigenvalues if ``N <= EXACT_MAX_N``, else the disc bound
    (``ValueError`` if there is none).
    """
    n = lap_np.shape[0]
    if method == "exact" or (method == "auto" and gamma is None and n <= EXACT_MAX_N):
        return _exact_np(lap_np)
    disc = _gershgorin_np(lap_np)
    if method == "auto" and (
        disc is None or (gamma is not None and gamma * disc.lam > 2.0 * (1.0 + STABILITY_RTOL))
    ):
        if n <= EXACT_MAX_N:
            return _exact_np(lap_np)
    if disc is None:
        raise ValueError(
            f"No Gershgorin bound for this non-symmetric L of N={n}: it is not diagonally "
            "dominant, so the discs do not lie in the right half-plane. Use method='exact' "
            f"(O(N^3); 'auto' does so for N <= {EXACT_MAX_N}), or pass lam_max= (an upper bound "
            "on max |lambda|^2 / Re(lambda) over the eigenvalues lambda of L)."
        )
    return disc


def max_stable_gamma(laplacian: Any, method: LambdaMethod = "auto") -> float:
    r"""The largest stable step size: :math:`2 / \lambda_{eff}`, :math:`\lambda_{eff} = \max_\lambda |\lambda|^2 / \operatorname{Re}\lambda`.

    Explicit Euler is stable iff :math:`|1 - \gamma\lambda| \le 1` for every
    eigenvalue :math:`\lambda` of ``L`` (Eq. 7), i.e.
    :math:`\gamma \le 2 \operatorname{Re}\lambda / |\lambda|^2`. For a symmetric
    positive semi-definite ``L`` that is :math:`2 / \lambda_{max}(L)`. Needs a
    concrete (not traced) Laplacian. Returns ``inf`` for ``L = 0`` and ``0.0``
    when an eigenvalue has :math:`\operatorname{Re}\lambda \le 0` (no
    :math:`\gamma > 0` is stable). ``method="gershgorin"`` gives a lower bound
    on it (see :func:`check_stability`).

    Example:
      >>> import jax.numpy as jnp
      >>> from kinetix import diffusion
      >>> diffusion.max_stable_gamma(jnp.array([[1.0, -1.0], [-1.0, 1.0]]))
      1.0
      >>> round(diffusion.max_stable_gamma(jnp.array([[1.0, -1.0], [1.0, 1.0]])), 9)  # 1 +- i
      1.0
    """
    _choice(method, "method", LAMBDA_METHODS)
    lap_np = _to_numpy(_check_laplacian(laplacian))
    if lap_np is None:
        raise ValueError(
            "max_stable_gamma needs a concrete Laplacian (it returns a Python float); "
            "call it outside jit, or use 2.0 / kinetix.diffusion.lambda_max(L) under jit "
            "(valid for a symmetric positive semi-definite L)."
        )
    lam = _stability_np(lap_np, method).lam
    if lam <= 0:
        return math.inf
    return 0.0 if math.isinf(lam) else 2.0 / lam


_STABLE_IFF = (
    "explicit Euler x <- x - gamma L x is stable iff |1 - gamma lambda| <= 1 for every "
    "eigenvalue lambda of L, i.e. gamma |lambda|^2 <= 2 Re(lambda)"
)


def _unstable_message(gamma: float, bound: _Bound) -> str:
    lam, how = bound.lam, bound.how
    fixes = (
        "or a normalised Laplacian (normalization='symmetric' or 'random_walk', whose "
        "eigenvalues satisfy this for any gamma <= 1), or more steps with a smaller gamma for "
        "the same diffusion time."
    )
    if math.isinf(lam):
        z = "" if bound.eigenvalue is None else f" lambda = {bound.eigenvalue:.6g}"
        return (
            f"Unstable diffusion step: {_STABLE_IFF}. L has an eigenvalue{z} ({how}) "
            f"with Re(lambda) <= 0, so |1 - gamma lambda| > 1 for every gamma > 0 "
            f"(got gamma={gamma:.6g}): the iteration would grow without bound. A Laplacian of "
            "non-negative weights has no such eigenvalue; check how L was built."
        )
    if bound.symmetric:
        return (
            f"Unstable diffusion step: {_STABLE_IFF}; for a symmetric positive semi-definite L "
            f"that is gamma * lambda_max(L) <= 2, but gamma={gamma:.6g} and "
            f"lambda_max(L)={lam:.6g} ({how}) give gamma * lambda_max = {gamma * lam:.6g} > 2; "
            f"the iteration would grow without bound. Use gamma <= {2.0 / lam:.6g}, " + fixes
        )
    z = "" if bound.eigenvalue is None else f", at the eigenvalue lambda = {bound.eigenvalue:.6g}"
    growth = (
        ""
        if bound.eigenvalue is None
        else f"; |1 - gamma lambda| = {abs(1 - gamma * bound.eigenvalue):.6g} per step"
    )
    return (
        f"Unstable diffusion step: {_STABLE_IFF}; that is gamma * lambda_eff <= 2 with "
        f"lambda_eff = max |lambda|^2 / Re(lambda) (for a symmetric positive semi-definite L, "
        f"lambda_max). This L is not symmetric: lambda_eff = {lam:.6g} ({how}{z}), so "
        f"gamma={gamma:.6g} gives gamma * lambda_eff = {gamma * lam:.6g} > 2{growth}; the "
        f"iteration would grow without bound. Use gamma <= {2.0 / lam:.6g}, " + fixes
    )


def check_stability(
    laplacian: Any,
    gamma: ArrayLike,
    *,
    lam_max: ArrayLike | None = None,
    method: LambdaMethod = "auto",
) -> float:
    r"""Raises ``ValueError`` unless the explicit-Euler step :math:`x - \gamma L x` is stable (Eq. 7).

    The condition: :math:`|1 - \gamma\lambda| \le 1` for every eigenvalue
    :math:`\lambda` of ``L``, i.e. :math:`\gamma\,\lambda_{eff} \le 2` with
    :math:`\lambda_{eff} = \max_\lambda |\lambda|^2 / \operatorname{Re}\lambda`
    (``inf`` if some :math:`\lambda \ne 0` has :math:`\operatorname{Re}\lambda \le 0`).
    For a symmetric positive semi-definite ``L`` (every graph Laplacian of a
    symmetric ``W``) :math:`\lambda_{eff} = \lambda_{max}` and this is
    :math:`0 \le \gamma\lambda_{max} \le 2`. For a non-symmetric ``L`` (e.g.
    ``symmetrize_mode="none"``) the eigenvalues may be complex, and the largest
    real part alone is not enough: ``L = [[1, -1], [1, 1]]`` (eigenvalues
    ``1 +- i``) needs :math:`\gamma \le 1`, not :math:`\gamma \le 2`.

    The bound is checked cheaply first with Gershgorin discs (:func:`gershgorin_bound`:
    valid for a symmetric ``L``, which it assumes positive semi-definite, and for a
    diagonally dominant one, as Laplacians (3), (5), (6) of any non-negative ``W`` are).
    Only if that is inconclusive are the eigenvalues computed (float64 NumPy:
    ``eigvalsh``, or ``eigvals`` for a non-symmetric ``L``; ``method``), which also
    catches a symmetric ``L`` with a negative eigenvalue. A relative slack of
    ``STABILITY_RTOL`` absorbs round-off, so ``gamma = 1`` with a normalised Laplacian
    passes; eigenvalues below ``STABILITY_RTOL * max |lambda|`` in modulus count as 0.
    Not detected: a defective eigenvalue with ``|1 - gamma lambda| = 1`` exactly (it
    grows polynomially), and the transient growth of a non-normal ``L``.

    Args:
      laplacian: the ``(N, N)`` Laplacian (dense or BCOO). It may be traced if
        ``lam_max`` is given.
      gamma: the step size, a real scalar; must be concrete.
      lam_max: a precomputed :math:`\lambda_{eff}` (:math:`\lambda_{max}` for a
        symmetric PSD ``L``) or an upper bound on it (e.g. ``2.0`` for a
        normalised Laplacian, also of a non-symmetric ``W``). Must be concrete;
        ``inf`` means no ``gamma > 0`` is stable.
      method: how to get :math:`\lambda_{eff}` when ``lam_max`` is not given.

    Returns:
      The :math:`\lambda_{eff}` value (or bound) the check used, as a float.

    Raises:
      ValueError: on a negative, non-finite or non-scalar ``gamma``, on an
        unstable step, when the Gershgorin discs cannot bound a non-symmetric
        ``L`` with ``method="gershgorin"`` (or ``"auto"`` and ``N > EXACT_MAX_N``),
        or when the values needed are traced (under ``jit``); the message says
        what to pass instead.
    """
    if is_traced(gamma):
        raise ValueError(
            "The stability check needs a concrete gamma, but gamma is traced (under jit/grad). "
            "Check outside jit with kinetix.diffusion.check_stability(L, gamma), then call with "
            "check='none'; or use check='clip' (traced-safe: gamma <- min(gamma, 2/lambda_max))."
        )
    g = _nonnegative(
        gamma,
        "gamma",
        " A negative step runs the heat equation backwards, which is unstable.",
    )
    _choice(method, "method", LAMBDA_METHODS)
    if lam_max is not None:
        if is_traced(lam_max):
            raise ValueError(
                "lam_max must be concrete for check='raise'; compute it outside jit "
                "(kinetix.diffusion.lambda_max(L)) and pass it as a float."
            )
        lam = _nonnegative(lam_max, "lam_max", allow_inf=True)
        bound = _Bound(lam, "given as lam_max", True)
    else:
        lap_np = _to_numpy(_check_laplacian(laplacian))
        if lap_np is None:
            raise ValueError(
                "The stability check needs lambda_max(L), but L is traced (under jit/grad/vmap). "
                "Pass lam_max= computed outside jit (kinetix.diffusion.lambda_max(L), or 2.0 for "
                "a normalised Laplacian), or use check='clip' (traced-safe) or check='none'."
            )
        bound = _stability_np(lap_np, method, g)
    if g > 0 and g * bound.lam > 2.0 * (1.0 + STABILITY_RTOL):
        raise ValueError(_unstable_message(g, bound))
    return bound.lam


# ------------------------------------------------------------------ diffusion


def _as_matrix(x: ArrayLike, n: int, name: str = "x") -> tuple[jax.Array, tuple[int, ...]]:
    shape = tuple(np.shape(x))
    if len(shape) == 0 or shape[0] != n:
        raise ValueError(
            f"{name} must have one row per graph node: leading dimension {n}, got shape {shape}."
        )
    _check_finite(x, name)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x.reshape(n, -1), shape


def _resolve_gamma(
    laplacian: Any,
    gamma: ArrayLike,
    lam_max: ArrayLike | None,
    check: Check,
    method: LambdaMethod,
) -> jax.Array:
    _choice(check, "check", CHECKS)
    _choice(method, "method", LAMBDA_METHODS)
    hint = " A negative step runs the heat equation backwards, which is unstable."
    _nonnegative(gamma, "gamma", hint)  # concrete: finite, >= 0; traced: a scalar
    if lam_max is not None:
        _nonnegative(lam_max, "lam_max", allow_inf=True)
    if check == "raise":
        check_stability(laplacian, gamma, lam_max=lam_max, method=method)
        return jnp.asarray(gamma)
    if check == "clip":
        if lam_max is not None:
            lam = jnp.asarray(lam_max)
        else:
            # concrete dense L: a bound valid for any L (see check_stability); a BCOO one is
            # not densified here
            sparse = isinstance(laplacian, jsparse.BCOO)
            lap_np = None if sparse else _to_numpy(laplacian)
            if lap_np is not None:
                disc = None if method == "exact" else _gershgorin_np(lap_np)
                lam = disc.lam if disc is not None else _stability_np(lap_np, method).lam
            else:  # traced or BCOO: Gershgorin (valid for symmetric PSD or diagonally dominant L)
                lam = lambda_max(laplacian, "gershgorin" if method == "auto" else method)
        lam = jax.lax.stop_gradient(lam)
        cap = 2.0 / jnp.maximum(lam, jnp.finfo(jnp.float32).tiny)
        return jnp.clip(jnp.asarray(gamma), 0.0, cap)
    return jnp.asarray(gamma)


def _matvec(laplacian: Any, x: jax.Array) -> jax.Array:
    if isinstance(laplacian, jsparse.BCOO):
        return laplacian @ x
    return jnp.matmul(laplacian, x, precision=_HIGHEST)


def diffusion_step(
    x: ArrayLike,
    laplacian: Any,
    gamma: ArrayLike,
    *,
    lam_max: ArrayLike | None = None,
    check: Check = "raise",
    method: LambdaMethod = "auto",
) -> jax.Array:
    r"""One explicit-Euler diffusion step :math:`x - \gamma L x` (Eq. 1): ``diffuse(..., steps=1)``."""
    return diffuse(x, laplacian, gamma, 1, lam_max=lam_max, check=check, method=method)


def diffuse(
    x: ArrayLike,
    laplacian: Any,
    gamma: ArrayLike,
    steps: int = 1,
    *,
    lam_max: ArrayLike | None = None,
    check: Check = "raise",
    method: LambdaMethod = "auto",
) -> jax.Array:
    r"""``steps`` explicit-Euler diffusion steps :math:`x \leftarrow x - \gamma L x` (Eq. 1).

    This is the released ``DiffusionLayer`` (Diff-ResNet) and the loop of
    ``COIN.forward``. The rows of ``x`` are the graph's nodes. Trailing
    dimensions are flattened for the product and restored afterwards, as in
    the code's ``x.flatten(1)``.

    Stability (Eq. 7) is checked once, before the loop, according to ``check``:

    * ``"raise"`` (default): ``ValueError`` unless ``|1 - gamma lambda| <= 1``
      for every eigenvalue ``lambda`` of ``L``, which is ``gamma * lambda_max(L)
      <= 2`` for a symmetric positive semi-definite ``L`` (see
      :func:`check_stability`). Needs a concrete ``gamma``, and a concrete
      ``L`` or a concrete ``lam_max``. So under ``jit`` either pass ``lam_max``
      (a float computed outside, or ``2.0`` for a normalised Laplacian), or
      use one of the two options below. Without ``lam_max``, each call may
      compute an ``O(N^3)`` eigenvalue when the Gershgorin bound is
      inconclusive. For repeated eager calls, compute ``lambda_max(L)`` once
      and pass it.
    * ``"clip"``: traced-safe. It uses ``gamma_eff = clip(gamma, 0, 2 / lam)``
      with ``lam = lam_max`` if given, else the Gershgorin upper bound (which is
      conservative for :math:`L_{sym}`). For a concrete dense ``L`` that the
      discs cannot bound (non-symmetric and not diagonally dominant, see
      :func:`check_stability`) ``lam`` is the exact ``lambda_eff``; for a
      traced or BCOO one the Gershgorin cap is only guaranteed stable when ``L`` is
      symmetric positive semi-definite or diagonally dominant (Laplacians (3)-(6)
      of a symmetric ``W``, and (3), (5) of any ``W``). The bound is not
      differentiated.
    * ``"none"``: no check; stability is the caller's responsibility.

    A concrete ``gamma`` (or ``lam_max``) is validated whatever ``check`` is: it
    must be a real scalar, finite (``lam_max`` may be ``inf``) and ``>= 0``;
    a traced one cannot be checked.

    Args:
      x: ``(N, ...)`` node values (e.g. hidden features, or softmax outputs in COIN).
      laplacian: ``(N, N)`` Laplacian, dense or ``jax.experimental.sparse.BCOO``.
        A sparse ``L`` keeps each step ``O(nnz * F)``.
      gamma: step size :math:`\gamma \ge 0` (the code's ``step_size`` /
        ``sigma2``). It may be traced with ``check="clip"`` or ``"none"``.
      steps: number of steps ``T >= 0`` (the code's ``layer_num``): a Python or
        NumPy int (or a concrete 0-d integer array), known before tracing.
      lam_max: optional precomputed :math:`\lambda_{eff}(L)` (``lambda_max`` for
        a symmetric PSD ``L``; see :func:`check_stability`) or an upper bound on it.
      check: ``"raise"``, ``"clip"`` or ``"none"``.
      method: how :math:`\lambda_{max}` is computed when needed (see :func:`lambda_max`).

    Returns:
      An array with the shape and dtype of ``x`` (float32 for integer input).

    Raises:
      ValueError: on an unstable step (``check="raise"``), on shapes that do
        not match, on non-finite concrete inputs, or on a concrete ``gamma``
        / ``lam_max`` that is negative, NaN, inf (``gamma``) or not a scalar.
      TypeError: on a ``steps`` that is not an integer known before tracing.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kinetix import diffusion
      >>> pts = jax.random.normal(jax.random.key(0), (40, 3))
      >>> lap = diffusion.graph_laplacian(pts, normalization="unnormalized")
      >>> u = jax.random.uniform(jax.random.key(1), (40, 3))
      >>> v = diffusion.diffuse(u, lap, gamma=0.1, steps=10)
      >>> bool(jnp.allclose(u.sum(0), v.sum(0), atol=1e-4))  # D - W conserves the sum
      True
      >>> bool(diffusion.dirichlet_energy(v, lap) < diffusion.dirichlet_energy(u, lap))
      True
      >>> diffusion.diffuse(u, lap, gamma=100.0, steps=1)  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      ValueError: Unstable diffusion step: ...
    """
    steps = check_int(steps, "steps", low=0)
    lap = _check_laplacian(laplacian)
    n = _shape_of(lap)[0]
    mat, shape = _as_matrix(x, n)
    g = _resolve_gamma(lap, gamma, lam_max, check, method)
    if steps == 0:
        return mat.reshape(shape)
    return _diffuse_loop(mat, lap, g, steps).reshape(shape)


@functools.partial(jax.jit, static_argnums=(3,))
def _diffuse_loop(mat: jax.Array, lap: Any, gamma: jax.Array, steps: int) -> jax.Array:
    gamma = gamma.astype(mat.dtype)
    lap = lap if isinstance(lap, jsparse.BCOO) else lap.astype(mat.dtype)
    return jax.lax.fori_loop(0, steps, lambda _, v: v - gamma * _matvec(lap, v), mat)


def dirichlet_energy(x: ArrayLike, laplacian: Any) -> jax.Array:
    r"""Dirichlet energy :math:`E(x) = \operatorname{tr}(x^T L x)` (Eq. 8).

    For :math:`L = D - W` this is :math:`\tfrac12 \sum_{ij} W_{ij}\lVert x_i - x_j\rVert^2`.
    For :math:`L_{sym}` it is
    :math:`\tfrac12 \sum_{ij} W_{ij}\lVert x_i/\sqrt{d_i} - x_j/\sqrt{d_j}\rVert^2`.
    For a random-walk ``L`` the quantity that diffusion decreases is
    ``dirichlet_energy(x, D - W)`` (the ``D``-weighted energy), not this one.

    Args:
      x: ``(N, ...)`` node values.
      laplacian: ``(N, N)`` Laplacian (dense or BCOO).

    Returns:
      A float scalar, ``>= 0`` (up to round-off) for a symmetric positive
      semi-definite ``L``.
    """
    lap = _check_laplacian(laplacian)
    mat, _ = _as_matrix(x, _shape_of(lap)[0])
    return _energy(mat, lap)


@jax.jit
def _energy(mat: jax.Array, lap: Any) -> jax.Array:
    lap = lap if isinstance(lap, jsparse.BCOO) else lap.astype(mat.dtype)
    return jnp.sum(mat * _matvec(lap, mat))


__all__ = [
    "BANDWIDTHS",
    "CHECKS",
    "EXACT_MAX_N",
    "LAMBDA_METHODS",
    "NORMALIZATIONS",
    "STABILITY_RTOL",
    "SYMMETRIZE_MODES",
    "TRUNCATIONS",
    "check_stability",
    "diffuse",
    "diffusion_step",
    "dirichlet_energy",
    "gershgorin_bound",
    "graph_laplacian",
    "kernel_weights",
    "knn_graph",
    "lambda_max",
    "laplacian",
    "max_stable_gamma",
    "pairwise_distances",
    "symmetrize",
]
