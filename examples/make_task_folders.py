"""Write new tasks as image folders from the repository's MNIST copy, for the lifelong
workflow of the README (`unforget learn MODEL_DIR --data FOLDER`).

Each task is a pair of digits: FOLDER/train/<digit>/*.png and FOLDER/test/<digit>/*.png, 28x28
grey PNGs, the first --train / --test images of each digit in the official splits.

    python examples/make_task_folders.py --data-root ../shared/data --out runs/tasks --pairs 3-8 4-9
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from unforget.data.readers.mnist import read_mnist


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default="../shared/data", help="folder holding mnist/ (default ../shared/data)")
    ap.add_argument("--out", default="runs/tasks", help="where the task folders go")
    ap.add_argument("--pairs", nargs="+", default=["3-8", "4-9"], help="digit pairs, one task each")
    ap.add_argument("--train", type=int, default=300, help="training images per digit")
    ap.add_argument("--test", type=int, default=100, help="test images per digit")
    a = ap.parse_args()
    splits = {s: read_mnist(a.data_root, s)[:2] for s in ("train", "test")}
    for pair in a.pairs:
        digits = [int(d) for d in pair.split("-")]
        folder = Path(a.out) / f"mnist-{pair}"
        for split, n in (("train", a.train), ("test", a.test)):
            x, y = splits[split]
            for d in digits:
                target = folder / split / str(d)
                target.mkdir(parents=True, exist_ok=True)
                for i, idx in enumerate((y == d).nonzero().flatten()[:n].tolist()):
                    Image.fromarray(x[idx, 0].numpy()).save(target / f"{i:04d}.png")
        print(f"{folder}: digits {digits}, {a.train} train + {a.test} test images each")


if __name__ == "__main__":
    main()
