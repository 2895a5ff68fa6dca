"""Bring your own tasks: benchmarks built from a user's image folders, ``.npz`` files or tensors.

Three entry points, one per source, all returning a :class:`~unforget.data.task.Benchmark`:

- :func:`image_folder_benchmark` -- one folder per task, one subfolder per class, image files of any
  size and mode (registered as ``image-folder``);
- :func:`npz_benchmark` -- one ``.npz`` file per task with ``x_train, y_train, x_test, y_test``
  (registered as ``npz``);
- :func:`tensor_benchmark` -- in-memory arrays / tensors through the Python API.

Through the registry the data root is the folder that holds the task folders (or the ``.npz``
files)::

    build_benchmark("image-folder", data_root="my_tasks", seed=0)   # my_tasks/<task>/<class>/*.png
    unforget run --benchmark npz --data-root my_arrays --method cpg  # my_arrays/*.npz

Rules shared by all three (the same as the built-in benchmarks, see
:mod:`unforget.data.benchmarks`):

- every task of a sequence gets the same input shape: images are converted to a common channel
  count (``1`` = grey, ``3`` = RGB) and resized to a common ``image_size`` (``"stretch"``, or
  ``"center-crop"``: scale so the image covers the target, keeping the aspect ratio, then cut the
  centre); vectors ``(N, D)`` must share ``D``;
- images are stored as ``uint8`` ``(N, C, H, W)`` (float sources in ``[0, 1]`` stay ``float32``);
- labels are remapped to ``0..C-1`` per task; every task needs at least 2 classes;
- validation is held out of the training data per class with
  :func:`~unforget.data.benchmarks.train_val_indices` (seeded by ``seed`` and the task name), after
  ``max_train_per_class``; the test split is never used for it;
- the task's transform normalises with ``mean`` / ``std`` when given, else with statistics computed
  from that task's own training split (per channel for images, per feature for vectors), so no
  task looks at another task's data.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from unforget.data.benchmarks import (
    BuildOptions,
    _no_class_order,
    make_task,
    register_benchmark,
    train_val_indices,
)
from unforget.data.readers._common import PathLike, resolve_root
from unforget.data.task import Benchmark, Task
from unforget.data.transforms import ImageTransform, Stats
from unforget.errors import DataError

#: File name endings (lower case) read as images by :func:`image_folder_benchmark`.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: Ways to bring an image to ``image_size``.
RESIZE_MODES = ("stretch", "center-crop")
#: Accepted ``layout`` values of 4-D arrays.
LAYOUTS = ("auto", "nchw", "nhwc")
#: Seed of the test hold-out of task folders without ``test/`` (fixed: the same for every ``seed``,
#: like ``digits``, so runs with different seeds are scored on the same test images).
TEST_SPLIT_SEED = 0
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence]
ImageSize = Union[int, Sequence[int]]


# ----------------------------------------------------------------------------- option checks
def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _options(data_root: Optional[Path], seed, val_fraction, max_train_per_class) -> BuildOptions:
    if not _is_int(seed):
        raise DataError(f"seed must be an integer, got {seed!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be a number strictly between 0 and 1, got {val_fraction!r}")
    if max_train_per_class is not None and (not _is_int(max_train_per_class) or max_train_per_class < 2):
        raise DataError(f"max_train_per_class must be an integer >= 2 (one training and one validation image), "
                        f"got {max_train_per_class!r}")
    return BuildOptions(data_root=data_root if data_root is not None else Path("."), seed=int(seed),
                        val_fraction=float(val_fraction),
                        max_train_per_class=None if max_train_per_class is None else int(max_train_per_class))


def _image_size(image_size: Optional[ImageSize]) -> Optional[tuple[int, int]]:
    if image_size is None:
        return None
    if _is_int(image_size):
        size = (image_size, image_size)
    else:
        size = tuple(image_size) if hasattr(image_size, "__len__") and not isinstance(image_size, str) else ()
    if len(size) != 2 or not all(_is_int(s) and s >= 1 for s in size):
        raise DataError(f"image_size must be (height, width) with positive integers (or one integer), "
                        f"got {image_size!r}")
    return int(size[0]), int(size[1])


def _check_choice(value, allowed: Sequence, what: str):
    if value not in allowed:
        raise DataError(f"{what} must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")
    return value


def _stats_values(v: Optional[Stats], n: int, what: str, unit: str) -> Optional[tuple[float, ...]]:
    if v is None:
        return None
    t = torch.as_tensor(v, dtype=torch.float64).reshape(-1)
    if t.numel() not in (1, n):
        raise DataError(f"{what} has {t.numel()} values but the inputs have {n} {unit}; give 1 or {n} values")
    if not bool(torch.isfinite(t).all()):
        raise DataError(f"{what} must hold finite numbers, got {list(t.tolist())}")
    return tuple(float(a) for a in t)


def _user_stats(mean, std, n: int, unit: str):
    if (mean is None) != (std is None):
        raise DataError("give both mean and std, or neither (they are then computed from each task's training split)")
    m = _stats_values(mean, n, "mean", unit)
    s = _stats_values(std, n, "std", unit)
    if s is not None and min(s) <= 0:
        raise DataError(f"every std must be > 0, got {list(s)}")
    return m, s


# ----------------------------------------------------------------------------- geometry
def _cover_size(h: int, w: int, th: int, tw: int) -> tuple[int, int]:
    """Size ``(h', w')`` of an ``h x w`` image scaled (aspect kept) to cover ``th x tw``."""
    s = max(th / h, tw / w)
    return max(th, int(round(h * s))), max(tw, int(round(w * s)))


def resize_images(x: torch.Tensor, size: Sequence[int], resize: str = "stretch",
                  chunk_values: int = 1 << 24) -> torch.Tensor:
    """Resize a batch of images to ``size``, batched with :func:`torch.nn.functional.interpolate`.

    Bilinear with antialiasing (as Pillow's bilinear resize, which :func:`image_folder_benchmark`
    uses). ``"stretch"`` maps the whole image onto ``size``; ``"center-crop"`` scales it (aspect
    ratio kept) so that it covers ``size``, then cuts the centre. Images already of ``size`` are
    returned unchanged (bit for bit).

    Args:
        x: images ``(N, C, H, W)``, ``uint8`` (``0..255``) or floating (``[0, 1]``).
        size: ``(height, width)``.
        resize: ``"stretch"`` or ``"center-crop"``.
        chunk_values: at most this many input values are converted to float at once (memory cap).

    Returns:
        ``(N, C, height, width)`` tensor of ``x``'s dtype (``uint8`` results are rounded and clamped).

    Raises:
        DataError: ``resize`` is not one of :data:`RESIZE_MODES`.
        ValueError: ``x`` is not 4-D.
    """
    _check_choice(resize, RESIZE_MODES, "resize")
    if x.dim() != 4:
        raise ValueError(f"resize_images: expected (N, C, H, W), got shape {tuple(x.shape)}")
    th, tw = int(size[0]), int(size[1])
    n, c, h, w = x.shape
    if (h, w) == (th, tw):
        return x
    rh, rw = (th, tw) if resize == "stretch" else _cover_size(h, w, th, tw)
    top, left = (rh - th) // 2, (rw - tw) // 2
    step = max(1, chunk_values // max(1, c * h * w))
    out = torch.empty((n, c, th, tw), dtype=x.dtype)
    for i in range(0, n, step):
        b = x[i:i + step].float()
        if (rh, rw) != (h, w):
            b = F.interpolate(b, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
        b = b[:, :, top:top + th, left:left + tw]
        if x.dtype == torch.uint8:
            b = b.round_().clamp_(0, 255)
        else:
            b = b.clamp_(0.0, 1.0)
        out[i:i + step] = b.to(x.dtype)
    return out


def convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert images ``(N, C, H, W)`` with ``C`` in ``{1, 3, 4}`` to ``channels`` (1 or 3).

    As Pillow's ``convert``: 4 channels (RGBA) drop alpha; RGB to grey is
    ``L = (299 R + 587 G + 114 B) / 1000`` (ITU-R 601-2); grey to RGB repeats the channel.
    ``uint8`` stays ``uint8`` (rounded), floating stays floating.

    Raises:
        ValueError: ``x`` is not 4-D, or ``C`` / ``channels`` is unsupported.
    """
    if x.dim() != 4 or x.shape[1] not in (1, 3, 4) or channels not in (1, 3):
        raise ValueError(f"convert_channels: cannot convert shape {tuple(x.shape)} to {channels} channel(s)")
    if x.shape[1] == 4:
        x = x[:, :3]
    c = x.shape[1]
    if c == channels:
        return x
    if channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32).reshape(1, 3, 1, 1)
    grey = (x.float() * weights).sum(1, keepdim=True)
    return grey.round_().clamp_(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else grey.to(x.dtype)


# ----------------------------------------------------------------------------- transforms and statistics
class VectorTransform:
    """The transform of a vector task: inputs ``(N, D)`` to ``float32`` ``(x - mean) / std``.

    Called as ``transform(x, train=False, generator=None)`` like
    :class:`~unforget.data.transforms.ImageTransform` (no augmentation: ``train`` and
    ``generator`` are accepted and ignored). ``mean`` / ``std`` hold one value or ``D`` values
    (``None``: no normalisation). A plain, picklable class.

    Raises:
        ValueError: (when called) ``x`` is not 2-D.
    """

    def __init__(self, mean: Optional[Stats] = None, std: Optional[Stats] = None) -> None:
        if (mean is None) != (std is None):
            raise ValueError("VectorTransform: give both mean and std, or neither")
        self.mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1).clone()
        self.std = None if std is None else torch.as_tensor(std, dtype=torch.float32).reshape(1, -1).clone()

    def __call__(self, x: torch.Tensor, train: bool = False,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"VectorTransform: expected a batch of vectors (N, D), got shape {tuple(x.shape)}")
        x = x.float()
        if self.mean is not None:
            x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        return x.contiguous()

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of one output for one input of shape ``input_shape`` ``(D,)``."""
        return tuple(int(s) for s in input_shape)

    def __repr__(self) -> str:
        return f"VectorTransform(normalise={self.mean is not None})"


def _moments(x: torch.Tensor, dims: tuple[int, ...], scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (population) std of ``x * scale`` over ``dims``, float64, in memory-capped chunks."""
    per_row = max(1, x[0].numel()) if x.shape[0] else 1
    step = max(1, (1 << 22) // per_row)
    s = s2 = None
    for i in range(0, x.shape[0], step):
        b = x[i:i + step].to(torch.float64) * scale
        bs, bs2 = b.sum(dims), (b * b).sum(dims)
        s, s2 = (bs, bs2) if s is None else (s + bs, s2 + bs2)
    count = x.numel() / s.numel()
    mean = s / count
    std = (s2 / count - mean * mean).clamp_min(0).sqrt()
    return mean, torch.where(std > 1e-6, std, torch.ones_like(std))


def _image_transform(train_x: torch.Tensor, mean, std, augment: bool, size: tuple[int, int]) -> ImageTransform:
    if mean is None:
        m, s = _moments(train_x, (0, 2, 3), 1 / 255 if train_x.dtype == torch.uint8 else 1.0)
        mean, std = tuple(m.tolist()), tuple(s.tolist())
    pad = max(1, round(min(size) / 8)) if augment else 0
    return ImageTransform(mean, std, crop_padding=pad, hflip=bool(augment))


def _vector_transform(train_x: torch.Tensor, mean, std) -> VectorTransform:
    if mean is None:
        m, s = _moments(train_x, (0,), 1.0)
        mean, std = m.tolist(), s.tolist()
    return VectorTransform(mean, std)


# ----------------------------------------------------------------------------- shared task assembly
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


# ----------------------------------------------------------------------------- image folders
def _pil():
    try:
        from PIL import Image, ImageOps
    except ImportError as e:  # pragma: no cover - Pillow is a dependency
        raise DataError("reading image folders needs Pillow: pip install 'pillow>=9'") from e
    return Image, ImageOps


def _subdirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _image_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS),
                  key=lambda p: p.name)


