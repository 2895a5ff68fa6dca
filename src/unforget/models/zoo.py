"""The model zoo: VGG16-BN (CPG's CIFAR network, and a light variant), ResNet-18, the CLNP MLP;
a registry maps names to builders.

Every builder takes ``input_shape`` (one input, e.g. ``(3, 32, 32)`` or ``(784,)``) and a width
multiplier ``width`` (1.0 = the published size) and returns a :class:`MultiHeadNet` with no heads;
heads are added per task (``add_head``).
"""
from __future__ import annotations

import inspect
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from unforget.errors import RegistryError
from unforget.models.base import MultiHeadNet, normal_head_init, scaled
from unforget.models.pooling import GlobalAvgPool2d, MaxPool2d

_MODELS: dict[str, tuple[Callable[..., MultiHeadNet], str]] = {}


def register_model(name: str, description: str = ""):
    """Decorator: register ``builder(input_shape, width=1.0, **kw) -> MultiHeadNet`` as ``name``."""

    def deco(fn):
        _MODELS[name] = (fn, description or (fn.__doc__ or "").strip().splitlines()[0])
        return fn

    return deco


def list_models() -> dict[str, str]:
    """Names and one-line descriptions of the registered models."""
    return {k: v[1] for k, v in sorted(_MODELS.items())}


def build_model(name: str, input_shape: Sequence[int], width: float = 1.0, **kwargs) -> MultiHeadNet:
    """Build zoo model ``name`` with the builder's own options ``kwargs`` (``model.options`` in a
    config, e.g. ``sphereface20``'s ``activation``); raises :class:`RegistryError` for an unknown
    name or option."""
    if name not in _MODELS:
        raise RegistryError(f"unknown model '{name}'; known models: {', '.join(sorted(_MODELS))}")
    if not 0 < width <= 64:
        raise RegistryError(f"width multiplier must be in (0, 64], got {width}")
    fn = _MODELS[name][0]
    params = inspect.signature(fn).parameters
    allowed = [p for p in params if p not in ("input_shape", "width")]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        raise RegistryError(f"model '{name}' has no option {unknown[0]!r}; its options: {', '.join(allowed) or 'none'}")
    return fn(tuple(input_shape), width=width, **kwargs)


