"""HAT -- Hard Attention to the Task (Serra et al. 2018, ICML, Sec. 2; official code joansj/hat),
on the engine's task-aware network with the :class:`~unforget.layers.policies.UnitGates` policy.

Every weight is shared and trains; each task t has, per layer, an embedding ``e_t`` of the
layer's output units and gates them with ``a_t = sigmoid(s e_t)`` (Eq. 1). While task t trains:

* ``s`` anneals within every epoch from ``1 / s_max`` to ``s_max`` (Eq. 3; ``s_max`` 400);
* each weight's gradient is scaled by ``1 - min(a_out, a_in)`` of the earlier tasks' cumulative
  gates ``a_{<t} = max_{u<t} a_u`` of the units it connects (Eq. 2): weights between units that
  earlier tasks fully use do not move;
* the embeddings' gradients are compensated for the annealing (Sec. 2.5: ``s_max / s *
  (cosh(s e) + 1) / (cosh(e) + 1)``, ``s e`` clipped at 50) and the embeddings are clamped to
  +-6 after each step;
* the loss adds ``c * sum a_t (1 - a_{<t}) / sum (1 - a_{<t})`` over all gated units (Eq. 5;
  ``c`` 0.75, the official code's CIFAR value).

A finished task is served with its gates at ``s_max``. Gates below 1 leave a little gradient on
weights earlier tasks use, so HAT forgets a little: it is **not** an exact method, and its BWT is
reported as measured. Differences from the official code: per-task biases and batch norms (the
engine's; the paper's AlexNet has no batch norm), weight decay folded into the conditioned
gradient (``train.weight_decay``; 0 for the paper's plain SGD), no gradient-norm clipping.
Chain networks only (residual additions would share units between layers).
"""
from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from unforget.data.task import Task
from unforget.layers import weighted_layers
from unforget.layers.context import current_task
from unforget.layers.convert import set_module
from unforget.layers.policies import UnitGates
from unforget.methods.base import register_method, tensor_bytes
from unforget.methods.engine import PolicyMethod
from unforget.methods.units import chain_layers
from unforget.training import Hook, TrainState


class HATOptions(BaseModel):
    """``methods.hat``: the paper's hyper-parameters."""

    model_config = ConfigDict(extra="forbid")
    s_max: float = Field(400.0, gt=1, description="final scale of the gates (the paper: 400)")
    c: float = Field(0.75, ge=0, description="strength of the gate-sparsity regulariser (the official code: 0.75)")
    clamp: float = Field(6.0, gt=0, description="embeddings are clamped to +-clamp after each step")


class GatedUnits(nn.Module):
    """``inner(x) * a_t`` for the task being computed: a layer's (or its batch norm's) output
    units gated by their HAT gates at the policy's current scale."""

    unit_gate = True

    def __init__(self, inner: nn.Module, layer, policy: UnitGates) -> None:
        super().__init__()
        self.inner = inner
        self._owner = [layer, policy]  # not submodules

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inner(x)
        layer, policy = self._owner
        gate = policy.gate(layer, current_task())
        return h * gate.view(1, -1, *([1] * (h.dim() - 2)))


class HATHook(Hook):
    """Annealing of ``s``, the gate regulariser, the embedding-gradient compensation and clamp."""

    def __init__(self, layers: list, task: int, o: HATOptions) -> None:
        self.layers, self.task, self.o = layers, task, o

    def _set_s(self, s: float) -> None:
        for layer in self.layers:
            layer.policy.s = s

    def before_forward(self, state: TrainState) -> None:
        b, n = state.step % max(1, state.steps_per_epoch), max(1, state.steps_per_epoch)
        s_max = self.o.s_max
        self._set_s(1 / s_max + (s_max - 1 / s_max) * b / max(1, n - 1))

    def penalty(self, state: TrainState):
        num = den = 0
        for layer in self.layers:
            prev = layer.policy.prev(layer)
            num = num + (layer.policy.gate(layer, self.task) * (1 - prev)).sum()
            den = den + (1 - prev).sum()
        return self.o.c * num / den if float(den) > 0 else None

    @torch.no_grad()
    def after_backward(self, state: TrainState) -> None:
        s, s_max = self.layers[0].policy.s, self.o.s_max
        for layer in self.layers:
            e = layer.scores[str(self.task)]
            if e.grad is not None:
                num = torch.cosh(torch.clamp(s * e, -50, 50)) + 1
                e.grad.mul_(s_max / s * num / (torch.cosh(e) + 1))

    @torch.no_grad()
    def after_step(self, state: TrainState) -> None:
        for layer in self.layers:
            layer.scores[str(self.task)].clamp_(-self.o.clamp, self.o.clamp)

    def after_task(self, state: TrainState) -> None:
        self._set_s(self.o.s_max)


@register_method
class HAT(PolicyMethod):
    """HAT (see module doc): per-task unit gates over shared, trained weights; not exact."""

    name = "hat"
    description = "HAT (Serra et al. 2018): per-task attention gates on units, conditioned gradients; forgets a little"
    Options = HATOptions
    exact = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        units = chain_layers(self.model)  # ConfigError for residual networks
        by_group = {u.group.name: u.layer for u in units}
        for u in units:
            u.layer.policy.source = by_group[u.source.name].policy if u.source is not None else None
            u.layer.policy.layer_ref = [u.layer]
            name = next(n for n, m in self.model.named_modules() if m is u.probe)
            set_module(self.model, name, GatedUnits(u.probe, u.layer, u.layer.policy))

    def prepare_layer(self, layer) -> None:
        layer.policy = UnitGates(self.options.s_max)

    def task_optimizers(self, task: int) -> list[torch.optim.Optimizer]:
        """One SGD (the configured optimizer) over every shared weight (gradients conditioned by
        the layers) and task ``task``'s biases, norms, head and gate embeddings."""
        layers = [layer for _, layer in weighted_layers(self.model)]
        per_task = self._task_parameters(task) + [layer.scores[str(task)] for layer in layers]
        return [self.trainer.optimizer([{"params": [layer.weight for layer in layers]}, {"params": per_task}],
                                       weight_decay=0.0)]

    def task_hooks(self, task: int) -> tuple:
        self._hook = HATHook([layer for _, layer in weighted_layers(self.model)], task, self.options)
        return (self._hook,)

    def learn(self, task: Task) -> dict:
        """Serra et al. 2018 for one task (module doc); the gates are back at ``s_max`` afterwards,
        also when training fails."""
        try:
            return super().learn(task)
        finally:
            self._hook.after_task(None)

    def task_record(self, task: int, val: float, train_acc: float, claimed: int) -> dict:
        layers = [layer for _, layer in weighted_layers(self.model)]
        gates = torch.cat([layer.policy.gate(layer, task, self.options.s_max).detach() for layer in layers])
        used = torch.cat([layer.policy.prev(layer) for layer in layers])
        return {"units_open": float((gates > 0.5).float().mean()),
                "units_used_so_far": float((used > 0.5).float().mean())}

    def size(self) -> dict:
        """Bytes to serve all tasks: every weight (float32; all are shared), the gates' embeddings
        of every task and unit, and the per-task biases, batch norms and heads."""
        layers = [layer for _, layer in weighted_layers(self.model)]
        total = tensor_bytes(p for layer in layers for p in [layer.weight, *layer.scores.values()])
        total += self._per_task_bytes()
        return {"model_size_bytes": total, "expansion_ratio": 1.0, "released_ratio": None}


__all__ = ["HAT", "HATOptions", "GatedUnits"]
