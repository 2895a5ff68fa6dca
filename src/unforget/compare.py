"""``unforget compare``: several methods on one benchmark with one configuration (same seeds,
splits and epochs), resumable per method, and one report folder."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Callable, Optional, Sequence

from unforget import distributed
from unforget.atomic import remove_stale_temps, write_atomic
from unforget.autoconfig import resolve_for_data
from unforget.config import RunConfig, same_run
from unforget.methods import get_method
from unforget.methods.base import method_options
from unforget.errors import ConfigError, RunFolderError
from unforget.evaluation.compare import comparison_report, load_results, read_results
from unforget.runner import load_benchmark, run, write_results
from unforget.checkpoint import CHECKPOINT, check_run_checkpoint, load_checkpoint
from unforget.runfolder import locked


def write_report(folder: str | Path, plots: bool = True, say: Callable[[str], None] = print) -> Path:
    """(Re)build ``folder/report.md`` and the PNG figures without training: from
    ``folder/*/results.json`` for a comparison, or from ``folder/results.json`` for one run
    (its report with its figures: accuracy over tasks, the R heat map, size, capacity). Returns
    the report's path. A figure that cannot be drawn (no matplotlib, a plotting error) costs only
    the figures: ``say`` gets one line why, and the report is written without them.

    Raises:
        UnforgetError: neither a run's nor a comparison's results in ``folder``; RunFolderError:
            a damaged ``results.json`` (one line naming the file).
    """
    folder = Path(folder)
    one_run = (folder / "results.json").is_file() or (folder / CHECKPOINT).is_file()
    if one_run and not any(folder.glob("*/results.json")):
        from unforget.evaluation import markdown_report

        if (folder / CHECKPOINT).is_file():  # the checkpoint is the truth
            from unforget.learner import rebuild_stale_results

            if rebuild_stale_results(folder):  # opens the model only when results.json lags
                say(f"results.json rebuilt from the checkpoint in {folder} (it held another number of tasks)")
        run_results = read_results(folder / "results.json")
        files = _figures({run_results["method"]: run_results}, folder, plots, say)
        figures = ["", "## Figures", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in files] if files else []
        return write_atomic(folder / "report.md", "\n".join([markdown_report(run_results).rstrip(), *figures]) + "\n")
    runs = load_results(folder)
    return write_atomic(folder / "report.md", comparison_report(runs, _figures(runs, folder, plots, say)))


def _figures(runs: dict[str, dict], folder: Path, plots: bool, say: Callable[[str], None]) -> list[str]:
    if not plots:
        return []
    try:
        from unforget.evaluation.plots import all_plots

        return all_plots(runs, folder)
    except Exception as e:  # noqa: BLE001 - figures are never worth the results
        say(f"figures skipped ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); the report "
            "has the tables; redraw with `unforget report FOLDER` once fixed")
        return []


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
            say: Callable[[str], None] = print, log: Sequence[str] = ("csv",), retest: bool = False
            ) -> dict[str, dict]:
    """Run each of ``methods`` on ``benchmark`` into ``out/<method>/`` and write the report.

    A method whose finished ``results.json`` (same configuration) is already there is not run
    again; one with a checkpoint of the same configuration resumes from its last finished task;
    one made with another configuration starts over (:func:`plan`). ``say`` gets one line per
    method ("method 2/6: pae: runs (...)") telling which and why, also when ``progress`` is off,
    and the automatic configuration's line on own data (:mod:`unforget.autoconfig`; the same
    settings for every method). ``out`` is locked (``OUT/.lock``) for the whole comparison.
    The benchmark is built once, so every method sees the same tasks, splits and class order.
    ``log``: the training logs of each method's folder (``runner.run``); ``retest``: re-test every
    entry of each accuracy matrix (``runner.run``).

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
    built: dict = {}

    def load(cfg: RunConfig):
        if "bench" not in built:
            built["bench"] = load_benchmark(cfg, data_root, download)
        return built["bench"]

    configs, auto = {}, None
    for m in methods:
        configs[m], _, a = resolve_for_data(benchmark, m, preset_name=preset, config_file=config_file,
                                            overrides=overrides, load=load, say=say if auto is None else (lambda _: None))
        auto = auto or a
    for m, cfg in configs.items():  # validate every method and its options before training anything
        method_options(cfg, get_method(m).Options, m, str(config_file) if config_file else "configuration")
        if cfg.pretrained is not None and not get_method(m).takes_pretrained:
            from unforget.methods.base import PretrainedUnsupported

            raise PretrainedUnsupported(f"method {m} cannot take a pretrained task 1 yet; leave it out of --methods "
                                        "or drop --pretrained")
    distributed.init(configs[methods[0]].device)
    for m in methods:
        distributed.check_method(m)
    main = distributed.is_main()  # under torchrun only process 0 reads plans from and writes to out
    with (locked(out) if main else contextlib.nullcontext()):
        if main:
            remove_stale_temps(out)
        bench = load(configs[methods[0]])
        if main:
            write_atomic(out / "compare.json", json.dumps({"benchmark": bench.name, "methods": methods}, indent=2))
        results: dict[str, dict] = {}
        for i, m in enumerate(methods, 1):
            cfg, mdir = configs[m], out / m
            action, why = distributed.from_main(plan(cfg, mdir, len(bench)) if main else None)
            say(f"method {i}/{len(methods)}: {m}: {action} ({why})")
            if action == "reuses":
                results[m] = json.loads((mdir / "results.json").read_text()) if main else {}
                continue
            r = run(cfg, out_dir=mdir, resume=action == "resumes", overwrite=action == "redoes", progress=progress,
                    benchmark=bench, log=log, notes={"auto_config": auto.record()} if auto else None, retest=retest)
            r.pop("_learner", None)
            results[m] = r
            if main:
                write_results(mdir, r)
        if main:
            write_report(out, plots=plots, say=say)
    return results
