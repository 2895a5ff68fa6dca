"""Where a small real run's time goes, and how it compares with another version (issue 28).

The setting of issue 28: split CIFAR-10 (1,000 training images per class, 10 % held out for
validation), CLNP's Table-2 convnet at width 0.5, PackNet pruning each task to 0.5 with 2 training
epochs and 1 retraining epoch, batch 64, SGD, one torch thread. Each run is a fresh
``unforget run`` process; the script prints its wall time (the process, imports included), the
run's own wall time and its seconds per phase (``results.json``'s ``phase_seconds``), and the
average accuracy.

``--src NAME=PATH`` runs the ``src`` folder of another checkout instead (repeatable), so two
versions can be measured back to back on one machine, interleaved (A B A B ...)::

    git worktree add /tmp/u-6f806db 6f806db
    python benchmarks/run_phases.py --data-root ../shared/data --repeat 2 \\
        --src 6f806db=/tmp/u-6f806db/src --src main=src

Versions that predate ``phase_seconds`` print the sum of their tasks' ``train_time_s`` instead.
Needs the CIFAR-10 python batches under ``--data-root`` (``../shared/data`` here).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """benchmark: {name: split-cifar10, seed: 0, val_fraction: 0.1, max_train_per_class: 1000}
model: {name: clnp_convnet, width: 0.5}
train: {epochs: 2, batch_size: 64, lr: 0.01, momentum: 0.9, nesterov: true, weight_decay: 0.0}
methods:
  packnet: {prune_ratio: 0.5, prune_epochs: 1}
"""

ROOT = Path(__file__).resolve().parents[1]


def one_run(src: Path, data_root: str, work: Path, extra: list[str]) -> dict:
    """One ``unforget run`` of the setting in a fresh process on ``src``; its results.json plus
    ``process_s`` (the process's wall time)."""
    out = work / f"run-{time.time_ns()}"
    cfg = work / "config.yaml"
    cfg.write_text(CONFIG)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-c", "import sys; from unforget.cli import main; sys.argv[0] = 'unforget'; main()",
           "run", "-b", "split-cifar10", "-m", "packnet", "--data-root", data_root, "--config", str(cfg),
           "--out", str(out), "-q", *extra]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"run on {src} failed:\n{p.stderr[-2000:]}")
    res = json.loads((out / "results.json").read_text())
    res["process_s"] = took
    return res


def row(name: str, res: dict) -> str:
    phases = (res.get("phase_seconds") or {}).get("total")
    if phases:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in phases.items() if v >= 0.05)
    else:
        parts = f"tasks' train_time_s {sum(t.get('train_time_s', 0) for t in res['tasks']):.1f}"
    ev = res.get("evaluation") or {}
    tested = f"; R entries tested {ev.get('tested')}, certified {ev.get('certified')}" if ev else ""
    return (f"{name}: process {res['process_s']:.1f} s, run {res['wall_time_s']:.1f} s, average accuracy "
            f"{100 * res['average_accuracy']:.2f} % | {parts}{tested}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--src", action="append", default=[], metavar="NAME=PATH",
                   help="a version to run (its src folder); default: this checkout")
    p.add_argument("--repeat", type=int, default=1, help="runs per version, interleaved")
    p.add_argument("--retest", action="store_true", help="pass --retest (re-test every R entry)")
    a = p.parse_args()
    versions = [tuple(s.split("=", 1)) for s in a.src] or [("this checkout", str(ROOT / "src"))]
    if not (Path(a.data_root) / "cifar10" / "cifar-10-batches-py").is_dir():
        raise SystemExit(f"no CIFAR-10 python batches under {a.data_root}/cifar10 (give --data-root)")
    with tempfile.TemporaryDirectory() as tmp:
        results: dict[str, list[dict]] = {n: [] for n, _ in versions}
        for r in range(a.repeat):
            for name, src in versions:
                res = one_run(Path(src).resolve(), a.data_root, Path(tmp), ["--retest"] if a.retest else [])
                results[name].append(res)
                print(row(f"{name} #{r + 1}", res), flush=True)
        print()
        for name, runs in results.items():
            walls = sorted(x["process_s"] for x in runs)
            print(f"{name}: process wall {', '.join(f'{w:.1f}' for w in walls)} s "
                  f"(median {walls[len(walls) // 2]:.1f})")
        if len(versions) == 2:
            (na, ra), (nb, rb) = results.items()
            ma = sorted(x["process_s"] for x in ra)[len(ra) // 2]
            mb = sorted(x["process_s"] for x in rb)[len(rb) // 2]
            print(f"{nb} / {na}: {mb / ma:.2f}x the wall time")


if __name__ == "__main__":
    main()
