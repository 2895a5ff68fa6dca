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
from typing import TYPE_CHECKING, Optional, Union

from unforget.config import RunConfig, _merge, check_device_name, load_yaml, resolve, validate
from unforget.data.task import Benchmark
from unforget.errors import ConfigError
from unforget.serving import ServingModel, as_batch, task_id

if TYPE_CHECKING:
    from unforget.learner import Learner


class RunResult(dict):
    """The ``results.json`` mapping of a run, plus ``.learner`` (the
    :class:`~unforget.learner.Learner`, which can learn more tasks) and ``.model`` (its
    :class:`ServingModel`)."""

    model: ServingModel
    learner: "Learner"


def run(benchmark: Union[str, Benchmark] = "digits", method: str = "cpg",
        config: Union[None, dict, str, Path, RunConfig] = None, *, data_root: Optional[str] = None,
        out: Optional[Union[str, Path]] = None, preset: str = "cpu", resume: bool = False,
        progress: bool = True, overwrite: bool = False) -> RunResult:
    """Learn ``benchmark`` (a registered name or a :class:`Benchmark`) with ``method``.

    ``config`` overrides the preset: a mapping with the keys of ``results.json``'s ``config``,
    a YAML file path, or a complete :class:`RunConfig`. A benchmark without the preset (own
    data: ``image-folder``, ``npz``, a :class:`Benchmark` object) gets the automatic
    configuration of :mod:`unforget.autoconfig` under ``config`` (not with a :class:`RunConfig`,
    which is used as it is); its line is printed when ``progress``. Returns a :class:`RunResult`. With
    ``out``, a run already there is refused unless ``resume`` (continue it) or ``overwrite``
    (start over); the folder is locked while the run writes to it.

    Raises:
        unforget.errors.UnforgetError: unknown names, bad options, missing or damaged data;
            ConfigError: ``config`` or ``benchmark`` of another type, or invalid options;
            RunFolderError: ``out`` unusable, locked or holding a run; CheckpointError: damaged
            checkpoint on ``resume``.
    """
    from unforget.runner import run as _run
    from unforget.training.phases import PhaseClock

    if not isinstance(benchmark, (str, Benchmark)):
        raise ConfigError(f"benchmark must be a registered name or a Benchmark, got {type(benchmark).__name__} "
                          f"{reprlib.repr(benchmark)}")
    if config is not None and not isinstance(config, (Mapping, str, os.PathLike, RunConfig)):
        raise ConfigError(f"config must be a mapping of options, a YAML file path or a RunConfig, got "
                          f"{type(config).__name__} {reprlib.repr(config)}")
    bench_obj = benchmark if isinstance(benchmark, Benchmark) else None
    name = bench_obj.name if bench_obj is not None else str(benchmark)
    auto = None
    say = print if progress else (lambda _: None)
    clock = PhaseClock()
    if isinstance(config, RunConfig):
        cfg = config.model_copy(update={"method": method})
    else:
        file = config if isinstance(config, (str, os.PathLike)) else None
        overrides = dict(config) if isinstance(config, Mapping) else None
        if bench_obj is not None:  # a Benchmark object has no preset: the automatic configuration sizes it
            from unforget.autoconfig import auto_config

            data = _merge(load_yaml(file) if file else {}, overrides or {})
            cfg = validate(_merge(data, {"benchmark": {"name": name}, "method": method}))
            auto = auto_config(bench_obj, cfg.device)
            cfg = validate(_merge(_merge(auto.settings, data), {"benchmark": {"name": name}, "method": method}))
            cfg = auto.finish(cfg, "lr_milestones" in (data.get("train") or {}))
            say(auto.reason)
        else:
            from unforget.autoconfig import resolve_for_data
            from unforget.runner import load_benchmark

            with clock.phase("data_loading"):
                cfg, bench_obj, auto = resolve_for_data(name, method, preset_name=preset, config_file=file,
                                                        overrides=overrides, say=say,
                                                        load=lambda c: load_benchmark(c, data_root))
    results = _run(cfg, data_root=data_root, out_dir=out, resume=resume, progress=progress, benchmark=bench_obj,
                   overwrite=overwrite, notes={"auto_config": auto.record()} if auto else None, clock=clock)
    learner = results.pop("_learner")
    res = RunResult(results)
    res.learner, res.model = learner, learner.model
    return res


def load(path: Union[str, Path], device: str = "cpu") -> "Learner":
    """Open a run's checkpoint (its folder or ``checkpoint.safetensors``) as a
    :class:`~unforget.learner.Learner`: it serves every learned task (``learner(x, task=t)``,
    ``learner.predict``), learns new ones (``learner.learn(task)``) and exports one
    (``learner.export(t)``); no data folder is needed.

    Raises:
        ConfigError: ``device`` is not a device name, or is absent here (the checkpoint is not
            blamed); CheckpointError: missing, damaged or inconsistent checkpoint.
    """
    from unforget.learner import Learner

    return Learner.open(path, check_device_name(device))


__all__ = ["run", "load", "ServingModel", "RunResult", "as_batch", "task_id"]
