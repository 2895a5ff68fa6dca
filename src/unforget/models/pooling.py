"""Max pooling that is fast on the CPU and bit-identical to ``nn.MaxPool2d``.

PyTorch's CPU kernel for ``max_pool2d`` on contiguous (NCHW) tensors is scalar and several times
slower than its channels-last kernel, which is vectorised over channels (pytorch/pytorch#51393,
open). After CLNP's convnet took the paper's 3x3 pools (Golkar et al. 2019, Table 2) its first
pool cost as much as its convolutions on the CPU. With one thread on its ``(64, 16, 32, 32)``
input (3x3, stride 2, padding 1), :class:`MaxPool2d` takes 2.95 ms forward against
``nn.MaxPool2d``'s 8.85 ms, 4.23 against 9.92 ms forward and backward
(``benchmarks/cpu_ops.py``; BENCHMARKS.md, "Where a CPU run's time goes").

:class:`MaxPool2d` is ``nn.MaxPool2d`` (same constructor, ``state_dict`` and ``repr``) whose
forward, on a contiguous 4-D CPU float tensor, pools in the channels-last layout and hands back a
contiguous result. Max pooling does no arithmetic and both kernels scan a window in the same
order, taking the first maximum (or NaN), so values and argmax indices are the same bit for bit;
the backward pass is PyTorch's own NCHW kernel on those indices, so gradients are the same bit
for bit too (``tests/test_pooling.py``). Anything else (CUDA, ``channels_last`` inputs,
dilation, ``ceil_mode``, ``return_indices``, tracing, ``torch.compile``, export) takes
``nn.MaxPool2d``'s own path, so exported networks hold a plain max-pool.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MaxPool2d", "max_pool2d_cpu"]


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class _ChannelsLastMaxPool(torch.autograd.Function):
    """Forward in the channels-last layout (values and argmax indices made contiguous), backward
    with ``aten.max_pool2d_with_indices_backward`` in NCHW on those indices, as
    ``F.max_pool2d`` does for an NCHW input."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding):
        out, idx = F.max_pool2d_with_indices(x.contiguous(memory_format=torch.channels_last), kernel, stride, padding)
        out, idx = out.contiguous(), idx.contiguous()
        ctx.save_for_backward(x, idx)
        ctx.args = (kernel, stride, padding)
        ctx.mark_non_differentiable(idx)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, idx = ctx.saved_tensors
        kernel, stride, padding = ctx.args
        g = torch.ops.aten.max_pool2d_with_indices_backward(grad.contiguous(), x, list(kernel), list(stride),
                                                           list(padding), [1, 1], False, idx)
        return g, None, None, None


def max_pool2d_cpu(x: torch.Tensor, kernel, stride=None, padding=0) -> torch.Tensor:
    """``F.max_pool2d(x, kernel, stride, padding)`` (dilation 1, floor mode) for a contiguous
    ``(N, C, H, W)`` floating-point CPU tensor, computed through PyTorch's channels-last kernel;
    returns a contiguous ``(N, C, H_out, W_out)`` tensor of ``x``'s dtype, equal bit for bit to
    ``F.max_pool2d``'s, with the same gradient.

    Raises:
        ValueError: ``x`` is not a contiguous 4-D floating-point CPU tensor.
    """
    if not (x.device.type == "cpu" and x.dim() == 4 and x.is_floating_point() and x.is_contiguous()):
        raise ValueError(f"max_pool2d_cpu takes a contiguous 4-D floating-point CPU tensor, got {x.dtype} "
                         f"{tuple(x.shape)} on {x.device}")
    kernel = _pair(kernel)
    stride = kernel if stride is None or stride == [] else _pair(stride)
    padding = _pair(padding)
    if torch.is_grad_enabled() and x.requires_grad:
        return _ChannelsLastMaxPool.apply(x, kernel, stride, padding)
    return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), kernel, stride, padding).contiguous()


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` with the fast CPU path of :func:`max_pool2d_cpu` where it applies
    (module doc); input ``(N, C, H, W)``, output ``(N, C, H_out, W_out)`` as ``nn.MaxPool2d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and x.dim() == 4 and x.is_floating_point() and x.is_contiguous()
                and _pair(self.dilation) == (1, 1) and not self.ceil_mode and not self.return_indices
                and not _tracing()):
            return max_pool2d_cpu(x, self.kernel_size, self.stride, self.padding)
        return super().forward(x)


class GlobalAvgPool2d(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d(1)``: ``(N, C, H, W)`` -> ``(N, C, 1, 1)``, the mean of each map.

    On CUDA under ``torch.use_deterministic_algorithms(True)`` (``train.deterministic``) it
    computes ``x.mean((2, 3), keepdim=True)``: the same average, whose backward has a
    deterministic CUDA implementation, where ``adaptive_avg_pool2d``'s backward raises. Elsewhere
    it is ``nn.AdaptiveAvgPool2d(1)`` itself, so CPU values are unchanged bit for bit."""

    def __init__(self) -> None:
        super().__init__(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and torch.are_deterministic_algorithms_enabled():
            return x.mean((2, 3), keepdim=True)
        return super().forward(x)