def _to_mode(im, mode: str, Image):
    """``im`` in Pillow mode ``mode`` (``"L"`` or ``"RGB"``): 16-bit and float images are scaled to
    8 bits (instead of clipped), palette images go through RGBA, alpha is dropped."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        hi = float(a.max()) if a.size else 0.0
        if im.mode == "F":  # float: [0, 1] scaled, else taken as 0..255
            scale = 255.0 if hi <= 1.0 else 1.0
        elif im.mode.startswith("I;16"):
            scale = 255.0 / 65535.0
        else:  # 32-bit "I": 16-bit data when above 255
            scale = 255.0 / 65535.0 if hi > 255 else 1.0
        im = Image.fromarray(np.clip(np.rint(a * scale), 0, 255).astype(np.uint8))
    elif im.mode in ("P", "PA"):
        im = im.convert("RGBA")
    return im if im.mode == mode else im.convert(mode)


def _load_image(path: Path, size: tuple[int, int], channels: int, resize: str) -> np.ndarray:
    """Decode ``path`` to ``uint8`` ``(channels, H, W)`` at ``size``; DataError naming the file if unreadable."""
    Image, ImageOps = _pil()
    th, tw = size
    try:
        with Image.open(path) as im:
            w, h = im.size
            if resize == "center-crop":
                need = max(_cover_size(h, w, th, tw))
            else:
                need = max(th, tw)
            if im.format == "JPEG":  # decode big JPEGs at a reduced scale (still >= the size needed)
                im.draft(None, (need, need))
            im = ImageOps.exif_transpose(im)
            im = _to_mode(im, "L" if channels == 1 else "RGB", Image)
            w, h = im.size
            if (h, w) != (th, tw):
                if resize == "stretch":
                    im = im.resize((tw, th), Image.BILINEAR)
                else:
                    rh, rw = _cover_size(h, w, th, tw)
                    top, left = (rh - th) // 2, (rw - tw) // 2
                    im = im.resize((rw, rh), Image.BILINEAR).crop((left, top, left + tw, top + th))
            a = np.asarray(im, dtype=np.uint8)
    except Exception as e:  # Pillow raises OSError, ValueError, SyntaxError, DecompressionBombError, ...
        raise DataError(f"cannot read image {path}: {type(e).__name__}: {e}; delete or replace the file") from e
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


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


# ----------------------------------------------------------------------------- arrays (npz files, tensors)
def _x_tensor(a: Any, what: str) -> torch.Tensor:
    """``a`` as a CPU tensor: bool becomes ``uint8`` 0/255, integers other than ``uint8`` ``int64``."""
    if isinstance(a, torch.Tensor):
        t = a.detach().cpu()
    else:
        try:
            arr = np.asarray(a)
        except Exception as e:
            raise DataError(f"{what} is not an array: {e}") from e
        if arr.dtype.kind not in "biuf":
            raise DataError(f"{what} has dtype {arr.dtype}; use uint8 (0..255) or float (images in [0, 1])")
        if arr.dtype.kind in "iu" and arr.dtype != np.uint8:
            arr = arr.astype(np.int64)
        arr = np.ascontiguousarray(arr)
        t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    if t.dtype == torch.bool:
        return t.to(torch.uint8) * 255
    if t.is_complex():
        raise DataError(f"{what} has dtype {t.dtype}; use uint8 (0..255) or float (images in [0, 1])")
    if not t.is_floating_point() and t.dtype != torch.uint8:
        t = t.to(torch.int64)
    return t


def _image_values(t: torch.Tensor, what: str) -> torch.Tensor:
    """Images to ``uint8`` (integer sources in 0..255) or ``float32`` (float sources in [0, 1])."""
    if t.numel() == 0:
        return t.to(torch.uint8)
    if t.is_floating_point():
        t = t.float()
        if not bool(torch.isfinite(t).all()):
            raise DataError(f"{what} holds NaN or infinite values")
        lo, hi = float(t.min()), float(t.max())
        if lo < 0 or hi > 1:
            raise DataError(f"{what} holds float values in [{lo:g}, {hi:g}]; float images must be in [0, 1] "
                            "(or store uint8 0..255)")
        return t
    if t.dtype != torch.uint8:
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi > 255:
            raise DataError(f"{what} holds integer values in [{lo}, {hi}]; integer images must be in 0..255")
        t = t.to(torch.uint8)
    return t


def _nchw(t: torch.Tensor, layout: str, what: str) -> torch.Tensor:
    if t.dim() == 3:
        return t[:, None]
    s = t.shape
    if layout == "auto":
        first, last = s[1] in (1, 3, 4), s[3] in (1, 3, 4)
        if first and last:
            raise DataError(f"{what} has shape {tuple(s)}: cannot tell channels-first from channels-last; "
                            "pass layout='nchw' or layout='nhwc'")
        if not (first or last):
            raise DataError(f"{what} has shape {tuple(s)}: a 4-D image batch needs 1, 3 or 4 channels, as "
                            "(N, H, W, C) or (N, C, H, W)")
        layout = "nchw" if first else "nhwc"
    if layout == "nhwc":
        t = t.permute(0, 3, 1, 2)
    if t.shape[1] not in (1, 3, 4):
        raise DataError(f"{what} has {t.shape[1]} channels in layout {layout}; images need 1, 3 or 4 channels")
    return t.contiguous()


def _labels(a: Any, n: int, what: str) -> np.ndarray:
    arr = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(f"{what} has shape {arr.shape} but its inputs are {n} samples; labels must be shaped ({n},)")
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuUS":
        if arr.dtype.kind == "f" and arr.size and bool(np.all(np.isfinite(arr))) and bool(np.all(arr == np.rint(arr))):
            return arr.astype(np.int64)
        raise DataError(f"{what} has dtype {arr.dtype}; labels must be integers or strings")
    return arr.astype(str) if arr.dtype.kind in "US" else arr.astype(np.int64)


def _class_table(ytr: np.ndarray, yte: np.ndarray, classes: Any,
                 where: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Class names, and the train / test labels as indices ``0..C-1`` into them."""
    strings = ytr.dtype.kind == "U"
    if strings != (yte.dtype.kind == "U"):
        raise DataError(f"{where}: y_train is {ytr.dtype} but y_test is {yte.dtype}; use integer labels in both, "
                        "or strings in both")
    if classes is not None:
        names = [str(c) for c in (classes.tolist() if hasattr(classes, "tolist") else list(classes))]
        if len(set(names)) != len(names):
            raise DataError(f"classes of {where} has duplicate names: {names}")
        keys = np.array(names) if strings else np.arange(len(names), dtype=np.int64)
        known = f"in classes (labels index the {len(names)} class names)"
    else:
        keys = np.unique(ytr)
        names = [str(k) for k in keys.tolist()]
        known = "in y_train; every test class needs training samples"
    if len(names) < 2:
        raise DataError(f"{where} has {len(names)} class ({', '.join(names) or 'none'}); each task needs at least 2")

    def index(y: np.ndarray, split: str) -> np.ndarray:
        sorter = np.argsort(keys, kind="stable")
        idx = sorter[np.clip(np.searchsorted(keys, y, sorter=sorter), 0, len(keys) - 1)]
        bad = keys[idx] != y
        if bool(bad.any()):
            wrong = sorted(set(y[bad].tolist()))[:10]
            raise DataError(f"{split} of {where} holds label(s) {wrong} that are not {known}")
        return idx.astype(np.int64)

    itr, ite = index(ytr, "y_train"), index(yte, "y_test")
    absent = [names[j] for j in np.flatnonzero(np.bincount(itr, minlength=len(names)) == 0).tolist()]
    if absent:
        raise DataError(f"{where}: class(es) {', '.join(absent)} have no training sample; drop them from classes")
    return names, itr, ite


