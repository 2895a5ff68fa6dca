"""Capacity and bytes after every task for several runs of one sequence (e.g. WSN and CPG on 20
permuted-MNIST tasks): weights in use / original network (1 - Red. at Exp. 1.0) and the model
size to serve all tasks so far, read from each run's results.json.

    python benchmarks/capacity_over_tasks.py docs/benchmarks/permuted-mnist-20/{cpg,wsn-c0.5}/results.json \
        --out docs/benchmarks/permuted-mnist-20/capacity_over_tasks.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", help="results.json files")
    ap.add_argument("--out", required=True, help="PNG to write")
    a = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for f in a.results:
        r = json.loads(Path(f).read_text())
        label = f"{r['method']} ({Path(f).parent.name})"
        tasks = r["tasks"]
        xs = list(range(1, len(tasks) + 1))
        used = [(t.get("expansion_ratio") or 1.0) - (t.get("released_ratio") or 0.0) for t in tasks]
        size = [t["model_size_bytes"] / 2**20 for t in tasks]
        ax1.plot(xs, used, marker="o", ms=3, label=label)
        ax2.plot(xs, size, marker="o", ms=3, label=label)
        print(f"{label}: in use after last task {used[-1]:.3f}x, size {size[-1]:.3f} MiB")
    ax1.set(xlabel="task", ylabel="weights in use / original network", title=f"{r['benchmark']}: capacity in use")
    ax2.set(xlabel="task", ylabel="MiB to serve all tasks so far", title=f"{r['benchmark']}: model size")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)


if __name__ == "__main__":
    main()
