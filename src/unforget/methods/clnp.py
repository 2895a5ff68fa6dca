"""CLNP: continual learning via neural pruning (Golkar, Kagan & Cho 2019, Alg. 1).

One task-aware network of fixed size, learned task by task at the level of units (neurons of
linear layers, filters of conv layers):

1. Task t claims every free unit (its incoming weights: owner 0 -> t; units released by an
   earlier task are re-initialised). It reads the active units of earlier tasks, whose incoming
   weights and biases stay frozen; only its own weights train, with an L1 penalty (one
   coefficient per layer) to make units go silent (Alg. 1; Sec. 3).
2. After training, a unit of task t is *active* when its mean activity (after ReLU) over the
   task's training data exceeds the layer's threshold; inactive units are released (incoming
   weights zeroed, owner t -> 0) and the weights from them into task t's active units (the
   *interference weights*) are zeroed for good (Alg. 1; Sec. 3). Weights from free
   units into earlier tasks' active units are zero by the same rule, so earlier tasks are
   exactly unchanged.
3. *Graceful forgetting* (Sec. 3): among the candidate thresholds, the largest whose
   validation accuracy is within ``margin`` of the best one is kept
   (:func:`select_threshold`); with ``finetune_epochs > 0`` the kept weights are then
   fine-tuned ("CLNP + FT"). Graceful forgetting trades task t's own accuracy for sparsity
   before task t is recorded, so the accuracy of earlier tasks never changes (BWT 0.0).

Heads (Secs. 3-4): ``multi`` gives every task its own head reading all active units of the
last hidden layer. ``single`` is the paper's shared output layer: each task's output weights
read only its own last-hidden units, which later tasks never reuse. It is stored as per-task
column blocks (one head module per task whose columns outside the task's own units are zero),
which computes the same function as one shared layer; output biases are per task. The method
cannot know the benchmark, so ``head`` defaults to ``multi``; a preset should choose ``single``
for permuted MNIST, as the paper does.

Deviations: biases are per task in the task-aware layers; task t's biases of earlier tasks'
units are copies of theirs, frozen, so a reused unit computes the same feature. With batch-norm
backbones (``vgg16_bn``'s convolutions, ``vgg16_bn_light``) each task keeps its own batch norm
(design.md), so reused units are re-normalised per task (earlier tasks are still exact); a unit's
activity is read after its batch norm where its layer has one, else after the layer (the
biased hidden FC layers of ``vgg16_bn``). Residual models are refused (units are
not the units of one layer there).

Capacity diagnostics (Sec. 4, Figs. 3, 4b, 5b): per layer and task, the share of units in use,
the units the task added, and the earlier tasks' units it reuses (their mean activity on its
training data exceeds its threshold); see :meth:`CLNP.capacity` and :func:`unforget.evaluation.plots.unit_capacity_plot`.
"""
from __future__ import annotations

import math
from typing import Literal, Optional, Sequence, Union

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from unforget.data.task import Task
from unforget.errors import ConfigError
from unforget.layers import begin_task, end_task, norm_layers
from unforget.layers import to_task_aware
from unforget.methods.base import Method, register_method, tensor_bytes
from unforget.methods.units import (GradMask, UnitLayer, chain_layers, column_mask, mean_activity,
                                    reinit_released_rows, unit_owner)
from unforget.training import Hook, TrainState

DEFAULT_THRESHOLDS = [0.0, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0]
"""Candidate activation thresholds (absolute mean activity after ReLU)."""


