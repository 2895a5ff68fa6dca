"""Write the two own-data sequences of BENCHMARKS.md ("Own data: the automatic configuration")
from the official files in ``../shared/data``, in the layouts a user brings:

- ``OUT/cifar-png/``: three task folders of CIFAR-10 training images saved as PNG files, 200 per
  class, one subfolder per class (``unforget run --benchmark image-folder --data-root OUT/cifar-png``;
  20 % of each class is held out for testing);
- ``OUT/mnist-npz/``: five ``.npz`` files of MNIST digit pairs, 28x28 grey ``uint8``, 200 training
  and 100 test images per class (``unforget run --benchmark npz --data-root OUT/mnist-npz``).

The images are the first ones of each class in the official order, so the files are the same on
every machine.

    python benchmarks/own_data.py --data-root ../shared/data --out runs/own-data
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from unforget.data.readers import read_cifar10, read_mnist

CIFAR_TASKS = [("airplane", "automobile"), ("bird", "cat"), ("deer", "dog")]
MNIST_TASKS = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]


def first_per_class(y: np.ndarray, cls: int, n: int) -> np.ndarray:
    return np.flatnonzero(y == cls)[:n]


def cifar_png(data_root: str, out: Path, per_class: int = 200) -> None:
    x, y, names = read_cifar10(data_root, "train")
    x, y = x.numpy(), y.numpy()
    for t, pair in enumerate(CIFAR_TASKS, 1):
        for name in pair:
            folder = out / f"task{t}-{'-'.join(pair)}" / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in first_per_class(y, names.index(name), per_class):
                Image.fromarray(x[i].transpose(1, 2, 0)).save(folder / f"{i:05d}.png")


def mnist_npz(data_root: str, out: Path, train_per_class: int = 200, test_per_class: int = 100) -> None:
    xtr, ytr, _ = read_mnist(data_root, "train")
    xte, yte, _ = read_mnist(data_root, "test")
    xtr, ytr, xte, yte = (a.numpy() for a in (xtr, ytr, xte, yte))
    out.mkdir(parents=True, exist_ok=True)
    for t, pair in enumerate(MNIST_TASKS, 1):
        tr = np.concatenate([first_per_class(ytr, c, train_per_class) for c in pair])
        te = np.concatenate([first_per_class(yte, c, test_per_class) for c in pair])
        relabel = {c: i for i, c in enumerate(pair)}
        np.savez(out / f"task{t}-digits-{pair[0]}-{pair[1]}.npz",
                 x_train=xtr[tr].reshape(len(tr), 28, 28), y_train=np.array([relabel[c] for c in ytr[tr]]),
                 x_test=xte[te].reshape(len(te), 28, 28), y_test=np.array([relabel[c] for c in yte[te]]),
                 classes=np.array([str(c) for c in pair]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--out", default="runs/own-data")
    a = p.parse_args()
    out = Path(a.out)
    cifar_png(a.data_root, out / "cifar-png")
    mnist_npz(a.data_root, out / "mnist-npz")
    print(f"written: {out}/cifar-png (3 tasks, image folders), {out}/mnist-npz (5 tasks, .npz)")


if __name__ == "__main__":
    main()
