"""The fine-grained benchmark (CPG experiment 2) on a generated folder tree in the Piggyback / CPG
layout, and the batched ImageNet-style transforms it uses."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unforget.data import build_benchmark
from unforget.data.fine_grained import IMAGENET_MEAN, IMAGENET_STD, fine_grained_benchmark
from unforget.data.transforms import cutout, normalize, random_resized_crop
from unforget.errors import DataError


def write_dataset(root: Path, name: str, classes: int, per_train: int, per_test: int, seed: int,
                  size=(40, 30)) -> None:
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_train), ("test", per_test)):
        for c in range(classes):
            d = root / name / split / f"class_{c:03d}"
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
                Image.fromarray(img).save(d / f"{i:04d}.jpg", quality=95)


@pytest.fixture(scope="module")
def fg_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fine_grained")
    write_dataset(root, "cubs_cropped", 3, 6, 2, 1)
    write_dataset(root, "flowers", 4, 5, 2, 2, size=(30, 45))
    write_dataset(root, "sketches", 2, 5, 2, 3)
    return root


def test_layout_order_sizes_and_preprocessing(fg_root):
    b = fine_grained_benchmark(fg_root, tasks=["cubs_cropped", "flowers", "sketches"], image_size=32)
    assert [t.name for t in b.tasks] == ["cubs_cropped", "flowers", "sketches"] and [t.id for t in b.tasks] == [1, 2, 3]
    assert b.input_shape == (3, 32, 32) and all(t.input_shape == (3, 32, 32) for t in b.tasks)
    cubs, flowers = b.tasks[0], b.tasks[1]
    assert cubs.train.x.shape[1:] == (3, 32, 32) and flowers.train.x.shape[1:] == (3, 37, 37)  # 32 * 256 / 224
    assert [len(t.test) for t in b.tasks] == [6, 8, 4] and len(cubs.train) + len(cubs.val) == 18
    assert b.info["tasks"][1]["resize"] == "center-crop" and b.info["tasks"][0]["resize"] == "stretch"
    # test: the centre crop, ImageNet statistics
    x = flowers.test.x[:3]
    want = normalize(x[..., 2:34, 2:34].float() / 255, IMAGENET_MEAN, IMAGENET_STD)  # (37 - 32) / 2 rounds to 2
    assert torch.allclose(flowers.transform(x), want)
    assert torch.allclose(cubs.transform(cubs.test.x[:3]), normalize(cubs.test.x[:3].float() / 255, IMAGENET_MEAN,
                                                                     IMAGENET_STD))
    # training: random resized crop to 32 (uncropped datasets), cutout zeros, deterministic per generator
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    out = flowers.transform(flowers.train.x[:4], train=True, generator=g())
    assert out.shape == (4, 3, 32, 32) and bool((out == 0).any())
    assert torch.equal(out, flowers.transform(flowers.train.x[:4], train=True, generator=g()))
    # registered, and n_tasks cuts the paper order
    write_dataset(fg_root, "stanford_cars_cropped", 2, 4, 1, 4)
    write_dataset(fg_root, "wikiart", 2, 4, 1, 5)
    reg = build_benchmark("fine-grained", fg_root, n_tasks=2)
    assert [t.name for t in reg.tasks] == ["cubs_cropped", "stanford_cars_cropped"] and reg.input_shape == (3, 224, 224)


def test_missing_datasets_and_splits_are_clear_errors(tmp_path):
    write_dataset(tmp_path, "cubs_cropped", 2, 3, 1, 0)
    with pytest.raises(DataError, match="stanford_cars_cropped, flowers, wikiart, sketches not found.*found: cubs_cropped"):
        fine_grained_benchmark(tmp_path)
    (tmp_path / "flowers" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="has no test/ folder"):
        fine_grained_benchmark(tmp_path, tasks=["flowers"])


def test_random_resized_crop_of_the_whole_square_is_the_image_and_boxes_vary():
    x = torch.rand(5, 3, 12, 12)
    assert torch.allclose(random_resized_crop(x, 12, scale=(1.0, 1.0), ratio=(1.0, 1.0)), x, atol=1e-6)
    a = random_resized_crop(x, 6, torch.Generator().manual_seed(0))
    b = random_resized_crop(x, 6, torch.Generator().manual_seed(1))
    assert a.shape == (5, 3, 6, 6) and not torch.equal(a, b)


def test_cutout_zeroes_one_clipped_square_per_image():
    x = torch.ones(64, 1, 20, 20)
    out = cutout(x, 8, torch.Generator().manual_seed(3))
    holes = (out == 0)[:, 0]
    for h in holes:
        rows, cols = h.any(1).nonzero().flatten(), h.any(0).nonzero().flatten()
        assert int(h.sum()) == len(rows) * len(cols) and 0 < len(rows) <= 8 and 0 < len(cols) <= 8
    assert (holes.sum((1, 2)) == 64).any() and (holes.sum((1, 2)) < 64).any()  # whole and clipped squares
