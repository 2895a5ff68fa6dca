"""Masked weights with a straight-through gradient for pick scores.

Source: Mallya et al. 2018 (Piggyback), Sec. 3: real-valued mask scores thresholded in the forward
pass, the gradient passed straight through to the scores; Hung et al. 2019, Sec. 3.2 (picking).
"""
from __future__ import annotations

import torch


class _PickedWeight(torch.autograd.Function):
    """``W_eff = W * own + W_prior * (scores > threshold)``, where ``own`` is the float 0/1 mask of
    the task's own weights and ``W_prior = W * prior`` the (frozen) weights of earlier tasks it
    may pick, so that ``W_eff = where(own | (prior & (scores > threshold)), W, 0)``.

    Backward: ``dW = (g + decay * W) * own`` (frozen weights get exactly zero gradient and
    no weight decay) and ``dscores = g * W_prior`` (straight-through estimator).

    Masks are float multiplications, not ``torch.where`` over ``bool`` masks: on CPU a
    multiplication costs a fifth to a tenth of a ``where`` (``benchmarks/vgg_epoch_overhead.py``,
    BENCHMARKS.md, "Speed of the task-aware layers"); the values are the same (a weight times 1.0
    is itself, times 0.0 is a zero).
    """

    @staticmethod
    def forward(ctx, weight, scores, own, prior_weight, threshold: float, decay: float):
        ctx.save_for_backward(weight, own, prior_weight)
        ctx.decay = decay
        picked = torch.gt(scores, threshold, out=torch.empty_like(weight))  # 0.0 / 1.0, one kernel
        return torch.addcmul(weight * own, prior_weight, picked)

    @staticmethod
    def backward(ctx, grad):
        weight, own, prior_weight = ctx.saved_tensors
        g_w = g_s = None
        if ctx.needs_input_grad[0]:
            g_w = grad.add(weight, alpha=ctx.decay).mul_(own) if ctx.decay else grad * own
        if ctx.needs_input_grad[1]:
            g_s = grad * prior_weight
        return g_w, g_s, None, None, None, None


class _OwnedWeight(torch.autograd.Function):
    """``W_eff = W * visible`` with ``dW = (g + decay * W) * own`` (float 0/1 masks)."""

    @staticmethod
    def forward(ctx, weight, own, visible, decay: float):
        ctx.save_for_backward(weight, own)
        ctx.decay = decay
        return weight * visible

    @staticmethod
    def backward(ctx, grad):
        weight, own = ctx.saved_tensors
        g = grad.add(weight, alpha=ctx.decay).mul_(own) if ctx.decay else grad * own
        return g, None, None, None


def picked_weight(weight: torch.Tensor, scores: torch.Tensor, own: torch.Tensor, prior_weight: torch.Tensor,
                  threshold: float, decay: float = 0.0) -> torch.Tensor:
    """Effective weight of the task in training with learned picks (all tensors of one shape):
    ``own`` is the float 0/1 mask of the task's own weights, ``prior_weight`` the weights of
    earlier tasks it may pick (``W`` where ``0 < owner < task``, 0 elsewhere; frozen during the
    task). ``decay``: L2 weight decay folded into the gradient of the owned weights only (applied
    by hand, as the CPG reference does)."""
    return _PickedWeight.apply(weight, scores, own, prior_weight, threshold, decay)


def owned_weight(weight: torch.Tensor, own: torch.Tensor, visible: torch.Tensor, decay: float = 0.0) -> torch.Tensor:
    """Effective weight where ``visible`` weights are used and only ``own`` ones get gradient
    (plus ``decay * W``); both masks float 0/1 of ``weight``'s dtype."""
    return _OwnedWeight.apply(weight, own, visible, decay)


class _TopCapacityWeight(torch.autograd.Function):
    """``W_eff = W * m`` with ``m = 1[|scores| >= threshold]`` (WSN's top-c selection, Kang et al.
    2022, Sec. 3). Backward: ``dW = (g + decay * W) * m * own`` -- only the selected weights the
    task owns train; weights of earlier tasks get exactly zero -- and ``dscores = g * W *
    sign(scores)``: straight through the threshold, then through ``|scores|`` (the WSN code
    thresholds ``w_m.abs()`` inside autograd)."""

    @staticmethod
    def forward(ctx, weight, scores, own, threshold, decay: float):
        m = torch.ge(scores.abs(), threshold).to(weight.dtype)
        ctx.save_for_backward(weight, scores, own, m)
        ctx.decay = decay
        return weight * m

    @staticmethod
    def backward(ctx, grad):
        weight, scores, own, m = ctx.saved_tensors
        g_w = g_s = None
        if ctx.needs_input_grad[0]:
            g_w = (grad.add(weight, alpha=ctx.decay) if ctx.decay else grad) * (m * own)
        if ctx.needs_input_grad[1]:
            g_s = grad * weight * torch.sign(scores)
        return g_w, g_s, None, None, None


def top_capacity_weight(weight: torch.Tensor, scores: torch.Tensor, own: torch.Tensor, threshold: torch.Tensor,
                        decay: float = 0.0) -> torch.Tensor:
    """Effective weight of the task in training under WSN's rule (all tensors of one shape but the
    0-d ``threshold``): the weights whose ``|score|`` reaches ``threshold``; ``own`` is the float
    0/1 mask of the weights the task may train (those no earlier task uses)."""
    return _TopCapacityWeight.apply(weight, scores, own, threshold, decay)