def _prepare(raw: Sequence[Mapping[str, Any]], layout: str) -> list[dict]:
    """Check and canonicalise every task: images ``(N, C, H, W)`` or vectors ``(N, D)``, labels 0..C-1."""
    out = []
    for r in raw:
        where = r["where"]
        item = {"name": r["name"], "where": where}
        for split in ("train", "test"):
            x = _x_tensor(r[f"x_{split}"], f"x_{split} of {where}")
            if x.dim() not in (2, 3, 4) or x.shape[0] == 0 or any(s == 0 for s in x.shape[1:]):
                raise DataError(f"x_{split} of {where} has shape {tuple(x.shape)}; expected a non-empty (N, D), "
                                "(N, H, W), (N, H, W, C) or (N, C, H, W)")
            item[f"x_{split}"] = x
        kinds = {item["x_train"].dim() == 2, item["x_test"].dim() == 2}
        if len(kinds) != 1:
            raise DataError(f"{where} mixes vectors and images between x_train {tuple(item['x_train'].shape)} and "
                            f"x_test {tuple(item['x_test'].shape)}")
        item["vectors"] = item["x_train"].dim() == 2
        for split in ("train", "test"):
            x, what = item[f"x_{split}"], f"x_{split} of {where}"
            if item["vectors"]:
                x = x.float()
                if not bool(torch.isfinite(x).all()):
                    raise DataError(f"{what} holds NaN or infinite values")
            else:
                x = _image_values(_nchw(x, layout, what), what)
            item[f"x_{split}"] = x
        ytr = _labels(r["y_train"], item["x_train"].shape[0], f"y_train of {where}")
        yte = _labels(r["y_test"], item["x_test"].shape[0], f"y_test of {where}")
        names, ytr, yte = _class_table(ytr, yte, r.get("classes"), where)
        item.update(classes=names, y_train=torch.from_numpy(ytr), y_test=torch.from_numpy(yte))
        out.append(item)
    return out


