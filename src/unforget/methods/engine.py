"""The engine behind CPG, PAE, PackNet and Piggyback: one task-aware network, learned task by
task with picking, training of free weights, growing and compacting.

Source: Hung et al. 2019, Algorithm 1 (CPG), and its reference code ivclab/CPG
(``experiment1/CPG_cifar100_scratch_mul_1.5.sh``, ``CPG_cifar100_main_normal.py``,
``tools/choose_appropriate_pruning_ratio_for_next_task.py``). Its baselines are configurations of
it (design.md, "Method"): PAE = all earlier weights picked + growth; PackNet = all picked, no
growth, one-shot pruning; Piggyback = masks only over a frozen first-task network
(Mallya et al. 2018).

One task k, as the reference learns it:

1. **Pick and train** (Alg. 1 line 9): the free weights in the network's current width are
   claimed by k and trained with SGD; the pick scores of k over earlier tasks' weights are trained
   with Adam (their own schedule: ``pick_lr_milestones`` / ``pick_freeze_epoch``).
2. **Grow** (Alg. 1 lines 10-12): if the validation accuracy misses the accuracy goal (by more
   than the task's validation images resolve at ``goal_confidence``, one-sided binomial test;
   by any margin when it is null, as the reference code and the paper presets), or the
   training accuracy is not above ``train_accuracy_gate``, the network returns to its state
   before task k, grows by ``grow_step`` x the original weights (capped at ``max_expansion``)
   and step 1 starts again; the new width stays for later tasks.
3. **Compact** (Alg. 1 lines 3-8): with the picks fixed, k's own weights are pruned gradually
   through the ratios ``prune_interval, 2 prune_interval, ..., prune_ratio`` (each reached
   within its step, then retrained at ``prune_lr``); every ratio's validation accuracy is
   recorded and the largest that meets the goal is kept. A task that meets its goal at no
   ratio (or missed it before compacting) is still pruned to the reserve ratio
   ``1 - round(1 / (reserve_for_tasks + 1), 1)`` so that later tasks find free weights.
4. **Retrain** (reference only): k's kept weights train once more with re-initialised picks
   (``retrain_epochs``, early stop after ``retrain_patience`` epochs without a better
   validation accuracy); the result is kept only if it is better.
"""
from __future__ import annotations

import copy
import math
from typing import Literal, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from unforget.data.task import PretrainedTask, Task
from unforget.layers import (SCORE_INIT, begin_task, end_task, grow_group, norm_layers, to_task_aware,
                             weighted_layers)
from unforget.methods.base import Method, tensor_bytes
from unforget.methods.compacting import GradualPruning, own_counts, prune_own, ratio_ladder, reserve_ratio
from unforget.methods.goals import GOAL_CONFIDENCE, GoalSetter, GoalSource, miss_threshold, significant_miss
from unforget.storage import stored_bytes


