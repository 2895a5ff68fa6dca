"""Multi-head network base class shared by every zoo model."""
from __future__ import annotations

import math
import reprlib
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from unforget.errors import TaskIdError


def scaled(channels: int, width: float) -> int:
    """Number of units of a layer of ``channels`` units at width multiplier ``width`` (>= 1)."""
    return max(1, int(math.ceil(channels * width - 1e-9)))


def normal_head_init(head: nn.Linear) -> None:
    """Head initialisation of CPG's reference code (ivclab/CPG, ``add_dataset``): weight
    N(0, 0.01), bias 0. Draws from the current global RNG."""
    nn.init.normal_(head.weight, 0.0, 0.01)
    if head.bias is not None:
        nn.init.zeros_(head.bias)


class PooledConvHead(nn.Conv2d):
    """A classifier head that is a convolution followed by a global average pool: input
    ``(N, in_features, H, W)`` with ``H, W >= kernel_size`` -> logits ``(N, out_features)``.

    The output layer of Golkar et al. 2019's wide fully convolutional net (Table 3: Conv 6,
    3x3, stride 1, no padding, then AvgPool). ``in_features`` / ``out_features`` name its
    channels as ``nn.Linear`` names its sizes, and ``weight[:, u]`` is what the head reads from
    input unit ``u`` for both, so code that grows or masks a head by input unit serves both.
    """

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__(in_features, out_features, kernel_size, bias=bias)

    @property
    def in_features(self) -> int:
        return self.in_channels

    @property
    def out_features(self) -> int:
        return self.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).mean(dim=(2, 3))


