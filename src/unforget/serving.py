"""Serving learned tasks: input checks and the ``nn.Module`` face of a learner.

``ServingModel(learner)(x, task=t)`` returns task t's logits for a float batch ``x`` as the
task's transform makes it; :func:`as_batch` and :func:`task_id` turn what users pass into what
the network takes, or refuse it with one line.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from unforget.errors import InputError, UnknownTaskError
from unforget.models.base import parse_task_id


def as_batch(x, input_shape: Sequence[int]) -> torch.Tensor:
    """``x`` as a ``float32`` batch of shape ``(N, *input_shape)``.

    ``x`` is a ``torch.Tensor`` or a NumPy array (converted with ``torch.as_tensor``). Floating
    and integer dtypes (e.g. ``float64``, ``float16``, ``uint8``, ``int64``) are cast to
    ``float32`` as they are: no normalisation is applied, so pass what the benchmark's transform
    makes.

    Raises:
        InputError: another type; a ``bool``, complex or non-numeric dtype; another shape (one
            line saying the shape expected).
    """
    want = tuple(int(s) for s in input_shape)
    expected = f"(N, {', '.join(map(str, want))})"
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "iuf":
            raise InputError(f"x is a NumPy array of dtype {x.dtype}; give real numbers (a float or integer dtype)")
        x = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
    elif not isinstance(x, torch.Tensor):
        raise InputError(f"x must be a torch.Tensor or a NumPy array of shape {expected}, got "
                         f"{type(x).__name__}")
    if x.dtype == torch.bool or x.is_complex() or x.is_quantized:
        raise InputError(f"x has dtype {x.dtype}; give real numbers (float32, or a float or integer dtype, cast "
                         "to float32)")
    if x.dim() != len(want) + 1 or tuple(x.shape[1:]) != want:
        hint = "; for a single input pass x[None]" if tuple(x.shape) == want else ""
        raise InputError(f"x has shape {tuple(x.shape)}; this model takes a batch of shape {expected}{hint}")
    return x if x.dtype == torch.float32 else x.to(torch.float32)


def task_id(task, learned: Sequence[int]) -> int:
    """``task`` as an ``int`` that is one of ``learned`` (:func:`~unforget.models.base.parse_task_id`
    reads it).

    Raises:
        InputError (TaskIdError): not an integer task id; UnknownTaskError (also a ``KeyError``):
            a task that was not learned.
    """
    task = parse_task_id(task)
    if task not in learned:
        raise UnknownTaskError(f"task {task} was not learned; learned tasks: {list(learned)}")
    return task


class ServingModel(nn.Module):
    """Serves every learned task of a learner: ``model(x, task=t)`` returns task t's logits.

    ``x`` is a batch as the benchmark's transform makes it (e.g. ``(N, 3, 32, 32)`` normalised
    images): a ``torch.Tensor`` or a NumPy array, ``float32`` or a float or integer dtype that is
    cast to ``float32`` (:func:`as_batch`); ``task`` an ``int`` or a 0-d integer tensor. The
    output is ``(N, n_classes_t)``. Always in evaluation mode, no gradient. ``task_ids`` lists
    the learned task ids (1-based), ``tasks`` their names and class names. The method's networks
    are registered submodules, so ``parameters()`` counts what is stored.
    """

    def __init__(self, learner) -> None:
        super().__init__()
        self._learner = [learner]  # a list: not a submodule
        self.method = learner.method
        self.networks = nn.ModuleList(self.method.networks())

    @property
    def task_ids(self) -> list[int]:
        return list(self.method.learned)

    @property
    def tasks(self) -> list[dict]:
        """Per learned task: ``{"name", "classes", ...}`` (task ``i`` is ``tasks[i - 1]``)."""
        return self._learner[0].tasks

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, e.g. ``(3, 32, 32)``."""
        return tuple(self.method.plan.input_shape)

    def forward(self, x: Union[torch.Tensor, np.ndarray], task: Optional[int] = None):
        """Task ``task``'s logits ``(N, n_classes_task)``; with ``task=None`` and a method that
        infers task ids (SupSup), ``(inferred task id, its logits)`` for a batch of one task.

        Raises:
            InputError: ``x`` of another type, shape or dtype (:func:`as_batch`), ``task`` not an
                integer, or no ``task`` for a method that cannot infer it; UnknownTaskError (also
                a ``KeyError``): ``task`` was not learned.
        """
        if task is None:
            infer = getattr(self.method, "infer_task", None)
            if infer is None:
                raise InputError(f"method {self.method.name} needs the task id: model(x, task=t)")
            return infer(as_batch(x, self.input_shape))
        t = task_id(task, self.method.learned)
        return self.method.logits(as_batch(x, self.input_shape), t)

    def predict(self, x: Union[torch.Tensor, np.ndarray], task: int) -> torch.Tensor:
        """Predicted task-local class indices, ``int64`` ``(N,)``; raises as :meth:`forward`."""
        return self(x, task).argmax(1)


__all__ = ["ServingModel", "as_batch", "task_id"]