class EngineOptions(BaseModel):
    """Options of the ``methods.<name>`` config section of an engine method. Defaults follow
    the CPG reference code where it fixes a value; epochs default to CPU-sized values that the
    ``paper`` presets raise to the reference's."""

    model_config = ConfigDict(extra="forbid")
    picks: Literal["learned", "all"] = Field("learned", description="learn pick masks over earlier weights, or use all")
    claim_free: Literal["always", "first_task"] = Field("always", description="which tasks train released weights")
    # ---- growing (Alg. 1 lines 10-12)
    grow: bool = Field(True, description="grow the network when a task misses its accuracy goal")
    max_expansion: float = Field(1.5, ge=1.0, description="cap: weights allocated / weights of the original network")
    grow_step: float = Field(0.5, gt=0, le=4, description="weights added per growth, in units of the original network")
    goal_confidence: Optional[float] = Field(
        GOAL_CONFIDENCE, gt=0, lt=1,
        description="a task misses its goal (grows, or is pruned only to the reserve ratio) when its validation "
                    "accuracy is below the goal by more than its number of validation images resolves at this "
                    "confidence (one-sided binomial test); null: by any margin, as the reference code")
    train_accuracy_gate: Optional[float] = Field(
        None, ge=0, le=1, description="grow also when the training accuracy is not above this (reference: 0.95); "
                                      "compacting stops at a ratio whose training accuracy is not above it; null: off")
    # ---- compacting (Alg. 1 lines 3-8)
    compact: Literal["goal", "fixed", "none"] = Field("goal", description="goal-driven gradual pruning, one-shot fixed ratio, or none")
    prune_ratio: float = Field(0.95, ge=0, lt=1, description="fixed: the ratio; goal: the last ratio of the ladder")
    prune_interval: float = Field(0.1, gt=0, lt=1, description="goal mode: spacing of the ladder of ratios tried")
    prune_epochs: int = Field(1, ge=0, description="training epochs at each ratio (reference: 20; PackNet: 30)")
    prune_lr: Optional[float] = Field(None, gt=0, description="learning rate while compacting; null: 0.1 x train.lr (reference 1e-3)")
    prune_within_epochs: int = Field(4, ge=1, description="a ratio is reached gradually over this many epochs of its step (at most half the step)")
    prune_frequency: int = Field(10, ge=1, description="iterations between two gradual pruning updates")
    prune_patience: Optional[int] = Field(None, ge=1, description="stop the ladder after this many ratios in a row miss the goal (null: try all, as the reference)")
    compact_search: Literal["ladder", "bisect"] = Field("ladder", description="goal mode: ladder (every ratio in turn, as the reference) or bisect (the largest ratio first, then bisection between the largest that met the goal and the smallest that missed; at most 1 + log2 of the ladder's steps)")
    reserve_for_tasks: Optional[int] = Field(None, ge=0, description="tasks to leave room for when a task misses its goal; "
                                                                     "null: the planned tasks still to come, at least 1 (1 when the plan is open)")
    # ---- retraining after compacting (reference's finetune_again step; learned picks only)
    retrain_epochs: Optional[int] = Field(None, ge=0, description="null: train.epochs; 0: no retraining (reference: 30)")
    retrain_lr: Optional[float] = Field(None, gt=0, description="null: prune_lr")
    retrain_pick_lr: float = Field(1e-4, gt=0)
    retrain_patience: int = Field(5, ge=1, description="early stop after this many epochs without a better validation accuracy")
    # ---- accuracy goals
    goal: GoalSource = "scratch"
    goal_tolerance: float = Field(0.01, ge=0, le=1, description="goal = reference accuracy minus this (not for explicit goals)")
    goals: Optional[list[float] | dict[str, float]] = Field(None, description="explicit goals: one per task in "
                                                                                 "order, or by task name")
    goal_repeats: int = Field(5, ge=1, description="fine-avg / fine-max: fine-tune chains averaged (reference: 5)")
    finetune_lr: float = Field(5e-3, gt=0, description="fine-avg / fine-max: learning rate of the fine-tune chains (reference: 5e-3)")
    goal_chance_margin: float = Field(0.05, ge=0, le=1, description="a goal reference at most this far above chance did not "
                                                                     "learn: the goal falls back to own unpruned accuracy - tolerance")
    # ---- picks (Mallya et al. 2018)
    pick_lr: float = Field(5e-4, gt=0, description="Adam learning rate of the pick scores")
    pick_lr_milestones: list[int] = Field(default_factory=list, description="epochs at which pick_lr is multiplied by pick_lr_gamma")
    pick_lr_gamma: float = Field(0.2, ge=0)
    pick_freeze_epoch: Optional[int] = Field(None, ge=0, description="pick scores stop training from this epoch when the task has free weights of its own (reference: 70)")

    @model_validator(mode="after")
    def _check(self):
        values = list(self.goals.values()) if isinstance(self.goals, dict) else self.goals
        if values is not None and any(not 0 <= g <= 1 for g in values):
            raise ValueError("accuracy goals must lie in [0, 1]")
        return self


