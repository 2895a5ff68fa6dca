"""Progress of a run as a person follows it: ``tqdm`` bars on a terminal, plain lines (one per
epoch, flushed) when the output is piped or written to a file, so that logs hold no
carriage-return frames. Every line starts with the task ("task 3/5 cat-dog: compact 0.30 1/1")
and carries an ETA for the fit, the task and the run once they can be estimated."""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO

from tqdm.auto import tqdm


def duration(seconds: float) -> str:
    """``seconds`` as a short human duration: ``"45 s"``, ``"12 min"``, ``"1 h 05 min"``."""
    s = max(0.0, float(seconds))
    if s < 90:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


class Display:
    """Where the training loop reports progress.

    Args:
        enabled: ``False`` prints nothing (``--quiet``).
        stream: where lines and bars go (default ``sys.stderr``).
        tty: whether ``stream`` is a terminal (default: ``stream.isatty()``): bars that redraw
            themselves on a terminal, plain lines at the end of every epoch otherwise.

    Attributes:
        label: what is being learned, e.g. ``"task 3/5 cat-dog"`` (set by the run's observer).
        eta: returns the task's and the run's ETA text given the seconds left in the current fit
            (set by the run's observer), e.g. ``"task ETA 40 s, run ETA 3 min"``.
    """

    def __init__(self, enabled: bool = True, stream: Optional[TextIO] = None, tty: Optional[bool] = None) -> None:
        self.enabled = enabled
        self._stream = stream
        self._tty = tty
        self.label = ""
        self.eta: Optional[Callable[[float], str]] = None

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    @property
    def tty(self) -> bool:
        if self._tty is not None:
            return self._tty
        try:
            return bool(self.stream.isatty())
        except (AttributeError, ValueError):
            return False

    def prefix(self, desc: str) -> str:
        return f"{self.label}: {desc}" if self.label else desc

    def bar(self, n: int, desc: str):
        """An iterable over ``range(n)``: a ``tqdm`` bar on a terminal, plain otherwise."""
        return tqdm(range(n), desc=self.prefix(desc), leave=False, disable=not (self.enabled and self.tty),
                    dynamic_ncols=True, file=self.stream)

    def etas(self, fit_left_s: float) -> str:
        """``"fit ETA ..."`` plus the observer's task and run ETA."""
        parts = [f"fit ETA {duration(fit_left_s)}"]
        if self.eta is not None:
            extra = self.eta(fit_left_s)
            if extra:
                parts.append(extra)
        return ", ".join(parts)

    def epoch_done(self, desc: str, stats: dict, val: Optional[float], seconds: float, fit_left_s: float) -> None:
        """One plain line per finished epoch when not on a terminal (bars show it there)."""
        if not self.enabled or self.tty:
            return
        val_text = f", val {100 * val:.1f} %" if val is not None else ""
        self.write(f"{self.prefix(desc)}: loss {stats['loss']:.3f}, train {100 * stats['train_accuracy']:.1f} %"
                   f"{val_text} ({duration(seconds)}; {self.etas(fit_left_s)})")

    def write(self, text: str) -> None:
        """Print one line (above the bars on a terminal)."""
        if not self.enabled:
            return
        if self.tty:
            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)


class TaskClock:
    """Times the tasks of a run to estimate the task's and the run's ETA: the mean time of the
    tasks finished in this session, times the tasks left (the current one counted by what is
    left of it, at least what is left of the current fit)."""

    def __init__(self, total_tasks: Optional[int]) -> None:
        self.total = total_tasks
        self.finished: list[float] = []
        self.task_id = 0
        self._start = time.perf_counter()

    def start(self, task_id: int) -> None:
        self.task_id = task_id
        self._start = time.perf_counter()

    def stop(self) -> float:
        took = time.perf_counter() - self._start
        self.finished.append(took)
        return took

    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def task_left(self, fit_left_s: float) -> Optional[float]:
        if not self.finished:
            return None
        return max(fit_left_s, sum(self.finished) / len(self.finished) - self.elapsed())

    def run_left(self, fit_left_s: float) -> Optional[float]:
        task_left = self.task_left(fit_left_s)
        if task_left is None or self.total is None:
            return None
        later = max(0, self.total - self.task_id)
        return task_left + later * sum(self.finished) / len(self.finished)

    def text(self, fit_left_s: float) -> str:
        """``"task ETA 40 s, run ETA 3 min"`` once a task has finished, else ``""``."""
        task_left, run_left = self.task_left(fit_left_s), self.run_left(fit_left_s)
        parts = []
        if task_left is not None:
            parts.append(f"task ETA {duration(task_left)}")
        if run_left is not None:
            parts.append(f"run ETA {duration(run_left)}")
        return ", ".join(parts)
