"""A held-out-like own-data sequence (issue 30): six two-class tasks from three kinds of images,
written as one ``.npz`` per task (``x_train, y_train, x_test, y_test, classes``), in the order a
user's mixed folders might come:

1. CIFAR-10 cat / dog (32x32 RGB)          4. MNIST 4 / 9 (28x28 grey)
2. MNIST 3 / 8 (28x28 grey)                5. CIFAR-10 bird / airplane
3. CIFAR-10 automobile / truck             6. MNIST 1 / 7 inverted (white background: another kind)

``--train`` training and ``--test`` test images per class, drawn with a fixed seed. The
sequence is not one of the project's benchmarks, so ``unforget run --benchmark npz`` runs it
with the automatic configuration for own data (as a user's data would be):

    python benchmarks/mixed_sequence.py --data-root ../shared/data --out /tmp/mixed
    unforget compare --benchmark npz --data-root /tmp/mixed --methods cpg,scratch --out runs/mixed
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from unforget.data.readers import read_cifar10, read_mnist

TASKS = [("cifar10", ("cat", "dog")), ("mnist", ("3", "8")), ("cifar10", ("automobile", "truck")),
         ("mnist", ("4", "9")), ("cifar10", ("bird", "airplane")), ("mnist-inverted", ("1", "7"))]


def _pick(x: np.ndarray, y: np.ndarray, names: list[str], classes, per_class: int, rng) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for label, cls in enumerate(classes):
        idx = np.flatnonzero(y == names.index(cls))
        idx = rng.choice(idx, size=min(per_class, len(idx)), replace=False)
        xs.append(x[idx])
        ys.append(np.full(len(idx), label, dtype=np.int64))
    order = rng.permutation(sum(len(v) for v in ys))
    return np.concatenate(xs)[order], np.concatenate(ys)[order]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--train", type=int, default=720, help="training images per class (default 720: 1,440 per task)")
    p.add_argument("--test", type=int, default=200, help="test images per class")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    sources = {}
    for name, reader in (("cifar10", read_cifar10), ("mnist", read_mnist)):
        splits = {s: reader(a.data_root, s) for s in ("train", "test")}
        sources[name] = {s: (x.numpy(), y.numpy(), list(names)) for s, (x, y, names) in splits.items()}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, (source, classes) in enumerate(TASKS, start=1):
        data = sources[source.split("-")[0]]
        arrays = {}
        for split, n in (("train", a.train), ("test", a.test)):
            x, y, names = data[split]
            xs, ys = _pick(x, y, names, classes, n, rng)
            if source == "mnist-inverted":
                xs = 255 - xs
            arrays[f"x_{split}"], arrays[f"y_{split}"] = xs.transpose(0, 2, 3, 1), ys  # (N, H, W, C) as images are
        path = out / f"t{i}-{source}-{'-'.join(classes)}.npz"
        np.savez(path, classes=np.array(classes), **arrays)
        print(f"{path}: {arrays['x_train'].shape[0]} train, {arrays['x_test'].shape[0]} test, {arrays['x_train'].shape[1:]}")


if __name__ == "__main__":
    main()
