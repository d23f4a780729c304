"""kinetix: physics-inspired deep learning in JAX.

* KO (kinetics-inspired optimizer): ``optax.chain(kinetix.ko_hard(...), optax.adamw(...))``.
* KITINet: :func:`kinetix.dsmc.collide` and the NNX module ``kinetix.nn.KineticResidual``.

Subpackages imported on first use: ``kinetix.nn`` (Flax NNX modules and models) and
``kinetix.data`` (data sets) are attributes of the package (``import kinetix;
kinetix.nn.KineticResidual``), but Flax and the data loaders are only imported when
one of them is first touched, so users of KO alone never load them.
"""

import importlib

from kinetix import collision, diffusion, dsmc, metrics
from kinetix.ko import KOState, canonicalize_key, ko_hard, ko_soft
from kinetix.masks import leaf_paths, path_mask
from kinetix.metrics import collision_rates

__version__ = "0.1.0"

_LAZY_SUBPACKAGES = ("nn", "data")


def __getattr__(name: str):
    # PEP 562: kinetix.nn / kinetix.data are imported on first access.
    if name in _LAZY_SUBPACKAGES:
        return importlib.import_module(f"kinetix.{name}")
    raise AttributeError(f"module 'kinetix' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY_SUBPACKAGES))


__all__ = [
    "KOState",
    "canonicalize_key",
    "collision",
    "collision_rates",
    "diffusion",
    "dsmc",
    "ko_hard",
    "ko_soft",
    "leaf_paths",
    "metrics",
    "path_mask",
]
