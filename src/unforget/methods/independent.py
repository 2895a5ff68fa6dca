"""Independent-model baselines and the fine-tuning reference of the CPG paper.

* ``scratch``: one model per task, trained from scratch (no transfer, no forgetting).
* ``finetune``: the field's naive sequential fine-tuning baseline — one network fine-tuned task
  after task, a new head each time; it forgets the earlier tasks.
* ``finetune-copies``: the CPG paper's *Finetune* baseline — every task after the first is
  fine-tuned from a copy of a randomly chosen earlier task's model and kept (K models, no
  forgetting). :class:`FinetuneChain` implements it; the accuracy goals ``fine-avg`` /
  ``fine-max`` (:mod:`unforget.methods.goals`) run R such chains.

Sources: Hung et al. 2019, Sec. 4.1 ("To implement fine-tuning, we train task-1 from scratch ...
then train the model of task-(k+1) by fine-tuning one of the models randomly selected from tasks
1 to k") and Table 2; reference code ivclab/CPG ``experiment1/finetune_cifar100.sh`` (task 1 at
lr 1e-2, later tasks initialised from a random earlier task's checkpoint and fine-tuned at lr 5e-3,
weight decay 4e-5, every task's model kept).
"""
from __future__ import annotations

import copy
import random
from typing import Optional

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from unforget.data.task import Task
from unforget.methods.base import Method, module_bytes, register_method
from unforget.models import MultiHeadNet
from unforget.training import Trainer

FINETUNE_LR = 5e-3
"""Learning rate of the fine-tuned tasks (all but the first) in ivclab/CPG
``experiment1/finetune_cifar100.sh`` (``LR=5e-3``)."""


def train_plain(method: Method, model: MultiHeadNet, task: Task, desc: str = "train",
                lr: Optional[float] = None, trainer: Optional[Trainer] = None) -> float:
    """Train every parameter of ``model`` on ``task`` with the configured optimizer
    (``train.optimizer``) at ``lr`` (default: the run's) and the configured weight decay, using ``trainer`` (default: the method's); returns the
    validation accuracy in [0, 1]."""
    trainer = trainer or method.trainer
    opt = trainer.optimizer(model.parameters(), lr=lr)
    trainer.fit(model, task, [opt], desc=desc)
    return trainer.accuracy(model, task, "val")


def _split_state(prefix: str, model: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v for k, v in model.state_dict().items()}


