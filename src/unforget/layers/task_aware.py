"""Task-aware convolution, linear and batch-norm layers (design.md, "Task-aware layers").

Each prunable weight tensor ``W`` (shape ``(out, in, *kernel)``) carries

* ``owner``: ``int16`` tensor of ``W``'s shape; 0 = free (released or never used), t = kept for
  task t;
* ``pick_<t>``: for a finished task t whose picks were learned, a ``bool`` mask over ``W``;
  only its entries with ``0 < owner < t`` are ever read (design.md invariant 3);
* per-task widths through its :class:`~unforget.layers.context.WidthGroup` (output units) and
  the group of the layer feeding it (input units).

Task t's effective weight is ``W * 1[owner == t or (0 < owner < t and pick_t)]`` restricted to
its first ``width_t`` output and input units (Hung et al. 2019, Sec. 3; Mallya et al. 2018).
Computing any task never writes to ``W``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from unforget.layers.context import TaskContext, WidthGroup, current_alphas, current_task
from unforget.layers.policies import SCORE_INIT, SCORE_THRESHOLD, MaskPolicy, OwnershipPicks
from unforget.models.conv import DenseConv2d, dense_conv2d

__all__ = ["SCORE_INIT", "SCORE_THRESHOLD", "TaskAwareWeighted", "TaskConv2d", "TaskLinear", "PerTaskLayer",
           "TaskBatchNorm", "TaskPReLU"]


class TaskAwareWeighted(nn.Module):
    """Shared weight tensor with ownership, pick masks and per-task bias; base of conv/linear.

    Args:
        weight: initial weight, shape ``(out, in, *kernel)`` (copied).
        bias: initial bias ``(out,)`` or ``None``; every task gets its own bias started from it.
        out_group: width group of the output units.
        in_group: width group of the input units, ``None`` for a fixed input (the image).
        ctx: the network's shared :class:`TaskContext`.
    """

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], out_group: WidthGroup,
                 in_group: Optional[WidthGroup], ctx: TaskContext) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.register_buffer("owner", torch.zeros(weight.shape, dtype=torch.int16, device=weight.device))
        self.has_bias = bias is not None
        self.register_buffer("bias_init", bias.detach().clone() if bias is not None else torch.zeros(0))
        self.biases = nn.ParameterDict()
        self.scores = nn.ParameterDict()
        self.pick_tasks: set[int] = set()
        self.out_group = out_group
        self.in_group = in_group
        self.ctx = [ctx]  # in a list so that nn.Module does not register it
        self.decay = 0.0
        """L2 weight decay on the owned weights of the task in training, folded into their
        gradient (frozen weights get none); set by the method that trains."""
        self.policy: MaskPolicy = OwnershipPicks()
        """How the task in training chooses its weights (:mod:`unforget.layers.policies`); set by
        the method."""
        self._cache: dict = {}
        self.register_load_state_dict_post_hook(_loaded)

    # ------------------------------------------------------------------ shapes and masks
    def in_size(self) -> int:
        return self.weight.shape[1]

    def slice_for(self, task: int) -> tuple[slice, slice]:
        """Row and column slices of task ``task``'s units."""
        out_w = self.out_group.width(task)
        in_w = self.in_group.width(task) if self.in_group is not None else self.in_size()
        return slice(0, out_w), slice(0, in_w)

    def invalidate(self) -> None:
        """Drop cached masks. The layer calls it itself whenever its ``owner``, picks or shapes
        change (:meth:`release`, :meth:`claim`, :meth:`grow`, task life cycle, ``load_state_dict``);
        code that writes ``owner`` by hand must call it too."""
        self._cache.clear()

    # ------------------------------------------------------------------ ownership (methods ask, the layer writes)
    @torch.no_grad()
    def release(self, mask: torch.Tensor, optimizers=(), keep_values: bool = False) -> int:
        """Release the weights in ``mask`` (``bool``, W's shape): owner -> 0 (free), value -> 0,
        and every per-weight optimizer state of W in ``optimizers`` (e.g. SGD's momentum, Adam's
        moments) -> 0, so that a released weight stays at zero (design.md invariant 2).
        ``keep_values``: values stay (weights a task claimed but never used, e.g. WSN's
        unselected ones, which no task's output depends on). Returns how many weights were owned
        and are now free."""
        n = int((mask & (self.owner != 0)).sum())
        self.owner.masked_fill_(mask, 0)
        if not keep_values:
            self.weight.masked_fill_(mask, 0)  # in place: bumps the version the serve cache checks
        for opt in optimizers:
            for v in opt.state.get(self.weight, {}).values():
                if torch.is_tensor(v) and v.shape == self.weight.shape:
                    v.masked_fill_(mask, 0)
        self.invalidate()
        return n

    @torch.no_grad()
    def claim(self, mask: torch.Tensor, task: int) -> int:
        """Give the free weights in ``mask`` (``bool``, W's shape) to ``task`` (owner 0 ->
        ``task``); weights of other tasks are never taken. Returns how many were claimed."""
        mask = mask & (self.owner == 0)
        self.owner.masked_fill_(mask, task)
        self.invalidate()
        return int(mask.sum())

    @torch.no_grad()
    def zero_weights(self, mask: torch.Tensor) -> None:
        """Set the weights in ``mask`` (``bool``, W's shape) to zero, owners unchanged: CLNP cuts
        a released unit's outgoing connections this way."""
        self.weight.masked_fill_(mask, 0)  # in place: bumps the version the serve cache checks

    def set_pick(self, task: int, pick: torch.Tensor) -> None:
        """Freeze ``pick`` (``bool``, W's shape) as finished task ``task``'s mask over earlier
        tasks' weights (the policy decides it; only entries with ``0 < owner < task`` are read)."""
        self.register_buffer(f"pick_{task}", pick.to(torch.bool))
        self.pick_tasks.add(task)
        self.invalidate()

    def pick_mask(self, task: int) -> Optional[torch.Tensor]:
        """The frozen pick mask of a finished task (``bool``, W's shape) or ``None`` (all picked)."""
        return getattr(self, f"pick_{task}") if task in self.pick_tasks else None

    def cached(self, key, make):
        """``make()``, kept under ``key`` until :meth:`invalidate` (masks and other tensors that
        are pure functions of the layer's owners, picks and shapes, for this layer and its mask
        policy). While ``torch.compile`` traces, ``make()`` is computed inside the graph instead:
        a lookup would make the graph guard on the cache's contents and recompile once it fills,
        and the compiler fuses the mask ops into their consumers anyway."""
        if torch.compiler.is_compiling():
            return make()
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _masks(self, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(own, prior)`` bool masks of ``task`` on its slice (cached until ``invalidate``)."""
        def make():
            rows, cols = self.slice_for(task)
            o = self.owner[rows, cols]
            return o == task, (o > 0) & (o < task)
        return self.cached(("own_prior", task), make)

    def _training_masks(self, task: int, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(own, visible, prior_weight)`` of the task in training on its slice: float 0/1 masks
        in ``w``'s dtype and the earlier tasks' weights ``w * prior`` (frozen while the task
        trains, so computed once per phase; cached until ``invalidate``, which any change of
        owners, picks, shapes or a loaded state calls)."""
        def make():
            own, prior = self._masks(task)
            own_f, prior_f = own.to(w.dtype), prior.to(w.dtype)
            return own_f, own_f + prior_f, w.detach() * prior_f
        return self.cached(("training", task), make)

    def task_mask(self, task: int) -> torch.Tensor:
        """Bool mask (on the task's slice) of the weights task ``task`` uses once finished (the
        policy's rule, :meth:`MaskPolicy.served_mask`; cached until ``invalidate``)."""
        return self.cached(("mask", task), lambda: self.policy.served_mask(self, task))

    def effective_weight(self, task: int) -> torch.Tensor:
        """Task ``task``'s effective weight, shape ``(width_t, in_width_t, *kernel)``.

        For the task in training, gradients reach only its own weights (``owner == task``) and
        its pick scores; for any other task the result is a pure function of frozen tensors.
        """
        if task != self.ctx[0].training_task:
            return self._served(task)
        return self.policy.training_weight(self, task)

    def _sliced(self, task: int) -> tuple[torch.Tensor, bool]:
        """``(W on the task's slice, whether that is all of W)``; no slice op at full width (and
        so no scatter in backward)."""
        rows, cols = self.slice_for(task)
        full = rows.stop == self.weight.shape[0] and cols.stop == self.weight.shape[1]
        return (self.weight if full else self.weight[rows, cols]), full

    def _masked(self, task: int) -> torch.Tensor:
        w, _ = self._sliced(task)
        return torch.where(self.task_mask(task), w, torch.zeros((), dtype=w.dtype, device=w.device))

    def _served(self, task: int) -> torch.Tensor:
        """A finished task's effective weight ``W * mask`` (no gradient path to W is needed: it
        is frozen), materialised once and kept in a small LRU cache (``TaskContext.serve_cache``
        tasks). An entry is valid only for the weight tensor object and in-place version it was
        made from, so any write to W (an optimizer step, ``load_state_dict``, growth) drops it."""
        size = self.ctx[0].serve_cache
        if size <= 0 or torch.is_grad_enabled() and self.weight.requires_grad or torch.compiler.is_compiling():
            return self._masked(task)
        served = self._cache.setdefault("served", {})
        stamp = (id(self.weight), self.weight._version)
        hit = served.pop(task, None)
        if hit is None or hit[0] != stamp:
            with torch.no_grad():
                hit = (stamp, self._masked(task))
        served[task] = hit  # most recently used last
        while len(served) > size:
            served.pop(next(iter(served)))
        return hit[1]

    def weight_and_bias(self) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Weight and bias of the task being computed, or of the superposition of the learned
        tasks inside :func:`~unforget.layers.context.superposed` (the policy's
        :meth:`~unforget.layers.policies.MaskPolicy.superposed`)."""
        alphas = current_alphas()
        if alphas is not None:
            return self.policy.superposed(self, alphas)
        t = current_task()
        return self.effective_weight(t), self.task_bias(t)

    def task_bias(self, task: int) -> Optional[torch.Tensor]:
        if not self.has_bias:
            return None
        return self.biases[str(task)]

    # ------------------------------------------------------------------ task life cycle
    def begin_task(self, task: int, claim_free: bool, learn_picks: bool) -> None:
        """Prepare ``task``: claim the free weights of its slice (owner 0 -> task, design.md
        invariant 2), create its bias and, with ``learn_picks``, its pick scores."""
        rows, cols = self.slice_for(task)
        if claim_free:
            block = torch.zeros_like(self.owner, dtype=torch.bool)
            block[rows, cols] = True
            self.claim(block, task)
        if self.has_bias:
            b = torch.zeros(rows.stop, dtype=self.weight.dtype, device=self.weight.device)
            n = min(rows.stop, self.bias_init.numel())
            b[:n] = self.bias_init[:n]
            self.biases[str(task)] = nn.Parameter(b)
        self.policy.begin_task(self, task, learn_picks)
        self.invalidate()

    def end_task(self, task: int) -> None:
        """Freeze ``task`` as the policy says (e.g. its pick scores become a fixed bool mask over
        earlier weights)."""
        self.policy.end_task(self, task)
        self.invalidate()

    def add_pick_buffer(self, task: int) -> None:
        """Create an empty pick buffer for ``task`` (used when loading a checkpoint)."""
        self.register_buffer(f"pick_{task}", torch.zeros(self.weight.shape, dtype=torch.bool, device=self.weight.device))
        self.pick_tasks.add(task)

    # ------------------------------------------------------------------ growth
    def grow(self, n_out: int, n_in: int, task: Optional[int]) -> None:
        """Append ``n_out`` output units (new rows, random init) and ``n_in`` input units (new
        columns, zero init so the task in training computes the same function right after
        growth). The current task's bias and pick scores grow with the weight; frozen tensors of
        earlier tasks keep their values at their old indices."""
        old = self.weight.data
        out0, in0 = old.shape[0], old.shape[1]
        shape = (out0 + n_out, in0 + n_in, *old.shape[2:])
        new = torch.zeros(shape, dtype=old.dtype, device=old.device)
        new[:out0, :in0] = old
        if n_out:
            fan_in = (in0 + n_in) * math.prod(old.shape[2:])
            new[out0:].normal_(0.0, math.sqrt(2.0 / fan_in))
        self.weight = nn.Parameter(new)
        owner = torch.zeros(shape, dtype=self.owner.dtype, device=old.device)
        owner[:out0, :in0] = self.owner
        self.owner = owner
        for t in list(self.pick_tasks):
            p = torch.zeros(shape, dtype=torch.bool, device=old.device)
            p[:out0, :in0] = getattr(self, f"pick_{t}")
            setattr(self, f"pick_{t}", p)
        for key in list(self.scores):
            s = self.policy.growth_init(key, shape, old)
            s[:out0, :in0] = self.scores[key].data
            self.scores[key] = nn.Parameter(s)
        if task is not None and self.has_bias and str(task) in self.biases and n_out:
            b = self.biases[str(task)].data
            self.biases[str(task)] = nn.Parameter(torch.cat([b, b.new_zeros(n_out)]))
        self.invalidate()


def _loaded(layer: TaskAwareWeighted, incompatible_keys) -> None:
    """``load_state_dict`` post hook: loaded owners and picks make cached masks stale."""
    layer.invalidate()


class TaskConv2d(TaskAwareWeighted):
    """Task-aware ``nn.Conv2d`` (groups=1). Input ``(N, in_width_t, H, W)`` -> output
    ``(N, width_t, H', W')`` for the task being computed (:func:`~unforget.layers.context.computing`);
    converted from a :class:`~unforget.models.conv.DenseConv2d`, it computes as that does."""

    def __init__(self, conv: nn.Conv2d, out_group: WidthGroup, in_group: Optional[WidthGroup],
                 ctx: TaskContext) -> None:
        if conv.groups != 1:
            raise ValueError("grouped convolutions are not supported by task-aware layers")
        super().__init__(conv.weight, conv.bias, out_group, in_group, ctx)
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.dense = isinstance(conv, DenseConv2d)
        """Converted from a :class:`~unforget.models.conv.DenseConv2d`: computed as the dense layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight_and_bias()
        if self.dense:  # a dense layer written as a convolution, computed as one (models.conv)
            return dense_conv2d(x, w, b, self.stride, self.padding, self.dilation)
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation)


