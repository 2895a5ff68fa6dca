"""Mini-batch training and evaluation of one task, shared by every method."""
from __future__ import annotations

import math
import random
import time
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unforget import distributed
from unforget.config import TrainConfig
from unforget.errors import UnforgetError
from unforget.data.task import Split, Task
from unforget.models.heads import batch_labels
from unforget.training import acceleration, determinism, feed
from unforget.training.epochlog import EpochLogger, EpochRecord, phase_of
from unforget.training.hooks import Hook, TrainState
from unforget.training.phases import FIT_PHASES, PhaseClock
from unforget.training.progress import Display


class TrainingDiverged(UnforgetError):
    """The training loss became NaN or infinite."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) for reproducible runs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@torch.no_grad()
def accuracy(model: nn.Module, task: Task, split: str = "test", batch_size: int = 512,
             device: str | torch.device = "cpu", agree: bool = True) -> float:
    """Top-1 accuracy in [0, 1] of ``model(x, task=task.id)`` on ``task``'s ``split``
    (``"train"``, ``"val"`` or ``"test"``); evaluation mode, no augmentation, no gradient. In a
    distributed run every process evaluates the whole split and, with ``agree`` (a collective
    call: every process must make it), process 0's value is returned by all
    (:func:`unforget.distributed.agree_float`)."""
    data: Split = getattr(task, split)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)  # summed where the model runs: one sync
    for i in range(0, len(data), batch_size):
        x = task.transform(data.x[i:i + batch_size], train=False).to(device)
        correct += (model(x, task.id).argmax(1) == data.y[i:i + batch_size].to(device)).sum()
    model.train(was_training)
    value = int(correct) / max(1, len(data))
    return distributed.agree_float(value) if agree else value  # decisions follow process 0


class Trainer:
    """Runs epochs of mini-batch training over one task's training split and calls the hooks.

    Args:
        config: hyper-parameters (epochs, batch size, optimizer, learning rate, schedule).
        device: ``"cpu"`` or ``"cuda"``.
        seed: base seed; the batch order and augmentation of task t, round r are drawn from
            ``seed``, t and r, so a run is reproducible (for a given device: on a GPU with the
            data on it, ``train.data_on_device``, they are drawn by a generator on the GPU).
        progress: report progress (:class:`~unforget.training.progress.Display`: ``tqdm`` bars
            on a terminal, one plain line per epoch otherwise).
        display: where progress goes (default: a new :class:`Display` enabled by ``progress``).

    Attributes:
        loggers: :class:`~unforget.training.epochlog.EpochLogger` s that receive one
            :class:`~unforget.training.epochlog.EpochRecord` per epoch of every fit (with the
            validation accuracy after the epoch, measured only when there is a logger).
        method_name: written into the records.
        phases: where the time goes (:class:`~unforget.training.phases.PhaseClock`): a fit
            counts as its phase (``training``, ``compaction`` or ``goal_references``, from
            ``desc``), validation passes as ``evaluation``; shared with :meth:`child` trainers.
    """

    def __init__(self, config: TrainConfig, device: str = "cpu", seed: int = 0, progress: bool = True,
                 display: Optional[Display] = None) -> None:
        self.config = config
        self.device = torch.device(device)
        self.seed = seed
        self.progress = progress
        self.display = display if display is not None else Display(enabled=progress)
        self.loggers: list[EpochLogger] = []
        self.method_name = ""
        self.phases = PhaseClock()
        self._rounds: dict[int, int] = {}
        """Fits run so far per task id: the batch order of task t's r-th fit depends only on
        (seed, t, r), so a run resumed after task t - 1 draws what an uninterrupted one does."""

    def child(self, seed: int) -> "Trainer":
        """A trainer with this one's settings, display and loggers and its own ``seed`` (and
        batch-order counters), for reference models trained beside the method's."""
        t = Trainer(self.config, device=str(self.device), seed=seed, progress=self.progress, display=self.display)
        t.loggers, t.method_name, t.phases = self.loggers, self.method_name, self.phases
        return t

    # -------------------------------------------------------------- optimizers
    def optimizer(self, params: Iterable, lr: Optional[float] = None,
                  weight_decay: Optional[float] = None) -> torch.optim.Optimizer:
        """The configured ``torch.optim`` optimizer (``TrainConfig.optimizer``: SGD with
        ``momentum`` / ``nesterov``, Adam or AdamW with ``betas`` / ``eps``) over ``params``
        (tensors or param-group dicts; a group's own ``weight_decay`` wins).

        ``lr`` and ``weight_decay`` default to the config's. Pass ``weight_decay=0.0`` (or give
        the group ``"weight_decay": 0.0``) for tensors that hold frozen entries: SGD's and Adam's
        decay adds ``wd * w`` to their zero gradient and AdamW's decoupled decay shrinks them,
        either way moving weights of earlier tasks. An entry whose gradient is exactly zero at
        every step and that has no weight decay is never moved by any of the three.

        The multi-tensor (``foreach``) implementations are used on every device: on CPU they give
        the same values bit for bit as PyTorch's default there and are cheaper for SGD and AdamW
        (``benchmarks/masked_step_parts.py``; BENCHMARKS.md, "A cheaper masked step").
        """
        c = self.config
        lr = c.lr if lr is None else lr
        wd = c.weight_decay if weight_decay is None else weight_decay
        params = list(params)
        if c.optimizer == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=c.momentum, nesterov=c.nesterov and c.momentum > 0,
                                   weight_decay=wd, foreach=True)
        cls = torch.optim.Adam if c.optimizer == "adam" else torch.optim.AdamW
        return cls(params, lr=lr, betas=tuple(c.betas), eps=c.eps, weight_decay=wd, foreach=True)

    @staticmethod
    def pick_optimizer(scores: Sequence[torch.Tensor], lr: float) -> torch.optim.Optimizer:
        """Adam (no weight decay) over real-valued pick scores, as Piggyback and CPG train them
        (Mallya et al. 2018, Sec. 4; the CPG reference's ``--lr_mask``).

        PyTorch's fused Adam: one kernel per tensor instead of about ten passes over the
        scores, which are as large as the weights (on CPU over VGG16-BN 0.25's 2.1 M scores,
        2.3 ms per step against 13.7 ms for ``foreach``; ``benchmarks/masked_step_parts.py``).
        Its values differ from the default implementation's in the last bits; the scores are
        only ever compared with a threshold, and exactness of earlier tasks does not depend on
        them (a score whose gradient is always zero is never moved by Adam without decay)."""
        return torch.optim.Adam(list(scores), lr=lr, fused=True)

    def schedulers(self, optimizers: Sequence[torch.optim.Optimizer]) -> list:
        c = self.config
        if not c.lr_milestones:
            return []
        return [torch.optim.lr_scheduler.MultiStepLR(o, milestones=list(c.lr_milestones), gamma=c.lr_gamma)
                for o in optimizers]

    # -------------------------------------------------------------- loop
    def steps_per_epoch(self, task: Task) -> int:
        """Optimizer steps in one epoch over ``task``'s training split — this process's shard of
        it in a distributed run (:func:`unforget.distributed.shard`) — (a last batch of one
        image is dropped: batch norm cannot train on it)."""
        n = distributed.shard_length(len(task.train))
        bs = min(self.config.batch_size, n)
        return max(1, n // bs if n % bs < 2 else n // bs + 1)

    def fit(self, model: nn.Module, task: Task, optimizers: Sequence[torch.optim.Optimizer],
            hooks: Sequence[Hook] = (), epochs: Optional[int] = None, desc: str = "train",
            schedule: bool | Sequence = True, log: Optional[dict] = None) -> dict:
        """Train ``model`` on ``task`` for ``epochs`` (default: the config's) and return
        ``{"loss": last epoch's mean loss, "train_accuracy": last epoch's accuracy}``.

        ``schedule``: ``True`` steps the configured ``MultiStepLR`` of every optimizer once per
        epoch, ``False`` keeps the learning rates constant, and a sequence of learning-rate
        schedulers (built by the caller over ``optimizers``) is stepped instead.

        ``desc`` names the fit in progress lines and gives the phase of the log records
        (:func:`~unforget.training.epochlog.phase_of`); ``log`` gives their pruning ratio
        (``{"pruning_ratio": 0.3}``; a hook's ``state.extra["pruning_ratio"]`` wins)."""
        epochs = self.config.epochs if epochs is None else epochs
        self._rounds[task.id] = self._rounds.get(task.id, 0) + 1
        if isinstance(schedule, bool):
            scheds = self.schedulers(optimizers) if schedule else []
        else:
            scheds = list(schedule)
        fmt = acceleration.training_layout(model, self.config.memory_format, self.device)
        with self.phases.phase(FIT_PHASES[phase_of(desc)]), self.reproducible(), acceleration.layout(model, fmt):
            return self._fit(model, task, optimizers, hooks, epochs, desc, scheds, log, fmt)

    def _fit(self, model, task, optimizers, hooks, epochs, desc, scheds, log, fmt) -> dict:
        r = self._rounds[task.id]
        resident = feed.on_device(task.train, self.config.data_on_device, self.device)
        batches = feed.BatchFeed(task.train, self.device, resident, self.seed * 1_000_003 + task.id * 10_007 + r)
        state = TrainState(model=model, task=task, optimizers=list(optimizers), epochs=epochs)
        n = len(task.train)
        bs = min(self.config.batch_size, distributed.shard_length(n))
        n_batches = state.steps_per_epoch = self.steps_per_epoch(task)
        net = distributed.wrap(model, self.device)  # gradients averaged across processes
        if self.config.compile:
            acceleration.graphs_for_task(task.id)
            net = acceleration.compiled(net, self.config.compile_mode)
        first_step = self.config.compile
        ragged = self.config.compile and distributed.shard_length(n) % bs != 0  # a smaller last batch
        amp_dtype = {"bf16": torch.bfloat16, "16": torch.float16}.get(self.config.precision)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.config.precision == "16")
        for h in hooks:
            h.before_task(state)
        stats = {"loss": float("nan"), "train_accuracy": float("nan")}
        fit_start = time.perf_counter()

        def fit_left(done_epochs: float) -> float:
            """Seconds left in this fit, at the pace so far."""
            return (time.perf_counter() - fit_start) / done_epochs * (epochs - done_epochs)

        for epoch in range(epochs):
            state.epoch = epoch
            epoch_start = time.perf_counter()
            model.train()
            for h in hooks:
                h.before_epoch(state)
            perm = distributed.shard(batches.order())
            # summed where the model runs and read once, at the epoch's end: no host sync in a step
            total = 0
            correct = torch.zeros((), dtype=torch.int64, device=self.device)
            loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
            penalised = torch.zeros((), dtype=torch.float64, device=self.device)  # losses with hook penalties
            bar = self.display.bar(n_batches, f"{desc} {epoch + 1}/{epochs}")
            for b in bar:
                idx = perm[b * bs:(b + 1) * bs]
                x, state.y = batches.batch(idx, task.transform)
                state.x = acceleration.as_layout(x, fmt)
                acceleration.mark_batch(state.x, ragged)
                for h in hooks:
                    h.before_forward(state)
                try:
                    with torch.autocast(self.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None), \
                            batch_labels(state.y):  # a margin head (A-Softmax) reads them while training
                        state.logits = net(state.x, task.id)
                except Exception as e:
                    if first_step and acceleration.is_compile_error(e):
                        raise acceleration.compile_failure(e) from e
                    raise
                first_step = False
                state.logits = state.logits.float()
                state.loss = F.cross_entropy(state.logits, state.y)
                loss = state.loss
                for h in hooks:
                    extra = h.penalty(state)
                    if extra is not None:
                        loss = loss + extra
                if loss is not state.loss:
                    penalised.add_(loss.detach())  # a non-finite loss stays non-finite in the sum
                for o in optimizers:
                    o.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if scaler.is_enabled():  # hooks edit true gradients; a step with inf/nan ones is skipped
                    for o in optimizers:
                        scaler.unscale_(o)
                for h in hooks:
                    h.after_backward(state)
                for o in optimizers:
                    scaler.step(o)
                scaler.update()
                state.step += 1
                for h in hooks:
                    h.after_step(state)
                total += len(idx)
                correct.add_((state.logits.detach().argmax(1) == state.y).sum())
                loss_sum.add_(state.loss.detach(), alpha=len(idx))
                if self.progress and b % 10 == 0 and not bar.disable:  # a terminal's bar reads every 10 steps
                    bar.set_postfix_str(f"loss {float(loss_sum) / total:.3f}, acc {int(correct) / total:.3f}, "
                                        f"{self.display.etas(fit_left(epoch + (b + 1) / n_batches))}")
            bar.close()
            lr = optimizers[0].param_groups[0]["lr"] if optimizers else None
            for s in scheds:
                s.step()
            read = torch.stack([loss_sum, correct.double(), penalised]).tolist()  # the epoch's one read
            loss_sum, correct, penalty_sum, total = distributed.sum_across([*read, total])  # every process raises
            if not (math.isfinite(loss_sum) and math.isfinite(penalty_sum)):
                raise TrainingDiverged(f"training diverged on task {task.id} ({desc}, epoch {epoch + 1}): the loss was "
                                       "not finite; lower the learning rate or the method's penalty strength "
                                       "(e.g. methods.ewc.lambda)")
            stats = {"loss": loss_sum / max(1, total), "train_accuracy": correct / max(1, total)}
            self.phases.count_epoch(FIT_PHASES[phase_of(desc)], total)
            for h in hooks:
                h.after_epoch(state)
            seconds = time.perf_counter() - epoch_start
            val = None
            if self.loggers and len(task.val):  # for the log only (process 0's)
                with self.phases.phase("evaluation"):
                    val = accuracy(model, task, "val", self.config.eval_batch_size, self.device, agree=False)
            self.display.epoch_done(f"{desc} {epoch + 1}/{epochs}", stats, val, seconds, fit_left(epoch + 1))
            if self.loggers:
                ratio = state.extra.get("pruning_ratio", (log or {}).get("pruning_ratio"))
                record = EpochRecord(method=self.method_name, task=task.id, task_name=task.name, phase=phase_of(desc),
                                     desc=desc, epoch=epoch + 1, epochs=epochs, loss=stats["loss"],
                                     train_accuracy=stats["train_accuracy"], val_accuracy=val, lr=lr,
                                     pruning_ratio=ratio, seconds=seconds)
                for logger in self.loggers:
                    logger.log(record)
        for h in hooks:
            h.after_task(state)
        state.x = state.y = state.logits = state.loss = None
        return stats

    def accuracy(self, model: nn.Module, task: Task, split: str = "val") -> float:
        """:func:`accuracy` at the configured evaluation batch size, counted as ``evaluation``."""
        with self.phases.phase("evaluation"), self.reproducible():
            return accuracy(model, task, split, self.config.eval_batch_size, self.device)

    def reproducible(self):
        """The configured deterministic-algorithms and TF32 settings, for one fit or evaluation
        (:func:`unforget.training.determinism.scope`; restored afterwards)."""
        return determinism.scope(self.config.deterministic, self.config.tf32)
