"""A run: one method applied to one benchmark, task after task, with evaluation, a checkpoint
after every task, ``results.json`` (the public contract of design.md) and a markdown report."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm.auto import tqdm

from unforget import __version__
from unforget.atomic import write_atomic
from unforget.checkpoint import CHECKPOINT, check_run_checkpoint, load_checkpoint, save_checkpoint
from unforget.config import RunConfig, run_identity, same_run

from unforget.data.task import Benchmark
from unforget.errors import CheckpointError, ConfigError, UnforgetError
from unforget.evaluation import average_accuracy, bwt, forgetting, markdown_report
from unforget.methods import Method, get_method
from unforget.runfolder import run_folder
from unforget.training import Trainer, accuracy, seed_everything


def load_benchmark(config: RunConfig, data_root: Optional[str] = None, download: bool = False) -> Benchmark:
    """Build the benchmark named in ``config`` from ``data_root``."""
    from unforget.data import build_benchmark

    b = config.benchmark
    return build_benchmark(b.name, data_root, seed=b.seed, val_fraction=b.val_fraction, class_order=b.class_order,
                           task_order=b.task_order, n_tasks=b.n_tasks, max_train_per_class=b.max_train_per_class,
                           download=download, shuffle_tasks=b.shuffle_tasks)


def check_device(device: str) -> str:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} asked for, but PyTorch sees no CUDA device; use --device cpu")
    if not (device == "cpu" or device.startswith("cuda") or device == "mps"):
        raise ConfigError(f"unknown device '{device}'; use cpu or cuda")
    return device


def build_method(config: RunConfig, benchmark: Benchmark, progress: bool = True) -> Method:
    """Seed everything and build the configured method for ``benchmark``."""
    check_device(config.device)
    seed_everything(config.seed)
    trainer = Trainer(config.train, device=config.device, seed=config.seed, progress=progress)
    return get_method(config.method)(config, benchmark, trainer)


def _results(config: RunConfig, benchmark: Benchmark, method: Method, R: list, records: list, wall: float) -> dict:
    tasks = []
    for task, rec in zip(benchmark.tasks, records):
        tasks.append({"name": task.name, "classes": list(task.classes), "accuracy_goal": rec.get("accuracy_goal"),
                      "pruning_ratio": rec.get("pruning_ratio"), "width": rec.get("width"),
                      "train_time_s": rec.get("train_time_s"), "val_accuracy": rec.get("val_accuracy"),
                      **{k: v for k, v in rec.items() if k not in {"accuracy_goal", "pruning_ratio", "width",
                                                                    "train_time_s", "val_accuracy"}}})
    size = method.size()
    return {
        "benchmark": benchmark.name, "method": config.method, "config": run_identity(config),
        "benchmark_info": benchmark.info, "tasks": tasks, "accuracy_matrix": R,
        "average_accuracy": average_accuracy(R) if R else None, "bwt": bwt(R) if R else None,
        "forgetting": forgetting(R) if R else None,
        "model_size_bytes": size.get("model_size_bytes"), "expansion_ratio": size.get("expansion_ratio"),
        "released_ratio": size.get("released_ratio"), "capacity": method.capacity(), "wall_time_s": wall,
        "device": config.device, "unforget_version": __version__, "exact_method": method.exact,
        "input_shape": list(benchmark.input_shape),
    }


def run(config: RunConfig, *, data_root: Optional[str] = None, out_dir: Optional[str | Path] = None,
        resume: bool = False, progress: bool = True, benchmark: Optional[Benchmark] = None,
        download: bool = False, overwrite: bool = False) -> dict:
    """Learn every task of the configured benchmark with the configured method.

    After task i the method is evaluated on the test split of tasks 1..i (row i of the accuracy
    matrix R); with ``out_dir`` a checkpoint (``checkpoint.safetensors``), ``results.json`` and
    ``report.md`` are written after every task. ``resume`` continues from the checkpoint's last
    finished task (the configuration must be the same) and ends with what an uninterrupted run
    ends with, bit for bit (same machine, build and thread count). ``out_dir`` is checked,
    locked (``OUT/.lock``) and cleared of a killed writer's temporary files before anything
    trains; a run already there is refused unless ``resume`` or ``overwrite`` (start over).

    Returns:
        The ``results.json`` mapping (design.md, "Metrics and reports").
    Raises:
        UnforgetError: bad configuration, data or checkpoint; RunFolderError: unusable, locked or
            occupied ``out_dir``; CheckpointError: damaged or inconsistent checkpoint.
    """
    if out_dir is None:
        if resume:
            raise UnforgetError("--resume needs the run's output folder (--out)")
        return _run(config, data_root, None, False, progress, benchmark, download)
    with run_folder(out_dir, resume=resume, overwrite=overwrite) as out:
        return _run(config, data_root, out, resume, progress, benchmark, download)


def _resume(method: Method, config: RunConfig, out: Path) -> dict:
    """Load ``out``'s checkpoint into ``method``; returns its metadata."""
    path = out / CHECKPOINT
    if not path.is_file():
        raise UnforgetError(f"--resume: no checkpoint in {out}; run without --resume first")
    tensors, meta = load_checkpoint(path, config.device)
    check_run_checkpoint(path, tensors, meta)
    if not same_run(meta["config"], config):
        raise UnforgetError(f"--resume: the checkpoint in {out} was made with another configuration")
    _load_state(method, path, tensors, meta)
    return meta


