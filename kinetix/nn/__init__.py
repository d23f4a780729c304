"""Flax NNX modules of kinetix: the KITINet residual and the models built on it."""

from kinetix.nn.kinetic import CollisionRate, KineticResidual, collision_rates
from kinetix.nn.resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50
from kinetix.nn.transformer import EncoderLayer, TextEncoder

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "CollisionRate",
    "EncoderLayer",
    "KineticResidual",
    "ResNet",
    "TextEncoder",
    "collision_rates",
    "resnet18",
    "resnet34",
    "resnet50",
]
