"""A user's own tasks: generated image folders -> benchmark -> two-task cpg through the Python
API -> serve every task from the returned model and from a reloaded checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import unforget
from unforget.data import image_folder_benchmark


def _write_folders(root, rng):
    # task 1: grey 20x24 PNG stripes (horizontal vs vertical); task 2: RGB 30x26 JPEG colours
    for cls, horizontal in (("horizontal", True), ("vertical", False)):
        d = root / "stripes" / cls
        d.mkdir(parents=True)
        for i in range(24):
            a = np.zeros((20, 24), np.uint8)
            off = int(rng.integers(0, 3))
            if horizontal:
                a[off::4, :] = 255
            else:
                a[:, off::4] = 255
            Image.fromarray(a, "L").save(d / f"{i}.png")
    for cls, channel in (("red", 0), ("green", 1), ("blue", 2)):
        d = root / "colours" / cls
        d.mkdir(parents=True)
        for i in range(24):
            a = rng.integers(0, 60, (26, 30, 3)).astype(np.uint8)
            a[..., channel] = rng.integers(180, 256, (26, 30))
            Image.fromarray(a, "RGB").save(d / f"{i}.jpg", quality=90)


def test_image_folders_two_task_cpg_learn_and_serve(tmp_path):
    _write_folders(tmp_path / "data", np.random.default_rng(0))
    bench = image_folder_benchmark(tmp_path / "data", image_size=(16, 16), channels=3, seed=0)
    assert [t.n_classes for t in bench.tasks] == [3, 2]  # task folders in name order: colours, stripes
    assert bench.input_shape == (3, 16, 16)
    cfg = {"model": {"name": "resnet18", "width": 0.0625}, "train": {"epochs": 6, "batch_size": 8, "lr": 0.05},
           "methods": {"cpg": {"goal": "tolerance", "goal_tolerance": 0.05, "prune_interval": 0.3}}}
    res = unforget.run(bench, "cpg", cfg, out=tmp_path / "run", progress=False)
    assert res["bwt"] == 0.0 and len(res["accuracy_matrix"]) == 2
    assert res["average_accuracy"] > 0.6  # both tasks are easy; chance is 0.42
    model = unforget.load(tmp_path / "run")
    for task in bench.tasks:
        x = task.transform(task.test.x, train=False)
        assert torch.equal(model(x, task=task.id), res.model(x, task=task.id))
        acc = float((model.predict(x, task=task.id) == task.test.y).float().mean())
        assert acc == pytest.approx(res["accuracy_matrix"][-1][task.id - 1])
