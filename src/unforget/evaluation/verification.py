"""Face verification with the LFW protocol: ``pairs.txt``, 10 folds, a threshold chosen on 9 folds
and the accuracy measured on the tenth.

Source: Huang et al. 2007, "Labeled Faces in the Wild" (the *View 2* protocol: 10 folds of 300
matched and 300 mismatched pairs, mean and standard deviation of the 10 fold accuracies); Hung et
al. 2019 (CPG), Sec. 4.3, report 99.30 +- 0.35 % for face verification. The decision rule follows
the CPG reference (``ivclab/CPG`` ``utils/metrics.py``, ``fv_evaluate`` with
``distance_metric=1``, as ``utils/manager.py`` ``evalLFW`` calls it):

* the distance of two embeddings is ``arccos(clip(cos_sim, 0, 1)) * 4 / pi`` (in ``[0, 2]``; a
  monotone function of the cosine similarity, with every negative similarity at distance 2);
* a pair is called *same* when its distance is ``< threshold``; the thresholds tried are
  ``0, 0.01, ..., 3.99``; on each fold the threshold with the best accuracy on the 9 other
  folds is used (the first such threshold on a tie, as ``numpy.argmax``);
* folds are contiguous blocks of the pairs in file order (scikit-learn's ``KFold`` without
  shuffling), which are exactly the 10 sets of the official ``pairs.txt``;
* the reported value is the mean of the 10 fold accuracies and their (population) standard
  deviation.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from unforget.errors import DataError

THRESHOLDS = np.arange(0, 4, 0.01)
"""Distance thresholds tried (the CPG reference's ``np.arange(0, 4, 0.01)``)."""


class PairsFormatError(DataError):
    """A ``pairs.txt`` that does not follow the LFW layout (the message names the line)."""


@dataclass(frozen=True)
class Pair:
    """One verification pair: two images ``(person, 1-based image number)`` and whether they show
    the same person."""

    first: tuple[str, int]
    second: tuple[str, int]
    same: bool


@dataclass(frozen=True)
class PairsFile:
    """A parsed ``pairs.txt``: ``n_folds`` sets of ``per_fold`` matched pairs then ``per_fold``
    mismatched pairs, in file order (``pairs``)."""

    n_folds: int
    per_fold: int
    pairs: list[Pair]

    def folds(self) -> list[range]:
        """Index ranges of the folds in :attr:`pairs`."""
        size = 2 * self.per_fold
        return [range(f * size, (f + 1) * size) for f in range(self.n_folds)]


def _int(field: str, path: Path, line_no: int, what: str) -> int:
    try:
        v = int(field)
    except ValueError:
        raise PairsFormatError(f"{path}, line {line_no}: {what} must be an integer, got {field!r}") from None
    if v < 1:
        raise PairsFormatError(f"{path}, line {line_no}: {what} must be >= 1, got {v}")
    return v


def read_pairs(path: str | os.PathLike) -> PairsFile:
    """Read an LFW ``pairs.txt``.

    Layout: a header ``<folds> <pairs per kind>`` (e.g. ``10 300``), then for each fold
    ``<pairs per kind>`` matched lines ``name i j`` followed by as many mismatched lines
    ``name1 i name2 j`` (fields separated by tabs or spaces; image numbers 1-based).

    Raises:
        PairsFormatError: the file is absent or empty, the header is not two positive integers,
            the line count does not match the header, or a line has the wrong number of fields,
            a non-integer image number, or a matched line where a mismatched one is due (or
            the reverse) -- the message names the file and the line.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise PairsFormatError(f"pairs file {p} not found; give LFW's pairs.txt (10 folds of 300 matched + "
                               "300 mismatched pairs)")
    lines = [(i, ln.split()) for i, ln in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)]
    lines = [(i, f) for i, f in lines if f]
    if not lines:
        raise PairsFormatError(f"{p} is empty; expected a header '<folds> <pairs per kind>' and the pairs")
    head_no, head = lines[0]
    if len(head) != 2:
        raise PairsFormatError(f"{p}, line {head_no}: the header must be '<folds> <pairs per kind>' "
                               f"(e.g. '10 300'), got {' '.join(head)!r}")
    n_folds = _int(head[0], p, head_no, "the number of folds")
    per = _int(head[1], p, head_no, "the number of pairs per kind")
    body = lines[1:]
    if len(body) != 2 * n_folds * per:
        raise PairsFormatError(f"{p}: the header promises {n_folds} folds of {per} matched + {per} mismatched "
                               f"pairs ({2 * n_folds * per} lines), the file has {len(body)} pair lines")
    pairs = []
    for k, (no, f) in enumerate(body):
        matched_due = (k % (2 * per)) < per
        if matched_due and len(f) != 3:
            raise PairsFormatError(f"{p}, line {no}: fold {k // (2 * per) + 1} expects a matched pair 'name i j' "
                                   f"here, got {len(f)} fields: {' '.join(f)!r}")
        if not matched_due and len(f) != 4:
            raise PairsFormatError(f"{p}, line {no}: fold {k // (2 * per) + 1} expects a mismatched pair "
                                   f"'name1 i name2 j' here, got {len(f)} fields: {' '.join(f)!r}")
        if matched_due:
            a = (f[0], _int(f[1], p, no, "an image number"))
            b = (f[0], _int(f[2], p, no, "an image number"))
        else:
            a = (f[0], _int(f[1], p, no, "an image number"))
            b = (f[2], _int(f[3], p, no, "an image number"))
        pairs.append(Pair(a, b, matched_due))
    return PairsFile(n_folds, per, pairs)


def lfw_image_path(root: str | os.PathLike, person: str, number: int, ext: str = "jpg") -> Path:
    """The file of image ``number`` of ``person`` in LFW's layout: ``root/person/person_0001.jpg``."""
    return Path(root) / person / f"{person}_{number:04d}.{ext}"


def pair_distances(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> np.ndarray:
    """Distance of each pair of embeddings ``a[i], b[i]`` (``(N, D)`` each, any float dtype):
    ``arccos(clip(cos_sim, 0, 1)) * 4 / pi``, float64 ``(N,)`` in ``[0, 2]``; a zero embedding
    has similarity 0 (distance 2)."""
    a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    b = np.asarray(b.detach().cpu() if isinstance(b, torch.Tensor) else b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"embeddings must be two (N, D) arrays of one shape, got {a.shape} and {b.shape}")
    norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    sim = np.divide(np.sum(a * b, axis=1), norm, out=np.zeros(len(a)), where=norm > 0)
    return np.arccos(np.clip(sim, 0.0, 1.0)) * 4 / math.pi


@dataclass(frozen=True)
class VerificationResult:
    """Result of the 10-fold protocol: ``accuracy`` (mean of ``fold_accuracies``, a fraction),
    ``std`` (their population standard deviation) and the ``thresholds`` each fold used."""

    accuracy: float
    std: float
    fold_accuracies: list[float]
    thresholds: list[float]

    def __str__(self) -> str:
        return f"{100 * self.accuracy:.2f} +- {100 * self.std:.2f} %"


def _accuracy(dist: np.ndarray, same: np.ndarray, threshold: float) -> float:
    return float(np.mean((dist < threshold) == same))


def verification_accuracy(a, b, same: Sequence[bool], folds: Sequence[Sequence[int]] | int = 10,
                          thresholds: np.ndarray = THRESHOLDS) -> VerificationResult:
    """k-fold verification accuracy of embedding pairs ``(a[i], b[i])`` with labels ``same[i]``.

    Args:
        a, b: embeddings, ``(N, D)`` tensors or arrays.
        same: ``N`` booleans (True: the same person).
        folds: the folds' index lists (e.g. :meth:`PairsFile.folds`), or a number k of contiguous
            folds (``KFold(k, shuffle=False)``: the first ``N % k`` folds one pair larger).
        thresholds: distance thresholds tried (default :data:`THRESHOLDS`).

    Returns:
        :class:`VerificationResult`.

    Raises:
        ValueError: shapes or counts do not match, fewer than 2 folds, or a fold is empty.
    """
    dist = pair_distances(a, b)
    same = np.asarray(same, dtype=bool)
    if same.shape != dist.shape:
        raise ValueError(f"{len(same)} labels for {len(dist)} pairs")
    if isinstance(folds, int):
        if folds < 2 or folds > len(dist):
            raise ValueError(f"need 2 <= folds <= pairs, got {folds} folds for {len(dist)} pairs")
        folds = [list(r) for r in np.array_split(np.arange(len(dist)), folds)]
    folds = [np.asarray(list(f), dtype=np.int64) for f in folds]
    if len(folds) < 2 or any(len(f) == 0 for f in folds):
        raise ValueError("need at least 2 non-empty folds")
    accs, used = [], []
    for i, test in enumerate(folds):
        train = np.concatenate([f for j, f in enumerate(folds) if j != i])
        train_acc = [_accuracy(dist[train], same[train], t) for t in thresholds]
        best = float(thresholds[int(np.argmax(train_acc))])
        used.append(best)
        accs.append(_accuracy(dist[test], same[test], best))
    return VerificationResult(float(np.mean(accs)), float(np.std(accs)), accs, used)


@torch.no_grad()
def evaluate_pairs(model: torch.nn.Module, task, batch_size: int = 256, device: str | torch.device = "cpu"
                   ) -> VerificationResult:
    """The verification protocol for ``task.pairs`` (a :class:`~unforget.data.task.PairSet`):
    each image goes through ``task.transform`` (evaluation) and ``model.embed(x, task.id)``
    (evaluation mode, no gradient), then :func:`verification_accuracy` over the pairs' folds."""
    pairs = task.pairs
    was = model.training
    model.eval()
    try:
        def embed(images: torch.Tensor) -> torch.Tensor:
            out = [model.embed(task.transform(images[i:i + batch_size]).to(device), task.id).float().cpu()
                   for i in range(0, len(images), batch_size)]
            return torch.cat(out) if out else torch.zeros(0)

        return verification_accuracy(embed(pairs.first), embed(pairs.second), pairs.same.tolist(), pairs.folds)
    finally:
        model.train(was)
