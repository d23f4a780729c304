"""CIFAR ResNets (kuangliu/pytorch-cifar layout) in Flax NNX, with plain or kinetic residuals.

The layout is the one KITINet's released CIFAR code uses: a 3x3 conv stem
(stride 1, no max-pool), four stages of widths ``w, 2w, 4w, 8w`` (``w = 64``),
BasicBlock (ResNet-18/34) or Bottleneck (ResNet-50) blocks with BatchNorm,
global average pooling and a final ``nnx.Linear`` named ``classifier``.
Features are channels-last (NHWC).

With ``residual="kinetic"`` every block of the ``kinetic_stages`` replaces its
``shortcut(x) + branch(x)`` add by :class:`kinetix.nn.KineticResidual`
(``layout="spatial"``) before the final ReLU; the released code uses stages
2-4 with ``n_divide`` 8, 4, 2 (16 for stage 1 when it is kinetic). In eval mode
(``model.eval()``) or when called with ``rngs=None`` the kinetic model computes
exactly what the plain model computes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from kinetix import dsmc
from kinetix.nn.kinetic import KineticResidual, check_options, collision_rates

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "collision_rates",
    "resnet18",
    "resnet34",
    "resnet50",
]

Residual = Literal["plain", "kinetic"]
BlockKind = Literal["basic", "bottleneck"]


def _batch_norm(features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    # PyTorch's BatchNorm2d defaults: momentum 0.1 (= flax 0.9), eps 1e-5.
    return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, rngs=rngs)


# torchvision's ResNet conv init: kaiming_normal_(mode="fan_out", nonlinearity="relu").
_conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(cin: int, cout: int, kernel: int, stride: int, rngs: nnx.Rngs) -> nnx.Conv:
    # Explicit symmetric padding as PyTorch's Conv2d(padding=kernel // 2), not "SAME",
    # so stride-2 maps are aligned as in the PyTorch model.
    pad = kernel // 2
    return nnx.Conv(
        cin,
        cout,
        (kernel, kernel),
        strides=stride,
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=_conv_init,
        rngs=rngs,
    )


class _Shortcut(nnx.Module):
    """The kuangliu shortcut: identity, or a strided 1x1 conv + BatchNorm projection."""

    def __init__(self, cin: int, cout: int, stride: int, *, rngs: nnx.Rngs):
        if stride != 1 or cin != cout:
            self.conv = _conv(cin, cout, 1, stride, rngs)
            self.bn = _batch_norm(cout, rngs)
        else:
            self.conv = None
            self.bn = None

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.conv is None:
            return x
        return self.bn(self.conv(x))


class _Block(nnx.Module):
    """Shared residual merge of :class:`BasicBlock` and :class:`Bottleneck`."""

    def _merge(self, skip: jax.Array, branch: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
        if self.kinetic is None:
            return skip + branch
        n_divide = self.kinetic.n_divide
        npos = math.prod(skip.shape[1:-1])
        if npos < n_divide:
            # n_divide clamped to the number of positions: the whole map is one
            # particle, which has no collision partner, so this is x + v exactly.
            if rngs is not None and not self.kinetic.deterministic and self.kinetic.coll_coef > 0:
                self.kinetic.collision_rate[...] = jnp.zeros([], jnp.float32)
            return self.kinetic(skip, branch, rngs=None)
        if npos % n_divide:
            spatial = "x".join(str(s) for s in skip.shape[1:-1])
            raise ValueError(
                f"{self.name}: n_divide={n_divide} does not divide the {spatial}={npos} spatial "
                f"positions of its feature map {skip.shape}; choose per-stage n_divide values "
                "that divide H*W at every kinetic stage (an n_divide larger than H*W is clamped "
                "to H*W), or change the input size."
            )
        return self.kinetic(skip, branch, rngs=rngs)


class BasicBlock(_Block):
    """Two 3x3 conv + BN layers; ``relu(merge(shortcut(x), bn2(conv2(relu(bn1(conv1(x)))))))``."""

    expansion = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        kinetic: KineticResidual | None = None,
        name: str = "block",
        rngs: nnx.Rngs,
    ):
        self.name = name
        self.conv1 = _conv(in_planes, planes, 3, stride, rngs)
        self.bn1 = _batch_norm(planes, rngs)
        self.conv2 = _conv(planes, planes, 3, 1, rngs)
        self.bn2 = _batch_norm(planes, rngs)
        self.shortcut = _Shortcut(in_planes, planes * self.expansion, stride, rngs=rngs)
        self.kinetic = kinetic

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        out = jax.nn.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return jax.nn.relu(self._merge(self.shortcut(x), out, rngs))


class Bottleneck(_Block):
    """1x1 -> 3x3 (strided) -> 1x1 (x4 channels) conv + BN layers, as in kuangliu's ResNet-50."""

    expansion = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        kinetic: KineticResidual | None = None,
        name: str = "block",
        rngs: nnx.Rngs,
    ):
        self.name = name
        self.conv1 = _conv(in_planes, planes, 1, 1, rngs)
        self.bn1 = _batch_norm(planes, rngs)
        self.conv2 = _conv(planes, planes, 3, stride, rngs)
        self.bn2 = _batch_norm(planes, rngs)
        self.conv3 = _conv(planes, planes * self.expansion, 1, 1, rngs)
        self.bn3 = _batch_norm(planes * self.expansion, rngs)
        self.shortcut = _Shortcut(in_planes, planes * self.expansion, stride, rngs=rngs)
        self.kinetic = kinetic

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        out = jax.nn.relu(self.bn1(self.conv1(x)))
        out = jax.nn.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return jax.nn.relu(self._merge(self.shortcut(x), out, rngs))


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nnx.Module):
    """A CIFAR ResNet (kuangliu layout), with plain or KITINet kinetic residuals.

    Input: ``(B, H, W, in_channels)`` images (NHWC); output: ``(B, num_classes)``
    logits. Stages 2-4 halve the spatial size (``ceil(H / 2)``: a map never
    shrinks below 1x1), so small inputs such as 8x8 digits work.

    Kinetic residuals: the particles of a block are groups of ``n_divide``
    spatial positions (see :func:`kinetix.nn.kinetic.to_particles`), so a
    stage's ``n_divide`` must divide its ``H * W``; otherwise the call raises a
    ``ValueError``. If the map has *fewer* positions than ``n_divide`` (small
    inputs: e.g. stage 4 of an 8x8 input is 1x1 while the default ``n_divide``
    is 2), ``n_divide`` is clamped to the number of positions: the map is one
    particle, there is no pair to collide, and that block computes ``x + v``
    exactly (collision rate 0).

    Args:
      block: ``"basic"`` (ResNet-18/34) or ``"bottleneck"`` (ResNet-50).
      num_blocks: blocks per stage, 4 integers.
      num_classes: number of logits.
      in_channels: image channels (3 for CIFAR, 1 for grey digits).
      width: channels of the stem and stage 1; stages 2-4 have ``2w, 4w, 8w``
        (times 4 for bottleneck outputs). 64 is the standard model; small
        values (4, 8) give CPU/test variants.
      residual: ``"plain"`` (``shortcut(x) + branch(x)``) or ``"kinetic"``.
      kinetic_stages: which stages (1-4) use kinetic residuals (all of their
        blocks); the released code's default run uses ``(2, 3, 4)``.
      n_divide: spatial positions per particle for stages 1-4 (the released
        code: ``(16, 8, 4, 2)``, i.e. 32, 16 and 8 particles in stages 2-4 of a
        32x32 input).
      coll_coef, rule, length_scale: passed to every
        :class:`~kinetix.nn.KineticResidual` (ignored if ``residual="plain"``).
      rngs: parameter initialisation. The kinetic residuals draw no parameters,
        so plain and kinetic models built from the same seed have the same
        parameters.

    Calling: ``model(x, rngs=rngs)``. Collisions happen only in train mode
    with ``rngs`` given (stream ``collision``, falling back to ``default``);
    ``model.eval()`` or ``rngs=None`` give the plain network's output. BatchNorm
    follows the usual NNX train/eval switch.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from kinetix.nn.resnet import resnet18
      >>> model = resnet18(10, residual="kinetic", width=4, rngs=nnx.Rngs(0))
      >>> model(jnp.ones((2, 32, 32, 3)), rngs=nnx.Rngs(collision=1)).shape
      (2, 10)
    """

    def __init__(
        self,
        block: BlockKind,
        num_blocks: Sequence[int],
        num_classes: int = 10,
        *,
        in_channels: int = 3,
        width: int = 64,
        residual: Residual = "plain",
        kinetic_stages: Sequence[int] = (2, 3, 4),
        n_divide: Sequence[int] = (16, 8, 4, 2),
        coll_coef: float = 0.5,
        rule: dsmc.DSMCRule = "hard_sphere",
        length_scale: float | str | None = None,
        rngs: nnx.Rngs,
    ):
        if block not in _BLOCKS:
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}.")
        check_options(residual=residual)
        num_blocks = tuple(int(n) for n in num_blocks)
        if len(num_blocks) != 4 or min(num_blocks) < 1:
            raise ValueError(f"num_blocks must be 4 positive integers, got {num_blocks}.")
        n_divide = tuple(int(n) for n in n_divide)
        if len(n_divide) != 4 or min(n_divide) < 1:
            raise ValueError(f"n_divide must be 4 positive integers (stages 1-4), got {n_divide}.")
        kinetic_stages = tuple(int(s) for s in kinetic_stages)
        if not set(kinetic_stages) <= {1, 2, 3, 4}:
            raise ValueError(
                f"kinetic_stages must be stages among 1, 2, 3, 4; got {kinetic_stages}."
            )
        if width < 1 or in_channels < 1 or num_classes < 1:
            raise ValueError(
                f"need width, in_channels, num_classes >= 1; got {width=}, {in_channels=}, {num_classes=}."
            )

        block_cls = _BLOCKS[block]
        self.in_channels = in_channels
        self.residual = residual
        self.conv1 = _conv(in_channels, width, 3, 1, rngs)
        self.bn1 = _batch_norm(width, rngs)
        in_planes = width
        for stage in range(1, 5):
            planes = width * 2 ** (stage - 1)
            blocks = []
            for i in range(num_blocks[stage - 1]):
                stride = 2 if (stage > 1 and i == 0) else 1
                kinetic = None
                if residual == "kinetic" and stage in kinetic_stages:
                    kinetic = KineticResidual(
                        layout="spatial",
                        n_divide=n_divide[stage - 1],
                        coll_coef=coll_coef,
                        rule=rule,
                        length_scale=length_scale,
                    )
                blocks.append(
                    block_cls(
                        in_planes,
                        planes,
                        stride,
                        kinetic=kinetic,
                        name=f"layer{stage}/{i}",
                        rngs=rngs,
                    )
                )
                in_planes = planes * block_cls.expansion
            setattr(self, f"layer{stage}", nnx.List(blocks))
        self.classifier = nnx.Linear(in_planes, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"ResNet expects NHWC images (B, H, W, {self.in_channels}), got shape {x.shape}."
            )
        out = jax.nn.relu(self.bn1(self.conv1(x)))
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for blk in layer:
                out = blk(out, rngs=rngs)
        out = out.mean(axis=(1, 2))
        return self.classifier(out)


def resnet18(
    num_classes: int = 10, *, residual: Residual = "plain", rngs: nnx.Rngs, **kw
) -> ResNet:
    """ResNet-18 (BasicBlock, 2-2-2-2); ``kw`` goes to :class:`ResNet`."""
    return ResNet("basic", (2, 2, 2, 2), num_classes, residual=residual, rngs=rngs, **kw)


def resnet34(
    num_classes: int = 10, *, residual: Residual = "plain", rngs: nnx.Rngs, **kw
) -> ResNet:
    """ResNet-34 (BasicBlock, 3-4-6-3); ``kw`` goes to :class:`ResNet`."""
    return ResNet("basic", (3, 4, 6, 3), num_classes, residual=residual, rngs=rngs, **kw)


def resnet50(
    num_classes: int = 10, *, residual: Residual = "plain", rngs: nnx.Rngs, **kw
) -> ResNet:
    """ResNet-50 (Bottleneck, 3-4-6-3); ``kw`` goes to :class:`ResNet`."""
    return ResNet("bottleneck", (3, 4, 6, 3), num_classes, residual=residual, rngs=rngs, **kw)
