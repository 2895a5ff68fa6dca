"""Graceful forgetting: which trained model CLNP keeps, and how far it sparsifies it.

Golkar et al. 2019 (arXiv:1903.04476v1), Sec. 2.2, "Graceful forgetting": train one model per
point of a hyper-parameter grid (L1 strength, learning rate) and note the best validation
accuracy; keep the models within the margin ``m`` of it; sparsify each with the highest activation
thresholds that keep it within the margin (a threshold per layer, like the L1 strength); keep
the sparsest. The functions here are that selection on plain numbers: the caller trains, prunes
and evaluates.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch

TOLERANCE = 1e-12
"""Absorbs float rounding when an accuracy is compared with the margin's floor."""


def threshold_candidates(activity: torch.Tensor, steps: int) -> list[float]:
    """Candidate activation thresholds of one layer, ascending and distinct: ``0.0`` (releases
    the dead units only) and, for ``j = 1 .. steps``, the activity of the unit of rank
    ``ceil(j * n / steps)`` among the ``n`` given units sorted by activity, so that threshold
    ``j`` releases at least a share ``j / steps`` of them, least active first (a unit is released
    when its activity is ``<= threshold``; the last candidate releases all of them).

    Args:
        activity: mean activities (``>= 0``, any float dtype), shape ``(n,)``: the units the task
            may release (its new units of the layer); ``n = 0`` gives ``[0.0]``.
        steps: resolution of the scan, ``>= 1``.

    Raises:
        ValueError: ``steps < 1``.
    """
    if steps < 1:
        raise ValueError(f"threshold_candidates needs steps >= 1, got {steps}")
    values = sorted(float(a) for a in activity.reshape(-1).tolist())
    n = len(values)
    picked = {0.0} | {values[math.ceil(j * n / steps) - 1] for j in range(1, steps + 1) if n}
    return sorted(picked)


def search_thresholds(evaluate: Callable[[list[float]], float], candidates: Sequence[Sequence[float]],
                      floor: float, order: Optional[Sequence[int]] = None
                      ) -> tuple[list[float], float, list[tuple[int, float, float]]]:
    """The highest per-layer activation thresholds that keep the validation accuracy at or
    above ``floor`` (the best accuracy minus the margin), by coordinate search.

    Every layer starts at its lowest candidate. The layers are visited once in ``order``; a
    layer tries its candidates above its current one from the highest down, the others held at
    their current choice, and keeps the first whose accuracy is ``>= floor``; if none is, it
    keeps its current one. The paper asks for "the highest activation threshold such that the
    model remains within this margin" and lets the threshold differ per layer, without saying
    how the layers are searched together; this one-pass search is our choice. It evaluates at
    most ``1 + sum(len(c) - 1 for c in candidates)`` pruned models.

    Args:
        evaluate: validation accuracy in ``[0, 1]`` of the model pruned with one threshold per
            layer (called with a fresh list each time).
        candidates: per layer, its candidate thresholds, ascending (see
            :func:`threshold_candidates`).
        floor: the accuracy to keep, ``best - m``.
        order: the layers' visiting order (default: last to first, the last hidden layer first:
            with a single head its units are never reused, so it bounds how many tasks fit,
            Golkar et al. 2019, Sec. 3.1).

    Returns:
        ``(thresholds, accuracy, trace)``: the chosen threshold per layer, the accuracy with
        them, and every evaluation as ``(layer, threshold, accuracy)`` (layer ``-1``: the
        start).

    Raises:
        ValueError: a layer has no candidate, or ``order`` is not a permutation of the layers.
    """
    if any(len(c) == 0 for c in candidates):
        raise ValueError("search_thresholds needs at least one candidate threshold per layer")
    order = list(range(len(candidates)))[::-1] if order is None else list(order)
    if sorted(order) != list(range(len(candidates))):
        raise ValueError(f"order {order} is not a permutation of the {len(candidates)} layers")
    chosen = [float(c[0]) for c in candidates]
    acc = evaluate(list(chosen))
    trace = [(-1, 0.0, acc)]
    for i in order:
        for th in sorted((c for c in candidates[i] if c > chosen[i]), reverse=True):
            trial = list(chosen)
            trial[i] = float(th)
            a = evaluate(trial)
            trace.append((i, float(th), a))
            if a >= floor - TOLERANCE:
                chosen, acc = trial, a
                break
    return chosen, acc, trace


def select_sparsest(models: Sequence[tuple[float, int]], floor: float) -> int:
    """Index of the model to keep: among those whose accuracy is ``>= floor``, the one that
    releases the most units (ties: the more accurate, then the first); when none reaches the
    floor, the most accurate.

    Args:
        models: ``(validation accuracy after pruning, units released)`` per model.
        floor: the best accuracy minus the margin.

    Raises:
        ValueError: ``models`` is empty.

    Source: Golkar et al. 2019, Sec. 2.2 ("we finally pick the hyperparameters which give the
    highest sparsity among these models").
    """
    if not models:
        raise ValueError("select_sparsest needs at least one model")

    def key(i: int):
        acc, released = models[i]
        within = acc >= floor - TOLERANCE
        return within, released if within else 0, acc, -i

    return max(range(len(models)), key=key)
