"""Hook points of the training loop: a method overrides only what it changes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from unforget.data.task import Task


@dataclass
class TrainState:
    """What hooks see. ``x``/``y``/``logits``/``loss`` hold the current batch while it runs;
    ``loss`` is the cross-entropy before hook penalties."""

    model: nn.Module
    task: Task
    optimizers: list[torch.optim.Optimizer]
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps_per_epoch: int = 0
    x: Optional[torch.Tensor] = None
    y: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None
    loss: Optional[torch.Tensor] = None
    extra: dict[str, Any] = field(default_factory=dict)


class Hook:
    """No-op hook; subclasses override the points they need, in loop order:

    ``before_task`` -> per epoch: ``before_epoch`` -> per batch: ``before_forward``,
    ``penalty`` (returns an extra loss term or ``None``), ``after_backward`` (edit gradients),
    ``after_step`` -> ``after_epoch`` -> ``after_task``.
    """

    def before_task(self, state: TrainState) -> None: ...
    def before_epoch(self, state: TrainState) -> None: ...
    def before_forward(self, state: TrainState) -> None: ...
    def penalty(self, state: TrainState) -> Optional[torch.Tensor]:
        return None
    def after_backward(self, state: TrainState) -> None: ...
    def after_step(self, state: TrainState) -> None: ...
    def after_epoch(self, state: TrainState) -> None: ...
    def after_task(self, state: TrainState) -> None: ...
