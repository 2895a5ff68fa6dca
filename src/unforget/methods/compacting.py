"""Compacting: gradual magnitude pruning of the current task's own weights.

Source: Zhu & Gupta 2018, eq. 1 (cubic sparsity schedule); Hung et al. 2019, Alg. 1 lines 3-8
and Sec. 3.1 (prune while the accuracy goal holds, release the pruned weights); the reference
code ivclab/CPG (``experiment1/CPG_cifar100_scratch_mul_1.5.sh``, ``utils/prune.py``): a ladder
of pruning ratios 0.1, 0.2, ..., 0.9, 0.95, each step reached gradually inside its first epochs
(every ``pruning_frequency`` iterations) and then retrained.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from unforget.layers import weighted_layers
from unforget.training.hooks import Hook, TrainState


def cubic_schedule(final_ratio: float, steps: int, initial_ratio: float = 0.0) -> list[float]:
    """Pruning ratios ``s_j = s_f + (s_i - s_f) (1 - j/n)^3`` for ``j = 1..n`` (increasing,
    ending at ``final_ratio``). Zhu & Gupta 2018, eq. 1 with ``t0 = 0`` and ``Δt`` = one step.

    Raises:
        ValueError: ``final_ratio`` not in [0, 1) or ``steps < 1``.
    """
    if not 0 <= final_ratio < 1 or not 0 <= initial_ratio <= final_ratio:
        raise ValueError(f"pruning ratios must satisfy 0 <= initial <= final < 1, got {initial_ratio}, {final_ratio}")
    if steps < 1:
        raise ValueError("steps must be >= 1")
    return [final_ratio + (initial_ratio - final_ratio) * (1 - j / steps) ** 3 for j in range(1, steps + 1)]


def ratio_ladder(final_ratio: float, interval: float = 0.1) -> list[float]:
    """The pruning ratios tried by goal-driven compacting: ``interval, 2*interval, ...`` below
    ``final_ratio``, then ``final_ratio`` (the reference's 0.1, 0.2, ..., 0.9, 0.95 for
    ``final_ratio=0.95``). Values are rounded to 6 decimals.

    Raises:
        ValueError: ``final_ratio`` not in (0, 1) or ``interval`` not in (0, 1).
    """
    if not 0 < final_ratio < 1 or not 0 < interval < 1:
        raise ValueError(f"need 0 < final ratio < 1 and 0 < interval < 1, got {final_ratio}, {interval}")
    out, j = [], 1
    while j * interval < final_ratio - 1e-9:
        out.append(round(j * interval, 6))
        j += 1
    return out + [round(final_ratio, 6)]


def reserve_ratio(reserve_for_tasks: int) -> float:
    """Smallest pruning ratio of a task that misses its accuracy goal, so that ``reserve_for_tasks``
    later tasks still find free weights: ``1 - round(1 / (reserve + 1), 1)`` (0.5 for one task
    to come, 0.9 for 19). Source: ivclab/CPG ``CPG_cifar100_main_normal.py`` ("we reach the upper
    bound and still do not get the accuracy over our target", ``must_pruning_ratio_for_curr_task``).

    Raises:
        ValueError: ``reserve_for_tasks < 0``.
    """
    if reserve_for_tasks < 0:
        raise ValueError("reserve_for_tasks must be >= 0")
    keep = round(1.0 / (reserve_for_tasks + 1), 1)  # Python's round, as the reference
    return round(max(0.0, 1.0 - keep), 6)


def own_counts(model, task: int) -> dict[str, int]:
    """Number of weights owned by ``task`` in each task-aware layer."""
    return {name: int((layer.owner == task).sum()) for name, layer in weighted_layers(model)}


@torch.no_grad()
def prune_own(model, task: int, ratio: float, initial: dict[str, int],
              optimizers: Optional[list[torch.optim.Optimizer]] = None) -> int:
    """Release the smallest-magnitude weights of ``task`` so that, in every layer, a share
    ``ratio`` of the ``initial[layer]`` weights it owned before compacting is released
    (owner ``task -> 0``, value zeroed; design.md invariant 2). The optimizer state of released
    weights (e.g. SGD's momentum buffer) is zeroed in ``optimizers`` so that they stay at zero.
    Returns how many were released."""
    released = 0
    for name, layer in weighted_layers(model):
        own = layer.owner == task
        n0 = initial.get(name, 0)
        keep = n0 - int(math.floor(ratio * n0 + 1e-9))
        n_prune = int(own.sum()) - keep
        if n_prune <= 0:
            continue
        mags = layer.weight.detach().abs()[own]
        idx = torch.nonzero(own.flatten()).squeeze(1)
        mask = torch.zeros(own.numel(), dtype=torch.bool, device=own.device)
        mask[idx[torch.argsort(mags, stable=True)[:n_prune]]] = True
        released += layer.release(mask.view_as(own), optimizers or ())
    return released


class GradualPruning(Hook):
    """Training hook that raises task ``task``'s pruning ratio from ``start`` to ``target`` along
    the cubic schedule (Zhu & Gupta 2018, eq. 1) every ``frequency`` optimizer steps during the
    first ``interval_steps`` steps of the fit, and reaches ``target`` exactly at the end of that
    interval (ivclab/CPG ``utils/prune.py``: ``pruning_frequency=10``, ``pruning_interval=4``
    epochs of a 20-epoch step). ``initial``: weights owned per layer before compacting began."""

    def __init__(self, task: int, start: float, target: float, initial: dict[str, int],
                 interval_steps: int, frequency: int = 10) -> None:
        self.task, self.start, self.target, self.initial = task, start, target, initial
        self.interval_steps = max(1, interval_steps)
        self.frequency = max(1, frequency)
        self.done = False

    def ratio_at(self, step: int) -> float:
        p = min(1.0, step / self.interval_steps)
        return self.target + (self.start - self.target) * (1 - p) ** 3

    def after_step(self, state: TrainState) -> None:
        if self.done:
            return
        if state.step >= self.interval_steps:
            prune_own(state.model, self.task, self.target, self.initial, state.optimizers)
            self.done = True
            state.extra["pruning_ratio"] = self.target
        elif state.step % self.frequency == 0:
            state.extra["pruning_ratio"] = self.ratio_at(state.step)
            prune_own(state.model, self.task, state.extra["pruning_ratio"], self.initial, state.optimizers)

    def after_task(self, state: TrainState) -> None:
        if not self.done:  # fewer steps than the interval: still end at the target
            prune_own(state.model, self.task, self.target, self.initial, state.optimizers)
            self.done = True
