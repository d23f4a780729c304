"""KO, the kinetics-inspired optimizer, as optax gradient transformations.

:func:`ko_soft` and :func:`ko_hard` collide the gradients of every weight
matrix before a base optimizer steps::

    tx = optax.chain(kinetix.ko_hard(coll_coef=0.1, key=jax.random.key(0)), optax.adamw(1e-3))

Both need the current parameters (the particles' positions): ``tx.update(grads,
state, params)``. The collision math is in :mod:`kinetix.collision`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from kinetix import collision
from kinetix.validation import check_int, check_real

NO_PARAMS_MSG = (
    "KO collisions need the current parameters (the particles' positions): call "
    "tx.update(grads, state, params). nnx.Optimizer and optax.chain pass them for you."
)

MaskOrFn = Any | Callable[[Any], Any] | None


class KOState(NamedTuple):
    """State of :func:`ko_soft` and :func:`ko_hard`.

    Attributes:
      count: number of updates done so far; step ``t`` uses the key
        ``fold_in(key, t)``. ``shape=(), dtype=int32``.
      key: the typed PRNG key given at construction; never changes, so a
        restored state reproduces the next step exactly.
      collision_rate: a tree like the parameters with, for each leaf, the
        fraction of its particle pairs that collided at the last step (float32
        scalar; 0 for leaves that do not collide).
      nonfinite_skips: number of leaf updates passed through uncollided because
        the gradient or weight held NaN or inf, or because the collided
        gradient did although both were finite (only possible with a traced
        hyper-parameter such as a scheduled ``coll_coef`` of inf).
        ``shape=(), dtype=int32``.
    """

    count: jax.Array
    key: jax.Array
    collision_rate: Any
    nonfinite_skips: jax.Array


_SEED_RANGE = (-(2**63), 2**63)


def canonicalize_key(key: jax.Array | int) -> jax.Array:
    """Returns a typed PRNG key from an int seed, a typed key or a raw ``uint32[2]`` key.

    Raises:
      TypeError: anything else, including a bool and an int seed outside
        ``[-2**63, 2**63)`` (what ``jax.random.key`` accepts).
      ValueError: an array of typed keys instead of a single key.
    """
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"key must be a single PRNG key, got shape {key.shape}.")
        return key
    if isinstance(key, bool | np.bool_):
        raise TypeError(f"key must be an int seed or a jax.random.key(...), got the bool {key}.")
    if isinstance(key, int | np.integer) or (
        hasattr(key, "dtype") and jnp.issubdtype(key.dtype, jnp.integer) and jnp.shape(key) == ()
    ):
        if not isinstance(key, jax.core.Tracer) and not (
            _SEED_RANGE[0] <= int(key) < _SEED_RANGE[1]
        ):
            raise TypeError(
                f"key: the int seed {int(key)} does not fit in 64 bits; pass a seed in "
                "[-2**63, 2**63) or a jax.random.key(...)."
            )
        return jax.random.key(key)
    if hasattr(key, "dtype") and key.dtype == jnp.uint32 and jnp.shape(key) == (2,):
        return jax.random.wrap_key_data(key)
    raise TypeError(
        f"key must be an int seed or a jax.random.key(...), got {type(key).__name__} "
        f"{getattr(key, 'dtype', '')}{getattr(key, 'shape', '')}."
    )


def _check_mask(mask) -> None:
    if isinstance(mask, bool | jax.Array) and jnp.ndim(mask) == 0:
        raise TypeError(
            f"mask={mask!r} is a single bool. Pass a tree of bools like the parameters, a "
            "callable params -> tree of bools (e.g. kinetix.path_mask('classifier')), or None "
            "for every leaf. Under optax.inject_hyperparams a callable mask must be listed in "
            "static_args=('mask',), or it is mistaken for a schedule."
        )


def _explicit_spec(x):
    """The PartitionSpec of ``x`` if it is sharded over Explicit mesh axes, else None."""
    sharding = getattr(jax.typeof(x), "sharding", None)
    spec = getattr(sharding, "spec", None)
    if spec is None or all(s is None for s in spec):
        return None
    mesh = sharding.mesh
    explicit = jax.sharding.AxisType.Explicit
    names = [n for s in spec if s is not None for n in (s if isinstance(s, tuple) else (s,))]
    axis_type = dict(zip(mesh.axis_names, mesh.axis_types, strict=True))
    if any(axis_type[n] == explicit for n in names):
        return spec
    return None


def _replicate(x):
    # Collisions couple every particle of a layer: under sharding-in-types
    # (Explicit mesh axes) gather the leaf first; jit's Auto mode does this itself.
    if _explicit_spec(x) is None:
        return x
    return jax.sharding.reshard(x, jax.sharding.PartitionSpec())


def _collides(x) -> bool:
    # Zero-size leaves have no particles (or particles in R^0): they pass through.
    return x.ndim >= 2 and x.size > 0 and jnp.issubdtype(x.dtype, jnp.floating)


def _ko(
    name: str,
    collide: Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, collision.CollisionInfo]],
    axis: int | str,
    key: jax.Array | int,
    noise_scale: ArrayLike | None,
) -> optax.GradientTransformationExtraArgs:
    """Maps a per-leaf collision over a tree of gradients (shared by ko_soft/ko_hard)."""

    def init_fn(params):
        rates = jax.tree.map(lambda _: jnp.zeros([], jnp.float32), params)
        return KOState(
            count=jnp.zeros([], jnp.int32),
            key=canonicalize_key(key),
            collision_rate=rates,
            nonfinite_skips=jnp.zeros([], jnp.int32),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(f"{name}: {NO_PARAMS_MSG}")
        u_leaves, treedef = jax.tree.flatten(updates)
        p_leaves, p_treedef = jax.tree.flatten(params)
        if treedef != p_treedef:
            raise ValueError(
                f"{name}: the gradient and parameter trees differ.\n  gradients: {treedef}\n"
                f"  params:    {p_treedef}"
            )
        step_key = jax.random.fold_in(state.key, state.count)
        new_leaves, rates, skips = [], [], jnp.zeros([], jnp.int32)
        for idx, (g, w) in enumerate(zip(u_leaves, p_leaves, strict=True)):
            if g.shape != w.shape:
                raise ValueError(
                    f"{name}: leaf {idx} has gradient shape {g.shape} but parameter shape {w.shape}."
                )
            if not _collides(g):
                new_leaves.append(g)
                rates.append(jnp.zeros([], jnp.float32))
                continue
            leaf_key = jax.random.fold_in(step_key, idx)
            coll_key, noise_key = jax.random.split(leaf_key)
            spec = _explicit_spec(g)
            wp = collision.as_particles(_replicate(w), axis)
            gp = collision.as_particles(_replicate(g), axis)
            g_star, info = collide(wp, gp, coll_key)
            if noise_scale is not None:
                noise = jax.random.normal(noise_key, gp.shape, collision._compute_dtype(g.dtype))
                g_star = (g_star + jnp.asarray(noise_scale, noise.dtype) * noise).astype(g.dtype)
            # Non-finite input, or non-finite output from finite input (only
            # possible with a traced hyper-parameter such as a scheduled
            # coll_coef of inf): pass the leaf through and count it.
            finite = collision.all_finite(gp, wp, g_star)
            g_new = collision.from_particles(jnp.where(finite, g_star, gp), g.shape, axis)
            if spec is not None:
                g_new = jax.sharding.reshard(g_new, spec)
            new_leaves.append(g_new)
            rates.append(jnp.where(finite, info.rate, 0.0))
            skips = skips + (~finite).astype(jnp.int32)
        new_state = KOState(
            count=optax.safe_increment(state.count),
            key=state.key,
            collision_rate=jax.tree.unflatten(treedef, rates),
            nonfinite_skips=state.nonfinite_skips + skips,
        )
        return jax.tree.unflatten(treedef, new_leaves), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _maybe_masked(tx, mask):
    if mask is None:
        return tx
    _check_mask(mask)
    return optax.masked(tx, mask)


def ko_soft(
    coll_coef: ArrayLike = 0.1,
    *,
    key: jax.Array | int = 0,
    mask: MaskOrFn = None,
    axis: int | None = None,
    threshold: ArrayLike | None = None,
    include_self: bool = True,
    noise_scale: ArrayLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""KO soft collision (Algorithm 2) as an optax transformation.

    Each weight leaf with at least 2 dimensions is read as particles (one per
    index of ``axis``, see :func:`kinetix.collision.as_particles`), and its
    gradient becomes

    .. math:: g_i^* = g_i - c \sum_j \cos(w_i, w_j) \cos(g_i, g_j)\, g_j .

    Leaves with fewer than 2 dimensions (biases, scales) and non-float leaves
    pass through unchanged. Chain it *before* the base optimizer.

    Args:
      coll_coef: ``c`` (>= 0, finite). May be scheduled with
        ``optax.inject_hyperparams``; a scheduled (traced) value is not checked:
        a negative one reverses the collision, and a leaf whose collided
        gradient is not finite is passed through and counted in
        ``nonfinite_skips``.
      key: PRNG key or int seed; only used when ``noise_scale`` is set.
      mask: a tree of bools like the parameters, or a callable returning one
        (as in ``optax.masked``); only ``True`` leaves collide. The paper
        collides the classifier only: ``mask=kinetix.path_mask("classifier")``.
      axis: particle axis of each leaf; default ``-1`` (the output units of a
        Flax kernel, the rows of a PyTorch weight, as in the paper and code).
      threshold: zero couplings ``S_ij < threshold``. ``None`` (paper); the
        released code uses ``0.0``.
      include_self: keep ``S_ii`` (paper and the code's default ``"wg"``).
      noise_scale: add ``N(0, noise_scale^2)`` to the collided gradient, as the
        released code does with ``1e-4``. ``None`` (paper): no noise.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`KOState`.

    Raises:
      ValueError: ``coll_coef < 0``, ``noise_scale < 0``, NaN or inf in
        ``coll_coef``, ``threshold`` or ``noise_scale`` (Python, NumPy or
        concrete JAX scalars alike). TypeError: a bad ``key`` (see
        :func:`canonicalize_key`), ``axis`` or ``mask``.

    Example:
      >>> import jax, jax.numpy as jnp, optax, kinetix
      >>> params = {"w": jnp.ones((3, 4)) + jnp.arange(12.).reshape(3, 4), "b": jnp.zeros(4)}
      >>> tx = optax.chain(kinetix.ko_soft(0.1), optax.sgd(0.1))
      >>> state = tx.init(params)
      >>> grads = jax.tree.map(jnp.ones_like, params)
      >>> updates, state = tx.update(grads, state, params)
      >>> updates["w"].shape
      (3, 4)

    References:
      Feng et al., `KO: Kinetics-inspired Neural Optimizer with PDE Simulation
      Approaches <https://arxiv.org/abs/2505.14777>`_, 2025.
    """
    where = "ko_soft"
    check_real(coll_coef, "coll_coef", low=0.0, where=where)
    if threshold is not None:
        check_real(threshold, "threshold", where=where)
    if noise_scale is not None:
        check_real(noise_scale, "noise_scale", low=0.0, where=where)
    axis = -1 if axis is None else check_int(axis, "axis", where=where)
    canonicalize_key(key)

    def collide(w, g, key):
        del key
        return collision.soft_collide(
            w, g, coll_coef, threshold=threshold, include_self=include_self
        )

    return _maybe_masked(_ko("ko_soft", collide, axis, key, noise_scale), mask)


