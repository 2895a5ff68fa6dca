"""The measurements behind the automatic configuration's network, epochs and learning-rate
decay (BENCHMARKS.md, "Own data"): one model per task (``scratch``) on the cifar-png sequence of
``benchmarks/own_data.py``, one torch thread, for each row of ``GRID``; prints the test accuracy
per task, the average and the seconds.

    python benchmarks/own_data.py --data-root ../shared/data --out runs/own-data
    python benchmarks/own_data_calibration.py --data runs/own-data/cifar-png
"""
from __future__ import annotations

import argparse
import time

import torch

import unforget
from unforget.data import build_benchmark

GRID = [  # (network, width, epochs, batch, lr milestones, seed)
    ("vgg16_bn", 0.25, 10, 32, [], 0), ("vgg16_bn", 0.25, 20, 32, [], 0), ("vgg16_bn", 0.5, 10, 32, [], 0),
    ("vgg16_bn", 0.25, 10, 16, [], 0), ("resnet18", 0.25, 10, 32, [], 0), ("resnet18", 0.25, 20, 32, [], 0),
    ("resnet18", 0.25, 11, 32, [], 0), ("resnet18", 0.25, 11, 32, [], 1),
    ("resnet18", 0.25, 11, 32, [5, 8], 0), ("resnet18", 0.25, 11, 32, [5, 8], 1),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="runs/own-data/cifar-png")
    a = p.parse_args()
    torch.set_num_threads(1)
    bench = build_benchmark("image-folder", a.data)
    for name, width, epochs, batch, milestones, seed in GRID:
        t0 = time.perf_counter()
        cfg = {"seed": seed, "model": {"name": name, "width": width},
               "train": {"epochs": epochs, "batch_size": batch, "lr_milestones": milestones}}
        r = unforget.run(bench, "scratch", cfg, progress=False)
        row = [round(100 * v, 1) for v in r["accuracy_matrix"][-1]]
        print(f"{name} w{width} {epochs} ep batch {batch} milestones {milestones} seed {seed}: {row} "
              f"avg {100 * r['average_accuracy']:.2f} % ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
