"""kinetix: physics-inspired deep learning in JAX.

* KO (kinetics-inspired optimizer): ``optax.chain(kinetix.ko_hard(...), optax.adamw(...))``.
* KITINet: :func:`kinetix.dsmc.collide` and the NNX module ``kinetix.nn.KineticResidual``.

Subpackages imported on demand: ``kinetix.nn`` (Flax NNX modules and models),
``kinetix.data`` (generated data sets).
"""

from kinetix import collision, diffusion, dsmc, metrics
from kinetix.ko import KOState, canonicalize_key, ko_hard, ko_soft
from kinetix.masks import leaf_paths, path_mask
from kinetix.metrics import collision_rates

__version__ = "0.1.0"

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