def ko_hard(
    coll_coef: ArrayLike = 0.1,
    *,
    key: jax.Array | int = 0,
    mask: MaskOrFn = None,
    axis: int | str | None = None,
    rule: collision.HardRule | None = None,
    length_scale: ArrayLike | collision.LengthRule | None = None,
    scale: ArrayLike = 1.0,
    chunk_size: int | None = None,
    acceptance: collision.Acceptance | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""KO hard collision (Algorithm 1, Eq. 5-8) as an optax transformation.

    Every pair of particles ``(i, j)`` of a layer is scored by the left-hand
    side of Eq. 7, ``r_ij = |g_i - g_j| exp(-|w_i - w_j| / ell) / max_{kl} |g_k - g_l|``.
    A colliding pair exchanges momentum like hard spheres: each moves to the
    pair's centre-of-mass velocity plus a random unit direction times half the
    relative speed (Eq. 6), so the layer's total gradient is conserved. See
    :func:`kinetix.collision.hard_collide`.

    Which pairs collide:

    * default (``rule=None``): the **quota rule**. The ``ceil(coll_coef * N / 2)``
      pairs with the largest ``r_ij`` collide, with ``ell`` the mean pairwise
      weight distance of the layer at that step (``length_scale="mean"``). So
      ``coll_coef`` is the mean number of collisions per particle per step
      (0.1: about 10 % of the units), on every layer, at every scale, all
      through training. This departs from the paper, whose fixed threshold
      (below) collides no pair at all on typical layers (measured in
      ``results/collision_rates``).
    * ``rule="paper"``: Eq. 7 as written, ``r_ij > 1 - coll_coef`` with
      ``ell = 1``; ``rule="released"``: the authors' code (``ell = 20``, its
      update rule, particles on axis 0). Both reproduce the papers exactly.

    Step ``t`` draws its directions from ``fold_in(key, t)`` (then folded with the
    leaf index and each pair's indices): same key, same updates, on one device or
    many, and after restoring a checkpoint.

    Args:
      coll_coef: in ``[0, 1]``; 0 disables collisions. Quota rule: mean
        collisions per particle per step; threshold rule: ``1 - threshold``.
        May be scheduled with ``optax.inject_hyperparams``; a scheduled
        (traced) value is not checked and acts as the nearest bound when
        outside ``[0, 1]`` (NaN as 0).
      key: PRNG key or int seed (pass your own; the default is seed 0).
      mask: a tree of bools or a callable, as in ``optax.masked``.
      axis: particle axis, or ``"inputs"``; default ``-1`` (output units)
        except ``"inputs"`` for ``rule="released"``: the code's particles are
        the columns of the PyTorch weight, the input units (axis 0 of a Flax
        ``(in, out)`` kernel; every ``(kh, kw, in)`` position of a conv kernel,
        see :func:`kinetix.collision.as_particles`).
      rule: ``None`` (the paper's update of Eq. 6-8 with the quota rule),
        ``"paper"`` (Eq. 6-8 with Eq. 7's threshold) or ``"released"`` (the
        authors' code, with its reversed deterministic term and near-zero
        scatter term).
      length_scale: ``ell``: a positive number or ``"mean"``, ``"median"``,
        ``"sqrt_d"`` (computed from the layer at each step); default
        ``"mean"`` (quota rule), 1 (paper) or 20 (released).
      acceptance: ``"quota"`` or ``"threshold"``; default ``"quota"`` when
        ``rule`` is None, else ``"threshold"`` (overrides the rule's choice).
      scale: multiplies the collision update; the code's ``KiOptimizer`` uses
        ``1e-4`` with ``rule="released"``.
      chunk_size: pairs processed at once (memory/speed only).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`KOState`;
      ``state.collision_rate`` holds each leaf's fraction of colliding pairs.

    Raises:
      ValueError: ``coll_coef`` not in ``[0, 1]``, ``length_scale <= 0``,
        ``scale < 0``, NaN or inf in any of them (Python, NumPy or concrete JAX
        scalars alike), an unknown ``rule``, ``chunk_size < 1``. TypeError: a
        bad ``key`` (see :func:`canonicalize_key`), ``axis`` or ``mask``.

    Example:
      >>> import jax, jax.numpy as jnp, optax, kinetix
      >>> params = {"w": jax.random.normal(jax.random.key(0), (4, 6)) * 0.1}
      >>> tx = optax.chain(kinetix.ko_hard(0.3, key=jax.random.key(1)), optax.adamw(1e-3))
      >>> state = tx.init(params)
      >>> grads = {"w": jax.random.normal(jax.random.key(2), (4, 6))}
      >>> updates, state = jax.jit(tx.update)(grads, state, params)
      >>> updates["w"].shape
      (4, 6)
    """
    if acceptance is None:
        acceptance = "quota" if rule is None else "threshold"
    if length_scale is None and rule is None:
        length_scale = "mean"
    update_rule = "paper" if rule is None else rule
    collision.check_hard_options(
        coll_coef, length_scale, update_rule, scale, chunk_size, acceptance, where="ko_hard"
    )
    if axis is None:
        axis = "inputs" if rule == "released" else -1
    if axis != "inputs":
        axis = check_int(axis, "axis", where="ko_hard")
    canonicalize_key(key)

    def collide(w, g, key):
        return collision.hard_collide(
            w,
            g,
            key,
            coll_coef,
            length_scale=length_scale,
            rule=update_rule,
            scale=scale,
            chunk_size=chunk_size,
            acceptance=acceptance,
        )

    return _maybe_masked(_ko("ko_hard", collide, axis, key, None), mask)
