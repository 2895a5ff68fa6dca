"""Device-speed options of training: the memory layout of conv nets (``train.memory_format``)
and ``torch.compile`` (``train.compile``). Both change how a fit computes, never what the model
holds afterwards: the layout returns to contiguous after every fit and compilation wraps only
the training forward pass."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from unforget.errors import UnforgetError


class CompileError(UnforgetError):
    """``train.compile`` is on and ``torch.compile`` cannot compile the training step here."""


def _has_conv(model: nn.Module) -> bool:
    return any(getattr(p, "dim", lambda: 0)() == 4 for p in model.parameters())


def training_layout(model: nn.Module, memory_format: str, device: torch.device) -> torch.memory_format:
    """The layout a fit of ``model`` uses: ``torch.channels_last`` for a model with 4-D (conv)
    weights when ``memory_format`` is ``channels_last``, or ``auto`` on CUDA; otherwise
    ``torch.contiguous_format``."""
    wanted = memory_format == "channels_last" or (memory_format == "auto" and device.type == "cuda")
    return torch.channels_last if wanted and _has_conv(model) else torch.contiguous_format


@contextlib.contextmanager
def layout(model: nn.Module, fmt: torch.memory_format) -> Iterator[None]:
    """Within the block, ``model``'s 4-D parameters and buffers are in ``fmt``; on exit (also
    on an error) they are contiguous again. Parameters keep their identity (optimizers keep
    working); layers with cached masks drop them on both sides."""
    if fmt == torch.contiguous_format:
        yield
        return

    def convert(f: torch.memory_format) -> None:
        model.to(memory_format=f)
        for m in model.modules():
            if hasattr(m, "invalidate"):
                m.invalidate()

    convert(fmt)
    try:
        yield
    finally:
        convert(torch.contiguous_format)


def as_layout(x: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """``x`` in ``fmt`` when it is a 4-D batch, else ``x``."""
    return x.contiguous(memory_format=fmt) if fmt != torch.contiguous_format and x.dim() == 4 else x


def compiled(net: nn.Module, mode: str = "default") -> nn.Module:
    """``torch.compile(net, mode=mode, dynamic=False)`` (TorchInductor; ``mode``:
    ``train.compile_mode``, ``reduce-overhead`` = CUDA graphs). Task-aware layers
    compile into one graph with the network: their autograd functions are traced with their
    exactness rules and the task of a call is a constant of the graph
    (:mod:`unforget.layers.context`). Static shapes and a specialised task id: a graph is made
    for each task and each set of trainable tensors (a phase), and reused across the epochs and
    repeats of that phase; the batch dimension is made dynamic by :func:`mark_batch` when an
    epoch ends with a smaller batch."""
    return torch.compile(net, mode=None if mode == "default" else mode, dynamic=False)


_GRAPHS_OF: list = [None]
"""The task whose training graphs ``torch.compile`` holds now."""


def graphs_for_task(task: int) -> None:
    """Before a compiled fit of ``task``: when the compiled graphs in memory were made for
    another task, drop them (``torch.compiler.reset()``, which also drops graphs compiled
    elsewhere in this process). Each task needs graphs of its own (its id, masks and trainable
    tensors are constants of the graph), and TorchDynamo stops compiling a function after
    ``recompile_limit`` (8) graphs and runs it eagerly from then on, so without this a long task
    sequence would fall back to eager after about four tasks."""
    if _GRAPHS_OF[0] not in (None, task):
        torch.compiler.reset()
    _GRAPHS_OF[0] = task


def mark_batch(x: torch.Tensor, varies: bool) -> torch.Tensor:
    """``x`` with its batch dimension marked dynamic for ``torch.compile`` when ``varies`` (an
    epoch's last batch is smaller), so one graph serves every batch of a fit."""
    if varies and x.shape[0] > 1:
        torch._dynamo.maybe_mark_dynamic(x, 0)
    return x


def compile_failure(e: BaseException) -> CompileError:
    """A one-line :class:`CompileError` for an exception raised by the first compiled step."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return CompileError(f"torch.compile could not compile the training step ({type(e).__name__}: {first[:300]}); "
                        "train without --compile (train.compile: false); on CPU TorchInductor needs a C++ compiler")


def is_compile_error(e: BaseException) -> bool:
    """Whether ``e`` comes from TorchDynamo / TorchInductor rather than from the model itself."""
    mod = type(e).__module__ or ""
    return mod.startswith(("torch._dynamo", "torch._inductor")) or "BackendCompilerFailed" in type(e).__name__
