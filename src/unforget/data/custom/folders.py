"""Benchmarks from image folders: one folder per task, one subfolder per class."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from unforget.data.benchmarks import BuildOptions, train_val_indices
from unforget.data.custom.assembly import _benchmark, _finish_task
from unforget.data.custom.images import IMAGE_EXTENSIONS, RESIZE_MODES, _load_image
from unforget.data.custom.options import ImageSize, _check_choice, _image_size, _options
from unforget.data.custom.statistics import _user_stats
from unforget.data.readers._common import PathLike, resolve_root
from unforget.data.task import Benchmark, Task
from unforget.data.transforms import Stats
from unforget.errors import DataError

#: Seed of the test hold-out of task folders without ``test/`` (fixed: the same for every ``seed``,
#: like ``digits``, so runs with different seeds are scored on the same test images).
TEST_SPLIT_SEED = 0


def _subdirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _image_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS),
                  key=lambda p: p.name)


def is_task_folder(folder: Path) -> bool:
    """Whether ``folder`` is one task of an image-folder sequence (its subfolders are ``train``
    and, optionally, ``test``) rather than the folder of the sequence."""
    names = {p.name for p in _subdirs(folder)}
    return "train" in names and names <= {"train", "test"}


def recognise(root: PathLike) -> Optional[str]:
    """The own-data benchmark a ``--data-root`` folder holds: ``"npz"`` for ``.npz`` files,
    ``"image-folder"`` for task folders of class folders (``TASK/train|test/CLASS/*.png`` or
    ``TASK/CLASS/*.png``), else ``None``.

    Raises:
        DataError: ``root`` is a single task folder (``train/`` and ``test/``), one line saying so.
    """
    root = Path(root)
    if not root.is_dir():
        return None
    if any(p.suffix == ".npz" for p in root.iterdir() if p.is_file()):
        return "npz"
    if is_task_folder(root):
        raise DataError(f"{root} holds train/ and test/: it is one task, not a sequence of tasks; pass the "
                        f"folder that holds the task folders (--data-root {root.parent} --benchmark image-folder)")
    tasks = _subdirs(root)
    if tasks and all(_subdirs(t) and all(_subdirs(c) == [] and _image_files(c) for c in _subdirs(t)
                                         if c.name not in ("train", "test")) for t in tasks):
        return "image-folder"
    return None


def _read_classes(class_dirs: Sequence[Path], labels: Sequence[int], size, channels, resize
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for d, label in zip(class_dirs, labels):
        files = _image_files(d)
        if not files:
            raise DataError(f"class folder {d} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)}); "
                            "add images or remove the folder")
        xs.extend(_load_image(f, size, channels, resize) for f in files)
        ys.append(torch.full((len(files),), int(label), dtype=torch.int64))
    return torch.from_numpy(np.stack(xs)), torch.cat(ys)


def _image_folder_tasks(root: Path, opts: BuildOptions, tasks: Optional[Sequence[str]], size: tuple[int, int],
                        channels: int, resize: str, test_fraction: float, mean, std, augment: bool
                        ) -> tuple[list[Task], list[dict]]:
    if not root.is_dir():
        raise DataError(f"image folder root {root} does not exist or is not a folder; pass the folder that holds "
                        "one folder per task (--data-root DIR)")
    if tasks is None:
        task_dirs = _subdirs(root)
        if not task_dirs:
            raise DataError(f"image folder root {root} holds no task folders; expected {root}/<task>/<class>/<image>")
        if is_task_folder(root):
            raise DataError(f"{root} holds train/ and test/: it is one task, not a sequence of tasks; pass the "
                            f"folder that holds the task folders (--data-root {root.parent}) or add this task to a "
                            f"run with `unforget learn RUN --data {root}`")
    else:
        if isinstance(tasks, (str, bytes)) or not tasks:
            raise DataError(f"tasks must be a non-empty list of task folder names, got {tasks!r}")
        task_dirs = [root / str(t) for t in tasks]
        missing = [str(t) for t, d in zip(tasks, task_dirs) if not d.is_dir()]
        if missing:
            raise DataError(f"task folder(s) {', '.join(missing)} not found in {root}; "
                            f"found: {', '.join(p.name for p in _subdirs(root)) or 'none'}")
    test_opts = BuildOptions(data_root=root, seed=TEST_SPLIT_SEED, val_fraction=test_fraction)
    out, per_task = [], []
    for k, tdir in enumerate(task_dirs, start=1):
        train_dir, test_dir = tdir / "train", tdir / "test"
        has_train, has_test = train_dir.is_dir(), test_dir.is_dir()
        if has_test and not has_train:
            raise DataError(f"task folder {tdir} has test/ but no train/; put the training class folders "
                            "under train/, or drop test/ and keep the class folders directly in the task folder")
        class_dirs = _subdirs(train_dir if has_train else tdir)
        if len(class_dirs) < 2:
            raise DataError(f"task folder {train_dir if has_train else tdir} has {len(class_dirs)} class folder(s) "
                            f"({', '.join(d.name for d in class_dirs) or 'none'}); each task needs at least 2 "
                            "class subfolders")
        names = [d.name for d in class_dirs]
        x, y = _read_classes(class_dirs, range(len(names)), size, channels, resize)
        if has_test:
            test_dirs = _subdirs(test_dir)
            unknown = [d.name for d in test_dirs if d.name not in names]
            if unknown:
                raise DataError(f"{test_dir} has class folder(s) {', '.join(unknown)} that {train_dir} lacks; "
                                "test classes must also have training images")
            if not test_dirs:
                raise DataError(f"{test_dir} holds no class folders; add them or remove test/ to hold out "
                                f"test_fraction={test_fraction} of the training images")
            absent = [n for n in names if n not in {d.name for d in test_dirs}]
            if absent:
                raise DataError(f"{test_dir} lacks class folder(s) {', '.join(absent)} that {train_dir} has; every "
                                "class needs test images (add them, or remove test/ to hold out "
                                f"test_fraction={test_fraction} of the training images)")
            test_pool = _read_classes(test_dirs, [names.index(d.name) for d in test_dirs], size, channels, resize)
            train_pool = (x, y)
            split = "folders"
        else:  # fixed stratified hold-out of test_fraction per class (independent of seed)
            keep, test = train_val_indices(y, range(len(names)), test_opts, f"image-folder-test/{tdir.name}")
            train_pool, test_pool = (x[keep], y[keep]), (x[test], y[test])
            split = f"held out {test_fraction}"
        task, info = _finish_task(k, tdir.name, names, train_pool, test_pool, opts, f"image-folder/{tdir.name}",
                                  (channels, *size), mean, std, augment, f"task folder {tdir}")
        out.append(task)
        per_task.append({**info, "folder": str(tdir), "test_split": split})
    return out, per_task


def image_folder_benchmark(root: PathLike, *, tasks: Optional[Sequence[str]] = None,
                           image_size: ImageSize = (32, 32), channels: int = 3, resize: str = "stretch",
                           seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2,
                           max_train_per_class: Optional[int] = None, mean: Optional[Stats] = None,
                           std: Optional[Stats] = None, augment: bool = False,
                           name: Optional[str] = None) -> Benchmark:
    """A benchmark from image files: one folder per task, one subfolder per class.

    Layout (``root`` is the data root of ``build_benchmark("image-folder", data_root=root)``)::

        root/<task>/<class>/<image>                     test held out with test_fraction
        root/<task>/train/<class>/<image>               explicit split (test/ optional: without it,
        root/<task>/test/<class>/<image>                test is held out of train/ as above)

    Tasks are the sub-folders of ``root`` sorted by name (or ``tasks``, in that order); classes are
    the sub-folders of a task (of its ``train/``) sorted by name; task label ``j`` = the ``j``-th
    class. Images are the files ending in :data:`IMAGE_EXTENSIONS` (any case) directly in a class
    folder, sorted by name; hidden entries and other files are ignored. A task folder that holds a
    ``train/`` folder always uses the explicit layout.

    Mixed inputs: every image is decoded with Pillow (first frame of animations, EXIF orientation
    applied, alpha dropped, 16-bit scaled to 8 bits), converted to ``channels`` (1 = grey ``"L"``,
    3 = ``"RGB"``) and brought to ``image_size`` with ``resize`` (``"stretch"``: bilinear resize of
    the whole image; ``"center-crop"``: resize, keeping the aspect ratio, until the image covers
    ``image_size`` -- the short side for a square size -- then cut the centre). So tasks (and
    images) may differ in size, file format and mode -- e.g. grey 20x24 PNGs in one task, RGB 40x30
    JPEGs in the next -- and every task still gets input shape ``(channels, *image_size)``.

    Splits: without ``test/``, ``round(n * test_fraction)`` images of each class of ``n`` (at least
    1 when ``n >= 2``) form the test split, a stratified draw fixed per task folder and class
    (independent of ``seed``, as ``digits``: every seed is scored on the same test images).
    ``max_train_per_class`` then caps each class's training images (train + validation), and
    validation is held out per class (``val_fraction``, seeded by ``seed``) -- both by
    :func:`~unforget.data.benchmarks.train_val_indices`.

    Args:
        root: folder holding the task folders.
        tasks: task folder names to use, in learning order (default: all, sorted).
        image_size: ``(height, width)`` or one integer.
        channels: 1 (grey) or 3 (RGB).
        resize: ``"stretch"`` or ``"center-crop"``.
        seed: seed of the validation draw and of ``max_train_per_class``.
        val_fraction: share of each class's training images held out for validation, in ``(0, 1)``.
        test_fraction: share of each class held out for testing, in ``(0, 1)``; used only by task
            folders without ``test/``.
        max_train_per_class: cap on the training images (train + val) per class, ``>= 2``, or ``None``.
        mean, std: normalisation on the ``[0, 1]`` scale, 1 or ``channels`` values each; ``None``:
            per channel, from each task's own training split.
        augment: training augmentation: random crop (zero padding ``image_size / 8``) + horizontal flip.
        name: benchmark name (default ``"image-folder"``).

    Returns:
        a :class:`~unforget.data.task.Benchmark`: ``x`` ``uint8`` ``(N, channels, H, W)``, ``y``
        ``int64`` in ``0..C-1``; ``info["tasks"]`` lists each task's name, class names, split sizes,
        mean / std and folder.

    Raises:
        DataError: ``root`` (or a folder of ``tasks``) is missing; a task folder has fewer than 2
            class folders; a class folder holds no images; an image cannot be decoded (the message
            names the file); a ``test/`` class is missing from ``train/`` or a ``train/`` class from
            ``test/``; a task is left without training or validation images; an option is out of
            range.
    """
    opts = _options(resolve_root(root), seed, val_fraction, max_train_per_class)
    kw = _image_folder_kwargs(image_size, channels, resize, test_fraction, mean, std)
    built, per_task = _image_folder_tasks(opts.data_root, opts, tasks, augment=bool(augment), **kw)
    extra = {"data_root": str(opts.data_root), "image_size": list(kw["size"]), "channels": kw["channels"],
             "resize": resize, "test_fraction": kw["test_fraction"], "augment": bool(augment)}
    return _benchmark(name or "image-folder", built, per_task, (kw["channels"], *kw["size"]), opts, extra, True)


def _image_folder_kwargs(image_size, channels, resize, test_fraction, mean, std) -> dict:
    size = _image_size(image_size)
    if size is None:
        raise DataError("image_size must be given for image folders, e.g. (32, 32)")
    if channels not in (1, 3) or isinstance(channels, bool):
        raise DataError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    _check_choice(resize, RESIZE_MODES, "resize")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be a number strictly between 0 and 1, got {test_fraction!r}")
    m, s = _user_stats(mean, std, channels, "channels")
    return {"size": size, "channels": int(channels), "resize": resize, "test_fraction": float(test_fraction),
            "mean": m, "std": s}
