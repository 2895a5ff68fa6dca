"""CLNP's CIFAR convnets, registered as ``clnp_convnet`` (narrow, multi-head, Table 2) and
``clnp_convnet_wide`` (wide, single-head, fully convolutional, Table 3). The permuted-MNIST MLP
is the zoo's ``mlp``.

Source: Golkar et al. 2019 (arXiv:1903.04476v1), Sec. 3.2, Tables 2 and 3, layer by layer; the
``width`` multiplier scales every hidden layer's channels (1.0 = the tables).

Deviation of the narrow net, shared with the zoo's SphereFace: Dense 1 reads the flattened final
map. A Linear over ``C*h*w`` inputs is not whole units of one width group, so Dense 1 is a
convolution whose kernel covers the whole final map (``C -> 512``, kernel ``(h, w)``) followed by
``Flatten`` - the same function and parameter count as Flatten + Linear, with one column block per
filter (unit-level pruning, growth and lateral connections work on it). The narrow network
therefore accepts only inputs of the ``input_shape`` it was built for.
"""
from __future__ import annotations

from typing import Optional, Sequence

from torch import nn

from unforget.models.base import MultiHeadNet, scaled
from unforget.models.conv import DenseConv2d
from unforget.models.pooling import MaxPool2d
from unforget.models.zoo import register_model

NARROW = (32, 32, "M", 64, 64, "M")
"""Table 2: conv 3x3 / stride 1 / padding 1 channels at width 1, and the pools ("M": max-pool
3x3, stride 2, padding 1, then dropout 0.25)."""

DENSE = 512
"""Table 2: units of Dense 1 at width 1 (followed by ReLU and dropout 0.5)."""

WIDE = ((128, 1, 1), (256, 2, 0), (512, 1, 0), (1024, 2, 1), (2048, 1, 0))
"""Table 3: ``(channels, stride, padding)`` of Conv 1-5 at width 1 (kernel 3x3, each followed by
batch norm, then ReLU)."""

WIDE_OUTPUT_KERNEL = 3
"""Table 3: Conv 6 (the output layer: one channel per class, 3x3, stride 1, no padding), then
AvgPool over the remaining map."""


def _image(input_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(f"the CLNP convnets take images (C, H, W), got input shape {tuple(input_shape)}")
    c, h, w = (int(s) for s in input_shape)
    return c, h, w


def _conv_out(size: int, stride: int, padding: int, kernel: int = 3) -> int:
    return (size + 2 * padding - kernel) // stride + 1


@register_model("clnp_convnet", "CLNP narrow CIFAR convnet (Table 2: conv 32-32-64-64, dense 512), multi-head")
def clnp_convnet(input_shape: Sequence[int], width: float = 1.0, dropout: bool = True) -> MultiHeadNet:
    """The narrow multi-head convnet of Golkar et al. 2019, Table 2 (Zenke et al. 2017's CIFAR
    net as the CLNP paper gives it).

    ``features``: conv3x3(32) - ReLU - conv3x3(32) - ReLU - maxpool 3x3 / stride 2 - dropout 0.25 -
    conv3x3(64) - ReLU - conv3x3(64) - ReLU - maxpool 3x3 / stride 2 - dropout 0.25 - Dense 1 (512) -
    ReLU - dropout 0.5; every conv and pool has stride 1 (pools: 2) and padding 1, channels and
    dense units x ``width``, biases everywhere, no batch norm. A 32x32 input leaves a 16x16 map
    after the first pool and 8x8 after the second, so Dense 1 reads 64 x 8 x 8 values (a
    convolution with an 8x8 kernel, see the module doc). Output of ``features``:
    ``(N, ceil(512 * width))``; each task's head is Linear(512, n_classes). ``dropout=False``
    leaves the dropout layers out (they act in training mode only).

    Width groups: ``conv1`` .. ``conv4``, ``fc1`` (the feature group).

    Raises:
        ValueError: the input is not an image ``(C, H, W)``.
    """
    in_ch, h, w = _image(input_shape)
    layers: list[nn.Module] = []
    spec: dict[str, tuple[str, Optional[str]]] = {}
    prev_group: Optional[str] = None
    for v in NARROW:
        if v == "M":
            h, w = _conv_out(h, 2, 1), _conv_out(w, 2, 1)
            layers.append(MaxPool2d(3, stride=2, padding=1))
            if dropout:
                layers.append(nn.Dropout(0.25))
            continue
        group = f"conv{len(spec) + 1}"
        out = scaled(int(v), width)
        spec[f"features.{len(layers)}"] = (group, prev_group)
        layers += [nn.Conv2d(in_ch, out, 3, padding=1), nn.ReLU(inplace=True)]
        in_ch, prev_group = out, group
    hid = scaled(DENSE, width)
    spec[f"features.{len(layers)}"] = ("fc1", prev_group)
    layers += [DenseConv2d(in_ch, hid, (h, w)), nn.ReLU(inplace=True), nn.Flatten()]  # computed as the dense layer
    if dropout:
        layers.append(nn.Dropout(0.5))
    net = MultiHeadNet(hid, "fc1")
    net.features = nn.Sequential(*layers)
    net.groups_spec = spec
    return net


@register_model("clnp_convnet_wide", "CLNP wide fully convolutional CIFAR net (Table 3: 128-256-512-1024-2048, BN), "
                "single-head use")
def clnp_convnet_wide(input_shape: Sequence[int], width: float = 1.0) -> MultiHeadNet:
    """The wide fully convolutional net of Golkar et al. 2019, Table 3.

    ``features``: Conv 1-5, 3x3, channels 128 / 256 / 512 / 1024 / 2048 (x ``width``), strides
    1 / 2 / 1 / 2 / 1, paddings 1 / 0 / 0 / 1 / 0, each followed by batch norm and ReLU. Each
    task's head is Conv 6 (3x3, stride 1, no padding, one channel per class) followed by the
    AvgPool over its output map (:class:`~unforget.models.base.PooledConvHead`): a 32x32 input
    gives maps of 32, 15, 13, 7, 5 and 3 pixels, and the logits average Conv 6's 3x3 map. Output
    of ``features``: ``(N, ceil(2048 * width), h, w)``. No dropout (the table has none); the
    table does not give biases: Conv 1-5 have none (batch norm's shift follows), Conv 6 has one.

    Width groups: ``conv1`` .. ``conv5`` (the feature group).

    Raises:
        ValueError: the input is not an image ``(C, H, W)``, or smaller than 23x23 (Conv 6 needs a
            3x3 map).
    """
    in_ch, h, w = _image(input_shape)
    layers: list[nn.Module] = []
    spec: dict[str, tuple[str, Optional[str]]] = {}
    prev_group: Optional[str] = None
    for i, (channels, stride, padding) in enumerate(WIDE, start=1):
        group, out = f"conv{i}", scaled(channels, width)
        spec[f"features.{len(layers)}"] = (group, prev_group)
        layers.append(nn.Conv2d(in_ch, out, 3, stride=stride, padding=padding, bias=False))
        spec[f"features.{len(layers)}"] = (group, None)
        layers += [nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        h, w = _conv_out(h, stride, padding), _conv_out(w, stride, padding)
        in_ch, prev_group = out, group
    if min(h, w) < WIDE_OUTPUT_KERNEL:
        raise ValueError(f"input shape {tuple(input_shape)} is too small for the wide CLNP convnet (needs >= 23x23)")
    net = MultiHeadNet(in_ch, "conv5")
    net.features = nn.Sequential(*layers)
    net.groups_spec = spec
    net.head_kernel = WIDE_OUTPUT_KERNEL
    return net
