"""The Python API, mirroring the command line.

    import unforget
    result = unforget.run("split-cifar10", "cpg", {"train": {"epochs": 2}}, data_root="../shared/data",
                          out="runs/c10")
    result["average_accuracy"], result["bwt"]          # the results.json mapping
    logits = result.model(x, task=3)                    # serves every learned task
    model = unforget.load("runs/c10")                   # the same, in a fresh process
"""
from __future__ import annotations

import os
import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from unforget.config import RunConfig, _merge, check_device_name, load_yaml, resolve, validate
from unforget.data.task import Benchmark
from unforget.errors import ConfigError, InputError, UnknownTaskError


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
    """Serves every learned task of a run: ``model(x, task=t)`` returns task t's logits.

    ``x`` is a batch as the benchmark's transform makes it (e.g. ``(N, 3, 32, 32)`` normalised
    images): a ``torch.Tensor`` or a NumPy array, ``float32`` or a float or integer dtype that is
    cast to ``float32`` (:func:`as_batch`); ``task`` an ``int`` or a 0-d integer tensor. The
    output is ``(N, n_classes_t)``. Always in evaluation mode, no gradient. ``tasks`` lists the
    learned task ids (1-based).
    """

    def __init__(self, method) -> None:
        super().__init__()
        self.method = method

    @property
    def tasks(self) -> list[int]:
        return list(self.method.learned)

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


class RunResult(dict):
    """The ``results.json`` mapping of a run, plus ``.model`` (a :class:`ServingModel`)."""

    model: ServingModel


def run(benchmark: Union[str, Benchmark] = "digits", method: str = "cpg",
        config: Union[None, dict, str, Path, RunConfig] = None, *, data_root: Optional[str] = None,
        out: Optional[Union[str, Path]] = None, preset: str = "cpu", resume: bool = False,
        progress: bool = True, overwrite: bool = False) -> RunResult:
    """Learn ``benchmark`` (a registered name or a :class:`Benchmark`) with ``method``.

    ``config`` overrides the preset: a mapping with the keys of ``results.json``'s ``config``,
    a YAML file path, or a complete :class:`RunConfig`. Returns a :class:`RunResult`. With
    ``out``, a run already there is refused unless ``resume`` (continue it) or ``overwrite``
    (start over); the folder is locked while the run writes to it.

    Raises:
        unforget.errors.UnforgetError: unknown names, bad options, missing or damaged data;
            ConfigError: ``config`` or ``benchmark`` of another type, or invalid options;
            RunFolderError: ``out`` unusable, locked or holding a run; CheckpointError: damaged
            checkpoint on ``resume``.
    """
    from unforget.runner import run as _run

    if not isinstance(benchmark, (str, Benchmark)):
        raise ConfigError(f"benchmark must be a registered name or a Benchmark, got {type(benchmark).__name__} "
                          f"{reprlib.repr(benchmark)}")
    if config is not None and not isinstance(config, (Mapping, str, os.PathLike, RunConfig)):
        raise ConfigError(f"config must be a mapping of options, a YAML file path or a RunConfig, got "
                          f"{type(config).__name__} {reprlib.repr(config)}")
    bench_obj = benchmark if isinstance(benchmark, Benchmark) else None
    name = bench_obj.name if bench_obj is not None else str(benchmark)
    if isinstance(config, RunConfig):
        cfg = config.model_copy(update={"method": method})
    else:
        file = config if isinstance(config, (str, os.PathLike)) else None
        overrides = dict(config) if isinstance(config, Mapping) else None
        if bench_obj is not None:
            data = _merge(load_yaml(file) if file else {}, overrides or {})
            cfg = validate(_merge(data, {"benchmark": {"name": name}, "method": method}))
        else:
            cfg = resolve(name, method, preset_name=preset, config_file=file, overrides=overrides)
    results = _run(cfg, data_root=data_root, out_dir=out, resume=resume, progress=progress, benchmark=bench_obj,
                   overwrite=overwrite)
    m = results.pop("_learner").method
    res = RunResult(results)
    res.model = ServingModel(m)
    return res


def load(path: Union[str, Path], device: str = "cpu") -> ServingModel:
    """Load a run's checkpoint (its folder or ``checkpoint.safetensors``) as a
    :class:`ServingModel` that serves every learned task; no data folder is needed.

    Raises:
        ConfigError: ``device`` is not a device name, or is absent here (the checkpoint is not
            blamed); CheckpointError: missing, damaged or inconsistent checkpoint.
    """
    from unforget.runner import load_method

    return ServingModel(load_method(path, check_device_name(device)))


__all__ = ["run", "load", "ServingModel", "RunResult", "as_batch", "task_id"]