def _array_benchmark(raw: Sequence[Mapping[str, Any]], opts: BuildOptions, salt: str, image_size, channels,
                     resize: str, layout: str, mean, std, augment: bool) -> tuple[list[Task], list[dict], tuple, dict]:
    if not raw:
        raise DataError("no tasks given: pass at least one task")
    size = _image_size(image_size)
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise DataError(f"channels must be 1 (grey), 3 (RGB) or None (3 if any task is colour), got {channels!r}")
    _check_choice(resize, RESIZE_MODES, "resize")
    _check_choice(layout, LAYOUTS, "layout")
    items = _prepare(raw, layout)
    vec = [it["vectors"] for it in items]
    if any(vec) and not all(vec):
        kinds = ", ".join(f"{it['where']}: {'vectors' if it['vectors'] else 'images'}" for it in items)
        raise DataError(f"tasks mix vector and image inputs ({kinds}); one sequence needs one kind of input")
    extra: dict = {}
    if all(vec):
        dims = sorted({int(it[f"x_{s}"].shape[1]) for it in items for s in ("train", "test")})
        if len(dims) != 1:
            per = ", ".join(f"{it['where']}: D={it['x_train'].shape[1]}/{it['x_test'].shape[1]}" for it in items)
            raise DataError(f"vector tasks must share the input size D, got {per}")
        if augment:
            raise DataError("augment applies to images only; these tasks hold vectors (N, D)")
        input_shape: tuple[int, ...] = (dims[0],)
        mean, std = _user_stats(mean, std, dims[0], "features")
    else:
        if channels is None:
            channels = 3 if any(it[f"x_{s}"].shape[1] >= 3 for it in items for s in ("train", "test")) else 1
        if size is None:
            sizes = {tuple(it[f"x_{s}"].shape[2:]) for it in items for s in ("train", "test")}
            size = sizes.pop() if len(sizes) == 1 else (max(h for h, _ in sizes), max(w for _, w in sizes))
        for it in items:
            for s in ("train", "test"):
                it[f"x_{s}"] = resize_images(convert_channels(it[f"x_{s}"], channels), size, resize)
        input_shape = (int(channels), *size)
        mean, std = _user_stats(mean, std, channels, "channels")
        extra = {"image_size": list(size), "channels": int(channels), "resize": resize, "augment": bool(augment)}
    tasks, per_task = [], []
    for k, it in enumerate(items, start=1):
        task, info = _finish_task(k, it["name"], it["classes"], (it["x_train"], it["y_train"]),
                                  (it["x_test"], it["y_test"]), opts, f"{salt}/{it['name']}", input_shape, mean, std,
                                  augment, it["where"])
        tasks.append(task)
        per_task.append({**info, "source": it["where"]})
    return tasks, per_task, input_shape, extra


