"""SupSup -- Supermasks in Superposition (Wortsman et al. 2020, NeurIPS, Sec. 3; official code
RAIVNLab/supsup), on the engine's task-aware network with the
:class:`~unforget.layers.policies.Supermask` policy.

The weights are fixed at a random *signed constant*: ``sign(w) * gain / sqrt(fan_in)`` with the
ReLU gain (Ramanujan et al. 2020, Sec. 4; the SupSup code's ``signed_constant``), and never
train. Each task learns real-valued scores (Adam, lr 1e-3, as the SupSup GG experiments) whose
top ``density`` share of ``|scores|`` per layer is its supermask (edge-popup, straight-through);
when the task ends the mask is frozen. Task t is served as ``W * mask_t``: nothing a later task
does touches it, so earlier tasks are bit-identical.

As in the SupSup code, batch norms keep per-task running statistics but no learned affine
parameters (``MultitaskNonAffineBN``: the per-task norms stay at weight 1, bias 0). Differences:
heads are per task and trained (the SupSup GG setting masks one shared output layer), per-task
biases of the model's layers train with them, and every layer has the same density (the code's
``er_sparsity`` option scales it per layer; not implemented).

Task-id inference (:meth:`SupSup.infer_task`, Sec. 3.3), ``methods.supsup.inference``:

* ``one-shot`` (the paper's rule, Eq. 4): for a batch of one unknown task, every learned task gets
  weight ``1/K`` in a superposition of the supermasks (and, here, of the per-task batch norms,
  biases and heads, which must have one size); the task whose weight's gradient most lowers the
  entropy of the mean prediction is chosen. Measured with unforget's per-task trained heads it
  is near or at chance (BENCHMARKS.md): superposing heads that were trained apart mixes
  unrelated label spaces, which the paper's shared output layer does not.
* ``min-entropy`` (default): each learned task's own model (its supermask, norms, biases and
  head) classifies the batch, and the task whose mean output entropy (divided by ``log C`` of
  its head, so that heads of different sizes compare) is lowest is chosen. ``K`` forward passes
  instead of one forward and one backward pass; the paper discusses this exhaustive search as
  the costlier alternative to its one-shot gradient (Sec. 3.3).
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field

from unforget.layers import norm_layers, weighted_layers
from unforget.layers.policies import Supermask
from unforget.methods.base import register_method
from unforget.methods.engine import PolicyMethod


class SupSupOptions(BaseModel):
    """``methods.supsup``: the supermask density and the scores' learning rate."""

    model_config = ConfigDict(extra="forbid")
    density: float = Field(0.5, gt=0, le=1, description="share of each layer's weights in a task's supermask")
    score_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the task's scores (SupSup GG: 1e-3)")
    inference: Literal["one-shot", "min-entropy"] = Field(
        "min-entropy", description="task-id inference rule at serving time: 'one-shot' (the paper's Eq. 4 gradient "
                                   "over a superposition of all tasks) or 'min-entropy' (every task's own mask, norms "
                                   "and head; the lowest mean output entropy wins)")


def signed_constant_(weight: torch.Tensor) -> None:
    """In place: ``sign(w) * sqrt(2) / sqrt(fan_in)`` (Kaiming's ReLU gain over the fan-in; a zero
    weight becomes ``+`` the constant)."""
    fan_in = weight[0].numel()
    std = math.sqrt(2.0) / math.sqrt(fan_in)
    with torch.no_grad():
        weight.copy_(torch.where(weight < 0, -std, std).to(weight.dtype))


