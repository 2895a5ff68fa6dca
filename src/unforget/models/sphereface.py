"""The 20-layer SphereFace CNN (facial tasks) with a width multiplier, registered as
``sphereface20``.

Source: Liu et al. 2017, "SphereFace: Deep Hypersphere Embedding for Face Recognition", Sec. 4.1
and Table 2 (20-layer column): four stages of 64 / 128 / 256 / 512 channels, each a stride-2 3x3
conv followed by 1 / 2 / 4 / 1 residual units of two 3x3 convs (identity shortcut, no batch
norm), then a 512-unit FC embedding; 112x96 input faces. Hung et al. 2019 (CPG), Sec. 4.3, use it
for the facial-informatics tasks. Initialisation follows the authors' Caffe model: Xavier for the
stride-2 convs and the FC, Gaussian (std 0.01) and no bias for the residual-unit convs.

Deviations from the paper (both forced by the task-aware layers, which only convert Conv2d /
Linear / BatchNorm and need every layer's inputs to be whole units of one width group):

* **Activation**: by default the parameter-free ``LeakyReLU(negative_slope)`` with
  ``negative_slope = 0.25``, i.e. PReLU frozen at its initial slope (Caffe / He et al. 2015
  initialise PReLU at 0.25); ``0.0`` gives ReLU. ``activation="prelu"`` gives the paper's PReLU,
  whose slopes the task-aware conversion makes per task (each task its own, as the CPG
  reference keeps them), so that a later task never moves an earlier task's activation.
* **FC embedding**: the paper flattens the final ``512 x 7 x 6`` map into the FC layer. A Linear
  over ``C*h*w`` inputs cannot be grown channel-wise, so the default (``global_pool=False``)
  computes exactly the same function as a convolution whose kernel covers the whole final map
  (``512 -> 512``, kernel ``(h, w)``, no padding) followed by ``Flatten``: same parameter count
  and outputs as Flatten + FC, growable per channel. The network then accepts only inputs of the
  ``input_shape`` it was built for. ``global_pool=True`` instead averages the final map
  (``AdaptiveAvgPool2d(1)``) before a ``Linear(512, 512)`` and accepts any input size (far fewer
  parameters: 262,656 instead of 11,010,560 in the embedding at 112x96).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Optional, Sequence

import torch
from torch import nn

from unforget.models.base import MultiHeadNet, scaled
from unforget.models.conv import DenseConv2d
from unforget.models.pooling import GlobalAvgPool2d
from unforget.models.zoo import register_model

STAGES = ((64, 1), (128, 2), (256, 4), (512, 1))
"""(channels, residual units) per stage at width 1 (Liu et al. 2017, Table 2, 20-layer)."""

EMBEDDING = 512
"""Units of the FC embedding (``fc5``) at width 1."""


def _after_stride2(n: int) -> int:
    """Spatial size after a 3x3, stride-2, padding-1 conv."""
    return (n - 1) // 2 + 1


def _caffe_xavier_(w: torch.Tensor) -> None:
    """Caffe's ``xavier`` filler: uniform in +-sqrt(3 / fan_in)."""
    fan_in = w.shape[1] * math.prod(w.shape[2:])
    bound = math.sqrt(3.0 / fan_in)
    nn.init.uniform_(w, -bound, bound)


def _activation(ch: int, negative_slope: float, prelu: bool) -> nn.Module:
    return nn.PReLU(ch, init=0.25) if prelu else nn.LeakyReLU(negative_slope)


class ResidualUnit(nn.Module):
    """``x + act2(conv2(act1(conv1(x))))`` with two 3x3 convs of ``ch`` channels and no batch
    norm (the activation comes before the addition, as in the authors' Caffe model); bias only
    with ``bias`` (the CPG reference's convs have one). Input / output ``(N, ch, H, W)`` float."""

    def __init__(self, ch: int, negative_slope: float, prelu: bool = False, bias: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1, bias=bias)
        self.act1 = _activation(ch, negative_slope, prelu)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1, bias=bias)
        self.act2 = _activation(ch, negative_slope, prelu)
        for conv in (self.conv1, self.conv2):
            nn.init.normal_(conv.weight, 0.0, 0.01)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act2(self.conv2(self.act1(self.conv1(x))))


