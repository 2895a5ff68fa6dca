"""One learned task as a plain network: its effective weights materialised, cut to its width,
in ordinary ``nn.Conv2d`` / ``nn.Linear`` / ``nn.BatchNorm`` layers, runnable without this
package once saved as TorchScript or ONNX.

Task t's effective weight is ``W * 1[owner == t or (0 < owner < t and pick_t)]`` on its first
``width_t`` units (Hung et al. 2019, Sec. 3; design.md "Task-aware layers"): exactly what the
served task computes, so the plain network's logits equal the served ones.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from unforget.errors import UnforgetError
from unforget.layers.convert import set_module
from unforget.layers.task_aware import PerTaskLayer, TaskAwareWeighted, TaskConv2d, TaskLinear
from unforget.models.base import MultiHeadNet
from unforget.models.conv import DenseConv2d

FORMATS = ("pytorch", "torchscript", "onnx")


class PlainTaskNet(nn.Module):
    """One task's network: ``forward(x)`` -> logits ``(N, n_classes)`` for model inputs ``x``
    (normalised as the task's transform makes them)."""

    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _plain_weighted(layer: TaskAwareWeighted, task: int) -> nn.Module:
    w = layer.effective_weight(task).detach().clone()
    b = layer.task_bias(task)
    if isinstance(layer, TaskConv2d):  # a dense layer as a conv stays computed as the served one is
        cls = DenseConv2d if layer.dense else nn.Conv2d
        new: nn.Module = cls(w.shape[1], w.shape[0], tuple(w.shape[2:]), stride=layer.stride,
                             padding=layer.padding, dilation=layer.dilation, bias=b is not None)
    elif isinstance(layer, TaskLinear):
        new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    else:  # pragma: no cover - every task-aware weighted layer is one of the two
        raise TypeError(f"cannot export {type(layer).__name__}")
    new = new.to(w.device)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b.detach()[: w.shape[0]])
    return new


class FixedGate(nn.Module):
    """``inner(x)`` times fixed per-unit gates (a HAT task's gates at ``s_max``), for export."""

    def __init__(self, inner: nn.Module, gate: torch.Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("gate", gate.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inner(x)
        return h * self.gate.view(1, -1, *([1] * (h.dim() - 2)))


def plain_network(net: nn.Module, task: int) -> PlainTaskNet:
    """Task ``task`` of a learned network as a :class:`PlainTaskNet` in evaluation mode.

    ``net`` is a :class:`~unforget.models.base.MultiHeadNet`, task-aware (CPG, PAE, PackNet,
    Piggyback, CLNP) or plain (one model per task). The result shares no tensor with ``net``.

    Raises:
        UnforgetError: ``task`` has no head in ``net``, is still being trained, or ``net`` is not
            a multi-head network (e.g. progressive columns).
    """
    if not isinstance(net, MultiHeadNet):
        raise UnforgetError(f"a {type(net).__name__} cannot be exported as one plain network")
    if not net.has_head(task):
        raise UnforgetError(f"task {task} was not learned; learned tasks: {sorted(int(k) for k in net.heads)}")
    ctx = getattr(net, "task_context", None)
    if ctx is not None and ctx.training_task == task:
        raise UnforgetError(f"task {task} is still being learned; export it once it is finished")
    features = copy.deepcopy(net.features)
    originals = dict(net.features.named_modules())
    with torch.no_grad():
        for name, mod in list(features.named_modules()):
            src = originals[name]
            if getattr(src, "unit_gate", False):  # HAT: the task's gates become constants
                layer, policy = src._owner
                set_module(features, name, FixedGate(mod.inner, policy.gate(layer, task, policy.s_max)))
            elif isinstance(src, TaskAwareWeighted):
                set_module(features, name, _plain_weighted(src, task))
            elif isinstance(src, PerTaskLayer):  # the task's own batch norm / PReLU
                set_module(features, name, copy.deepcopy(src.norms[str(task)]))
    return PlainTaskNet(features, copy.deepcopy(net.heads[str(task)])).eval()


def save_plain(model: PlainTaskNet, path: str | Path, fmt: str, example: torch.Tensor,
               metadata: Optional[dict] = None) -> Path:
    """Write ``model`` to ``path`` as ``fmt``: ``pytorch`` (the module with ``torch.save``;
    load with ``torch.load(weights_only=False)``), ``torchscript`` (``torch.jit.trace`` on
    ``example``, a ``(N, ...)`` float input; load with ``torch.jit.load``, no unforget needed) or
    ``onnx`` (opset 17, dynamic batch; ``onnxruntime`` runs it). ``metadata`` (JSON-able: class
    names, preprocessing) goes into the file: TorchScript extra file ``unforget.json``, ONNX
    ``metadata_props``, the PyTorch module's ``unforget_metadata`` attribute.

    Raises:
        UnforgetError: unknown format, or ONNX asked for without the ``onnx`` package.
    """
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps(metadata or {})
    model = model.eval()
    if fmt == "pytorch":
        model.unforget_metadata = metadata or {}
        torch.save(model, path)
    elif fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated, still the portable format
            traced = torch.jit.trace(model, example)
            torch.jit.save(traced, str(path), _extra_files={"unforget.json": meta})
    elif fmt == "onnx":
        try:
            import onnx
        except ImportError:
            raise UnforgetError("ONNX export needs the onnx package: pip install 'unforget[export]'") from None
        with warnings.catch_warnings():  # the TorchScript-based exporter needs no onnxscript
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (example,), str(path), input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                              dynamo=False)
        proto = onnx.load(str(path))
        entry = proto.metadata_props.add()
        entry.key, entry.value = "unforget", meta
        onnx.save(proto, str(path))
    else:
        raise UnforgetError(f"unknown export format '{fmt}'; use one of {', '.join(FORMATS)}")
    return path
