"""One Direct Simulation Monte Carlo (DSMC) collision step on batches of particle systems.

KITINet (Feng, Fu, Zhang, Jiang, Huang, Yan, arXiv:2505.17919) replaces a
residual connection ``x + F(x)`` by one step of a particle simulation: the skip
value ``x`` is the particles' position, the branch output ``F(x)`` their velocity,
particles collide, then drift ``x + v * dt``. :func:`collide` is that step as a
pure function on ``(..., n, d)`` arrays: ``n`` particles in ``R^d`` per system,
any leading batch shape; pairs never cross systems.

It shares its pair machinery with KO's hard collision
(:mod:`kinetix.collision`): the acceptance test is KO's Eq. 7 per system and the
accepted pairs are walked in chunks, so memory is ``O(B n^2)`` for the
acceptance matrices plus ``O(B n d)`` for the particles plus ``O(chunk * d)`` for
the colliding pairs; no ``(B, d, n, n)`` tensor is built.
"""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from kinetix import collision
from kinetix.validation import check_int, check_real

DSMCRule = Literal["hard_sphere", "released"]
Pairing = Literal["all", "matching"]


class DSMCInfo(NamedTuple):
    """What one DSMC step did.

    Attributes:
      num_pairs: colliding pairs over the whole batch (int32 scalar).
      rate: ``num_pairs`` over the candidate pairs, ``B * n (n - 1) / 2`` (float32).
    """

    num_pairs: jax.Array
    rate: jax.Array


def acceptance(
    x: jax.Array,
    v: jax.Array,
    coll_coef: ArrayLike,
    length_scale: ArrayLike | collision.LengthRule = 1.0,
    pairing: Pairing = "all",
    acceptance: collision.Acceptance = "threshold",
) -> jax.Array:
    r"""Which pairs collide, per system.

    ``acceptance="threshold"`` is KITINet's released rule (= KO's Eq. 7):

    .. math:: \frac{|v_i - v_j|}{\max_{kl} |v_k - v_l|}\, e^{-|x_i - x_j| / \ell} > 1 - c ,

    with the maximum taken within each system. ``acceptance="quota"`` ranks the
    pairs by the same left-hand side and lets the best ``ceil(c n / 2)``
    collide (:func:`kinetix.collision.quota_accept`), so a fraction ``c`` of the
    particles collides (once, under ``"matching"``) whatever the features' scale.

    ``pairing="all"`` keeps every accepted pair (the released code);
    ``pairing="matching"`` keeps a matching, so each particle collides at most
    once: pairs are taken greedily by decreasing ratio (see
    :func:`greedy_matching`); with the quota rule the matching is built first
    and its best ``ceil(c n / 2)`` pairs collide.

    Returns:
      A boolean ``(..., n, n)`` mask, true on the strict upper triangle.
    """
    batch = x.shape[:-2]
    # Which pairs collide is a discrete choice: no gradient flows through it.
    xf = jax.lax.stop_gradient(x).reshape((-1,) + x.shape[-2:])
    vf = jax.lax.stop_gradient(v).reshape((-1,) + v.shape[-2:])
    ratio_fn = functools.partial(collision.acceptance_ratio, length_scale=length_scale)
    ratio = jax.vmap(ratio_fn)(xf, vf)
    if pairing not in ("all", "matching"):
        raise ValueError(f"pairing must be 'all' or 'matching', got {pairing!r}.")
    if acceptance == "threshold":
        acc = collision.upper_accept(ratio, coll_coef)
        if pairing == "matching":
            acc = greedy_matching(ratio, acc | jnp.swapaxes(acc, -1, -2))
    elif acceptance == "quota":
        allowed = None
        if pairing == "matching":
            allowed = greedy_matching(ratio, ratio > 0)
        acc = collision.quota_accept(ratio, coll_coef, allowed)
    else:
        raise ValueError(f"acceptance must be 'threshold' or 'quota', got {acceptance!r}.")
    # A system holding NaN or inf does not collide (it only drifts).
    finite = jnp.all(jnp.isfinite(xf), axis=(-2, -1)) & jnp.all(jnp.isfinite(vf), axis=(-2, -1))
    acc = acc & finite[:, None, None]
    return acc.reshape(batch + acc.shape[-2:])


