"""Where a fit's mini-batches are made: on the device the model computes on, or on the host.

Issue 23, item 2 (a data path that feeds a GPU). When a task's training tensors fit on the
device (``train.data_on_device``), they are moved there once per fit, and the batch order and
the augmentations (:mod:`unforget.data.transforms`: crop, flip, cutout, random-resized crop,
normalisation) run as batched device ops drawing from a generator on that device, seeded as the
host generator is, so a run stays reproducible for a given seed and device. Otherwise batches are
gathered and augmented on the host and copied through pinned memory without blocking (CUDA).

On the CPU both paths are the same computation: a CPU run gives the same values bit for bit
whatever the setting (tested).
"""
from __future__ import annotations

from typing import Optional

import torch

from unforget.data.task import Split

DEVICE_SHARE = 0.25
"""``auto`` moves a task's training split to the device when it takes at most this share of the
device's free memory (the rest is the model's, its optimizer's and the activations')."""


def free_bytes(device: torch.device) -> Optional[int]:
    """Free memory of ``device`` in bytes (``torch.cuda.mem_get_info``), or ``None`` where it is
    not known (CPU, MPS)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return None


def on_device(split: Split, setting: str, device: torch.device, free: Optional[int] = None) -> bool:
    """Whether a fit keeps ``split`` on ``device`` (``train.data_on_device``):

    * ``"true"``: always; ``"false"``: never (batches are made on the host);
    * ``"auto"``: on the CPU yes (host and device are one), on another device when the split's
      bytes are at most :data:`DEVICE_SHARE` of ``free`` (default: :func:`free_bytes`; unknown
      free memory counts as not fitting).

    Raises:
        ValueError: an unknown ``setting``.
    """
    if setting not in ("auto", "true", "false"):
        raise ValueError(f"train.data_on_device must be auto, true or false, got {setting!r}")
    if setting != "auto" or device.type == "cpu":
        return setting != "false"
    free = free_bytes(device) if free is None else free
    size = split.x.numel() * split.x.element_size() + split.y.numel() * split.y.element_size()
    return free is not None and size <= DEVICE_SHARE * free


class BatchFeed:
    """The training batches of one fit: ``feed.order(generator)`` gives an epoch's index order,
    ``feed.batch(idx, transform, generator)`` the augmented ``(x, y)`` of those indices on
    ``device``.

    Args:
        split: the task's training split (``x`` ``(N, ...)`` raw inputs, ``y`` int64 ``(N,)``).
        device: where the model computes.
        resident: keep the split on ``device`` (moved once, here) and make batches there; else
            gather and augment on the host and copy each batch (pinned, non-blocking on CUDA).
        seed: seed of the fit's generator (on ``device`` when ``resident``, else on the host).
    """

    def __init__(self, split: Split, device: torch.device, resident: bool, seed: int) -> None:
        self.device = device
        self.resident = resident
        where = device if resident else torch.device("cpu")
        self.x = split.x.to(where)
        self.y = split.y.to(where)
        self.generator = torch.Generator(device=where).manual_seed(seed)
        self.pin = not resident and device.type == "cuda"

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def order(self) -> torch.Tensor:
        """A random permutation of ``0..N-1`` (int64, where the batches are made)."""
        return torch.randperm(len(self), generator=self.generator, device=self.generator.device)

    def batch(self, idx: torch.Tensor, transform) -> tuple[torch.Tensor, torch.Tensor]:
        """``(transform(x[idx], train=True), y[idx])`` on the device."""
        x = transform(self.x[idx], train=True, generator=self.generator)
        y = self.y[idx]
        if self.resident:
            return x, y
        if self.pin:
            x, y = x.pin_memory(), y.pin_memory()
        return x.to(self.device, non_blocking=self.pin), y.to(self.device, non_blocking=self.pin)
