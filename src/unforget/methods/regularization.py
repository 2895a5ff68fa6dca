"""Regularisation baselines on one shared multi-head network: EWC and SI.

Both add an anchored quadratic penalty to the task loss,

    strength * sum_i Omega_i (theta_i - theta*_i)^2,

over the shared (backbone) parameters, and differ only in the importance ``Omega`` they estimate
after each task. The penalty, the consolidation of importances across tasks and the training
loop live once in :class:`AnchoredQuadratic`; :class:`EWC` and :class:`SI` supply the estimate.
Each task gets a new head (as :class:`~unforget.methods.independent.Finetune`); earlier heads
are not trained again. Batch-norm running statistics are shared buffers, not parameters, so no
penalty protects them. These methods forget (``exact = False``): the report shows how much.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from unforget.data.task import Task
from unforget.methods.base import register_method
from unforget.methods.independent import Finetune
from unforget.training import Hook, TrainState

Params = dict[str, torch.Tensor]


def quadratic_penalty(params: dict[str, torch.Tensor], omega: Params, anchor: Params) -> torch.Tensor:
    """``sum_i omega_i (theta_i - anchor_i)^2`` over the names in ``omega`` (a 0-dim tensor;
    0 at the anchor, growing quadratically with the distance from it).

    Raises:
        KeyError: a name of ``omega`` is missing from ``params`` or ``anchor``.
    """
    total = None
    for name, om in omega.items():
        term = (om * (params[name] - anchor[name]).pow(2)).sum()
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return total


def empirical_fisher(model: nn.Module, task_id: int, x: torch.Tensor, y: torch.Tensor,
                     params: dict[str, nn.Parameter]) -> Params:
    """Diagonal empirical Fisher information ``F_i = mean_n (d log p(y_n | x_n) / d theta_i)^2``
    with the true labels ``y_n``, one sample per backward pass, model in evaluation mode.

    Args:
        model: ``model(x, task_id)`` gives logits ``(N, C)``.
        x: inputs ``(N, ...)`` (float, on the model's device); y: labels ``(N,)`` (int64).
        params: the parameters to estimate (name -> parameter of ``model``).

    Returns:
        name -> ``float32`` tensor of the parameter's shape, entries >= 0.

    Source: Kirkpatrick et al. 2017, eq. 3 and "Methods" (diagonal Fisher at the task's optimum).
    """
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    was = model.training
    model.eval()
    names, tensors = list(params), list(params.values())
    for i in range(len(x)):
        logp = F.log_softmax(model(x[i:i + 1], task_id), dim=1)[0, y[i]]
        grads = torch.autograd.grad(logp, tensors, allow_unused=True)
        for n, g in zip(names, grads):
            if g is not None:
                fisher[n] += g.detach().pow(2)
    model.train(was)
    return {n: f / max(1, len(x)) for n, f in fisher.items()}


class PathIntegral(Hook):
    """Synaptic intelligence's running importance ``omega_i = -sum_steps g_i * delta theta_i``
    (Zenke et al. 2017, Sec. 3: the per-parameter path integral, in discrete form): ``g`` is the
    gradient of the task loss alone (the total gradient minus the penalty's), ``delta theta``
    the optimizer's actual update. ``omega`` tensors have the parameters' shapes and dtypes.

    Args:
        params: name -> parameter to track.
        penalty_grad: callable returning name -> gradient of the quadratic penalty at the
            current parameters (subtracted to get the task-loss gradient), or ``None``.
    """

    def __init__(self, params: dict[str, nn.Parameter], penalty_grad=None) -> None:
        self.params = params
        self.penalty_grad = penalty_grad
        self.omega = {n: torch.zeros_like(p) for n, p in params.items()}
        self._g: Params = {}
        self._before: Params = {}

    def after_backward(self, state: Optional[TrainState]) -> None:
        pen = self.penalty_grad() if self.penalty_grad is not None else {}
        for n, p in self.params.items():
            g = p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
            if n in pen:
                g -= pen[n]
            self._g[n] = g
            self._before[n] = p.detach().clone()

    def after_step(self, state: Optional[TrainState]) -> None:
        for n, p in self.params.items():
            self.omega[n] -= self._g[n] * (p.detach() - self._before[n])


class QuadraticPenalty(Hook):
    """Adds ``strength * quadratic_penalty(...)`` to the loss (see the module doc)."""

    def __init__(self, method: "AnchoredQuadratic") -> None:
        self.method = method

    def penalty(self, state: TrainState) -> Optional[torch.Tensor]:
        return self.method.penalty()


class AnchoredQuadratic(Finetune):
    """Shared network with a new head per task and an anchored quadratic penalty on the backbone
    (see the module doc). Subclasses set ``strength`` (the factor in front of the sum), the
    anchor rule, and estimate the importance of the task just learned in :meth:`importance`.

    ``anchor_rule``: ``"weighted"`` keeps one quadratic per earlier task, summed: since a sum of
    quadratics is one quadratic, ``Omega = sum_s Omega_s`` and the anchor is the
    ``Omega``-weighted mean of the ``theta*_s`` (equal gradients; the value differs by a
    constant). ``"latest"`` accumulates ``Omega`` and anchors at the parameters after the last
    task.
    """

    anchor_rule = "weighted"
    strength: float = 1.0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.shared = dict(self.model.features.named_parameters())
        self.omega: Params = {}
        self.anchor: Params = {}

    # --------------------------------------------------------------- the shared penalty
    def penalty(self) -> Optional[torch.Tensor]:
        """``strength * sum_i Omega_i (theta_i - theta*_i)^2`` (``None`` before the first task ends)."""
        if not self.omega:
            return None
        return self.strength * quadratic_penalty(self.shared, self.omega, self.anchor)

    @torch.no_grad()
    def penalty_grad(self) -> Params:
        """Gradient of :meth:`penalty` per shared parameter: ``2 strength Omega (theta - theta*)``."""
        return {n: 2 * self.strength * om * (self.shared[n] - self.anchor[n]) for n, om in self.omega.items()}

    @torch.no_grad()
    def consolidate(self, importance: Params) -> None:
        """Merge the importance of the task just learned, anchored at the current parameters."""
        theta = {n: p.detach().clone() for n, p in self.shared.items()}
        if not self.omega:
            self.omega, self.anchor = {n: v.clone() for n, v in importance.items()}, theta
            return
        for n, new in importance.items():
            total = self.omega[n] + new
            if self.anchor_rule == "weighted":
                mean = (self.omega[n] * self.anchor[n] + new * theta[n]) / total
                self.anchor[n] = torch.where(total > 0, mean, theta[n])
            else:
                self.anchor[n] = theta[n]
            self.omega[n] = total

    # --------------------------------------------------------------- hooks for subclasses
    def training_hooks(self) -> list[Hook]:
        """Extra hooks while a task trains (SI's path integral)."""
        return []

    def importance(self, task: Task, hooks: list[Hook]) -> Params:
        raise NotImplementedError

    # --------------------------------------------------------------- Method interface
    def learn(self, task: Task) -> dict:
        head = self.model.add_head(task.id, task.n_classes)
        opt = self.trainer.optimizer(list(self.shared.values()) + list(head.parameters()))
        hooks = self.training_hooks()
        self.trainer.fit(self.model, task, [opt], hooks=[QuadraticPenalty(self), *hooks])
        val = self.trainer.accuracy(self.model, task, "val")
        self.consolidate(self.importance(task, hooks))
        self.learned.append(task.id)
        return {"val_accuracy": val}

    def state(self):
        tensors, meta = super().state()
        tensors.update({f"omega.{n}": v for n, v in self.omega.items()})
        tensors.update({f"anchor.{n}": v for n, v in self.anchor.items()})
        return tensors, meta

    def load_state(self, tensors, meta) -> None:
        super().load_state({k: v for k, v in tensors.items() if not k.startswith(("omega.", "anchor."))}, meta)
        self.omega = {k[len("omega."):]: v for k, v in tensors.items() if k.startswith("omega.")}
        self.anchor = {k[len("anchor."):]: v for k, v in tensors.items() if k.startswith("anchor.")}


class EWCOptions(BaseModel):
    """Options of ``methods.ewc``; ``lambda`` may also be written ``ewc_lambda``.

    The paper gives no single ``lambda``; with the per-sample mean Fisher used here, values of
    10^2..10^4 are usual, and 5000 cut forgetting noticeably on the embedded digits benchmark
    (tune per benchmark)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    ewc_lambda: float = Field(5000.0, ge=0, alias="lambda", description="penalty strength lambda (eq. 3)")
    fisher_samples: int = Field(200, ge=1, description="training samples for the Fisher estimate")


@register_method
class EWC(AnchoredQuadratic):
    """Elastic weight consolidation: ``L = L_t + lambda/2 sum_i F_i (theta_i - theta*_i)^2``
    (Kirkpatrick et al. 2017, eq. 3), ``F`` the diagonal empirical Fisher of each task, one
    penalty per earlier task (merged as described in :class:`AnchoredQuadratic`)."""

    name = "ewc"
    description = "elastic weight consolidation (Kirkpatrick et al. 2017): Fisher-weighted penalty (forgets)"
    Options = EWCOptions
    anchor_rule = "weighted"

    @property
    def strength(self) -> float:
        return self.options.ewc_lambda / 2

    def importance(self, task: Task, hooks) -> Params:
        """Empirical Fisher on ``fisher_samples`` training samples drawn with the run's seed."""
        n = min(self.options.fisher_samples, len(task.train))
        gen = torch.Generator().manual_seed(self.config.seed * 7919 + task.id)
        idx = torch.randperm(len(task.train), generator=gen)[:n].sort().values
        x = task.transform(task.train.x[idx], train=False).to(self.device)
        return empirical_fisher(self.model, task.id, x, task.train.y[idx].to(self.device), self.shared)


class SIOptions(BaseModel):
    """Options of ``methods.si``."""

    model_config = ConfigDict(extra="forbid")
    c: float = Field(0.1, ge=0, description="penalty strength c (Zenke et al. 2017, eq. 4; 0.1 for CIFAR)")
    xi: float = Field(0.1, gt=0, description="damping xi (Zenke et al. 2017, eq. 5)")


@register_method
class SI(AnchoredQuadratic):
    """Synaptic intelligence: ``L = L_t + c sum_i Omega_i (theta_i - theta~_i)^2`` with
    ``Omega_i = sum_tasks omega_i / (Delta_i^2 + xi)``, ``omega`` the path integral of the task
    loss's gradient along the parameter trajectory and ``Delta`` the task's total parameter
    change; anchored at the parameters after the last task (Zenke et al. 2017, Sec. 3, eqs. 4-5)."""

    name = "si"
    description = "synaptic intelligence (Zenke et al. 2017): path-integral importance penalty (forgets)"
    Options = SIOptions
    anchor_rule = "latest"

    @property
    def strength(self) -> float:
        return self.options.c

    def training_hooks(self) -> list[Hook]:
        self._start = {n: p.detach().clone() for n, p in self.shared.items()}
        return [PathIntegral(self.shared, self.penalty_grad if self.omega else None)]

    def importance(self, task: Task, hooks) -> Params:
        omega = hooks[0].omega
        return {n: omega[n] / ((p.detach() - self._start[n]).pow(2) + self.options.xi)
                for n, p in self.shared.items()}