def greedy_matching(score: jax.Array, allowed: jax.Array) -> jax.Array:
    """A maximal matching of the ``allowed`` pairs, preferring high ``score``.

    Each round, every unmatched particle points at its best allowed unmatched
    partner (highest score, lowest index on ties); mutual pointers are matched.
    The best remaining pair is always mutual, so every round matches at least
    one pair and the loop ends after at most ``n / 2`` rounds; the result equals
    the sequential greedy matching by decreasing score when scores are distinct.

    Args:
      score: ``(S, n, n)`` symmetric scores.
      allowed: ``(S, n, n)`` symmetric boolean mask of candidate pairs.

    Returns:
      ``(S, n, n)`` boolean, true on the strict upper triangle for matched pairs.
    """
    s, n, _ = score.shape
    idx = jnp.arange(n)

    def body(state):
        matched, partner, _ = state
        avail = allowed & ~matched[:, :, None] & ~matched[:, None, :]
        best = jnp.argmax(jnp.where(avail, score, -jnp.inf), axis=-1)
        has = jnp.any(avail, axis=-1)
        mutual = has & (jnp.take_along_axis(best, best, axis=-1) == idx)
        return matched | mutual, jnp.where(mutual, best, partner), jnp.any(mutual)

    init = (jnp.zeros((s, n), bool), jnp.full((s, n), -1), jnp.array(True))
    _, partner, _ = jax.lax.while_loop(lambda st: st[2], body, init)
    pair = partner[:, :, None] == idx[None, None, :]
    return pair & (idx[:, None] < idx[None, :])


def collide(
    x: jax.Array,
    v: jax.Array,
    key: jax.Array,
    *,
    coll_coef: ArrayLike = 0.5,
    dt: ArrayLike = 1.0,
    rule: DSMCRule = "hard_sphere",
    length_scale: ArrayLike | collision.LengthRule | None = None,
    pairing: Pairing | None = None,
    chunk_size: int | None = None,
    acceptance: collision.Acceptance = "threshold",
) -> tuple[jax.Array, jax.Array, DSMCInfo]:
    r"""One DSMC collision-and-drift step: returns ``(x', v', info)`` with ``x' = x_mix + v' dt``.

    Pairs ``i < j`` of the same system collide when :func:`acceptance` holds
    (deterministic threshold, as in the released code). Two update rules:

    * ``rule="hard_sphere"`` (textbook): ``v_i' = v_cm + |v_r| n_ij / 2``,
      ``v_j' = v_cm - |v_r| n_ij / 2`` with ``n_ij`` uniform on the unit sphere.
      Each pair conserves its momentum and kinetic energy. By default
      (``pairing="matching"``) each particle collides at most once per step, as
      in textbook DSMC, so every system conserves momentum and energy exactly.
      With ``pairing="all"`` a particle in several pairs receives the sum of its
      pair updates (as KO's Eq. 8): momentum is still conserved, energy is not,
      and with many partners the pull to the centre of mass overshoots.
      Positions are not changed before the drift.
    * ``rule="released"``: the authors' ``KINET_DSMC`` ("fyf" variant):
      ``v_j' = v_j + (v_j - v_i) / 2 + |v_r| n`` per pair (its sum over the wrong
      index pushes pairs apart; momentum is conserved, energy is not), and
      colliding particles' positions are first moved to the mean of their pair
      midpoints, ``x_i' = (x_i + sum_j m_ij (x_i + x_j) / 2) / (1 + sum_j m_ij)``.
      The code keeps nearly fixed random directions in a buffer; here they are
      drawn fresh from ``key`` at every call.

    Args:
      x: positions, shape ``(..., n, d)``.
      v: velocities, same shape.
      key: PRNG key for the scattering directions.
      coll_coef: in ``[0, 1]``; 0 gives exactly ``x + v * dt`` arithmetic-wise
        (no pair accepted). KITINet's code uses 0.5 (ResNet) and 0.9 (FNO).
      dt: time step of the drift.
      rule: ``"hard_sphere"`` or ``"released"``.
      length_scale: ``ell`` in ``exp(-|x_i - x_j| / ell)``: a positive number
        (1 in the code) or a rule computed per system at each call
        (``"mean"``, ``"median"``, ``"sqrt_d"``, see
        :func:`kinetix.collision.acceptance_ratio`). Default: 1 for
        ``acceptance="threshold"``, ``"mean"`` for ``"quota"``.
      acceptance: ``"threshold"`` (the released rule, default) or ``"quota"``
        (see :func:`acceptance`).
      pairing: ``"matching"`` (default for ``"hard_sphere"``) or ``"all"``
        (default for ``"released"``, as the code); see :func:`acceptance`.
      chunk_size: pairs processed at once (memory/speed only).

    Returns:
      ``(x_new, v_new, info)``; ``x_new`` and ``v_new`` have the dtype of ``x``
      and ``v``.

    Numerics: each system's velocities are exchanged in units of a power of two
    (:func:`kinetix.collision.pow2_scale`) and scaled back, so
    ``collide(x, s * v)`` collides the same pairs and returns ``s * v'`` for any
    finite scale (exactly for power-of-two ``s``); distances never overflow or
    underflow. A system holding NaN or inf does not collide; it drifts,
    ``x + v dt``, and its NaN stays in that system. ``x + v dt`` itself can
    overflow when its true value is beyond the dtype's range. A traced
    ``coll_coef`` (not checked) outside ``[0, 1]`` acts as the nearest bound.

    Raises:
      ValueError: ``coll_coef`` not in ``[0, 1]``, NaN/inf ``dt``,
        ``length_scale <= 0`` or not finite (Python, NumPy or concrete JAX
        scalars), an unknown ``rule``/``pairing``, ``chunk_size < 1``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kinetix import dsmc
      >>> x = jax.random.normal(jax.random.key(0), (2, 8, 3)) * 0.1
      >>> v = jax.random.normal(jax.random.key(1), (2, 8, 3))
      >>> x2, v2, info = dsmc.collide(x, v, jax.random.key(2), coll_coef=0.5)
      >>> bool(jnp.allclose(v2.sum(-2), v.sum(-2), atol=1e-5))  # momentum per system
      True
    """
    where = "dsmc.collide"
    check_real(coll_coef, "coll_coef", low=0.0, high=1.0, where=where)
    check_real(dt, "dt", where=where)
    collision.check_length_scale(length_scale, where=where)
    collision.check_acceptance(acceptance, where=where)
    if length_scale is None:
        length_scale = 1.0 if acceptance == "threshold" else "mean"
    if pairing is not None and pairing not in ("all", "matching"):
        raise ValueError(f"{where}: pairing must be 'all' or 'matching', got {pairing!r}.")
    if chunk_size is not None:
        chunk_size = check_int(chunk_size, "chunk_size", low=1, where=where)
    return _collide(
        x,
        v,
        key,
        coll_coef=coll_coef,
        dt=dt,
        rule=rule,
        length_scale=1.0 if isinstance(length_scale, str) else length_scale,
        length_rule=length_scale if isinstance(length_scale, str) else None,
        pairing=pairing,
        chunk_size=chunk_size,
        accept_rule=acceptance,
    )


