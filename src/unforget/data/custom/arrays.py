"""Benchmarks from arrays: ``.npz`` files (one per task) and in-memory tensors / numpy arrays."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from unforget.data.benchmarks import BuildOptions
from unforget.data.custom.assembly import _benchmark, _finish_task
from unforget.data.custom.images import RESIZE_MODES, convert_channels, resize_images
from unforget.data.custom.options import ImageSize, _check_choice, _image_size, _options
from unforget.data.custom.statistics import _user_stats
from unforget.data.readers._common import PathLike
from unforget.data.task import Benchmark, Task
from unforget.data.transforms import Stats
from unforget.errors import DataError

#: Accepted ``layout`` values of 4-D arrays.
LAYOUTS = ("auto", "nchw", "nhwc")

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence]


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
