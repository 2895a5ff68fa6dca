"""Accuracy goals per task (design.md, "Accuracy goals"; Hung et al. 2019, Sec. 3.1, 4.1, Table 2).

A goal is a validation accuracy in [0, 1] that compacting must keep and growing must reach. It
is an explicit number or a reference accuracy minus ``goal_tolerance`` (clipped at 0); the
tolerance absorbs the noise of small validation splits. Sources (``GOAL_SOURCES``):

``scratch``
    Validation accuracy of an independent model trained from scratch on the task by the same
    run — the default of the official scripts (ivclab/CPG ``experiment1/baseline_cifar100.sh``,
    ``CPG_cifar100_scratch_mul_1.5.sh``). The first task learned is the exception: the
    method's own network for it is itself a from-scratch model, so its own unpruned accuracy is
    the reference and no second model is trained.
``fine-avg``
    Mean over R repeats of the validation accuracy of the task's model in the paper's
    fine-tuning reference (:class:`~unforget.methods.independent.FinetuneChain`: task 1 from
    scratch, each later task fine-tuned from a randomly chosen earlier task's model). This is
    Table 2's "fine-Avg" goal, i.e. "CPG avg" — the CPG row of Table 1.
``fine-max``
    The maximum over the R repeats instead: Table 2's "fine-Max" goal ("CPG max"); the
    reference's PAE script reads these goals (``experiment1/PAE_cifar100_scratch_mul_1.5.sh``,
    ``logs/finetune_max_cifar100_acc.txt``).
``tolerance``
    The task's own unpruned accuracy (after training, before compacting).
``explicit``
    ``goals[task_id - 1]`` as given (no tolerance subtracted).

**A reference that did not learn is never a goal.** When the reference accuracy of ``scratch``,
``fine-avg`` or ``fine-max`` is at most ``chance + chance_margin`` (chance: the share of the
most frequent class in the task's validation split, 1 / classes for balanced data; margin 5
points by default), the goal falls back to the ``tolerance`` rule — the task's own unpruned
validation accuracy minus ``goal_tolerance`` — and the task's goal record says so
(``"fallback"``: why). A reference model trained on too little data or for too few epochs
otherwise yields a goal at chance level, which any pruning ratio meets. When the task's own
unpruned accuracy is itself within the margin of chance, the record adds a ``"warning"``: the
task did not learn at all (check its data, epochs and learning rate).

For ``fine-avg`` / ``fine-max`` the first task's reference is, as in the reference code, the R
repeats' from-scratch models of that task (task 1 has no earlier task to fine-tune from; its
fine-tuned model *is* a scratch model) — these models are trained anyway, because the later
tasks of each repeat are fine-tuned from them; that is why Table 2's fine-Avg and fine-Max
differ on task 1.

Sources: Hung et al. 2019, Sec. 4.1 and Table 2; ivclab/CPG ``experiment1/finetune_cifar100.sh``
(R = 5 repeats, fine-tuning lr 5e-3) and its README ("If you would like to use higher accuracy
goals, execute experiment1/finetune_cifar100.sh instead").
"""
from __future__ import annotations

import statistics
from typing import Literal, Optional, get_args

import torch

from unforget.data.task import Task
from unforget.errors import ConfigError
from unforget.methods.independent import FINETUNE_LR, FinetuneChain, train_plain

GoalSource = Literal["scratch", "fine-avg", "fine-max", "tolerance", "explicit"]
GOAL_SOURCES: tuple[str, ...] = get_args(GoalSource)
"""The accuracy-goal sources, in the order the error messages list them."""

CHANCE_MARGIN = 0.05
"""A reference accuracy at most this far above chance counts as a model that did not learn."""


GOAL_CONFIDENCE = 0.95
"""Default confidence of a growth decision's "missed the goal" (:func:`significant_miss`)."""