@functools.partial(
    jax.jit, static_argnames=("rule", "pairing", "chunk_size", "length_rule", "accept_rule")
)
def _collide(
    x, v, key, *, coll_coef, dt, rule, length_scale, length_rule, pairing, chunk_size, accept_rule
):
    x, v = jnp.asarray(x), jnp.asarray(v)
    if x.shape != v.shape or x.ndim < 2:
        raise ValueError(
            f"collide: x and v must have the same shape (..., n, d); got {x.shape=} {v.shape=}."
        )
    for arr, what in ((x, "x"), (v, "v")):
        if not jnp.issubdtype(arr.dtype, jnp.floating):
            raise TypeError(f"collide: {what} must be floating point, got {arr.dtype}.")
    if rule not in ("hard_sphere", "released"):
        raise ValueError(f"collide: rule must be 'hard_sphere' or 'released', got {rule!r}.")
    n, d = x.shape[-2:]
    dtype = collision._compute_dtype(jnp.result_type(x.dtype, v.dtype))
    batch = x.shape[:-2]
    candidates = max(math.prod(batch) * (n * (n - 1) // 2), 1)
    dt = jnp.asarray(dt, dtype)
    if n < 2 or x.size == 0:
        x_new = x.astype(dtype) + v.astype(dtype) * dt
        zero = jnp.zeros([], jnp.int32)
        return x_new.astype(x.dtype), v, DSMCInfo(zero, jnp.zeros([], jnp.float32))

    if pairing is None:
        pairing = "matching" if rule == "hard_sphere" else "all"
    acc = acceptance(x, v, coll_coef, length_rule or length_scale, pairing, accept_rule)
    pairs = collision.PairList.from_mask(acc, chunk_size=chunk_size, dim=d)
    xf = x.reshape(-1, d).astype(dtype)
    vf = v.reshape(-1, d).astype(dtype)
    # The exchange is homogeneous of degree 1 in v and pairs never cross
    # systems: run it on v / p, p a power of two per system (no overflow or
    # underflow in |v_i - v_j| at any finite scale; exact scale covariance).
    p = collision.pow2_scale(v.reshape((-1, n * d)).astype(dtype), axis=-1)
    p = jnp.repeat(p, n, axis=0)
    vs = vf / p
    if rule == "hard_sphere":
        dv, _ = collision.pair_exchange(vs, pairs, key, s_det=0.5, s_rand=0.5)
        x_mix = xf
    else:
        dv, (dx, degree) = collision.pair_exchange(vs, pairs, key, s_det=-0.5, s_rand=-1.0, x=xf)
        x_mix = xf + dx / (1.0 + degree)[:, None]
    v_new = (vs + dv) * p
    x_new = x_mix + v_new * dt
    info = DSMCInfo(
        num_pairs=pairs.num_pairs, rate=pairs.num_pairs.astype(jnp.float32) / candidates
    )
    return x_new.reshape(x.shape).astype(x.dtype), v_new.reshape(v.shape).astype(v.dtype), info
