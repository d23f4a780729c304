"""Particle collisions on weight matrices: the math of KO, as pure array functions.

A layer's weight is read as a system of ``N`` particles in ``R^D`` (positions
``w``) whose gradients are their velocities ``g``. Both functions here take the
particle matrices ``w, g`` of shape ``(N, D)`` and return the collided gradient;
:func:`as_particles` / :func:`from_particles` convert a kernel of any rank.

* :func:`soft_collide` is Algorithm 2 of the KO paper (Feng et al., 2025).
* :func:`hard_collide` is Algorithm 1 / Eq. 5-8 (``rule="paper"``), or the
  authors' released ``apply_gradient_collision_v1`` (``rule="released"``).

Neither materialises an ``(N, N, D)`` tensor: the soft collision is an ``N x N``
matrix times ``g``; the hard collision builds the ``N x N`` acceptance matrix,
then walks the list of accepted pairs in chunks of ``chunk_size`` pairs, so its
extra memory is ``O(N^2 + chunk_size * D)`` and its work is proportional to the
number of pairs that actually collide. No pair is ever dropped.

Reference: Feng, Huang, Fu, Wang, Yan. *KO: Kinetics-inspired Neural Optimizer
with PDE Simulation Approaches*, arXiv:2505.14777, 2025.
"""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from kinetix.validation import check_int, check_real

HardRule = Literal["paper", "released"]
Acceptance = Literal["threshold", "quota"]
LengthRule = Literal["mean", "median", "sqrt_d"]
LENGTH_RULES = ("mean", "median", "sqrt_d")

_HIGHEST = jax.lax.Precision.HIGHEST
# Unit directions of at most this many floats are drawn at once (4 MiB in f32),
# and at most this many pairs (each needs its own key).
_DEFAULT_CHUNK_FLOATS = 1 << 20
_MAX_CHUNK_PAIRS = 4096


class CollisionInfo(NamedTuple):
    """What one collision step did to one layer.

    Attributes:
      num_pairs: number of particle pairs that collided (int32 scalar). For the
        soft collision, the number of off-diagonal pairs with a non-zero coupling
        ``S_ij``.
      rate: ``num_pairs`` divided by the ``N (N - 1) / 2`` candidate pairs
        (float32 scalar; 0 when ``N < 2``).
    """

    num_pairs: jax.Array
    rate: jax.Array


def as_particles(x: jax.Array, axis: int | Literal["inputs"] = -1) -> jax.Array:
    """Reshapes a kernel into particles: one row per index of ``axis``.

    For a Flax kernel ``(in, out)`` and ``axis=-1`` each output unit is a
    particle whose vector is its ``in`` incoming weights; a conv kernel
    ``(kh, kw, in, out)`` gives ``out`` particles in ``R^{kh*kw*in}``. This equals
    the rows of a PyTorch ``(out, in)`` weight, the paper's layout.

    ``axis="inputs"`` makes every input position a particle, a vector over the
    ``out`` units: ``(in, out)`` gives ``in`` particles (the columns of the
    PyTorch weight, the layout of KO's released code, = ``axis=0``), a conv
    kernel ``(kh, kw, in, out)`` gives ``kh*kw*in`` particles in ``R^out`` (the
    columns of the PyTorch ``weight.view(out, -1)``).

    Args:
      x: array with ``x.ndim >= 2``.
      axis: the particle axis, or ``"inputs"``.

    Returns:
      An ``(x.shape[axis], x.size // x.shape[axis])`` array.
    """
    if x.ndim < 2:
        raise ValueError(f"as_particles needs an array with at least 2 dimensions, got {x.shape=}.")
    if isinstance(axis, str):
        _check_axis_name(axis)
        return x.reshape(math.prod(x.shape[:-1]), x.shape[-1])
    axis = _normalize_axis(axis, x.ndim)
    moved = jnp.moveaxis(x, axis, 0)
    # Explicit sizes: ``reshape(n, -1)`` is ambiguous for zero-size arrays.
    return moved.reshape(moved.shape[0], math.prod(moved.shape[1:]))


def from_particles(
    p: jax.Array, shape: tuple[int, ...], axis: int | Literal["inputs"] = -1
) -> jax.Array:
    """Inverse of :func:`as_particles` for an array of the given ``shape``."""
    if isinstance(axis, str):
        _check_axis_name(axis)
        return p.reshape(shape)
    axis = _normalize_axis(axis, len(shape))
    moved_shape = (shape[axis],) + tuple(s for i, s in enumerate(shape) if i != axis)
    return jnp.moveaxis(p.reshape(moved_shape), 0, axis)


def static_int(value, name: str) -> int:
    """``int(value)`` for an int scalar, with a clear error for a traced value, bool or float."""
    return check_int(value, name)


def _check_axis_name(axis: str) -> None:
    if axis != "inputs":
        raise ValueError(f"axis must be an int or 'inputs', got {axis!r}.")


def _normalize_axis(axis: int, ndim: int) -> int:
    axis = static_int(axis, "axis")
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"Particle axis {axis} is out of range for an array with {ndim} dimensions."
        )
    return axis % ndim