class MultiHeadNet(nn.Module):
    """A shared feature extractor followed by one classifier head per task (multi-head).

    Subclasses build ``self.features`` (any module mapping inputs to a ``(N, feature_dim)``
    tensor) and declare, in ``self.groups_spec``, the *width group* of each prunable layer:
    ``{module_name: (out_group, in_group_or_None)}`` for ``nn.Conv2d`` / ``nn.Linear`` and
    ``{module_name: (group, None)}`` for batch norm. Layers whose outputs are summed (residual
    additions) share one output group; ``in_group=None`` means a fixed input (the image).
    ``self.feature_group`` names the group the heads read.

    ``self.head_init`` initialises every new head in :meth:`add_head`: ``None`` keeps PyTorch's
    default init, else a callable ``head_init(head)`` that edits the new head in place (e.g.
    :func:`normal_head_init`). Builders set it; use a module-level function so the model stays
    picklable. ``self.head_kernel`` chooses the kind of head (:meth:`make_head`): ``None``
    (default) an ``nn.Linear`` over ``(N, feature_dim)`` features, ``k`` a
    :class:`PooledConvHead` with a ``k x k`` kernel over ``(N, feature_dim, H, W)`` feature maps.

    ``forward(x, task)`` returns the logits of head ``task`` (1-based task id), shape
    ``(N, n_classes_task)``.
    """

    def __init__(self, feature_dim: int, feature_group: str) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.feature_group = feature_group
        self.heads = nn.ModuleDict()
        self.groups_spec: dict[str, tuple[str, Optional[str]]] = {}
        self.task_context = None  # set by unforget.layers.to_task_aware
        self.head_init: Optional[Callable[[nn.Module], None]] = None
        self.head_kernel: Optional[int] = None

    def make_head(self, in_features: int, n_classes: int, bias: bool = True) -> nn.Module:
        """A new head of this network's kind (see ``head_kernel``) with PyTorch's default init."""
        kernel = getattr(self, "head_kernel", None)
        if kernel is None:
            return nn.Linear(in_features, n_classes, bias=bias)
        return PooledConvHead(in_features, n_classes, kernel, bias=bias)

    def add_head(self, task: int, n_classes: int, in_features: Optional[int] = None,
                 kind: Optional[str] = None) -> nn.Module:
        """Create (or replace) the classifier head of ``task``: with ``kind`` ``"a-softmax"`` an
        :class:`~unforget.models.heads.AngleLinear` (SphereFace's margin head), else
        :meth:`make_head` initialised by ``head_init`` (PyTorch's default when ``None``). The
        kind is remembered per task (``head_kinds``; ``None`` keeps the task's earlier kind, so
        a grown head keeps it). Returns the head."""
        kinds = self.__dict__.setdefault("head_kinds", {})
        kind = kind or kinds.get(str(task), "linear")
        if kind == "linear":
            kinds.pop(str(task), None)
            head = self.make_head(in_features or self.feature_dim, n_classes)
            init = getattr(self, "head_init", None)
            if init is not None:
                with torch.no_grad():
                    init(head)
        else:
            from unforget.models.heads import make_head

            kinds[str(task)] = kind
            head = make_head(kind, in_features or self.feature_dim, n_classes)
        ref = next(self.parameters(), None)
        if ref is not None:
            head = head.to(ref.device)
        self.heads[str(task)] = head
        return head

    def has_head(self, task: int) -> bool:
        return str(task) in self.heads

    def forward(self, x: torch.Tensor, task: "int | torch.Tensor") -> torch.Tensor:
        """Logits of ``x`` ``(N, ...)`` for ``task``: a 1-based task id (``int`` or 0-d integer
        tensor) -> ``(N, n_classes_task)``; or a 1-D integer tensor of ``N`` per-sample task
        ids (a mixed batch, as avalanche's ``MultiTaskModule``) -> ``(N, max n_classes)``, each
        row padded with ``-inf`` past its task's classes, so argmax and softmax never pick a
        class the task does not have.

        A pure function of ``(x, task)``: the task is passed to the task-aware layers for this
        call only (:func:`unforget.layers.context.computing`), so concurrent calls on one
        network with different tasks do not interfere.

        Raises:
            KeyError: a task without a head; TaskIdError (a ``TypeError``): a task id that is not
                an integer.
        """
        if isinstance(task, torch.Tensor) and task.dim() == 1:
            return self._forward_mixed(x, task)
        t = parse_task_id(task)
        if str(t) not in self.heads:
            raise KeyError(f"no head for task {t}; learned tasks: {sorted(int(k) for k in self.heads)}")
        if self.task_context is None:
            return self.heads[str(t)](self.features(x))
        from unforget.layers.context import computing

        with computing(t):
            return self.heads[str(t)](self.features(x))

    def superposed_logits(self, x: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, C)`` of the superposition of tasks ``1..len(alphas)``: every task-aware
        layer mixes the tasks with weights ``alphas`` (:func:`unforget.layers.context.superposed`)
        and so do the heads, which must have one size (Wortsman et al. 2020, Sec. 3.3).

        Raises:
            ValueError: the heads of those tasks differ in size; NotImplementedError: the
                network's mask policy cannot superpose tasks."""
        from unforget.layers.context import superposed

        heads = [self.heads[str(t)] for t in range(1, len(alphas) + 1)]
        if len({h.out_features for h in heads}) != 1:
            raise ValueError("task-id inference superposes the heads, so every task needs the same number of "
                             f"classes; these have {sorted({h.out_features for h in heads})}")
        with superposed(alphas):
            feats = self.features(x)
        return sum(a * h(feats) for a, h in zip(alphas, heads))

    def embed(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """Features of ``x`` as task ``task`` computes them, ``(N, feature_dim_task)``: what its
        head reads (the face-verification embedding for SphereFace, Liu et al. 2017, Sec. 4.1).

        Raises:
            KeyError: a task without a head; TaskIdError: a task id that is not an integer."""
        t = parse_task_id(task)
        if str(t) not in self.heads:
            raise KeyError(f"no head for task {t}; learned tasks: {sorted(int(k) for k in self.heads)}")
        if self.task_context is None:
            return self.features(x)
        from unforget.layers.context import computing

        with computing(t):
            return self.features(x)

    def _forward_mixed(self, x: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        if tasks.dtype.is_floating_point or tasks.dtype.is_complex or tasks.dtype == torch.bool:
            raise TypeError(f"per-sample task ids must be an integer tensor, got {tasks.dtype}")
        if tasks.shape[0] != x.shape[0]:
            raise ValueError(f"{tasks.shape[0]} task ids for a batch of {x.shape[0]} inputs")
        ids = [int(t) for t in torch.unique(tasks.cpu())]
        parts = {t: self.forward(x[(tasks == t).to(x.device)], t) for t in ids}
        width = max(p.shape[1] for p in parts.values())
        ref = next(iter(parts.values()))
        out = ref.new_full((x.shape[0], width), float("-inf"))
        for t, logits in parts.items():
            out[(tasks == t).to(out.device), : logits.shape[1]] = logits
        return out


def parse_task_id(task) -> int:
    """``task`` as an ``int``: an ``int``, a NumPy integer or a 0-d integer tensor; ``bool`` is
    refused although Python counts it as an ``int``.

    Raises:
        TaskIdError (an ``InputError`` and a ``TypeError``): anything else (one line).
    """
    if isinstance(task, (bool, np.bool_)):
        raise TaskIdError(f"task must be an integer task id such as 1, got the bool {task}")
    if isinstance(task, torch.Tensor):
        if task.dim() != 0 or task.dtype == torch.bool or task.is_floating_point() or task.is_complex():
            raise TaskIdError(f"task must be an integer task id (an int or a 0-d integer tensor), got a tensor of "
                              f"shape {tuple(task.shape)} and dtype {task.dtype}")
        return int(task.item())
    if isinstance(task, (int, np.integer)):
        return int(task)
    raise TaskIdError(f"task must be an integer task id such as 1, got {type(task).__name__} {reprlib.repr(task)}")
