"""A small pre-LN Transformer encoder for text classification, with plain or kinetic residuals.

``TextEncoder`` embeds tokens (token + learned position embeddings), runs
``depth`` pre-LN encoder layers (multi-head self-attention with a padding mask,
then a GELU MLP), mean-pools the non-padding tokens and applies a ``classifier``
``nnx.Linear``. Each layer has two residual adds, ``x + attn(ln1(x))`` and
``x + mlp(ln2(x))``; with ``residual="kinetic"`` both are
:class:`kinetix.nn.KineticResidual` (``layout="token"``): each token's hidden
vector is split into ``dim / particle_dim`` particles of dimension
``particle_dim`` that collide within the token (the layout of KITINet's
released token-level ``kinet.py``). In eval mode, or when called with
``rngs=None``, the kinetic model computes exactly what the plain model computes.
"""

from __future__ import annotations

import numbers
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from kinetix import dsmc
from kinetix.nn.kinetic import check_options, residual_add, token_residual

__all__ = ["EncoderLayer", "TextEncoder"]

Residual = Literal["plain", "kinetic"]

# BERT-style initialisation: normal(0.02) weights, zero biases.
_init = nnx.initializers.normal(0.02)


def _dropout(layer: nnx.Dropout, x: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
    # rngs=None means a deterministic forward pass (no dropout, no collisions).
    if rngs is None:
        return layer(x, deterministic=True)
    return layer(x, rngs=rngs)


class EncoderLayer(nnx.Module):
    """One pre-LN encoder layer: ``x = res1(x, attn(ln1(x)))``, ``x = res2(x, mlp(ln2(x)))``.

    ``res1``/``res2`` are ``None`` (plain ``x + v``) or :class:`KineticResidual`.
    Dropout is applied to the attention output, after the MLP's GELU and to
    the MLP output.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_dim: int,
        *,
        dropout: float = 0.1,
        residual: Residual = "plain",
        particle_dim: int = 16,
        coll_coef: float = 0.5,
        rule: dsmc.DSMCRule = "hard_sphere",
        length_scale: float | str | None = None,
        rngs: nnx.Rngs,
    ):
        self.ln1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(
            heads,
            dim,
            kernel_init=_init,
            decode=False,
            keep_rngs=False,
            rngs=rngs,
        )
        self.ln2 = nnx.LayerNorm(dim, rngs=rngs)
        self.mlp_in = nnx.Linear(dim, mlp_dim, kernel_init=_init, rngs=rngs)
        self.mlp_out = nnx.Linear(mlp_dim, dim, kernel_init=_init, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)
        kw = dict(particle_dim=particle_dim, coll_coef=coll_coef, rule=rule)
        self.res1 = token_residual(residual, length_scale=length_scale, **kw)
        self.res2 = token_residual(residual, length_scale=length_scale, **kw)

    def __call__(
        self, x: jax.Array, attn_mask: jax.Array | None = None, *, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        h = self.attn(self.ln1(x), mask=attn_mask)
        x = residual_add(self.res1, x, _dropout(self.dropout, h, rngs), rngs)
        h = _dropout(self.dropout, jax.nn.gelu(self.mlp_in(self.ln2(x))), rngs)
        h = _dropout(self.dropout, self.mlp_out(h), rngs)
        return residual_add(self.res2, x, h, rngs)


class TextEncoder(nnx.Module):
    """A small Transformer encoder classifier with plain or KITINet kinetic residuals.

    ``model(tokens, mask, rngs=rngs)`` maps ``(B, T)`` integer tokens (``T <=
    max_len``) and an optional ``(B, T)`` padding mask (true = real token;
    ``None``: all tokens are real) to ``(B, num_classes)`` logits. Padding
    tokens are masked out as attention keys and excluded from the mean pool; a
    sequence with no real token pools to zeros.

    Randomness: dropout (stream ``dropout``) and collisions (stream
    ``collision``; both fall back to ``default``) happen only in train mode
    with ``rngs`` given. ``rngs=None`` or ``model.eval()`` give a deterministic
    forward pass, identical to the plain model's.

    Args:
      vocab_size: number of token ids.
      num_classes: number of logits.
      dim: model width (must be divisible by ``heads`` and ``particle_dim``).
      depth: number of encoder layers.
      heads: attention heads.
      mlp_dim: hidden width of the MLPs.
      max_len: number of learned positions.
      dropout: dropout rate (embeddings, attention/MLP outputs, pooled features).
      residual: ``"plain"`` or ``"kinetic"`` (both residuals of every layer).
      particle_dim: dimension of the particles of the kinetic residuals; a
        token has ``dim / particle_dim`` particles (8 with the defaults).
      coll_coef, rule, length_scale: passed to every
        :class:`~kinetix.nn.KineticResidual` (ignored if ``residual="plain"``).
      rngs: parameter initialisation (the kinetic residuals draw no
        parameters, so plain and kinetic models built from the same seed have
        the same parameters).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from kinetix.nn.transformer import TextEncoder
      >>> model = TextEncoder(100, 2, dim=32, heads=2, mlp_dim=64, residual="kinetic",
      ...                     particle_dim=8, rngs=nnx.Rngs(0))
      >>> tokens = jnp.array([[5, 7, 9, 0], [3, 4, 0, 0]])
      >>> model(tokens, tokens != 0, rngs=nnx.Rngs(1)).shape
      (2, 2)
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        *,
        dim: int = 128,
        depth: int = 2,
        heads: int = 4,
        mlp_dim: int = 256,
        max_len: int = 256,
        dropout: float = 0.1,
        residual: Residual = "plain",
        particle_dim: int = 16,
        coll_coef: float = 0.5,
        rule: dsmc.DSMCRule = "hard_sphere",
        length_scale: float | str | None = None,
        rngs: nnx.Rngs,
    ):
        check_options(residual=residual)
        sizes = dict(vocab_size=vocab_size, num_classes=num_classes, dim=dim, depth=depth)
        sizes.update(heads=heads, mlp_dim=mlp_dim, max_len=max_len, particle_dim=particle_dim)
        for name, val in sizes.items():
            if not isinstance(val, numbers.Integral) or val < 1:
                raise ValueError(f"{name} must be a positive integer, got {val!r}.")
        if dim % heads:
            raise ValueError(f"heads={heads} must divide dim={dim}.")
        if residual == "kinetic" and dim % particle_dim:
            raise ValueError(f"particle_dim={particle_dim} must divide dim={dim}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.vocab_size = vocab_size
        self.max_len = max_len
        self.residual = residual
        self.tok_embed = nnx.Embed(vocab_size, dim, embedding_init=_init, rngs=rngs)
        self.pos_embed = nnx.Embed(max_len, dim, embedding_init=_init, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)
        self.layers = nnx.List(
            [
                EncoderLayer(
                    dim,
                    heads,
                    mlp_dim,
                    dropout=dropout,
                    residual=residual,
                    particle_dim=particle_dim,
                    coll_coef=coll_coef,
                    rule=rule,
                    length_scale=length_scale,
                    rngs=rngs,
                )
                for _ in range(depth)
            ]
        )
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.classifier = nnx.Linear(dim, num_classes, kernel_init=_init, rngs=rngs)

    def __call__(
        self, tokens: jax.Array, mask: jax.Array | None = None, *, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 2:
            raise ValueError(f"TextEncoder expects (B, T) token ids, got shape {tokens.shape}.")
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise TypeError(f"TextEncoder expects integer token ids, got {tokens.dtype}.")
        b, t = tokens.shape
        if t > self.max_len:
            raise ValueError(f"sequence length {t} exceeds max_len={self.max_len}.")
        if mask is None:
            mask = jnp.ones((b, t), bool)
        else:
            mask = jnp.asarray(mask)
            if mask.shape != tokens.shape:
                raise ValueError(
                    f"mask shape {mask.shape} must equal the tokens' shape {tokens.shape}."
                )
            mask = mask.astype(bool)

        x = self.tok_embed(tokens) + self.pos_embed(jnp.arange(t))[None]
        x = _dropout(self.dropout, x, rngs)
        attn_mask = mask[:, None, None, :]  # (B, heads=1, q=1, k): padding keys are masked
        for layer in self.layers:
            x = layer(x, attn_mask, rngs=rngs)
        x = self.norm(x)
        m = mask[..., None].astype(x.dtype)
        pooled = (x * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1.0)
        pooled = _dropout(self.dropout, pooled, rngs)
        return self.classifier(pooled)
