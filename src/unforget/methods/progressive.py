"""Progressive neural networks (Rusu et al. 2016): one column per task, lateral connections from
earlier columns, earlier columns frozen.

Column k is a fresh zoo backbone with its own head. Every conv / linear layer i of column k
whose input is a hidden layer, and the head, also receive lateral terms from the same layer's
input in every earlier column j < k (Rusu et al. 2016, eq. 1):

    h_i^(k) = f( W_i^(k) h_{i-1}^(k) + sum_{j<k} U_i^(k:j) h_{i-1}^(j) ).

``U`` has the shape of the target layer (a convolution with the same kernel, stride and padding
for conv layers, a linear map for linear layers and the head), no bias. Earlier columns run in
evaluation mode without gradient, so their weights, batch-norm statistics and outputs never
change: the method is exact. The model grows with every task: columns linearly, lateral maps
quadratically in the number of tasks; :meth:`ProgressiveNets.size` reports it.

Limits: only chain backbones whose conv / linear layers are direct children of ``features``
(``mlp``, ``clnp_convnet``, ``clnp_convnet_wide``, ``vgg16_bn``, ``vgg16_bn_light``); residual models are
refused.
The non-linear adapters of Rusu et al. 2016 (eq. 2: learned scale, dimensionality reduction)
are left out.
"""
from __future__ import annotations

from typing import Optional

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from unforget.data.task import Task
from unforget.errors import ConfigError
from unforget.methods.base import Method, module_bytes, register_method
from unforget.models import MultiHeadNet


def lateral_layers(column: MultiHeadNet) -> list[str]:
    """Names (``features.<i>``) of the conv / linear layers of ``column`` that read a hidden
    layer and so receive lateral connections.

    Raises:
        ConfigError: a layer is nested below ``features`` (residual blocks).
    """
    names = []
    for name, (_, in_group) in column.groups_spec.items():
        parts = name.split(".")
        if len(parts) != 2 or parts[0] != "features":
            raise ConfigError(f"progressive nets need a chain backbone; layer '{name}' is nested (residual block)")
        if in_group is not None and isinstance(column.get_submodule(name), (nn.Conv2d, nn.Linear)):
            names.append(name)
    return names


def _adapter(source: nn.Module, target: nn.Module) -> nn.Module:
    """A lateral map from ``source``'s input to ``target``'s output (same layer, two columns)."""
    if isinstance(target, nn.Conv2d):
        return nn.Conv2d(source.in_channels, target.out_channels, target.kernel_size, target.stride,
                         target.padding, target.dilation, bias=False)
    return nn.Linear(source.in_features, target.out_features, bias=False)


def _key(name: str) -> str:
    return name.replace(".", "_")


class ProgressiveNet(nn.Module):
    """Columns and their lateral maps; ``forward(x, task)`` gives task ``task``'s logits
    ``(N, n_classes_task)`` computed from columns ``1..task``.

    Attributes:
        columns: one :class:`MultiHeadNet` per task (head ``str(k)`` in column k).
        laterals: ``laterals[str(k)][layer][j]`` maps column ``j+1``'s input of ``layer`` (or its
            features, for ``"head"``) into column k.
    """

    def __init__(self) -> None:
        super().__init__()
        self.columns = nn.ModuleList()
        self.laterals = nn.ModuleDict()
        self.lateral_names: list[str] = []

    def add_column(self, column: MultiHeadNet, n_classes: int) -> None:
        """Append the column of the next task ``k`` with a head of ``n_classes`` and lateral maps
        (default init) from every earlier column."""
        k = len(self.columns) + 1
        if k == 1:
            self.lateral_names = lateral_layers(column)
        column.add_head(k, n_classes)
        lat = nn.ModuleDict()
        if k > 1:
            for name in self.lateral_names:
                target = column.get_submodule(name)
                lat[_key(name)] = nn.ModuleList([_adapter(c.get_submodule(name), target) for c in self.columns])
            lat["head"] = nn.ModuleList([c.make_head(c.feature_dim, n_classes, bias=False) for c in self.columns])
        self.columns.append(column)
        self.laterals[str(k)] = lat.to(next(column.parameters()).device)

    def train(self, mode: bool = True):
        """Only the newest column (and its lateral maps) follows ``mode``; earlier columns stay
        in evaluation mode (frozen batch-norm statistics, no dropout)."""
        super().train(mode)
        for c in self.columns[:-1]:
            c.eval()
        return self

    def _column(self, k: int, x: torch.Tensor, inputs: list[dict]) -> torch.Tensor:
        col, lat = self.columns[k - 1], self.laterals[str(k)]
        seen: dict[str, torch.Tensor] = {}
        h = x
        for child, mod in col.features.named_children():
            name = f"features.{child}"
            if name in self.lateral_names:
                seen[name] = h
                out = mod(h)
                for j, u in enumerate(lat[_key(name)] if k > 1 else ()):
                    out = out + u(inputs[j][name])
                h = out
            else:
                h = mod(h)
        seen["head"] = h
        inputs.append(seen)
        logits = col.heads[str(k)](h)
        for j, u in enumerate(lat["head"] if k > 1 else ()):
            logits = logits + u(inputs[j]["head"])
        return logits

    def forward(self, x: torch.Tensor, task: int) -> torch.Tensor:
        if not 1 <= task <= len(self.columns):
            raise KeyError(f"no column for task {task}; learned tasks: 1..{len(self.columns)}")
        inputs: list[dict] = []
        with torch.no_grad():
            for j in range(1, task):
                self._column(j, x, inputs)
        return self._column(task, x, inputs)