def _npz_files(paths_or_dir: Union[PathLike, Sequence[PathLike]]) -> list[Path]:
    if isinstance(paths_or_dir, (str, bytes)) or hasattr(paths_or_dir, "__fspath__"):
        p = Path(paths_or_dir).expanduser()
        if p.is_dir():
            files = sorted((f for f in p.iterdir() if f.suffix.lower() == ".npz" and f.is_file()
                            and not f.name.startswith(".")), key=lambda f: f.name)
            if not files:
                raise DataError(f"folder {p} holds no .npz files; expected one .npz per task with x_train, y_train, "
                                "x_test, y_test")
            return files
        paths = [p]
    else:
        paths = [Path(q).expanduser() for q in paths_or_dir]
        if not paths:
            raise DataError("no .npz files given: pass a folder or a non-empty list of files")
    missing = [str(q) for q in paths if not q.is_file()]
    if missing:
        raise DataError(f".npz file(s) not found: {', '.join(missing)}; pass a folder of .npz files or existing files")
    return paths


def _read_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            found = list(z.files)
            missing = [k for k in NPZ_KEYS if k not in found]
            if missing:
                raise DataError(f"{path} lacks array(s) {', '.join(missing)} (found: {', '.join(found) or 'none'}); "
                                "each task file needs x_train, y_train, x_test, y_test")
            out = {k: z[k] for k in NPZ_KEYS}
            out["classes"] = z["classes"] if "classes" in found else None
    except DataError:
        raise
    except ValueError as e:
        raise DataError(f"cannot read {path}: {e} (object arrays are refused; save labels and classes as "
                        "int or str arrays)") from e
    except Exception as e:  # BadZipFile, OSError, EOFError, ...
        raise DataError(f"cannot read {path}: {type(e).__name__}: {e}; is it a .npz written by numpy.savez?") from e
    return {**out, "name": path.stem, "where": f"file {path}"}