def miss_threshold(goal: float, n: int, confidence: Optional[float]) -> float:
    """Validation accuracy in [0, 1] below which ``n`` validation images show a miss of ``goal``.

    With ``confidence`` ``c`` in (0, 1), a measured accuracy ``k / n`` misses the goal when the
    one-sided binomial test of "the true accuracy is at least ``goal``" rejects at level ``1 - c``:
    ``P(X <= k) < 1 - c`` for ``X ~ Binomial(n, goal)`` (``scipy.stats.binom``). The threshold is
    ``k* / n`` for the smallest ``k*`` that is not rejected. ``confidence=None`` or ``n == 0``
    returns ``goal`` itself: any shortfall is a miss (the reference code's rule, ivclab/CPG
    ``CPG_cifar100_main_normal.py``, ``avg_val_acc >= baseline_acc``). Example: goal 0.80 on 144
    images at 0.95 gives 107/144 = 74.3 %: a measured
    76.4 % is within what 144 images resolve, 73.6 % is a miss.

    Raises:
        ValueError: ``goal`` outside [0, 1], ``n`` < 0 or ``confidence`` outside (0, 1).
    """
    if not 0.0 <= goal <= 1.0 or n < 0:
        raise ValueError(f"miss_threshold needs a goal in [0, 1] and n >= 0, got goal={goal}, n={n}")
    if confidence is None or n == 0:
        return goal
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    from scipy.stats import binom

    k = int(binom.ppf(1.0 - confidence, n, goal))  # smallest k with P(X <= k) >= 1 - c: not rejected
    return k / n


def significant_miss(accuracy: float, goal: float, n: int, confidence: Optional[float]) -> bool:
    """Whether a validation accuracy (in [0, 1], measured on ``n`` images) misses ``goal`` by more
    than the ``n`` images can resolve at ``confidence`` (:func:`miss_threshold`); with
    ``confidence=None``, any ``accuracy < goal``."""
    if confidence is None or n == 0:
        return accuracy < goal
    return accuracy < miss_threshold(goal, n, confidence) - 0.5 / n  # k/n from a float: half an image of slack


def chance_level(task: Task) -> float:
    """Validation accuracy in [0, 1] of always answering the task's most frequent validation
    class (``1 / n_classes`` for a balanced split; ``1 / n_classes`` when there is no
    validation data)."""
    y = task.val.y
    if len(y) == 0:
        return 1.0 / max(1, task.n_classes)
    return float(torch.bincount(y.long(), minlength=task.n_classes).max()) / len(y)


GOAL_REPEATS = 5
"""Repeats R of the fine-tuning reference in ivclab/CPG ``experiment1/finetune_cifar100.sh``
(``ITER_TIMES=5``; the paper's "We repeat this process 5 times")."""


