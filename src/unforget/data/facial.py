"""The facial-informatics sequence of CPG's third experiment: gender, expression and age on aligned
112x112 faces after a face-verification CNN-20 (Hung et al. 2019, Sec. 4.3, Table 4; the
reference README's Experiment 3), registered as ``facial``.

Layout (the CPG reference's ``face_data`` download; MTCNN-aligned 112x112 faces)::

    ROOT/gender/train/<class>/*.jpg     ROOT/gender/test/<class>/*.jpg
    ROOT/emotion/train/...              ROOT/age0/train/... ROOT/age1/... .. ROOT/age4/...

Age follows the 5-fold protocol of the reference: ``age0`` .. ``age4`` are five train / test
splits; one run per fold (``--benchmark-option age_fold=K``) learns gender, emotion, then
``ageK``, and the paper reports the mean over the folds. Face verification (task 1) is the
pretrained network (``--pretrained FILE``), tested on LFW with ``pretrained.pairs`` and
``pretrained.pairs_root`` (:mod:`unforget.evaluation.verification`); or, with
``--benchmark-option verification=true``, it is learned here as task 1 from
``ROOT/face_verification/train/<identity>/`` with an A-Softmax head and tested on
``ROOT/lfw_pairs.txt`` / ``ROOT/lfw/``.

Preprocessing as the reference's ``utils/face_dataset.py``: resize to 112 (the aligned faces
already are), mean 0.5 and std 0.5 per channel, random horizontal flip while training.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import torch

from unforget.data.benchmarks import BuildOptions, _no_class_order, register_benchmark
from unforget.data.custom.assembly import _benchmark
from unforget.data.custom.folders import _image_folder_tasks, _subdirs
from unforget.data.custom.options import _options
from unforget.data.readers._common import PathLike, resolve_root
from unforget.data.task import Benchmark, PairSet
from unforget.data.transforms import ImageTransform
from unforget.errors import DataError

FACE_MEAN = (0.5, 0.5, 0.5)
FACE_STD = (0.5, 0.5, 0.5)
AGE_FOLDS = 5

REFERENCE_GOALS = {"face_verification": 0.9942, "gender": 0.9080, "emotion": 0.6254, "age0": 0.6531,
                   "age1": 0.5381, "age2": 0.5847, "age3": 0.5151, "age4": 0.5727}
"""Fine-tuned CNN-20 accuracies the CPG reference README lists as goals for experiment 3."""


def read_pair_set(pairs_file: PathLike, image_root: PathLike, stored: tuple[int, ...]) -> PairSet:
    """Verification pairs (LFW's ``pairs.txt``, :func:`~unforget.evaluation.verification.read_pairs`)
    with their images from ``image_root`` (``<person>/<person>_0001.jpg``), decoded as ``uint8``
    at ``stored`` ``(C, H, W)`` (stretched); each image is read once.

    Raises:
        PairsFormatError: a malformed ``pairs.txt``; DataError: a pair image is missing or
            unreadable (the message names the file).
    """
    from unforget.data.custom.images import _load_image
    from unforget.evaluation.verification import lfw_image_path, read_pairs

    pf = read_pairs(pairs_file)
    cache: dict = {}

    def image(person: str, number: int) -> torch.Tensor:
        if (person, number) not in cache:
            path = lfw_image_path(image_root, person, number)
            if not path.is_file():
                raise DataError(f"verification pair image {path} not found (named by {pairs_file}); give the whole "
                                "image folder")
            cache[(person, number)] = torch.from_numpy(_load_image(path, tuple(stored[1:]), stored[0], "stretch").copy())
        return cache[(person, number)]

    first = torch.stack([image(*p.first) for p in pf.pairs])
    second = torch.stack([image(*p.second) for p in pf.pairs])
    same = torch.tensor([p.same for p in pf.pairs], dtype=torch.bool)
    return PairSet(first, second, same, [list(r) for r in pf.folds()])


def facial_benchmark(root: PathLike, *, age_fold: int = 0, image_size: int = 112, seed: int = 0,
                     val_fraction: float = 0.1, max_train_per_class: Optional[int] = None,
                     verification: bool = False, name: str = "facial") -> Benchmark:
    """Gender, emotion and age fold ``age_fold`` from the folders of ``root`` (see module doc).

    Args:
        root: folder holding ``gender``, ``emotion`` and ``age0`` .. ``age4``, each with
            ``train/`` and ``test/`` class folders.
        age_fold: which age fold, 0..4.
        verification: learn face verification as task 1 too (instead of taking a pretrained
            network): identities from ``root/face_verification/train/<identity>/``, trained
            with an A-Softmax head, tested with the LFW protocol on ``root/lfw_pairs.txt``
            whose images are in ``root/lfw/`` (validation: identity classification on images
            held out per identity).
        image_size: model input side (112 in the reference).
        seed, val_fraction, max_train_per_class: as :func:`~unforget.data.build_benchmark`.

    Returns:
        a :class:`~unforget.data.task.Benchmark` of 3 tasks, input ``(3, image_size, image_size)``.

    Raises:
        DataError: ``age_fold`` out of range, ``root`` or a task folder missing (the message says
            what is there), a task without ``train/`` or ``test/``, or any image-folder error.
    """
    if isinstance(age_fold, bool) or not isinstance(age_fold, int) or not 0 <= age_fold < AGE_FOLDS:
        raise DataError(f"age_fold must be an integer in 0..{AGE_FOLDS - 1}, got {age_fold!r}")
    opts = _options(resolve_root(root), seed, val_fraction, max_train_per_class)
    base = Path(opts.data_root)
    names = (["face_verification"] if verification else []) + ["gender", "emotion", f"age{age_fold}"]
    if not base.is_dir():
        raise DataError(f"facial data root {base} does not exist; pass the folder holding gender, emotion, age0..age4")
    missing = [t for t in names if not (base / t).is_dir()]
    if missing:
        found = ", ".join(p.name for p in _subdirs(base)) or "none"
        raise DataError(f"facial: task folder(s) {', '.join(missing)} not found in {base} (found: {found})")
    for t in names:
        for split in ("train",) if t == "face_verification" else ("train", "test"):
            if not (base / t / split).is_dir():
                raise DataError(f"facial: {base / t} has no {split}/ folder; expected {base / t}/{split}/<class>/*.jpg")
    kw = {"size": (image_size, image_size), "channels": 3, "resize": "stretch", "test_fraction": 0.2,
          "mean": FACE_MEAN, "std": FACE_STD}
    tasks, per_task = _image_folder_tasks(base, opts, names, augment=False, **kw)
    tf = ImageTransform(FACE_MEAN, FACE_STD, hflip=True)
    tasks = [dataclasses.replace(t, transform=tf) for t in tasks]
    if verification:
        for f in (base / "lfw_pairs.txt", base / "lfw"):
            if not f.exists():
                raise DataError(f"facial with verification needs {f} (LFW's pairs.txt and its image folder)")
        pairs = read_pair_set(base / "lfw_pairs.txt", base / "lfw", (3, image_size, image_size))
        tasks[0] = dataclasses.replace(tasks[0], head="a-softmax", pairs=pairs)
        per_task[0] = {**per_task[0], "head": "a-softmax", "test_protocol": f"LFW pairs, {len(pairs.folds)} folds"}
    per_task = [{**p, "resize": "stretch"} for p in per_task]
    extra = {"data_root": str(base), "image_size": image_size, "age_fold": age_fold, "verification": verification,
             "goals_reference": {t: REFERENCE_GOALS[t] for t in ["face_verification", *names]}}
    return _benchmark(name, tasks, per_task, (3, image_size, image_size), opts, extra, True)


@register_benchmark("facial", "CPG experiment 3: gender, emotion, age fold K (--benchmark-option age_fold=K) "
                              "on aligned 112x112 faces, after a face-verification network (--pretrained)",
                    options=("age_fold", "verification"))
def build_facial(opts: BuildOptions) -> Benchmark:
    """``facial``: :func:`facial_benchmark` on ``opts.data_root``; ``options["age_fold"]`` (0..4,
    default 0) picks the age fold, ``options["verification"]`` (default false) learns face
    verification as task 1 from identity folders and LFW pairs.

    Raises:
        DataError: ``class_order`` given, or any error of :func:`facial_benchmark`.
    """
    _no_class_order(opts, "facial")
    return facial_benchmark(opts.data_root, age_fold=opts.options.get("age_fold", 0), seed=opts.seed,
                            val_fraction=opts.val_fraction, max_train_per_class=opts.max_train_per_class,
                            verification=bool(opts.options.get("verification", False)))