def npz_benchmark(paths_or_dir: Union[PathLike, Sequence[PathLike]], *, image_size: Optional[ImageSize] = None,
                  channels: Optional[int] = None, resize: str = "stretch", layout: str = "auto", seed: int = 0,
                  val_fraction: float = 0.1, max_train_per_class: Optional[int] = None,
                  mean: Optional[Stats] = None, std: Optional[Stats] = None, augment: bool = False,
                  name: Optional[str] = None) -> Benchmark:
    """A benchmark from ``.npz`` files, one per task (``numpy.savez``).

    Each file holds ``x_train, y_train, x_test, y_test`` and optionally ``classes`` (class names;
    labels then index it). ``paths_or_dir`` is a folder (its ``*.npz`` files, sorted by name, are the
    tasks; registered as ``build_benchmark("npz", data_root=folder)``), one file, or a list of files
    (in learning order). The task name is the file stem. Object arrays are refused (no pickle).

    Inputs ``x``:

    - images ``(N, H, W)`` (grey), ``(N, H, W, C)`` (channels-last) or ``(N, C, H, W)`` with ``C``
      in ``{1, 3, 4}`` (4 = RGBA, alpha dropped); ``layout="auto"`` tells them apart by where the
      channel axis is (``"nchw"`` / ``"nhwc"`` force it); values ``uint8`` / integer in ``0..255``
      or float in ``[0, 1]``;
    - vectors ``(N, D)``, any real dtype (stored ``float32``); all tasks must share ``D``.

    Mixed shapes across tasks are brought to one input shape as for image folders: converted to
    ``channels`` (default ``None``: 3 if any task is colour, else 1) and resized, batched with
    :func:`resize_images` (``resize="stretch"`` or ``"center-crop"``), to ``image_size`` (default
    ``None``: the common size when all tasks agree, else the largest height and largest width).

    Labels ``y``: ``(N,)`` integers or strings. Without ``classes`` the task's classes are the
    distinct training labels, sorted (names ``str(label)``), remapped to ``0..C-1`` (e.g. labels
    ``{5, 9}`` become ``0, 1``); with ``classes`` integer labels must be ``0..len(classes)-1`` (or
    strings naming them). Validation is held out of the training data (``val_fraction``,
    ``seed``, ``max_train_per_class``, as for the built-in benchmarks).

    Args:
        mean, std: normalisation (images on the ``[0, 1]`` scale: 1 or ``channels`` values; vectors:
            1 or ``D`` values); ``None``: computed from each task's training split, per channel or
            per feature.
        augment: random crop (padding ``image_size / 8``) + flip while training; images only.
        name: benchmark name (default ``"npz"``).

    Returns:
        a :class:`~unforget.data.task.Benchmark` (``x`` ``uint8`` / ``float32`` ``(N, C, H, W)`` or
        ``float32`` ``(N, D)``; ``y`` ``int64``).

    Raises:
        DataError: missing files or arrays, unreadable files, bad shapes or dtypes, values out of
            range, vector sizes that differ, image and vector tasks mixed, fewer than 2 classes in a
            task, test labels without training samples, a task left without validation samples.
    """
    files = _npz_files(paths_or_dir)
    opts = _options(files[0].parent, seed, val_fraction, max_train_per_class)
    tasks, per_task, shape, extra = _array_benchmark([_read_npz(f) for f in files], opts, "npz", image_size,
                                                     channels, resize, layout, mean, std, bool(augment))
    return _benchmark(name or "npz", tasks, per_task, shape, opts, {"files": [str(f) for f in files], **extra}, True)


