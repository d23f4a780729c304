"""Data sets generated in JAX (no downloads).

:mod:`kinetix.data.pde`: PDE operator-learning data (1-D Burgers, 2-D heat)
with an ``.npz`` disk cache.
"""

from kinetix.data import pde
from kinetix.data.pde import (
    burgers,
    default_cache_dir,
    grf1d,
    grf2d,
    heat2d,
    load_or_generate,
    solve_burgers,
    solve_heat2d,
    subsample2d,
)

__all__ = [
    "burgers",
    "default_cache_dir",
    "grf1d",
    "grf2d",
    "heat2d",
    "load_or_generate",
    "pde",
    "solve_burgers",
    "solve_heat2d",
    "subsample2d",
]
