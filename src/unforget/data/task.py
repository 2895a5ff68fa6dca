"""Tasks and benchmarks (task sequences): the data objects every method consumes.

Words follow ``design.md``: a *task* has a 1-based id, a name, its class names and its own
train / validation / test splits; a *benchmark* is an ordered list of tasks. Images are kept in
memory as compact tensors (``uint8`` for images) and turned into float batches by the task's
:class:`~unforget.data.transforms.Transform`, so that augmentation runs as batched tensor ops.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch


def feed_tensor(h, name: str, t: torch.Tensor) -> None:
    """Feed ``name``, the dtype, the shape and the raw bytes of ``t`` into the hash ``h``
    (``hashlib``), so that two tensors feed the same bytes only when they are equal bit for bit."""
    t = t.detach().to("cpu").contiguous()
    h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


@dataclass
class Split:
    """One split of a task.

    Attributes:
        x: inputs, shape ``(N, C, H, W)`` (images, usually ``uint8``) or ``(N, D)`` (vectors).
        y: task-local labels, ``int64``, shape ``(N,)``, values in ``[0, n_classes)``.
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"Split has {self.x.shape[0]} inputs but {self.y.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class Task:
    """One classification task of a task-incremental sequence.

    Attributes:
        id: 1-based task id (the id given at test time).
        name: readable name, e.g. ``"cifar10-t1 (airplane, automobile)"``.
        classes: class names; ``len(classes)`` is the head size.
        train, val, test: the splits. ``val`` is held out from the training data and drives every
            accuracy-goal decision; ``test`` is only ever used for reporting.
        transform: maps a batch of raw inputs to float model inputs; called as
            ``transform(x, train=bool, generator=torch.Generator | None)``; with ``train=True`` it
            may augment (random crop, flip).
        input_shape: shape of one model input after ``transform`` (e.g. ``(3, 32, 32)``).
    """

    id: int
    name: str
    classes: list[str]
    train: Split
    val: Split
    test: Split
    transform: Callable[..., torch.Tensor]
    input_shape: tuple[int, ...]
    head: str = "linear"
    """Kind of the task's classifier head: ``linear`` or ``a-softmax`` (SphereFace's angular
    margin, :mod:`unforget.models.heads`; engine methods)."""
    pairs: Optional["PairSet"] = None
    """Verification pairs: when given, the task's test accuracy is the face-verification
    protocol over them (:mod:`unforget.evaluation.verification`), not classification."""

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def data_digest(self) -> str:
        """SHA-256 (hex) of the task's data: inputs and labels of its train, validation and
        test splits, bit for bit. Two reads of the same files give the same digest."""
        h = hashlib.sha256()
        for split in ("train", "val", "test"):
            data = getattr(self, split)
            feed_tensor(h, f"{split}.x", data.x)
            feed_tensor(h, f"{split}.y", data.y)
        return h.hexdigest()


@dataclass
class PairSet:
    """Image pairs for verification (LFW's View 2): ``first`` / ``second`` raw images (e.g.
    ``uint8`` ``(P, C, H, W)``, through the task's transform), ``same`` ``bool`` ``(P,)`` and the
    index lists of the folds (``pairs.txt``'s sets)."""

    first: torch.Tensor
    second: torch.Tensor
    same: torch.Tensor
    folds: list

    def __len__(self) -> int:
        return int(self.same.shape[0])


@dataclass
class PretrainedTask(Task):
    """Task 1 given as a pretrained network rather than learned from data (Hung et al. 2019,
    Sec. 4.2-4.3): an engine method loads ``weights`` (backbone and head) instead of training.
    Its splits may be empty; with an empty test split its accuracy is ``given_accuracy`` (recorded
    and reported as given, never measured).

    Attributes:
        weights: the weight file (or ``"torchvision"``), see :mod:`unforget.models.pretrained`.
        given_accuracy: the published accuracy, or ``None``.
        goal: accuracy goal when compacting it (needs training and validation data).
        compact: compact it to ``goal`` (True) or keep it whole (Piggyback's protocol).
    """

    weights: str = ""
    given_accuracy: Optional[float] = None
    goal: Optional[float] = None
    compact: bool = False

    @property
    def accuracy_given(self) -> bool:
        """True when the test accuracy is the given one (no test data, no verification pairs)."""
        return len(self.test) == 0 and self.pairs is None


@dataclass
class Benchmark:
    """An ordered task sequence (tasks ``1..K``) plus how it was built.

    Attributes:
        name: registry name, e.g. ``"split-cifar10"``.
        tasks: the tasks in learning order; ``tasks[i].id == i + 1``.
        input_shape: shape of one model input (same for every task of the sequence).
        info: builder options that define the sequence (seed, class order, ...), for results.json.
    """

    name: str
    tasks: list[Task]
    input_shape: tuple[int, ...]
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tasks)

    def task(self, task_id: int) -> Task:
        """Return the task with 1-based id ``task_id`` (raises ``KeyError`` when absent)."""
        if not 1 <= task_id <= len(self.tasks):
            raise KeyError(f"task id {task_id} not in 1..{len(self.tasks)}")
        return self.tasks[task_id - 1]


@dataclass(frozen=True)
class SequencePlan:
    """What a method may know of a task sequence before learning it.

    Attributes:
        input_shape: shape of one model input, e.g. ``(3, 32, 32)``.
        n_tasks: how many tasks are planned, or ``None`` when unknown (a deployed model that
            learns tasks as they come); CPG's reserve for later tasks is sized from it.
        name: the benchmark's name, for results.
        info: the benchmark's options, for results.
    """

    input_shape: tuple[int, ...]
    n_tasks: Optional[int] = None
    name: str = ""
    info: dict = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def of(cls, source: "SequencePlan | Benchmark") -> "SequencePlan":
        """The plan of a benchmark (its input shape, task count, name and options), or ``source``."""
        if isinstance(source, SequencePlan):
            return source
        return cls(tuple(source.input_shape), len(source.tasks) or None, source.name, dict(source.info))
