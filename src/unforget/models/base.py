"""Multi-head network base class shared by every zoo model."""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn


def scaled(channels: int, width: float) -> int:
    """Number of units of a layer of ``channels`` units at width multiplier ``width`` (>= 1)."""
    return max(1, int(math.ceil(channels * width - 1e-9)))


def normal_head_init(head: nn.Linear) -> None:
    """Head initialisation of CPG's reference code (ivclab/CPG, ``add_dataset``): weight
    N(0, 0.01), bias 0. Draws from the current global RNG."""
    nn.init.normal_(head.weight, 0.0, 0.01)
    if head.bias is not None:
        nn.init.zeros_(head.bias)


class MultiHeadNet(nn.Module):
    """A shared feature extractor followed by one classifier head per task (multi-head).

    Subclasses build ``self.features`` (any module mapping inputs to a ``(N, feature_dim)``
    tensor) and declare, in ``self.groups_spec``, the *width group* of each prunable layer:
    ``{module_name: (out_group, in_group_or_None)}`` for ``nn.Conv2d`` / ``nn.Linear`` and
    ``{module_name: (group, None)}`` for batch norm. Layers whose outputs are summed (residual
    additions) share one output group; ``in_group=None`` means a fixed input (the image).
    ``self.feature_group`` names the group the heads read.

    ``self.head_init`` initialises every new head in :meth:`add_head`: ``None`` keeps PyTorch's
    default ``nn.Linear`` init, else a callable ``head_init(head)`` that edits the new
    ``nn.Linear`` in place (e.g. :func:`normal_head_init`). Builders set it; use a module-level
    function so the model stays picklable.

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
        self.head_init: Optional[Callable[[nn.Linear], None]] = None

    def add_head(self, task: int, n_classes: int, in_features: Optional[int] = None) -> nn.Linear:
        """Create (or replace) the classifier head of ``task``, initialised by ``head_init``
        (PyTorch's default when ``None``); returns it."""
        head = nn.Linear(in_features or self.feature_dim, n_classes)
        init = getattr(self, "head_init", None)
        if init is not None:
            with torch.no_grad():
                init(head)
        ref = next(self.parameters(), None)
        if ref is not None:
            head = head.to(ref.device)
        self.heads[str(task)] = head
        return head

    def has_head(self, task: int) -> bool:
        return str(task) in self.heads

    def forward(self, x: torch.Tensor, task: int) -> torch.Tensor:
        if str(task) not in self.heads:
            raise KeyError(f"no head for task {task}; learned tasks: {sorted(int(k) for k in self.heads)}")
        if self.task_context is not None:
            self.task_context.task = int(task)
        return self.heads[str(task)](self.features(x))