def _load_state(method: Method, path: Path, tensors: dict, meta: dict) -> None:
    """``method.load_state`` and the trainer's fit counters, a mismatch as one CheckpointError line."""
    try:
        method.load_state(tensors, meta["method"])
        method.trainer._rounds = {int(t): int(r) for t, r in meta.get("trainer_rounds", {}).items()}
    except (KeyError, IndexError, ValueError, TypeError, AttributeError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {path} does not fit method '{method.name}' "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def _run(config: RunConfig, data_root: Optional[str], out: Optional[Path], resume: bool, progress: bool,
         benchmark: Optional[Benchmark], download: bool) -> dict:
    bench = benchmark or load_benchmark(config, data_root, download)
    method = build_method(config, bench, progress)
    R: list[list[float]] = []
    records: list[dict] = []
    wall0 = 0.0
    if resume:
        meta = _resume(method, config, out)
        R, records, wall0 = meta["accuracy_matrix"], meta["records"], meta["wall_time_s"]
    start = time.perf_counter() - wall0
    for task in bench.tasks[len(records):]:
        t0 = time.perf_counter()
        seed_everything(config.seed * 1_000_003 + task.id)  # a task's draws do not depend on earlier tasks' count
        rec = method.learn(task)
        rec["train_time_s"] = time.perf_counter() - t0
        size = method.size()
        for key in ("model_size_bytes", "expansion_ratio", "released_ratio"):
            rec[key] = size.get(key)
        cap = method.capacity()
        if cap:
            rec["capacity"] = {layer: c.get("used_share") for layer, c in cap.items()}
        row = [accuracy(method.model_for(j.id), j, "test", config.train.eval_batch_size, method.device)
               for j in bench.tasks[: task.id]]
        R.append(row)
        records.append(rec)
        wall = time.perf_counter() - start
        if progress:
            tqdm.write(f"[{config.method}] task {task.id}/{len(bench)} {task.name}: val {100 * rec['val_accuracy']:.2f} %, "
                       f"test {100 * row[-1]:.2f} %, avg so far {100 * sum(row) / len(row):.2f} %, "
                       f"{rec['train_time_s']:.1f} s")
        if out is not None:
            tensors, mmeta = method.state()
            save_checkpoint(out / CHECKPOINT, tensors, {"config": run_identity(config), "method": mmeta,
                                                       "accuracy_matrix": R, "records": records, "wall_time_s": wall,
                                                       "benchmark": bench.name, "input_shape": list(bench.input_shape),
                                                       "trainer_rounds": {str(t): r for t, r in method.trainer._rounds.items()},
                                                       "tasks": [{"name": t.name, "classes": list(t.classes)}
                                                                 for t in bench.tasks[: task.id]]})
            write_results(out, _results(config, bench, method, R, records, wall))
    results = _results(config, bench, method, R, records, time.perf_counter() - start)
    if out is not None:
        write_results(out, results)
    results["_method"] = method
    return results


def write_results(out: Path, results: dict) -> None:
    """Write ``results.json`` and ``report.md`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in results.items() if not k.startswith("_")}
    write_atomic(out / "results.json", json.dumps(clean, indent=2))
    write_atomic(out / "report.md", markdown_report(clean))


def load_method(path: str | Path, device: str = "cpu") -> Method:
    """Rebuild a run's method from its checkpoint (a run folder or the checkpoint file); it
    serves every learned task. No data is needed: the checkpoint records the input shape."""
    path = Path(path)
    path = path / CHECKPOINT if path.is_dir() else path
    tensors, meta = load_checkpoint(path, device)
    check_run_checkpoint(path, tensors, meta)
    try:
        config = RunConfig.model_validate(meta["config"])
    except ValueError:
        raise CheckpointError(f"checkpoint {path} is damaged: its config is not a valid unforget configuration") from None
    config.device = device
    stub = Benchmark(meta.get("benchmark", config.benchmark.name), [], tuple(meta["input_shape"]),
                     {"tasks": meta.get("tasks", [])})
    method = build_method(config, stub, progress=False)
    _load_state(method, path, tensors, meta)
    return method
