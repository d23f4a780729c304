"""OFormer (Li, Meidani & Barati Farimani, TMLR 2023) with plain or kinetic (KITINet) residuals.

"Transformer for Partial Differential Equations' Operator Learning": an
encoder of linear-attention layers over the input points, then a point-wise
decoder that queries the encoded latent at arbitrary coordinates by
cross-attention and refines the result with a residual MLP "propagator". This
is a compact transcription of the authors' uniform-grid code
(BaratiLab/OFormer ``uniform_grids/nn_module``, the Burgers model of
``train_burgers.py``: ``Encoder1D(2, 96, 96, 4)`` + ``PointWiseDecoder1D(96,
1, 3, scale=2)``), for 1-D and 2-D grids.

**Encoder** (``Encoder1D`` / ``TransformerCatNoCls``):

1. tokens: each grid point's input channels and coordinates ``[u, x]`` are
   mapped by a bias-free Linear to ``width - ndim`` features, and the
   coordinates are appended again, giving ``width`` features per token;
2. ``depth`` layers ``x = x + attn(x, pos)``, ``x = x + ffn(x)`` (with
   ``layer_norm=True``: ``x = ln1(x)`` before the first add and ``x = ln2(x)``
   before the second, as the released ``use_ln=True`` code, which normalises
   the residual stream itself, not only the branch input). ``attn`` is a
   linear attention (:class:`LinearAttention`) with rotary position
   embeddings of the coordinates; ``ffn`` a GeGLU MLP (:class:`FeedForward`);
3. a bias-free Linear to the ``latent`` size.

**Decoder** (``PointWiseDecoder1D``): the query coordinates are embedded by
fixed Gaussian Fourier features (:class:`GaussianFourierFeatures`), GELU and a
bias-free Linear; one cross-attention block ``x = x + cross_attn(x, z)``,
``x = x + ffn(x)`` (queries from the coordinates, keys/values from the
latent ``z``); ``propagator_depth`` residual MLPs ``x = x + mlp(x)``
(Linear-GELU-Linear-GELU-Linear, bias-free); then ``latent -> latent / 2 ->
out_channels`` with a GELU in between.

**Linear attention** (Cao 2021, "Choose a Transformer: Fourier or Galerkin"):
``out = Q (K^T V) / n`` per head, ``n`` the number of key points (a
quadrature of an integral over the domain, so it is defined on any grid), no
softmax. ``"galerkin"`` normalises ``K`` and ``V``, ``"fourier"`` ``Q`` and
``K``; the normalisation is the released code's ``nn.InstanceNorm1d`` on a
``(batch * heads, n, dim_head)`` tensor, which (PyTorch reading axis 1 as
channels) standardises each token's head vector over its ``dim_head``
features, without affine parameters, ``eps = 1e-5`` (:func:`instance_norm`).
Rotary embeddings are applied after the normalisation, to ``Q`` and ``K``;
in 2-D the first half of each head's features rotates with ``x``, the
second half with ``y``.

**Kinetic residuals** (``residual="kinetic"``): both residual adds of every
*encoder* layer become :class:`kinetix.nn.KineticResidual` with
``layout="token"``: position = the residual stream (after the layer norm, if
any), velocity = the branch output (``attn(x, pos)``, then ``ffn(x)``), as in
KITINet's OFormer integration (both adds of ``TransformerCatNoCls`` replaced;
KITINet.md, section 1.4). Each token's ``width`` features are split into
``width / particle_dim`` particles of dimension ``particle_dim`` that collide
within the token. The decoder's adds stay plain (KITINet changed only the
encoder). In eval mode, or with ``rngs=None``, the kinetic model computes
exactly what the plain model computes.

Choices the paper leaves open, and differences from the released code:

* KITINet's OFormer run used ``n_divide = width = 128``, one particle per
  token, which never collides (KITINet.md, section 1.2). Here the default
  ``particle_dim = width / 8`` gives 8 particles per token (as
  :class:`kinetix.nn.TextEncoder`'s default), and the collisions use the
  library's defaults (``rule="hard_sphere"``, quota acceptance), with
  ``coll_coef = 0.9`` (the released OFormer/FNO variants).
* Rotary frequencies: the released code uses ``min_freq = 1 / res`` for the
  training resolution ``res``, so a coordinate ``x = j / res`` rotates by
  ``j * scale * 10000^(-2i/d)``: the angles depend on the point *index*, and
  on a finer grid the same physical point would rotate differently. Here
  ``min_freq`` is fixed at construction (default ``1 / 32``), so the angles
  depend on the physical coordinate only and one model evaluates on any
  grid. The released per-layer scales are kept (Burgers ``8, 4, 4, 1``; the
  decoder 1).
* Coordinates are ``x_j = j / N`` (the grid of :mod:`kinetix.data.pde` and
  :class:`kinetix.nn.FNO`); the released script uses ``linspace(0, 1, N)``.
* The encoder's tokens are built the 1-D way (Linear of ``[u, x]`` to
  ``width - ndim``, coordinates appended) in 2-D as well; the released 2-D
  Darcy encoder maps ``[u, x, y]`` to ``width`` without appending. The 2-D
  decoder has the 1-D structure (the released Darcy decoder has no
  propagator and appends the coordinates before its output MLP).
* No dropout (the released Burgers model has none; 2-D Darcy uses 0.03 in
  attention and 0.05 on the embedding), so the only randomness in a forward
  pass is the collisions.
* Q, K and V are three bias-free Linears instead of one fused ``to_qkv``
  (the same map). Initialisation as the released code: PyTorch's default
  Linear init (``U(+-1/sqrt(fan_in))``), except the orthogonal init with gain
  ``1 / dim_head`` plus ``1 / dim_head`` on the diagonal for ``Q`` (Galerkin)
  or ``V`` (Fourier) in self-attention, for ``Q``, ``K``, ``V`` in
  cross-attention, and (gain ``1 / width``) for every propagator Linear. The
  released code adds the diagonal only when ``dim_head == width``; here it
  adds the diagonal of the ``(width, dim_head)`` block whatever its shape.
* The Gaussian Fourier matrix ``B ~ N(0, scale^2)`` is drawn at
  initialisation and not trained (``requires_grad=False`` in the released
  code); it is a :class:`FourierBasis` variable, not an ``nnx.Param``.
* The released Burgers script adds ``1e-3`` times the relative error of
  central-difference derivatives to the loss and trains 20k iterations with
  OneCycle (lr 8e-4, batch 16, res 2048); that is training, not this module.

Features are channels-last and the model's input is ``(B, *spatial)`` or
``(B, *spatial, in_channels)``, as :class:`kinetix.nn.FNO`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from kinetix import dsmc
from kinetix.nn.kinetic import check_options, residual_add, token_residual

__all__ = [
    "CrossAttentionBlock",
    "FeedForward",
    "FourierBasis",
    "GaussianFourierFeatures",
    "LinearAttention",
    "OFormer",
    "OFormer1d",
    "OFormer2d",
    "OFormerLayer",
    "apply_rotary",
    "instance_norm",
    "layer_collision_rates",
    "linear_attention",
    "rotary_angles",
]

Residual = Literal["plain", "kinetic"]
AttentionKind = Literal["galerkin", "fourier"]

NORM_EPS = 1e-5  # PyTorch InstanceNorm1d / LayerNorm default


def _gelu(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=False)  # PyTorch's nn.GELU is the exact (erf) GELU


def _torch_linear(
    in_features: int, out_features: int, *, use_bias: bool = True, rngs: nnx.Rngs
) -> nnx.Linear:
    """An ``nnx.Linear`` with PyTorch's default init: kernel and bias ``U(+-1/sqrt(fan_in))``."""
    bound = 1.0 / math.sqrt(in_features)

    def bias_init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return nnx.Linear(
        in_features,
        out_features,
        use_bias=use_bias,
        # variance_scaling(1/3, fan_in, uniform) is U(+-sqrt(3 * (1/3) / fan_in))
        kernel_init=nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
        bias_init=bias_init,
        rngs=rngs,
    )


