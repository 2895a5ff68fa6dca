"""Atomic file writes: the bytes go to a temporary file beside the target, which then replaces
the target in one ``os.replace``; a reader sees the old file or the new one, never a part."""
from __future__ import annotations

import os
from pathlib import Path

TMP_SUFFIX = ".tmp"


def temp_path(path: str | Path) -> Path:
    """The temporary file :func:`write_atomic` uses for ``path`` (``path`` + ``.tmp``)."""
    path = Path(path)
    return path.with_name(path.name + TMP_SUFFIX)


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically; returns ``path``."""
    path = Path(path)
    tmp = temp_path(path)
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