class ProgressiveOptions(BaseModel):
    """Options of ``methods.progressive``."""

    model_config = ConfigDict(extra="forbid")
    column_width: Optional[float] = Field(None, gt=0, le=64,
                                          description="width multiplier of each column (default: model.width)")


@register_method
class ProgressiveNets(Method):
    """Progressive neural networks (Rusu et al. 2016, Sec. 2, eq. 1): a new column per task with
    lateral connections; earlier columns frozen (exact); size grows with every task."""

    name = "progressive"
    description = "progressive neural networks (Rusu et al. 2016): a frozen column per task + lateral links"
    Options = ProgressiveOptions
    exact = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.net = ProgressiveNet().to(self.device)
        first = self._new_column(1)
        lateral_layers(first)  # refuse residual backbones before any training
        self.base_weights = self._weights(first)

    @staticmethod
    def _weights(column: MultiHeadNet) -> int:
        return sum(p.numel() for p in column.features.parameters())

    def _new_column(self, k: int) -> MultiHeadNet:
        return self.new_backbone(seed_offset=k, width=self.options.column_width)

    def _add(self, k: int, n_classes: int) -> None:
        with torch.random.fork_rng(devices=[]):  # lateral maps and head from their own seed
            torch.manual_seed(self.config.seed * 7919 + 104729 * k)
            self.net.add_column(self._new_column(k), n_classes)

    def learn(self, task: Task) -> dict:
        """Add column ``task.id`` and train it with its lateral maps and head; nothing else trains."""
        self._add(task.id, task.n_classes)
        params = list(self.net.columns[-1].parameters()) + list(self.net.laterals[str(task.id)].parameters())
        self.trainer.fit(self.net, task, [self.trainer.optimizer(params)])
        self.learned.append(task.id)
        return {"val_accuracy": self.trainer.accuracy(self.net, task, "val"), "columns": len(self.net.columns)}

    def model_for(self, task_id: int) -> nn.Module:
        return self.net

    def size(self) -> dict:
        """Every parameter and buffer (all columns, lateral maps, heads); Exp. = backbone and
        lateral weights / the weights of one column's backbone."""
        heads = sum(p.numel() for c in self.net.columns for p in c.heads.parameters())
        head_lat = sum(p.numel() for lat in self.net.laterals.values() if "head" in lat
                       for p in lat["head"].parameters())
        weights = sum(p.numel() for p in self.net.parameters()) - heads - head_lat
        return {"model_size_bytes": module_bytes(self.net), "expansion_ratio": weights / self.base_weights,
                "released_ratio": None}

    def state(self):
        meta = {"heads": {str(k + 1): c.heads[str(k + 1)].out_features for k, c in enumerate(self.net.columns)}}
        return dict(self.net.state_dict()), meta

    def load_state(self, tensors, meta) -> None:
        for k in sorted(int(t) for t in meta["heads"]):
            self._add(k, meta["heads"][str(k)])
            self.learned.append(k)
        self.net.load_state_dict(tensors)