class Stage(nn.Module):
    """One SphereFace stage: ``down`` (3x3 stride-2 conv with bias, activation) then
    ``units`` residual units. ``(N, in_ch, H, W)`` -> ``(N, ch, ceil(H/2), ceil(W/2))``."""

    def __init__(self, in_ch: int, ch: int, n_units: int, negative_slope: float, prelu: bool = False,
                 bias: bool = False) -> None:
        super().__init__()
        self.down = nn.Conv2d(in_ch, ch, 3, stride=2, padding=1, bias=True)
        self.act = _activation(ch, negative_slope, prelu)
        self.units = nn.Sequential(*[ResidualUnit(ch, negative_slope, prelu, bias) for _ in range(n_units)])
        _caffe_xavier_(self.down.weight)
        nn.init.zeros_(self.down.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.units(self.act(self.down(x)))


@register_model("sphereface20", "SphereFace 20-layer CNN (4 residual stages 64-512, FC-512 embedding; faces)")
def sphereface20(input_shape: Sequence[int], width: float = 1.0, negative_slope: float = 0.25,
                 global_pool: bool = False, activation: str = "leaky", conv_bias: bool = False) -> MultiHeadNet:
    """The 20-layer SphereFace CNN: 4 stages (64, 128, 256, 512 channels x ``width``; a stride-2
    3x3 conv then 1 / 2 / 4 / 1 residual units of two 3x3 convs), then the FC embedding
    (``512 x width`` units, no activation), which the per-task heads read (group ``fc5``).

    Args:
        input_shape: one input ``(C, H, W)``; the paper's is ``(3, 112, 96)``. With
            ``global_pool=False`` the model accepts exactly this size; with ``True`` any size.
        width: width multiplier (1.0: 22,662,272 backbone parameters at 112x96).
        negative_slope: slope of the parameter-free LeakyReLU that stands in for PReLU
            (0.25 = PReLU's initial slope; 0.0 = ReLU). See the module docstring.
        global_pool: ``False``: FC over the whole final map as a full-extent conv (the paper's
            Flatten + FC); ``True``: global average pool + Linear (any input size).
        activation: ``"leaky"`` (default: the parameter-free LeakyReLU) or ``"prelu"``: the
            paper's PReLU, one module per conv; made task-aware, each task gets its own slopes
            (:class:`~unforget.layers.task_aware.TaskPReLU`, as the CPG reference keeps them per
            task), so exactness holds.
        conv_bias: biases on the residual units' convs too (the CPG reference's CNN-20 has them).

    Returns:
        A :class:`MultiHeadNet` without heads; forward takes float ``(N, C, H, W)`` and the
        heads see ``(N, 512 x width)`` features.

    Width groups: each stage's stride-2 conv and the second conv of each of its residual units
    are summed by the identity shortcuts, so they share group ``stage{s}``; the first conv of
    unit u has its own group ``stage{s}.unit{u}``; the embedding is group ``fc5``.

    Raises:
        ValueError: ``input_shape`` is not ``(C, H, W)`` or ``negative_slope`` is negative.
    """
    if len(input_shape) != 3:
        raise ValueError(f"sphereface20 takes image inputs (C, H, W), got input_shape {tuple(input_shape)}")
    if negative_slope < 0:
        raise ValueError(f"negative_slope must be >= 0, got {negative_slope}")
    if activation not in ("leaky", "prelu"):
        raise ValueError(f"activation must be 'leaky' or 'prelu', got {activation!r}")
    prelu = activation == "prelu"
    in_ch, h, w = (int(v) for v in input_shape)
    spec: dict[str, tuple[str, Optional[str]]] = {}
    layers: "OrderedDict[str, nn.Module]" = OrderedDict()
    prev, prev_group = in_ch, None
    for s, (ch0, n_units) in enumerate(STAGES, 1):
        ch, group = scaled(ch0, width), f"stage{s}"
        layers[group] = Stage(prev, ch, n_units, negative_slope, prelu, conv_bias)
        spec[f"features.{group}.down"] = (group, prev_group)
        if prelu:
            spec[f"features.{group}.act"] = (group, None)
        for u in range(n_units):
            inner = f"{group}.unit{u + 1}"
            spec[f"features.{group}.units.{u}.conv1"] = (inner, group)
            spec[f"features.{group}.units.{u}.conv2"] = (group, inner)
            if prelu:
                spec[f"features.{group}.units.{u}.act1"] = (inner, None)
                spec[f"features.{group}.units.{u}.act2"] = (group, None)
        prev, prev_group = ch, group
        h, w = _after_stride2(h), _after_stride2(w)
    emb = scaled(EMBEDDING, width)
    if global_pool:
        layers["pool"] = GlobalAvgPool2d()
        layers["flatten"] = nn.Flatten()
        layers["fc5"] = nn.Linear(prev, emb)
    else:
        layers["fc5"] = DenseConv2d(prev, emb, (h, w), bias=True)  # computed as the dense layer (models.conv)
        layers["flatten"] = nn.Flatten()
    _caffe_xavier_(layers["fc5"].weight)
    nn.init.zeros_(layers["fc5"].bias)
    spec["features.fc5"] = ("fc5", prev_group)
    net = MultiHeadNet(emb, "fc5")
    net.features = nn.Sequential(layers)
    net.groups_spec = spec
    return net