class TaskLinear(TaskAwareWeighted):
    """Task-aware ``nn.Linear``. Input ``(N, in_width_t)`` -> output ``(N, width_t)``."""

    def __init__(self, linear: nn.Linear, out_group: WidthGroup, in_group: Optional[WidthGroup],
                 ctx: TaskContext) -> None:
        super().__init__(linear.weight, linear.bias, out_group, in_group, ctx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight_and_bias()
        return F.linear(x, w, b)


class PerTaskLayer(nn.Module):
    """A layer whose parameters (and buffers) are each task's own: one small module per task of
    ``width_t`` units, created when the task begins from the latest earlier task's values (for
    the first task: the converted layer's), grown with its width group, never shared. Subclasses
    say which module (:meth:`_new`) and which tensors carry over (``carried``)."""

    carried: tuple[str, ...] = ()

    def __init__(self, src: nn.Module, group: WidthGroup, ctx: TaskContext) -> None:
        super().__init__()
        self.norms = nn.ModuleDict()
        """Per-task modules by task id (the name predates PReLU; batch norms were first)."""
        self.group = group
        self.ctx = [ctx]
        # the converted layer's values (e.g. pretrained statistics or slopes) start the first task's
        for name in self.carried:
            t = getattr(src, name)
            self.register_buffer(f"init_{name}", t.detach().clone() if t is not None else torch.zeros(0))

    def _new(self, n: int, device) -> nn.Module:
        raise NotImplementedError

    def begin_task(self, task: int, device=None) -> None:
        """Create task ``task``'s module, started from the latest earlier task's (overlapping
        part), or for the first task from the converted layer's values."""
        mod = self._new(self.group.width(task), device)
        with torch.no_grad():
            for name in self.carried:
                if len(self.norms):
                    src = getattr(self.norms[max(self.norms, key=int)], name)
                else:
                    src = getattr(self, f"init_{name}")
                dst = getattr(mod, name)
                n = min(src.numel(), dst.numel())
                if n:
                    dst[:n] = src[:n]
        self.norms[str(task)] = mod

    def grow(self, n: int, task: Optional[int]) -> None:
        """Append ``n`` units (fresh values) to the module of ``task`` (the task in training)."""
        if task is None or str(task) not in self.norms or n == 0:
            return
        old = self.norms[str(task)]
        size = getattr(old, self.carried[0]).numel()
        new = self._new(size + n, getattr(old, self.carried[0]).device)
        with torch.no_grad():
            for name in self.carried:
                k = getattr(old, name).numel()
                getattr(new, name)[:k] = getattr(old, name)
            if hasattr(old, "num_batches_tracked") and old.num_batches_tracked is not None:
                new.num_batches_tracked.copy_(old.num_batches_tracked)
        self.norms[str(task)] = new


class TaskBatchNorm(PerTaskLayer):
    """Per-task batch norm: affine parameters and running statistics of task t live in their own
    ``nn.BatchNorm{1,2}d`` of ``width_t`` features (design.md: "Batch norm ... per task")."""

    carried = ("weight", "bias", "running_mean", "running_var")

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, group: WidthGroup, ctx: TaskContext) -> None:
        self.kind = type(bn)
        self.eps, self.momentum = bn.eps, bn.momentum
        super().__init__(bn, group, ctx)

    def _new(self, n: int, device) -> nn.Module:
        norm = self.kind(n, eps=self.eps, momentum=self.momentum).to(device)
        norm.train(self.training)
        return norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alphas = current_alphas()
        if alphas is not None:
            return superpose(self, x, alphas)
        norm = self.norms[str(current_task())]
        if norm.training or norm.running_mean is None:
            return norm(x)
        # evaluation: the same kernel nn.BatchNorm calls, without a second module call (serving speed)
        return F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)


class TaskPReLU(PerTaskLayer):
    """Per-task PReLU: task t's learned slopes (one per channel of its ``width_t`` units) are its
    own, as the CPG reference keeps them per dataset (``shared_layer_info[...]['prelu_layer_weight']``),
    so training a later task never moves an earlier task's activation. New units start at 0.25
    (He et al. 2015's PReLU initialisation)."""

    carried = ("weight",)

    def _new(self, n: int, device) -> nn.Module:
        return nn.PReLU(n, init=0.25).to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alphas = current_alphas()
        if alphas is not None:
            return superpose(self, x, alphas)
        return self.norms[str(current_task())](x)


def superpose(layer: PerTaskLayer, x: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """``sum_t alphas[t - 1] * module_t(x)`` over the tasks ``1..len(alphas)`` of a per-task layer."""
    return sum(a * layer.norms[str(t)](x) for t, a in enumerate(alphas, start=1))
