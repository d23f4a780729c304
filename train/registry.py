"""The model registry of the training scripts: a new model is one entry.

Each entry maps a ``--model`` name to a builder
``build(num_classes, *, in_channels | vocab_size, width, rngs, **options) -> nnx.Module``
and the task it serves (``"image"`` or ``"text"``). The scripts apply KO to the
layer whose path matches ``--ko-mask`` (default ``classifier/kernel``), so every
registered model names its last layer ``classifier``.

Adding a model::

    from train.registry import register

    @register("my_net", task="image", help="my network")
    def _my_net(num_classes, *, in_channels, width, rngs, **options):
        return MyNet(num_classes, in_channels=in_channels, width=width, rngs=rngs)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from flax import nnx

from kinetix.nn import resnet as _resnet
from kinetix.nn.transformer import TextEncoder


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One registered model: its builder, task and one-line help."""

    name: str
    task: str
    build: Callable[..., nnx.Module]
    help: str


MODELS: dict[str, ModelSpec] = {}


def register(name: str, *, task: str, help: str) -> Callable[[Callable], Callable]:
    """Decorator registering ``fn`` as the builder of model ``name``."""
    if task not in ("image", "text"):
        raise ValueError(f"task must be 'image' or 'text', got {task!r}.")

    def deco(fn: Callable[..., nnx.Module]) -> Callable[..., nnx.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered.")
        MODELS[name] = ModelSpec(name, task, fn, help)
        return fn

    return deco


def names(task: str) -> list[str]:
    """Registered model names for ``task``, in registration order."""
    return [n for n, s in MODELS.items() if s.task == task]


def build(name: str, task: str, num_classes: int, *, rngs: nnx.Rngs, **kw: Any) -> nnx.Module:
    """Builds registered model ``name``; a clear error lists the choices."""
    spec = MODELS.get(name)
    if spec is None or spec.task != task:
        raise ValueError(f"unknown {task} model {name!r}; choose one of {names(task)}.")
    return spec.build(num_classes, rngs=rngs, **kw)


# ------------------------------------------------------------------ image models

_DEPTHS = {"resnet18": _resnet.resnet18, "resnet34": _resnet.resnet34, "resnet50": _resnet.resnet50}


def _resnet_entry(depth: str, residual: str) -> None:
    fn = _DEPTHS[depth]
    kind = "KITINet kinetic residuals in stages 2-4" if residual == "kinetic" else "plain"
    name = depth if residual == "plain" else f"{depth}_kinetic"

    def build_resnet(
        num_classes: int,
        *,
        in_channels: int,
        width: int,
        rngs: nnx.Rngs,
        coll_coef: float = 0.5,
        **_: Any,
    ) -> nnx.Module:
        kw: dict[str, Any] = {"in_channels": in_channels, "width": width}
        if residual == "kinetic":
            kw["coll_coef"] = coll_coef
        return fn(num_classes, residual=residual, rngs=rngs, **kw)

    register(name, task="image", help=f"CIFAR {depth.replace('resnet', 'ResNet-')}, {kind}")(
        build_resnet
    )


for _depth in _DEPTHS:
    _resnet_entry(_depth, "plain")
for _depth in _DEPTHS:
    _resnet_entry(_depth, "kinetic")


@register(
    "kinn_resnet",
    task="image",
    help="KINN ResNet-18: 2-2-2-2 blocks of Kirchhoff cells (kinetix.nn.kinn_resnet18)",
)
def _kinn_resnet(
    num_classes: int, *, in_channels: int, width: int, rngs: nnx.Rngs, **_: Any
) -> nnx.Module:
    from kinetix.nn.kinn import kinn_resnet18

    return kinn_resnet18(num_classes, in_channels=in_channels, width=width, rngs=rngs)


# ------------------------------------------------------------------- text models


def _text_entry(name: str, residual: str) -> None:
    def build_text(
        num_classes: int,
        *,
        vocab_size: int,
        width: int,
        max_len: int,
        rngs: nnx.Rngs,
        depth: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
        coll_coef: float = 0.5,
        **_: Any,
    ) -> nnx.Module:
        kw: dict[str, Any] = dict(dim=width, depth=depth, heads=heads, mlp_dim=2 * width)
        kw.update(max_len=max_len, dropout=dropout, residual=residual)
        if residual == "kinetic":
            kw.update(coll_coef=coll_coef, particle_dim=max(1, width // 8))
        return TextEncoder(vocab_size, num_classes, rngs=rngs, **kw)

    register(name, task="text", help=f"Transformer encoder, {residual} residuals")(build_text)


_text_entry("transformer", "plain")
_text_entry("transformer_kinetic", "kinetic")
