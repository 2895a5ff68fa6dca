"""Shared assembly of own-data tasks and benchmarks: splits, transform and the recorded info."""
from __future__ import annotations

import dataclasses
from typing import Union

import torch

from unforget.data.benchmarks import BuildOptions, make_task
from unforget.data.custom.statistics import _image_transform, _vector_transform
from unforget.data.task import Benchmark, Task
from unforget.errors import DataError


def _finish_task(task_id: int, name: str, class_names: list[str], train_pool, test_pool, opts: BuildOptions,
                 salt: str, input_shape: tuple[int, ...], mean, std, augment: bool, where: str) -> tuple[Task, dict]:
    """make_task over classes ``0..C-1`` (validation held out with the shared rule), then the transform."""
    c = len(class_names)
    task = make_task(task_id, name, list(range(c)), class_names, train_pool, test_pool, opts, salt, None, input_shape)
    if len(task.train) == 0 or len(task.val) == 0:
        raise DataError(f"{where} leaves {len(task.train)} training and {len(task.val)} validation samples; "
                        "give each class at least 2 training samples (or raise max_train_per_class)")
    if len(input_shape) == 3:
        tf = _image_transform(task.train.x, mean, std, augment, input_shape[1:])
    else:
        tf = _vector_transform(task.train.x, mean, std)

    def values(v) -> Union[None, str, list[float]]:  # per-feature statistics are summarised (results.json)
        t = None if v is None else torch.as_tensor(v).reshape(-1)
        return None if t is None else [float(a) for a in t] if t.numel() <= 4 else f"{t.numel()} per-feature values"

    info = {"name": name, "classes": list(class_names), "n_train": len(task.train), "n_val": len(task.val),
            "n_test": len(task.test), "mean": values(tf.mean), "std": values(tf.std)}
    return dataclasses.replace(task, transform=tf), info


def _benchmark(name: str, tasks: list[Task], per_task: list[dict], input_shape, opts: BuildOptions,
               extra: dict, public: bool) -> Benchmark:
    info = dict(extra)
    if public:  # what build_benchmark records for registered builders
        info = {"name": name, "seed": opts.seed, "val_fraction": opts.val_fraction, "class_order": None,
                "task_order": None, "n_tasks": len(tasks), "max_train_per_class": opts.max_train_per_class, **info}
    info["tasks"] = per_task
    return Benchmark(name=name, tasks=tasks, input_shape=tuple(input_shape), info=info)
