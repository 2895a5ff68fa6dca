"""The fine-grained sequence of CPG's second experiment: CUBS, Stanford Cars, Flowers, WikiArt and
Sketches after an ImageNet-trained ResNet-50 (Hung et al. 2019, Sec. 4.2, Table 3; Mallya et al.
2018, Piggyback, Sec. 4), registered as ``fine-grained``.

Layout (the Piggyback / CPG download, one folder per dataset under ``--data-root``)::

    ROOT/cubs_cropped/train/<class>/*.jpg      ROOT/cubs_cropped/test/<class>/*.jpg
    ROOT/stanford_cars_cropped/train/...       ROOT/flowers/train/...
    ROOT/wikiart/train/...                     ROOT/sketches/train/...

Preprocessing follows the CPG reference (``utils/fine_grained_dataset.py``): ImageNet mean and
std; for the ``*_cropped`` datasets (already cropped to the object) the whole image is resized to
224x224 (``Scale((224, 224))``), for the others the short side is resized to 256; training adds
a random horizontal flip and a 16-pixel cutout after normalisation, and the uncropped datasets
a random resized crop to 224 (``RandomSizedCrop``); testing takes the centre 224x224.

Deviation (batched tensors in memory): images are stored once at a fixed size, so the uncropped
datasets keep the centre 256x256 of the short-side-256 image; the reference's training crops can
also reach the long side's edges. Testing is the same (the centre 224x224 lies inside).

ImageNet itself (task 1 of the paper) is not read from here: a pretrained network is task 1
(``--pretrained``), with its accuracy measured on data given for it or recorded as given.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

from unforget.data.benchmarks import BuildOptions, _no_class_order, register_benchmark
from unforget.data.custom.assembly import _benchmark
from unforget.data.custom.folders import _image_folder_tasks, _subdirs
from unforget.data.custom.options import _options
from unforget.data.readers._common import PathLike, resolve_root
from unforget.data.task import Benchmark
from unforget.data.transforms import ImageTransform
from unforget.errors import DataError

FINE_GRAINED_TASKS = ("cubs_cropped", "stanford_cars_cropped", "flowers", "wikiart", "sketches")
"""The paper's order of the five datasets after ImageNet (Hung et al. 2019, Table 3)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PIGGYBACK_GOALS = {"imagenet": 0.7616, "cubs_cropped": 0.8283, "stanford_cars_cropped": 0.9183,
                   "flowers": 0.9656, "wikiart": 0.7560, "sketches": 0.8078}
"""Accuracy of an individual ResNet-50 per dataset (Piggyback, Mallya et al. 2018, Table 2), the
accuracy goals the CPG reference README lists for experiment 2."""

CUTOUT = 16
"""Side of the training cutout square of the reference (``Cutout(16)``)."""


def fine_grained_benchmark(root: PathLike, *, tasks: Sequence[str] = FINE_GRAINED_TASKS, image_size: int = 224,
                           seed: int = 0, val_fraction: float = 0.1, max_train_per_class: Optional[int] = None,
                           name: str = "fine-grained") -> Benchmark:
    """The fine-grained task sequence from the folders of ``root`` (see the module doc).

    Args:
        root: folder holding one folder per dataset, each with ``train/`` and ``test/`` class folders.
        tasks: dataset folder names in learning order (default: the paper's five).
        image_size: model input side (224 in the paper); the uncropped datasets are stored at
            ``round(image_size * 256 / 224)``.
        seed, val_fraction, max_train_per_class: as :func:`~unforget.data.build_benchmark`
            (validation is held out of ``train/`` per class).
        name: benchmark name.

    Returns:
        a :class:`~unforget.data.task.Benchmark` with ``uint8`` images and input shape
        ``(3, image_size, image_size)``; ``info["tasks"]`` records each dataset's folder, split
        sizes, stored size and resize rule.

    Raises:
        DataError: ``root`` or a dataset folder is missing (the message lists what is there), a
            dataset lacks ``train/`` or ``test/``, or any error of the image-folder reader
            (class folders, unreadable images).
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise DataError(f"image_size must be an integer >= 8, got {image_size!r}")
    opts = _options(resolve_root(root), seed, val_fraction, max_train_per_class)
    base = Path(opts.data_root)
    if not base.is_dir():
        raise DataError(f"fine-grained data root {base} does not exist; pass the folder holding "
                        f"{', '.join(FINE_GRAINED_TASKS)} (--data-root DIR)")
    names = [str(t) for t in tasks]
    missing = [t for t in names if not (base / t).is_dir()]
    if missing:
        found = ", ".join(p.name for p in _subdirs(base)) or "none"
        raise DataError(f"fine-grained: dataset folder(s) {', '.join(missing)} not found in {base} (found: {found}); "
                        "download the Piggyback / CPG fine-grained datasets or pass --benchmark image-folder")
    for t in names:
        for split in ("train", "test"):
            if not (base / t / split).is_dir():
                raise DataError(f"fine-grained: {base / t} has no {split}/ folder; expected {base / t}/{split}/<class>/*.jpg")
    stored_side = round(image_size * 256 / 224)
    built, per_task = [], []
    for k, t in enumerate(names, start=1):
        cropped = t.endswith("_cropped")
        side, resize = (image_size, "stretch") if cropped else (stored_side, "center-crop")
        kw = {"size": (side, side), "channels": 3, "resize": resize, "test_fraction": 0.2,
              "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        (task,), (info,) = _image_folder_tasks(base, opts, [t], augment=False, **kw)
        tf = ImageTransform(IMAGENET_MEAN, IMAGENET_STD, hflip=True, cutout=CUTOUT,
                            crop_size=None if cropped else image_size)
        built.append(dataclasses.replace(task, id=k, transform=tf, input_shape=(3, image_size, image_size)))
        per_task.append({**info, "stored_size": [side, side], "resize": resize,
                         "train_augmentation": ("flip + cutout 16" if cropped else
                                                f"random resized crop {image_size} + flip + cutout 16")})
    extra = {"data_root": str(base), "image_size": image_size, "datasets": names, "pretrained_preprocessing": "imagenet",
             "goals_piggyback": {t: PIGGYBACK_GOALS[t] for t in names if t in PIGGYBACK_GOALS}}
    return _benchmark(name, built, per_task, (3, image_size, image_size), opts, extra, True)


@register_benchmark("fine-grained", "CPG experiment 2: CUBS, Cars, Flowers, WikiArt, Sketches folders "
                                    "(DATASET/train|test/CLASS/*.jpg), 224x224, ImageNet preprocessing")
def build_fine_grained(opts: BuildOptions) -> Benchmark:
    """``fine-grained``: :func:`fine_grained_benchmark` on ``opts.data_root`` at 224x224.
    ``n_tasks`` / ``task_order`` select among the five datasets (paper order).

    Raises:
        DataError: ``class_order`` given, or any error of :func:`fine_grained_benchmark`.
    """
    _no_class_order(opts, "fine-grained")
    return fine_grained_benchmark(opts.data_root, seed=opts.seed, val_fraction=opts.val_fraction,
                                  max_train_per_class=opts.max_train_per_class)
