"""A run: a :class:`~unforget.learner.Learner` taken through every task of one benchmark, with
a checkpoint, ``results.json`` (the public contract of design.md) and a markdown report after
every task (observers of the learner), and resume from the last finished task."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from unforget import distributed
from unforget.checkpoint import CHECKPOINT
from unforget.config import RunConfig
from unforget.data.task import Benchmark, PretrainedTask
from unforget.errors import UnforgetError
from unforget.learner import (Learner, ProgressLine, RunFolderWriter, SameModelCheck, build_method,  # noqa: F401
                              check_device, rebuild_stale_results, write_results)
from unforget.methods import Method
from unforget.runfolder import run_folder
from unforget.training.phases import PhaseClock
from unforget.training.epochlog import run_loggers

__all__ = ["run", "load_benchmark", "load_method", "build_method", "check_device", "write_results"]


def load_benchmark(config: RunConfig, data_root: Optional[str] = None, download: bool = False) -> Benchmark:
    """Build the benchmark named in ``config`` from ``data_root``."""
    from unforget.data import build_benchmark

    b = config.benchmark
    return build_benchmark(b.name, data_root, seed=b.seed, val_fraction=b.val_fraction, class_order=b.class_order,
                           task_order=b.task_order, n_tasks=b.n_tasks, max_train_per_class=b.max_train_per_class,
                           download=download, shuffle_tasks=b.shuffle_tasks, options=b.options)


def run(config: RunConfig, *, data_root: Optional[str] = None, out_dir: Optional[str | Path] = None,
        resume: bool = False, progress: bool = True, benchmark: Optional[Benchmark] = None,
        download: bool = False, overwrite: bool = False, log: Sequence[str] = ("csv",),
        notes: Optional[dict] = None, retest: bool = False, clock: Optional[PhaseClock] = None) -> dict:
    """Learn every task of the configured benchmark with the configured method.

    After task i the learner is tested on the test split of tasks 1..i (row i of the accuracy
    matrix R); with ``out_dir`` a checkpoint (``checkpoint.safetensors``), ``results.json`` and
    ``report.md`` are written after every task. ``resume`` continues from the checkpoint's last
    finished task (the configuration must be the same) and ends with what an uninterrupted run
    ends with, bit for bit (same machine, build and thread count). ``out_dir`` is checked,
    locked (``OUT/.lock``) and cleared of a killed writer's temporary files before anything
    trains; a run already there is refused unless ``resume`` or ``overwrite`` (start over).
    With ``out_dir``, every training epoch is logged (``log``: ``"csv"`` writes ``OUT/log.csv``,
    ``"tensorboard"`` event files in ``OUT/tensorboard/``; :mod:`unforget.training.epochlog`).
    ``notes`` (JSON-able, e.g. ``{"auto_config": ...}``) go into ``results.json`` and the
    checkpoint (:attr:`Learner.notes`). An exact method's earlier task whose served network and
    test data are unchanged keeps R[j][j] without a test pass (:mod:`unforget.evaluation.certify`);
    ``retest`` re-tests every entry. ``results.json``'s ``phase_seconds`` say where the time went,
    counted on ``clock`` when the caller has already timed part of the run on it (loading the
    ``benchmark`` it passes), else on a new one.

    Returns:
        The ``results.json`` mapping (design.md, "Metrics and reports"), plus the key
        ``"_learner"`` holding the :class:`~unforget.learner.Learner`.
    Started by ``torchrun`` as several processes (:mod:`unforget.distributed`), every process
    trains its shard of each epoch, the processes check after every task that they hold the same
    model, and only process 0 touches ``out_dir`` and prints; ``results.json`` records
    ``distributed`` (world size, backend, the per-task digests every process agreed on).

    Raises:
        UnforgetError: bad configuration, data or checkpoint; RunFolderError: unusable, locked or
            occupied ``out_dir``; CheckpointError: damaged or inconsistent checkpoint;
            ConfigError: a method that cannot run distributed yet; RanksDiverged: the processes
            of a distributed run stopped holding the same model.
    """
    info = distributed.init(config.device)
    if info is not None:
        distributed.check_method(config.method)
        notes = {**(notes or {}), "distributed": info}
        if not distributed.is_main():  # followers train in step with process 0 and write nothing
            if resume and out_dir is None:
                raise UnforgetError("--resume needs the run's output folder (--out)")
            return _run(config, data_root, Path(out_dir) if resume else None, resume, False, benchmark, download, (),
                        notes, write=False, retest=retest, clock=clock)
    if out_dir is None:
        if resume:
            raise UnforgetError("--resume needs the run's output folder (--out)")
        return _run(config, data_root, None, False, progress, benchmark, download, (), notes, retest=retest,
                    clock=clock)
    with run_folder(out_dir, resume=resume, overwrite=overwrite) as out:
        return _run(config, data_root, out, resume, progress, benchmark, download, tuple(log), notes, retest=retest,
                    clock=clock)


def _run(config: RunConfig, data_root: Optional[str], out: Optional[Path], resume: bool, progress: bool,
         benchmark: Optional[Benchmark], download: bool, log: tuple[str, ...], notes: Optional[dict],
         write: bool = True, retest: bool = False, clock: Optional[PhaseClock] = None) -> dict:
    clock = clock or PhaseClock()
    with clock.phase("data_loading"):
        bench = benchmark or load_benchmark(config, data_root, download)
        if config.pretrained is not None and not (bench.tasks and isinstance(bench.tasks[0], PretrainedTask)):
            from unforget.pretrained import with_pretrained_task

            bench = with_pretrained_task(bench, config.pretrained, config.benchmark.seed)
    loggers = run_loggers(out, log) if out is not None and log and write else []
    try:
        return _learn_all(config, bench, out, resume, progress, loggers, notes, write, clock, retest)
    finally:
        for logger in loggers:
            logger.close()


def _learn_all(config: RunConfig, bench: Benchmark, out: Optional[Path], resume: bool, progress: bool,
               loggers: list, notes: Optional[dict], write: bool, clock: PhaseClock, retest: bool) -> dict:
    observers = ([ProgressLine()] if progress else []) + ([RunFolderWriter(out)] if out is not None and write else [])
    if distributed.active():
        observers.insert(0, SameModelCheck())
    if resume:
        if not (out / CHECKPOINT).is_file():
            raise UnforgetError(f"--resume: no checkpoint in {out}; run without --resume first")
        learner = Learner.open(out, config.device, progress=progress, config=config, plan=bench, observers=observers,
                               clock=clock)
        if write:
            rebuild_stale_results(out, learner)
        check_same_tasks(learner, bench, out)
        warn_if_not_bit_identical(learner, out)
    else:
        learner = Learner.create(config, bench, progress=progress, observers=observers, clock=clock)
    learner.retest = retest
    for logger in loggers:  # epochs of a task that did not finish are logged again by this attempt
        logger.forget_after(learner.n_learned)
    if notes:
        learner.notes.update(notes)
    learner.log_to(loggers)
    if resume and learner.n_learned >= len(bench.tasks):
        say = print if progress else (lambda *_: None)
        say(f"nothing to learn: the {learner.n_learned} tasks in {out} include all {len(bench.tasks)} of "
            f"{bench.name}; to add a new task: unforget learn {out} --data FOLDER_OR_NPZ")
    for task in bench.tasks[learner.n_learned:]:
        learner.learn(task, test_on=bench.tasks[: task.id - 1])
    results = learner.results(out / CHECKPOINT if out is not None else None)
    if out is not None and write:
        write_results(out, results)
    results["_learner"] = learner
    return results


def warn_if_not_bit_identical(learner: Learner, out: Path) -> list[str]:
    """On ``--resume``: warn (one line) when the checkpoint in ``out`` was trained on another
    device type or PyTorch / CUDA build, or under other deterministic or TF32 settings, than this
    process continues with: the resumed run is still a valid run (earlier tasks stay exact), but
    it can no longer end bit-identical to an uninterrupted one. Returns the differences."""
    import warnings

    from unforget.checkpoint import checkpoint_meta
    from unforget.training import determinism

    meta = checkpoint_meta(out)
    diff = determinism.resume_differences(meta.get("reproducibility"), learner.reproducibility())
    if diff:
        warnings.warn(f"--resume: {out} was trained under other settings ({'; '.join(diff)}); the run continues, "
                      "but it will not end bit-identical to an uninterrupted run", stacklevel=2)
    return diff


def check_same_tasks(learner: Learner, bench: Benchmark, out: Path) -> None:
    """Before ``--resume``: the tasks ``out`` holds must be the benchmark's first tasks, in
    order (same names and classes, none added by ``unforget learn``), or the resumed run would
    skip benchmark tasks and test a task's head on another task's data.

    Raises:
        RunFolderError: a learned task that is not the benchmark's task of that id (one line).
    """
    from unforget.errors import RunFolderError

    for i, held in enumerate(learner.tasks, start=1):
        source = (held.get("source") or {}).get("path")
        planned = bench.tasks[i - 1] if i <= len(bench.tasks) else None
        if source is None and planned is not None and \
                (held["name"], list(held["classes"])) == (planned.name, list(planned.classes)):
            continue
        how = f"added by `unforget learn` from {source}" if source else "learned before"
        want = f"task {i} of {bench.name} is '{planned.name}'" if planned else f"{bench.name} has {len(bench.tasks)} tasks"
        raise RunFolderError(f"--resume: task {i} in {out} is '{held['name']}' ({how}), but {want}: the run cannot "
                             f"continue its benchmark; add tasks to it with `unforget learn {out} --data ...`")


def load_method(path: str | Path, device: str = "cpu") -> Method:
    """The method of the run saved in ``path`` (a run folder or its checkpoint); it serves every
    learned task. No data is needed. See :meth:`Learner.open`."""
    return Learner.open(path, device).method
