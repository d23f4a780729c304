"""Select parameter leaves by path, for ``mask=`` arguments and ``optax.masked``.

The KO paper collides the classifier layer only. :func:`path_mask` builds the
mask from the leaves' paths, so the same mask works for a Linen ``params`` dict,
a Flax NNX ``nnx.State`` (as given to ``nnx.Optimizer``) and any other pytree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax


def leaf_paths(tree: Any) -> list[str]:
    """The ``'/'``-joined path of every leaf, e.g. ``'classifier/kernel'``.

    Useful to find the pattern for :func:`path_mask`. Flax NNX ``Variable``
    wrappers (``.value``) do not appear in the path.
    """
    return [_path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _path_str(path) -> str:
    parts = []
    for entry in path:
        if isinstance(entry, jax.tree_util.DictKey):
            parts.append(str(entry.key))
        elif isinstance(entry, jax.tree_util.SequenceKey):
            parts.append(str(entry.idx))
        elif isinstance(entry, jax.tree_util.GetAttrKey):
            if entry.name in ("value", "raw_value"):  # NNX Variable payload
                continue
            parts.append(entry.name)
        elif isinstance(entry, jax.tree_util.FlattenedIndexKey):
            parts.append(str(entry.key))
        else:
            parts.append(str(entry))
    return "/".join(parts)


def path_mask(pattern: str | Callable[[str], bool]) -> Callable[[Any], Any]:
    """A mask function selecting the leaves whose path matches ``pattern``.

    Args:
      pattern: a regular expression searched (``re.search``) in each leaf's
        ``'/'``-joined path (see :func:`leaf_paths`), or a predicate on that path.

    Returns:
      A callable ``tree -> tree of bools``, for ``kinetix.ko_soft(mask=...)``,
      ``kinetix.ko_hard(mask=...)`` or ``optax.masked``.

    Example:
      >>> import jax.numpy as jnp, kinetix
      >>> params = {"backbone": {"kernel": jnp.ones((3, 4))},
      ...           "classifier": {"kernel": jnp.ones((4, 2)), "bias": jnp.zeros(2)}}
      >>> kinetix.path_mask(r"classifier/kernel")(params)
      {'backbone': {'kernel': False}, 'classifier': {'bias': False, 'kernel': True}}
    """
    if isinstance(pattern, str):
        regex = re.compile(pattern)

        def pred(path: str) -> bool:
            return regex.search(path) is not None

    elif callable(pattern):
        pred = pattern
    else:
        raise TypeError(
            f"pattern must be a regex string or a predicate, got {type(pattern).__name__}."
        )

    def mask_fn(tree):
        if jax.tree_util.treedef_is_leaf(jax.tree.structure(tree)):
            raise TypeError(
                f"path_mask({pattern!r}) was called on a single {type(tree).__name__}, not a "
                "parameter tree. Under optax.inject_hyperparams a callable mask is mistaken for a "
                "schedule: pass static_args=('mask',)."
            )
        matched = jax.tree_util.tree_map_with_path(lambda p, _: bool(pred(_path_str(p))), tree)
        if not any(jax.tree.leaves(matched)):
            raise ValueError(
                f"path_mask({pattern!r}) matched no leaf. Leaf paths are: {leaf_paths(tree)[:20]}"
            )
        return matched

    return mask_fn
