"""A pretrained network as task 1 of a run (``pretrained:`` / ``--pretrained FILE``): the benchmark's
tasks move to ids 2.., and task 1 is a :class:`~unforget.data.task.PretrainedTask` whose head has
the file's classes (Hung et al. 2019, Sec. 4.2: ImageNet's 1000 classes before the fine-grained
tasks; the reference's ``--use_imagenet_pretrained``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import torch

from unforget.config import PretrainedConfig
from unforget.data.benchmarks import BuildOptions
from unforget.data.facial import read_pair_set
from unforget.data.fine_grained import IMAGENET_MEAN, IMAGENET_STD
from unforget.data.task import Benchmark, PairSet, PretrainedTask, Split
from unforget.data.transforms import ImageTransform
from unforget.errors import ConfigError, DataError
from unforget.models.pretrained import PretrainedWeights, read_pretrained

IMAGENET_GOAL_MARGIN = 0.005
"""The reference prunes ImageNet while validation accuracy stays >= 76.16 % - 0.5 points
(``CPG_imagenet_main.py``); the default goal of a compacted pretrained task is its accuracy minus this."""


def _empty(shape: tuple[int, ...]) -> Split:
    return Split(torch.zeros((0, *shape), dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))


def _task_data(cfg: PretrainedConfig, n_classes: int, stored: tuple[int, ...], seed: int, val_fraction: float
               ) -> tuple[Split, Split, Split, list[str]]:
    """Splits of task 1 from ``cfg.data`` (``train/`` and / or ``test/`` class folders, sorted
    names = the head's class order), stored like the ImageNet evaluation (short side, centre square)."""
    from unforget.data.custom.folders import _image_files, _image_folder_tasks, _read_classes, _subdirs

    size = tuple(stored[1:])
    root = Path(cfg.data).expanduser()
    train_dir, test_dir = root / "train", root / "test"
    if not train_dir.is_dir() and not test_dir.is_dir():
        raise DataError(f"pretrained.data {root} has neither train/ nor test/ class folders")
    if train_dir.is_dir():
        opts = BuildOptions(data_root=root.parent, seed=seed, val_fraction=val_fraction)
        (task,), _ = _image_folder_tasks(root.parent, opts, [root.name], size, stored[0], "center-crop", 0.2,
                                         IMAGENET_MEAN, IMAGENET_STD, False)
        train, val, test, names = task.train, task.val, task.test, list(task.classes)
    else:
        dirs = [d for d in _subdirs(test_dir) if _image_files(d)]
        x, y = _read_classes(dirs, range(len(dirs)), size, stored[0], "center-crop")
        train, val, test, names = _empty(stored), _empty(stored), Split(x, y), [d.name for d in dirs]
    if len(names) != n_classes:
        raise DataError(f"pretrained.data {root} has {len(names)} class folders, the pretrained head has {n_classes} "
                        "classes; give one folder per class of the head (sorted names in the head's order)")
    return train, val, test, names


def _pairs(cfg: PretrainedConfig, stored: tuple[int, ...]) -> PairSet:
    """The verification pairs of ``cfg.pairs`` with their images from ``cfg.pairs_root``."""
    if not cfg.pairs_root:
        raise ConfigError("pretrained.pairs needs pretrained.pairs_root: the folder of the pair images "
                          "(<person>/<person>_0001.jpg, LFW's layout)")
    return read_pair_set(cfg.pairs, cfg.pairs_root, stored)


def with_pretrained_task(bench: Benchmark, cfg: PretrainedConfig, seed: int = 0,
                         weights: Optional[PretrainedWeights] = None) -> Benchmark:
    """``bench`` with a pretrained task 1 in front (its tasks renumbered 2..K+1).

    Task 1's classes come from the file's head; its input shape is the benchmark's; its
    transform is the ImageNet evaluation (mean / std, centre crop of the stored image, stored at
    ``side * 256 / 224`` for image inputs). ``benchmark_info`` gains ``pretrained`` (file, name,
    given accuracy, whether data was given) and task 1's entry in ``tasks``.

    Raises:
        ConfigError: no file given. PretrainedWeightsError: the file is unreadable or has no
            classifier head. DataError: ``cfg.data`` does not match the head.
    """
    if not cfg.file:
        raise ConfigError("pretrained: give the weight file (--pretrained FILE, or pretrained.file in the config)")
    weights = weights or read_pretrained(cfg.file)
    n = weights.classes_for(cfg.head)
    if n is None and not cfg.pairs:
        from unforget.models.resnet50 import PretrainedWeightsError

        raise PretrainedWeightsError(f"pretrained weights {weights.source} hold no classifier head, so they cannot be "
                                     "task 1 (fc.weight / fc.bias, or head.weight / head.bias); a verification network "
                                     "(pretrained.pairs) may come without one")
    n = n or 2  # a verification task without its training head: an unused placeholder head
    shape = tuple(bench.input_shape)
    if len(shape) == 3 and bench.info.get("pretrained_preprocessing") == "imagenet":
        side = shape[1]
        stored = (shape[0], round(side * 256 / 224), round(shape[2] * 256 / 224))
        tf = ImageTransform(IMAGENET_MEAN, IMAGENET_STD, hflip=True, crop_size=side)
    else:  # the benchmark's own preprocessing (e.g. faces: 112x112, mean / std 0.5)
        stored, tf = tuple(bench.tasks[0].train.x.shape[1:]), bench.tasks[0].transform
    if cfg.data:
        if len(shape) != 3:
            raise ConfigError("pretrained.data needs image inputs")
        train, val, test, classes = _task_data(cfg, n, stored, seed, bench.info.get("val_fraction", 0.1))
    else:
        train, val, test, classes = _empty(stored), _empty(stored), _empty(stored), [f"class {i}" for i in range(n)]
    goal = cfg.goal if cfg.goal is not None else (None if cfg.accuracy is None else
                                                   max(0.0, cfg.accuracy - IMAGENET_GOAL_MARGIN))
    pairs = _pairs(cfg, stored) if cfg.pairs else None
    first = PretrainedTask(1, cfg.name, classes, train, val, test, tf, shape, head=cfg.head, pairs=pairs,
                           weights=str(cfg.file), given_accuracy=cfg.accuracy, goal=goal, compact=cfg.compact)
    tasks = [first] + [dataclasses.replace(t, id=t.id + 1) for t in bench.tasks]
    note = {"file": weights.source, "name": cfg.name, "classes": n, "given_accuracy": cfg.accuracy,
            "data": cfg.data, "compact": cfg.compact, "goal": goal, "head": cfg.head,
            "pairs": None if pairs is None else {"file": cfg.pairs, "root": cfg.pairs_root, "pairs": len(pairs),
                                                 "folds": len(pairs.folds)}}
    entry = {"name": cfg.name, "classes": n, "n_train": len(train), "n_val": len(val), "n_test": len(test),
             "pretrained": True, "resize": "center-crop"}
    info = {**bench.info, "pretrained": note, "tasks": [entry] + list(bench.info.get("tasks", [])),
            "n_tasks": len(tasks)}
    return Benchmark(bench.name, tasks, bench.input_shape, info)
