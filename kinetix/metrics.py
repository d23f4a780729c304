"""Neuron-similarity diagnostics: how condensed a layer's neurons are.

* :func:`cosine_matrix`: the ``N x N`` cosine similarity of a layer's neurons
  (the heat-maps of the KO paper's Fig. 2).
* :func:`neuron_similarity`: mean and max off-diagonal ``|cos|`` (Fig. 3 plots
  the max as "neuron similarity").
* :func:`weight_correlation`: Jin et al.'s network weight correlation, the
  quantity KO's Theorem 3.3 says collisions decrease.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from kinetix import collision


class NeuronSimilarity(NamedTuple):
    """Off-diagonal statistics of a cosine-similarity matrix."""

    mean_abs_cos: jax.Array
    max_abs_cos: jax.Array


def cosine_matrix(w: jax.Array, axis: int = -1) -> jax.Array:
    """Cosine similarity of the neurons of ``w``, one neuron per index of ``axis``.

    For a Flax ``(in, out)`` kernel and ``axis=-1`` the neurons are the output
    units and their vectors the incoming weights, as in the paper.

    Returns:
      An ``(N, N)`` float32 matrix; a zero neuron has cosine 0 with all others.
    """
    return collision.cosine_similarity(collision.as_particles(w, axis))


def neuron_similarity(w: jax.Array, axis: int = -1) -> NeuronSimilarity:
    """Mean and max of ``|cos(w_i, w_j)|`` over pairs ``i != j``.

    Example:
      >>> import jax.numpy as jnp, kinetix
      >>> s = kinetix.metrics.neuron_similarity(jnp.array([[1.0, 1.0], [0.0, 1.0]]))
      >>> round(float(s.max_abs_cos), 4)
      0.7071
    """
    c = jnp.abs(cosine_matrix(w, axis))
    n = c.shape[0]
    if n < 2:
        raise ValueError(f"neuron_similarity needs at least 2 neurons, got {n} (shape {w.shape}).")
    off = ~jnp.eye(n, dtype=bool)
    mean = jnp.sum(jnp.where(off, c, 0.0)) / (n * (n - 1))
    return NeuronSimilarity(mean_abs_cos=mean, max_abs_cos=jnp.max(jnp.where(off, c, 0.0)))


def weight_correlation(params: Any, axis: int = -1) -> jax.Array:
    r"""Weight correlation of Jin et al. (2020), averaged over layers.

    For each leaf with at least 2 dimensions and at least 2 neurons,
    :math:`\rho_l = \frac{1}{N_l (N_l - 1)} \sum_{i \ne j} |\cos(w_i, w_j)|`;
    the network's weight correlation is the mean of :math:`\rho_l` over layers.

    Args:
      params: a single weight array or a tree of them.
      axis: neuron axis of each leaf.

    Returns:
      A float32 scalar.

    References:
      Jin et al., `How does weight correlation affect the generalisation ability
      of deep neural networks <https://arxiv.org/abs/2010.05983>`_, NeurIPS 2020.
    """
    rhos = [
        neuron_similarity(x, axis).mean_abs_cos
        for x in jax.tree.leaves(params)
        if jnp.ndim(x) >= 2
        and jnp.shape(x)[axis] >= 2
        and jnp.issubdtype(jnp.result_type(x), jnp.floating)
    ]
    if not rhos:
        raise ValueError(
            "weight_correlation found no leaf with at least 2 dimensions and 2 neurons."
        )
    return jnp.mean(jnp.stack(rhos))


def collision_rates(opt_state: Any) -> dict[str, float]:
    """Each colliding leaf's last collision rate, from an optimizer state holding a KOState.

    Works on the state of ``ko_soft``/``ko_hard`` alone or nested in
    ``optax.chain``, ``optax.masked`` or ``optax.inject_hyperparams``.

    Returns:
      ``{leaf path: rate}`` for the leaves with at least 2 dimensions.
    """
    from kinetix.ko import KOState
    from kinetix.masks import _path_str

    found = []

    def visit(x):
        if isinstance(x, KOState):
            found.append(x)
            return True
        return False

    jax.tree.leaves(opt_state, is_leaf=visit)
    if not found:
        raise ValueError(
            "collision_rates: no KOState (ko_soft/ko_hard) found in this optimizer state."
        )
    out = {}
    for k, state in enumerate(found):
        prefix = f"ko{k}/" if len(found) > 1 else ""
        for path, rate in jax.tree_util.tree_flatten_with_path(state.collision_rate)[0]:
            out[prefix + _path_str(path)] = float(rate)
    return out


class ChannelCondensation(NamedTuple):
    """How concentrated a layer's weight is in its output channels.

    Attributes:
      sorted_norms: the L2 norms of the output channels, largest first.
      top_k_share: share of the squared norm held by the ``k`` largest channels.
      k: the ``k`` used.
    """

    sorted_norms: jax.Array
    top_k_share: jax.Array
    k: int


def channel_condensation(w: jax.Array, k: int = 8, axis: int = -1) -> ChannelCondensation:
    """Sorted channel norms and the top-``k`` share of a weight (KITINet's "dominant channels").

    A channel is one index of ``axis`` (the output channels of a Flax kernel);
    its norm is the L2 norm of the rest. ``top_k_share`` is
    ``sum of the k largest squared norms / total squared norm``: ``k / C`` for
    evenly spread channels, 1 when ``k`` channels hold all the weight.

    Example:
      >>> import jax.numpy as jnp, kinetix
      >>> c = kinetix.metrics.channel_condensation(jnp.array([[3.0, 0.0, 4.0]]), k=1)
      >>> [float(x) for x in c.sorted_norms], round(float(c.top_k_share), 2)
      ([4.0, 3.0, 0.0], 0.64)
    """
    p = collision.as_particles(jnp.asarray(w), axis).astype(jnp.float32)
    norms = jnp.linalg.norm(p, axis=-1)
    k = int(k)
    if not 1 <= k <= norms.shape[0]:
        raise ValueError(
            f"k must be in [1, {norms.shape[0]}] for a weight with {norms.shape[0]} channels, got {k}."
        )
    sorted_norms = jnp.sort(norms)[::-1]
    total = jnp.sum(norms**2)
    share = jnp.where(
        total > 0, jnp.sum(sorted_norms[:k] ** 2) / jnp.where(total > 0, total, 1.0), 0.0
    )
    return ChannelCondensation(sorted_norms=sorted_norms, top_k_share=share, k=k)