class EngineMethod(Method):
    """Task-aware network learned with picking, growing and compacting (see module doc)."""

    Options = EngineOptions
    exact = True
    takes_pretrained = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        o: EngineOptions = self.options
        self.model = to_task_aware(self.new_backbone())
        self.original_weights = self.allocated_weights()
        self.expansion_level = 1.0
        """Expansion the network was last grown to (1.0, 1.5, 2.0, ... up to ``max_expansion``),
        the reference's ``network_width_multiplier`` in weights."""
        self.goals = GoalSetter(self, o.goal, o.goal_tolerance, o.goals, repeats=o.goal_repeats,
                                finetune_lr=o.finetune_lr, chance_margin=o.goal_chance_margin)

    # --------------------------------------------------------------- accounting
    def allocated_weights(self) -> int:
        return sum(l.weight.numel() for _, l in weighted_layers(self.model))

    def _grown_weights(self, add: dict[str, int]) -> int:
        total = 0
        for _, l in weighted_layers(self.model):
            out = l.weight.shape[0] + add.get(l.out_group.name, 0)
            inp = l.weight.shape[1] + (add.get(l.in_group.name, 0) if l.in_group is not None else 0)
            total += out * inp * math.prod(l.weight.shape[2:])
        return total

    # --------------------------------------------------------------- training pieces
    def _lrs(self) -> tuple[float, float]:
        o: EngineOptions = self.options
        prune_lr = o.prune_lr if o.prune_lr is not None else 0.1 * self.trainer.config.lr
        return prune_lr, o.retrain_lr if o.retrain_lr is not None else prune_lr

    def _task_parameters(self, task: int, norms: bool = True) -> list[torch.Tensor]:
        """Task ``task``'s own parameters: its biases in every task-aware layer, its per-task
        layers' (batch norms, PReLUs; with ``norms``) and its head's."""
        own = [l.biases[str(task)] for _, l in weighted_layers(self.model) if str(task) in l.biases]
        if norms:
            own += [p for _, n in norm_layers(self.model) for p in n.norms[str(task)].parameters()]
        return own + list(self.model.heads[str(task)].parameters())

    def _per_task_bytes(self) -> int:
        """Bytes of every task's biases, per-task layers (parameters and statistics) and heads."""
        out = tensor_bytes(p for _, l in weighted_layers(self.model) for p in l.biases.values())
        out += tensor_bytes(t for _, n in norm_layers(self.model) for t in list(n.norms.parameters()) + list(n.norms.buffers()))
        return out + tensor_bytes(self.model.heads.parameters())

    def _scores(self, task: int) -> list[torch.Tensor]:
        return [l.scores[str(task)] for _, l in weighted_layers(self.model) if str(task) in l.scores]

    def _optimizers(self, task: int, lr: Optional[float] = None, pick_lr: Optional[float] = None
                    ) -> list[torch.optim.Optimizer]:
        """The configured optimizer (SGD in the reference) over the shared weights (only the
        task's own get gradient; weight decay folded into that gradient) and the task's biases,
        batch norms and head (no weight decay, as the reference); Adam over the task's pick scores
        when ``pick_lr`` is given."""
        shared = [l.weight for _, l in weighted_layers(self.model)]
        per_task = self._task_parameters(task)
        opts: list[torch.optim.Optimizer] = [self.trainer.optimizer([{"params": shared}, {"params": per_task}], lr=lr,
                                                                    weight_decay=0.0)]
        scores = self._scores(task)
        for s in scores:
            s.requires_grad_(pick_lr is not None)
        if scores and pick_lr is not None:
            opts.append(self.trainer.pick_optimizer(scores, pick_lr))
        return opts

    def _fit(self, task: Task, opts, epochs: int, desc: str, schedule=False, hooks=(),
             log: Optional[dict] = None) -> tuple[float, float]:
        """Train for ``epochs``; returns ``(validation accuracy, last epoch's training accuracy)``."""
        for _, layer in weighted_layers(self.model):
            layer.decay = self.trainer.config.weight_decay
        stats = {"train_accuracy": float("nan")}
        if epochs > 0:
            stats = self.trainer.fit(self.model, task, opts, hooks=hooks, epochs=epochs, desc=desc, schedule=schedule,
                                     log=log)
        return self.trainer.accuracy(self.model, task, "val"), stats["train_accuracy"]

    def _pick_schedule(self, opt: torch.optim.Optimizer, own_free: bool):
        o: EngineOptions = self.options

        def factor(epoch: int) -> float:
            if own_free and o.pick_freeze_epoch is not None and epoch >= o.pick_freeze_epoch:
                return 0.0
            return o.pick_lr_gamma ** sum(epoch >= m for m in o.pick_lr_milestones)

        return torch.optim.lr_scheduler.LambdaLR(opt, factor)

    def _weights_of(self, task: int) -> dict[str, int]:
        """Of a finished task: its own weights (``kept``), the earlier tasks' weights in its
        slice (``earlier``) and how many of those its pick mask uses (``picked``)."""
        kept = earlier = picked = 0
        for _, l in weighted_layers(self.model):
            rows, cols = l.slice_for(task)
            o = l.owner[rows, cols]
            prior = (o > 0) & (o < task)
            kept += int((o == task).sum())
            earlier += int(prior.sum())
            picked += int((l.task_mask(task) & prior).sum())
        return {"kept": kept, "earlier": earlier, "picked": picked}

    def _train_task(self, task: Task, grown: bool = False) -> tuple[float, float]:
        """Step 1: train the claimed free weights, the picks, batch norms and head (``grown``:
        again, after the network grew; only the progress label and the log's phase differ)."""
        o: EngineOptions = self.options
        opts = self._optimizers(task.id, pick_lr=o.pick_lr)
        scheds = self.trainer.schedulers(opts[:1])
        if len(opts) > 1:
            scheds.append(self._pick_schedule(opts[1], own_free=sum(own_counts(self.model, task.id).values()) > 0))
        desc = f"grow {self.expansion_level:.2f}x" if grown else "train"
        return self._fit(task, opts, self.trainer.config.epochs, desc, schedule=scheds)

    def _next_level(self) -> Optional[float]:
        o: EngineOptions = self.options
        if self.expansion_level >= o.max_expansion - 1e-9:
            return None
        return min(o.max_expansion, self.expansion_level + o.grow_step)

    def _growth_plan(self) -> Optional[dict[str, int]]:
        """Units to add per group so that the allocated weights reach the next expansion level
        (``expansion_level + grow_step``, at most ``max_expansion``) x the original network's:
        the same share of every group's base width, the largest that fits; ``None`` at the cap
        or when no unit fits."""
        level = self._next_level()
        if level is None:
            return None
        target = level * self.original_weights

        def plan(f: float) -> dict[str, int]:
            return {n: int(math.floor(g.base * f + 1e-9)) for n, g in self.model.groups.items()}

        lo, hi = 0.0, 8.0
        for _ in range(50):
            mid = (lo + hi) / 2
            if self._grown_weights(plan(mid)) <= target + 1e-6:
                lo = mid
            else:
                hi = mid
        add = plan(lo)
        return add if any(add.values()) else None

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _restore(self, snap: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(snap)  # the layers drop their cached masks themselves

    def _reserve(self, task: Task) -> int:
        o: EngineOptions = self.options
        if o.reserve_for_tasks is not None:
            return o.reserve_for_tasks
        return max(1, (self.plan.n_tasks or 0) - task.id)

    def _compact(self, task: Task, goal: Optional[float], val: float, missed: bool, floor: float) -> dict:
        """Step 3 (see module doc). Picks are fixed (no optimizer, no gradient) throughout.
        Returns ``{"ratio", "val", "ladder": {ratio: val accuracy}}`` and leaves the model in the
        chosen state."""
        o: EngineOptions = self.options
        k = task.id
        initial = own_counts(self.model, k)
        if o.compact == "none" or o.prune_ratio == 0 or sum(initial.values()) == 0:
            return {"ratio": 0.0, "val": val, "ladder": {}, "epochs": 0}
        prune_lr = self._lrs()[0]
        opts = self._optimizers(k, lr=prune_lr)
        if o.compact == "fixed":  # PackNet: one-shot pruning, then retraining
            prune_own(self.model, k, o.prune_ratio, initial, opts)
            v, _ = self._fit(task, opts, o.prune_epochs, f"prune {o.prune_ratio:.2f}",
                             log={"pruning_ratio": o.prune_ratio})
            return {"ratio": o.prune_ratio, "val": v, "ladder": {str(o.prune_ratio): v}, "epochs": o.prune_epochs}
        if missed and floor == 0:  # the reference prunes nothing here (must ratio 0)
            return {"ratio": 0.0, "val": val, "ladder": {}, "epochs": 0}
        if o.compact_search == "bisect":
            return self._bisect(task, goal, val, missed, floor, initial, prune_lr, opts)
        best = (0.0, val, self._snapshot())
        at_floor = best if floor == 0 else None
        ladder: dict[str, float] = {}
        prev, misses, tried = 0.0, 0, 0
        for r in ratio_ladder(o.prune_ratio, o.prune_interval):
            v, gate_failed, opts = self._compact_step(task, prev, r, initial, prune_lr, opts)
            prev, tried = r, tried + 1
            if not gate_failed:
                ladder[str(r)] = v
            met = goal is not None and v >= goal and not gate_failed
            if met:
                best = (r, v, self._snapshot())
            if at_floor is None and r >= floor - 1e-9:
                at_floor = (r, v, self._snapshot())
            misses = 0 if met else misses + 1
            stop = (missed or gate_failed or (o.prune_patience is not None and misses >= o.prune_patience))
            if stop and r >= floor - 1e-9:
                break
        chosen = best if (best[0] > 0 and not missed) else (at_floor or best)
        self._restore(chosen[2])
        return {"ratio": chosen[0], "val": chosen[1], "ladder": ladder, "epochs": tried * o.prune_epochs}

    def _compact_step(self, task: Task, prev: float, r: float, initial: dict[str, int], prune_lr: float,
                      opts: list) -> tuple[float, bool, list]:
        """One ratio of step 3: prune the task's own weights from ratio ``prev`` to ``r`` (of
        ``initial``, its weights before compacting), gradually along the cubic schedule inside
        ``prune_epochs`` epochs of training with a fresh optimizer (at once without epochs, with
        ``opts``, the optimizers in use). Returns ``(validation accuracy, whether the training-
        accuracy gate failed, the optimizers now in use)``."""
        o: EngineOptions = self.options
        k = task.id
        if o.prune_epochs == 0:
            prune_own(self.model, k, r, initial, opts)
            hooks: tuple = ()
        else:
            n_batches = self.trainer.steps_per_epoch(task)
            within = min(o.prune_within_epochs * n_batches, max(1, (o.prune_epochs * n_batches) // 2))
            hooks = (GradualPruning(k, prev, r, initial, within, o.prune_frequency),)
        # a fresh optimizer per ratio, as the reference starts each step anew
        opts = self._optimizers(k, lr=prune_lr)
        v, train_acc = self._fit(task, opts, o.prune_epochs, f"compact {r:.2f}", hooks=hooks, log={"pruning_ratio": r})
        gate_failed = o.train_accuracy_gate is not None and o.prune_epochs > 0 and train_acc <= o.train_accuracy_gate
        return v, gate_failed, opts

    def _bisect(self, task: Task, goal: Optional[float], val: float, missed: bool, floor: float,
                initial: dict[str, int], prune_lr: float, opts: list) -> dict:
        """Step 3 as a search (``compact_search: bisect``): the largest ratio of the ladder
        (:func:`ratio_ladder`) first, then bisection between the largest ratio known to meet the
        goal and the smallest known to miss it; every trial prunes from the last state that met
        the goal (rolled back to exactly, :meth:`_restore`). At most ``1 + ceil(log2(m))`` steps
        for a ladder of ``m`` ratios, one when the largest meets, against ``m`` for the ladder.
        As the ladder, it keeps the largest ratio tried whose validation accuracy met the goal,
        and at least the reserve ratio ``floor`` (the first ladder ratio at or above it, met or
        not, pruned from the state kept); a task that missed its goal before compacting is
        pruned to that ratio in one step. Returns what :meth:`_compact` returns."""
        o: EngineOptions = self.options
        ratios = ratio_ladder(o.prune_ratio, o.prune_interval)
        kept = (0.0, val, self._snapshot())  # the last state that met the goal: unpruned to begin with
        ladder: dict[str, float] = {}
        lo, hi, tried = -1, (0 if missed else len(ratios)), 0
        while lo + 1 < hi:
            i = hi - 1 if tried == 0 else (lo + hi) // 2
            if tried:
                self._restore(kept[2])
            v, gate_failed, opts = self._compact_step(task, kept[0], ratios[i], initial, prune_lr, opts)
            tried += 1
            if not gate_failed:
                ladder[str(ratios[i])] = v
            if goal is not None and v >= goal and not gate_failed:
                lo, kept = i, (ratios[i], v, self._snapshot())
            else:
                hi = i
        self._restore(kept[2])
        chosen = kept[:2]
        if kept[0] < floor - 1e-9:  # leave free weights for the later tasks, as the ladder does
            r = next(x for x in ratios if x >= floor - 1e-9)
            v, gate_failed, opts = self._compact_step(task, kept[0], r, initial, prune_lr, opts)
            tried += 1
            if not gate_failed:
                ladder[str(r)] = v
            chosen = (r, v)
        return {"ratio": chosen[0], "val": chosen[1], "ladder": ladder, "epochs": tried * o.prune_epochs}

    def _retrain(self, task: Task, val: float) -> dict:
        """Step 4: retrain the task's kept weights with re-initialised picks; keep the result
        only if its validation accuracy is better (ivclab/CPG ``--finetune_again`` and
        ``tools/choose_retrain_or_not.py``)."""
        o: EngineOptions = self.options
        epochs = self.trainer.config.epochs if o.retrain_epochs is None else o.retrain_epochs
        scores = self._scores(task.id)
        if epochs == 0 or not scores:
            return {"epochs": 0, "kept": False, "val": val}
        before = self._snapshot()
        with torch.no_grad():
            for s in scores:
                s.fill_(SCORE_INIT)
        opts = self._optimizers(task.id, lr=self._lrs()[1], pick_lr=o.retrain_pick_lr)
        best_val, best, bad, done = val, None, 0, 0
        for e in range(epochs):
            v, _ = self._fit(task, opts, 1, f"retrain {e + 1}/{epochs}")
            done += 1
            if v > best_val:
                best_val, best, bad = v, self._snapshot(), 0
            else:
                bad += 1
                if bad >= o.retrain_patience:
                    break
        self._restore(best if best is not None else before)
        return {"epochs": done, "kept": best is not None, "val": best_val}

    def _learn_pretrained(self, task: PretrainedTask) -> dict:
        """Task 1 from a pretrained network (Hung et al. 2019, Sec. 4.2-4.3; the reference's
        ``--use_imagenet_pretrained``): the file's backbone and head, all weights owned by task 1,
        no training. With training and validation data and ``task.compact`` it is then compacted
        to ``task.goal`` as any task (the paper prunes ImageNet's ResNet-50); otherwise it is
        kept whole (Piggyback's protocol) and later tasks pick from it and grow."""
        from unforget.methods.base import PretrainedUnsupported
        from unforget.models.pretrained import load_backbone, load_head, read_pretrained

        o: EngineOptions = self.options
        if self.learned or task.id != 1:
            raise PretrainedUnsupported(f"a pretrained network can only be task 1, not task {task.id}")
        weights = read_pretrained(task.weights)
        net = self.new_backbone()
        load_backbone(net, self.model_name(), weights)
        self.model = to_task_aware(net)
        self.original_weights = self.allocated_weights()
        begin_task(self.model, 1, task.n_classes, claim_free=True, learn_picks=False, head=task.head)
        if weights.head is not None:  # a verification network may come without its training head
            load_head(self.model.heads["1"], weights)
        val = self.trainer.accuracy(self.model, task, "val") if len(task.val) else None
        claimed = sum(own_counts(self.model, 1).values())
        goal = task.goal
        if not task.compact:
            why = "kept whole (pretrained.compact is false: Piggyback's protocol)"
        elif o.compact == "none":
            why = "kept whole (the method does not compact)"
        elif not len(task.train) or val is None:
            why = "kept whole: compacting needs training and validation data (pretrained.data with train/)"
        elif goal is None:
            why = "kept whole: compacting needs a goal (pretrained.goal or pretrained.accuracy)"
        else:
            why = None
        if why is None:
            comp = self._compact(task, goal, val, missed=val < goal, floor=0.0)
            why = f"compacted to ratio {comp['ratio']:.2f} with goal {100 * goal:.2f} %"
        else:
            comp = {"ratio": 0.0, "val": val, "ladder": {}, "epochs": 0}
        end_task(self.model, 1)
        self.learned.append(1)
        weights_rec = {"claimed": claimed, **self._weights_of(1)}
        weights_rec["released"] = claimed - weights_rec["kept"]
        return {"val_accuracy": comp["val"], "unpruned_val_accuracy": val, "train_accuracy": None,
                "accuracy_goal": goal if comp["ladder"] else None, "missed_goal": False,
                "pruning_ratio": comp["ratio"], "compaction": comp["ladder"],
                "retrain": {"epochs": 0, "kept": False, "val": comp["val"]}, "growth_rounds": 0,
                "growth": [], "weights": weights_rec, "network_epochs": comp["epochs"], "width": 1.0,
                "widths": {n: g.width(1) for n, g in self.model.groups.items()},
                "pretrained": {"file": weights.source, "decision": why, "given_accuracy": task.given_accuracy,
                               "accuracy_given": task.accuracy_given}}

    # --------------------------------------------------------------- Method interface
    def learn(self, task: Task) -> dict:
        """Hung et al. 2019, Alg. 1 with the reference code's protocol (module doc, steps 1-4);
        a :class:`~unforget.data.task.PretrainedTask` is loaded instead (:meth:`_learn_pretrained`)."""
        if isinstance(task, PretrainedTask):
            return self._learn_pretrained(task)
        o: EngineOptions = self.options
        k = task.id
        uses_goal = o.grow or o.compact == "goal"  # fixed-ratio packnet and piggyback never read one
        goal = self.goals.before(task) if uses_goal else None
        claim = o.claim_free == "always" or not self.learned
        learn_picks = o.picks == "learned" and k > 1
        before = copy.deepcopy(self.model) if o.grow else None
        rounds, epochs = 0, 0
        history: list[dict] = []
        while True:
            begin_task(self.model, k, task.n_classes, claim_free=claim, learn_picks=learn_picks, head=task.head)
            val, train_acc = self._train_task(task, grown=rounds > 0)
            epochs += self.trainer.config.epochs
            goal = self.goals.after_training(goal, val) if uses_goal else None
            gate_ok = o.train_accuracy_gate is None or train_acc > o.train_accuracy_gate
            step = {"expansion": self.expansion_level, "val_accuracy": val, "train_accuracy": train_acc,
                    "goal": goal, "claimed": sum(own_counts(self.model, k).values())}
            short = uses_goal and self._misses(task, val, goal)
            if uses_goal and o.goal_confidence is not None and val < goal:
                step["miss_below"] = miss_threshold(goal, len(task.val), o.goal_confidence)
            history.append(step)
            if not o.grow or (not short and gate_ok):
                step["decision"] = (("goal met" if val >= goal else self._within_noise(task, val, goal))
                                    if o.grow else "no growth (grow is off)")
                break
            why = (f"validation accuracy {100 * val:.2f} % < goal {100 * goal:.2f} %" + (
                   f" by more than {len(task.val)} validation images resolve (a miss below "
                   f"{100 * step['miss_below']:.2f} %)" if "miss_below" in step else "") if short else
                   f"training accuracy {100 * train_acc:.2f} % <= gate {100 * o.train_accuracy_gate:.2f} %")
            plan = self._growth_plan()
            if plan is None:
                step["decision"] = f"{why}; cannot grow (at max_expansion {o.max_expansion}x): kept as is"
                break
            step["decision"] = f"{why}: grow to {self._next_level():.2f}x and train again"
            # Alg. 1 line 11 / the reference: back to the state before the task, grow, start again
            self.model = copy.deepcopy(before)
            for name, n in plan.items():
                grow_group(self.model, name, n, None)
            self.expansion_level = self._next_level()
            before = copy.deepcopy(self.model)
            rounds += 1
        claimed = sum(own_counts(self.model, k).values())
        unpruned = val
        missed = uses_goal and self._misses(task, val, goal)
        reserve = self._reserve(task)
        floor = reserve_ratio(reserve) if o.compact == "goal" else 0.0
        comp = self._compact(task, goal, val, missed, floor)
        epochs += comp["epochs"]
        val = comp["val"]
        retrain = {"epochs": 0, "kept": False, "val": val}
        if comp["ratio"] > 0 and learn_picks:
            retrain = self._retrain(task, val)
            val = retrain["val"]
            epochs += retrain["epochs"]
        end_task(self.model, k)
        self.learned.append(k)
        weights = {"claimed": claimed, **self._weights_of(k)}
        weights["released"] = claimed - weights["kept"]
        widths = {n: g.width(k) for n, g in self.model.groups.items()}
        rec = {"val_accuracy": val, "unpruned_val_accuracy": unpruned, "train_accuracy": train_acc,
               "accuracy_goal": goal, "missed_goal": bool(missed), "pruning_ratio": comp["ratio"],
               "compaction": comp["ladder"], "reserve_for_tasks": reserve if o.compact == "goal" else None,
               "reserve_ratio": floor if o.compact == "goal" else None,
               "retrain": retrain, "growth_rounds": rounds, "growth": history, "weights": weights,
               "network_epochs": epochs,
               "width": round(sum(widths.values()) / sum(g.base for g in self.model.groups.values()), 4),
               "widths": widths}
        if uses_goal:
            rec["goal_record"] = self.goals.records.get(k)
        return rec

    def _misses(self, task: Task, val: float, goal: float) -> bool:
        """Whether validation accuracy ``val`` misses ``goal`` beyond the noise of the task's
        validation split (``goal_confidence``, :func:`~unforget.methods.goals.significant_miss`)."""
        return significant_miss(val, goal, len(task.val), self.options.goal_confidence)

    def _within_noise(self, task: Task, val: float, goal: float) -> str:
        """The growth decision's words for a shortfall the validation split cannot resolve."""
        below = miss_threshold(goal, len(task.val), self.options.goal_confidence)
        return (f"goal met within noise: validation accuracy {100 * val:.2f} % < goal {100 * goal:.2f} % by less "
                f"than {len(task.val)} validation images resolve at {100 * self.options.goal_confidence:.0f} % "
                f"confidence (a miss is below {100 * below:.2f} %): no growth")

    def model_for(self, task_id: int):
        return self.model

    def size(self) -> dict:
        """Bytes to serve all tasks: weights in use (float32), the task masks as the checkpoint
        stores them (:func:`unforget.storage.stored_bytes` of each layer's owner indices and
        learned pick masks: bit-packed, ceil(log2(K+1)) bits per allocated weight plus one bit
        per earlier weight a pick mask covers, or entropy-coded when that is smaller), per-task
        biases, batch norms and heads. Exp. = allocated weights / original weights (the paper's
        expansion); Red. = free (released) weights / original."""
        layers = [l for _, l in weighted_layers(self.model)]
        in_use = sum(int((l.owner > 0).sum()) for l in layers)
        free = sum(int((l.owner == 0).sum()) for l in layers)
        masks = sum(stored_bytes({"l.owner": l.owner.cpu(), **{f"l.pick_{t}": l.pick_mask(t).cpu() for t in l.pick_tasks}})
                    for l in layers)
        per_task = self._per_task_bytes()
        return {"model_size_bytes": in_use * 4 + masks + per_task,
                "expansion_ratio": self.allocated_weights() / self.original_weights,
                "released_ratio": free / self.original_weights}

    def capacity(self) -> dict:
        """Per layer: allocated weights, share in use, and weights owned per task."""
        out = {}
        for name, l in weighted_layers(self.model):
            counts = torch.bincount(l.owner.flatten().long(), minlength=max(self.learned, default=0) + 1)
            out[name] = {"allocated": l.weight.numel(), "used_share": 1 - float(counts[0]) / l.weight.numel(),
                         "owned": {str(t): int(counts[t]) for t in self.learned}}
        return out

    def state(self):
        meta = {"learned": self.learned, "original_weights": self.original_weights,
                "expansion_level": self.expansion_level,
                "groups": {n: {"size": g.size, "widths": {str(t): w for t, w in g.widths.items()}}
                           for n, g in self.model.groups.items()},
                "heads": {k: h.out_features for k, h in self.model.heads.items()},
                "head_kinds": dict(getattr(self.model, "head_kinds", {})),
                "picks": {name: sorted(l.pick_tasks) for name, l in weighted_layers(self.model)}}
        tensors = dict(self.model.state_dict())
        goal_tensors, goal_meta = self.goals.state()
        tensors.update({f"goal.{k}": v for k, v in goal_tensors.items()})
        meta["goals"] = goal_meta
        return tensors, meta

    def load_state(self, tensors, meta) -> None:
        m = self.model
        for name, g in meta["groups"].items():
            grow_group(m, name, g["size"] - m.groups[name].size, None)
        for t in meta["learned"]:
            begin_task(m, t, meta["heads"][str(t)], claim_free=False, learn_picks=False,
                       widths={name: g["widths"][str(t)] for name, g in meta["groups"].items()},
                       head=meta.get("head_kinds", {}).get(str(t), "linear"))
            m.task_context.training_task = None
        layers = dict(weighted_layers(m))
        for name, tasks in meta["picks"].items():
            for t in tasks:
                layers[name].add_pick_buffer(t)
        m.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("goal.")})
        self.goals.load_state({k[len("goal."):]: v for k, v in tensors.items() if k.startswith("goal.")},
                              meta.get("goals", {}))
        self.learned = list(meta["learned"])
        self.expansion_level = float(meta.get("expansion_level", 1.0))


class PolicyMethod(EngineMethod):
    """Base of engine methods whose tasks choose their weights by a mask policy of their own and
    set no accuracy goals, with no growth or compacting (WSN, SupSup): subclasses say how each
    task-aware layer is prepared (:meth:`prepare_layer`: its policy, its initial weights)."""

    takes_pretrained = False

    def __init__(self, *args, **kwargs) -> None:
        Method.__init__(self, *args, **kwargs)
        self.model = to_task_aware(self.new_backbone())
        for _, layer in weighted_layers(self.model):
            self.prepare_layer(layer)
        self.original_weights = self.allocated_weights()
        self.expansion_level = 1.0
        self.goals = GoalSetter(self, "tolerance")  # never asked; kept for the engine's checkpoint state

    claim_free = True
    """Whether a task claims the free weights when it begins (SupSup's weights belong to no task)."""

    def prepare_layer(self, layer) -> None:
        raise NotImplementedError

    def task_optimizers(self, task: int) -> list[torch.optim.Optimizer]:
        """The optimizers that train task ``task`` (its scores, weights, biases, norms, head)."""
        raise NotImplementedError

    def task_hooks(self, task: int) -> tuple:
        """Training hooks of task ``task`` (none by default)."""
        return ()

    def task_record(self, task: int, val: float, train_acc: float, claimed: int) -> dict:
        """The method's own entries of task ``task``'s record (after it ended)."""
        return {}

    def learn(self, task: Task) -> dict:
        """One task: begin it (the policy creates what it learns), train it with the subclass's
        optimizers and hooks for ``train.epochs``, end it (the policy freezes it)."""
        k = task.id
        begin_task(self.model, k, task.n_classes, claim_free=self.claim_free, learn_picks=True, head=task.head)
        claimed = sum(own_counts(self.model, k).values())
        opts = self.task_optimizers(k)
        val, train_acc = self._fit(task, opts, self.trainer.config.epochs, "train",
                                   schedule=self.trainer.schedulers(opts), hooks=self.task_hooks(k))
        end_task(self.model, k)
        self.learned.append(k)
        return {"val_accuracy": val, "train_accuracy": train_acc, "accuracy_goal": None, "pruning_ratio": None,
                **self.task_record(k, val, train_acc, claimed), "network_epochs": self.trainer.config.epochs,
                "width": 1.0}
