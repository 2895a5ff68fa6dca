"""Serving learned tasks: input checks and the ``nn.Module`` face of a learner.

``ServingModel(learner)(x, task=t)`` returns task t's logits for a float batch ``x`` as the
task's transform makes it; :func:`as_batch` and :func:`task_id` turn what users pass into what
the network takes, or refuse it with one line.
"""
from __future__ import annotations

import reprlib
from typing import Sequence, Union

import numpy as np
import torch
from torch import nn

from unforget.errors import InputError, UnknownTaskError


def as_batch(x, input_shape: Sequence[int]) -> torch.Tensor:
    """``x`` as a ``float32`` batch of shape ``(N, *input_shape)``.

    ``x`` is a ``torch.Tensor`` or a NumPy array (converted with ``torch.as_tensor``). Floating
    and integer dtypes (e.g. ``float64``, ``float16``, ``uint8``, ``int64``) are cast to
    ``float32`` as they are: no normalisation is applied, so pass what the benchmark's transform
    makes.

    Raises:
        InputError: another type; a ``bool``, complex or non-numeric dtype; another shape (one
            line saying the shape expected).
    """
    want = tuple(int(s) for s in input_shape)
    expected = f"(N, {', '.join(map(str, want))})"
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "iuf":
            raise InputError(f"x is a NumPy array of dtype {x.dtype}; give real numbers (a float or integer dtype)")
        x = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
    elif not isinstance(x, torch.Tensor):
        raise InputError(f"x must be a torch.Tensor or a NumPy array of shape {expected}, got "
                         f"{type(x).__name__}")
    if x.dtype == torch.bool or x.is_complex() or x.is_quantized:
        raise InputError(f"x has dtype {x.dtype}; give real numbers (float32, or a float or integer dtype, cast "
                         "to float32)")
    if x.dim() != len(want) + 1 or tuple(x.shape[1:]) != want:
        hint = "; for a single input pass x[None]" if tuple(x.shape) == want else ""
        raise InputError(f"x has shape {tuple(x.shape)}; this model takes a batch of shape {expected}{hint}")
    return x if x.dtype == torch.float32 else x.to(torch.float32)


def task_id(task, learned: Sequence[int]) -> int:
    """``task`` as an ``int`` that is one of ``learned``: an ``int``, a NumPy integer or a 0-d
    integer tensor; ``bool`` is refused although Python counts it as an ``int``.

    Raises:
        InputError: not an integer task id; UnknownTaskError (also a ``KeyError``): a task
            that was not learned.
    """
    if isinstance(task, (bool, np.bool_)):
        raise InputError(f"task must be an integer task id such as 1, got the bool {task}")
    if isinstance(task, torch.Tensor):
        if task.dim() != 0 or task.dtype == torch.bool or task.is_floating_point() or task.is_complex():
            raise InputError(f"task must be an integer task id (an int or a 0-d integer tensor), got a tensor of "
                             f"shape {tuple(task.shape)} and dtype {task.dtype}")
        task = int(task.item())
    elif isinstance(task, (int, np.integer)):
        task = int(task)
    else:
        raise InputError(f"task must be an integer task id such as 1, got {type(task).__name__} "
                         f"{reprlib.repr(task)}")
    if task not in learned:
        raise UnknownTaskError(f"task {task} was not learned; learned tasks: {list(learned)}")
    return task


class ServingModel(nn.Module):
    """Serves every learned task of a learner: ``model(x, task=t)`` returns task t's logits.

    ``x`` is a batch as the benchmark's transform makes it (e.g. ``(N, 3, 32, 32)`` normalised
    images): a ``torch.Tensor`` or a NumPy array, ``float32`` or a float or integer dtype that is
    cast to ``float32`` (:func:`as_batch`); ``task`` an ``int`` or a 0-d integer tensor. The
    output is ``(N, n_classes_t)``. Always in evaluation mode, no gradient. ``task_ids`` lists
    the learned task ids (1-based), ``tasks`` their names and class names. The method's networks
    are registered submodules, so ``parameters()`` counts what is stored.
    """

    def __init__(self, learner) -> None:
        super().__init__()
        self._learner = [learner]  # a list: not a submodule
        self.method = learner.method
        self.networks = nn.ModuleList(self.method.networks())

    @property
    def task_ids(self) -> list[int]:
        return list(self.method.learned)

    @property
    def tasks(self) -> list[dict]:
        """Per learned task: ``{"name", "classes", ...}`` (task ``i`` is ``tasks[i - 1]``)."""
        return self._learner[0].tasks

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, e.g. ``(3, 32, 32)``."""
        return tuple(self.method.plan.input_shape)

    def forward(self, x: Union[torch.Tensor, np.ndarray], task: int) -> torch.Tensor:
        """Task ``task``'s logits ``(N, n_classes_task)``.

        Raises:
            InputError: ``x`` of another type, shape or dtype (:func:`as_batch`), ``task`` not an
                integer; UnknownTaskError (also a ``KeyError``): ``task`` was not learned.
        """
        t = task_id(task, self.method.learned)
        return self.method.logits(as_batch(x, self.input_shape), t)

    def predict(self, x: Union[torch.Tensor, np.ndarray], task: int) -> torch.Tensor:
        """Predicted task-local class indices, ``int64`` ``(N,)``; raises as :meth:`forward`."""
        return self(x, task).argmax(1)


__all__ = ["ServingModel", "as_batch", "task_id"]