def mean_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of ``softmax(logits)`` over the last dim, averaged over the batch (0-d;
    differentiable): the quantity both task-inference rules compare (Wortsman et al. 2020, Eq. 4)."""
    p = logits.softmax(-1)
    return -(p * p.clamp_min(1e-12).log()).sum(-1).mean()


@register_method
class SupSup(PolicyMethod):
    """SupSup (see module doc): one supermask per task over fixed random weights; exact."""

    name = "supsup"
    description = "SupSup (Wortsman et al. 2020): a learned supermask per task over fixed random weights; exact"
    Options = SupSupOptions
    exact = True

    def prepare_layer(self, layer) -> None:
        signed_constant_(layer.weight)
        layer.weight.requires_grad_(False)
        layer.policy = Supermask(self.options.density)

    claim_free = False  # the fixed weights belong to no task

    def task_optimizers(self, task: int) -> list[torch.optim.Optimizer]:
        """Adam over task ``task``'s scores; its biases and head with the configured optimizer;
        the weights and the per-task norms' affine parameters stay fixed (module doc)."""
        layers = [layer for _, layer in weighted_layers(self.model)]
        for layer in layers:
            layer.weight.requires_grad_(False)
        for _, n in norm_layers(self.model):  # non-affine: statistics only
            for p in n.norms[str(task)].parameters():
                p.requires_grad_(False)
        scores = [layer.scores[str(task)] for layer in layers]
        return [torch.optim.Adam(scores, lr=self.options.score_lr, fused=True),
                self.trainer.optimizer(self._task_parameters(task, norms=False), weight_decay=0.0)]

    def task_record(self, task: int, val: float, train_acc: float, claimed: int) -> dict:
        used = sum(int(layer.task_mask(task).sum()) for _, layer in weighted_layers(self.model))
        return {"density": self.options.density, "used_share": used / self.allocated_weights()}

    def size(self) -> dict:
        """Bytes to serve all tasks: the fixed weights as one sign bit each (plus one float per
        layer for the constant), one mask bit per weight per task, and the per-task biases,
        batch-norm statistics and heads (Wortsman et al. 2020, Sec. 4: masks cost 1 bit per
        weight and task)."""
        layers = [layer for _, layer in weighted_layers(self.model)]
        n = self.allocated_weights()
        bits = n * (1 + len(self.learned))
        return {"model_size_bytes": math.ceil(bits / 8) + 4 * len(layers) + self._per_task_bytes(), "expansion_ratio": 1.0,
                "released_ratio": None}

    def capacity(self) -> dict:
        """Per layer: allocated weights, the share in any task's supermask, and each task's mask
        size under ``owned`` (no task owns a weight here: the masks overlap)."""
        out = {}
        for name, layer in weighted_layers(self.model):
            masks = {t: layer.pick_mask(t) for t in self.learned}
            union = torch.zeros_like(layer.owner, dtype=torch.bool)
            for m in masks.values():
                union |= m
            out[name] = {"allocated": layer.weight.numel(), "used_share": float(union.float().mean()),
                         "owned": {str(t): int(m.sum()) for t, m in masks.items()}}
        return out

    def state(self):
        tensors, meta = super().state()
        meta["mask_policy"] = "supermask"
        return tensors, meta

    def infer_task(self, x: torch.Tensor, rule: Optional[str] = None) -> tuple[int, torch.Tensor]:
        """Task-id inference for a batch ``x`` of one task (module doc), by ``rule`` (default the
        ``inference`` option):

        * ``one-shot`` (Wortsman et al. 2020, Sec. 3.3, Eq. 4): ``alphas = 1/K``, ``H`` = entropy
          of the superposed model's softmax output (mean over the batch), task = ``argmin_i dH /
          d alpha_i``;
        * ``min-entropy``: task = ``argmin_i H(softmax(f_i(x))) / log C_i``, ``f_i`` task i's own
          model (mean over the batch).

        Returns ``(task id, that task's logits (N, C))``.

        Raises:
            ValueError: no task learned; an unknown rule; for ``one-shot``, learned tasks' heads
                that differ in size."""
        rule = rule or self.options.inference
        if rule not in ("one-shot", "min-entropy"):
            raise ValueError(f"unknown task-inference rule {rule!r}; use one-shot or min-entropy")
        k = len(self.learned)
        if k == 0:
            raise ValueError("no task learned yet")
        if k == 1:
            return 1, self.logits(x, 1)
        if rule == "min-entropy":
            best = None
            for t in sorted(self.learned):
                logits = self.logits(x, t)
                h = float(mean_entropy(logits.float())) / max(math.log(logits.shape[-1]), 1e-12)
                if best is None or h < best[0]:
                    best = (h, t, logits)
            return best[1], best[2]
        was = self.model.training
        self.model.eval()
        try:
            alphas = torch.full((k,), 1.0 / k, device=self.device, requires_grad=True)
            with torch.enable_grad():
                entropy = mean_entropy(self.model.superposed_logits(x.to(self.device), alphas))
                (grad,) = torch.autograd.grad(entropy, alphas)
        finally:
            self.model.train(was)
        t = int(torch.argmin(grad)) + 1
        return t, self.logits(x, t)