class GoalSetter:
    """Computes, and records, each task's accuracy goal for a method.

    Args:
        method: the :class:`~unforget.methods.base.Method` whose config (seed), trainer and
            backbones the reference models use; its ``learned`` list tells which task is the
            first (``scratch`` source).
        source: one of :data:`GOAL_SOURCES` (see the module doc).
        tolerance: subtracted from the reference accuracy, in [0, 1] (not for ``explicit``).
        goals: ``explicit`` source: one goal in [0, 1] per task, in task order.
        repeats: R, the number of fine-tuning chains of ``fine-avg`` / ``fine-max`` (>= 1).
        finetune_lr: SGD learning rate of the fine-tuned tasks in those chains (> 0); the first
            task of each chain trains from scratch at the run's ``train.lr``.
        chance_margin: a reference accuracy at most ``chance_level + chance_margin`` is not used
            (the module doc's fallback), in [0, 1].

    Raises:
        ConfigError: unknown source, missing/out-of-range explicit goals, bad tolerance,
            ``repeats`` < 1 or ``finetune_lr`` <= 0.

    Attributes:
        chains: the R :class:`FinetuneChain` of ``fine-avg`` / ``fine-max`` (empty otherwise);
            they keep every task's model between tasks (checkpointed by :meth:`state`).
        records: ``{task id: {"source", "reference", "goal", "tolerance"}}`` (plus ``"parents"``,
            the parent task of each chain, for ``fine-*``), filled by :meth:`after_training`:
            ``reference`` is the list of reference accuracies in [0, 1] the goal derives from
            (one per repeat for ``fine-*``; ``[own unpruned accuracy]`` for ``tolerance`` and
            the first ``scratch`` task; ``[]`` for ``explicit``); ``chance``: the task's chance
            level (:func:`chance_level`); ``fallback`` (only when the reference did not learn):
            why, with ``reference`` then the task's own unpruned accuracy and the set-aside one in
            ``unused_reference``; ``warning`` when the task's own network stayed at chance.
    """

    def __init__(self, method, source: GoalSource, tolerance: float = 0.0, goals: Optional[list[float] | dict[str, float]] = None,
                 repeats: int = GOAL_REPEATS, finetune_lr: float = FINETUNE_LR,
                 chance_margin: float = CHANCE_MARGIN) -> None:
        if source not in GOAL_SOURCES:
            raise ConfigError(f"unknown accuracy goal source {source!r}; choose one of: {', '.join(GOAL_SOURCES)}")
        if not 0.0 <= tolerance <= 1.0:
            raise ConfigError(f"goal_tolerance must lie in [0, 1], got {tolerance}")
        if source == "explicit":
            if not goals:
                raise ConfigError("accuracy goal source 'explicit' needs 'goals': a list (one per task) or a mapping "
                                  "from task names, values in [0, 1]")
            values = list(goals.values()) if isinstance(goals, dict) else list(goals)
            if any(not 0.0 <= g <= 1.0 for g in values):
                raise ConfigError(f"accuracy goals must lie in [0, 1], got {values}")
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise ConfigError(f"goal_repeats must be an integer >= 1, got {repeats!r}")
        if not finetune_lr > 0:
            raise ConfigError(f"finetune_lr must be > 0, got {finetune_lr!r}")
        if not 0.0 <= chance_margin <= 1.0:
            raise ConfigError(f"goal_chance_margin must lie in [0, 1], got {chance_margin!r}")
        self.chance_margin = chance_margin
        self.method = method
        self.source = source
        self.tolerance = tolerance
        self.goals = goals
        self.repeats = repeats
        self.finetune_lr = finetune_lr
        self.chains: list[FinetuneChain] = (
            [FinetuneChain(method, repeat=r, lr=finetune_lr) for r in range(repeats)]
            if source in ("fine-avg", "fine-max") else [])
        self.records: dict[int, dict] = {}
        self._pending: Optional[dict] = None

    def before(self, task: Task) -> Optional[float]:
        """Goal known before the method learns ``task``, or ``None`` when it is set after
        training from the method's own unpruned accuracy (``tolerance``; ``scratch`` on the
        first task learned). ``fine-*`` trains ``task`` in each of the R chains (once: a second
        call for the same task reuses their accuracies); ``scratch`` trains one independent
        model (not kept).

        Raises:
            ConfigError: ``explicit`` goals do not cover ``task``.
        """
        chance = chance_level(task)
        pending: dict = {"task": task.id, "source": self.source, "tolerance": self.tolerance, "chance": chance}
        goal: Optional[float] = None
        if self.source == "explicit":
            if isinstance(self.goals, dict):
                if task.name not in self.goals:
                    raise ConfigError(f"'goals' has no accuracy goal for task {task.id} ({task.name}); it names: "
                                      f"{', '.join(self.goals)}")
                goal = float(self.goals[task.name])
            elif task.id > len(self.goals):
                raise ConfigError(f"'goals' lists {len(self.goals)} accuracy goals but task {task.id} needs one")
            else:
                goal = float(self.goals[task.id - 1])
            pending.update(reference=[], tolerance=0.0)
        elif self.source == "scratch" and self.method.learned:
            model = self.method.new_backbone(seed_offset=task.id)
            model.add_head(task.id, task.n_classes, kind=task.head)
            ref = train_plain(self.method, model, task, desc="goal (scratch)")
            pending["reference"] = [ref]
            goal = self._unless_chance(ref, chance, pending)
        elif self.source in ("fine-avg", "fine-max"):
            refs = [c.accuracies[task.id] if task.id in c.models else c.learn(task) for c in self.chains]
            pending.update(reference=refs, parents=[c.parents[task.id] for c in self.chains])
            goal = self._unless_chance(statistics.fmean(refs) if self.source == "fine-avg" else max(refs), chance,
                                       pending)
        self._pending = pending
        return goal

    def _unless_chance(self, reference: float, chance: float, pending: dict) -> Optional[float]:
        """The goal from ``reference``, or ``None`` (set after training from the task's own
        accuracy, the module doc's fallback) when ``reference`` is within the margin of chance."""
        if reference > chance + self.chance_margin:
            return self._minus_tolerance(reference)
        pending["fallback"] = (
            f"the {self.source} reference reached {100 * reference:.1f} % validation accuracy, within "
            f"{100 * self.chance_margin:.0f} points of chance ({100 * chance:.1f} %): it did not learn, so the goal is "
            f"the task's own unpruned accuracy minus {100 * self.tolerance:.1f} points")
        pending["unused_reference"] = pending.pop("reference")
        return None

    def _minus_tolerance(self, reference: float) -> float:
        return max(0.0, reference - self.tolerance)

    def after_training(self, goal: Optional[float], unpruned_val: float) -> float:
        """Final goal of the task of the last :meth:`before`: ``goal`` when known, else the
        unpruned validation accuracy ``unpruned_val`` (in [0, 1]) minus the tolerance; the goal
        and its reference go to :attr:`records`."""
        rec = self._pending or {}
        self._pending = None
        if goal is None:
            goal = self._minus_tolerance(unpruned_val)
            rec["reference"] = [unpruned_val]
            chance = rec.get("chance")
            if chance is not None and unpruned_val <= chance + self.chance_margin:
                rec["warning"] = (f"the task's own network reached {100 * unpruned_val:.1f} % validation accuracy, "
                                  f"within {100 * self.chance_margin:.0f} points of chance ({100 * chance:.1f} %): "
                                  "it did not learn; check the data, epochs and learning rate")
        if "task" in rec:
            t = rec.pop("task")
            self.records[t] = {"source": rec["source"], "reference": rec["reference"], "goal": goal,
                               "tolerance": rec["tolerance"],
                               **{k: rec[k] for k in ("parents", "chance", "fallback", "unused_reference", "warning")
                                  if k in rec}}
        return goal

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """``(tensors, meta)`` to checkpoint the reference models and records: the chains'
        models under ``chain{r}.task{t}.`` (the caller adds its own prefix) and a JSON-able meta
        (source, repeats, per chain the heads' class counts, parents and accuracies per task,
        the records)."""
        tensors: dict[str, torch.Tensor] = {}
        chains = []
        for r, c in enumerate(self.chains):
            t, m = c.state(prefix=f"chain{r}.")
            tensors.update(t)
            chains.append(m)
        meta = {"source": self.source, "repeats": self.repeats, "finetune_lr": self.finetune_lr, "chains": chains,
                "records": {str(t): rec for t, rec in self.records.items()}}
        return tensors, meta

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Inverse of :meth:`state` on a goal setter of the same configuration (``tensors``
        without the caller's prefix).

        Raises:
            ConfigError: the checkpoint holds another number of chains than ``repeats`` asks for.
        """
        if len(meta.get("chains", [])) != len(self.chains):
            raise ConfigError(f"the checkpoint's accuracy-goal reference has {len(meta.get('chains', []))} "
                              f"fine-tuning chain(s) but this configuration needs {len(self.chains)}")
        for r, (c, m) in enumerate(zip(self.chains, meta["chains"])):
            c.load_state(tensors, m, prefix=f"chain{r}.")
        self.records = {int(t): dict(rec) for t, rec in meta.get("records", {}).items()}