def _orthogonal_diag_linear(
    in_features: int, heads: int, dim_head: int, gain: float, *, rngs: nnx.Rngs
) -> nnx.Linear:
    """A bias-free ``(in, heads * dim_head)`` Linear, each head's block ``orthogonal(gain) + gain I``.

    The released ``_init_params``: ``orthogonal_(W_h, gain)`` then
    ``W_h += gain * eye`` for each head's ``(dim_head, in)`` block (PyTorch
    layout; here the transposed ``(in, dim_head)`` block).
    """
    layer = _torch_linear(in_features, heads * dim_head, use_bias=False, rngs=rngs)
    ortho = nnx.initializers.orthogonal(scale=gain)
    eye = gain * jnp.eye(in_features, dim_head, dtype=jnp.float32)
    blocks = [
        ortho(rngs.params(), (in_features, dim_head), jnp.float32) + eye for _ in range(heads)
    ]
    layer.kernel[...] = jnp.concatenate(blocks, axis=1)
    return layer


# ----------------------------------------------------------------- pure functions


def instance_norm(x: jax.Array, eps: float = NORM_EPS) -> jax.Array:
    """Standardises ``x`` over its last axis (biased variance, no affine parameters).

    What the released ``nn.InstanceNorm1d(dim_head)`` does to a ``(batch * heads,
    n, dim_head)`` tensor: each token's head vector has mean 0 and variance 1.

    Example:
      >>> import jax.numpy as jnp
      >>> instance_norm(jnp.array([[1.0, 3.0]])).round(3).tolist()
      [[-1.0, 1.0]]
    """
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def linear_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """``q (k^T v) / n``: softmax-free attention, ``n`` the number of keys.

    Args:
      q: ``(..., m, d)`` queries.
      k: ``(..., n, d)`` keys.
      v: ``(..., n, d_v)`` values.

    Returns:
      ``(..., m, d_v)``: ``out_i = (1 / n) sum_j (q_i . k_j) v_j``, computed as
      ``q (k^T v)`` in ``O((m + n) d d_v)``.

    Example:
      >>> import jax.numpy as jnp
      >>> linear_attention(jnp.ones((1, 2)), jnp.ones((4, 2)), jnp.ones((4, 3))).tolist()
      [[2.0, 2.0, 2.0]]
    """
    n = k.shape[-2]
    return jnp.matmul(q, jnp.matmul(jnp.swapaxes(k, -1, -2), v)) / n