# ---------------------------------------------------------------------------------------- MLP
@register_model("mlp", "MLP with ReLU hidden layers (CLNP's 2 x 2000 for MNIST at width 1)")
def mlp(input_shape: Sequence[int], width: float = 1.0, hidden: Sequence[int] = (2000, 2000),
        bias: bool = True) -> MultiHeadNet:
    """Fully connected net: flatten -> [Linear -> ReLU] x len(hidden) -> per-task heads.

    Source: Golkar et al. 2019, Sec. 3.1 (2 hidden layers of 2000 units for permuted MNIST).
    ``model.options``: ``hidden`` (units per hidden layer at width 1), ``bias`` (false: hidden
    layers without biases, as WSN's 784-100-100 MLP, Kang et al. 2022, App. A.2).
    """
    in_dim = 1
    for s in input_shape:
        in_dim *= int(s)
    sizes = [scaled(h, width) for h in hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    spec: dict[str, tuple[str, Optional[str]]] = {}
    prev, prev_group = in_dim, None
    for i, h in enumerate(sizes):
        spec[f"features.{len(layers)}"] = (f"fc{i + 1}", prev_group)
        layers += [nn.Linear(prev, h, bias=bool(bias)), nn.ReLU(inplace=True)]
        prev, prev_group = h, f"fc{i + 1}"
    net = MultiHeadNet(prev, prev_group or "input")
    net.features = nn.Sequential(*layers)
    net.groups_spec = spec
    return net


# ----------------------------------------------------------------------------------- VGG16-BN
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
"""Conv channels (width 1) and max-pools of VGG16 (Simonyan & Zisserman 2015, config D)."""

VGG16_FC = 4096
"""Units of each of the two hidden fully connected layers of the paper's CIFAR VGG16-BN (width 1)."""


def _vgg16_bn_convs(in_ch: int, width: float) -> tuple[list[nn.Module], dict[str, tuple[str, Optional[str]]], int, str]:
    """The 13 conv3x3 (no bias) - BN - ReLU layers and 5 max-pools of VGG16-BN with their width
    groups ``conv1`` .. ``conv13``; returns ``(layers, groups_spec, out_channels, last_group)``."""
    layers: list[nn.Module] = []
    spec: dict[str, tuple[str, Optional[str]]] = {}
    prev_group: Optional[str] = None
    n = 0
    for v in VGG16_CFG:
        if v == "M":
            layers.append(MaxPool2d(2))
            continue
        n += 1
        out = scaled(int(v), width)
        group = f"conv{n}"
        spec[f"features.{len(layers)}"] = (group, prev_group)
        layers.append(nn.Conv2d(in_ch, out, 3, padding=1, bias=False))
        spec[f"features.{len(layers)}"] = (group, None)
        layers += [nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        in_ch, prev_group = out, group
    assert prev_group is not None
    return layers, spec, in_ch, prev_group


def vgg_reference_init(module: nn.Module) -> None:
    """ivclab/CPG ``models/vgg.py`` initialisation, applied to every submodule of ``module``:
    conv weights Kaiming-normal (fan-out, ReLU), conv biases 0; batch norm weight 1, bias 0;
    linear weights N(0, 0.01), biases 0. Draws from the current global RNG (no reseeding)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@register_model("vgg16_bn", "VGG16-BN of CPG (Hung et al. 2019) for CIFAR: 13 conv-BN-ReLU, FC 4096-4096")
def vgg16_bn(input_shape: Sequence[int], width: float = 1.0) -> MultiHeadNet:
    """The CIFAR VGG16-BN of CPG (Hung et al. 2019, Sec. 4.1; ivclab/CPG ``models/vgg.py``,
    ``custom_vgg_cifar100``).

    ``features``: 13 conv3x3 layers (no bias) each followed by BatchNorm2d and ReLU, channels
    64-64-M-128-128-M-256x3-M-512x3-M-512x3-M (x ``width``; M = 2x2 max-pool), then
    ``AdaptiveAvgPool2d(1)`` (the identity for 32x32 inputs, whose final map is already 1x1; it
    makes larger inputs give the same ``512 * width`` features), flatten, Linear(512, 4096) -
    ReLU, Linear(4096, 4096) - ReLU (x ``width``; with biases, no batch norm, no dropout). Input
    ``(3, H, W)`` with ``H, W >= 32``; output of ``features`` ``(N, ceil(4096 * width))``; the
    per-task heads are Linear(4096, n_classes).

    Width groups: ``conv1`` .. ``conv13``, ``fc1``, ``fc2`` (the feature group).
    At width 1 the prunable weights (13 conv + 2 hidden FC weight tensors; biases, batch norms
    and heads excluded) number 33,584,832 (14,710,464 conv + 2,097,152 + 16,777,216 FC).

    Initialisation as the reference code (:func:`vgg_reference_init`): conv Kaiming-normal
    fan-out, batch norm 1 / 0, linear layers N(0, 0.01) with bias 0; every new task head is
    N(0, 0.01) with bias 0 too (the reference's ``add_dataset``), via ``head_init``.

    Raises:
        ValueError: input is not an image or is smaller than 32x32 (five 2x2 max-pools).
    """
    if len(input_shape) != 3:
        raise ValueError(f"vgg16_bn takes images (C, H, W), got input shape {tuple(input_shape)}")
    if min(int(input_shape[1]), int(input_shape[2])) < 32:
        raise ValueError(f"vgg16_bn needs inputs of at least 32x32 (five max-pools), got {tuple(input_shape)}; "
                         f"use a smaller model (e.g. resnet18) for small images")
    layers, spec, in_ch, prev_group = _vgg16_bn_convs(int(input_shape[0]), width)
    layers += [GlobalAvgPool2d(), nn.Flatten()]
    hid = scaled(VGG16_FC, width)
    for i in (1, 2):
        spec[f"features.{len(layers)}"] = (f"fc{i}", prev_group)
        layers += [nn.Linear(in_ch, hid), nn.ReLU(inplace=True)]
        in_ch, prev_group = hid, f"fc{i}"
    net = MultiHeadNet(hid, "fc2")
    net.features = nn.Sequential(*layers)
    net.groups_spec = spec
    vgg_reference_init(net.features)
    net.head_init = normal_head_init
    return net


@register_model("vgg16_bn_light",
                "light VGG16-BN variant (global pool, one 512-unit FC with BN1d); not the paper's network")
def vgg16_bn_light(input_shape: Sequence[int], width: float = 1.0, fc: int = 512) -> MultiHeadNet:
    """A light VGG16-BN, *not* the network of CPG's paper (that is :func:`vgg16_bn`): 13
    conv3x3-BN-ReLU layers, 5 max-pools, global average pool, one hidden FC (``fc`` units, no
    bias) with BN1d and ReLU, then per-task heads; PyTorch default initialisation.

    Width groups: ``conv1`` .. ``conv13``, ``fc1`` (the feature group); output of ``features``
    ``(N, ceil(fc * width))``. Convolutions as Simonyan & Zisserman 2015 (config D) with BN.
    """
    layers, spec, in_ch, prev_group = _vgg16_bn_convs(int(input_shape[0]), width)
    layers += [GlobalAvgPool2d(), nn.Flatten()]
    hid = scaled(fc, width)
    spec[f"features.{len(layers)}"] = ("fc1", prev_group)
    layers.append(nn.Linear(in_ch, hid, bias=False))
    spec[f"features.{len(layers)}"] = ("fc1", None)
    layers += [nn.BatchNorm1d(hid), nn.ReLU(inplace=True)]
    net = MultiHeadNet(hid, "fc1")
    net.features = nn.Sequential(*layers)
    net.groups_spec = spec
    return net


# ----------------------------------------------------------------------------------- ResNet-18
class BasicBlock(nn.Module):
    """ResNet basic block: conv3x3-BN-ReLU-conv3x3-BN (+ shortcut), ReLU."""

    def __init__(self, in_ch: int, mid: int, out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, mid, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != out:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


@register_model("resnet18", "ResNet-18 (CIFAR variant: 3x3 stem, no stem max-pool)")
def resnet18(input_shape: Sequence[int], width: float = 1.0) -> MultiHeadNet:
    """ResNet-18 with 4 stages of 2 basic blocks (64, 128, 256, 512 channels x ``width``).

    Residual additions force the stem, every block's second conv and its shortcut conv in one
    stage to share a width group, so growth keeps channel counts consistent.
    Source: He et al. 2016, Sec. 4.2 (CIFAR stem).
    """
    in_ch = int(input_shape[0])
    widths = [scaled(c, width) for c in (64, 128, 256, 512)]
    spec: dict[str, tuple[str, Optional[str]]] = {}
    stem = [nn.Conv2d(in_ch, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
    spec["features.0"] = ("stage1", None)
    spec["features.1"] = ("stage1", None)
    blocks: list[nn.Module] = []
    prev, prev_group = widths[0], "stage1"
    for s, w in enumerate(widths):
        group = f"stage{s + 1}"
        for b in range(2):
            stride = 2 if (s > 0 and b == 0) else 1
            block = BasicBlock(prev, w, w, stride)
            name = f"features.{3 + len(blocks)}"
            inner = f"{group}.block{b + 1}"
            spec[f"{name}.conv1"] = (inner, prev_group)
            spec[f"{name}.bn1"] = (inner, None)
            spec[f"{name}.conv2"] = (group, inner)
            spec[f"{name}.bn2"] = (group, None)
            if len(block.shortcut):
                spec[f"{name}.shortcut.0"] = (group, prev_group)
                spec[f"{name}.shortcut.1"] = (group, None)
            blocks.append(block)
            prev, prev_group = w, group
    net = MultiHeadNet(prev, prev_group)
    net.features = nn.Sequential(*stem, *blocks, GlobalAvgPool2d(), nn.Flatten())
    net.groups_spec = spec
    return net
