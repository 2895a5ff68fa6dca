"""``unforget compare``: several methods on one benchmark with one configuration (same seeds,
splits and epochs), resumable per method, and one report folder."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional, Sequence

from unforget.atomic import remove_stale_temps, write_atomic
from unforget.config import RunConfig, resolve, same_run
from unforget.methods import get_method
from unforget.methods.base import method_options
from unforget.errors import ConfigError, RunFolderError
from unforget.evaluation.compare import comparison_report, load_results
from unforget.runner import load_benchmark, run, write_results
from unforget.checkpoint import CHECKPOINT, check_run_checkpoint, load_checkpoint
from unforget.runfolder import locked


def write_report(folder: str | Path, plots: bool = True) -> Path:
    """(Re)build ``folder/report.md`` and the PNG figures from ``folder/*/results.json``,
    without training. Returns the report's path."""
    from unforget.evaluation.plots import all_plots

    folder = Path(folder)
    runs = load_results(folder)
    files = all_plots(runs, folder) if plots else []
    return write_atomic(folder / "report.md", comparison_report(runs, files))


def plan(config: RunConfig, folder: Path, n_tasks: int) -> tuple[str, str]:
    """What ``compare`` does with one method's ``folder``: ``(action, why)``, the action one of
    ``"reuses"`` (finished, same configuration), ``"resumes"`` (its checkpoint has the same
    configuration), ``"redoes"`` (only when what is there was made with another configuration,
    or is an unfinished run without a checkpoint) or ``"runs"`` (nothing there).

    Raises:
        CheckpointError: a damaged or inconsistent checkpoint (it is reported, never retrained
            silently); RunFolderError: a ``results.json`` that is not JSON.
    """
    done, ckpt = folder / "results.json", folder / CHECKPOINT
    prev = None
    if done.is_file():
        try:
            prev = json.loads(done.read_text())
        except ValueError:
            raise RunFolderError(f"{done} is damaged (not JSON); delete {folder} to run this method again") from None
        if not isinstance(prev, dict):
            raise RunFolderError(f"{done} is damaged (not a JSON mapping); delete {folder} to run this method again")
        if same_run(prev.get("config"), config) and len(prev.get("accuracy_matrix") or []) == n_tasks:
            return "reuses", f"{done} is finished with the same configuration"
    if ckpt.is_file():
        tensors, meta = load_checkpoint(ckpt)
        k = check_run_checkpoint(ckpt, tensors, meta)
        if same_run(meta["config"], config):
            return "resumes", f"its checkpoint holds {k} of {n_tasks} tasks with the same configuration"
        return "redoes", f"its checkpoint in {folder} was made with another configuration"
    if prev is not None:
        if same_run(prev.get("config"), config):
            return "redoes", f"{done} is unfinished and there is no checkpoint to resume from"
        return "redoes", f"{done} was made with another configuration"
    return "runs", f"nothing in {folder} yet"


def compare(benchmark: str, methods: Sequence[str], out: str | Path, *, preset: str = "cpu",
            config_file: Optional[str] = None, overrides: Optional[dict] = None, data_root: Optional[str] = None,
            download: bool = False, progress: bool = True, plots: bool = True,
            say: Callable[[str], None] = print) -> dict[str, dict]:
    """Run each of ``methods`` on ``benchmark`` into ``out/<method>/`` and write the report.

    A method whose finished ``results.json`` (same configuration) is already there is not run
    again; one with a checkpoint of the same configuration resumes from its last finished task;
    one made with another configuration starts over (:func:`plan`). ``say`` gets one line per
    method telling which and why. ``out`` is locked (``OUT/.lock``) for the whole comparison.
    The benchmark is built once, so every method sees the same tasks, splits and class order.

    Raises:
        ConfigError: empty or repeated method list; CheckpointError: a damaged checkpoint (never
        silently retrained); RunFolderError: ``out`` unusable or locked; UnforgetError from the runs.
    """
    methods = [m.strip() for m in methods if m.strip()]
    if not methods:
        raise ConfigError("--methods needs at least one method name, e.g. --methods cpg,packnet,scratch")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"--methods lists a method twice: {','.join(methods)}")
    out = Path(out)
    configs = {m: resolve(benchmark, m, preset_name=preset, config_file=config_file, overrides=overrides)
               for m in methods}
    for m, cfg in configs.items():  # validate every method and its options before training anything
        method_options(cfg, get_method(m).Options, m)
    with locked(out):
        remove_stale_temps(out)
        bench = load_benchmark(configs[methods[0]], data_root, download)
        write_atomic(out / "compare.json", json.dumps({"benchmark": bench.name, "methods": methods}, indent=2))
        results: dict[str, dict] = {}
        for m in methods:
            cfg, mdir = configs[m], out / m
            action, why = plan(cfg, mdir, len(bench))
            say(f"compare: {m}: {action} ({why})")
            if action == "reuses":
                results[m] = json.loads((mdir / "results.json").read_text())
                continue
            r = run(cfg, out_dir=mdir, resume=action == "resumes", overwrite=action == "redoes", progress=progress,
                    benchmark=bench)
            r.pop("_learner", None)
            results[m] = r
            write_results(mdir, r)
        write_report(out, plots=plots)
    return results