def _take(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


# ------------------------------------------------------------------ one model per task: shared helpers
def models_size(models: dict[int, MultiHeadNet]) -> dict:
    """``size()`` of a method that keeps one whole model per task: the sum of their bytes,
    expansion = the number of models, nothing released."""
    return {"model_size_bytes": sum(module_bytes(m) for m in models.values()),
            "expansion_ratio": float(len(models)), "released_ratio": None}


def models_state(models: dict[int, MultiHeadNet], prefix: str = "") -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors of one-model-per-task ``models`` under ``{prefix}task{t}.`` and their heads'
    class counts (``{"heads": {"t": n_classes}}``, JSON-able); inverse of :func:`load_models`."""
    tensors: dict[str, torch.Tensor] = {}
    for t, m in models.items():
        tensors.update(_split_state(f"{prefix}task{t}.", m))
    return tensors, {"heads": {str(t): m.heads[str(t)].out_features for t, m in models.items()}}


def load_models(method: Method, tensors: dict[str, torch.Tensor], heads: dict[str, int],
                prefix: str = "") -> dict[int, MultiHeadNet]:
    """Rebuild the models saved by :func:`models_state` (``heads``: its meta's ``"heads"``)."""
    models = {}
    for t_str, n in heads.items():
        t = int(t_str)
        model = method.new_backbone(seed_offset=t)
        model.add_head(t, n)
        model.load_state_dict(_take(tensors, f"{prefix}task{t}."))
        models[t] = model
    return models


class FinetuneChain:
    """One repeat of the CPG paper's fine-tuning reference: the fine-tuned model of every task.

    :meth:`learn` trains the first task it is given from a fresh backbone at the run's learning
    rate (``train.lr``); every later task ``t`` starts from a deep copy of the model of an
    earlier task of this chain chosen uniformly at random (its parent), gets a new head
    (the parent's head is dropped: each model carries only its own task's head) and is trained
    with all parameters free by the configured optimizer (the reference: SGD) at ``lr``
    (default 5e-3, the reference's) with the configured weight decay. Every task's model is kept unchanged afterwards, so nothing is
    forgotten.

    Randomness is private and reproducible: the parent, the head initialisation, dropout and
    the batch order of task ``t`` are drawn from the run seed (``config.seed``), ``repeat`` and
    ``t`` only (a :class:`random.Random`, a forked torch RNG and a :class:`Trainer` of their
    own), so chains of different repeats differ, the same seed gives the same chain, and the
    global random streams and the method's trainer are left untouched.

    Attributes:
        models: ``{task id: fine-tuned model}`` (each with the one head of its task).
        parents: ``{task id: parent task id}`` (``None`` for the first task, trained from scratch).
        accuracies: ``{task id: validation accuracy in [0, 1]}`` right after its training.

    Source: Hung et al. 2019, Sec. 4.1 and Table 2; ivclab/CPG ``experiment1/finetune_cifar100.sh``.
    """

    def __init__(self, method: Method, repeat: int = 0, lr: float = FINETUNE_LR) -> None:
        self.method = method
        self.repeat = repeat
        self.lr = lr
        self.models: dict[int, MultiHeadNet] = {}
        self.parents: dict[int, Optional[int]] = {}
        self.accuracies: dict[int, float] = {}

    def _rng(self, task_id: int) -> random.Random:
        return random.Random(f"unforget/finetune-chain/seed={self.method.config.seed}/repeat={self.repeat}/task={task_id}")

    def parent_for(self, task_id: int) -> Optional[int]:
        """The earlier task whose model task ``task_id`` is fine-tuned from: uniform over the
        tasks this chain has learned (``None`` when it has learned none)."""
        return self._rng(task_id).choice(sorted(self.models)) if self.models else None

    def learn(self, task: Task) -> float:
        """Train and keep the model of ``task``; returns its validation accuracy in [0, 1].

        Raises:
            ValueError: ``task`` was already learned by this chain.
        """
        if task.id in self.models:
            raise ValueError(f"task {task.id} is already learned by fine-tuning chain {self.repeat}")
        rng = self._rng(task.id)
        parent = rng.choice(sorted(self.models)) if self.models else None  # same draw as parent_for
        torch_seed = rng.getrandbits(62)
        base = self.method.trainer
        trainer = base.child(seed=rng.getrandbits(31))
        dev = base.device
        devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(torch_seed)
            if parent is None:
                model = self.method.new_backbone(seed_offset=task.id + 10_007 * self.repeat)
                lr, desc = None, f"finetune ref {self.repeat + 1} (scratch)"
            else:
                model = copy.deepcopy(self.models[parent])
                for k in list(model.heads):
                    del model.heads[k]
                lr, desc = self.lr, f"finetune ref {self.repeat + 1} (from task {parent})"
            model.add_head(task.id, task.n_classes)
            val = train_plain(self.method, model, task, desc=desc, lr=lr, trainer=trainer)
        self.models[task.id] = model
        self.parents[task.id] = parent
        self.accuracies[task.id] = val
        return val

    def state(self, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict]:
        """``(tensors under {prefix}task{t}., JSON-able meta)``; inverse of :meth:`load_state`."""
        tensors, meta = models_state(self.models, prefix)
        meta["parents"] = {str(t): p for t, p in self.parents.items()}
        meta["accuracies"] = {str(t): a for t, a in self.accuracies.items()}
        return tensors, meta

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict, prefix: str = "") -> None:
        self.models = load_models(self.method, tensors, meta["heads"], prefix)
        self.parents = {int(t): p for t, p in meta["parents"].items()}
        self.accuracies = {int(t): a for t, a in meta["accuracies"].items()}


@register_method
class Scratch(Method):
    """An independent model trained from scratch for every task (no transfer, no forgetting)."""

    name = "scratch"
    description = "independent model per task, trained from scratch (upper bound on size, no forgetting)"
    exact = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.models: dict[int, MultiHeadNet] = {}

    def learn(self, task: Task) -> dict:
        model = self.new_backbone(seed_offset=task.id)
        model.add_head(task.id, task.n_classes)
        val = train_plain(self, model, task)
        self.models[task.id] = model
        self.learned.append(task.id)
        return {"val_accuracy": val}

    def model_for(self, task_id: int) -> nn.Module:
        return self.models[task_id]

    def size(self) -> dict:
        return models_size(self.models)

    def state(self):
        return models_state(self.models)

    def load_state(self, tensors, meta) -> None:
        self.models = load_models(self, tensors, meta["heads"])
        self.learned.extend(int(t) for t in meta["heads"])


class FinetuneCopiesOptions(BaseModel):
    """Options of ``methods.finetune-copies``."""

    model_config = ConfigDict(extra="forbid")
    lr: float = Field(FINETUNE_LR, gt=0, description="learning rate of the fine-tuned tasks (all but the first, "
                                                     "which trains from scratch at train.lr); the reference's 5e-3")


@register_method
class FinetuneCopies(Method):
    """The CPG paper's *Finetune* baseline (Hung et al. 2019, Sec. 4.1, Tables 1-2): task 1 from
    scratch, each later task fine-tuned from a copy of a randomly chosen earlier task's model;
    one model per task is kept (K models, exact: earlier tasks never change). One
    :class:`FinetuneChain` (repeat 0)."""

    name = "finetune-copies"
    description = ("the CPG paper's Finetune baseline: each task fine-tuned from a randomly chosen earlier task's "
                   "model, one copy per task (K models, no forgetting)")
    Options = FinetuneCopiesOptions
    exact = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.chain = FinetuneChain(self, repeat=0, lr=self.options.lr)

    def learn(self, task: Task) -> dict:
        val = self.chain.learn(task)
        self.learned.append(task.id)
        return {"val_accuracy": val, "parent_task": self.chain.parents[task.id]}

    def model_for(self, task_id: int) -> nn.Module:
        return self.chain.models[task_id]

    def size(self) -> dict:
        return models_size(self.chain.models)

    def state(self):
        return self.chain.state()

    def load_state(self, tensors, meta) -> None:
        self.chain.load_state(tensors, meta)
        self.learned.extend(int(t) for t in meta["heads"])


@register_method
class Finetune(Method):
    """The field's naive sequential fine-tuning baseline: one shared network fine-tuned on each
    task in turn, a new head per task; it forgets the earlier tasks (unlike ``finetune-copies``)."""

    name = "finetune"
    description = ("naive sequential fine-tuning (the field's forgetting baseline): one network fine-tuned task "
                   "after task, a new head each; not the CPG paper's Finetune (see finetune-copies)")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.model = self.new_backbone()

    def learn(self, task: Task) -> dict:
        self.model.add_head(task.id, task.n_classes)
        val = train_plain(self, self.model, task)
        self.learned.append(task.id)
        return {"val_accuracy": val}

    def model_for(self, task_id: int) -> nn.Module:
        return self.model

    def size(self) -> dict:
        return {"model_size_bytes": module_bytes(self.model), "expansion_ratio": 1.0, "released_ratio": None}

    def state(self):
        return (_split_state("", self.model),
                {"heads": {k: h.out_features for k, h in self.model.heads.items()}})

    def load_state(self, tensors, meta) -> None:
        for t_str, n in meta["heads"].items():
            self.model.add_head(int(t_str), n)
            self.learned.append(int(t_str))
        self.model.load_state_dict(tensors)