class CLNPOptions(BaseModel):
    """Options of the ``methods.clnp`` config section.

    ``l1`` and ``layer_scale`` take one value for every layer or a list with one value per
    conv / linear layer of the backbone (module order). Sparsity decides how many tasks fit: on
    permuted MNIST (2 x 500 MLP, 2 epochs) ``l1 = 1e-4`` filled the first hidden layer after
    two tasks, ``3e-3`` used under a quarter of it after three (at some accuracy cost).
    """

    model_config = ConfigDict(extra="forbid")
    head: Literal["multi", "single"] = Field("multi", description="per-task heads, or the paper's shared output layer")
    l1: Union[float, list[float]] = Field(1e-3, description="L1 coefficient, one for all layers or one per layer")
    thresholds: list[float] = Field(default_factory=lambda: list(DEFAULT_THRESHOLDS),
                                    description="candidate activation thresholds, ascending")
    layer_scale: Optional[list[float]] = Field(None, description="per-layer factor on the threshold")
    margin: float = Field(0.005, ge=0, le=1, description="graceful forgetting margin m (0: no accuracy traded)")
    finetune_epochs: int = Field(0, ge=0, description="fine-tuning epochs after pruning (CLNP + FT)")

    @field_validator("l1")
    @classmethod
    def _l1(cls, v):
        if any(c < 0 for c in (v if isinstance(v, list) else [v])):
            raise ValueError("L1 coefficients must be >= 0")
        return v

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, v):
        if not v or any(t < 0 for t in v) or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError("thresholds must be a non-empty, strictly ascending list of values >= 0")
        return v

    @field_validator("layer_scale")
    @classmethod
    def _scale(cls, v):
        if v is not None and any(s <= 0 for s in v):
            raise ValueError("layer_scale factors must be > 0")
        return v


def select_threshold(curve: Sequence[tuple[float, float]], margin: float) -> float:
    """Graceful forgetting: the largest threshold whose accuracy is at least the best accuracy
    of ``curve`` minus ``margin`` (the sparsest network within the margin).

    Args:
        curve: ``(threshold, validation accuracy)`` pairs, any order; a larger threshold
            prunes more units.
        margin: the graceful forgetting margin ``m >= 0`` (accuracy as a fraction); ``0`` keeps
            the sparsest of the best networks. A tolerance of 1e-12 absorbs float rounding.

    Raises:
        ValueError: empty ``curve`` or negative ``margin``.

    Source: Golkar et al. 2019, Sec. 3 (graceful forgetting) and Alg. 1.
    """
    if not curve:
        raise ValueError("select_threshold needs at least one (threshold, accuracy) pair")
    if margin < 0:
        raise ValueError(f"the graceful forgetting margin must be >= 0, got {margin}")
    best = max(acc for _, acc in curve)
    return max(th for th, acc in curve if acc >= best - margin - 1e-12)


class L1Penalty(Hook):
    """``sum_l c_l * sum |W_l|`` over the weights task ``task`` owns (Golkar et al. 2019,
    Sec. 3: L1 regularisation drives units to inactivity)."""

    def __init__(self, chain: Sequence[UnitLayer], coefs: Sequence[float], task: int) -> None:
        self.terms = [(ul.layer, c) for ul, c in zip(chain, coefs) if c > 0]
        self.task = task
        self.own = None

    def penalty(self, state: TrainState) -> Optional[torch.Tensor]:
        if not self.terms:
            return None
        if self.own is None:
            self.own = [(l, c, (l.owner == self.task).to(l.weight.dtype)) for l, c in self.terms]
        return sum(c * (l.weight.abs() * own).sum() for l, c, own in self.own)


