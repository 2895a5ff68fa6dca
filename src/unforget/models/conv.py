"""Dense layers written as convolutions, computed as the matrix products they are.

CLNP's Dense 1 (Golkar et al. 2019, Table 2) and SphereFace's fc5 read the flattened final map
of a conv stack. The task-aware layers need whole input units per width group, so the zoo builds
them as a convolution whose kernel covers the whole map (``C -> units``, kernel ``(h, w)``, no
padding: output ``1x1``; :mod:`unforget.models.clnp_nets`). That is a dense layer, but oneDNN
runs it as a convolution: on one CPU thread, for CLNP's Dense 1 at width 0.5 and a batch of 64,
11.1 ms forward and backward against 3.0 ms for the same product through ``F.linear``
(``benchmarks/cpu_ops.py``).

The zoo builds these layers as :class:`DenseConv2d`, which :func:`dense_conv2d` computes as
``F.linear(x.flatten(1), w.flatten(1), b)``. The values are the same sums in another order, so
they agree with ``F.conv2d`` to float rounding, not bit for bit; everything that serves, trains
or exports such a layer calls this one function (:class:`DenseConv2d`, the task-aware
:class:`~unforget.layers.task_aware.TaskConv2d` converted from it, its exported copy), so a
task's logits stay bit-identical across them. Other convolutions, a 1x1 kernel on a 1x1 map
among them, stay ``F.conv2d``: a pretrained network keeps computing as PyTorch computes it.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DenseConv2d", "dense_conv2d", "covers_input"]


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def covers_input(x: torch.Tensor, weight: torch.Tensor, padding, dilation) -> bool:
    """Whether the convolution of ``x`` ``(N, C, H, W)`` by ``weight`` ``(O, C, kh, kw)`` is one
    dense product: kernel ``(kh, kw) == (H, W)``, no padding, dilation 1 (output ``1x1``)."""
    return (x.dim() == 4 and weight.dim() == 4 and tuple(x.shape[2:]) == tuple(weight.shape[2:])
            and padding != "same" and _pair(padding) == (0, 0) and _pair(dilation) == (1, 1))


def dense_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, stride=1, padding=0,
                 dilation=1) -> torch.Tensor:
    """A dense layer written as a convolution: input ``(N, C, H, W)``, output ``(N, O, 1, 1)``,
    computed as ``F.linear(x.flatten(1), weight.flatten(1), bias)`` when the kernel covers the
    whole input (:func:`covers_input`); any other input is convolved with ``F.conv2d(x, weight,
    bias, stride, padding, dilation)``. Raises what ``F.conv2d`` / ``F.linear`` raise for
    tensors that do not fit."""
    if covers_input(x, weight, padding, dilation):
        return F.linear(x.flatten(1), weight.flatten(1), bias).view(x.shape[0], weight.shape[0], 1, 1)
    return F.conv2d(x, weight, bias, stride, padding, dilation)


class DenseConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same constructor, parameters and ``repr``) that stands for a dense layer
    over the whole input map, computed by :func:`dense_conv2d`. The task-aware layer converted
    from it computes the same way (``TaskConv2d.dense``), and so does its exported copy. Groups
    must be 1.

    Raises:
        ValueError: ``groups != 1`` or a padding mode other than ``zeros``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.groups != 1 or self.padding_mode != "zeros":
            raise ValueError("DenseConv2d takes groups=1 and padding_mode='zeros'")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dense_conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
