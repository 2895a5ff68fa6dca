"""A learner session: one method, its trainer and the record of what it learned, task by task.

:class:`Learner` is the object a run, a resumed run and (later) a deployed model share: it
learns one task at a time (:meth:`Learner.learn`), tests on the tasks whose data it is given
(row i of the accuracy matrix R), serves any learned task (:meth:`Learner.logits`), and turns
itself into a checkpoint (:meth:`Learner.state`) or back (:meth:`Learner.open`).

What happens *around* learning — progress lines, checkpoints, ``results.json`` and reports —
is not inside it: observers (:class:`TaskObserver`) are told of each task's events, as
avalanche's ``before_training_exp`` / ``after_training_exp`` plugins are. ``runner.run`` is a loop
over a benchmark that calls :meth:`Learner.learn`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import torch

from unforget import __version__
from unforget.atomic import write_atomic
from unforget.checkpoint import (CHECKPOINT, check_run_checkpoint, checkpoint_file, checkpoint_size, checkpoint_tasks,
                                 load_checkpoint, no_trained_model, save_checkpoint)
from unforget.config import RunConfig, run_identity
from unforget.data.task import Benchmark, PretrainedTask, SequencePlan, Task
from unforget.errors import CheckpointError, ConfigError, UnforgetError
from unforget.evaluation import average_accuracy, bwt, forgetting, markdown_report
from unforget.evaluation.certify import certificate
from unforget.methods import Method, get_method, list_methods
from unforget.training import Trainer, accuracy, determinism, seed_everything
from unforget.training.phases import PhaseClock, add_seconds
from unforget.training.progress import TaskClock, duration

if TYPE_CHECKING:
    from unforget.serving import ServingModel


def check_device(device) -> str:
    """``device`` (a name or a ``torch.device``) as a string, if PyTorch can use it here.

    Raises:
        ConfigError: not a device name, or CUDA (or CUDA device N) / MPS asked for where absent
            (one line; a checkpoint being loaded is never blamed).
    """
    from unforget.config import check_device_name

    device = check_device_name(device)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device} asked for, but PyTorch sees no CUDA device; use cpu")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {device} asked for, but PyTorch sees {torch.cuda.device_count()} CUDA "
                              f"device(s) (cuda:0..cuda:{torch.cuda.device_count() - 1})")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device mps asked for, but PyTorch sees no MPS device; use cpu")
    return device


def build_method(config: RunConfig, plan: SequencePlan | Benchmark, progress: bool = True) -> Method:
    """Seed everything and build the configured method for a sequence (a :class:`SequencePlan`,
    or a :class:`Benchmark`, whose plan is taken)."""
    check_device(config.device)
    determinism.prepare_process(config.train.deterministic)  # before CUDA starts
    seed_everything(config.seed)
    trainer = Trainer(config.train, device=config.device, seed=config.seed, progress=progress)
    trainer.method_name = config.method
    return get_method(config.method)(config, SequencePlan.of(plan), trainer)


def task_seed(config: RunConfig, task_id: int) -> int:
    """The seed every draw of task ``task_id`` starts from: a task's draws do not depend on how
    many draws earlier tasks made, so a resumed run repeats an uninterrupted one."""
    return config.seed * 1_000_003 + task_id


class TaskObserver:
    """Receives a :class:`Learner`'s task events; override the ones you need."""

    def before_task(self, learner: "Learner", task: Task) -> None:
        """Called before ``task`` is learned."""

    def after_task(self, learner: "Learner", task: Task, record: dict) -> None:
        """Called after ``task`` was learned and tested: ``learner.R[-1]`` is its row of the
        accuracy matrix, ``record`` its entry of ``learner.records``."""


