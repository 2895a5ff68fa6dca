"""Per-epoch training logs: one record per epoch of every fit, written as CSV (always, in a run
folder) and as TensorBoard scalars (``--log tensorboard``, when the ``tensorboard`` package is
installed), in the spirit of avalanche's ``CSVLogger`` / ``TensorboardLogger`` (loggers observe
the loop; the loop does not know what they write).

A record (:class:`EpochRecord`) holds the task, the phase of the method's work, the epoch, the
mean training loss and accuracy of the epoch, the validation accuracy after it, the learning rate
of the first optimizer, the task's pruning ratio where the phase prunes, and the seconds the
epoch took.
"""
from __future__ import annotations

import csv
import io
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional

from unforget.errors import ConfigError

PHASES = ("train", "grow", "compact", "fine-tune", "goal-reference")
"""Phases of a task's work, in the order CPG goes through them: ``train`` (the task's first
training), ``grow`` (training again after the network grew), ``compact`` (a pruning step of
gradual pruning, or PackNet's one-shot pruning and retraining), ``fine-tune`` (retraining after
compacting, CLNP's fine-tuning), ``goal-reference`` (a model trained only to set the accuracy
goal)."""

_PREFIXES = (("goal", "goal-reference"), ("finetune ref", "goal-reference"), ("grow", "grow"),
             ("compact", "compact"), ("prune", "compact"), ("retrain", "fine-tune"), ("finetune", "fine-tune"),
             ("fine-tune", "fine-tune"))


def phase_of(desc: str) -> str:
    """The phase (one of :data:`PHASES`) of a fit described by ``desc`` (the label the methods
    give :meth:`~unforget.training.Trainer.fit`, e.g. ``"compact 0.30"``, ``"retrain 2/5"``,
    ``"goal (scratch)"``); anything else is ``train``."""
    d = desc.strip().lower()
    for prefix, phase in _PREFIXES:
        if d.startswith(prefix):
            return phase
    return "train"


@dataclass
class EpochRecord:
    """One epoch of one fit. Accuracies are fractions in [0, 1]; ``lr`` is the first optimizer's
    first parameter group's learning rate during the epoch; ``pruning_ratio`` is the share of the
    task's weights released so far (compacting phases only, else ``None``); ``seconds`` is the
    wall time of the epoch's training (without the validation pass)."""

    method: str
    task: int
    task_name: str
    phase: str
    desc: str
    epoch: int
    epochs: int
    loss: float
    train_accuracy: float
    val_accuracy: Optional[float]
    lr: Optional[float]
    pruning_ratio: Optional[float]
    seconds: float
    time: str = ""

    def __post_init__(self) -> None:
        if not self.time:
            self.time = time.strftime("%Y-%m-%dT%H:%M:%S")


COLUMNS = [f.name for f in fields(EpochRecord)]
"""The CSV columns, in order."""


class EpochLogger:
    """Receives every :class:`EpochRecord`; override :meth:`log` (and :meth:`close`)."""

    def log(self, record: EpochRecord) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release files."""

    def forget_after(self, n_tasks: int) -> None:
        """Drop what was logged for tasks after ``n_tasks``: epochs of an attempt that did not
        finish (a killed run about to resume, a killed ``learn`` about to be repeated), which
        the next attempt logs again. Loggers that cannot take rows back keep them."""


class CSVLog(EpochLogger):
    """Appends one row per epoch to ``path`` (``log.csv`` in a run folder; a header when the file
    is new). Each row is flushed at once, so the file can be followed while the run goes on
    (``tail -f``) and a killed run keeps every finished epoch; a resumed run appends."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.is_file() or self.path.stat().st_size == 0
        self._f = open(self.path, "a", newline="", encoding="utf-8")
        self._w = csv.DictWriter(self._f, fieldnames=COLUMNS)
        if new:
            self._w.writeheader()
            self._f.flush()

    def log(self, record: EpochRecord) -> None:
        row = {k: (f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v)) for k, v in asdict(record).items()}
        self._w.writerow(row)
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def forget_after(self, n_tasks: int) -> None:
        """Rewrite the file (atomically) without the rows of tasks after ``n_tasks``, so that
        a resumed run's log holds the rows an uninterrupted run's does."""
        from unforget.atomic import write_atomic

        self._f.flush()
        with open(self.path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        kept = [r for r in rows if not (r.get("task") or "").isdigit() or int(r["task"]) <= n_tasks]
        if len(kept) == len(rows):
            return
        self._f.close()
        text = io.StringIO(newline="")
        w = csv.DictWriter(text, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows({k: r.get(k, "") for k in COLUMNS} for r in kept)
        write_atomic(self.path, text.getvalue())
        self._f = open(self.path, "a", newline="", encoding="utf-8")
        self._w = csv.DictWriter(self._f, fieldnames=COLUMNS)


class TensorBoardLog(EpochLogger):
    """TensorBoard event files in ``folder`` (``torch.utils.tensorboard.SummaryWriter``): scalars
    ``task{t}/{phase}/loss``, ``.../train_accuracy``, ``.../val_accuracy``, ``.../lr`` and
    ``.../pruning_ratio`` over the task's epochs (counted across its phases), so that
    ``tensorboard --logdir OUT/tensorboard`` shows each task's training, growing and compacting.

    Raises:
        ConfigError: the ``tensorboard`` package is not installed (``pip install 'unforget[tensorboard]'``).
    """

    def __init__(self, folder: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--log tensorboard needs the tensorboard package: pip install "
                              "'unforget[tensorboard]' (or pip install tensorboard)") from None
        self.writer = SummaryWriter(log_dir=str(folder))
        self._step: dict[int, int] = {}

    def log(self, record: EpochRecord) -> None:
        step = self._step[record.task] = self._step.get(record.task, 0) + 1
        base = f"task{record.task}/{record.phase}"
        for key in ("loss", "train_accuracy", "val_accuracy", "lr", "pruning_ratio"):
            v = getattr(record, key)
            if v is not None:
                self.writer.add_scalar(f"{base}/{key}", v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


LOG_KINDS = ("csv", "tensorboard")


def run_loggers(out: Path, kinds: tuple[str, ...] = ("csv",)) -> list[EpochLogger]:
    """The loggers of a run folder: ``csv`` writes ``out/log.csv``, ``tensorboard`` event files
    in ``out/tensorboard/``.

    Raises:
        ConfigError: an unknown kind, or ``tensorboard`` without the package.
    """
    bad = [k for k in kinds if k not in LOG_KINDS]
    if bad:
        raise ConfigError(f"unknown log kind(s) {', '.join(bad)}; choose from {', '.join(LOG_KINDS)}")
    out = Path(out)
    loggers: list[EpochLogger] = []
    if "tensorboard" in kinds:
        loggers.append(TensorBoardLog(out / "tensorboard"))
    if "csv" in kinds:
        loggers.append(CSVLog(out / "log.csv"))
    return loggers