def tensor_benchmark(tasks: Sequence[Union[Mapping[str, Any], Sequence[ArrayLike]]], *, name: str = "tensors",
                     image_size: Optional[ImageSize] = None, channels: Optional[int] = None,
                     resize: str = "stretch", layout: str = "auto", seed: int = 0, val_fraction: float = 0.1,
                     max_train_per_class: Optional[int] = None, mean: Optional[Stats] = None,
                     std: Optional[Stats] = None, augment: bool = False) -> Benchmark:
    """A benchmark from in-memory arrays (torch tensors or numpy arrays), one entry per task.

    Each task is a tuple ``(x_train, y_train, x_test, y_test)`` or a dict with those keys and
    optionally ``classes`` (class names) and ``name`` (default ``"task<k>"``). Inputs, labels,
    mixed shapes, normalisation and splits follow :func:`npz_benchmark` exactly (torch tensors of
    images are usually ``(N, C, H, W)``; ``layout="auto"`` detects it).

    Returns:
        a :class:`~unforget.data.task.Benchmark` named ``name``.

    Raises:
        DataError: a task is not a 4-tuple or a dict with the four arrays, or any check of
            :func:`npz_benchmark` fails (the message names the task).
    """
    if isinstance(tasks, Mapping) or not hasattr(tasks, "__len__"):
        raise DataError("tasks must be a list with one entry per task: (x_train, y_train, x_test, y_test) or a dict")
    raw = []
    for k, t in enumerate(tasks, start=1):
        if isinstance(t, Mapping):
            missing = [key for key in NPZ_KEYS if key not in t]
            if missing:
                raise DataError(f"task {k} lacks {', '.join(missing)}; give x_train, y_train, x_test, y_test")
            r = {key: t[key] for key in NPZ_KEYS}
            r["classes"] = t.get("classes")
            tname = str(t.get("name") or f"task{k}")
        elif isinstance(t, Sequence) and len(t) == 4 and not isinstance(t, (str, bytes)):
            r = dict(zip(NPZ_KEYS, t))
            r["classes"] = None
            tname = f"task{k}"
        else:
            raise DataError(f"task {k} must be (x_train, y_train, x_test, y_test) or a dict with those keys, "
                            f"got {type(t).__name__}")
        raw.append({**r, "name": tname, "where": f"task {k} ({tname})"})
    opts = _options(None, seed, val_fraction, max_train_per_class)
    built, per_task, shape, extra = _array_benchmark(raw, opts, "tensors", image_size, channels, resize, layout,
                                                     mean, std, bool(augment))
    return _benchmark(name, built, per_task, shape, opts, extra, True)