# ---------------------------------------------------------------------- raw inputs (files, uint8 images)
def preprocessing_of(task, resize: str = "stretch") -> dict:
    """What serving task ``task`` on raw inputs needs, JSON-able: ``kind`` (``image`` or
    ``vector``), the model input shape, for images ``channels``, ``size`` ``[H, W]``, ``resize``
    (``stretch`` or ``center-crop``), normalisation ``mean`` / ``std`` (``[0, 1]`` scale, or
    ``None``), ``flatten`` and a pixel ``permutation`` (permuted MNIST) or ``None``; for vectors
    ``mean`` / ``std`` per feature."""
    from unforget.data.custom import VectorTransform
    from unforget.data.transforms import ImageTransform

    tf = task.transform
    if isinstance(tf, ImageTransform):
        shape = tuple(task.train.x.shape[1:])
        return {"kind": "image", "channels": int(shape[0]), "size": [int(shape[1]), int(shape[2])],
                "resize": resize, "mean": None if tf.mean is None else list(tf.mean),
                "std": None if tf.std is None else list(tf.std), "flatten": tf.flatten,
                "permutation": None if tf.permutation is None else tf.permutation.tolist(),
                "crop": getattr(tf, "crop_size", None), "input_shape": list(task.input_shape)}
    if isinstance(tf, VectorTransform):
        return {"kind": "vector", "mean": None if tf.mean is None else tf.mean.reshape(-1).tolist(),
                "std": None if tf.std is None else tf.std.reshape(-1).tolist(), "input_shape": list(task.input_shape)}
    return {"kind": "unknown", "input_shape": list(task.input_shape)}


def raw_batch(items, prep: dict) -> torch.Tensor:
    """Model inputs for raw ``items``: image file paths, PIL images or ``uint8`` arrays
    (``(H, W)``, ``(H, W, C)`` or ``(C, H, W)`` with ``C`` in 1, 3, 4; any size), or float
    arrays in ``[0, 1]``; for a vector task, rows of ``D`` raw values. They are converted to the
    task's channels, resized by its rule and normalised with its statistics, as its training data
    was (:func:`preprocessing_of`).

    Raises:
        InputError: the task cannot take raw inputs, a file is not an image, an image has an
            unsupported channel count, or float values lie outside ``[0, 1]`` (already
            normalised? then call the model directly) — one line naming the item.
    """
    from pathlib import Path

    from unforget.data.custom import VectorTransform, convert_channels, resize_images
    from unforget.data.transforms import ImageTransform
    from unforget.errors import DataError

    kind = prep.get("kind")
    if kind == "vector":
        x = torch.as_tensor(np.asarray(items, dtype=np.float32))
        if x.dim() == 1:
            x = x[None]
        want = prep["input_shape"][0]
        if x.dim() != 2 or x.shape[1] != want:
            raise InputError(f"this task takes rows of {want} values, got shape {tuple(x.shape)}")
        return VectorTransform(prep["mean"], prep["std"])(x)
    if kind != "image":
        raise InputError("this task records no preprocessing for raw inputs (learned by an older unforget); "
                         "pass model inputs to model(x, task)")
    c, (h, w) = prep["channels"], prep["size"]
    out = []
    for i, item in enumerate(items if isinstance(items, (list, tuple)) else [items]):
        label = str(item) if isinstance(item, (str, Path)) else f"input {i}"
        if isinstance(item, (str, Path)):
            from unforget.data.custom import _load_image

            if Path(item).is_dir():
                raise InputError(f"{item} is a folder; pass its image files (e.g. {Path(item) / '*.png'})")
            if not Path(item).exists():
                raise InputError(f"{item} does not exist")
            try:
                out.append(torch.from_numpy(_load_image(Path(item), (h, w), c, prep["resize"]).copy()))
            except DataError as e:
                raise InputError(f"{item} is not an image this task can read ({e})") from None
            continue
        a = np.asarray(item)
        if a.dtype.kind == "f":
            if a.size and (np.nanmin(a) < 0 or np.nanmax(a) > 1 or np.isnan(a).any()):
                raise InputError(f"{label}: float image values must lie in [0, 1] (raw pixels); values "
                                 f"{float(np.nanmin(a)):.3g}..{float(np.nanmax(a)):.3g} look normalised already: "
                                 "call model(x, task) with model inputs instead")
            a = np.round(a * 255.0).astype(np.uint8)
        elif a.dtype != np.uint8:
            raise InputError(f"{label}: give uint8 pixels (0..255) or floats in [0, 1], got dtype {a.dtype}")
        if a.ndim == 2:
            a = a[None]
        elif a.ndim == 3 and a.shape[-1] in (1, 3, 4) and a.shape[0] not in (1, 3, 4):
            a = a.transpose(2, 0, 1)
        if a.ndim != 3 or a.shape[0] not in (1, 3, 4):
            raise InputError(f"{label}: an image must be (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4; "
                             f"got shape {a.shape}")
        x = convert_channels(torch.from_numpy(np.ascontiguousarray(a))[None], c)
        if tuple(x.shape[2:]) != (h, w):
            x = resize_images(x, (h, w), prep["resize"])
        out.append(x[0])
    x = torch.stack(out)
    perm = prep.get("permutation")
    tf = ImageTransform(prep["mean"], prep["std"], permutation=None if perm is None else torch.tensor(perm),
                        flatten=prep.get("flatten", False), crop_size=prep.get("crop"))
    return tf(x)
