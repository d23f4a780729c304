"""Flax NNX modules of kinetix: the KITINet residual and the models built on it."""

from kinetix.nn.fno import (
    FNO,
    FNO1d,
    FNO2d,
    FourierLayer,
    SpectralConv,
    layer_collision_rates,
    pointwise_kernels,
    spectral_weights,
)
from kinetix.nn.kinetic import CollisionRate, KineticResidual, collision_rates
from kinetix.nn.resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50
from kinetix.nn.transformer import EncoderLayer, TextEncoder

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "CollisionRate",
    "EncoderLayer",
    "FNO",
    "FNO1d",
    "FNO2d",
    "FourierLayer",
    "KineticResidual",
    "ResNet",
    "SpectralConv",
    "TextEncoder",
    "collision_rates",
    "layer_collision_rates",
    "pointwise_kernels",
    "resnet18",
    "resnet34",
    "resnet50",
    "spectral_weights",
]
