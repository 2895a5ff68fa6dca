"""Unit-level (neuron / filter) bookkeeping on task-aware chain networks.

A *unit* is one output unit of a width group: a neuron of a linear layer or a filter of a conv
layer. On a chain network (every group written by exactly one conv / linear layer) the task that
owns unit ``u`` of a layer is the owner of its incoming weights (row ``u``): rows are claimed and
released whole, so a row's owner is uniform. The helpers here read and edit that structure;
the weight-level freezing itself is the task-aware layers' (``owner``, ``owned_weight``).

Source: Golkar et al. 2019 (arXiv:1903.04476v1), Secs. 2.1-2.2 (neuron-level sparsity, free and
active units, interference weights); design.md, "Task-aware layers".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import torch
from torch import nn

from unforget.errors import ConfigError
from unforget.layers import TaskAwareWeighted, TaskBatchNorm, WidthGroup, norm_layers, weighted_layers
from unforget.training import Hook, TrainState


@dataclass
class UnitLayer:
    """One conv / linear layer of a chain network and the units it writes.

    Attributes:
        name: module name, e.g. ``"features.1"``.
        layer: the task-aware layer; its ``weight`` has shape ``(units, in, *kernel)``.
        group: width group of its output units.
        source: width group of its input units, ``None`` for the network input.
        probe: module whose output, after ReLU, is the units' activity (the group's batch norm
            when it has one, else the layer).
    """

    name: str
    layer: TaskAwareWeighted
    group: WidthGroup
    source: Optional[WidthGroup]
    probe: nn.Module

    @property
    def units(self) -> int:
        return self.layer.weight.shape[0]


def chain_layers(model: nn.Module) -> list[UnitLayer]:
    """The task-aware layers of ``model`` as :class:`UnitLayer` s, in module order.

    Raises:
        ConfigError: a width group is written by several layers (residual additions), so its
            units are not the units of one layer (ResNets, SphereFace); use a chain model
            (``mlp``, ``clnp_convnet``, ``clnp_convnet_wide``, ``vgg16_bn``, ``vgg16_bn_light``).
    """
    layers = list(weighted_layers(model))
    writers: dict[str, list[str]] = {}
    for name, layer in layers:
        writers.setdefault(layer.out_group.name, []).append(name)
    shared = sorted(g for g, names in writers.items() if len(names) > 1)
    if shared:
        raise ConfigError(f"unit-level methods need a chain model (one layer per width group); groups "
                          f"{', '.join(shared)} are written by several layers (residual additions)")
    norms = {n.group.name: n for _, n in norm_layers(model) if isinstance(n, TaskBatchNorm)}
    return [UnitLayer(name, layer, layer.out_group, layer.in_group, norms.get(layer.out_group.name, layer))
            for name, layer in layers]


def unit_owner(layer: TaskAwareWeighted) -> torch.Tensor:
    """Owner task of each output unit (``int16``, shape ``(units,)``; 0 = free): the owner of the
    unit's incoming weights."""
    return layer.owner.reshape(layer.owner.shape[0], -1).amax(1)


def column_mask(units: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-input-unit mask ``(in,)`` to ``weight``'s shape ``(out, in, *kernel)``."""
    return units.reshape(1, -1, *([1] * (weight.dim() - 2))).expand_as(weight)


def row_mask(units: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-output-unit mask ``(out,)`` to ``weight``'s shape."""
    return units.reshape(-1, *([1] * (weight.dim() - 1))).expand_as(weight)


@torch.no_grad()
def mean_activity(model: nn.Module, chain: Sequence[UnitLayer], batches: Iterable[torch.Tensor],
                  task: int) -> list[torch.Tensor]:
    """Mean activity of every unit of every chain layer on ``batches`` for task ``task``: the
    mean of ``relu(probe output)`` over samples (and spatial positions for filters), in
    evaluation mode. Returns one ``float64`` tensor ``(units,)`` per layer.

    Source: Golkar et al. 2019, Sec. 2.2 and Alg. 1 (a unit is active when its average activation
    over the task's training data exceeds the threshold).
    """
    sums = [torch.zeros(ul.units, dtype=torch.float64) for ul in chain]
    counts = [0] * len(chain)

    def hook(i):
        def fn(_module, _inputs, out):
            a = torch.relu(out.detach()).transpose(0, 1).reshape(out.shape[1], -1)
            sums[i] += a.sum(1).double().cpu()
            counts[i] += a.shape[1]
        return fn

    handles = [ul.probe.register_forward_hook(hook(i)) for i, ul in enumerate(chain)]
    was = model.training
    model.eval()
    try:
        for x in batches:
            model(x, task)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return [s / max(1, c) for s, c in zip(sums, counts)]


@torch.no_grad()
def reinit_released_rows(ul: UnitLayer, task: int, generator: torch.Generator) -> int:
    """Re-initialise the incoming weights of units claimed by ``task`` whose weights are all zero
    (released by an earlier task), with PyTorch's default init (uniform, bound ``1/sqrt(fan_in)``);
    returns how many units were re-initialised. Zero rows would leave the units dead."""
    w = ul.layer.weight
    rows = (unit_owner(ul.layer) == task) & (w.reshape(w.shape[0], -1) == 0).all(1)
    n = int(rows.sum())
    if n:
        fan_in = math.prod(w.shape[1:])
        bound = 1.0 / math.sqrt(fan_in)
        fresh = (torch.rand((n, *w.shape[1:]), generator=generator, dtype=w.dtype) * 2 - 1) * bound
        w.data[rows.to(w.device)] = fresh.to(w.device)
    return n


class GradMask(Hook):
    """Zero the gradient of chosen entries after every backward pass, so they stay where they
    are (with zero momentum and, at value 0, no weight-decay drift).

    Args:
        masks: ``(parameter, keep)`` pairs; ``keep`` is a ``bool`` tensor of the parameter's
            shape, ``True`` where the entry may train.
    """

    def __init__(self, masks: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.masks = [(p, keep.to(p.dtype)) for p, keep in masks if not bool(keep.all())]

    def after_backward(self, state: TrainState) -> None:
        for p, keep in self.masks:
            if p.grad is not None:
                p.grad.mul_(keep)
