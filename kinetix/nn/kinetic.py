"""KITINet's kinetic residual connection as a Flax NNX module.

``KineticResidual()(x, v)`` replaces ``x + v``: the skip value ``x`` is the
particles' position, the branch output ``v`` their velocity; in training the
particles collide (one DSMC step, :func:`kinetix.dsmc.collide`) before the drift
``x + v * dt``. In eval mode, or without collision randomness, it is exactly
``x + v * dt``, so inference costs nothing extra.
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from kinetix import collision, dsmc
from kinetix.masks import leaf_paths
from kinetix.validation import check_int, check_real

Layout = Literal["spatial", "token"]


def check_options(
    *, residual: str | None = None, coll_coef: float | None = None, rule: str | None = None
):
    """Validates the options shared by every model with kinetic residuals (clear ``ValueError``)."""
    if residual is not None and residual not in ("plain", "kinetic"):
        raise ValueError(f"residual must be 'plain' or 'kinetic', got {residual!r}.")
    if rule is not None and rule not in ("hard_sphere", "released"):
        raise ValueError(f"rule must be 'hard_sphere' or 'released', got {rule!r}.")
    if coll_coef is not None:
        check_real(coll_coef, "coll_coef", low=0.0, high=1.0)


class CollisionRate(nnx.Variable):
    """The fraction of candidate pairs that collided at the last training call."""


def to_particles(
    x: jax.Array, layout: Layout, n_divide: int, particle_dim: int | None
) -> jax.Array:
    """Features -> ``(systems, n, d)`` particles ("divisional particle representation").

    * ``"spatial"``: ``x`` is ``(B, *spatial, C)`` (channels last). The ``N``
      spatial positions are split into ``n = N / n_divide`` particles; particle
      ``k`` holds the ``C`` channels of the positions ``k + m n`` for
      ``m < n_divide`` (the memory layout of the released code's
      ``x.reshape(B, C * n_divide, n)`` on a ``(B, C, H, W)`` tensor), so it lives
      in ``R^{C * n_divide}``. One system per sample.
    * ``"token"``: ``x`` is ``(B, T, D)``; each token's vector is split into
      ``n = D / particle_dim`` particles of dimension ``particle_dim``, particle
      ``j`` holding dims ``c n + j`` (the released ``kinet.py`` layout). One
      system per token.
    """
    if layout == "spatial":
        if x.ndim < 3:
            raise ValueError(f"spatial layout needs (B, *spatial, C) features, got {x.shape}.")
        b, c = x.shape[0], x.shape[-1]
        npos = math.prod(x.shape[1:-1])
        if npos % n_divide:
            raise ValueError(
                f"n_divide={n_divide} must divide the {npos} spatial positions of {x.shape}."
            )
        n = npos // n_divide
        p = x.reshape(b, n_divide, n, c).transpose(0, 2, 1, 3)
        return p.reshape(b, n, n_divide * c)
    if layout == "token":
        if x.ndim != 3:
            raise ValueError(f"token layout needs (B, T, D) features, got {x.shape}.")
        b, t, d = x.shape
        if particle_dim is None or d % particle_dim:
            raise ValueError(
                f"token layout: particle_dim={particle_dim} must divide the feature size {d}."
            )
        n = d // particle_dim
        return x.reshape(b * t, particle_dim, n).transpose(0, 2, 1)
    raise ValueError(f"layout must be 'spatial' or 'token', got {layout!r}.")


def from_particles(
    p: jax.Array, shape: tuple[int, ...], layout: Layout, n_divide: int, particle_dim: int | None
):
    """Inverse of :func:`to_particles`."""
    if layout == "spatial":
        b, c = shape[0], shape[-1]
        n = p.shape[1]
        return p.reshape(b, n, n_divide, c).transpose(0, 2, 1, 3).reshape(shape)
    b, t, d = shape
    return p.transpose(0, 2, 1).reshape(shape)


class KineticResidual(nnx.Module):
    """A residual connection with one DSMC collision step (KITINet).

    ``y = KineticResidual(...)(x, v, rngs=rngs)`` where ``x`` is the skip value
    (position) and ``v`` the residual branch output (velocity). In training with
    ``rngs`` given it returns ``dsmc.collide(x, v)``'s new positions; in eval
    mode (``model.eval()``, ``deterministic=True``) or with ``rngs=None`` it
    returns exactly ``x + v * dt``.

    The last training call's collision rate is kept in ``self.collision_rate``
    (a :class:`CollisionRate` variable: ``nnx.state(model, CollisionRate)``).

    Args:
      layout: ``"spatial"`` for ``(B, *spatial, C)`` conv/FNO features,
        ``"token"`` for ``(B, T, D)`` token features (see :func:`to_particles`).
      n_divide: spatial positions per particle (spatial layout). The released
        CIFAR ResNet-18 uses 16, 8, 4, 2 in stages 1-4 (stages 2-4 kinetic), the
        FNO-1D Burgers model 4.
      particle_dim: particle dimension (token layout).
      coll_coef: in ``[0, 1]``; the released code uses 0.5 (ResNet) and 0.9
        (FNO). Quota rule (default): the fraction of particles that collide
        (once each, textbook DSMC); threshold rule: Eq. 7's ``1 - threshold``.
      dt: drift time step (1 in the code).
      rule: ``"hard_sphere"`` (textbook, default) or ``"released"`` (the
        authors' code); see :func:`kinetix.dsmc.collide`.
      length_scale: ``ell`` in the acceptance's ``exp(-|x_i - x_j| / ell)``: a
        positive number or ``"mean"``/``"median"``/``"sqrt_d"`` (per system, at
        each call). Default ``"mean"`` with the quota rule, 1 (the code) with
        the threshold rule.
      acceptance: ``"quota"`` (default for ``"hard_sphere"``: the best
        ``ceil(coll_coef * n / 2)`` pairs of each system collide, whatever the
        features' scale) or ``"threshold"`` (default for ``"released"``: the
        code's fixed threshold, which collides nothing on unit-scale
        high-dimensional features; measured in ``results/collision_rates``).
      rng_stream: name of the ``nnx.Rngs`` stream the collision key is drawn
        from (missing streams fall back to ``default``).
      deterministic: if true, never collide (set by ``model.eval()``).

    Raises:
      ValueError: ``coll_coef`` not in ``[0, 1]``, ``dt`` or ``length_scale``
        NaN/inf, ``length_scale <= 0``, ``n_divide``/``particle_dim`` < 1
        (Python, NumPy or concrete JAX scalars alike); an unknown layout/rule.

    An empty batch (``B = 0``) returns an empty array of the same shape.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from kinetix.nn import KineticResidual
      >>> res = KineticResidual(layout="spatial", n_divide=4, coll_coef=0.9)
      >>> x = jnp.ones((2, 8, 8, 3)); v = jax.random.normal(jax.random.key(0), x.shape)
      >>> res(x, v, rngs=nnx.Rngs(collision=1)).shape
      (2, 8, 8, 3)
      >>> res.eval(); bool((res(x, v) == x + v).all())
      True
    """

    def __init__(
        self,
        *,
        layout: Layout = "spatial",
        n_divide: int = 1,
        particle_dim: int | None = None,
        coll_coef: float = 0.5,
        dt: float = 1.0,
        rule: dsmc.DSMCRule = "hard_sphere",
        length_scale: float | collision.LengthRule | None = None,
        rng_stream: str = "collision",
        deterministic: bool = False,
        acceptance: collision.Acceptance | None = None,
    ):
        if layout not in ("spatial", "token"):
            raise ValueError(f"layout must be 'spatial' or 'token', got {layout!r}.")
        check_options(coll_coef=coll_coef, rule=rule)
        where = "KineticResidual"
        n_divide = check_int(n_divide, "n_divide", low=1, where=where)
        if layout == "token" and particle_dim is None:
            raise ValueError(f"{where}: layout='token' needs particle_dim >= 1.")
        if particle_dim is not None:
            particle_dim = check_int(particle_dim, "particle_dim", low=1, where=where)
        check_real(dt, "dt", where=where)
        if acceptance is None:
            acceptance = "threshold" if rule == "released" else "quota"
        collision.check_acceptance(acceptance, where=where)
        if length_scale is None:
            length_scale = "mean" if acceptance == "quota" else 1.0
        collision.check_length_scale(length_scale, where=where)
        self.layout = layout
        self.n_divide = n_divide
        self.particle_dim = particle_dim
        self.coll_coef = coll_coef
        self.dt = dt
        self.rule = rule
        self.length_scale = length_scale
        self.acceptance = acceptance
        self.rng_stream = rng_stream
        self.deterministic = deterministic
        self.collision_rate = CollisionRate(jnp.zeros([], jnp.float32))

    def __call__(
        self,
        x: jax.Array,
        v: jax.Array,
        *,
        rngs: nnx.Rngs | None = None,
        deterministic: bool | None = None,
    ) -> jax.Array:
        if x.shape != v.shape:
            raise ValueError(
                f"KineticResidual: skip {x.shape} and branch {v.shape} must have the same shape."
            )
        deterministic = self.deterministic if deterministic is None else deterministic
        if deterministic or rngs is None or self.coll_coef == 0.0:
            return x + v * self.dt if self.dt != 1.0 else x + v
        key = getattr(rngs, self.rng_stream)()
        xp = to_particles(x, self.layout, self.n_divide, self.particle_dim)
        vp = to_particles(v, self.layout, self.n_divide, self.particle_dim)
        x_new, _, info = dsmc.collide(
            xp,
            vp,
            key,
            coll_coef=self.coll_coef,
            dt=self.dt,
            rule=self.rule,
            length_scale=self.length_scale,
            acceptance=self.acceptance,
        )
        self.collision_rate[...] = info.rate
        return from_particles(x_new, x.shape, self.layout, self.n_divide, self.particle_dim)


def token_residual(
    residual: str,
    *,
    particle_dim: int | None,
    coll_coef: float,
    rule: dsmc.DSMCRule,
    length_scale: float | str | None,
) -> KineticResidual | None:
    """A token-layout :class:`KineticResidual` for ``residual="kinetic"``; ``None`` (a plain
    ``x + v``, see :func:`residual_add`) for ``"plain"``. Used by the Transformer encoders."""
    if residual != "kinetic":
        return None
    return KineticResidual(
        layout="token",
        particle_dim=particle_dim,
        coll_coef=coll_coef,
        rule=rule,
        length_scale=length_scale,
    )


def residual_add(
    res: KineticResidual | None, x: jax.Array, v: jax.Array, rngs: nnx.Rngs | None
) -> jax.Array:
    """``x + v`` when ``res`` is ``None``, else the kinetic step ``res(x, v, rngs=rngs)``."""
    return x + v if res is None else res(x, v, rngs=rngs)


def collision_rates(model: nnx.Module) -> dict[str, float]:
    """Every :class:`KineticResidual`'s last collision rate, keyed by path.

    Reads the :class:`CollisionRate` variables
    (``nnx.state(model, CollisionRate)``); a rate is the fraction of candidate
    particle pairs that collided at that residual's last training call with
    ``rngs`` (0 before any). Works for any NNX model, e.g.
    ``{'layer2/0/kinetic/collision_rate': 0.03, ...}``; empty for plain models.
    (:func:`kinetix.collision_rates` is the optimizer-state counterpart for KO.)
    """
    state = nnx.state(model, CollisionRate)
    return {
        path: float(v) for path, v in zip(leaf_paths(state), jax.tree.leaves(state), strict=True)
    }
