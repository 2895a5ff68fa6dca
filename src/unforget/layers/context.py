"""Which task a forward pass computes, which task is in training, and the width groups.

The task a forward pass computes is not state of the network: ``MultiHeadNet.forward(x, task)``
sets it for the duration of that call only, in a :class:`contextvars.ContextVar`, so two threads
(or two asyncio tasks) serving two tasks of one network never see each other's task.

TorchDynamo cannot trace ``ContextVar.get`` (a graph break in every task-aware layer, and a
recompile per layer after it), so while ``torch.compile`` traces, the same scopes are kept on a
plain list that the trace reads as a constant; a compiled graph guards on that constant, so it
is specialised to its task (``train.compile`` is a training option: one task at a time).
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Iterator, Optional

import torch

_COMPUTING: ContextVar[Optional[int]] = ContextVar("unforget_computing_task", default=None)


_TRACED: list = []
"""The scopes entered while ``torch.compile`` traces: ``("task", id)`` or ``("alphas", tensor)``."""


@contextlib.contextmanager
def _traced(kind: str, value) -> Iterator[None]:
    _TRACED.append((kind, value))
    try:
        yield
    finally:
        _TRACED.pop()


def _traced_value(kind: str):
    for k, v in reversed(_TRACED):
        if k == kind:
            return v
    return None


@contextlib.contextmanager
def computing(task: int) -> Iterator[None]:
    """Within the block, task-aware layers compute task ``task`` (1-based), in this thread or
    asyncio task only; the previous value is restored on exit."""
    if torch.compiler.is_compiling():
        with _traced("task", int(task)):
            yield
        return
    token = _COMPUTING.set(int(task))
    try:
        yield
    finally:
        _COMPUTING.reset(token)


def current_task() -> int:
    """The task being computed (see :func:`computing`).

    Raises:
        RuntimeError: a task-aware layer was called outside ``MultiHeadNet.forward(x, task)``.
    """
    task = _traced_value("task") if torch.compiler.is_compiling() else _COMPUTING.get()
    if task is None:
        raise RuntimeError("a task-aware layer was called without a task; call the network as model(x, task)")
    return task


_SUPERPOSED: ContextVar[Optional[torch.Tensor]] = ContextVar("unforget_superposed_tasks", default=None)


@contextlib.contextmanager
def superposed(alphas) -> Iterator[None]:
    """Within the block, task-aware layers compute the superposition of the learned tasks:
    weight ``alphas[t - 1]`` for task ``t`` (a 1-D float tensor, differentiable), as SupSup's
    task-id inference does (Wortsman et al. 2020, Sec. 3.3); this thread / asyncio task only."""
    if torch.compiler.is_compiling():
        with _traced("alphas", alphas):
            yield
        return
    token = _SUPERPOSED.set(alphas)
    try:
        yield
    finally:
        _SUPERPOSED.reset(token)


def current_alphas():
    """The task weights of :func:`superposed`, or ``None`` outside it."""
    return _traced_value("alphas") if torch.compiler.is_compiling() else _SUPERPOSED.get()


@dataclass
class TaskContext:
    """Training state shared by every task-aware layer of one network.

    Attributes:
        training_task: id of the task being learned, or ``None``. Only this task's forward pass
            uses the trainable path (live pick scores, gradients to its own weights); every other
            task is computed from frozen weights and fixed masks.
        serve_cache: how many finished tasks' materialised effective weights each layer keeps
            (least recently used dropped first; 0: none), so that serving a task costs what the
            plain network costs. A cached weight is dropped whenever the layer's weight, owners,
            picks or shape change.
    """

    training_task: Optional[int] = None
    serve_cache: int = 4


@dataclass
class WidthGroup:
    """Layers whose output units must have the same count (a chain link or a residual stage).

    Attributes:
        name: group name from the zoo model's ``groups_spec``.
        base: units of the original (ungrown) network.
        size: units allocated now (``>= base``; grows, never shrinks).
        widths: ``{task: units}`` the task was learned at; a task not listed uses ``size``.

    Growing appends units at the end, so the first ``widths[t]`` units are always task t's
    (design.md, "Growing"; Hung et al. 2019, Sec. 3.3).
    """

    name: str
    base: int
    size: int
    widths: dict[int, int] = field(default_factory=dict)

    def width(self, task: int) -> int:
        return self.widths.get(task, self.size)
