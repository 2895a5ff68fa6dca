"""Per-task normalisation: user mean / std checks, statistics of a training split, the task transforms."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from unforget.data.transforms import ImageTransform, Stats
from unforget.errors import DataError


def _stats_values(v: Optional[Stats], n: int, what: str, unit: str) -> Optional[tuple[float, ...]]:
    if v is None:
        return None
    t = torch.as_tensor(v, dtype=torch.float64).reshape(-1)
    if t.numel() not in (1, n):
        raise DataError(f"{what} has {t.numel()} values but the inputs have {n} {unit}; give 1 or {n} values")
    if not bool(torch.isfinite(t).all()):
        raise DataError(f"{what} must hold finite numbers, got {list(t.tolist())}")
    return tuple(float(a) for a in t)


def _user_stats(mean, std, n: int, unit: str):
    if (mean is None) != (std is None):
        raise DataError("give both mean and std, or neither (they are then computed from each task's training split)")
    m = _stats_values(mean, n, "mean", unit)
    s = _stats_values(std, n, "std", unit)
    if s is not None and min(s) <= 0:
        raise DataError(f"every std must be > 0, got {list(s)}")
    return m, s


class VectorTransform:
    """The transform of a vector task: inputs ``(N, D)`` to ``float32`` ``(x - mean) / std``.

    Called as ``transform(x, train=False, generator=None)`` like
    :class:`~unforget.data.transforms.ImageTransform` (no augmentation: ``train`` and
    ``generator`` are accepted and ignored). ``mean`` / ``std`` hold one value or ``D`` values
    (``None``: no normalisation). A plain, picklable class.

    Raises:
        ValueError: (when called) ``x`` is not 2-D.
    """

    def __init__(self, mean: Optional[Stats] = None, std: Optional[Stats] = None) -> None:
        if (mean is None) != (std is None):
            raise ValueError("VectorTransform: give both mean and std, or neither")
        self.mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1).clone()
        self.std = None if std is None else torch.as_tensor(std, dtype=torch.float32).reshape(1, -1).clone()

    def __call__(self, x: torch.Tensor, train: bool = False,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"VectorTransform: expected a batch of vectors (N, D), got shape {tuple(x.shape)}")
        x = x.float()
        if self.mean is not None:
            x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        return x.contiguous()

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of one output for one input of shape ``input_shape`` ``(D,)``."""
        return tuple(int(s) for s in input_shape)

    def __repr__(self) -> str:
        return f"VectorTransform(normalise={self.mean is not None})"


def _moments(x: torch.Tensor, dims: tuple[int, ...], scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (population) std of ``x * scale`` over ``dims``, float64, in memory-capped chunks."""
    per_row = max(1, x[0].numel()) if x.shape[0] else 1
    step = max(1, (1 << 22) // per_row)
    s = s2 = None
    for i in range(0, x.shape[0], step):
        b = x[i:i + step].to(torch.float64) * scale
        bs, bs2 = b.sum(dims), (b * b).sum(dims)
        s, s2 = (bs, bs2) if s is None else (s + bs, s2 + bs2)
    count = x.numel() / s.numel()
    mean = s / count
    std = (s2 / count - mean * mean).clamp_min(0).sqrt()
    return mean, torch.where(std > 1e-6, std, torch.ones_like(std))


def _image_transform(train_x: torch.Tensor, mean, std, augment: bool, size: tuple[int, int]) -> ImageTransform:
    if mean is None:
        m, s = _moments(train_x, (0, 2, 3), 1 / 255 if train_x.dtype == torch.uint8 else 1.0)
        mean, std = tuple(m.tolist()), tuple(s.tolist())
    pad = max(1, round(min(size) / 8)) if augment else 0
    return ImageTransform(mean, std, crop_padding=pad, hflip=bool(augment))


def _vector_transform(train_x: torch.Tensor, mean, std) -> VectorTransform:
    if mean is None:
        m, s = _moments(train_x, (0,), 1.0)
        mean, std = m.tolist(), s.tolist()
    return VectorTransform(mean, std)
