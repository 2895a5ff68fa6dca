"""Checks of the options shared by the own-data benchmarks (seed, splits, image size, choices)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from unforget.data.benchmarks import BuildOptions
from unforget.errors import DataError

ImageSize = Union[int, Sequence[int]]


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _options(data_root: Optional[Path], seed, val_fraction, max_train_per_class) -> BuildOptions:
    if not _is_int(seed):
        raise DataError(f"seed must be an integer, got {seed!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be a number strictly between 0 and 1, got {val_fraction!r}")
    if max_train_per_class is not None and (not _is_int(max_train_per_class) or max_train_per_class < 2):
        raise DataError(f"max_train_per_class must be an integer >= 2 (one training and one validation image), "
                        f"got {max_train_per_class!r}")
    return BuildOptions(data_root=data_root if data_root is not None else Path("."), seed=int(seed),
                        val_fraction=float(val_fraction),
                        max_train_per_class=None if max_train_per_class is None else int(max_train_per_class))


def _image_size(image_size: Optional[ImageSize]) -> Optional[tuple[int, int]]:
    if image_size is None:
        return None
    if _is_int(image_size):
        size = (image_size, image_size)
    else:
        size = tuple(image_size) if hasattr(image_size, "__len__") and not isinstance(image_size, str) else ()
    if len(size) != 2 or not all(_is_int(s) and s >= 1 for s in size):
        raise DataError(f"image_size must be (height, width) with positive integers (or one integer), "
                        f"got {image_size!r}")
    return int(size[0]), int(size[1])


def _check_choice(value, allowed: Sequence, what: str):
    if value not in allowed:
        raise DataError(f"{what} must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")
    return value