# ----------------------------------------------------------------------------- registry
@register_benchmark("image-folder", "your images: --data-root holds one folder per task, one subfolder per class "
                                    "(any size/format; 32x32 RGB inputs, 20 % test held out unless test/ exists)")
def build_image_folder(opts: BuildOptions) -> Benchmark:
    """``image-folder``: :func:`image_folder_benchmark` on ``opts.data_root`` with its defaults
    (32x32 RGB, stretch, ``test_fraction=0.2``, statistics from each task's training split, no
    augmentation). ``task_order`` / ``n_tasks`` select among the task folders (sorted by name).

    Raises:
        DataError: ``class_order`` given (classes belong to task folders), or any error of
            :func:`image_folder_benchmark`.
    """
    _no_class_order(opts, "image-folder")
    kw = _image_folder_kwargs((32, 32), 3, "stretch", 0.2, None, None)
    tasks, per_task = _image_folder_tasks(opts.data_root, opts, None, augment=False, **kw)
    extra = {"image_size": list(kw["size"]), "channels": 3, "resize": "stretch", "test_fraction": 0.2,
             "augment": False}
    return _benchmark("image-folder", tasks, per_task, (3, *kw["size"]), opts, extra, False)


@register_benchmark("npz", "your arrays: --data-root holds one .npz per task (x_train, y_train, x_test, y_test; "
                           "images or vectors)")
def build_npz(opts: BuildOptions) -> Benchmark:
    """``npz``: :func:`npz_benchmark` on the ``*.npz`` files of ``opts.data_root`` (sorted by name)
    with its defaults (common size / channels inferred, stretch, statistics from each task's
    training split). ``task_order`` / ``n_tasks`` select among the files.

    Raises:
        DataError: ``class_order`` given, or any error of :func:`npz_benchmark`.
    """
    _no_class_order(opts, "npz")
    files = _npz_files(opts.data_root)
    tasks, per_task, shape, extra = _array_benchmark([_read_npz(f) for f in files], opts, "npz", None, None,
                                                     "stretch", "auto", None, None, False)
    return _benchmark("npz", tasks, per_task, shape, opts, {"files": [str(f) for f in files], **extra}, False)
