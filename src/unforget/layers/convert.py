"""One call turns a zoo model into its task-aware form, plus the network-level task life cycle."""
from __future__ import annotations

from typing import Iterator, Optional

import torch
from torch import nn

from unforget.layers.context import TaskContext, WidthGroup
from unforget.layers.task_aware import PerTaskLayer, TaskAwareWeighted, TaskBatchNorm, TaskConv2d, TaskLinear, TaskPReLU
from unforget.models.base import MultiHeadNet


def set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted ``name`` inside ``root`` (replacing what is there)."""
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, module)


def to_task_aware(model: MultiHeadNet) -> MultiHeadNet:
    """Convert ``model`` in place: every conv / linear / batch-norm / PReLU named in
    ``model.groups_spec`` becomes its task-aware twin (same initial weights); returns ``model``.

    Afterwards ``model.groups`` maps group names to :class:`WidthGroup` and
    ``model.task_context`` is the shared :class:`TaskContext`. Heads stay per-task ``nn.Linear``.

    Raises:
        ValueError: the model has no ``groups_spec`` entry for one of its conv/linear layers,
            or it has heads already (convert before learning any task).
    """
    if getattr(model, "task_context", None) is not None:
        return model
    if len(model.heads):
        raise ValueError("convert the model before adding task heads")
    ctx = TaskContext()
    modules = dict(model.named_modules())
    for name, mod in modules.items():
        if isinstance(mod, (nn.Conv2d, nn.Linear)) and not name.startswith("heads") and name not in model.groups_spec:
            raise ValueError(f"layer '{name}' has no width group in groups_spec")
    groups: dict[str, WidthGroup] = {}
    for name, (out_g, _) in model.groups_spec.items():
        mod = modules[name]
        n = (mod.out_channels if isinstance(mod, nn.Conv2d) else mod.out_features if isinstance(mod, nn.Linear)
             else mod.num_parameters if isinstance(mod, nn.PReLU) else mod.num_features)
        g = groups.setdefault(out_g, WidthGroup(out_g, n, n))
        if g.size != n:
            raise ValueError(f"group '{out_g}' has layers of {g.size} and {n} units")
    for name, (out_g, in_g) in model.groups_spec.items():
        mod = modules[name]
        in_group = groups[in_g] if in_g is not None else None
        if isinstance(mod, nn.Conv2d):
            new: nn.Module = TaskConv2d(mod, groups[out_g], in_group, ctx)
        elif isinstance(mod, nn.Linear):
            new = TaskLinear(mod, groups[out_g], in_group, ctx)
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
            new = TaskBatchNorm(mod, groups[out_g], ctx)
        elif isinstance(mod, nn.PReLU):
            if mod.num_parameters != groups[out_g].size:
                raise ValueError(f"PReLU '{name}' has {mod.num_parameters} slopes; per-task PReLU needs one per "
                                 f"channel of group '{out_g}' ({groups[out_g].size})")
            new = TaskPReLU(mod, groups[out_g], ctx)
        else:
            raise ValueError(f"cannot convert '{name}' of type {type(mod).__name__}")
        set_module(model, name, new)
    model.groups = groups
    model.task_context = ctx
    return model


def weighted_layers(model: nn.Module) -> Iterator[tuple[str, TaskAwareWeighted]]:
    """The task-aware conv / linear layers of ``model``, with their names, in module order."""
    for name, mod in model.named_modules():
        if isinstance(mod, TaskAwareWeighted):
            yield name, mod


def norm_layers(model: nn.Module) -> Iterator[tuple[str, PerTaskLayer]]:
    """The per-task layers of ``model`` (batch norms, PReLUs: each task's own parameters), with
    their names, in module order."""
    for name, mod in model.named_modules():
        if isinstance(mod, PerTaskLayer):
            yield name, mod


def begin_task(model: MultiHeadNet, task: int, n_classes: int, *, claim_free: bool = True,
               learn_picks: bool = False, widths: Optional[dict[str, int]] = None, head: str = "linear") -> None:
    """Start learning ``task`` on a task-aware ``model``: its width is every group's current
    size; with ``claim_free`` it takes the free weights in that width (owner 0 -> task); with
    ``learn_picks`` it gets pick scores over earlier tasks' weights; it gets its own biases,
    batch norms and head. Sets ``model.task_context.training_task``. ``widths`` (group name ->
    units) overrides the widths, to rebuild a finished task from a checkpoint. ``head``: the
    head's kind (``linear`` or ``a-softmax``, :mod:`unforget.models.heads`)."""
    device = next(model.parameters()).device
    for name, g in model.groups.items():
        g.widths[task] = g.size if widths is None else widths[name]
    for _, layer in weighted_layers(model):
        layer.begin_task(task, claim_free=claim_free, learn_picks=learn_picks)
    for _, norm in norm_layers(model):
        norm.begin_task(task, device)
    model.add_head(task, n_classes, in_features=model.groups[model.feature_group].width(task), kind=head)
    model.task_context.training_task = task


def end_task(model: MultiHeadNet, task: int) -> None:
    """Finish ``task``: freeze its pick masks; nothing of it changes afterwards."""
    for _, layer in weighted_layers(model):
        layer.end_task(task)
    model.task_context.training_task = None


def grow_group(model: MultiHeadNet, group: str, n: int, task: Optional[int]) -> None:
    """Append ``n`` units to width group ``group`` for the task in training (``task``).

    Every layer writing the group gets ``n`` new output rows, every layer reading it gets ``n``
    new input columns, the task's batch norms and (for the feature group) head grow too, and the
    new weights in the task's width are claimed by it. Earlier tasks keep their widths, so what
    they compute never changes (design.md, "Growing"; Hung et al. 2019, Sec. 3.3).
    """
    if n <= 0:
        return
    g = model.groups[group]
    for _, layer in weighted_layers(model):
        n_out = n if layer.out_group is g else 0
        n_in = n if layer.in_group is g else 0
        if n_out or n_in:
            layer.grow(n_out, n_in, task)
    for _, norm in norm_layers(model):
        if norm.group is g:
            norm.grow(n, task)
    g.size += n
    if task is not None:
        g.widths[task] = g.size
        for _, layer in weighted_layers(model):
            if layer.out_group is g or layer.in_group is g:
                rows, cols = layer.slice_for(task)
                fresh = torch.zeros_like(layer.owner, dtype=torch.bool)
                if layer.out_group is g:
                    fresh[rows.stop - n: rows.stop, : cols.stop] = True
                if layer.in_group is g:
                    fresh[: rows.stop, cols.stop - n: cols.stop] = True
                layer.claim(fresh, task)
        if group == model.feature_group and model.has_head(task):
            old = model.heads[str(task)]
            head = model.add_head(task, old.out_features, in_features=old.in_features + n)
            with torch.no_grad():
                head.weight.zero_()
                head.weight[:, : old.in_features] = old.weight
                if head.bias is not None:
                    head.bias.copy_(old.bias)
