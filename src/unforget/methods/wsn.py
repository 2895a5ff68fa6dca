"""WSN -- Winning SubNetworks (Kang et al. 2022, "Forget-free Continual Learning with Winning
Subnetworks", ICML, Sec. 3 and Alg. 1; official code ihaeyong/WSN), on the engine's task-aware
network with the :class:`~unforget.layers.policies.TopCapacity` mask policy.

One task t:

1. every weight has a real-valued score, shared by all tasks and kept between them; the task
   uses the top ``capacity`` share of ``|scores|`` in each layer (straight-through estimator to
   the scores, trained with the weights by the same SGD, as the official code);
2. of the weights it uses, those no earlier task uses are trained; those of earlier tasks are
   frozen -- exactly: no gradient, no weight decay, no momentum (they never enter an update);
3. when it ends, the weights it used and no earlier task owned become its own, the earlier ones
   it used become its pick mask, and the claimed weights it did not use return to the free
   pool with their values. Served as every engine task: ``W * (owner == t | (0 < owner < t &
   pick_t))``, so earlier tasks' outputs are bit-identical after any later task.

No growth and no compacting: the capacity bounds each task. Not in the paper's code: per-task
biases, batch norms and heads (exact, as every engine method), and weight decay folded into the
gradient of the task's trainable weights (``train.weight_decay``; 0 gives the reference's plain
SGD). The task masks are stored as the paper stores them (Sec. 3.3): each weight's masks of all
tasks as one code, entropy coded (bzip2, whose last stage is Huffman coding; the ``masks``
encoding of :mod:`unforget.storage`), and the reported model size counts exactly those bytes.
The SoftNet variant is not implemented.
"""
from __future__ import annotations

from typing import Optional

import torch
from pydantic import BaseModel, ConfigDict, Field

from unforget.layers import weighted_layers
from unforget.layers.policies import WSN_SCORES, TopCapacity
from unforget.methods.base import register_method
from unforget.methods.engine import PolicyMethod


class WSNOptions(BaseModel):
    """``methods.wsn``: the capacity ``c`` and the scores' learning rate."""

    model_config = ConfigDict(extra="forbid")
    capacity: float = Field(0.5, gt=0, le=1, description="share of each layer's weights a task uses (the paper's c: "
                                                        "0.03 - 0.5)")
    score_lr: Optional[float] = Field(None, gt=0, description="learning rate of the weight scores; null: train.lr "
                                                              "(the official code trains scores and weights with one SGD)")


@register_method
class WSN(PolicyMethod):
    """WSN (see module doc): a top-``capacity`` subnetwork per task; exact."""

    name = "wsn"
    description = "WSN (Kang et al. 2022): top-c% subnetwork per task over shared weight scores; exact, no growth"
    Options = WSNOptions
    exact = True

    def prepare_layer(self, layer) -> None:
        layer.policy = TopCapacity(self.options.capacity)

    def task_optimizers(self, task: int) -> list[torch.optim.Optimizer]:
        """One SGD (the configured optimizer) over the shared weights (the layer folds weight
        decay into the trainable ones' gradient), the task's biases, batch norms and head, and the
        shared scores (no decay), as the official code trains all of them together."""
        o: WSNOptions = self.options
        layers = [layer for _, layer in weighted_layers(self.model)]
        shared = [layer.weight for layer in layers]
        per_task = self._task_parameters(task)
        scores = [layer.scores[WSN_SCORES] for layer in layers]
        lr = self.trainer.config.lr
        return [self.trainer.optimizer([{"params": shared}, {"params": per_task},
                                        {"params": scores, "lr": o.score_lr or lr}], weight_decay=0.0)]

    def task_record(self, task: int, val: float, train_acc: float, claimed: int) -> dict:
        """Kang et al. 2022, Alg. 1 for one task (module doc, steps 1-3): what it used and kept."""
        weights = {"claimed": claimed, **self._weights_of(task)}
        weights["released"] = claimed - weights["kept"]
        used = sum(int(layer.task_mask(task).sum()) for _, layer in weighted_layers(self.model))
        return {"capacity_c": self.options.capacity, "used_share": used / self.allocated_weights(), "weights": weights,
                "widths": {n: g.width(task) for n, g in self.model.groups.items()}}
