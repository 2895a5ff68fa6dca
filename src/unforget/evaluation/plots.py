"""Figures of a comparison (PNG, matplotlib's Agg backend)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

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
        raise UnforgetError("plots need matplotlib (a dependency of unforget): pip install matplotlib") from None
    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
LINESTYLES = ("-", "--", "-.", ":")
MAX_LINES = 8
"""At most this many lines share one panel; more are split into panels."""


def _style(i: int, n: int) -> dict:
    """Line style of series ``i`` of ``n``: its own colour, marker and dash, so that series that
    lie on top of each other stay distinguishable."""
    return {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)], "ls": LINESTYLES[(i // 10) % len(LINESTYLES)],
            "ms": 4, "lw": 1.2, "alpha": 0.9}


def _offset(i: int, n: int, spread: float = 0.24) -> float:
    """A small horizontal offset of series ``i`` of ``n`` (in tasks), so that equal values of
    several series sit side by side instead of hiding each other."""
    return 0.0 if n <= 1 else spread * (i / (n - 1) - 0.5)


def _chunks(items: list, size: int = MAX_LINES) -> list[list]:
    """``items`` in consecutive groups of at most ``size``, as even as possible."""
    if not items:
        return []
    k = -(-len(items) // size)
    per = -(-len(items) // k)
    return [items[i:i + per] for i in range(0, len(items), per)]


VGG16_CONVS = [f"conv{b}_{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)]


def layer_labels(results: dict, names: list[str]) -> dict[str, str]:
    """Readable names of a run's weighted layers for figures: VGG16's ``conv1_1 .. conv5_3``,
    ``fc6``, ``fc7`` (Simonyan & Zisserman 2015's names) for the zoo's ``vgg16_bn`` /
    ``vgg16_bn_light``, ``fc1, fc2, ...`` for ``mlp``, torchvision's ``conv1``,
    ``layer1.0.conv1``, ``layer2.0.downsample`` for ``resnet18``; other networks keep their module
    names. ``names`` are the module names in network order."""
    model = ((results.get("config") or {}).get("model") or {}).get("name")
    if model in ("vgg16_bn", "vgg16_bn_light") and len(names) >= len(VGG16_CONVS):
        extra = [f"fc{6 + i}" for i in range(len(names) - len(VGG16_CONVS))]
        return dict(zip(names, VGG16_CONVS + extra))
    if model == "mlp" and all(n.startswith("features.") for n in names):
        return {n: f"fc{i + 1}" for i, n in enumerate(names)}
    if model == "resnet18" and all(n.startswith("features.") for n in names):
        return _resnet_labels(names)
    return {n: n for n in names}


def _resnet_labels(names: list[str]) -> dict[str, str]:
    """The zoo ResNet-18's ``features.0`` / ``features.K.conv1`` / ``features.K.shortcut.0`` as
    torchvision names it: ``conv1``, ``layer{stage}.{block}.conv1``, ``layer{stage}.{block}.downsample``
    (two blocks per stage, blocks in network order)."""
    blocks = sorted({int(n.split(".")[1]) for n in names if n.count(".") >= 2})
    out = {}
    for n in names:
        parts = n.split(".")
        if len(parts) == 2:
            out[n] = "conv1"
            continue
        i = blocks.index(int(parts[1]))
        rest = "downsample" if parts[2] == "shortcut" else ".".join(parts[2:])
        out[n] = f"layer{i // 2 + 1}.{i % 2}.{rest}"
    return out


def _title(results: dict, what: str) -> str:
    return f"{results.get('benchmark', '')} · {results.get('method', '')}: {what}"


def _tasks_axis(ax, ylabel: str, title: str, legend_size: int) -> None:
    """Common look of the 'against tasks learned' line plots."""
    ax.set_xlabel("tasks learned")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=legend_size, ncol=2)
    ax.grid(alpha=0.3)


def heatmap_scale(runs: list[dict]) -> tuple[float, float]:
    """The colour scale ``(lo, hi)`` in % that shows every accuracy-matrix value of ``runs``
    (``results.json`` mappings): the smallest and largest tested entry, a 1-point window when
    they (almost) agree; ``(0, 100)`` when nothing was tested. One scale for all the heat maps of
    a comparison, so that equal colours mean equal accuracies across methods."""
    seen = [100 * v for r in runs for row in r["accuracy_matrix"] for v in row if v is not None]
    lo, hi = (min(seen), max(seen)) if seen else (0.0, 100.0)
    if hi - lo < 1.0:  # (almost) one value: a 1-point window around it
        lo, hi = hi - 1.0, hi
    return float(lo), float(hi)


def accuracy_heatmap(name: str, results: dict, path: Path,
                     scale: Optional[tuple[float, float]] = None) -> Path:
    """Heat map of the accuracy matrix R[i, j] (%) of one run, one decimal per cell, titled with
    the benchmark and the method. ``scale``: the colour scale ``(lo, hi)`` in % (a comparison
    passes one :func:`heatmap_scale` for all its runs); default fitted to this run's values (so
    that 98.9 and 100 differ)."""
    import numpy as np

    plt = _plt()
    R = results["accuracy_matrix"]
    K = len(R)
    M = np.full((K, K), np.nan)
    for i, row in enumerate(R):
        M[i, : len(row)] = [np.nan if v is None else 100 * v for v in row]  # None: task not tested
    lo, hi = scale if scale is not None else heatmap_scale([results])
    fig, ax = plt.subplots(figsize=(1.8 + 0.62 * K, 1.3 + 0.5 * K))
    im = ax.imshow(M, vmin=lo, vmax=hi, cmap="viridis")
    for i in range(K):
        for j in range(i + 1):
            if np.isnan(M[i, j]):
                ax.text(j, i, "—", ha="center", va="center", fontsize=7)
                continue
            dark = (M[i, j] - lo) / (hi - lo) < 0.55
            ax.text(j, i, f"{M[i, j]:.1f}", ha="center", va="center", fontsize=7 if K < 12 else 5,
                    color="white" if dark else "black")
    ax.set_xticks(range(K), [f"T{j + 1}" for j in range(K)], fontsize=7)
    ax.set_yticks(range(K), [f"after T{i + 1}" for i in range(K)], fontsize=7)
    ax.set_title(_title({**results, "method": name}, "test accuracy R[i, j] (%)"), fontsize=9)
    cb = fig.colorbar(im, ax=ax, fraction=0.046)
    cb.ax.tick_params(labelsize=7)
    cb.set_label(f"% (scale {lo:.1f}–{hi:.1f})", fontsize=7)
    return _save(plt, fig, path)


def accuracy_over_sequence(runs: dict[str, dict], path: Path) -> Path:
    """Each task's accuracy as later tasks are learned, one panel per method (CPG paper, Fig. 2):
    each task its own colour, marker and small horizontal offset (equal accuracies sit side by
    side), a legend on every panel, the benchmark in the title."""
    plt = _plt()
    n = len(runs)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    K_max = max((len(r["accuracy_matrix"]) for r in runs.values()), default=1)
    legend_w = 0.7 if K_max <= 12 else 1.2
    fig, axes = plt.subplots(rows, cols, figsize=((4.2 + legend_w) * cols, 3.4 * rows + 0.4), squeeze=False,
                             sharey=True)
    for ax, (name, r) in zip(axes.flat, runs.items()):
        R = r["accuracy_matrix"]
        K = len(R)
        cmap = plt.get_cmap("viridis") if K > 10 else None  # many tasks: early to late as dark to light
        for j in range(K):
            style = _style(j, K)
            if cmap is not None:
                style.update(color=cmap(j / max(1, K - 1) * 0.9), ms=2.5)
            ax.plot([x + _offset(j, K) for x in range(j + 1, K + 1)],
                    [float("nan") if R[i][j] is None else 100 * R[i][j] for i in range(j, K)],
                    label=f"T{j + 1}", **style)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("tasks learned")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=1 if K <= 12 else 2, title="task", title_fontsize=6, loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, handlelength=2.5)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for row in axes:
        row[0].set_ylabel("test accuracy (%)")
    bench = next(iter(runs.values())).get("benchmark", "") if runs else ""
    fig.suptitle(f"{bench}: each task's test accuracy as later tasks are learned", fontsize=10)
    return _save(plt, fig, path)


def capacity_plot(name: str, results: dict, path: Path) -> Path | None:
    """Share of each layer in use after each task (CLNP Figs. 3, 5b), with readable layer names
    (:func:`layer_labels`) and at most :data:`MAX_LINES` layers per panel; ``None`` without data."""
    per_task = [t.get("capacity") for t in results["tasks"]]
    if not any(per_task):
        return None
    plt = _plt()
    layers = list(next(c for c in per_task if c))
    labels = layer_labels(results, layers)
    groups = _chunks(layers)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 3.8), squeeze=False, sharey=True)
    x0 = range(1, len(per_task) + 1)
    for ax, group in zip(axes[0], groups):
        for i, layer in enumerate(group):
            dx = _offset(i, len(group), 0.2)
            ax.plot([x + dx for x in x0], [100 * c[layer] if c and c.get(layer) is not None else float("nan")
                                           for c in per_task], label=labels[layer], **_style(i, len(group)))
        ax.set_ylim(0, 105)
        first, last = labels[group[0]], labels[group[-1]]
        _tasks_axis(ax, "layer capacity in use (%)" if ax is axes[0][0] else "",
                    f"layers {first} – {last}" if len(groups) > 1 else "every weighted layer", 7)
    fig.suptitle(_title({**results, "method": name}, "share of each layer's weights in use"), fontsize=10)
    return _save(plt, fig, path)


def model_size_plot(runs: dict[str, dict], path: Path) -> Path:
    """Model size (MiB) needed to serve all tasks so far, against the number of tasks."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    n = len(runs)
    for i, (name, r) in enumerate(runs.items()):
        sizes = [t.get("model_size_bytes") for t in r["tasks"]]
        if any(s is None for s in sizes):
            continue
        ax.plot([x + _offset(i, n, 0.2) for x in range(1, len(sizes) + 1)], [s / 2**20 for s in sizes], label=name,
                **_style(i, n))
    bench = next(iter(runs.values())).get("benchmark", "") if runs else ""
    _tasks_axis(ax, "model size (MiB)", f"{bench}: model size to serve every task learned", 7)
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
    bench = next(iter(runs.values())).get("benchmark", "") if runs else ""
    _tasks_axis(ax, "x original network's weights", f"{bench}: expansion (Exp.) and released weights left (Red.)", 6)
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
    fig.suptitle(f"{results.get('benchmark', '')} · {results.get('method', 'clnp')}: units per layer", fontsize=10)
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
    scale = heatmap_scale(list(runs.values()))  # one colour scale: equal colours, equal accuracies
    for name, r in runs.items():
        out.append(accuracy_heatmap(name, r, folder / f"heatmap_{name}.png", scale))
        cap = capacity_plot(name, r, folder / f"capacity_{name}.png")
        if cap:
            out.append(cap)
        if isinstance(r.get("capacity"), dict) and r["capacity"] and all(
                isinstance(v, dict) and "per_task" in v for v in r["capacity"].values()):
            out.append(unit_capacity_plot(r, folder / f"units_{name}.png"))
    return [str(p) for p in out]