def _check_pair(w: jax.Array, g: jax.Array, name: str) -> None:
    if w.ndim != 2 or g.ndim != 2:
        raise ValueError(
            f"{name} takes particle matrices of shape (N, D); got {w.shape=} and {g.shape=}. "
            "Use kinetix.collision.as_particles to reshape a kernel."
        )
    if w.shape != g.shape:
        raise ValueError(
            f"{name}: weights and gradients differ in shape, {w.shape=} vs {g.shape=}."
        )
    for arr, what in ((w, "weights"), (g, "gradients")):
        if not jnp.issubdtype(arr.dtype, jnp.floating):
            raise TypeError(f"{name}: {what} must be floating point, got dtype {arr.dtype}.")


def _compute_dtype(dtype) -> jnp.dtype:
    # Low-precision inputs are collided in float32 and cast back.
    return jnp.promote_types(dtype, jnp.float32)


def pow2_scale(x: jax.Array, axis=None) -> jax.Array:
    """A power of two ``p`` with ``max|x| / p`` in ``[1/2, 1)``, as a constant (no gradient).

    Dividing by ``p`` is exact, so collisions computed on ``x / p`` and scaled
    back by ``p`` are exactly scale covariant for power-of-two scales (and to
    rounding for any other), and norms and squared distances can neither
    overflow nor underflow. ``p = 1`` where ``max|x|`` is 0 or not finite; the
    exponent is clamped so that ``p`` and ``1 / p`` are finite
    (at most ``2**100`` either way in float32).

    Args:
      x: a floating-point array.
      axis: reduce over these axes (``keepdims``); ``None``: the whole array.

    Returns:
      ``p``, of ``x``'s dtype, broadcastable against ``x``.
    """
    m = jnp.max(jnp.abs(x), axis=axis, keepdims=axis is not None)
    _, e = jnp.frexp(m)
    e = jnp.where(jnp.isfinite(m) & (m > 0), e, 0)
    limit = jnp.finfo(x.dtype).maxexp - 28
    e = jnp.clip(e, -limit, limit)
    return jax.lax.stop_gradient(jnp.ldexp(jnp.ones_like(m), e))


def all_finite(*xs: jax.Array) -> jax.Array:
    """True (a bool scalar) when every element of every array is finite."""
    return functools.reduce(jnp.logical_and, [jnp.all(jnp.isfinite(x)) for x in xs])


def cosine_similarity(x: jax.Array) -> jax.Array:
    """Cosine similarity matrix of the rows of ``x`` (``(N, D) -> (N, N)``).

    Each row is divided by its largest magnitude before its norm is taken, so
    rows of any finite scale (``1e-30`` or ``1e30`` in float32) give their exact
    cosines. A zero row has cosine 0 with every row, itself included.
    """
    x = x.astype(_compute_dtype(x.dtype))
    m = jnp.max(jnp.abs(x), axis=-1, keepdims=True)
    x = x / jnp.where(m > 0, m, 1.0)
    norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
    unit = x / jnp.where(norm > 0, norm, 1.0)
    return jnp.matmul(unit, unit.T, precision=_HIGHEST)