@dataclass
class Learner:
    """One continual learner: a method, its configuration and what it has learned so far.

    Attributes:
        config: the run's configuration.
        method: the continual-learning method (owns the network(s) and the trainer).
        plan: what was known of the sequence when the learner was built (input shape,
            planned number of tasks, benchmark name and options).
        tasks: per learned task, ``{"name", "classes"}`` (task ``i`` is ``tasks[i - 1]``).
        R: accuracy matrix, ``R[i][j]`` = test accuracy (fraction in [0, 1]) on task ``j + 1``
            after learning task ``i + 1`` (Lopez-Paz & Ranzato 2017).
        records: per learned task, what the method reported (``val_accuracy``, goal, pruning
            ratio, width, train time, size, capacity).
        wall_time_s: seconds this learner worked (loading data, building, learning, testing,
            accounting size, writing checkpoints), over every session: the sum of its phases.
        observers: told of every task's events (:class:`TaskObserver`).
        notes: JSON-able facts about how the run was set up that results.json reports beside the
            configuration (``auto_config``: what the automatic configuration for own data chose
            and why); kept in the checkpoint.
        retest: re-test every earlier task after each task; by default an exact method's
            earlier task whose certificate is unchanged keeps R[j][j]
            (:mod:`unforget.evaluation.certify`).
        clock: where the time goes (:class:`~unforget.training.phases.PhaseClock`, shared with
            the method's trainer); each task's record gets its ``phase_seconds``.
        run_seconds: seconds per phase that belong to no task (data loading, setup, the final
            results), over every session.
    """

    config: RunConfig
    method: Method
    plan: SequencePlan
    tasks: list[dict] = field(default_factory=list)
    R: list[list[float]] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    wall_time_s: float = 0.0
    observers: list[TaskObserver] = field(default_factory=list)
    notes: dict = field(default_factory=dict)
    retest: bool = False
    clock: PhaseClock = field(default_factory=PhaseClock)
    run_seconds: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.method.trainer.phases = self.clock  # fits and validation passes count in the learner's phases

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, config: RunConfig, plan: SequencePlan | Benchmark, *, progress: bool = True,
               observers: Sequence[TaskObserver] = (), clock: Optional[PhaseClock] = None) -> "Learner":
        """A learner that has learned nothing yet, for a sequence described by ``plan``; its
        time is counted on ``clock`` (default: a new one), building it as ``setup``."""
        plan = SequencePlan.of(plan)
        clock = clock or PhaseClock()
        with clock.phase("setup"):
            method = build_method(config, plan, progress)
        return cls(config, method, plan, observers=list(observers), clock=clock)

    @classmethod
    def open(cls, path: str | Path, device: str = "cpu", *, progress: bool = False,
             config: Optional[RunConfig] = None, plan: Optional[SequencePlan | Benchmark] = None,
             observers: Sequence[TaskObserver] = (), clock: Optional[PhaseClock] = None) -> "Learner":
        """The learner saved in ``path`` (a run folder or its ``checkpoint.safetensors``), on
        ``device``, bit-identical to the one that saved it. No data is needed.

        ``config``, when given, must be the configuration the checkpoint was made with (up to
        the device and other settings that do not change results); it is used instead of the
        stored one (``--resume`` passes the command line's); ``plan``, when given, replaces the
        stored plan (``--resume`` passes the benchmark it continues). Opening counts as ``setup``
        on ``clock`` (default: a new one).

        Raises:
            ConfigError: ``device`` unknown or absent here (the file is not blamed).
            CheckpointError: missing, damaged or inconsistent checkpoint, or one made with
                another configuration than ``config`` (one line naming the file).
        """
        check_device(device)
        clock = clock or PhaseClock()
        with clock.phase("setup"):
            return cls._open(path, device, progress, config, plan, observers, clock)

    @classmethod
    def _open(cls, path, device, progress, config, plan, observers, clock) -> "Learner":
        from unforget.config import run_differences, same_run

        if not checkpoint_file(path).is_file():
            raise CheckpointError(no_trained_model(path))
        path = checkpoint_file(path)
        tensors, meta = load_checkpoint(path, device)
        check_run_checkpoint(path, tensors, meta)
        if config is None:
            try:
                config = RunConfig.model_validate(meta["config"])
            except ValueError:
                raise CheckpointError(f"checkpoint {path} is damaged: its config is not a valid unforget "
                                      "configuration") from None
            config = config.model_copy(update={"device": device})
        elif not same_run(meta["config"], config):
            diff = run_differences(meta["config"], config)
            raise CheckpointError(f"the checkpoint {path} was made with another configuration "
                                  f"({'; '.join(diff[:4])}{'; ...' if len(diff) > 4 else ''})")
        if plan is None:
            plan = SequencePlan(tuple(meta["input_shape"]), meta.get("planned_tasks"),
                                meta.get("benchmark", config.benchmark.name), meta.get("benchmark_info", {}))
        learner = cls.create(config, plan, progress=progress, observers=observers, clock=clock)
        learner.load_state(path, tensors, meta)
        return learner

    def load_state(self, path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Inverse of :meth:`state` on a freshly built learner of the same configuration.

        Raises:
            CheckpointError: the checkpoint does not fit this learner's method (one line).
        """
        try:
            self.method.load_state(tensors, meta["method"])
            self.method.trainer._rounds = {int(t): int(r) for t, r in meta.get("trainer_rounds", {}).items()}
        except (KeyError, IndexError, ValueError, TypeError, AttributeError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint {path} does not fit method '{self.method.name}' "
                                  f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        self.R, self.records = meta["accuracy_matrix"], meta["records"]
        self.wall_time_s = float(meta["wall_time_s"])
        self.run_seconds = dict(meta.get("run_phase_seconds") or {})
        self.notes = dict(meta.get("notes") or {})
        stored = meta.get("tasks") or []
        self.tasks = [dict(t) for t in stored] if len(stored) == len(self.records) else \
            [{"name": f"task {i + 1}", "classes": []} for i in range(len(self.records))]

    # ------------------------------------------------------------------ learning
    @property
    def n_learned(self) -> int:
        """Number of tasks learned so far."""
        return len(self.records)

    def learn(self, task: Task, test_on: Sequence[Task] = (), info: Optional[dict] = None) -> dict:
        """Learn ``task`` (its id must be ``n_learned + 1``), then test on ``test_on`` (the
        earlier tasks whose test data is at hand, in id order) and on ``task``. ``info``
        (JSON-able) is stored with the task's name and classes (e.g. where its data came from).

        Appends ``task``'s row to :attr:`R` (an earlier task absent from ``test_on`` is ``None``:
        never invented) and its record to :attr:`records`; observers are told before and after.
        An earlier task whose certificate is unchanged keeps R[j][j] untested (exact methods,
        unless :attr:`retest`; :mod:`unforget.evaluation.certify`): the record's ``certified``
        lists those task ids. The record's ``phase_seconds`` says where the task's time went, its
        ``budget`` the training epochs and images per phase of every network trained for it
        (``{"training": {"epochs", "images"}, "compaction": ..., "goal_references": ...}``).

        Returns:
            The task's record.
        Raises:
            UnforgetError: ``task.id`` is not the next task id.
        """
        if task.id != self.n_learned + 1:
            raise UnforgetError(f"task {task.id} ({task.name}) cannot be learned now: {self.n_learned} tasks "
                                f"learned, the next task id is {self.n_learned + 1}")
        if isinstance(task, PretrainedTask) and not self.method.takes_pretrained:
            from unforget.methods.base import PretrainedUnsupported

            takes = sorted(n for n in list_methods() if get_method(n).takes_pretrained)
            raise PretrainedUnsupported(f"method {self.config.method} cannot take a pretrained task 1 yet; "
                                        f"methods that can: {', '.join(takes)}")
        self.settle_time()  # what came before (data loading, setup) belongs to the run, not the task
        for obs in self.observers:
            obs.before_task(self, task)
        t0 = time.perf_counter()
        seed_everything(task_seed(self.config, task.id))
        self.clock.take_work()  # only this task's training is its budget
        with self.clock.phase("training"):
            rec = self.method.learn(task)
        rec["train_time_s"] = time.perf_counter() - t0
        rec["budget"] = self.clock.take_work()
        with self.clock.phase("size_accounting"):
            size = self.method.size()
            cap = self.method.capacity()
        for key in ("model_size_bytes", "expansion_ratio", "released_ratio"):
            rec[key] = size.get(key)
        if cap:
            rec["capacity"] = {layer: c.get("used_share") for layer, c in cap.items()}
        given = {t.id: t for t in test_on if t.id < task.id}
        given[task.id] = task
        self._verification: dict = {}
        with self.clock.phase("evaluation"):
            row, certified = self._test_row(task, given)
            if self.method.exact:
                rec["certificate"] = certificate(self.method.model_for(task.id), task)
            if hasattr(self.method, "infer_task"):
                rec["task_inference"] = self.task_inference(list(given.values()))
        with self.clock.phase("evaluation"):
            self.fill_earlier_gaps(given)
        self.R.append(row)
        rec["certified"] = certified
        if self._verification:  # the verification protocol's spread too (the paper: mean +- std)
            rec["verification"] = {str(j): {"accuracy": r.accuracy, "std": r.std, "fold_accuracies": r.fold_accuracies}
                                   for j, r in self._verification.items()}
        self.records.append(rec)
        from unforget.serving import preprocessing_of

        per_task = self.plan.info.get("tasks") or []
        own = per_task[task.id - 1] if task.id <= len(per_task) and isinstance(per_task[task.id - 1], dict) else {}
        resize = own.get("resize") or self.plan.info.get("resize", "stretch")  # a task's own rule wins
        with self.clock.phase("data_loading"):  # which data this was: `learn` refuses to learn it twice
            data_digest = task.data_digest()
        self.tasks.append({"name": task.name, "classes": list(task.classes), "data_digest": data_digest,
                           "preprocessing": preprocessing_of(task, resize),
                           **({"accuracy_given": True} if isinstance(task, PretrainedTask) and task.accuracy_given
                              and task.pairs is None else {}),
                           **({"test_protocol": f"verification, {len(task.pairs.folds)} folds of pairs"}
                              if task.pairs is not None else {}),
                           **(info or {})})
        self.settle_time(rec)
        for obs in self.observers:
            obs.after_task(self, task, rec)
        return rec

    def _test_row(self, task: Task, given: dict[int, Task]) -> tuple[list[Optional[float]], list[int]]:
        """Row ``task.id`` of R over the tasks in ``given``, and the earlier task ids whose entry
        was certified rather than tested (:meth:`certified_accuracy`)."""
        row: list[Optional[float]] = []
        certified: list[int] = []
        for j in range(1, task.id + 1):
            if j not in given:
                row.append(None)
                continue
            value = self.certified_accuracy(given[j]) if j < task.id else None
            if value is None:
                value = self.test(given[j])
            else:
                certified.append(j)
            row.append(value)
        return row, certified

    def fill_earlier_gaps(self, given: dict[int, Task]) -> dict[int, list[int]]:
        """Fill entries R[i][j] of earlier rows that were left ``None`` (task j's test data was
        not reachable when task i was learned) for the tasks j in ``given`` whose certificate
        shows their served network unchanged since R[j][j] (:meth:`certified_accuracy`): an exact
        method never changes a learned task, so R[i][j] = R[j][j]. Each filled row's record lists
        them under ``certified_later``; returns ``{row i: [j, ...]}``. Methods that may forget
        keep their gaps (what they computed then cannot be known now)."""
        gaps = {j for row in self.R for j, v in enumerate(row, start=1) if v is None and j in given}
        values = {j: self.certified_accuracy(given[j]) for j in sorted(gaps)}
        filled: dict[int, list[int]] = {}
        for i, row in enumerate(self.R, start=1):
            for j, v in enumerate(row, start=1):
                if v is None and values.get(j) is not None:
                    row[j - 1] = values[j]
                    filled.setdefault(i, []).append(j)
        for i, js in filled.items():
            self.records[i - 1]["certified_later"] = sorted(set(self.records[i - 1].get("certified_later", [])) | set(js))
        return filled

    def certified_accuracy(self, task: Task) -> Optional[float]:
        """R[j][j] of the learned task ``task`` (id j) when its certificate
        (:func:`unforget.evaluation.certify.certificate`) is unchanged since R[j][j] was measured:
        its test accuracy now, known without a test pass. ``None`` (test it) with :attr:`retest`,
        for a method that may forget, a verification task (its fold spread is recorded per row),
        a task with no stored certificate or R[j][j], or a changed certificate."""
        j = task.id
        if self.retest or not self.method.exact or task.pairs is not None or j > len(self.records):
            return None
        stored = self.records[j - 1].get("certificate")
        measured = self.R[j - 1][j - 1] if j - 1 < len(self.R) and len(self.R[j - 1]) >= j else None
        if stored is None or measured is None:
            return None
        return measured if certificate(self.method.model_for(j), task) == stored else None

    def settle_time(self, record: Optional[dict] = None) -> dict[str, float]:
        """Book the seconds :attr:`clock` counted since the last call: into ``record``'s
        ``phase_seconds`` (a task's), or into :attr:`run_seconds` when ``record`` is ``None``;
        :attr:`wall_time_s` grows by their sum. Returns the booked seconds per phase."""
        taken = self.clock.take()
        self.wall_time_s += sum(taken.values())
        if record is None:
            self.run_seconds = add_seconds(self.run_seconds, taken)
        else:
            record["phase_seconds"] = add_seconds(record.get("phase_seconds") or {}, taken)
        return taken

    def test(self, task: Task, split: str = "test") -> float:
        """Accuracy (fraction) of the learned model on ``task``'s ``split``; for a pretrained
        task without data in ``split``, its given accuracy (``None`` when none was given)."""
        if split == "test" and task.pairs is not None:  # face verification: the LFW protocol
            from unforget.evaluation.verification import evaluate_pairs

            result = evaluate_pairs(self.method.model_for(task.id), task, self.config.train.eval_batch_size,
                                    self.method.device)
            self.__dict__.setdefault("_verification", {})[task.id] = result
            return result.accuracy
        if isinstance(task, PretrainedTask) and len(getattr(task, split)) == 0:
            return task.given_accuracy
        return accuracy(self.method.model_for(task.id), task, split, self.config.train.eval_batch_size,
                        self.method.device)

    def task_inference(self, tasks: Sequence[Task], batch_size: int = 128) -> dict:
        """Share of test batches (``batch_size`` images of one task, in order) whose task id the
        method infers right (SupSup's rule, its option ``inference``; Wortsman et al. 2020 test on
        batches of 128), per task id and overall: ``{"per_task": {id: share}, "accuracy": share,
        "batch_size": n, "rule": name}``;
        ``{"error": ...}`` when the method cannot infer these tasks (e.g. heads of different sizes)."""
        per: dict[str, float] = {}
        right = total = 0
        try:
            for t in tasks:
                x = t.test.x
                hits = n = 0
                for i in range(0, len(x), batch_size):
                    got, _ = self.method.infer_task(t.transform(x[i:i + batch_size]))
                    hits, n = hits + (got == t.id), n + 1
                if n:
                    per[str(t.id)] = hits / n
                    right, total = right + hits, total + n
        except (ValueError, NotImplementedError) as e:
            return {"error": str(e)}
        rule = getattr(getattr(self.method, "options", None), "inference", None)
        return {"per_task": per, "accuracy": right / total if total else None, "batch_size": batch_size,
                **({"rule": rule} if rule else {})}

    def evaluate(self, tasks: Sequence[Task], split: str = "test") -> list[float]:
        """Accuracies (fractions) on each of ``tasks`` (learned tasks)."""
        return [self.test(t, split) for t in tasks]

    def log_to(self, loggers: Sequence) -> None:
        """Send one record per training epoch to ``loggers``
        (:class:`~unforget.training.epochlog.EpochLogger`; ``[]`` stops logging)."""
        self.method.trainer.loggers = list(loggers)

    # ------------------------------------------------------------------ serving
    @property
    def task_ids(self) -> list[int]:
        """The learned task ids, ``[1, ..., n_learned]``."""
        return list(self.method.learned)

    @property
    def model(self) -> "ServingModel":
        """The ``nn.Module`` face: ``model(x, task)`` serves every learned task (evaluation
        mode, no gradient); its ``parameters()`` are the method's networks'."""
        from unforget.serving import ServingModel

        return ServingModel(self)

    def __call__(self, x, task) -> torch.Tensor:
        """Task ``task``'s logits ``(N, n_classes_task)`` for a batch ``x`` as the task's
        transform makes it (see :class:`~unforget.serving.ServingModel`)."""
        return self.model(x, task)

    def predict(self, x, task) -> torch.Tensor:
        """Predicted task-local class indices, ``int64`` ``(N,)``."""
        return self.model.predict(x, task)

    def predict_raw(self, items, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Classify raw inputs of task ``task``: image file paths, PIL images or ``uint8`` arrays
        of any size (or vector rows), preprocessed as the task's training data was
        (:func:`unforget.serving.raw_batch`).

        Returns:
            a :class:`RawPrediction`, the pair ``(classes, probabilities)``: predicted task-local
            class indices ``int64`` ``(N,)`` and their softmax probabilities ``float32`` ``(N,)``,
            with ``.names``, the predicted class names (``list[str]``, ``N``).
        Raises:
            InputError: inputs the task cannot take, an unknown task id (one line).
        """
        from unforget.serving import raw_batch, task_id

        t = task_id(task, self.method.learned)
        x = raw_batch(items, self.tasks[t - 1].get("preprocessing", {}))
        probs = torch.softmax(self.method.logits(x, t), dim=1)
        best = probs.max(dim=1)
        classes = self.tasks[t - 1]["classes"]
        return RawPrediction(best.indices, best.values, [classes[i] for i in best.indices.tolist()])

    def logits(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """Task ``task``'s logits ``(N, n_classes_task)`` for model inputs ``x`` (as the task's
        transform makes them), evaluation mode, no gradient; no input checks (see
        :meth:`__call__` for the checked path).

        Raises:
            InputError: ``task`` is not an integer; UnknownTaskError (a ``KeyError``): ``task``
                was not learned.
        """
        from unforget.serving import task_id

        return self.method.logits(x, task_id(task, self.method.learned))

    def export(self, task: int) -> "torch.nn.Module":
        """Task ``task`` as a plain network of ``nn.Conv2d`` / ``nn.Linear`` / ``nn.BatchNorm``
        layers with its effective weights (:func:`unforget.export.plain_network`): its logits
        equal the served ones bit for bit.

        Raises:
            UnforgetError: ``task`` was not learned, or the method's network cannot be flattened
                into one plain network (progressive columns).
        """
        from unforget.export import plain_network
        from unforget.serving import task_id

        t = task_id(task, self.method.learned)
        return plain_network(self.method.model_for(t), t)

    def export_file(self, task: int, fmt: str, path: str | Path) -> Path:
        """Write :meth:`export` of ``task`` to ``path`` as ``fmt`` (``pytorch``, ``torchscript``
        or ``onnx``; :func:`unforget.export.save_plain`), with the task's name, class names and
        input shape in the file's metadata; returns the path.

        Raises:
            UnforgetError: as :meth:`export`, or an unknown format / ONNX without ``onnx``.
        """
        from unforget.export import save_plain

        plain = self.export(task)
        info = {"task": task, **self.tasks[task - 1], "input_shape": list(self.plan.input_shape),
                "input": "float32 batch (N, *input_shape) as the task's transform makes it",
                "unforget_version": __version__}
        example = torch.zeros(1, *self.plan.input_shape, device=self.method.device)
        return save_plain(plain, path, fmt, example, info)

    # ------------------------------------------------------------------ state and results
    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """``(tensors, metadata)`` of a checkpoint from which :meth:`open` rebuilds this learner
        bit for bit (the method's tensors, the trainer's batch-order counters, R, records)."""
        tensors, mmeta = self.method.state()
        meta = {"config": run_identity(self.config), "method": mmeta, "accuracy_matrix": self.R,
                "reproducibility": self.reproducibility(),
                "records": self.records, "wall_time_s": self.wall_time_s, "benchmark": self.plan.name,
                "benchmark_info": self.plan.info, "planned_tasks": self.plan.n_tasks,
                "input_shape": list(self.plan.input_shape),
                "trainer_rounds": {str(t): r for t, r in self.method.trainer._rounds.items()},
                "tasks": self.tasks, "notes": self.notes, "run_phase_seconds": self.run_seconds}
        return tensors, meta

    def save(self, path: str | Path) -> Path:
        """Write the checkpoint (:meth:`state`) atomically to ``path`` (a file, or a folder that
        gets ``checkpoint.safetensors``); returns the file's path."""
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / CHECKPOINT
        tensors, meta = self.state()
        return save_checkpoint(path, tensors, meta)

    def reproducibility(self) -> dict:
        """The settings bit-identity depends on (device type, PyTorch build, deterministic
        algorithms, TF32; :func:`unforget.training.determinism.record`), as recorded in
        ``results.json`` and the checkpoint."""
        return determinism.record(self.config.train.deterministic, self.config.train.tf32, self.config.device)

    def results(self, checkpoint: Optional[Path] = None) -> dict:
        """The ``results.json`` mapping (design.md, "Metrics and reports"); with ``checkpoint``
        (its file), ``checkpoint_bytes`` is that file's size beside the reported
        ``model_size_bytes`` (the last task's, measured once when it was learned).

        ``phase_seconds``: ``{"total": seconds per phase over the run, "run": those of no task}``
        (phases: :data:`unforget.training.phases.PHASES`; each task's own are in its entry);
        they add up to ``wall_time_s``. ``evaluation``: ``{"retest", "tested", "certified"}``,
        the entries of R measured by a test pass and those certified unchanged."""
        self.settle_time()
        tasks = []
        for info, rec in zip(self.tasks, self.records):
            first = {k: rec.get(k) for k in ("accuracy_goal", "pruning_ratio", "width", "train_time_s",
                                             "val_accuracy")}
            tasks.append({"name": info["name"], "classes": list(info["classes"]), **first,
                          **{k: v for k, v in rec.items() if k not in first},
                          **{k: v for k, v in info.items() if k not in ("name", "classes", "preprocessing")}})
        R = self.R
        complete = bool(R) and all(v is not None for v in R[-1])  # the last row: average accuracy
        full = bool(R) and all(v is not None for row in R for v in row)  # every row: BWT, forgetting
        last = self.records[-1] if self.records else {}
        with self.clock.phase("size_accounting"):
            size = last if "model_size_bytes" in last else self.method.size()
            capacity = self.method.capacity()
        total = dict(self.run_seconds)
        for rec in self.records:
            total = add_seconds(total, rec.get("phase_seconds") or {})
        certified = sum(len(rec.get("certified") or []) for rec in self.records)
        measured = sum(v is not None for row in R for v in row)
        return {
            "benchmark": self.plan.name, "method": self.config.method, "config": run_identity(self.config),
            "benchmark_info": self.plan.info, "tasks": tasks, "accuracy_matrix": R,
            "average_accuracy": average_accuracy(R) if complete else None,
            "bwt": bwt(R) if full else None,
            "forgetting": forgetting(R) if full else None,
            "model_size_bytes": size.get("model_size_bytes"),
            "checkpoint_bytes": checkpoint_size(checkpoint) if checkpoint is not None and Path(checkpoint).is_file()
            else None,
            "expansion_ratio": size.get("expansion_ratio"),
            "released_ratio": size.get("released_ratio"), "capacity": capacity,
            "wall_time_s": self.wall_time_s, "phase_seconds": {"total": total, "run": dict(self.run_seconds)},
            "evaluation": {"retest": self.retest, "tested": measured - certified, "certified": certified},
            "device": self.config.device, "unforget_version": __version__,
            "reproducibility": self.reproducibility(),
            "exact_method": self.method.exact, "input_shape": list(self.plan.input_shape),
            "threads": torch.get_num_threads(), "auto_config": self.notes.get("auto_config"),
            "distributed": self.notes.get("distributed"),
        }


# ---------------------------------------------------------------------- built-in observers
class RawPrediction(tuple):
    """What :meth:`Learner.predict_raw` returns: the pair ``(classes, probabilities)`` (so
    ``classes, probs = learner.predict_raw(...)`` unpacks it) plus ``names``, the predicted class
    names, so nobody has to index ``learner.tasks`` (0-based) with a 1-based task id."""

    names: list

    def __new__(cls, classes: torch.Tensor, probabilities: torch.Tensor, names: list) -> "RawPrediction":
        self = super().__new__(cls, (classes, probabilities))
        self.names = list(names)
        return self

    @property
    def classes(self) -> torch.Tensor:
        """Predicted task-local class indices, ``int64`` ``(N,)``."""
        return self[0]

    @property
    def probabilities(self) -> torch.Tensor:
        """Their softmax probabilities, ``float32`` ``(N,)``."""
        return self[1]


def average_so_far(seen: list, n: int) -> str:
    """The running average of a progress line: over all ``n`` tasks tested, or, when some were
    not tested (their data not reachable), over those that were, saying how many."""
    if not seen:
        return "avg so far —"
    avg = f"{100 * sum(seen) / len(seen):.2f} %"
    return f"avg so far {avg}" if len(seen) == n else f"avg of the {len(seen)} of {n} tasks tested {avg}"


class ProgressLine(TaskObserver):
    """Progress of a run, task by task: labels the training loop's bars and lines with
    ``task i/K name`` and the ETA of the task and the run (:class:`~unforget.training.progress.TaskClock`),
    and prints one line per finished task: validation and test accuracy, running average, time,
    run ETA."""

    def __init__(self) -> None:
        self.clock: Optional[TaskClock] = None

    def before_task(self, learner: "Learner", task: Task) -> None:
        total = max(learner.plan.n_tasks or 0, task.id)  # a task added later by `learn` extends the run
        if self.clock is None:
            self.clock = TaskClock(total)
        self.clock.start(task.id)
        display = learner.method.trainer.display
        display.label = f"task {task.id}/{total} {task.name}"
        display.eta = self.clock.text

    def after_task(self, learner: Learner, task: Task, record: dict) -> None:
        row = learner.R[-1]
        seen = [v for v in row if v is not None]
        total = max(learner.plan.n_tasks or 0, task.id)
        took = self.clock.stop()  # set by before_task, which Learner.learn always calls first
        left = self.clock.run_left(0.0)
        eta = f", run ETA {duration(left)}" if left is not None and task.id < total else ""
        display = learner.method.trainer.display
        display.label = ""
        display.write(f"[{learner.config.method}] task {task.id}/{total} {task.name}: val "
                      f"{100 * record['val_accuracy']:.2f} %, test {100 * row[-1]:.2f} %, "
                      f"{average_so_far(seen, len(row))}, {duration(took)}{eta}")
        goal = record.get("goal_record") or {}
        for key in ("fallback", "warning"):
            if goal.get(key):
                display.write(f"  accuracy goal {key}: {goal[key]}")


class SameModelCheck(TaskObserver):
    """In a distributed run, after every task: the processes compare a digest of every tensor of
    the learner's checkpoint (owners, pick masks, weights, batch norms, heads, goal references)
    and stop with :class:`~unforget.distributed.RanksDiverged` when any differ; the agreed
    digests go to ``learner.notes["distributed"]["digests"]`` (one per task)."""

    def after_task(self, learner: "Learner", task: Task, record: dict) -> None:
        from unforget import distributed

        tensors, _ = learner.method.state()
        agreed = distributed.check_same(tensors, f"task {task.id} ({task.name})")
        if agreed is not None:
            info = learner.notes.setdefault("distributed", {})
            info.setdefault("digests", []).append(agreed)


class RunFolderWriter(TaskObserver):
    """After every task: the checkpoint, ``results.json`` and ``report.md`` in ``out``, each
    written atomically (a kill leaves the previous task's files whole)."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)

    def after_task(self, learner: Learner, task: Task, record: dict) -> None:
        with learner.clock.phase("checkpoint_writing"):
            tensors, meta = learner.state()
            path = save_checkpoint(self.out / CHECKPOINT, tensors, meta)
        learner.settle_time(record)  # the task's checkpoint is part of its time
        with learner.clock.phase("checkpoint_writing"):
            write_results(self.out, learner.results(path))


def rebuild_stale_results(out: Path, learner: Optional["Learner"] = None) -> bool:
    """The checkpoint is the truth: when ``out/results.json`` is missing, unreadable or holds
    another number of tasks than ``out``'s checkpoint (a kill between the checkpoint's rename and
    results.json's leaves one more task in the checkpoint), rewrite ``results.json`` and
    ``report.md`` from ``learner`` (opened from that checkpoint; without it, the checkpoint's
    header is read and the learner opened only when they disagree). Returns whether it rewrote
    them.

    Raises:
        CheckpointError: the checkpoint cannot be read or opened.
    """
    import json

    try:
        rows = len(json.loads((out / "results.json").read_text()).get("accuracy_matrix") or [])
    except (OSError, ValueError, AttributeError):
        rows = -1
    if rows == (learner.n_learned if learner is not None else checkpoint_tasks(out)):
        return False
    learner = learner or Learner.open(out)
    write_results(out, learner.results(out / CHECKPOINT))
    return True


def write_results(out: Path, results: dict) -> None:
    """Write ``results.json`` and ``report.md`` into ``out``."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in results.items() if not k.startswith("_")}
    write_atomic(out / "results.json", json.dumps(clean, indent=2))
    write_atomic(out / "report.md", markdown_report(clean))
