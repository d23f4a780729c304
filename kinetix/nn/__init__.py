"""Flax NNX modules of kinetix."""

from kinetix.nn.kinetic import CollisionRate, KineticResidual

__all__ = ["CollisionRate", "KineticResidual"]
