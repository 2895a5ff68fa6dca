"""Where a run's time goes: seconds per phase, each second counted in exactly one phase.

A :class:`PhaseClock` is entered and left as the run moves between phases (``with
clock.phase("evaluation"): ...``). Phases nest: a phase entered inside another pauses the outer
one, so the validation pass inside a compaction fit counts as ``evaluation`` and not also as
``compaction``, and the phases of a run add up to its wall time (``results.json``'s
``phase_seconds``; report.md, "Where the time went").
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

PHASES = ("data_loading", "setup", "training", "compaction", "goal_references", "evaluation",
          "size_accounting", "checkpoint_writing")
"""The phases, in the order a run meets them: ``data_loading`` (reading and splitting the
benchmark), ``setup`` (building the method and its networks, or opening a checkpoint),
``training`` (a task's training and growth, and whatever a method does outside the other
phases), ``compaction`` (pruning steps and retraining after them: CPG's compacting, PackNet's
pruning, CLNP's pruning and fine-tuning), ``goal_references`` (models trained only to set an
accuracy goal), ``evaluation`` (validation and test passes, certificates of earlier tasks),
``size_accounting`` (model size and capacity), ``checkpoint_writing`` (checkpoint,
``results.json`` and report.md)."""

FIT_PHASES = {"train": "training", "grow": "training", "compact": "compaction", "fine-tune": "compaction",
              "goal-reference": "goal_references"}
"""The phase of a training fit, by its log phase (:data:`unforget.training.epochlog.PHASES`)."""


class PhaseClock:
    """Exclusive seconds per phase (:data:`PHASES`), measured with ``time.perf_counter``.

    Attributes:
        seconds: seconds per phase name since the clock was made (or last :meth:`take`).
        work: training done per phase since the clock was made (or last :meth:`take_work`):
            ``{phase: {"epochs": int, "images": int}}``, counted by :meth:`count_epoch` (the
            trainer calls it once per epoch of every fit, of every network: the served one and
            the goal references alike) — the budget that "equal budget" comparisons read.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.work: dict[str, dict[str, int]] = {}
        self._stack: list[list] = []  # [name, start of its current stretch]
        self._born = time.perf_counter()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Count the time inside the block as ``name``; the phase around it (if any) pauses.

        Raises:
            ValueError: ``name`` is not one of :data:`PHASES`.
        """
        if name not in PHASES:
            raise ValueError(f"unknown phase '{name}'; phases: {', '.join(PHASES)}")
        now = time.perf_counter()
        if self._stack:
            outer = self._stack[-1]
            self._add(outer[0], now - outer[1])
        self._stack.append([name, now])
        try:
            yield
        finally:
            now = time.perf_counter()
            inner, start = self._stack.pop()
            self._add(inner, now - start)
            if self._stack:
                self._stack[-1][1] = now

    def _add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def count_epoch(self, phase: str, images: int) -> None:
        """Count one training epoch of ``phase`` (one of :data:`PHASES`) that passed ``images``
        training images (all processes together) through a network.

        Raises:
            ValueError: ``phase`` is not one of :data:`PHASES`.
        """
        if phase not in PHASES:
            raise ValueError(f"unknown phase '{phase}'; phases: {', '.join(PHASES)}")
        done = self.work.setdefault(phase, {"epochs": 0, "images": 0})
        done["epochs"] += 1
        done["images"] += int(images)

    def take_work(self) -> dict[str, dict[str, int]]:
        """:attr:`work` since the last call, in :data:`PHASES` order, and start counting afresh."""
        out = {p: dict(self.work[p]) for p in PHASES if p in self.work}
        self.work = {}
        return out

    def take(self) -> dict[str, float]:
        """The seconds per phase counted since the last call (or since the clock was made), in
        :data:`PHASES` order, and start counting afresh; an open phase counts up to now."""
        now = time.perf_counter()
        if self._stack:
            top = self._stack[-1]
            self._add(top[0], now - top[1])
            top[1] = now
        out = {p: self.seconds[p] for p in PHASES if p in self.seconds}
        self.seconds = {}
        return out

    def elapsed(self) -> float:
        """Seconds since the clock was made."""
        return time.perf_counter() - self._born


def add_seconds(total: dict[str, float], more: dict[str, float]) -> dict[str, float]:
    """``total`` plus ``more``, phase by phase, in :data:`PHASES` order (a new dict)."""
    keys = set(total) | set(more)
    return {p: total.get(p, 0.0) + more.get(p, 0.0) for p in PHASES if p in keys}
