"""``unforget compare``: several methods on one benchmark with one configuration (same seeds,
splits and epochs), resumable per method, and one report folder."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from unforget.config import method_options, resolve, same_run
from unforget.methods import get_method
from unforget.errors import ConfigError
from unforget.evaluation.compare import comparison_report, load_results
from unforget.runner import load_benchmark, run, write_results
from unforget.checkpoint import CHECKPOINT


def write_report(folder: str | Path, plots: bool = True) -> Path:
    """(Re)build ``folder/report.md`` and the PNG figures from ``folder/*/results.json``,
    without training. Returns the report's path."""
    from unforget.evaluation.plots import all_plots

    folder = Path(folder)
    runs = load_results(folder)
    files = all_plots(runs, folder) if plots else []
    path = folder / "report.md"
    path.write_text(comparison_report(runs, files))
    return path


def compare(benchmark: str, methods: Sequence[str], out: str | Path, *, preset: str = "cpu",
            config_file: Optional[str] = None, overrides: Optional[dict] = None, data_root: Optional[str] = None,
            download: bool = False, progress: bool = True, plots: bool = True) -> dict[str, dict]:
    """Run each of ``methods`` on ``benchmark`` into ``out/<method>/`` and write the report.

    A method whose finished ``results.json`` (same configuration) is already there is not run
    again; one with a checkpoint resumes from its last finished task. The benchmark is built
    once, so every method sees the same tasks, splits and class order.

    Raises:
        ConfigError: empty or repeated method list; UnforgetError from the runs.
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
    bench = load_benchmark(configs[methods[0]], data_root, download)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps({"benchmark": bench.name, "methods": methods}, indent=2))
    results: dict[str, dict] = {}
    for m in methods:
        cfg, mdir = configs[m], out / m
        done = mdir / "results.json"
        if done.is_file():
            prev = json.loads(done.read_text())
            if same_run(prev.get("config"), cfg) and len(prev["accuracy_matrix"]) == len(bench):
                results[m] = prev
                continue
        resume = (mdir / CHECKPOINT).is_file()
        try:
            r = run(cfg, out_dir=mdir, resume=resume, progress=progress, benchmark=bench)
        except Exception:
            if not resume:
                raise
            r = run(cfg, out_dir=mdir, resume=False, progress=progress, benchmark=bench)  # other config: restart
        r.pop("_method", None)
        results[m] = r
        write_results(mdir, r)
    write_report(out, plots=plots)
    return results
