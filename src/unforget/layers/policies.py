"""Mask policies: the rule by which a task-aware layer computes the effective weight of the task in
training, and what it freezes when the task ends.

A layer keeps the state every policy shares -- the weight ``W``, the ``owner`` map (which task
first used each weight; 0 = free) and, per finished task, a ``pick_t`` mask over earlier tasks'
weights -- and serves a finished task ``t`` as ``W * (owner == t | (0 < owner < t & pick_t))``.
A policy only decides how the task in training chooses its weights, as
``torch.nn.utils.prune`` separates the mask rule from the module. So growing, checkpoints, size
accounting, export and the exactness tests serve every policy.

* :class:`OwnershipPicks` -- CPG, PAE, PackNet, Piggyback (Hung et al. 2019; Mallya et al. 2018):
  the task trains every weight it owns, and learned pick scores (thresholded, straight-through)
  or all of them choose the earlier tasks' weights it uses.
* :class:`Supermask` -- SupSup (Wortsman et al. 2020, "Supermasks in Superposition", Sec. 3):
  fixed random weights that no task owns or trains; each task learns its own top-``density``
  supermask over all of them (edge-popup, Ramanujan et al. 2020) and is served as
  ``W * pick_t``.
* :class:`UnitGates` -- HAT (Serra et al. 2018, "Overcoming Catastrophic Forgetting with Hard
  Attention to the Task", Sec. 2): every weight is shared and trains; a task's units are gated
  by ``sigmoid(s * e_t)`` of a learned per-task embedding, and each weight's gradient is scaled
  by ``1 - min(a_out, a_in)`` of the earlier tasks' cumulative gates. Not exact.
* :class:`TopCapacity` -- WSN (Kang et al. 2022, "Forget-free Continual Learning with Winning
  Subnetworks", Sec. 3, Eq. 2-4): one real-valued score per weight, shared by all tasks; the task
  uses the top ``capacity`` share of ``|scores|`` in each layer, straight-through; of those it
  trains the weights no earlier task uses and keeps the earlier tasks' frozen; weights it claimed
  but did not select go back to the free pool with their values.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import torch
from torch import nn

from unforget.layers.masks import owned_weight, picked_weight, top_capacity_weight

if TYPE_CHECKING:  # pragma: no cover
    from unforget.layers.task_aware import TaskAwareWeighted

SCORE_INIT = 1e-2
"""Initial value of real-valued pick scores (Mallya et al. 2018, Sec. 4; Hung et al. 2019)."""
SCORE_THRESHOLD = 5e-3
"""A weight of an earlier task is picked when its score exceeds this threshold."""


class MaskPolicy:
    """Base of mask policies (see the module doc). Policies hold only their options; the
    tensors they learn live in the layer (``layer.scores``), so checkpoints and growth see them."""

    name = ""

    def begin_task(self, layer: "TaskAwareWeighted", task: int, learn_picks: bool) -> None:
        """Create what the task in training learns (e.g. scores) in ``layer``."""

    def training_weight(self, layer: "TaskAwareWeighted", task: int) -> torch.Tensor:
        """The effective weight of the task in training (on its slice), with gradients only to
        what it may change."""
        raise NotImplementedError

    def end_task(self, layer: "TaskAwareWeighted", task: int) -> None:
        """Freeze the task: fix its picks (and ownership) so that serving it never changes."""

    def served_mask(self, layer: "TaskAwareWeighted", task: int) -> torch.Tensor:
        """Bool mask (on the task's slice) of the weights a finished task uses: its own weights
        and the earlier tasks' weights it picked (no pick mask: all of them)."""
        own, prior = layer._masks(task)
        pick = layer.pick_mask(task)
        if pick is not None:
            rows, cols = layer.slice_for(task)
            prior = prior & pick[rows, cols]
        return own | prior

    def growth_init(self, key: str, shape, like: torch.Tensor) -> torch.Tensor:
        """Values of new score entries when the layer grows."""
        return torch.full(shape, SCORE_INIT, dtype=like.dtype, device=like.device)

    def superposed(self, layer: "TaskAwareWeighted", alphas: torch.Tensor):
        """``(weight, bias)`` of the superposition of tasks ``1..len(alphas)`` (task-id inference);
        only policies whose tasks differ by masks over one fixed weight support it."""
        raise NotImplementedError(f"the {self.name} mask policy cannot superpose tasks (task-id inference "
                                  "needs supermasks over fixed weights: method supsup)")


class OwnershipPicks(MaskPolicy):
    """The task trains the weights it owns; earlier tasks' weights are used through learned
    pick scores (Piggyback's straight-through threshold) or all of them (see module doc)."""

    name = "ownership-picks"

    def begin_task(self, layer, task, learn_picks):
        if learn_picks and task > 1:
            layer.scores[str(task)] = nn.Parameter(torch.full_like(layer.weight, SCORE_INIT))

    def training_weight(self, layer, task):
        w, full = layer._sliced(task)
        own, visible, prior_weight = layer._training_masks(task, w)
        key = str(task)
        if key in layer.scores:
            rows, cols = layer.slice_for(task)
            scores = layer.scores[key] if full else layer.scores[key][rows, cols]
            return picked_weight(w, scores, own, prior_weight, SCORE_THRESHOLD, layer.decay)
        return owned_weight(w, own, visible, layer.decay)

    def end_task(self, layer, task):
        key = str(task)
        if key in layer.scores:
            prior = (layer.owner > 0) & (layer.owner < task)
            pick = (layer.scores[key].detach() > SCORE_THRESHOLD) & prior
            del layer.scores[key]
            layer.set_pick(task, pick)


WSN_SCORES = "wsn"
"""Key of WSN's shared weight scores in ``layer.scores``."""


def _kaiming_uniform(shape, like: torch.Tensor) -> torch.Tensor:
    """``nn.init.kaiming_uniform_(a=sqrt(5))`` values, as PyTorch initialises conv / linear
    weights and the WSN code its scores."""
    t = torch.empty(shape, dtype=like.dtype, device=like.device)
    nn.init.kaiming_uniform_(t, a=math.sqrt(5))
    return t


class TopCapacity(MaskPolicy):
    """WSN (see module doc): the top ``capacity`` share of ``|scores|`` per layer.

    Args:
        capacity: share of each layer's weights a task uses, in ``(0, 1]`` (the paper's ``c``,
            0.03 - 0.5).
    """

    name = "top-capacity"

    def __init__(self, capacity: float) -> None:
        if not 0 < capacity <= 1:
            raise ValueError(f"WSN capacity must lie in (0, 1], got {capacity}")
        self.capacity = float(capacity)

    def begin_task(self, layer, task, learn_picks):
        if WSN_SCORES not in layer.scores:  # shared by every task, kept between tasks (the WSN code)
            layer.scores[WSN_SCORES] = nn.Parameter(_kaiming_uniform(layer.weight.shape, layer.weight))

    def growth_init(self, key, shape, like):
        return _kaiming_uniform(shape, like) if key == WSN_SCORES else super().growth_init(key, shape, like)

    def selected(self, layer, task) -> torch.Tensor:
        """The task's current selection on its slice (``bool``): ``|scores| >=`` the score at the
        ``1 - capacity`` quantile (the WSN code's ``percentile``: the k-th smallest of
        ``|scores|`` with ``k = 1 + round((1 - capacity) (n - 1))``)."""
        w, full = layer._sliced(task)
        rows, cols = layer.slice_for(task)
        s = layer.scores[WSN_SCORES] if full else layer.scores[WSN_SCORES][rows, cols]
        return s.detach().abs() >= kth_score(s.detach().abs(), self.capacity)

    def training_weight(self, layer, task):
        w, full = layer._sliced(task)
        rows, cols = layer.slice_for(task)
        own, _, _ = layer._training_masks(task, w)
        s = layer.scores[WSN_SCORES] if full else layer.scores[WSN_SCORES][rows, cols]
        return top_capacity_weight(w, s, own, kth_score(s.detach().abs(), self.capacity), layer.decay)

    @torch.no_grad()
    def end_task(self, layer, task):
        rows, cols = layer.slice_for(task)
        chosen = torch.zeros_like(layer.owner, dtype=torch.bool)
        chosen[rows, cols] = self.selected(layer, task)
        prior = (layer.owner > 0) & (layer.owner < task)
        # claimed but not chosen: free again, values kept (no task ever used them)
        layer.release((layer.owner == task) & ~chosen, keep_values=True)
        if prior.any():  # without earlier weights (task 1) there is nothing to pick
            layer.set_pick(task, chosen & prior)


def kth_score(abs_scores: torch.Tensor, capacity: float) -> torch.Tensor:
    """The selection threshold of :class:`TopCapacity` for ``abs_scores`` (any shape): the
    ``k``-th smallest value, ``k = 1 + round((1 - capacity) (n - 1))`` (0-d tensor)."""
    flat = abs_scores.reshape(-1)
    k = 1 + round((1.0 - capacity) * (flat.numel() - 1))
    return flat.kthvalue(k).values


class Supermask(TopCapacity):
    """SupSup (see module doc): per-task scores (Kaiming-uniform, as the SupSup code's
    ``mask_init``), the top ``density`` share of ``|scores|`` per layer -- the SupSup code keeps
    ``n - floor((1 - density) n)`` weights -- straight-through; the weights never train. A
    finished task's mask covers every weight (``pick_t``), not only earlier tasks' ones.

    Args:
        density: share of each layer's weights in a task's supermask, in ``(0, 1]``.
    """

    name = "supermask"

    def begin_task(self, layer, task, learn_picks):
        if learn_picks:  # not when a finished task is rebuilt from a checkpoint
            layer.scores[str(task)] = nn.Parameter(_kaiming_uniform(layer.weight.shape, layer.weight))

    def growth_init(self, key, shape, like):
        return _kaiming_uniform(shape, like)

    def _scores(self, layer, task) -> torch.Tensor:
        w, full = layer._sliced(task)
        rows, cols = layer.slice_for(task)
        return layer.scores[str(task)] if full else layer.scores[str(task)][rows, cols]

    def threshold(self, abs_scores: torch.Tensor) -> torch.Tensor:
        flat = abs_scores.reshape(-1)
        dropped = int((1.0 - self.capacity) * flat.numel())  # the SupSup code's GetSubnet
        return flat.kthvalue(dropped + 1).values

    def selected(self, layer, task):
        s = self._scores(layer, task).detach().abs()
        return s >= self.threshold(s)

    def training_weight(self, layer, task):
        w, _ = layer._sliced(task)
        s = self._scores(layer, task)
        nothing = torch.zeros((), dtype=w.dtype, device=w.device)  # no weight trains
        return top_capacity_weight(w, s, nothing, self.threshold(s.detach().abs()), 0.0)

    @torch.no_grad()
    def end_task(self, layer, task):
        rows, cols = layer.slice_for(task)
        chosen = torch.zeros_like(layer.owner, dtype=torch.bool)
        chosen[rows, cols] = self.selected(layer, task)
        del layer.scores[str(task)]
        layer.set_pick(task, chosen)

    def served_mask(self, layer, task):
        rows, cols = layer.slice_for(task)
        return layer.pick_mask(task)[rows, cols]

    def superposed(self, layer, alphas):
        """``W * sum_t alphas[t-1] mask_t`` and ``sum_t alphas[t-1] b_t`` (Wortsman et al. 2020,
        Eq. 3); the stacked float masks are kept until the layer's masks change."""
        stacked = layer.cached(("stacked", len(alphas)), lambda: torch.stack(
            [layer.pick_mask(t).to(layer.weight.dtype) for t in range(1, len(alphas) + 1)]))
        mix = torch.tensordot(alphas.to(stacked.dtype), stacked, dims=1)
        bias = None
        if layer.has_bias:
            bias = sum(a * layer.biases[str(t)] for t, a in enumerate(alphas, start=1))
        return layer.weight.detach() * mix, bias


HAT_PREV = "hat_prev"
"""Name of the layer buffer holding the earlier tasks' cumulative gates of its output units."""


class _ConditionedWeight(torch.autograd.Function):
    """``W`` itself; backward ``(g + decay W) * factor`` (HAT's gradient conditioning, Serra et
    al. 2018, Eq. 2)."""

    @staticmethod
    def forward(ctx, weight, factor, decay: float):
        ctx.save_for_backward(weight, factor)
        ctx.decay = decay
        return weight.clone()

    @staticmethod
    def backward(ctx, grad):
        weight, factor = ctx.saved_tensors
        g = grad.add(weight, alpha=ctx.decay) if ctx.decay else grad
        return g * factor, None, None


class UnitGates(MaskPolicy):
    """HAT (see module doc). The per-task embedding of the layer's output units lives in
    ``layer.scores[str(t)]`` (shape ``(units,)``), the cumulative gates of the earlier tasks in
    the buffer ``hat_prev``; ``source`` is the policy of the layer feeding this one (``None``:
    the input), whose gates condition the input side of the gradient.

    Args:
        s_max: the gates' final scale (the paper: 400).
    """

    name = "unit-gates"

    def __init__(self, s_max: float = 400.0) -> None:
        self.s_max = float(s_max)
        self.s = float(s_max)
        """The scale in use: annealed from ``1 / s_max`` to ``s_max`` within each training epoch,
        ``s_max`` otherwise (set by the method's hook)."""
        self.source: Optional["UnitGates"] = None
        self.layer_ref: list = []

    def begin_task(self, layer, task, learn_picks):
        if HAT_PREV not in layer._buffers:
            layer.register_buffer(HAT_PREV, torch.zeros(layer.weight.shape[0], device=layer.weight.device))
        if str(task) not in layer.scores:
            e = torch.randn(layer.weight.shape[0], device=layer.weight.device)  # the paper's N(0, 1)
            layer.scores[str(task)] = nn.Parameter(e)
        self.layer_ref = [layer]

    def gate(self, layer, task: int, s: Optional[float] = None) -> torch.Tensor:
        """``sigmoid(s * e_t)`` of the layer's output units (``s``: default the scale in use)."""
        return torch.sigmoid((self.s if s is None else s) * layer.scores[str(task)])

    def prev(self, layer) -> torch.Tensor:
        return getattr(layer, HAT_PREV)

    def training_weight(self, layer, task):
        w = layer.weight
        def make():  # the earlier tasks' gates do not change while a task trains
            out_prev = self.prev(layer).view(-1, *([1] * (w.dim() - 1)))
            if self.source is not None and self.source.layer_ref:
                in_prev = self.prev(self.source.layer_ref[0]).view(1, -1, *([1] * (w.dim() - 2)))
                return (1 - torch.minimum(out_prev, in_prev)).expand_as(w).contiguous()
            return (1 - out_prev).expand_as(w).contiguous()
        factor = layer.cached(("hat_factor", task), make)
        return _ConditionedWeight.apply(w, factor, layer.decay)

    @torch.no_grad()
    def end_task(self, layer, task):
        self.prev(layer).copy_(torch.maximum(self.prev(layer), self.gate(layer, task, self.s_max)))
        layer.scores[str(task)].requires_grad_(False)

    def served_mask(self, layer, task):
        rows, cols = layer.slice_for(task)
        return torch.ones_like(layer.owner[rows, cols], dtype=torch.bool)
