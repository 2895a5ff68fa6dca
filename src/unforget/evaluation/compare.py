"""Side-by-side comparison of runs, in the layout of the CPG paper's Tables 1-2 (one column per
task, then Avg., Exp., Red., model size) and CLNP's capacity table (Golkar et al. 2019, Table 1).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from unforget.errors import UnforgetError


def load_results(folder: str | Path) -> dict[str, dict]:
    """``{method: results}`` from ``folder/*/results.json`` (one sub-folder per method), in the
    order of ``folder/compare.json`` when present, else by name.

    Raises:
        UnforgetError: no results found.
    """
    folder = Path(folder)
    order: list[str] = []
    if (folder / "compare.json").is_file():
        order = json.loads((folder / "compare.json").read_text()).get("methods", [])
    found = {p.parent.name: p for p in sorted(folder.glob("*/results.json"))}
    if not found:
        raise UnforgetError(f"no */results.json under {folder}; run `unforget compare` first")
    names = [m for m in order if m in found] + [m for m in found if m not in order]
    return {m: json.loads(found[m].read_text()) for m in names}


def _pct(v: Optional[float]) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def _x(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.2f}"


def network_epochs(results: dict) -> Optional[float]:
    """Mean training epochs per task of the network that serves the tasks: the engine's record
    (training, growth restarts, compaction and retraining) where present, else the configured
    ``train.epochs``. Reference models trained only to set accuracy goals are not counted."""
    per_task = [t.get("network_epochs") for t in results.get("tasks", [])]
    if per_task and all(e is not None for e in per_task):
        return sum(per_task) / len(per_task)
    return results.get("config", {}).get("train", {}).get("epochs")


def dense_bytes(runs: dict[str, dict]) -> Optional[float]:
    """Bytes of one dense backbone with one head: a ``scratch`` run's size over its task count."""
    r = runs.get("scratch")
    if not r or not r.get("model_size_bytes"):
        return None
    return r["model_size_bytes"] / len(r["accuracy_matrix"])


def comparison_table(runs: dict[str, dict]) -> str:
    """Markdown: one row per method; test accuracy (%) on each task after the last task, Avg.,
    BWT, Exp. (x), Red. (x), model size (MiB), size against one dense backbone (when a
    ``scratch`` run gives it), network epochs per task and wall time."""
    K = max(len(r["accuracy_matrix"]) for r in runs.values())
    dense = dense_bytes(runs)
    head = ["method"] + [f"T{j + 1}" for j in range(K)] + ["Avg.", "BWT", "Exp. (x)", "Red. (x)", "size (MiB)"]
    head += (["size / dense (x)"] if dense else []) + ["epochs / task", "time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in runs.items():
        last = r["accuracy_matrix"][-1]
        cells = [_pct(last[j]) if j < len(last) else "" for j in range(K)]
        bwt = r.get("bwt")
        size = r.get("model_size_bytes")
        ep = network_epochs(r)
        row = [name, *cells, _pct(r.get("average_accuracy")), "—" if bwt is None else f"{100 * bwt:+.2f}",
               _x(r.get("expansion_ratio")), _x(r.get("released_ratio")), "—" if size is None else f"{size / 2**20:.3f}"]
        row += ([_x(size / dense) if size else "—"] if dense else [])
        row += ["—" if ep is None else f"{ep:.1f}", f"{r.get('wall_time_s', 0):.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def capacity_table(runs: dict[str, dict]) -> str:
    """Markdown: per method and layer, the share of the layer in use after each task (CLNP's
    capacity diagnostics). Empty string when no run recorded capacity."""
    blocks = []
    for name, r in runs.items():
        per_task = [t.get("capacity") for t in r["tasks"]]
        if not any(per_task):
            continue
        layers = list(next(c for c in per_task if c))
        K = len(per_task)
        lines = [f"**{name}** — share of each layer in use after task i (%)", "",
                 "| layer | " + " | ".join(f"T{i + 1}" for i in range(K)) + " |", "|---" * (K + 1) + "|"]
        for layer in layers:
            lines.append(f"| {layer} | " + " | ".join(
                "—" if not c or c.get(layer) is None else f"{100 * c[layer]:.1f}" for c in per_task) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def verdict(runs: dict[str, dict]) -> str:
    """One-paragraph plain-language summary: best average accuracy, least forgetting, smallest
    model among the methods compared."""
    def best(key, pick):
        vals = {m: r.get(key) for m, r in runs.items() if r.get(key) is not None}
        return pick(vals, key=vals.get) if vals else None

    acc = best("average_accuracy", max)
    size = best("model_size_bytes", min)
    exact = [m for m, r in runs.items() if r.get("bwt") == 0.0]
    forget = {m: r["bwt"] for m, r in runs.items() if r.get("bwt") not in (None, 0.0)}
    parts = []
    if acc:
        parts.append(f"highest average accuracy: **{acc}** ({_pct(runs[acc]['average_accuracy'])} %)")
    if exact:
        parts.append(f"no forgetting at all (BWT exactly 0): {', '.join(exact)}")
    if forget:
        worst = min(forget, key=forget.get)
        parts.append(f"most forgetting: **{worst}** (BWT {100 * forget[worst]:+.2f} %)")
    if size:
        parts.append(f"smallest model serving all tasks: **{size}** ({runs[size]['model_size_bytes'] / 2**20:.3f} MiB)")
    return "; ".join(parts) + "."


def comparison_report(runs: dict[str, dict], plots: list[str]) -> str:
    """The full markdown report of a comparison folder."""
    first = next(iter(runs.values()))
    K = len(first["accuracy_matrix"])
    out = [f"# {', '.join(runs)} on {first['benchmark']} ({K} tasks)", "", verdict(runs), "",
           "## Accuracy after the last task (CPG paper, Tables 1-2 layout)", "",
           "Test accuracy (%) on each task after learning all tasks; Avg. = average accuracy; BWT = backward "
           "transfer (negative = forgetting); Exp. = weights allocated / original network; Red. = released "
           "weights left / original network; size = bytes needed to serve every task; size / dense = that size "
           "over one dense backbone's (a scratch model's); epochs / task = training epochs of the serving network "
           "per task (growth restarts, compaction and retraining counted; goal reference models not).", "",
           comparison_table(runs)]
    cap = capacity_table(runs)
    if cap:
        out += ["## Capacity used per layer (CLNP diagnostics)", "", cap]
    if plots:
        out += ["## Figures", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    out += ["## Runs", ""]
    for name, r in runs.items():
        c = r["config"]
        out.append(f"- **{name}**: model {c['model']['name'] or 'default'} x{c['model']['width']}, "
                   f"{c['train']['epochs']} epochs, batch {c['train']['batch_size']}, lr {c['train']['lr']}, seed "
                   f"{c['seed']}; wall time {r.get('wall_time_s', 0):.0f} s; full results in `{name}/results.json`")
    return "\n".join(out) + "\n"
