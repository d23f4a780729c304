"""Fourier neural operators (FNO-1D, FNO-2D) with a plain or a kinetic (KITINet) residual.

The layout of Li et al. (2021), as in their ``fourier_1d.py`` / ``fourier_2d_time.py``:

1. lift: the input field ``u`` and the grid coordinates (``x_j = j / N`` on every
   axis, the grid of :mod:`kinetix.data.pde`) are concatenated on the channel
   axis and mapped to ``width`` channels by a Linear layer;
2. ``depth`` Fourier layers, each ``act(W u + K u)``: ``K`` a spectral
   convolution (:class:`SpectralConv`: ``rfft``, complex weights on the lowest
   ``modes`` frequencies, inverse ``rfft``), ``W`` a pointwise (1x1) Linear layer;
   the last layer has no activation;
3. projection ``width -> 128 -> out_channels`` with an activation in between.

With ``residual="kinetic"`` every Fourier layer combines its branches with
KITINet's collision step instead of the add,
``KineticResidual(layout="spatial", n_divide=...)(W u, K u, rngs=rngs)``: the
pointwise branch is the particles' position and the spectral branch their
velocity, as in the authors' ``FNO1d_kinet2`` / ``FNO2d_kinet`` (``p =
self.w0(x)``, ``a = self.conv0(x)``). In eval mode or without ``rngs`` it is
exactly ``W u + K u``, so a kinetic model and a plain model with the same
parameters give bitwise-identical outputs at inference.

Features are channels-last, ``(B, *spatial, C)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from kinetix import dsmc
from kinetix.nn import kinetic
from kinetix.nn.kinetic import KineticResidual, check_options

__all__ = [
    "FNO",
    "FNO1d",
    "FNO2d",
    "FourierLayer",
    "SpectralConv",
    "layer_collision_rates",
    "pointwise_kernels",
    "resolve_n_divide",
    "spectral_weights",
]

Residual = Literal["plain", "kinetic"]
Activation = Literal["gelu", "relu"]

_ACTIVATIONS = {
    # PyTorch's F.gelu is the exact (erf) GELU.
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "relu": jax.nn.relu,
}


def _uniform(key: jax.Array, shapes: Sequence[Sequence[int]], low: float, high: float, dtype):
    """Arrays of the given shapes, i.i.d. ``U(low, high)``, from one flat draw.

    One rank-1 draw per module: on XLA:CPU each distinct random shape is a
    separate compilation, and rank-1 draws compile much faster than rank-3..5
    ones (see ``kinetix.data.pde._grf_sample``).
    """
    sizes = [math.prod(s) for s in shapes]
    flat = jax.random.uniform(key, (sum(sizes),), dtype, low, high)
    parts = jnp.split(flat, list(itertools.accumulate(sizes))[:-1])
    return [p.reshape(tuple(s)) for p, s in zip(parts, shapes, strict=True)]


class _Linear(nnx.Module):
    """``y = x @ kernel + bias`` with PyTorch's default ``nn.Linear`` initialisation.

    Kernel and bias are ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, as the released
    FNO code gets from ``nn.Linear`` / ``nn.Conv1d(.., 1)``. The kernel is
    ``(in, out)`` (Flax layout), so its output channels are the last axis.
    """

    def __init__(
        self, in_features: int, out_features: int, *, param_dtype=jnp.float32, rngs: nnx.Rngs
    ):
        bound = 1.0 / math.sqrt(in_features)
        shapes = [(in_features, out_features), (out_features,)]
        kernel, bias = _uniform(rngs.params(), shapes, -bound, bound, param_dtype)
        self.kernel = nnx.Param(kernel)
        self.bias = nnx.Param(bias)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.kernel[...] + self.bias[...]


class SpectralConv(nnx.Module):
    r"""Spectral convolution ``K`` of the FNO on a periodic grid of any dimension.

    ``y = irfftn(R . rfftn(x))`` where ``R`` multiplies the lowest Fourier modes
    by learned complex ``(in, out)`` matrices and zeroes the others. Along the
    last spatial axis (the ``rfft`` axis) the modes ``0 .. m - 1`` are kept; along
    each other axis both the ``m`` lowest non-negative and the ``m`` highest
    (negative) frequencies, each block with its own weights (``weights1``,
    ``weights2``, ... of the released ``SpectralConv2d``). For 1-D that is
    ``out_ft[:, :m] = einsum(x_ft[:, :m], W)``.

    The complex weights are stored as two real parameters, ``weight_real`` and
    ``weight_imag``, of shape ``(blocks, in, out, *modes)`` (``blocks =
    2^(ndim-1)``), so optimizers and weight decay see ordinary real arrays.
    Initialisation as the released code: ``scale * U[0, 1)`` for both parts,
    ``scale = 1 / (in * out)``.

    Args:
      in_features, out_features: channels.
      modes: kept modes per spatial axis (a tuple of length ``ndim``).
      param_dtype: real dtype of the weights.
      rngs: ``nnx.Rngs`` with a ``params`` stream.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        modes: Sequence[int],
        *,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        modes = tuple(int(m) for m in modes)
        if not modes or any(m < 1 for m in modes):
            raise ValueError(f"modes must be a non-empty tuple of integers >= 1, got {modes}.")
        if in_features < 1 or out_features < 1:
            raise ValueError(
                f"in_features and out_features must be >= 1, got {in_features}, {out_features}."
            )
        self.in_features = in_features
        self.out_features = out_features
        self.modes = modes
        blocks = 2 ** (len(modes) - 1)
        shape = (blocks, in_features, out_features) + modes
        scale = 1.0 / (in_features * out_features)
        real, imag = _uniform(rngs.params(), [shape, shape], 0.0, scale, param_dtype)
        self.weight_real = nnx.Param(real)
        self.weight_imag = nnx.Param(imag)

    @property
    def ndim(self) -> int:
        return len(self.modes)

    def complex_weight(self) -> jax.Array:
        """The complex weights, shape ``(blocks, in, out, *modes)``."""
        return jax.lax.complex(self.weight_real[...], self.weight_imag[...])

    def check_grid(self, spatial: Sequence[int]) -> None:
        """Raises ``ValueError`` if the grid is too coarse for the kept modes."""
        *lead, last = spatial
        *mlead, mlast = self.modes
        if mlast > last // 2 + 1:
            raise ValueError(
                f"SpectralConv: {mlast} modes on the last axis need a grid of at least "
                f"{2 * (mlast - 1)} points, got {last} (grid {tuple(spatial)})."
            )
        for m, n in zip(mlead, lead, strict=True):
            if 2 * m > n:
                raise ValueError(
                    f"SpectralConv: {m} modes on a non-last axis need a grid of at least {2 * m} "
                    f"points (positive and negative frequencies), got {n} (grid {tuple(spatial)})."
                )

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x``: ``(B, *spatial, in)`` real -> ``(B, *spatial, out)`` real."""
        nd = self.ndim
        if x.ndim != nd + 2 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"SpectralConv({nd}-D): expected (B, *{nd} spatial, {self.in_features}) input, got {x.shape}."
            )
        spatial = x.shape[1:-1]
        self.check_grid(spatial)
        axes = tuple(range(1, nd + 1))
        x_ft = jnp.fft.rfftn(x, axes=axes)  # (B, *freq, in)
        w = self.complex_weight().astype(x_ft.dtype)
        out_shape = (x.shape[0],) + x_ft.shape[1:-1] + (self.out_features,)
        out_ft = jnp.zeros(out_shape, x_ft.dtype)
        letters = "defghijk"[:nd]
        eq = f"b{letters}i,io{letters}->b{letters}o"
        # one block per choice of (low | high) frequencies on the non-last axes
        for block in range(2 ** (nd - 1)):
            idx = [slice(None)]
            for ax in range(nd - 1):
                m = self.modes[ax]
                idx.append(slice(-m, None) if (block >> ax) & 1 else slice(0, m))
            idx.append(slice(0, self.modes[-1]))
            idx = tuple(idx)
            out_ft = out_ft.at[idx].set(jnp.einsum(eq, x_ft[idx], w[block]))
        return jnp.fft.irfftn(out_ft, s=spatial, axes=axes).astype(x.dtype)


def resolve_n_divide(
    n_divide: int | Literal["auto"], num_particles: int, num_positions: int
) -> int:
    """Spatial positions per particle for a grid of ``num_positions`` points.

    ``"auto"`` keeps the particle count fixed at ``num_particles`` whatever the
    resolution (the released FNO-2D heat code: ``n_divide = 8`` at 32x32 and
    ``32`` at 64x64, both 128 particles); an integer is used as is. Either way it
    must divide ``num_positions``.
    """
    if n_divide == "auto":
        if num_positions % num_particles:
            raise ValueError(
                f"n_divide='auto' with num_particles={num_particles} needs a grid whose number of "
                f"points ({num_positions}) is a multiple of {num_particles}."
            )
        return num_positions // num_particles
    if num_positions % n_divide:
        raise ValueError(
            f"n_divide={n_divide} must divide the number of grid points ({num_positions})."
        )
    return int(n_divide)


class FourierLayer(nnx.Module):
    """One Fourier layer without its activation: ``W u + K u`` or its kinetic version.

    ``residual="kinetic"``: the layer groups the grid points of ``W u`` and
    ``K u`` into particles itself (:func:`kinetix.nn.kinetic.to_particles`
    with the ``n_divide`` of the current grid, :func:`resolve_n_divide`), then
    calls its ``KineticResidual(layout="spatial", n_divide=1)`` on the
    ``(B, n, n_divide * C)`` particle arrays and ungroups the result. That is the
    same computation as ``KineticResidual(layout="spatial", n_divide=k)`` on the
    ``(B, *spatial, C)`` features (the particles, their order and the collision
    key are the same), but lets ``n_divide`` follow the resolution, so one model
    runs on several grids.

    Gradient: as the released PyTorch code's autograd, through the collided
    velocities and positions with the accepted pairs and scattering directions
    held fixed (:func:`kinetix.dsmc.collide`'s custom VJP); none through the
    acceptance test.

    Args:
      width: channels.
      modes: kept Fourier modes per spatial axis.
      residual: ``"plain"`` or ``"kinetic"``.
      n_divide: grid points per particle, an integer or ``"auto"``.
      num_particles: particles per sample when ``n_divide="auto"``.
      coll_coef: collision coefficient of the kinetic residual (0.9 in the
        released FNO code).
      rule: ``"hard_sphere"`` or ``"released"`` (see :func:`kinetix.dsmc.collide`).
      rngs: ``nnx.Rngs`` with a ``params`` stream (initialisation).
    """

    def __init__(
        self,
        width: int,
        modes: Sequence[int],
        *,
        residual: Residual = "plain",
        n_divide: int | Literal["auto"] = 1,
        num_particles: int = 128,
        coll_coef: float = 0.9,
        rule: dsmc.DSMCRule = "hard_sphere",
        rngs: nnx.Rngs,
    ):
        check_options(residual=residual)
        self.spectral = SpectralConv(width, width, modes, rngs=rngs)
        self.pointwise = _Linear(width, width, rngs=rngs)
        self.residual = residual
        self.n_divide = n_divide
        self.num_particles = num_particles
        if residual == "kinetic":
            self.kinetic = KineticResidual(
                layout="spatial", n_divide=1, coll_coef=coll_coef, rule=rule
            )
        else:
            self.kinetic = None

    def __call__(self, u: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        k = self.spectral(u)  # velocity (acceleration) branch
        w = self.pointwise(u)  # position branch
        if self.kinetic is None:
            return w + k
        nd = resolve_n_divide(self.n_divide, self.num_particles, math.prod(u.shape[1:-1]))
        xp = kinetic.to_particles(w, "spatial", nd, None)
        vp = kinetic.to_particles(k, "spatial", nd, None)
        out = self.kinetic(xp, vp, rngs=rngs)
        return kinetic.from_particles(out, w.shape, "spatial", nd, None)


class _GridOperator(nnx.Module):
    """The lift and projection of a neural operator on a periodic grid, shared by FNO and FNOKINN.

    A subclass sets ``activation`` and builds its parameters with
    :meth:`build_io`, in the order of the released FNO code: ``lift`` (the input
    field with the grid coordinates ``j / N`` appended as channels,
    ``in_channels + ndim -> width``), the subclass's ``layers``, then ``proj1``
    and ``proj2`` (``width -> proj_width -> out_channels``, an activation in
    between). Its ``__call__`` is
    ``h, squeeze = self.lift_input(u)``, its layers on ``h``, then
    ``self.project(h, squeeze)``.

    Attributes:
      ndim, width, in_channels, out_channels: as given to :meth:`build_io`.
      activation: ``"gelu"`` or ``"relu"``, set by the subclass.
      lift, layers, proj1, proj2: the parameters (the paths of the released
        layout, so checkpoints of :class:`FNO` and
        :class:`kinetix.nn.kinn.FNOKINN` keep their names).

    Example:
      >>> from flax import nnx
      >>> model = FNO1d(width=8, modes=4, rngs=nnx.Rngs(params=0))
      >>> h, squeeze = model.lift_input(jnp.zeros((2, 16)))
      >>> h.shape, model.project(h, squeeze).shape
      ((2, 16, 8), (2, 16))
    """

    #: the model's name in error messages
    label = "FNO"

    def build_io(
        self,
        ndim: int,
        width: int,
        in_channels: int,
        out_channels: int,
        proj_width: int,
        depth: int,
        layer: Callable[[], nnx.Module],
        *,
        rngs: nnx.Rngs,
    ) -> None:
        """Stores the sizes and creates ``lift``, ``depth`` calls of ``layer()``, ``proj1``, ``proj2``.

        The subclass sets ``activation`` (``"gelu"`` or ``"relu"``) itself.

        Args:
          ndim, width, in_channels, out_channels, proj_width, depth: the
            validated sizes of the model.
          layer: builds one hidden layer; called ``depth`` times between the
            lift and the projection, so the parameters are drawn from ``rngs``
            in that order.
          rngs: ``nnx.Rngs`` with a ``params`` stream.
        """
        self.ndim = ndim
        self.width = width
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.lift = _Linear(in_channels + ndim, width, rngs=rngs)
        self.layers = nnx.List([layer() for _ in range(depth)])
        self.proj1 = _Linear(width, proj_width, rngs=rngs)
        self.proj2 = _Linear(proj_width, out_channels, rngs=rngs)

    def grid(self, spatial: Sequence[int], dtype=jnp.float32) -> jax.Array:
        """Coordinates ``(x_j = j / N, ...)`` of a grid, shape ``(*spatial, ndim)``."""
        axes = [jnp.arange(n, dtype=dtype) / n for n in spatial]
        return jnp.stack(jnp.meshgrid(*axes, indexing="ij"), axis=-1)

    def act(self, x: jax.Array) -> jax.Array:
        """The model's activation."""
        return _ACTIVATIONS[self.activation](x)

    def lift_input(self, u: jax.Array) -> tuple[jax.Array, bool]:
        """``lift([u, grid])``, ``(B, *spatial, width)``, and whether ``u`` had no channel axis.

        Raises:
          ValueError: ``u`` is neither ``(B, *spatial)`` (with ``in_channels == 1``)
            nor ``(B, *spatial, in_channels)``.
        """
        u = jnp.asarray(u)
        squeeze = u.ndim == self.ndim + 1
        if squeeze:
            if self.in_channels != 1:
                raise ValueError(
                    f"{self.label}: input {u.shape} has no channel axis but "
                    f"in_channels={self.in_channels}."
                )
            u = u[..., None]
        if u.ndim != self.ndim + 2 or u.shape[-1] != self.in_channels:
            raise ValueError(
                f"{self.label}({self.ndim}-D): expected input (B, *{self.ndim} spatial) or "
                f"(B, *spatial, {self.in_channels}), got {u.shape}."
            )
        spatial = u.shape[1:-1]
        grid = jnp.broadcast_to(self.grid(spatial, u.dtype), u.shape[:1] + spatial + (self.ndim,))
        return self.lift(jnp.concatenate([u, grid], axis=-1)), squeeze

    def project(self, h: jax.Array, squeeze: bool) -> jax.Array:
        """``proj2(act(proj1(h)))``; the channel axis dropped when ``squeeze`` and one output channel."""
        out = self.proj2(self.act(self.proj1(h)))
        return out[..., 0] if squeeze and self.out_channels == 1 else out


class FNO(_GridOperator):
    """A Fourier neural operator on a periodic ``ndim``-D grid (Li et al. 2021).

    ``FNO1d`` and ``FNO2d`` are this class with the released code's defaults.

    Input ``u``: ``(B, *spatial)`` (one input channel; output ``(B, *spatial)``)
    or ``(B, *spatial, in_channels)`` (output ``(B, *spatial, out_channels)``).
    The grid coordinates ``j / N`` are appended as extra input channels, so the
    same weights apply on any grid fine enough for ``modes`` (zero-shot
    super-resolution).

    Args:
      ndim: number of spatial dimensions.
      modes: kept Fourier modes, an int (all axes) or one per axis.
      width: channels of the Fourier layers.
      depth: number of Fourier layers (4 in the released code).
      in_channels, out_channels: channels of the input field and of the output.
      proj_width: hidden width of the projection (128).
      activation: ``"gelu"`` (Li et al.) or ``"relu"`` (the released KITINet
        FNO-1D script).
      residual: ``"plain"`` (``W u + K u``) or ``"kinetic"`` (KITINet).
      n_divide: grid points per particle (kinetic), an integer or ``"auto"``
        (``N / num_particles`` for an ``N``-point grid).
      num_particles: particles per sample with ``n_divide="auto"``.
      coll_coef: collision coefficient (kinetic).
      rule: collision rule (kinetic), ``"hard_sphere"`` or ``"released"``.
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from kinetix.nn.fno import FNO2d
      >>> model = FNO2d(residual="kinetic", rngs=nnx.Rngs(params=0))
      >>> model(jnp.zeros((2, 32, 32)), rngs=nnx.Rngs(collision=1)).shape
      (2, 32, 32)
      >>> model.eval(); model(jnp.zeros((2, 64, 64))).shape
      (2, 64, 64)
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
        residual: Residual = "plain",
        n_divide: int | Literal["auto"] = 1,
        num_particles: int = 128,
        coll_coef: float = 0.9,
        rule: dsmc.DSMCRule = "hard_sphere",
        rngs: nnx.Rngs,
    ):
        if ndim < 1:
            raise ValueError(f"ndim must be >= 1, got {ndim}.")
        modes = (int(modes),) * ndim if isinstance(modes, int) else tuple(int(m) for m in modes)
        if len(modes) != ndim:
            raise ValueError(f"modes must have {ndim} entries, got {modes}.")
        for name, value in (("width", width), ("depth", depth), ("in_channels", in_channels)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        if out_channels < 1 or proj_width < 1:
            raise ValueError(
                f"out_channels and proj_width must be >= 1, got {out_channels}, {proj_width}."
            )
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}."
            )
        check_options(residual=residual)
        if n_divide != "auto" and (
            isinstance(n_divide, bool) or not isinstance(n_divide, int) or n_divide < 1
        ):
            raise ValueError(f"n_divide must be an integer >= 1 or 'auto', got {n_divide!r}.")
        if num_particles < 2:
            raise ValueError(f"num_particles must be >= 2, got {num_particles}.")
        check_options(coll_coef=coll_coef, rule=rule)
        self.modes = modes
        self.activation = activation
        self.residual = residual

        def layer() -> FourierLayer:
            return FourierLayer(
                width,
                modes,
                residual=residual,
                n_divide=n_divide,
                num_particles=num_particles,
                coll_coef=coll_coef,
                rule=rule,
                rngs=rngs,
            )

        self.build_io(ndim, width, in_channels, out_channels, proj_width, depth, layer, rngs=rngs)

    def __call__(self, u: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        h, squeeze = self.lift_input(u)
        for i, layer in enumerate(self.layers):
            h = layer(h, rngs=rngs)
            if i < len(self.layers) - 1:
                h = self.act(h)
        return self.project(h, squeeze)


class FNO1d(FNO):
    """FNO-1D with the defaults of the released KITINet Burgers script.

    ``modes=16, width=64``, kinetic ``n_divide=4`` (256 particles of 256
    dimensions at 1024 points), ``coll_coef=0.9``. See :class:`FNO` for the
    arguments.
    """

    def __init__(
        self,
        *,
        modes: int = 16,
        width: int = 64,
        n_divide: int | Literal["auto"] = 4,
        coll_coef: float = 0.9,
        rngs: nnx.Rngs,
        **kwargs,
    ):
        super().__init__(
            1, modes=modes, width=width, n_divide=n_divide, coll_coef=coll_coef, rngs=rngs, **kwargs
        )


class FNO2d(FNO):
    """FNO-2D with the defaults of the released KITINet heat script.

    ``modes=12, width=20``, kinetic ``n_divide="auto"`` with
    ``num_particles=128`` (8 grid points per particle at 32x32, 32 at 64x64:
    128 particles of 160 or 640 dimensions), ``coll_coef=0.9``. See
    :class:`FNO` for the arguments.
    """

    def __init__(
        self,
        *,
        modes: int | Sequence[int] = 12,
        width: int = 20,
        n_divide: int | Literal["auto"] = "auto",
        num_particles: int = 128,
        coll_coef: float = 0.9,
        rngs: nnx.Rngs,
        **kwargs,
    ):
        super().__init__(
            2,
            modes=modes,
            width=width,
            n_divide=n_divide,
            num_particles=num_particles,
            coll_coef=coll_coef,
            rngs=rngs,
            **kwargs,
        )


def pointwise_kernels(model: FNO) -> list[jax.Array]:
    """The ``(width, width)`` kernels of the pointwise ``W`` branches, one per Fourier layer.

    Output channels are the last axis, as :func:`kinetix.metrics.channel_condensation`
    expects by default.
    """
    return [layer.pointwise.kernel[...] for layer in model.layers]


def spectral_weights(model: FNO) -> list[jax.Array]:
    """The complex spectral weights ``(blocks, in, out, *modes)`` of ``K``, one per Fourier layer."""
    return [layer.spectral.complex_weight() for layer in model.layers]


def layer_collision_rates(model: FNO) -> list[jax.Array] | None:
    """The last training call's collision rate of each Fourier layer, in order (``None`` if plain).

    Traceable (usable inside ``jit``); :func:`kinetix.nn.kinetic.collision_rates`
    gives the same rates as a ``{path: float}`` dict for any model.
    """
    if model.residual != "kinetic":
        return None
    return [layer.kinetic.collision_rate[...] for layer in model.layers]
