"""Run folders are precious (design.md): one writer per folder (an OS lock on ``OUT/.lock``), a
new run never overwrites a finished one by accident, and the folder is checked before training."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from unforget.atomic import remove_stale_temps
from unforget.checkpoint import CHECKPOINT
from unforget.errors import RunFolderError

LOCK = ".lock"
RUN_FILES = (CHECKPOINT, "results.json", "report.md")
"""The files a run writes into its folder; ``overwrite`` removes exactly these."""


def holds_run(folder: str | Path) -> bool:
    """Whether ``folder`` holds a run (a ``results.json`` or a checkpoint)."""
    folder = Path(folder)
    return (folder / "results.json").is_file() or (folder / CHECKPOINT).is_file()


def check_writable(folder: str | Path) -> Path:
    """Create ``folder`` if needed and check that files can be written in it; returns it.

    Raises:
        RunFolderError: it is a file, or it cannot be created or written.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"output folder {folder} is a file; choose another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise RunFolderError(f"output folder {folder} cannot be written ({e.strerror or type(e).__name__}); "
                             "choose another --out") from None
    return folder


@contextlib.contextmanager
def locked(folder: str | Path) -> Iterator[Path]:
    """Hold the OS lock ``folder/.lock`` (checked writable first) for the ``with`` block; the OS
    releases it when the process ends, even when killed.

    Raises:
        RunFolderError: the folder is unusable, or another process holds its lock.
    """
    folder = check_writable(folder)
    lock = FileLock(str(folder / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunFolderError(f"another unforget process is writing to {folder} (it holds {folder / LOCK}); "
                             "wait for it to end or choose another --out") from None
    try:
        yield folder
    finally:
        lock.release()


@contextlib.contextmanager
def run_folder(folder: str | Path, resume: bool = False, overwrite: bool = False) -> Iterator[Path]:
    """Open ``folder`` for one run, before any training: lock it (:func:`locked`), delete the
    temporary files of a killed writer, and refuse to start a new run over an existing one
    unless ``overwrite`` (which deletes :data:`RUN_FILES` first) or ``resume``. Unless ``resume``,
    the training log of an earlier attempt (``log.csv``, ``tensorboard/``) is deleted.

    Raises:
        RunFolderError: unusable or locked folder, or a run already there (neither flag).
    """
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite exclude each other: resume continues the run in "
                             f"{folder}, overwrite starts it over")
    created = not Path(folder).exists()
    try:
        with locked(folder) as out:
            remove_stale_temps(out)
            if not resume and holds_run(out):
                if not overwrite:
                    raise RunFolderError(f"{out} already holds a run; continue it with --resume or start over with "
                                         "--overwrite (deletes its results and checkpoint)")
                for name in RUN_FILES:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(out / name)
            if not resume:  # a new run's training log starts empty (a killed first task's lines go too)
                with contextlib.suppress(FileNotFoundError):
                    os.remove(out / "log.csv")
                shutil.rmtree(out / "tensorboard", ignore_errors=True)
            yield out
    except BaseException:
        if not resume:
            leave_no_trace(Path(folder), created)
        raise


def leave_no_trace(folder: Path, created: bool) -> None:
    """After a new run failed before it finished a task (no checkpoint, no results): remove what
    it wrote (``log.csv``, ``tensorboard/``, the lock file) and the folder itself when the run
    created it and it is now empty, so a failed first attempt leaves nothing to trip over."""
    if not folder.is_dir() or holds_run(folder):
        return
    for name in ("log.csv", LOCK):
        with contextlib.suppress(FileNotFoundError):
            os.remove(folder / name)
    shutil.rmtree(folder / "tensorboard", ignore_errors=True)
    if created:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty
