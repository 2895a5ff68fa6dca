"""Figures of a comparison (PNG, matplotlib's Agg backend; matplotlib is an optional extra)."""
from __future__ import annotations

from pathlib import Path
from typing import Union

from unforget.errors import UnforgetError

try:
    from matplotlib.ticker import MaxNLocator
except ImportError:  # plots are optional; _plt() explains what to install
    MaxNLocator = None


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt


    except ImportError:
        raise UnforgetError("plots need matplotlib: pip install 'unforget[plots]'") from None
    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _tasks_axis(ax, ylabel: str, title: str, legend_size: int) -> None:
    """Common look of the 'against tasks learned' line plots."""
    ax.set_xlabel("tasks learned")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=legend_size, ncol=2)
    ax.grid(alpha=0.3)


def accuracy_heatmap(name: str, results: dict, path: Path) -> Path:
    """Heat map of the accuracy matrix R[i, j] (%) of one run."""
    import numpy as np

    plt = _plt()
    R = results["accuracy_matrix"]
    K = len(R)
    M = np.full((K, K), np.nan)
    for i, row in enumerate(R):
        M[i, : len(row)] = [np.nan if v is None else 100 * v for v in row]  # None: task not tested
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * K, 1.0 + 0.5 * K))
    im = ax.imshow(M, vmin=0, vmax=100, cmap="viridis")
    for i in range(K):
        for j in range(i + 1):
            ax.text(j, i, f"{M[i, j]:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if M[i, j] < 60 else "black")
    ax.set_xticks(range(K), [f"T{j + 1}" for j in range(K)], fontsize=7)
    ax.set_yticks(range(K), [f"after T{i + 1}" for i in range(K)], fontsize=7)
    ax.set_title(f"{name}: test accuracy R[i, j] (%)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(plt, fig, path)


def accuracy_over_sequence(runs: dict[str, dict], path: Path) -> Path:
    """Each task's accuracy as later tasks are learned, one panel per method (CPG paper, Fig. 2)."""
    plt = _plt()
    n = len(runs)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, sharey=True)
    for ax, (name, r) in zip(axes.flat, runs.items()):
        R = r["accuracy_matrix"]
        K = len(R)
        for j in range(K):
            ax.plot(range(j + 1, K + 1), [float("nan") if R[i][j] is None else 100 * R[i][j] for i in range(j, K)],
                    marker="o", ms=3, label=f"T{j + 1}")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("tasks learned")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes.flat[n:]:
        ax.axis("off")
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][0].legend(fontsize=6, ncol=2)
    return _save(plt, fig, path)


def capacity_plot(name: str, results: dict, path: Path) -> Path | None:
    """Share of each layer in use after each task (CLNP Figs. 3, 5b); ``None`` without data."""
    per_task = [t.get("capacity") for t in results["tasks"]]
    if not any(per_task):
        return None
    plt = _plt()
    layers = list(next(c for c in per_task if c))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for layer in layers:
        ax.plot(range(1, len(per_task) + 1), [100 * c[layer] if c and c.get(layer) is not None else float("nan")
                                              for c in per_task], marker="o", ms=3, label=layer)
    ax.set_ylim(0, 105)
    _tasks_axis(ax, "layer capacity in use (%)", f"{name}: capacity used per layer", 6)
    return _save(plt, fig, path)


def model_size_plot(runs: dict[str, dict], path: Path) -> Path:
    """Model size (MiB) needed to serve all tasks so far, against the number of tasks."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, r in runs.items():
        sizes = [t.get("model_size_bytes") for t in r["tasks"]]
        if any(s is None for s in sizes):
            continue
        ax.plot(range(1, len(sizes) + 1), [s / 2**20 for s in sizes], marker="o", ms=3, label=name)
    _tasks_axis(ax, "model size (MiB)", "model size against number of tasks", 7)
    return _save(plt, fig, path)


def expansion_plot(runs: dict[str, dict], path: Path) -> Path | None:
    """Exp. (weights allocated / original network, solid) and Red. (released weights left /
    original network, dashed) after each task, for the runs that record them per task (the
    engine methods); ``None`` when no run does. Hung et al. 2019, Table 1's Exp. and Red."""
    series = {n: [(t.get("expansion_ratio"), t.get("released_ratio")) for t in r["tasks"]] for n, r in runs.items()}
    series = {n: s for n, s in series.items() if s and all(e is not None and f is not None for e, f in s)}
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, (name, s) in enumerate(series.items()):
        color = f"C{i}"
        x = range(1, len(s) + 1)
        ax.plot(x, [e for e, _ in s], marker="o", ms=3, color=color, label=f"{name} Exp.")
        ax.plot(x, [f for _, f in s], marker="s", ms=3, ls="--", color=color, label=f"{name} Red.")
    ax.set_ylim(bottom=0)
    _tasks_axis(ax, "x original network's weights", "expansion (Exp.) and released weights left (Red.)", 6)
    return _save(plt, fig, path)


def unit_capacity_plot(results: dict, path: Union[str, Path]) -> Path:
    """Plot CLNP's capacity diagnostics (Golkar et al. 2019, Figs. 3, 4b, 5b) to ``path`` (PNG,
    PDF or SVG by suffix): per layer, the share of units in use after each task (left) and the
    share of earlier units the new task reuses (right).

    Args:
        results: a run's ``results.json`` mapping (its ``capacity`` entry is read) or the
            :meth:`CLNP.capacity` mapping itself.

    Raises:
        ImportError: matplotlib is not installed (``pip install matplotlib``).
        ValueError: ``results`` holds no CLNP capacity diagnostics.
    """
    cap = results.get("capacity", results) if isinstance(results, dict) else None
    if not isinstance(cap, dict) or not cap or not all(isinstance(v, dict) and "per_task" in v for v in cap.values()):
        raise ValueError("no CLNP capacity diagnostics in these results (run method clnp)")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise ImportError("plots need matplotlib: pip install matplotlib") from None
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)  # the Agg canvas, without touching pyplot's global backend
    ax1, ax2 = fig.subplots(1, 2)
    for g, info in cap.items():
        tasks = info["per_task"]["task"]
        ax1.plot(tasks, info["per_task"]["used_share"], marker="o", label=g)
        ax2.plot(tasks[1:], info["per_task"]["reused_share"][1:], marker="o", label=g)
    ax1.set(xlabel="task", ylabel="share of units in use", title="capacity used", ylim=(0, 1.05))
    ax2.set(xlabel="task", ylabel="share of earlier units reused", title="reuse", ylim=(0, 1.05))
    for ax in (ax1, ax2):
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def all_plots(runs: dict[str, dict], folder: Path) -> list[str]:
    """Write every figure of a comparison into ``folder``; returns their paths."""
    out = [accuracy_over_sequence(runs, folder / "accuracy_over_tasks.png"),
           model_size_plot(runs, folder / "model_size.png")]
    exp = expansion_plot(runs, folder / "expansion.png")
    if exp:
        out.append(exp)
    for name, r in runs.items():
        out.append(accuracy_heatmap(name, r, folder / f"heatmap_{name}.png"))
        cap = capacity_plot(name, r, folder / f"capacity_{name}.png")
        if cap:
            out.append(cap)
        if isinstance(r.get("capacity"), dict) and r["capacity"] and all(
                isinstance(v, dict) and "per_task" in v for v in r["capacity"].values()):
            out.append(unit_capacity_plot(r, folder / f"units_{name}.png"))
    return [str(p) for p in out]