@register_method
class CLNP(Method):
    """Continual learning via neural pruning (see the module doc); exact unforgetting."""

    name = "clnp"
    description = "CLNP (Golkar et al. 2019): neuron-level pruning, frozen active units, graceful forgetting"
    Options = CLNPOptions
    exact = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        o: CLNPOptions = self.options
        self.model = to_task_aware(self.new_backbone())
        self.chain = chain_layers(self.model)
        self.l1 = self._per_layer(o.l1, "l1")
        self.scale = self._per_layer(o.layer_scale if o.layer_scale is not None else 1.0, "layer_scale")
        self.readers = {ul.group.name: [r for r in self.chain if r.source is ul.group] for ul in self.chain}
        self.feature = self.model.feature_group
        self.total_weights = sum(ul.layer.weight.numel() for ul in self.chain)
        self.history: list[dict] = []

    def _per_layer(self, value, what: str) -> list[float]:
        n = len(self.chain)
        if isinstance(value, list):
            if len(value) != n:
                raise ConfigError(f"configuration: methods.clnp.{what} has {len(value)} entries; "
                                  f"the model has {n} layers ({', '.join(ul.group.name for ul in self.chain)})")
            return [float(v) for v in value]
        return [float(value)] * n

    # --------------------------------------------------------------- pieces of Alg. 1
    def _head(self, task: int) -> torch.nn.Linear:
        return self.model.heads[str(task)]

    def _feature_layer(self) -> Optional[int]:
        return next((i for i, ul in enumerate(self.chain) if ul.group.name == self.feature), None)

    @torch.no_grad()
    def _prepare(self, t: int, cand: list[torch.Tensor]) -> None:
        """Re-initialise released units claimed by ``t``; copy earlier tasks' biases of their units
        into task ``t``'s biases; single head: zero the columns of earlier last-hidden units."""
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + t)
        for ul in self.chain:
            reinit_released_rows(ul, t, gen)
            if ul.layer.has_bias:
                owner, b = unit_owner(ul.layer), ul.layer.biases[str(t)]
                for s in self.learned:
                    sel = owner == s
                    b.data[sel] = ul.layer.biases[str(s)].data[sel]
        f = self._feature_layer()
        if self.options.head == "single" and f is not None:
            self._head(t).weight.data[:, ~cand[f]] = 0

    def _optimizers(self, t: int) -> list[torch.optim.Optimizer]:
        shared = [ul.layer.weight for ul in self.chain]
        biases = [ul.layer.biases[str(t)] for ul in self.chain if ul.layer.has_bias]
        per_task = [p for _, n in norm_layers(self.model) for p in n.norms[str(t)].parameters()]
        per_task += list(self._head(t).parameters())
        return [self.trainer.sgd([{"params": shared, "weight_decay": 0.0}, {"params": biases, "weight_decay": 0.0},
                                  {"params": per_task}])]

    def _grad_masks(self, t: int, trainable: list[torch.Tensor], after_pruning: bool) -> GradMask:
        """Frozen entries while ``t`` trains: biases of units not in ``trainable`` (earlier
        tasks' units; after pruning also the released ones), head columns of units outside the
        task's own (single head) or of free units (after pruning), and, after pruning, the
        interference weights from free units into task ``t``'s units."""
        masks = []
        for ul, keep in zip(self.chain, trainable):
            if ul.layer.has_bias:
                masks.append((ul.layer.biases[str(t)], keep))
            if after_pruning and ul.source is not None:
                src = next(s for s in self.chain if s.group is ul.source)
                masks.append((ul.layer.weight, ~column_mask(unit_owner(src.layer) == 0, ul.layer.weight)))
        f = self._feature_layer()
        head = self._head(t).weight
        if f is not None:
            if self.options.head == "single":
                masks.append((head, trainable[f].expand_as(head)))
            elif after_pruning:
                masks.append((head, (unit_owner(self.chain[f].layer) != 0).expand_as(head)))
        return GradMask(masks)

    def _fit(self, task: Task, hooks: list[Hook], epochs: Optional[int] = None, desc: str = "train") -> float:
        """Train task ``task.id``'s own weights (weight decay by hand on them only) plus
        ``hooks``; returns the validation accuracy. Fine-tuning runs without the LR schedule."""
        for ul in self.chain:  # decay folded into the owned weights' gradient (layers/masks.py)
            ul.layer.decay = self.trainer.config.weight_decay
        self.trainer.fit(self.model, task, self._optimizers(task.id), hooks=hooks, epochs=epochs, desc=desc,
                         schedule=epochs is None)
        return self.trainer.accuracy(self.model, task, "val")

    def _train_batches(self, task: Task):
        bs = self.trainer.config.eval_batch_size
        for i in range(0, len(task.train), bs):
            yield task.transform(task.train.x[i:i + bs], train=False).to(self.device)

    @torch.no_grad()
    def _prune(self, t: int, cand: list[torch.Tensor], activity: list[torch.Tensor],
               theta: float) -> list[torch.Tensor]:
        """Release task ``t``'s units whose activity is <= ``theta`` x the layer's scale and zero
        the weights from them into task ``t``'s units and head; returns the released masks."""
        dropped = []
        head = self._head(t).weight
        for i, ul in enumerate(self.chain):
            d = cand[i] & (activity[i].to(cand[i].device) <= theta * self.scale[i])
            dropped.append(d)
            if not bool(d.any()):
                continue
            w, view = ul.layer.weight, (-1, *([1] * (ul.layer.weight.dim() - 1)))
            w.data.masked_fill_(d.view(view), 0)
            ul.layer.owner.masked_fill_(d.view(view), 0)
            if ul.layer.has_bias:
                ul.layer.biases[str(t)].data[d] = 0
            for r in self.readers[ul.group.name]:
                rw = r.layer.weight
                r_view = (-1, *([1] * (rw.dim() - 1)))
                rw.data.masked_fill_((unit_owner(r.layer) == t).view(r_view) & column_mask(d, rw), 0)
            if ul.group.name == self.feature:
                head.data[:, d] = 0
            ul.layer.invalidate()
        return dropped

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _restore(self, snap: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(snap)
        for ul in self.chain:
            ul.layer.invalidate()

    # --------------------------------------------------------------- Method interface
    def learn(self, task: Task) -> dict:
        """Golkar et al. 2019, Alg. 1 for task ``task.id``: train the free units with L1, choose
        the activation threshold by graceful forgetting, release the inactive units, fine-tune
        (optional), freeze. Returns the task record; its ``unit_capacity`` holds the per-layer
        capacity numbers of this task (``used_share``, ``new_units``, ``reused_units``, ...)."""
        o: CLNPOptions = self.options
        t = task.id
        begin_task(self.model, t, task.n_classes, claim_free=True, learn_picks=False)
        owners = [unit_owner(ul.layer) for ul in self.chain]
        earlier = [(u > 0) & (u < t) for u in owners]  # active units of earlier tasks
        cand = [u == t for u in owners]  # the free units task t claimed
        self._prepare(t, cand)
        unpruned = self._fit(task, [self._grad_masks(t, cand, False), L1Penalty(self.chain, self.l1, t)])
        activity = mean_activity(self.model, self.chain, self._train_batches(task), t)
        snap, curve = self._snapshot(), []
        for theta in o.thresholds:
            self._prune(t, cand, activity, theta)
            curve.append((theta, self.trainer.accuracy(self.model, task, "val")))
            self._restore(snap)
        del snap
        theta = select_threshold(curve, o.margin)
        dropped = self._prune(t, cand, activity, theta)
        val = dict(curve)[theta]
        if o.finetune_epochs:
            kept = [c & ~d for c, d in zip(cand, dropped)]
            val = self._fit(task, [self._grad_masks(t, kept, True)], epochs=o.finetune_epochs, desc="finetune")
        end_task(self.model, t)
        self.learned.append(t)
        layers = self._record_capacity(t, theta, earlier, cand, dropped, activity)
        n_cand = sum(int(c.sum()) for c in cand)
        return {"val_accuracy": val, "unpruned_val_accuracy": unpruned,
                "accuracy_goal": max(a for _, a in curve) - o.margin, "threshold": theta,
                "threshold_curve": [[th, a] for th, a in curve],
                "pruning_ratio": sum(int(d.sum()) for d in dropped) / n_cand if n_cand else 0.0,
                "width": None, "unit_capacity": layers}

    def _record_capacity(self, t, theta, earlier, cand, dropped, activity) -> dict:
        """Task ``t``'s per-layer capacity numbers (see :meth:`capacity`), appended to the history."""
        layers = {}
        for i, ul in enumerate(self.chain):
            owner = unit_owner(ul.layer)
            active_t = activity[i].to(owner.device) > theta * self.scale[i]
            reused = earlier[i] & active_t
            if ul.group.name == self.feature and self.options.head == "single":
                reused = torch.zeros_like(reused)
            n_earlier = int(earlier[i].sum())
            layers[ul.group.name] = {
                "used_share": float((owner > 0).sum()) / ul.units,
                "new_units": int((cand[i] & ~dropped[i]).sum()),
                "reused_units": int(reused.sum()),
                "reused_share": float(reused.sum()) / n_earlier if n_earlier else 0.0,
                "free_units": int((owner == 0).sum())}
        self.history.append({"task": t, "threshold": theta, "layers": layers})
        return layers

    def model_for(self, task_id: int):
        return self.model

    def size(self) -> dict:
        """Bytes to serve all tasks: the weights in use (rows of active units, columns of units
        active for the same or earlier tasks; float32), each unit's owner task
        (``ceil(log2(K+1))`` bits), per-task biases and batch norms, and the heads (single head:
        only each task's own column block). The network never grows: expansion 1.0; Red. = free
        weights / all weights."""
        K = max(self.learned, default=0)
        used, units = 0, 0
        for ul in self.chain:
            rows = unit_owner(ul.layer).long().cpu()
            units += ul.units
            per_col = math.prod(ul.layer.weight.shape[2:])
            if ul.source is None:
                cols_le = torch.full((K + 1,), ul.layer.weight.shape[1])
            else:
                src = unit_owner(next(s for s in self.chain if s.group is ul.source).layer).long().cpu()
                cols_le = torch.tensor([int(((src > 0) & (src <= s)).sum()) for s in range(K + 1)])
            cols_le[0] = 0
            used += per_col * int(cols_le[rows].sum())
        per_task = tensor_bytes(p for ul in self.chain for p in ul.layer.biases.values())
        per_task += tensor_bytes(x for _, n in norm_layers(self.model) for x in
                                 list(n.norms.parameters()) + list(n.norms.buffers()))
        if self.options.head == "single" and self._feature_layer() is not None:
            owner = unit_owner(self.chain[self._feature_layer()].layer)
            per_task += sum(4 * h.out_features * (int((owner == int(k)).sum()) + 1)
                            for k, h in self.model.heads.items())
        else:
            per_task += tensor_bytes(self.model.heads.parameters())
        bits = units * max(1, math.ceil(math.log2(K + 1)))
        free = sum(int((ul.layer.owner == 0).sum()) for ul in self.chain)
        return {"model_size_bytes": used * 4 + math.ceil(bits / 8) + per_task, "expansion_ratio": 1.0,
                "released_ratio": free / self.total_weights}

    def capacity(self) -> dict:
        """CLNP's diagnostics (Golkar et al. 2019, Figs. 3, 4b, 5b), JSON-able, one entry per
        layer (named by its width group)::

            {group: {"layer": module name, "units": n, "used_share": now, "free_units": now,
                     "per_task": {"task": [1, 2, ...], "threshold": [...], "used_share": [...],
                                  "new_units": [...], "reused_units": [...], "reused_share": [...]}}}

        ``used_share`` = units active for any learned task / units (after each task in
        ``per_task``); ``new_units`` = units the task added; ``reused_units`` = earlier tasks'
        units whose mean activity on the task's training data exceeds its threshold (0 for the
        last hidden layer with a single head); ``reused_share`` = reused / earlier tasks' units of
        the layer; ``threshold`` = the task's chosen threshold times the layer's scale.
        """
        out = {}
        keys = ("used_share", "new_units", "reused_units", "reused_share")
        for i, ul in enumerate(self.chain):
            owner = unit_owner(ul.layer)
            g = ul.group.name
            per_task = {"task": [h["task"] for h in self.history],
                        "threshold": [h["threshold"] * self.scale[i] for h in self.history]}
            per_task.update({k: [h["layers"][g][k] for h in self.history] for k in keys})
            out[g] = {"layer": ul.name, "units": ul.units, "used_share": float((owner > 0).sum()) / ul.units,
                      "free_units": int((owner == 0).sum()), "per_task": per_task}
        return out

    def state(self):
        meta = {"learned": self.learned, "heads": {k: h.out_features for k, h in self.model.heads.items()},
                "history": self.history}
        return dict(self.model.state_dict()), meta

    def load_state(self, tensors, meta) -> None:
        for t in meta["learned"]:
            begin_task(self.model, t, meta["heads"][str(t)], claim_free=False, learn_picks=False)
            end_task(self.model, t)
        self.model.load_state_dict(tensors)
        for ul in self.chain:
            ul.layer.invalidate()
        self.learned = list(meta["learned"])
        self.history = list(meta["history"])
