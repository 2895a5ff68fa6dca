"""CLNP: continual learning via neural pruning (Golkar, Kagan & Cho 2019, arXiv:1903.04476v1, Alg. 1).

One task-aware network of fixed size, learned task by task at the level of units (neurons of
linear layers, filters of conv layers):

1. Task t claims every free unit (its incoming weights: owner 0 -> t; units released by an
   earlier task are re-initialised). It reads the active units of earlier tasks, whose incoming
   weights and biases stay frozen; only its own weights train (with ``train.optimizer``: the
   paper trains with Adam), with an L1 penalty ``lambda_l * sum |W_l|`` on its own weights of
   every layer, the output layer included, one ``lambda`` per layer (Sec. 2.2, "Sparsification";
   Sec. 3.1: 1e-7, 1e-5 and 1e-6 for the first, second and final layers on permuted MNIST).
2. After training, a unit of task t is *active* when its mean activity (after ReLU) over the
   task's training data exceeds its layer's threshold; inactive units are released (incoming
   weights zeroed, owner t -> 0) and the weights from them into task t's active units (the
   *interference weights*) are zeroed for good (Alg. 1; Sec. 2.1). Weights from free units
   into earlier tasks' active units are zero by the same rule, so earlier tasks are exactly
   unchanged.
3. *Graceful forgetting* (Sec. 2.2): one model is trained per point of a grid of L1 scales and
   learning rates (``grid_l1_scale`` x ``grid_lr``; by default one point), on the first task
   only (``grid_tasks: first``; later tasks keep the chosen point, as the paper settles on the
   first task's values for permuted MNIST, Sec. 3.1) or on every task (``all``, the wide CIFAR
   net, Sec. 3.2). The best validation accuracy among them sets the floor ``best - margin``; every
   model within the margin is sparsified with the highest per-layer thresholds that keep it at
   the floor (:func:`~unforget.methods.graceful.search_thresholds`), and the sparsest is kept
   (:func:`~unforget.methods.graceful.select_sparsest`). With ``early_stop_patience`` each
   training keeps its best validation epoch and stops after that many epochs without a better
   one (the wide CIFAR net, Sec. 3.2). With ``finetune_epochs > 0`` the kept weights are then
   fine-tuned at ``finetune_lr`` with L1 ``finetune_l1`` ("CLNP + FT", Sec. 3.2: 20 epochs at
   1e-4 with L1 5e-5 after pruning at m = 4 %). Graceful forgetting trades task t's own
   accuracy for sparsity before task t is recorded, so the accuracy of earlier tasks never
   changes (BWT 0.0).

Heads (Sec. 2.1, "Output architecture"): ``multi`` gives every task its own head reading all
active units of the last hidden layer. ``single`` is the paper's shared output layer: each task's
output weights read only its own last-hidden units, which later tasks never reuse. It is stored
as per-task column blocks (one head module per task whose columns outside the task's own units
are zero), which computes the same function as one shared layer; output biases are per task.
The method cannot know the benchmark, so ``head`` defaults to ``multi``; a preset should choose
``single`` for permuted MNIST, as the paper does.

Deviations: biases are per task in the task-aware layers; task t's biases of earlier tasks'
units are copies of theirs, frozen, so a reused unit computes the same feature. With batch-norm
backbones (``clnp_convnet_wide``, ``vgg16_bn``, ``vgg16_bn_light``) each task keeps its own batch
norm (design.md), so reused units are re-normalised per task (earlier tasks are still exact); a
unit's activity is read after its batch norm where its layer has one, else after the layer (the
biased hidden FC layers of ``vgg16_bn``). Residual models are refused (units are not the units of
one layer there).

Capacity diagnostics (Sec. 3, Figs. 3, 4b, 5b): per layer and task, the share of units in use,
the units the task added, and the earlier tasks' units it reuses (their mean activity on its
training data exceeds its threshold); see :meth:`CLNP.capacity` and
:func:`unforget.evaluation.plots.unit_capacity_plot`.
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
from unforget.methods.graceful import search_thresholds, select_sparsest, threshold_candidates
from unforget.methods.units import (GradMask, chain_layers, column_mask, mean_activity,
                                    reinit_released_rows, row_mask, unit_owner)
from unforget.storage import stored_bytes
from unforget.training import Hook, TrainState

Coefficients = Union[float, list[float]]
"""One L1 coefficient for every layer, or one per layer and a last one for the output layer."""


class CLNPOptions(BaseModel):
    """Options of the ``methods.clnp`` config section.

    ``l1`` and ``finetune_l1`` take one value for every layer or a list with one value per conv /
    linear layer of the backbone (module order) and a last one for the output layer (the task's
    head). Sparsity decides how many tasks fit; the margin is a fraction (0.0005 = the paper's
    0.05 %).
    """

    model_config = ConfigDict(extra="forbid")
    head: Literal["multi", "single"] = Field("multi", description="per-task heads, or the paper's shared output layer")
    l1: Coefficients = Field(1e-3, description="L1 coefficient: one for all layers, or one per layer plus one for "
                                               "the output layer")
    margin: float = Field(0.005, ge=0, le=1, description="graceful forgetting margin m (0: no accuracy traded)")
    threshold_steps: int = Field(20, ge=1, description="per-layer threshold scan: candidates release 0, 1/steps, "
                                                       "2/steps, ..., all of the layer's new units, least active first")
    grid_l1_scale: list[float] = Field(default_factory=lambda: [1.0], min_length=1,
                                       description="graceful-forgetting grid: factors on every l1 coefficient")
    grid_lr: Optional[list[float]] = Field(None, min_length=1,
                                           description="graceful-forgetting grid: learning rates (null: train.lr)")
    grid_tasks: Literal["first", "all"] = Field("first", description="run the grid on the first task (later tasks "
                                                "keep its choice) or on every task")
    early_stop_patience: Optional[int] = Field(None, ge=1, description="keep the best validation epoch, stop after "
                                               "this many epochs without a better one (null: train all epochs)")
    finetune_epochs: int = Field(0, ge=0, description="fine-tuning epochs after pruning (CLNP + FT)")
    finetune_lr: float = Field(1e-4, gt=0, description="learning rate of the fine-tuning (the paper's 1e-4)")
    finetune_l1: Coefficients = Field(5e-5, description="L1 coefficient(s) of the fine-tuning (the paper's 5e-5)")

    @field_validator("l1", "finetune_l1")
    @classmethod
    def _l1(cls, v):
        if any(c < 0 for c in (v if isinstance(v, list) else [v])):
            raise ValueError("L1 coefficients must be >= 0")
        return v

    @field_validator("grid_l1_scale")
    @classmethod
    def _scales(cls, v):
        if any(x < 0 for x in v):
            raise ValueError("L1 scales must be >= 0")
        return v

    @field_validator("grid_lr")
    @classmethod
    def _lrs(cls, v):
        if v is not None and any(x <= 0 for x in v):
            raise ValueError("learning rates must be > 0")
        return v


class L1Penalty(Hook):
    """The L1 weight regulator ``sum_l c_l * sum |W_l * mask_l|`` of each batch (Golkar et al.
    2019, Sec. 2.2: it drives units to inactivity), applied as its gradient: after each backward
    pass, ``c_l * sign(W_l) * mask_l`` is added to ``W_l.grad``. These are the values autograd of
    the penalty gives (``sign(0) = 0``), bit for bit, in half the memory passes: the penalty by
    autograd cost 0.15x a plain training step of the paper's MLP (``benchmarks/clnp_step.py``).
    It must run before hooks that zero frozen gradient entries (:class:`GradMask`).

    Args:
        terms: ``(weight, coefficient, mask)`` triples; ``mask`` (the weight's shape and dtype,
            1 where the penalty applies) or ``None`` for the whole tensor; zero coefficients are
            skipped.
    """

    def __init__(self, terms: Sequence[tuple[torch.Tensor, float, Optional[torch.Tensor]]]) -> None:
        self.terms = [(w, c, m) for w, c, m in terms if c > 0]

    def value(self) -> torch.Tensor:
        """The penalty's value (a 0-dim tensor; ``0`` without terms), for reports and tests."""
        return sum((c * (w.abs() if m is None else w.abs() * m).sum() for w, c, m in self.terms),
                   torch.zeros(()))

    @torch.no_grad()
    def after_backward(self, state: TrainState) -> None:
        for w, c, m in self.terms:
            g = torch.sign(w)
            if m is not None:
                g.mul_(m)
            if w.grad is None:
                w.grad = g.mul_(c)
            else:
                w.grad.add_(g, alpha=c)


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
        self.finetune_l1 = self._per_layer(o.finetune_l1, "finetune_l1")
        self.readers = {ul.group.name: [r for r in self.chain if r.source is ul.group] for ul in self.chain}
        self.feature = self.model.feature_group
        self.total_weights = sum(ul.layer.weight.numel() for ul in self.chain)
        self.history: list[dict] = []
        self.chosen: Optional[dict] = None
        """The grid point the first task chose (``{"l1_scale", "lr"}``), kept for later tasks."""

    def _per_layer(self, value: Coefficients, what: str) -> list[float]:
        """One coefficient per chain layer plus the output layer (last)."""
        n = len(self.chain) + 1
        if isinstance(value, list):
            if len(value) != n:
                names = [ul.group.name for ul in self.chain] + ["output"]
                raise ConfigError(f"configuration: methods.clnp.{what} has {len(value)} entries; the model has "
                                  f"{n} layers ({', '.join(names)})")
            return [float(v) for v in value]
        return [float(value)] * n

    # --------------------------------------------------------------- pieces of Alg. 1
    def _head(self, task: int) -> torch.nn.Module:
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

    def _optimizers(self, t: int, lr: Optional[float]) -> list[torch.optim.Optimizer]:
        """``train.optimizer`` over the shared weights and task ``t``'s biases without optimizer
        weight decay (they hold frozen entries; the decay of the owned weights is folded into
        their gradient, ``layers/masks.py``) and over task ``t``'s batch norms and head with it."""
        shared = [ul.layer.weight for ul in self.chain]
        biases = [ul.layer.biases[str(t)] for ul in self.chain if ul.layer.has_bias]
        per_task = [p for _, n in norm_layers(self.model) for p in n.norms[str(t)].parameters()]
        per_task += list(self._head(t).parameters())
        return [self.trainer.optimizer([{"params": shared, "weight_decay": 0.0},
                                        {"params": biases, "weight_decay": 0.0}, {"params": per_task}], lr=lr)]

    def _l1_penalty(self, t: int, coefs: Sequence[float]) -> L1Penalty:
        """The L1 regulator on task ``t``'s own weights of every layer and on its head."""
        terms = [(ul.layer.weight, c, (ul.layer.owner == t).to(ul.layer.weight.dtype))
                 for ul, c in zip(self.chain, coefs)]
        return L1Penalty(terms + [(self._head(t).weight, coefs[-1], None)])

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
                masks.append((head, column_mask(trainable[f], head)))
            elif after_pruning:
                masks.append((head, column_mask(unit_owner(self.chain[f].layer) != 0, head)))
        return GradMask(masks)

    def _fit(self, task: Task, hooks: list[Hook], lr: Optional[float], epochs: Optional[int] = None,
             desc: str = "train", patience: Optional[int] = None) -> tuple[float, int]:
        """Train task ``task.id``'s own weights (weight decay by hand on them only) plus
        ``hooks`` at ``lr`` (``None``: ``train.lr``) for ``epochs`` (``None``: ``train.epochs``
        with the LR schedule; else a constant LR). With ``patience``, keep the epoch with the
        best validation accuracy and stop after ``patience`` epochs without a better one.
        Returns ``(validation accuracy, epochs trained)``."""
        for ul in self.chain:  # decay folded into the owned weights' gradient (layers/masks.py)
            ul.layer.decay = self.trainer.config.weight_decay
        opts = self._optimizers(task.id, lr)
        n = self.trainer.config.epochs if epochs is None else epochs
        if patience is None:
            self.trainer.fit(self.model, task, opts, hooks=hooks, epochs=n, desc=desc, schedule=epochs is None)
            return self.trainer.accuracy(self.model, task, "val"), n
        scheds = self.trainer.schedulers(opts) if epochs is None else []
        best, best_state, bad, done = -1.0, None, 0, 0
        while done < n and bad < patience:
            done += 1
            self.trainer.fit(self.model, task, opts, hooks=hooks, epochs=1, desc=f"{desc} {done}/{n}", schedule=scheds)
            val = self.trainer.accuracy(self.model, task, "val")
            if val > best:
                best, best_state, bad = val, self._snapshot(), 0
            else:
                bad += 1
        self._restore(best_state)
        return self.trainer.accuracy(self.model, task, "val"), done

    def _train_batches(self, task: Task):
        bs = self.trainer.config.eval_batch_size
        for i in range(0, len(task.train), bs):
            yield task.transform(task.train.x[i:i + bs], train=False).to(self.device)

    @staticmethod
    def _inactive(cand: list[torch.Tensor], activity: list[torch.Tensor],
                  thresholds: Sequence[float]) -> list[torch.Tensor]:
        """Per layer, the candidate units whose activity is ``<= `` the layer's threshold."""
        return [c & (a.to(c.device) <= th) for c, a, th in zip(cand, activity, thresholds)]

    @torch.no_grad()
    def _release(self, t: int, dropped: list[torch.Tensor]) -> None:
        """Release task ``t``'s units in ``dropped`` (one mask per layer) and zero the weights
        from them into task ``t``'s units and head."""
        head = self._head(t).weight
        for ul, d in zip(self.chain, dropped):
            if not bool(d.any()):
                continue
            ul.layer.release(row_mask(d, ul.layer.weight))
            if ul.layer.has_bias:
                ul.layer.biases[str(t)].data[d] = 0
            for r in self.readers[ul.group.name]:
                rw = r.layer.weight
                r.layer.zero_weights(row_mask(unit_owner(r.layer) == t, rw) & column_mask(d, rw))
            if ul.group.name == self.feature:
                head.data[:, d] = 0

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _restore(self, snap: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(snap)  # the layers drop their cached masks themselves

    # --------------------------------------------------------------- graceful forgetting
    def _grid(self) -> list[dict]:
        """The grid points to train for the next task: the first task's choice once made."""
        o: CLNPOptions = self.options
        if self.chosen is not None and o.grid_tasks == "first":
            return [dict(self.chosen)]
        return [{"l1_scale": s, "lr": lr} for s in o.grid_l1_scale for lr in (o.grid_lr or [None])]

    def _train_point(self, task: Task, cand: list[torch.Tensor], point: dict) -> dict:
        """Train task ``task.id`` at one grid point; returns its record with the trained state
        and the units' mean activities on the training data."""
        t = task.id
        hooks = [self._l1_penalty(t, [c * point["l1_scale"] for c in self.l1]), self._grad_masks(t, cand, False)]
        val, epochs = self._fit(task, hooks, point["lr"], patience=self.options.early_stop_patience)
        return {**point, "unpruned_val": val, "epochs": epochs, "state": self._snapshot(),
                "activity": mean_activity(self.model, self.chain, self._train_batches(task), t)}

    def _sparsify(self, task: Task, cand: list[torch.Tensor], model: dict, floor: float) -> None:
        """Search ``model``'s per-layer thresholds (it is the trained state in the network) and
        record them, the accuracy and the units released in ``model``."""
        activity, snap = model["activity"], model["state"]

        def evaluate(thresholds: list[float]) -> float:
            self._release(task.id, self._inactive(cand, activity, thresholds))
            acc = self.trainer.accuracy(self.model, task, "val")
            self._restore(snap)
            return acc

        candidates = [threshold_candidates(a.to(c.device)[c], self.options.threshold_steps)
                      for a, c in zip(activity, cand)]
        thresholds, acc, trace = search_thresholds(evaluate, candidates, floor)
        model.update(thresholds=thresholds, val=acc, trace=trace,
                     released=sum(int(d.sum()) for d in self._inactive(cand, activity, thresholds)))

    def _graceful(self, task: Task, cand: list[torch.Tensor]) -> tuple[dict, list[dict], float]:
        """Golkar et al. 2019, Sec. 2.2: train every grid point from the same start, keep those
        within the margin of the best validation accuracy, sparsify each as far as the margin
        allows, pick the sparsest. Leaves the chosen trained (unpruned) state in the network;
        returns ``(chosen, every point's record, best unpruned accuracy)``."""
        o: CLNPOptions = self.options
        start, points, kept, best = self._snapshot(), [], [], -1.0
        for point in self._grid():
            self._restore(start)
            model = self._train_point(task, cand, point)
            points.append(model)
            best = max(best, model["unpruned_val"])
            kept = [m for m in kept + [model] if m["unpruned_val"] >= best - o.margin]
            for m in points:  # only the models within the margin keep their trained state
                if all(m is not k for k in kept):
                    m["state"] = None
        del start
        floor = best - o.margin
        for model in kept:
            self._restore(model["state"])
            self._sparsify(task, cand, model, floor)
        chosen = kept[select_sparsest([(m["val"], m["released"]) for m in kept], floor)]
        self._restore(chosen["state"])
        return chosen, points, best

    # --------------------------------------------------------------- Method interface
    def learn(self, task: Task) -> dict:
        """Golkar et al. 2019, Alg. 1 for task ``task.id``: train the free units with L1 (per grid
        point), choose the model and its per-layer thresholds by graceful forgetting, release the
        inactive units, fine-tune (optional), freeze. Returns the task record: ``val_accuracy``
        (kept model), ``best_val_accuracy`` (best unpruned model of the grid),
        ``accuracy_goal`` (``best - margin``), ``thresholds`` per layer, ``threshold_search``
        (``[layer, threshold, accuracy]`` tried), ``grid`` (every point's ``l1_scale``, ``lr``,
        accuracies, released units and epochs; ``val`` and ``released`` are null for points
        outside the margin), ``chosen`` (the kept point), ``epochs`` (its training epochs),
        ``pruning_ratio`` (released / new units) and ``unit_capacity`` (per-layer numbers of
        :meth:`capacity`)."""
        o: CLNPOptions = self.options
        t = task.id
        begin_task(self.model, t, task.n_classes, claim_free=True, learn_picks=False)
        owners = [unit_owner(ul.layer) for ul in self.chain]
        earlier = [(u > 0) & (u < t) for u in owners]  # active units of earlier tasks
        cand = [u == t for u in owners]  # the free units task t claimed
        self._prepare(t, cand)
        chosen, points, best = self._graceful(task, cand)
        if len(points) > 1 and o.grid_tasks == "first":
            self.chosen = {"l1_scale": chosen["l1_scale"], "lr": chosen["lr"]}
        dropped = self._inactive(cand, chosen["activity"], chosen["thresholds"])
        self._release(t, dropped)
        val = chosen["val"]
        if o.finetune_epochs:
            kept = [c & ~d for c, d in zip(cand, dropped)]
            hooks = [self._l1_penalty(t, self.finetune_l1), self._grad_masks(t, kept, True)]
            val, _ = self._fit(task, hooks, o.finetune_lr, epochs=o.finetune_epochs, desc="finetune")
        end_task(self.model, t)
        self.learned.append(t)
        layers = self._record_capacity(t, chosen["thresholds"], earlier, cand, dropped, chosen["activity"])
        n_cand = sum(int(c.sum()) for c in cand)
        names = [ul.group.name for ul in self.chain]
        return {"val_accuracy": val, "unpruned_val_accuracy": chosen["unpruned_val"], "best_val_accuracy": best,
                "accuracy_goal": best - o.margin, "epochs": chosen["epochs"],
                "chosen": {"l1_scale": chosen["l1_scale"], "lr": chosen["lr"]},
                "thresholds": dict(zip(names, chosen["thresholds"])),
                "threshold_search": [[names[i] if i >= 0 else None, th, a] for i, th, a in chosen["trace"]],
                "grid": [{k: p.get(k) for k in ("l1_scale", "lr", "unpruned_val", "val", "released", "epochs")}
                         for p in points],
                "pruning_ratio": sum(int(d.sum()) for d in dropped) / n_cand if n_cand else 0.0,
                "width": None, "unit_capacity": layers}

    def _record_capacity(self, t, thresholds, earlier, cand, dropped, activity) -> dict:
        """Task ``t``'s per-layer capacity numbers (see :meth:`capacity`), appended to the history."""
        layers = {}
        for i, ul in enumerate(self.chain):
            owner = unit_owner(ul.layer)
            reused = earlier[i] & (activity[i].to(owner.device) > thresholds[i])
            if ul.group.name == self.feature and self.options.head == "single":
                reused = torch.zeros_like(reused)
            n_earlier = int(earlier[i].sum())
            layers[ul.group.name] = {
                "threshold": thresholds[i],
                "used_share": float((owner > 0).sum()) / ul.units,
                "new_units": int((cand[i] & ~dropped[i]).sum()),
                "reused_units": int(reused.sum()),
                "reused_share": float(reused.sum()) / n_earlier if n_earlier else 0.0,
                "free_units": int((owner == 0).sum())}
        self.history.append({"task": t, "layers": layers})
        return layers

    def model_for(self, task_id: int):
        return self.model

    def size(self) -> dict:
        """Bytes to serve all tasks: the weights in use (rows of active units, columns of units
        active for the same or earlier tasks; float32), each unit's owner task
        (``ceil(log2(K+1))`` bits, as the checkpoint stores it: :func:`unforget.storage.stored_bytes`),
        per-task biases and batch norms, and the heads (only the columns of the last-hidden units
        a task reads: its own for a single head, those of it and earlier tasks for multi heads;
        the others are zero). The network never grows: expansion 1.0; Red. = free weights / all
        weights."""
        K = max(self.learned, default=0)
        used = 0
        for ul in self.chain:
            rows = unit_owner(ul.layer).long().cpu()
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
        if self._feature_layer() is not None:
            # a head reads only units its task can see: its own (single head), or those of it
            # and earlier tasks (multi); the columns of any other unit are zero (_release)
            owner = unit_owner(self.chain[self._feature_layer()].layer)
            single = self.options.head == "single"
            per_task += sum(h.weight.element_size() * (h.weight.shape[0] * int(
                ((owner == int(k)) if single else ((owner > 0) & (owner <= int(k)))).sum()) + h.out_features)
                for k, h in self.model.heads.items())
        else:
            per_task += tensor_bytes(self.model.heads.parameters())
        owners = sum(stored_bytes({"l.owner": ul.layer.owner.cpu()}) for ul in self.chain)
        free = sum(int((ul.layer.owner == 0).sum()) for ul in self.chain)
        return {"model_size_bytes": used * 4 + owners + per_task, "expansion_ratio": 1.0,
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
        the layer; ``threshold`` = the layer's activation threshold chosen for the task.
        """
        out = {}
        keys = ("threshold", "used_share", "new_units", "reused_units", "reused_share")
        for i, ul in enumerate(self.chain):
            owner = unit_owner(ul.layer)
            g = ul.group.name
            per_task = {"task": [h["task"] for h in self.history]}
            per_task.update({k: [h["layers"][g][k] for h in self.history] for k in keys})
            out[g] = {"layer": ul.name, "units": ul.units, "used_share": float((owner > 0).sum()) / ul.units,
                      "free_units": int((owner == 0).sum()), "per_task": per_task}
        return out

    def state(self):
        meta = {"learned": self.learned, "heads": {k: h.out_features for k, h in self.model.heads.items()},
                "history": self.history, "chosen": self.chosen}
        return dict(self.model.state_dict()), meta

    def load_state(self, tensors, meta) -> None:
        for t in meta["learned"]:
            begin_task(self.model, t, meta["heads"][str(t)], claim_free=False, learn_picks=False)
            end_task(self.model, t)
        self.model.load_state_dict(tensors)
        self.learned = list(meta["learned"])
        self.history = list(meta["history"])
        self.chosen = meta.get("chosen")
