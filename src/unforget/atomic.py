"""Atomic file writes: the bytes go to a temporary file beside the target, which then replaces
the target in one ``os.replace``; a reader sees the old file or the new one, never a part."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from unforget.errors import DiskFullError, is_disk_full

TMP_SUFFIX = ".tmp"


def temp_path(path: str | Path) -> Path:
    """The temporary file :func:`write_atomic` uses for ``path`` (``path`` + ``.tmp``)."""
    path = Path(path)
    return path.with_name(path.name + TMP_SUFFIX)


@contextmanager
def disk_full_is_one_line(path: str | Path) -> Iterator[None]:
    """Around an atomic write of ``path``: a full disk becomes :class:`DiskFullError` (one line
    saying where, and that the previous version of the file is intact), and the partial
    temporary file is removed to give the space back."""
    path = Path(path)
    try:
        yield
    except Exception as e:
        if not is_disk_full(e):
            raise
        temp_path(path).unlink(missing_ok=True)
        raise DiskFullError(f"no space left on the disk holding {path.parent}: {path.name} was not written (its "
                            "previous version, if any, is intact); free space, then run the command again (a run "
                            "continues from its last finished task with --resume)") from None


def as_user_file(path: str | Path) -> Path:
    """Give ``path`` the mode an ordinary new file gets (``0o666`` less the process umask), as
    ``open`` would; for files written by libraries that create them private (``0o600``: the
    safetensors writer), so colleagues who may read the folder may read them too."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
    return Path(path)


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically; returns ``path``.

    Raises:
        DiskFullError: the disk is full (``path`` keeps its previous content).
    """
    path = Path(path)
    tmp = temp_path(path)
    with disk_full_is_one_line(path):
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    return path


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files a killed writer left in ``folder`` (``*.tmp``); returns them.
    Call it only while holding the folder's lock, when no other writer can be mid-write."""
    stale = sorted(Path(folder).glob("*" + TMP_SUFFIX))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