def rotary_angles(coords: jax.Array, dim: int, scale: float, min_freq: float) -> jax.Array:
    """The released ``RotaryEmbedding``: angles ``(..., dim)`` of one coordinate axis.

    ``theta_i = x * scale / min_freq * 10000^(-2 i / dim)`` for ``i < dim / 2``,
    repeated twice (``cat(freqs, freqs)``).

    Args:
      coords: ``(...)`` coordinates of one axis.
      dim: the number of features they rotate (even).
      scale, min_freq: as in the released code (see the module docstring).
    """
    inv_freq = 1.0 / (10000.0 ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    t = coords.astype(jnp.float32) * (scale / min_freq)
    freqs = t[..., None] * inv_freq
    return jnp.concatenate([freqs, freqs], axis=-1)


def _rotate_half(x: jax.Array) -> jax.Array:
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_rotary(t: jax.Array, pos: jax.Array, scale: float, min_freq: float) -> jax.Array:
    """Rotary position embedding of ``t`` by the coordinates ``pos``.

    Args:
      t: ``(B, heads, n, dim_head)``.
      pos: ``(B, n, ndim)`` coordinates, ``ndim`` 1 or 2. In 2-D the first
        ``dim_head / 2`` features rotate with ``pos[..., 0]``, the others
        with ``pos[..., 1]`` (the released ``apply_2d_rotary_pos_emb``).
      scale, min_freq: see :func:`rotary_angles`.

    Returns:
      ``t * cos(theta) + rotate_half(t) * sin(theta)``, same shape as ``t``.
    """
    ndim = pos.shape[-1]
    parts = jnp.split(t, ndim, axis=-1)
    out = []
    for axis, part in enumerate(parts):
        theta = rotary_angles(pos[..., axis], part.shape[-1], scale, min_freq)[:, None]
        theta = theta.astype(t.dtype)
        out.append(part * jnp.cos(theta) + _rotate_half(part) * jnp.sin(theta))
    return jnp.concatenate(out, axis=-1) if ndim > 1 else out[0]


# ------------------------------------------------------------------------ modules


class FourierBasis(nnx.Variable):
    """The fixed (untrained) frequency matrix of :class:`GaussianFourierFeatures`."""


class GaussianFourierFeatures(nnx.Module):
    """``[sin(2 pi x B), cos(2 pi x B)]`` with a fixed ``B ~ N(0, scale^2)`` (Tancik et al. 2020).

    Args:
      in_features: coordinate dimension.
      mapping_size: columns of ``B``; the output has ``2 * mapping_size`` features.
      scale: standard deviation of ``B``'s entries.
      rngs: ``nnx.Rngs`` with a ``params`` stream (draws ``B``).
    """

    def __init__(self, in_features: int, mapping_size: int, scale: float, *, rngs: nnx.Rngs):
        b = jax.random.normal(rngs.params(), (in_features, mapping_size), jnp.float32)
        self.basis = FourierBasis(b * scale)

    def __call__(self, x: jax.Array) -> jax.Array:
        proj = 2.0 * jnp.pi * (x @ self.basis[...].astype(x.dtype))
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


class FeedForward(nnx.Module):
    """The released GeGLU ``FeedForward``: ``Linear(dim, 2h)``, ``gelu(a) * b``, ``Linear(h, dim)``."""

    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs):
        self.fc1 = _torch_linear(dim, 2 * hidden, rngs=rngs)
        self.fc2 = _torch_linear(hidden, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        a, b = jnp.split(self.fc1(x), 2, axis=-1)
        return self.fc2(_gelu(a) * b)


class LinearAttention(nnx.Module):
    r"""Galerkin- or Fourier-type linear (self- or cross-) attention with rotary embeddings.

    Per head, with ``IN`` = :func:`instance_norm` and ``R`` = :func:`apply_rotary`:

    * Galerkin: ``Q~ = R(Q)``, ``K~ = R(IN(K))``, ``V~ = IN(V)``;
    * Fourier: ``Q~ = R(IN(Q))``, ``K~ = R(IN(K))``, ``V~ = V``;

    then ``out = Q~ (K~^T V~) / n`` (:func:`linear_attention`), the heads
    concatenated and mapped back to ``dim`` by ``to_out`` (a Linear with bias,
    or nothing when ``heads == 1`` and ``dim_head == dim``). ``Q`` comes from
    ``x``, ``K`` and ``V`` from ``z`` (``z = x`` for self-attention).

    Args:
      dim: feature size of ``x`` and ``z``.
      kind: ``"galerkin"`` or ``"fourier"``.
      heads, dim_head: number and size of the heads (``dim_head`` divisible by
        ``2 * ndim``).
      ndim: coordinate dimension (1 or 2).
      rope_scale, min_freq: rotary embedding parameters (:func:`rotary_angles`).
      cross: cross-attention init (orthogonal on Q, K and V); self-attention
        initialises only Q (Galerkin) or V (Fourier) that way.
      rngs: ``nnx.Rngs`` with a ``params`` stream.
    """

    def __init__(
        self,
        dim: int,
        *,
        kind: AttentionKind = "galerkin",
        heads: int = 1,
        dim_head: int | None = None,
        ndim: int = 1,
        rope_scale: float = 1.0,
        min_freq: float = 1.0 / 32,
        cross: bool = False,
        rngs: nnx.Rngs,
    ):
        if kind not in ("galerkin", "fourier"):
            raise ValueError(f"attention kind must be 'galerkin' or 'fourier', got {kind!r}.")
        dim_head = dim if dim_head is None else dim_head
        if dim_head % (2 * ndim):
            raise ValueError(
                f"dim_head={dim_head} must be divisible by 2 * ndim = {2 * ndim} (rotary pairs "
                "per coordinate axis)."
            )
        self.kind = kind
        self.heads = heads
        self.dim_head = dim_head
        self.rope_scale = float(rope_scale)
        self.min_freq = float(min_freq)
        inner = heads * dim_head
        gain = 1.0 / dim_head

        def proj(special: bool) -> nnx.Linear:
            if special:
                return _orthogonal_diag_linear(dim, heads, dim_head, gain, rngs=rngs)
            return _torch_linear(dim, inner, use_bias=False, rngs=rngs)

        self.to_q = proj(cross or kind == "galerkin")
        self.to_k = proj(cross)
        self.to_v = proj(cross or kind == "fourier")
        if heads == 1 and dim_head == dim:
            self.to_out = None
        else:
            self.to_out = _torch_linear(inner, dim, rngs=rngs)

    def _heads(self, t: jax.Array) -> jax.Array:
        b, n, _ = t.shape
        return t.reshape(b, n, self.heads, self.dim_head).transpose(0, 2, 1, 3)

    def __call__(
        self,
        x: jax.Array,
        pos: jax.Array,
        z: jax.Array | None = None,
        z_pos: jax.Array | None = None,
    ) -> jax.Array:
        """``x``: ``(B, m, dim)`` at coordinates ``pos`` ``(B, m, ndim)``; ``z``/``z_pos`` the keys' (default ``x``/``pos``)."""
        if z is None:
            z, z_pos = x, pos
        q = self._heads(self.to_q(x))
        k = self._heads(self.to_k(z))
        v = self._heads(self.to_v(z))
        if self.kind == "galerkin":
            k, v = instance_norm(k), instance_norm(v)
        else:
            q, k = instance_norm(q), instance_norm(k)
        q = apply_rotary(q, pos, self.rope_scale, self.min_freq)
        k = apply_rotary(k, z_pos, self.rope_scale, self.min_freq)
        out = linear_attention(q, k, v)  # (B, heads, m, dim_head)
        b, _, m, _ = out.shape
        out = out.transpose(0, 2, 1, 3).reshape(b, m, self.heads * self.dim_head)
        return out if self.to_out is None else self.to_out(out)


class OFormerLayer(nnx.Module):
    """One encoder layer: ``x = res1(x, attn(x, pos))``, ``x = res2(x, ffn(x))``.

    With ``layer_norm=True`` the residual stream is normalised before each add
    (``x = ln1(x)``, ``x = ln2(x)``; the released ``use_ln=True``). ``res1`` /
    ``res2`` are ``None`` (plain ``x + v``) or :class:`KineticResidual`
    (``layout="token"``); see :class:`OFormer` for the arguments.
    """

    def __init__(
        self,
        dim: int,
        *,
        kind: AttentionKind,
        heads: int,
        dim_head: int,
        mlp_dim: int,
        ndim: int,
        rope_scale: float,
        min_freq: float,
        layer_norm: bool = False,
        residual: Residual = "plain",
        particle_dim: int = 12,
        coll_coef: float = 0.9,
        rule: dsmc.DSMCRule = "hard_sphere",
        length_scale: float | str | None = None,
        rngs: nnx.Rngs,
    ):
        check_options(residual=residual)
        if layer_norm:
            self.ln1 = nnx.LayerNorm(dim, epsilon=NORM_EPS, rngs=rngs)
            self.ln2 = nnx.LayerNorm(dim, epsilon=NORM_EPS, rngs=rngs)
        else:
            self.ln1 = self.ln2 = None
        self.attn = LinearAttention(
            dim,
            kind=kind,
            heads=heads,
            dim_head=dim_head,
            ndim=ndim,
            rope_scale=rope_scale,
            min_freq=min_freq,
            rngs=rngs,
        )
        self.ffn = FeedForward(dim, mlp_dim, rngs=rngs)
        kw = dict(particle_dim=particle_dim, coll_coef=coll_coef, rule=rule)
        self.res1 = token_residual(residual, length_scale=length_scale, **kw)
        self.res2 = token_residual(residual, length_scale=length_scale, **kw)

    def __call__(self, x: jax.Array, pos: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        if self.ln1 is not None:
            x = self.ln1(x)
        x = residual_add(self.res1, x, self.attn(x, pos), rngs)
        if self.ln2 is not None:
            x = self.ln2(x)
        return residual_add(self.res2, x, self.ffn(x), rngs)


class CrossAttentionBlock(nnx.Module):
    """The decoder's ``CrossFormer``: ``x = x + cross_attn(x, z)``, ``x = x + ffn(x)`` (plain adds)."""

    def __init__(
        self,
        dim: int,
        *,
        kind: AttentionKind,
        heads: int,
        ndim: int,
        rope_scale: float,
        min_freq: float,
        rngs: nnx.Rngs,
    ):
        self.attn = LinearAttention(
            dim,
            kind=kind,
            heads=heads,
            dim_head=dim,
            ndim=ndim,
            rope_scale=rope_scale,
            min_freq=min_freq,
            cross=True,
            rngs=rngs,
        )
        self.ffn = FeedForward(dim, dim, rngs=rngs)

    def __call__(self, x: jax.Array, x_pos: jax.Array, z: jax.Array, z_pos: jax.Array):
        x = x + self.attn(x, x_pos, z, z_pos)
        return x + self.ffn(x)


class _Propagator(nnx.Module):
    """``Linear-GELU-Linear-GELU-Linear`` (bias-free, orthogonal + diagonal init, gain ``1 / dim``)."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        self.fcs = nnx.List(
            [_orthogonal_diag_linear(dim, 1, dim, 1.0 / dim, rngs=rngs) for _ in range(3)]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = _gelu(self.fcs[0](x))
        x = _gelu(self.fcs[1](x))
        return self.fcs[2](x)


def _grid(spatial: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """Coordinates ``(x_j = j / N, ...)`` of a grid, flattened: ``(prod(spatial), ndim)``."""
    axes = [jnp.arange(n, dtype=dtype) / n for n in spatial]
    grid = jnp.stack(jnp.meshgrid(*axes, indexing="ij"), axis=-1)
    return grid.reshape(-1, len(spatial))


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"OFormer: {name} must be a positive integer, got {value!r}.")
    return int(value)


def _positive_real(value, name: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"OFormer: {name} must be a finite number > 0, got {value!r}.")
    return float(value)


class OFormer(nnx.Module):
    """OFormer: a linear-attention encoder and a cross-attention point-wise decoder.

    ``OFormer1d`` and ``OFormer2d`` are this class with the defaults of the
    released Burgers model (1-D) and a Galerkin 2-D variant. See the module
    docstring for the architecture and every choice made here.

    ``model(u, rngs=rngs)`` maps ``u`` ``(B, *spatial)`` (one input channel;
    output ``(B, *spatial)``) or ``(B, *spatial, in_channels)`` (output
    ``(B, *spatial, out_channels)``) on the grid ``x_j = j / N``; the same
    weights apply on any grid (attention averages over the points, the
    rotary and Fourier features depend on the physical coordinates only).
    ``query`` evaluates the output at other coordinates instead.

    Randomness: only the collisions of the kinetic residuals (stream
    ``collision``, falling back to ``default``), only in train mode with
    ``rngs`` given; ``rngs=None`` or ``model.eval()`` give a deterministic
    forward pass, identical to the plain model's.

    Args:
      ndim: spatial dimensions (1 or 2).
      in_channels, out_channels: channels of the input field and the output.
      width: token size of the encoder (released Burgers: 96).
      latent: size of the encoded latent and of the decoder (96).
      depth: encoder layers (4).
      heads: encoder attention heads, each of size ``width`` (released: 1,
        so the heads need no output projection).
      mlp_dim: hidden size of the encoder's GeGLU MLPs (default ``width``).
      attention: encoder attention, ``"fourier"`` (released Burgers) or
        ``"galerkin"`` (released 2-D Darcy / airfoil).
      decoder_attention: the decoder's cross-attention kind.
      decoder_heads: cross-attention heads, each of size ``latent`` (8).
      propagator_depth: residual MLPs of the decoder (3).
      rope_scales: rotary scale of each encoder layer (``depth`` numbers;
        default ``8, 4, 4, 1, 1, ...``, the released Burgers schedule).
      decoder_rope_scale: rotary scale of the cross-attention (1).
      min_freq: rotary ``min_freq`` (fixed; see the module docstring).
      fourier_scale: standard deviation of the Gaussian Fourier matrix (2).
      layer_norm: normalise the residual stream in each encoder layer.
      residual: ``"plain"`` or ``"kinetic"`` (both adds of every encoder layer).
      particle_dim: particle size of the kinetic residuals (must divide
        ``width``; default ``width / 8``, 8 particles per token).
      coll_coef, rule, length_scale: passed to every
        :class:`~kinetix.nn.KineticResidual` (ignored if plain).
      rngs: ``nnx.Rngs`` with a ``params`` stream. The kinetic residuals draw
        no parameters, so plain and kinetic models from the same seed have the
        same parameters.

    Raises:
      ValueError: a size that is not a positive integer, ``ndim`` not 1 or 2,
        ``width <= ndim``, ``width`` / ``latent`` not divisible by ``2 * ndim``,
        ``latent`` odd or < 2, ``particle_dim`` not dividing ``width``, a wrong
        number of ``rope_scales``, an unknown attention kind or residual.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from kinetix.nn.oformer import OFormer1d, layer_collision_rates
      >>> model = OFormer1d(width=32, latent=32, residual="kinetic", rngs=nnx.Rngs(0))
      >>> model(jnp.zeros((2, 64)), rngs=nnx.Rngs(collision=1)).shape
      (2, 64)
      >>> len(layer_collision_rates(model))  # two residuals per encoder layer
      8
      >>> model.eval(); model(jnp.zeros((2, 128))).shape  # another grid
      (2, 128)
    """

    def __init__(
        self,
        ndim: int,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        width: int = 96,
        latent: int = 96,
        depth: int = 4,
        heads: int = 1,
        mlp_dim: int | None = None,
        attention: AttentionKind = "fourier",
        decoder_attention: AttentionKind = "fourier",
        decoder_heads: int = 8,
        propagator_depth: int = 3,
        rope_scales: Sequence[float] | None = None,
        decoder_rope_scale: float = 1.0,
        min_freq: float = 1.0 / 32,
        fourier_scale: float = 2.0,
        layer_norm: bool = False,
        residual: Residual = "plain",
        particle_dim: int | None = None,
        coll_coef: float = 0.9,
        rule: dsmc.DSMCRule = "hard_sphere",
        length_scale: float | str | None = None,
        rngs: nnx.Rngs,
    ):
        if ndim not in (1, 2) or isinstance(ndim, bool):
            raise ValueError(f"OFormer: ndim must be 1 or 2, got {ndim!r}.")
        mlp_dim = width if mlp_dim is None else mlp_dim
        sizes = dict(in_channels=in_channels, out_channels=out_channels, width=width)
        sizes.update(latent=latent, depth=depth, heads=heads, mlp_dim=mlp_dim)
        sizes.update(decoder_heads=decoder_heads)
        for name, value in sizes.items():
            _positive_int(value, name)
        if isinstance(propagator_depth, bool) or not isinstance(propagator_depth, int):
            raise ValueError(
                f"OFormer: propagator_depth must be an integer >= 0, got {propagator_depth!r}."
            )
        if propagator_depth < 0:
            raise ValueError(f"OFormer: propagator_depth must be >= 0, got {propagator_depth}.")
        if width <= ndim or width % (2 * ndim):
            raise ValueError(
                f"OFormer: width={width} must be > ndim and divisible by 2 * ndim = {2 * ndim}."
            )
        if latent < 2 or latent % (2 * ndim):
            raise ValueError(
                f"OFormer: latent={latent} must be >= 2 and divisible by 2 * ndim = {2 * ndim}."
            )
        for kind_name, kind in (("attention", attention), ("decoder_attention", decoder_attention)):
            if kind not in ("galerkin", "fourier"):
                raise ValueError(
                    f"OFormer: {kind_name} must be 'galerkin' or 'fourier', got {kind!r}."
                )
        check_options(residual=residual, coll_coef=coll_coef, rule=rule)
        if rope_scales is None:
            rope_scales = ([8.0, 4.0, 4.0] + [1.0] * depth)[:depth]
        rope_scales = [_positive_real(s, "rope_scales entry") for s in rope_scales]
        if len(rope_scales) != depth:
            raise ValueError(
                f"OFormer: rope_scales needs one entry per encoder layer ({depth}), "
                f"got {len(rope_scales)}."
            )
        decoder_rope_scale = _positive_real(decoder_rope_scale, "decoder_rope_scale")
        min_freq = _positive_real(min_freq, "min_freq")
        fourier_scale = _positive_real(fourier_scale, "fourier_scale")
        if particle_dim is None:
            particle_dim = max(1, width // 8)
        _positive_int(particle_dim, "particle_dim")
        if residual == "kinetic" and width % particle_dim:
            raise ValueError(f"OFormer: particle_dim={particle_dim} must divide width={width}.")

        self.ndim = ndim
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.width = width
        self.latent = latent
        self.residual = residual
        # encoder
        self.embed = _torch_linear(in_channels + ndim, width - ndim, use_bias=False, rngs=rngs)
        self.layers = nnx.List(
            [
                OFormerLayer(
                    width,
                    kind=attention,
                    heads=heads,
                    dim_head=width,
                    mlp_dim=mlp_dim,
                    ndim=ndim,
                    rope_scale=scale,
                    min_freq=min_freq,
                    layer_norm=layer_norm,
                    residual=residual,
                    particle_dim=particle_dim,
                    coll_coef=coll_coef,
                    rule=rule,
                    length_scale=length_scale,
                    rngs=rngs,
                )
                for scale in rope_scales
            ]
        )
        self.to_latent = _torch_linear(width, latent, use_bias=False, rngs=rngs)
        # decoder
        self.query_features = GaussianFourierFeatures(ndim, latent, fourier_scale, rngs=rngs)
        self.query_embed = _torch_linear(2 * latent, latent, use_bias=False, rngs=rngs)
        self.cross = CrossAttentionBlock(
            latent,
            kind=decoder_attention,
            heads=decoder_heads,
            ndim=ndim,
            rope_scale=decoder_rope_scale,
            min_freq=min_freq,
            rngs=rngs,
        )
        self.propagator = nnx.List(
            [_Propagator(latent, rngs=rngs) for _ in range(propagator_depth)]
        )
        self.out1 = _torch_linear(latent, latent // 2, use_bias=False, rngs=rngs)
        self.out2 = _torch_linear(latent // 2, out_channels, rngs=rngs)

    def _tokens(self, u: jax.Array) -> tuple[jax.Array, tuple[int, ...], bool]:
        u = jnp.asarray(u)
        squeeze = u.ndim == self.ndim + 1
        if squeeze:
            if self.in_channels != 1:
                raise ValueError(
                    f"OFormer: input {u.shape} has no channel axis but "
                    f"in_channels={self.in_channels}."
                )
            u = u[..., None]
        if u.ndim != self.ndim + 2 or u.shape[-1] != self.in_channels:
            raise ValueError(
                f"OFormer({self.ndim}-D): expected input (B, *{self.ndim} spatial) or "
                f"(B, *spatial, {self.in_channels}), got {u.shape}."
            )
        spatial = tuple(u.shape[1:-1])
        if any(n < 2 for n in spatial):
            raise ValueError(f"OFormer: the grid needs >= 2 points per axis, got {spatial}.")
        return u.reshape(u.shape[0], -1, self.in_channels), spatial, squeeze

    def encode(self, u: jax.Array, pos: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Latent ``(B, n, latent)`` of input tokens ``u`` ``(B, n, in_channels)`` at ``pos`` ``(B, n, ndim)``."""
        h = self.embed(jnp.concatenate([u, pos.astype(u.dtype)], axis=-1))
        h = jnp.concatenate([h, pos.astype(h.dtype)], axis=-1)
        for layer in self.layers:
            h = layer(h, pos, rngs=rngs)
        return self.to_latent(h)

    def decode(self, z: jax.Array, z_pos: jax.Array, query: jax.Array) -> jax.Array:
        """Output ``(B, m, out_channels)`` at ``query`` ``(B, m, ndim)`` from the latent ``z`` at ``z_pos``."""
        x = self.query_embed(_gelu(self.query_features(query.astype(z.dtype))))
        x = self.cross(x, query, z, z_pos)
        for block in self.propagator:
            x = x + block(x)
        return self.out2(_gelu(self.out1(x)))

    def __call__(
        self, u: jax.Array, *, query: jax.Array | None = None, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        """Evaluates the operator on the grid of ``u`` (or at ``query``).

        Args:
          u: ``(B, *spatial)`` or ``(B, *spatial, in_channels)`` on the grid
            ``x_j = j / N`` of each axis.
          query: optional ``(m, ndim)`` or ``(B, m, ndim)`` output coordinates.
          rngs: collision randomness (kinetic residuals, train mode only).

        Returns:
          ``(B, *spatial)`` / ``(B, *spatial, out_channels)``, or with
          ``query`` ``(B, m)`` / ``(B, m, out_channels)`` (the channel axis is
          dropped when ``u`` had none and ``out_channels == 1``).
        """
        tokens, spatial, squeeze = self._tokens(u)
        b = tokens.shape[0]
        if query is not None:
            query = jnp.asarray(query)
            if query.ndim == 2:
                query = jnp.broadcast_to(query, (b, *query.shape))
            if query.ndim != 3 or query.shape[0] != b or query.shape[-1] != self.ndim:
                raise ValueError(
                    f"OFormer: query must be (m, {self.ndim}) or ({b}, m, {self.ndim}) "
                    f"coordinates, got {query.shape}."
                )
        pos = jnp.broadcast_to(_grid(spatial, tokens.dtype), (b, tokens.shape[1], self.ndim))
        z = self.encode(tokens, pos, rngs=rngs)
        if query is None:
            out = self.decode(z, pos, pos).reshape((b, *spatial, self.out_channels))
        else:
            out = self.decode(z, pos, query)
        return out[..., 0] if squeeze and self.out_channels == 1 else out


class OFormer1d(OFormer):
    """OFormer-1D with the released Burgers model's settings (``Encoder1D`` + ``PointWiseDecoder1D``).

    ``width = latent = 96``, 4 encoder layers (1 head, Fourier-type attention,
    rotary scales 8, 4, 4, 1, no layer norm), decoder with 8 Fourier-type
    cross-attention heads and 3 propagator MLPs, Gaussian Fourier scale 2.
    Kinetic: 8 particles of 12 features per token, ``coll_coef = 0.9``. See
    :class:`OFormer` for the arguments.
    """

    def __init__(self, *, rngs: nnx.Rngs, **kwargs):
        super().__init__(1, rngs=rngs, **kwargs)


class OFormer2d(OFormer):
    """OFormer-2D: Galerkin-type attention with layer norm (the released 2-D encoders' choice).

    Defaults: ``width = latent = 96``, 4 encoder layers (1 head, Galerkin,
    rotary scales 8, 4, 4, 1, layer norm), decoder with 4 Galerkin-type
    cross-attention heads and 3 propagator MLPs, Gaussian Fourier scale 2.
    No released 2-D configuration matches ``train.pde``'s heat problem, so
    these are kinetix choices. See :class:`OFormer` for the arguments.
    """

    def __init__(
        self,
        *,
        attention: AttentionKind = "galerkin",
        decoder_attention: AttentionKind = "galerkin",
        decoder_heads: int = 4,
        layer_norm: bool = True,
        rngs: nnx.Rngs,
        **kwargs,
    ):
        super().__init__(
            2,
            attention=attention,
            decoder_attention=decoder_attention,
            decoder_heads=decoder_heads,
            layer_norm=layer_norm,
            rngs=rngs,
            **kwargs,
        )


def layer_collision_rates(model: OFormer) -> list[jax.Array] | None:
    """The last training call's collision rates, two per encoder layer (``None`` if plain).

    Order: layer 0 attention add, layer 0 MLP add, layer 1 attention add, ...
    Traceable (usable inside ``jit``), as :func:`kinetix.nn.fno.layer_collision_rates`;
    :func:`kinetix.nn.kinetic.collision_rates` gives the same rates as a
    ``{path: float}`` dict.
    """
    if model.residual != "kinetic":
        return None
    return [
        r
        for layer in model.layers
        for r in (layer.res1.collision_rate[...], layer.res2.collision_rate[...])
    ]
