"""Lifelong use: add a task to a trained model long after its run, from data the run never saw.

``learn_task(MODEL_DIR, DATA)`` (``unforget learn``) opens the run's learner, reads one new task
(an image folder with one subfolder per class, with or without ``train/`` and ``test/``, or one
``.npz`` with ``x_train, y_train, x_test, y_test``), brings its inputs to the model's input shape
by the own-data rules (:mod:`unforget.data.custom`), learns it with the run's method and
configuration, tests every earlier task whose test data is still reachable (the others are
recorded as not re-evaluated, ``None``, never invented) and rewrites the checkpoint,
``results.json`` and ``report.md`` atomically, under the folder's lock.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

from unforget.checkpoint import CHECKPOINT, no_trained_model
from unforget.data.task import Task
from unforget.errors import DataError, RunFolderError, UnforgetError
from unforget.learner import Learner, ProgressLine, RunFolderWriter, rebuild_stale_results
from unforget.runfolder import run_folder
from unforget.training.epochlog import run_loggers


def read_task(path: str | Path, task_id: int, input_shape: tuple[int, ...], *, name: Optional[str] = None,
              seed: int = 0, val_fraction: float = 0.1) -> Task:
    """One task from ``path`` with id ``task_id``, its inputs brought to ``input_shape``.

    ``path`` is a folder (``CLASS/*.png`` or ``train/CLASS/*``, ``test/CLASS/*``) or a ``.npz``
    file (``x_train, y_train, x_test, y_test``, optionally ``classes``). Images are converted to
    the model's channels and resized to its height and width; a model of vector inputs ``(D,)``
    takes ``.npz`` vectors of ``D`` values only. Normalisation statistics come from the task's own
    training split.

    Raises:
        DataError: ``path`` missing or of another kind, unreadable data, or inputs that cannot be
            brought to ``input_shape`` (one line).
    """
    from unforget.data.custom import image_folder_benchmark, npz_benchmark

    path = Path(path)
    image = len(input_shape) == 3
    size = dict(image_size=tuple(input_shape[1:]), channels=int(input_shape[0])) if image else {}
    if path.is_file() and path.suffix.lower() == ".npz":
        bench = npz_benchmark([path], seed=seed, val_fraction=val_fraction, **size)
    elif path.is_dir():
        if not image:
            raise DataError(f"this model takes vectors of {input_shape[0]} values, not images; give an .npz file "
                            f"with x_train of shape (N, {input_shape[0]})")
        bench = image_folder_benchmark(path.parent, tasks=[path.name], seed=seed, val_fraction=val_fraction, **size)
    elif not path.exists():
        raise DataError(f"no task data at {path}: give a folder with one subfolder per class, or an .npz file")
    else:
        raise DataError(f"{path} is not a folder or an .npz file; give a folder with one subfolder per class, "
                        "or an .npz file with x_train, y_train, x_test, y_test")
    task = bench.tasks[0]
    if tuple(task.input_shape) != tuple(input_shape):
        raise DataError(f"{path}: its inputs have shape {tuple(task.input_shape)}, the model takes "
                        f"{tuple(input_shape)}")
    return dataclasses.replace(task, id=task_id, name=name or task.name)


def reachable_tasks(learner: Learner, data_root: Optional[str] = None) -> list[Task]:
    """The learned tasks whose test data can be read again: tasks added by :func:`learn_task`
    from their recorded folder or file (if still there), and the tasks of the run's benchmark
    when it can be built (``data_root``; without it the folder the run recorded in its
    ``benchmark_info``, when it is still there; or the embedded ``digits``). Each is as it was
    learned (same id, splits and normalisation)."""
    found: dict[int, Task] = {}
    sources = {i + 1: t.get("source") for i, t in enumerate(learner.tasks)}
    bench_ids = [i for i, s in sources.items() if s is None]
    if data_root is None:  # the run recorded where its benchmark's data was
        recorded = (learner.plan.info or {}).get("data_root")
        data_root = recorded if recorded and Path(recorded).is_dir() else None
    if bench_ids and learner.config.benchmark.name == learner.plan.name:  # a registered benchmark, not an object
        try:
            from unforget.runner import load_benchmark

            bench = load_benchmark(learner.config, data_root)
        except UnforgetError:
            bench = None
        if bench is not None and tuple(bench.input_shape) == tuple(learner.plan.input_shape):
            found.update({t.id: t for t in bench.tasks if t.id in bench_ids  # the very tasks that were learned
                          and (t.name, list(t.classes)) == (learner.tasks[t.id - 1]["name"],
                                                            list(learner.tasks[t.id - 1]["classes"]))})
    for i, src in sources.items():
        if src is not None:
            try:
                found[i] = read_task(src["path"], i, learner.plan.input_shape, name=learner.tasks[i - 1]["name"],
                                     seed=learner.config.benchmark.seed,
                                     val_fraction=learner.config.benchmark.val_fraction)
            except UnforgetError:
                pass
    return [found[i] for i in sorted(found)]


def learn_task(model_dir: str | Path, data: str | Path, *, name: Optional[str] = None,
               data_root: Optional[str] = None, device: Optional[str] = None, progress: bool = True,
               say=print, log: Sequence[str] = ("csv",), retest: bool = False, again: bool = False) -> dict:
    """Learn one new task from ``data`` into the run in ``model_dir``; returns its ``results.json``.

    ``say`` gets one line before learning ("N tasks learned, learning task N+1 (NAME)") and one
    after (earlier tasks re-evaluated or not). Training epochs are appended to the run's training
    log (``log``: ``OUT/log.csv``, ``"tensorboard"`` event files too; :func:`~unforget.training.epochlog.run_loggers`).
    An earlier task whose served network and test data are unchanged keeps its accuracy without a
    test pass (:mod:`unforget.evaluation.certify`); ``retest`` re-tests every reachable one.
    Data that a learned task already holds (same digest of inputs and labels, e.g. a retry after
    a ``learn`` killed once its checkpoint was written) is refused unless ``again``.

    Raises:
        RunFolderError: ``model_dir`` holds no run, another process writes to it, or the data is
            a learned task's (without ``again``);
        CheckpointError: damaged checkpoint; DataError: unreadable data or inputs that do not fit.
    """
    with run_folder(model_dir, resume=True) as out:
        if not (out / CHECKPOINT).is_file():
            raise RunFolderError(no_trained_model(out))
        observers = ([ProgressLine()] if progress else []) + [RunFolderWriter(out)]
        learner = Learner.open(out, device or "cpu", progress=progress, observers=observers)
        if rebuild_stale_results(out, learner):
            say(f"results.json and report.md rebuilt from the checkpoint ({learner.n_learned} tasks)")
        learner.retest = retest
        n = learner.n_learned
        with learner.clock.phase("data_loading"):
            task = read_task(data, n + 1, learner.plan.input_shape, name=name, seed=learner.config.benchmark.seed,
                             val_fraction=learner.config.benchmark.val_fraction)
            earlier = reachable_tasks(learner, data_root)
        digest = task.data_digest()
        same = [i for i, t in enumerate(learner.tasks, start=1) if t.get("data_digest") == digest]
        if same and not again:
            held = learner.tasks[same[0] - 1]
            raise RunFolderError(f"the data in {data} is task {same[0]}'s ('{held['name']}'), learned already (the "
                                 f"same inputs and labels; a `learn` stopped after its checkpoint was written keeps "
                                 f"its task): nothing was learned; pass --again to learn the same data as a new task")
        say(f"{n} tasks learned, learning task {n + 1} ({task.name}) from {data}")
        loggers = run_loggers(out, tuple(log)) if log else []
        for logger in loggers:  # a killed `learn` of this task left rows that this one writes again
            logger.forget_after(n)
        learner.log_to(loggers)
        try:
            learner.learn(task, test_on=earlier, info={"source": {"path": str(Path(data).resolve())}})
        finally:
            for logger in loggers:
                logger.close()
        missing = [i for i in range(1, n + 1) if i not in {t.id for t in earlier}]
        certified = len(learner.records[-1].get("certified") or [])
        say(f"earlier tasks re-evaluated: {len(earlier)} of {n}" +
            (f" ({certified} certified unchanged without a test pass; --retest tests them)" if certified else "") +
            (f"; not re-evaluated (test data not reachable, recorded as null): {missing}" if missing else ""))
        return learner.results(out / CHECKPOINT)  # as RunFolderWriter wrote it after the task
