"""kinetix: physics-inspired deep learning in JAX.

KO (kinetics-inspired optimizer): ``optax.chain(kinetix.ko_hard(...), optax.adamw(...))``.
"""

from kinetix import collision, metrics
from kinetix.ko import KOState, canonicalize_key, ko_hard, ko_soft
from kinetix.masks import leaf_paths, path_mask
from kinetix.metrics import collision_rates

__version__ = "0.1.0"

__all__ = [
    "KOState",
    "canonicalize_key",
    "collision",
    "collision_rates",
    "ko_hard",
    "ko_soft",
    "leaf_paths",
    "metrics",
    "path_mask",
]