def scaled_distance(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Pairwise distances of the rows of ``x`` in units of :func:`pow2_scale`: ``(d / p, p)``.

    ``d / p`` never overflows or underflows, whatever the scale of ``x``;
    ratios of distances (KO's Eq. 7) are taken on it.
    """
    x = x.astype(_compute_dtype(x.dtype))
    p = pow2_scale(x)
    x = x / p
    x = x - jnp.mean(x, axis=0, keepdims=True)
    sq = jnp.sum(x * x, axis=-1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * jnp.matmul(x, x.T, precision=_HIGHEST)
    d2 = jnp.maximum(d2, 0.0) * (1.0 - jnp.eye(x.shape[0], dtype=x.dtype))
    return jnp.sqrt(d2), p


def pairwise_distance(x: jax.Array) -> jax.Array:
    """Euclidean distance matrix of the rows of ``x`` (``(N, D) -> (N, N)``).

    Computed as ``|x_i|^2 + |x_j|^2 - 2 x_i.x_j`` on mean-centred rows scaled
    by a power of two (distances are translation invariant; centring limits the
    cancellation error, scaling prevents overflow and underflow), so it needs
    ``O(N^2)`` memory, not ``O(N^2 D)``. A distance beyond the dtype's range is
    ``inf``.
    """
    d, p = scaled_distance(x)
    return d * p


def soft_collide(
    w: jax.Array,
    g: jax.Array,
    coll_coef: ArrayLike = 0.1,
    *,
    threshold: ArrayLike | None = None,
    include_self: bool = True,
) -> tuple[jax.Array, CollisionInfo]:
    r"""Soft collision of Algorithm 2: repel neurons with similar weights and gradients.

    .. math::
       S_{ij} = \cos(w_i, w_j)\,\cos(g_i, g_j), \qquad
       g_i^* = g_i - c \sum_j S_{ij}\, g_j .

    ``S`` is the element-wise (Hadamard) product of the two cosine matrices, as
    in the released code; the diagonal is included, as written in the paper, so
    a particle's own gradient is scaled by ``1 - c``.

    Args:
      w: particle positions (weights), shape ``(N, D)``.
      g: particle velocities (gradients), shape ``(N, D)``.
      coll_coef: ``c``, the collision coefficient (may be traced).
      threshold: if given, entries ``S_ij < threshold`` are set to 0 before the
        update; the released code uses ``threshold=0.0``. ``None`` (the paper)
        keeps negative couplings.
      include_self: keep the diagonal of ``S`` (paper, code's ``"wg"``); ``False``
        subtracts it (code's ``"wg_i"``).

    Returns:
      ``(g_star, info)``: the collided gradient, same shape and dtype as ``g``,
      and a :class:`CollisionInfo` counting the off-diagonal pairs with non-zero
      coupling.

    Numerics: cosines are taken on rows divided by their largest magnitude and
    the update on ``g / p`` (``p`` a power of two, :func:`pow2_scale`), so
    ``soft_collide(w, s * g) == s * soft_collide(w, g)`` exactly for power-of-two
    ``s`` (to rounding for any ``s``) at every finite scale of ``w`` and ``g``.
    If ``w`` or ``g`` holds NaN or inf, ``g`` is returned unchanged (0 pairs).
    A traced ``coll_coef`` is not checked: a negative value reverses the
    collision, an infinite one gives non-finite output (:func:`kinetix.ko_soft`
    then passes the gradient through and counts it in ``nonfinite_skips``).

    Raises:
      ValueError: ``coll_coef < 0``, or NaN/inf in ``coll_coef`` or
        ``threshold`` (Python, NumPy or concrete JAX scalars).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kinetix import collision
      >>> w = jnp.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
      >>> g = jnp.array([[1.0, 1.0], [1.0, 0.9], [-1.0, 0.5]])
      >>> g_star, info = collision.soft_collide(w, g, 0.1)
      >>> g_star.shape, int(info.num_pairs)
      ((3, 2), 3)
    """
    check_real(coll_coef, "coll_coef", low=0.0, where="soft_collide")
    if threshold is not None:
        check_real(threshold, "threshold", where="soft_collide")
    return _soft_collide(w, g, coll_coef, threshold=threshold, include_self=bool(include_self))


@functools.partial(jax.jit, static_argnames=("include_self",))
def _soft_collide(w, g, coll_coef, *, threshold, include_self):
    w, g = jnp.asarray(w), jnp.asarray(g)
    _check_pair(w, g, "soft_collide")
    if g.size == 0:
        return g, _info(jnp.zeros([], jnp.int32), g.shape[0])
    dtype = _compute_dtype(g.dtype)
    s = cosine_similarity(w) * cosine_similarity(g)
    if threshold is not None:
        s = jnp.where(s < threshold, 0.0, s)
    off_diag = 1.0 - jnp.eye(s.shape[0], dtype=s.dtype)
    if not include_self:
        s = s * off_diag
    g32 = g.astype(dtype)
    p = pow2_scale(g32)
    gs = g32 / p
    g_star = (gs - jnp.asarray(coll_coef, dtype) * jnp.matmul(s, gs, precision=_HIGHEST)) * p
    finite = all_finite(w, g)
    g_star = jnp.where(finite, g_star, g32)
    num_pairs = jnp.sum(jnp.triu((s != 0) * off_diag, k=1), dtype=jnp.int32)
    return g_star.astype(g.dtype), _info(jnp.where(finite, num_pairs, 0), w.shape[0])


def _info(num_pairs: jax.Array, n: int) -> CollisionInfo:
    candidates = n * (n - 1) // 2
    rate = num_pairs.astype(jnp.float32) / max(candidates, 1)
    return CollisionInfo(num_pairs=num_pairs.astype(jnp.int32), rate=rate)


def acceptance_ratio(
    w: jax.Array, g: jax.Array, length_scale: ArrayLike | LengthRule = 1.0
) -> jax.Array:
    r"""The left-hand side of Eq. 7 for every pair: ``g_r exp(-w_r / ell) / g_r^max``.

    Args:
      w, g: ``(N, D)`` positions and velocities.
      length_scale: ``ell``, a positive number (paper 1, released code 20), or
        a rule computed from the layer itself at every call: ``"mean"`` or
        ``"median"`` (of the off-diagonal weight distances ``w_r``; 1 when they
        are all 0), or ``"sqrt_d"`` (``sqrt(D)``: distances per coordinate).
        ``"mean"`` and ``"median"`` make ``U`` invariant to the weights' scale.

    Returns:
      An ``(N, N)`` symmetric matrix in ``[0, 1]`` with a zero diagonal; all
      zeros when every gradient is equal (``g_r^max = 0``).
    """
    w, g = jnp.asarray(w), jnp.asarray(g)
    w_s, p_w = scaled_distance(w)
    g_r, _ = scaled_distance(g)  # the ratio g_r / g_r^max does not depend on g's scale
    g_max = jnp.max(g_r)
    u = jnp.exp(-reduced_distance(w_s, p_w, length_scale, w.shape[-1]))
    return g_r * u / jnp.where(g_max > 0, g_max, 1.0)


def reduced_distance(d_s: jax.Array, p: jax.Array, length_scale, dim: int) -> jax.Array:
    """``w_r / ell`` from the distances ``w_r = d_s * p`` of :func:`scaled_distance`.

    ``d_s`` is ``(..., n, n)``; a rule (``"mean"``, ``"median"``) is evaluated per
    leading index (per system). ``dim`` is the particle dimension (``"sqrt_d"``).
    """
    n = d_s.shape[-1]
    if isinstance(length_scale, str):
        if length_scale not in LENGTH_RULES:
            raise ValueError(
                f"length_scale must be a positive number or one of {LENGTH_RULES}, "
                f"got {length_scale!r}."
            )
        off = ~jnp.eye(n, dtype=bool)
        if length_scale == "mean":
            ell = jnp.sum(d_s, axis=(-2, -1), keepdims=True) / max(n * (n - 1), 1)
        elif length_scale == "median":
            vals = jnp.where(off, d_s, jnp.nan)
            ell = jnp.nanmedian(vals.reshape(vals.shape[:-2] + (n * n,)), axis=-1)[..., None, None]
        else:
            return d_s * p / jnp.sqrt(jnp.asarray(dim, d_s.dtype))
        return d_s / jnp.where(ell > 0, ell, 1.0)
    return d_s * p / jnp.asarray(length_scale, d_s.dtype)


def acceptance_matrix(
    w: jax.Array,
    g: jax.Array,
    coll_coef: ArrayLike,
    length_scale: ArrayLike | LengthRule = 1.0,
    acceptance: Acceptance = "threshold",
) -> jax.Array:
    r"""Which pairs collide: the deterministic test of Eq. 7, or the quota rule.

    ``acceptance="threshold"`` (the paper's Eq. 7):

    .. math::
       \frac{(g_r)_{ij}\, e^{-(w_r)_{ij} / \ell}}{g_r^{\max}} > 1 - c ,

    with ``w_r, g_r`` the pairwise distances of Eq. 5 and ``g_r^max`` their
    maximum over the layer. The paper has ``ell = 1``; the released code
    ``ell = 20`` (``exp(-0.05 w_r)``). When all gradients are equal
    (``g_r^max = 0``) no pair collides.

    ``acceptance="quota"`` (kinetix's scale-aware rule, see :func:`quota_accept`):
    the ``ceil(c N / 2)`` pairs with the largest left-hand side collide, so on
    average a fraction ``c`` of the particles collides once, whatever the
    layer's size, scale or training stage.

    Returns:
      A boolean ``(N, N)`` matrix, true on the strict upper triangle for the
      unordered pairs ``i < j`` that collide.
    """
    ratio = acceptance_ratio(w, g, length_scale)
    if acceptance == "quota":
        return quota_accept(ratio, coll_coef)
    if acceptance != "threshold":
        raise ValueError(f"acceptance must be 'threshold' or 'quota', got {acceptance!r}.")
    return upper_accept(ratio, coll_coef)


def upper_accept(ratio: jax.Array, coll_coef: ArrayLike) -> jax.Array:
    """``ratio > 1 - coll_coef`` on the strict upper triangle (and never where ``ratio == 0``)."""
    n = ratio.shape[-1]
    # A traced coll_coef outside [0, 1] acts as the nearest bound; NaN as 0.
    coef = jnp.clip(jnp.asarray(coll_coef, ratio.dtype), 0.0, 1.0)
    accept = (ratio > 1.0 - coef) & (ratio > 0)
    return accept & _upper(n)


def _upper(n: int) -> jax.Array:
    return jnp.arange(n)[:, None] < jnp.arange(n)[None, :]


def quota_size(coll_coef: ArrayLike, n: int) -> jax.Array:
    """``ceil(c n / 2)`` (int32): the number of pairs the quota rule lets collide."""
    coef = jnp.clip(jnp.nan_to_num(jnp.asarray(coll_coef, jnp.float32), nan=0.0), 0.0, 1.0)
    # The factor absorbs float32 rounding (0.3 * 100 / 2 = 15.000001 must give 15).
    return jnp.ceil(coef * n / 2 * (1 - 2.0**-20)).astype(jnp.int32)


def quota_accept(ratio: jax.Array, coll_coef: ArrayLike, allowed: jax.Array | None = None):
    """The ``ceil(c n / 2)`` allowed pairs with the largest ``ratio``, per system.

    Args:
      ratio: ``(..., n, n)`` symmetric scores (Eq. 7's left-hand side).
      coll_coef: ``c`` in ``[0, 1]``: the mean number of collisions per
        particle (``c = 1``: about ``n / 2`` pairs). A traced value outside
        ``[0, 1]`` acts as the nearest bound, NaN as 0.
      allowed: optional ``(..., n, n)`` mask of candidate pairs (default: the
        strict upper triangle).

    Returns:
      A boolean ``(..., n, n)`` mask on the strict upper triangle. Pairs with
      ``ratio == 0`` never collide; ties at the cut are all kept.
    """
    n = ratio.shape[-1]
    allowed = _upper(n) if allowed is None else allowed & _upper(n)
    allowed = allowed & (ratio > 0)
    k = quota_size(coll_coef, n)
    flat = jnp.where(allowed, ratio, -jnp.inf).reshape(ratio.shape[:-2] + (n * n,))
    ranked = -jnp.sort(-flat, axis=-1)
    cut = jnp.take(ranked, jnp.maximum(k - 1, 0), axis=-1)[..., None, None]
    return allowed & (ratio >= cut) & (k > 0)


def pair_normals(key: jax.Array, i: jax.Array, j: jax.Array, dim: int, dtype) -> jax.Array:
    """Standard normal vectors, one per pair ``(i[k], j[k])``, shape ``(len(i), dim)``.

    The vector of pair ``(i, j)`` depends only on ``key``, ``i`` and ``j``, not on
    how many pairs collide nor on how they are chunked, so the same pairs get the
    same directions for any ``chunk_size`` and on any number of devices. (The sum
    of a particle's pair updates is accumulated chunk by chunk, so different
    chunk sizes change its summation order: results agree to float rounding,
    a few ulp, not bitwise; measured 1.5e-7 of the largest value for chunk
    sizes 1, 7, 100 and the default on a (256, 64) float32 layer.)
    """

    def one(ii, jj):
        return jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, ii), jj), (dim,), dtype)

    return jax.vmap(one)(i, j)


def pair_directions(key: jax.Array, i: jax.Array, j: jax.Array, dim: int, dtype=jnp.float32):
    """Unit vectors ``n_ij``, uniform on the sphere ``S^{dim-1}``, one per pair (Eq. 6)."""
    z = pair_normals(key, i, j, dim, dtype)
    norm = jnp.linalg.norm(z, axis=-1, keepdims=True)
    return z / jnp.where(norm > 0, norm, 1.0)


class PairList(NamedTuple):
    """The accepted pairs ``(rows[k], cols[k])``, ``k < num_pairs``, of particle rows.

    ``rows`` and ``cols`` are padded (with pair ``(0, 0)``) to a static length
    that is a multiple of ``chunk``; only the first ``num_pairs`` are real.
    """

    rows: jax.Array
    cols: jax.Array
    num_pairs: jax.Array
    chunk: int

    @classmethod
    def from_mask(
        cls, accept: jax.Array, *, chunk_size: int | None = None, dim: int = 1
    ) -> PairList:
        """Lists the true entries of a boolean ``(..., n, n)`` acceptance mask.

        A leading batch shape is flattened: the pair ``(b, i, j)`` becomes rows
        ``b * n + i`` and ``b * n + j`` of the flattened ``(B * n, D)`` particles.
        Only the strict upper triangle should be true (each unordered pair once).
        """
        n = accept.shape[-1]
        batch = math.prod(accept.shape[:-2])
        max_pairs = max(batch * (n * (n - 1) // 2), 1)
        if chunk_size is None:
            chunk_size = max(1, min(_MAX_CHUNK_PAIRS, _DEFAULT_CHUNK_FLOATS // max(dim, 1)))
        chunk_size = static_int(chunk_size, "chunk_size")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}.")
        chunk = min(chunk_size, max_pairs)
        size = math.ceil(max_pairs / chunk) * chunk
        flat = accept.reshape(batch, n, n)
        b, i, j = jnp.nonzero(flat, size=size, fill_value=0)
        num_pairs = jnp.sum(flat, dtype=jnp.int32)
        return cls(rows=b * n + i, cols=b * n + j, num_pairs=num_pairs, chunk=chunk)

    def chunk_at(self, k: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        start = k * self.chunk
        i = jax.lax.dynamic_slice(self.rows, (start,), (self.chunk,))
        j = jax.lax.dynamic_slice(self.cols, (start,), (self.chunk,))
        valid = (start + jnp.arange(self.chunk)) < self.num_pairs
        return i, j, valid

    @property
    def num_chunks(self) -> jax.Array:
        return (self.num_pairs + self.chunk - 1) // self.chunk


def pair_exchange(
    v: jax.Array,
    pairs: PairList,
    key: jax.Array,
    *,
    s_det: float,
    s_rand: float,
    directions: Literal["unit", "per_component"] = "unit",
    num_candidates: int | None = None,
    x: jax.Array | None = None,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    r"""Momentum-conserving velocity exchange over a list of pairs (the core of KO and DSMC).

    For every listed pair ``i < j`` with ``dv = v_j - v_i``:

    .. math::
       \Delta_i \mathrel{+}= s_{det}\, dv + s_{rand} \|dv\|\, n_{ij}, \qquad
       \Delta_j \mathrel{-}= s_{det}\, dv + s_{rand} \|dv\|\, n_{ij} .

    ``s_det = s_rand = 1/2`` is the hard-sphere rule ``v_i' = v_cm + |v_r| n / 2``.
    The pairs are walked ``pairs.chunk`` at a time, so memory is
    ``O(chunk * D)`` whatever the number of pairs.

    Args:
      v: ``(M, D)`` velocities (float32 or wider).
      pairs: the colliding pairs (:class:`PairList`).
      key: directions of pair ``(i, j)`` come from ``fold_in(fold_in(split(key)[0], i), j)``.
      s_det, s_rand: coefficients above.
      directions: ``"unit"``: ``n_ij`` uniform on the unit sphere. ``"per_component"``:
        each component of ``n`` normalised over all ``num_candidates`` candidate
        pairs, as KO's released code does (the squared norm of the candidates
        that do not collide is drawn from its chi-square law).
      num_candidates: number of candidate pairs, for ``"per_component"``.
      x: optional ``(M, D)`` positions; if given, also returns
        ``(sum_j (x_j - x_i) / 2, degree)`` over each particle's pairs (for the
        released KITINet midpoint mixing).

    Returns:
      ``(delta_v, mixing)`` with ``delta_v`` of shape ``(M, D)``.
    """
    d = v.shape[1]
    dtype = v.dtype
    dir_key, chi_key = jax.random.split(key)
    if directions == "unit":
        inv_norm = None
    elif directions == "per_component":

        def sum_sq(k, acc):
            i, j, valid = pairs.chunk_at(k)
            z = pair_normals(dir_key, i, j, d, dtype)
            return acc + jnp.sum(jnp.where(valid[:, None], z * z, 0.0), axis=0)

        q = _loop_if_pairs(pairs, sum_sq, jnp.zeros((d,), dtype))
        df = (num_candidates - pairs.num_pairs).astype(dtype)
        chi2 = 2.0 * jax.random.gamma(chi_key, jnp.maximum(df, 1.0) / 2.0, (d,), dtype)
        q = q + jnp.where(df > 0, chi2, 0.0)
        inv_norm = 1.0 / jnp.sqrt(jnp.where(q > 0, q, 1.0))
    else:
        raise ValueError(f"directions must be 'unit' or 'per_component', got {directions!r}.")
    out = _exchange(
        v,
        x,
        pairs.rows,
        pairs.cols,
        pairs.num_pairs,
        dir_key,
        inv_norm,
        pairs.chunk,
        float(s_det),
        float(s_rand),
    )
    return out[0], ((out[1], out[2]) if x is not None else None)


def _loop_if_pairs(pairs: PairList, body, init):
    """``fori_loop`` over the chunks holding pairs, skipped entirely when there are none.

    The ``cond`` matters: when all candidates fit in one chunk, XLA hoists the
    (then loop-invariant) gathers and random draws out of the while loop, so
    they would run even with zero colliding pairs.
    """
    return jax.lax.cond(
        pairs.num_pairs > 0,
        lambda: jax.lax.fori_loop(0, pairs.num_chunks, body, init),
        lambda: init,
    )


def _safe_norm(dv: jax.Array) -> jax.Array:
    # The norm with a zero (not NaN) gradient at dv = 0 (padding pairs).
    sq = jnp.sum(dv * dv, axis=-1, keepdims=True)
    return jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)


def _direction(dir_key, inv_norm, i, j, d, dtype):
    if inv_norm is None:
        return pair_directions(dir_key, i, j, d, dtype)
    return pair_normals(dir_key, i, j, d, dtype) * inv_norm


def _pair_terms(vi, vj, n, valid, s_det, s_rand):
    dv = vj - vi
    return jnp.where(valid[:, None], s_det * dv + s_rand * _safe_norm(dv) * n, 0.0)


def _exchange_forward(v, x, rows, cols, num_pairs, dir_key, inv_norm, chunk, s_det, s_rand):
    m, d = v.shape
    pairs = PairList(rows, cols, num_pairs, chunk)

    def body(k, carry):
        i, j, valid = pairs.chunk_at(k)
        t = _pair_terms(
            v[i], v[j], _direction(dir_key, inv_norm, i, j, d, v.dtype), valid, s_det, s_rand
        )
        delta = carry[0].at[i].add(t).at[j].add(-t)
        if x is None:
            return (delta,)
        dx = jnp.where(valid[:, None], 0.5 * (x[j] - x[i]), 0.0)
        ones = valid.astype(v.dtype)
        return (
            delta,
            carry[1].at[i].add(dx).at[j].add(-dx),
            carry[2].at[i].add(ones).at[j].add(ones),
        )

    init = (jnp.zeros_like(v),)
    if x is not None:
        init = init + (jnp.zeros_like(x), jnp.zeros((m,), v.dtype))
    return _loop_if_pairs(pairs, body, init)


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9))
def _exchange(v, x, rows, cols, num_pairs, dir_key, inv_norm, chunk, s_det, s_rand):
    """The pair loop of :func:`pair_exchange`, with a pair-by-pair reverse pass.

    ``jax.lax.fori_loop`` with a data-dependent trip count is a while loop, which
    reverse-mode autodiff cannot go through. The custom VJP walks the same
    chunks again, holding the accepted pairs and the directions fixed (as
    autograd does in the released PyTorch code); memory stays ``O(chunk * D)``.
    """
    return _exchange_forward(v, x, rows, cols, num_pairs, dir_key, inv_norm, chunk, s_det, s_rand)


def _exchange_fwd(v, x, rows, cols, num_pairs, dir_key, inv_norm, chunk, s_det, s_rand):
    out = _exchange_forward(v, x, rows, cols, num_pairs, dir_key, inv_norm, chunk, s_det, s_rand)
    return out, (v, x, rows, cols, num_pairs, dir_key, inv_norm)


def _exchange_bwd(chunk, s_det, s_rand, res, cot):
    v, x, rows, cols, num_pairs, dir_key, inv_norm = res
    d = v.shape[1]
    pairs = PairList(rows, cols, num_pairs, chunk)
    g_delta = cot[0]
    g_acc = cot[1] if x is not None else None

    def body(k, carry):
        i, j, valid = pairs.chunk_at(k)
        n = _direction(dir_key, inv_norm, i, j, d, v.dtype)
        _, vjp = jax.vjp(lambda vi, vj: _pair_terms(vi, vj, n, valid, s_det, s_rand), v[i], v[j])
        gvi, gvj = vjp(g_delta[i] - g_delta[j])
        out = (carry[0].at[i].add(gvi).at[j].add(gvj),)
        if x is not None:
            u = jnp.where(valid[:, None], 0.5 * (g_acc[i] - g_acc[j]), 0.0)
            out = out + (carry[1].at[j].add(u).at[i].add(-u),)
        return out

    init = (jnp.zeros_like(v),) + ((jnp.zeros_like(x),) if x is not None else ())
    grads = _loop_if_pairs(pairs, body, init)
    g_x = grads[1] if x is not None else None
    g_inv = None if inv_norm is None else jnp.zeros_like(inv_norm)
    return grads[0], g_x, None, None, None, None, g_inv


_exchange.defvjp(_exchange_fwd, _exchange_bwd)


def hard_collide(
    w: jax.Array,
    g: jax.Array,
    key: jax.Array,
    coll_coef: ArrayLike = 0.1,
    *,
    length_scale: ArrayLike | LengthRule | None = None,
    rule: HardRule = "paper",
    scale: ArrayLike = 1.0,
    chunk_size: int | None = None,
    acceptance: Acceptance = "threshold",
) -> tuple[jax.Array, CollisionInfo]:
    r"""Hard (DSMC-style) collision of Algorithm 1, Eq. 5-8.

    Pairs are accepted by the deterministic test of Eq. 7, or by the quota rule
    (``acceptance="quota"``, see :func:`acceptance_matrix`). For every accepted
    pair ``i < j``
    (``rule="paper"``):

    .. math::
       (\Delta g)_{ij} = \tfrac12 (g_j - g_i) + \tfrac12 \|g_i - g_j\|\, n_{ij},
       \qquad (\Delta g)_{ji} = -(\Delta g)_{ij},
       \qquad g_i^* = g_i + \sum_{j \text{ accepted}} (\Delta g)_{ij},

    with ``n_ij`` a unit vector uniform on the sphere (``n_ji = -n_ij``). Each pair
    conserves momentum, so the layer's total gradient ``sum_i g_i`` is unchanged.
    A particle in several pairs receives the sum of its pair updates (Eq. 8).

    ``rule="released"`` reproduces the authors' ``apply_gradient_collision_v1``
    (``FengMingquan-sjtu/nanoGPT``, ``ko.py``) on the same particles:

    * the deterministic part has the opposite sign (``-(g_j - g_i)/2``: the code
      sums its ``delta_v`` over the wrong index, pushing a pair apart);
    * the scatter term is ``|g_i - g_j| n`` (no ``1/2``) where each *component*
      of ``n`` is normalised over all ``N (N-1)/2`` pairs, as the code's
      ``rand_vec / norm(rand_vec, dim=1)``. The squared norm of the pairs that do
      not collide is drawn exactly from its chi-square law, so the random
      directions never need ``O(N^2 D)`` memory;
    * the whole update is multiplied by ``scale`` (the code's ``noise_scale``;
      its ``KiOptimizer`` wrapper passes ``1e-4``);
    * ``length_scale`` defaults to 20 (the code's ``exp(-0.05 w_r)``).

    The code also takes the *columns* of the PyTorch ``(out, in)`` weight as
    particles; :func:`kinetix.ko_hard` picks that axis for ``rule="released"``.

    Args:
      w: particle positions, shape ``(N, D)``.
      g: particle velocities (gradients), shape ``(N, D)``.
      key: PRNG key for the scattering directions.
      coll_coef: ``coll_coef`` of Eq. 7; 0 means no collision, 1 lets every pair
        with ``g_r > 0`` collide (may be traced).
      length_scale: ``ell`` in ``U = exp(-w_r / ell)``: a positive number or a
        rule computed from the layer at each call (``"mean"``, ``"median"``,
        ``"sqrt_d"``, see :func:`acceptance_ratio`); default 1 (paper) or 20
        (released).
      rule: ``"paper"`` or ``"released"``, see above.
      scale: multiplies the whole collision update (1 by default).
      acceptance: ``"threshold"`` (Eq. 7, default) or ``"quota"`` (the
        ``ceil(coll_coef * N / 2)`` pairs with the largest Eq. 7 ratio collide).
      chunk_size: number of pairs processed at once; default keeps
        ``chunk_size * D <= 2**20`` and ``chunk_size <= 4096``. Memory and speed
        depend on it, and the summation order of a particle's pair updates
        (results agree to float rounding across chunk sizes, not bitwise).

    Numerics: the pairs are chosen and exchanged on ``g / p`` with ``p`` a power
    of two (:func:`pow2_scale`), and the result scaled back, so
    ``hard_collide(w, s * g) == s * hard_collide(w, g)`` exactly (same key) for
    power-of-two ``s`` and to rounding for any ``s``, for every finite scale of
    ``g`` (``1e-30`` to ``1e30`` in float32; the representable range in
    bfloat16/float16, computed in float32). Finite input gives finite output.
    If ``w`` or ``g`` holds NaN or inf, ``g`` is returned unchanged and no pair
    collides (:func:`kinetix.ko_hard` counts these in ``nonfinite_skips``).
    A traced ``coll_coef`` (not checked) outside ``[0, 1]`` acts as the nearest
    bound, NaN as 0.

    Raises:
      ValueError: ``coll_coef`` not in ``[0, 1]``, ``length_scale <= 0``,
        ``scale < 0``, NaN or inf in any of them (Python, NumPy or concrete JAX
        scalars), an unknown ``rule``, or ``chunk_size < 1``.

    Returns:
      ``(g_star, info)``: the collided gradient (same shape and dtype as ``g``)
      and a :class:`CollisionInfo`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kinetix import collision
      >>> w = jax.random.normal(jax.random.key(0), (8, 4)) * 0.01
      >>> g = jax.random.normal(jax.random.key(1), (8, 4))
      >>> g_star, info = collision.hard_collide(w, g, jax.random.key(2), 0.3)
      >>> bool(jnp.allclose(g_star.sum(0), g.sum(0), atol=1e-5))  # momentum
      True
    """
    check_hard_options(
        coll_coef, length_scale, rule, scale, chunk_size, acceptance, where="hard_collide"
    )
    if length_scale is None:
        length_scale = 1.0 if rule == "paper" else 20.0
    chunk_size = None if chunk_size is None else int(chunk_size)
    length_rule = length_scale if isinstance(length_scale, str) else None
    return _hard_collide(
        w,
        g,
        key,
        coll_coef,
        length_scale=1.0 if length_rule else length_scale,
        length_rule=length_rule,
        rule=rule,
        scale=scale,
        chunk_size=chunk_size,
        acceptance=acceptance,
    )


def check_length_scale(length_scale, *, where: str) -> None:
    """A positive finite number, or one of :data:`LENGTH_RULES` (``None`` passes)."""
    if isinstance(length_scale, str):
        if length_scale not in LENGTH_RULES:
            raise ValueError(
                f"{where}: length_scale must be a positive number or one of {LENGTH_RULES}, "
                f"got {length_scale!r}."
            )
    elif length_scale is not None:
        check_real(length_scale, "length_scale", low=0.0, low_open=True, where=where)


def check_acceptance(acceptance, *, where: str) -> None:
    if acceptance not in ("threshold", "quota"):
        raise ValueError(
            f"{where}: acceptance must be 'threshold' (Eq. 7) or 'quota', got {acceptance!r}."
        )


def check_hard_options(
    coll_coef, length_scale, rule, scale, chunk_size, acceptance="threshold", *, where: str
) -> None:
    """Validates :func:`hard_collide`'s hyper-parameters (concrete values; traced ones pass)."""
    check_real(coll_coef, "coll_coef", low=0.0, high=1.0, where=where)
    check_length_scale(length_scale, where=where)
    if rule not in ("paper", "released"):
        raise ValueError(f"{where}: rule must be 'paper' or 'released', got {rule!r}.")
    check_real(scale, "scale", low=0.0, where=where)
    if chunk_size is not None:
        check_int(chunk_size, "chunk_size", low=1, where=where)
    check_acceptance(acceptance, where=where)


@functools.partial(jax.jit, static_argnames=("rule", "chunk_size", "length_rule", "acceptance"))
def _hard_collide(
    w, g, key, coll_coef, *, length_scale, length_rule, rule, scale, chunk_size, acceptance
):
    w, g = jnp.asarray(w), jnp.asarray(g)
    _check_pair(w, g, "hard_collide")
    n, d = g.shape
    dtype = _compute_dtype(g.dtype)
    num_candidates = n * (n - 1) // 2
    if num_candidates == 0 or g.size == 0:
        return g, _info(jnp.zeros([], jnp.int32), n)

    g32 = g.astype(dtype)
    # The exchange is homogeneous of degree 1 in g: run it on g / p, p a power of two.
    p = pow2_scale(g32)
    gs = g32 / p
    ell = length_rule or length_scale
    accept = acceptance_matrix(w, gs, coll_coef, ell, acceptance) & all_finite(w, g)
    pairs = PairList.from_mask(accept, chunk_size=chunk_size, dim=d)
    if rule == "paper":
        delta, _ = pair_exchange(gs, pairs, key, s_det=0.5, s_rand=0.5)
    else:
        delta, _ = pair_exchange(
            gs,
            pairs,
            key,
            s_det=-0.5,
            s_rand=-1.0,
            directions="per_component",
            num_candidates=num_candidates,
        )
    g_star = (gs + jnp.asarray(scale, dtype) * delta) * p
    return g_star.astype(g.dtype), _info(pairs.num_pairs, n)
