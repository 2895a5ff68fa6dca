"""The Python API, mirroring the command line.

    import unforget
    result = unforget.run("split-cifar10", "cpg", {"train": {"epochs": 2}}, data_root="../shared/data",
                          out="runs/c10")
    result["average_accuracy"], result["bwt"]          # the results.json mapping
    logits = result.model(x, task=3)                    # serves every learned task
    model = unforget.load("runs/c10")                   # the same, in a fresh process
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from unforget.config import RunConfig, _merge, load_yaml, resolve, validate
from unforget.data.task import Benchmark


class ServingModel(nn.Module):
    """Serves every learned task of a run: ``model(x, task=t)`` returns task t's logits.

    ``x`` is a float batch as the benchmark's transform makes it (e.g. ``(N, 3, 32, 32)``
    normalised images); the output is ``(N, n_classes_t)``. Always in evaluation mode, no
    gradient. ``tasks`` lists the learned task ids (1-based).
    """

    def __init__(self, method) -> None:
        super().__init__()
        self.method = method

    @property
    def tasks(self) -> list[int]:
        return list(self.method.learned)

    def forward(self, x: torch.Tensor, task: int) -> torch.Tensor:
        if task not in self.method.learned:
            raise KeyError(f"task {task} was not learned; learned tasks: {self.tasks}")
        return self.method.logits(x, task)

    def predict(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """Predicted task-local class indices, ``int64`` ``(N,)``."""
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
            RunFolderError: ``out`` unusable, locked or holding a run; CheckpointError: damaged
            checkpoint on ``resume``.
    """
    from unforget.runner import run as _run

    bench_obj = benchmark if isinstance(benchmark, Benchmark) else None
    name = bench_obj.name if bench_obj is not None else str(benchmark)
    if isinstance(config, RunConfig):
        cfg = config.model_copy(update={"method": method})
    else:
        file = config if isinstance(config, (str, Path)) else None
        overrides = config if isinstance(config, dict) else None
        if bench_obj is not None:
            data = _merge(load_yaml(file) if file else {}, overrides or {})
            cfg = validate(_merge(data, {"benchmark": {"name": name}, "method": method}))
        else:
            cfg = resolve(name, method, preset_name=preset, config_file=file, overrides=overrides)
    results = _run(cfg, data_root=data_root, out_dir=out, resume=resume, progress=progress, benchmark=bench_obj,
                   overwrite=overwrite)
    m = results.pop("_method")
    res = RunResult(results)
    res.model = ServingModel(m)
    return res


def load(path: Union[str, Path], device: str = "cpu") -> ServingModel:
    """Load a run's checkpoint (its folder or ``checkpoint.safetensors``) as a
    :class:`ServingModel` that serves every learned task; no data folder is needed."""
    from unforget.runner import load_method

    return ServingModel(load_method(path, device))


__all__ = ["run", "load", "ServingModel", "RunResult"]
