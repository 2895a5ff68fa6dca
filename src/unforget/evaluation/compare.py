"""Side-by-side comparison of runs, in the layout of the CPG paper's Tables 1-2 (one column per
task, then Avg., Exp., Red., model size) and CLNP's capacity table (Golkar et al. 2019, Table 1).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from unforget.errors import RunFolderError, UnforgetError
from unforget.evaluation.plots import layer_labels


# ------------------------------------------------------------------ what a report reads
class _Read(BaseModel):
    """The part of a saved file the report reads, checked strictly (no coercion: a string where
    a number belongs is damage); other keys are kept as they are."""

    model_config = ConfigDict(extra="allow", strict=True)


class _ModelPart(_Read):
    name: Optional[str] = None
    width: float


class _TrainPart(_Read):
    epochs: int
    batch_size: int
    lr: float


class _ConfigPart(_Read):
    model: _ModelPart
    train: _TrainPart
    seed: int


class _TaskPart(_Read):
    capacity: Optional[dict[str, Optional[float]]] = None
    model_size_bytes: Optional[float] = None
    expansion_ratio: Optional[float] = None
    released_ratio: Optional[float] = None
    network_epochs: Optional[float] = None
    budget: Optional[dict[str, dict[str, int]]] = None


class _UnitSeries(_Read):
    task: list[int]
    used_share: list[float]
    reused_share: list[float]


class _UnitCapacity(_Read):
    per_task: _UnitSeries


Fraction = Annotated[float, Field(ge=0, le=1)]


class ReportedRun(_Read):
    """A ``results.json`` as ``unforget report`` reads it: the accuracy matrix (lower
    triangular, accuracies as fractions in [0, 1], ``None`` for a task not tested), one task
    record per row, the configuration's model, training and seed, and the summary numbers."""

    benchmark: str
    config: _ConfigPart
    tasks: list[_TaskPart]
    accuracy_matrix: list[list[Optional[Fraction]]] = Field(min_length=1)
    average_accuracy: Optional[float] = None
    bwt: Optional[float] = None
    model_size_bytes: Optional[float] = None
    expansion_ratio: Optional[float] = None
    released_ratio: Optional[float] = None
    wall_time_s: float = 0.0
    capacity: Optional[dict[str, Any]] = None

    @model_validator(mode="after")
    def _shape(self):
        for i, row in enumerate(self.accuracy_matrix):
            if len(row) != i + 1:
                raise ValueError(f"row {i + 1} of accuracy_matrix has {len(row)} entries, not {i + 1}")
        if len(self.tasks) != len(self.accuracy_matrix):
            raise ValueError(f"{len(self.tasks)} task records for {len(self.accuracy_matrix)} rows of accuracy_matrix")
        cap = self.capacity
        if cap and all(isinstance(v, dict) and "per_task" in v for v in cap.values()):  # CLNP's unit capacity
            for v in cap.values():
                _UnitCapacity.model_validate(v)
        return self


class _CompareFile(_Read):
    methods: list[str] = Field(default_factory=list)


def _read_mapping(path: Path, model: type[_Read], advice: str) -> dict:
    """The JSON mapping in ``path``, checked against ``model``.

    Raises:
        RunFolderError: one line naming ``path``, what is wrong and ``advice``.
    """
    def damaged(why: str) -> RunFolderError:
        return RunFolderError(f"{path} is damaged: {why}; {advice}")

    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise RunFolderError(f"{path} cannot be read ({e.strerror or type(e).__name__})") from None
    except UnicodeDecodeError:
        raise damaged("not UTF-8 text") from None
    if not text.strip():
        raise damaged("it is empty")
    try:
        data = json.loads(text)
    except ValueError as e:
        raise damaged(f"not JSON ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise damaged("nested too deeply") from None
    if not isinstance(data, dict):
        raise damaged(f"not a JSON mapping but a {type(data).__name__}")
    try:
        model.model_validate(data)
    except ValidationError as e:
        raise damaged(_problem(e)) from None
    return data


def _problem(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    return f"'{loc}': {msg}" if loc else msg


def read_results(path: str | Path) -> dict:
    """A run's ``results.json``, checked to hold what a report reads (:class:`ReportedRun`).

    Raises:
        RunFolderError: unreadable, empty, truncated or non-JSON file, or one that lacks or
            damages what a report needs (one line naming the file).
    """
    path = Path(path)
    if (path.parent / "checkpoint.safetensors").is_file():
        advice = ("delete it and rerun `unforget compare` with the same options, which resumes from the checkpoint "
                  "beside it")
    else:
        advice = f"delete {path.parent} and rerun `unforget compare` to redo that method"
    return _read_mapping(path, ReportedRun, advice)


def load_results(folder: str | Path) -> dict[str, dict]:
    """``{method: results}`` from ``folder/*/results.json`` (one sub-folder per method), in the
    order of ``folder/compare.json`` when present, else by name.

    Raises:
        UnforgetError: no results found; RunFolderError: a damaged ``results.json`` or
            ``compare.json`` (:func:`read_results`; one line naming the file).
    """
    folder = Path(folder)
    order: list[str] = []
    cmp = folder / "compare.json"
    if cmp.is_file():
        order = _read_mapping(cmp, _CompareFile, "delete it (it only sets the order of the methods) and rerun "
                                                  "`unforget report`").get("methods", [])
    found = {p.parent.name: p for p in sorted(folder.glob("*/results.json"))}
    if not found:
        raise UnforgetError(f"no results.json in {folder} (a run's folder) nor */results.json under it (a "
                            "comparison's); give the folder of `unforget run` or `unforget compare`")
    names = [m for m in order if m in found] + [m for m in found if m not in order]
    return {m: read_results(found[m]) for m in names}


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


def budget_per_task(results: dict) -> Optional[dict[str, float]]:
    """Mean training work per task over every network the method trained for it (the served
    network and the goal references: the tasks' ``budget`` records, counted by the trainer):
    ``{"epochs", "images", "reference_epochs"}``, or ``None`` for results made before budgets
    were recorded."""
    tasks = [t.get("budget") for t in results.get("tasks", [])]
    if not tasks or any(b is None for b in tasks):
        return None
    epochs = [sum(p["epochs"] for p in b.values()) for b in tasks]
    images = [sum(p["images"] for p in b.values()) for b in tasks]
    refs = [b.get("goal_references", {}).get("epochs", 0) for b in tasks]
    return {"epochs": sum(epochs) / len(tasks), "images": sum(images) / len(tasks),
            "reference_epochs": sum(refs) / len(tasks)}


def budget_table(runs: dict[str, dict]) -> str:
    """Markdown: per method, the training budget per task (epochs of the served network; epochs
    and training images of every network, goal references included) and the wall time, with
    its ratio to ``scratch``'s when a scratch run is among them — "equal budget" and "cost" read
    from one table (issue 30)."""
    base = runs.get("scratch", {}).get("wall_time_s")
    head = ["method", "epochs / task, served network", "epochs / task, all networks", "of which goal references",
            "images seen / task", "wall (s)"] + (["wall x scratch"] if base else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in runs.items():
        ep, b, wall = network_epochs(r), budget_per_task(r), r.get("wall_time_s")
        row = [name, "—" if ep is None else f"{ep:.1f}", "—" if b is None else f"{b['epochs']:.1f}",
               "—" if b is None else f"{b['reference_epochs']:.1f}", "—" if b is None else f"{b['images']:,.0f}",
               "—" if wall is None else f"{wall:.0f}"]
        row += [_x(wall / base) if wall is not None else "—"] if base else []
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


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
    capacity diagnostics). Empty string when no run recorded capacity. Layers are named as the
    capacity figures name them (:func:`unforget.evaluation.plots.layer_labels`)."""
    blocks = []
    for name, r in runs.items():
        per_task = [t.get("capacity") for t in r["tasks"]]
        if not any(per_task):
            continue
        layers = list(next(c for c in per_task if c))
        label = layer_labels(r, layers)
        K = len(per_task)
        lines = [f"**{name}** — share of each layer in use after task i (%)", "",
                 "| layer | " + " | ".join(f"T{i + 1}" for i in range(K)) + " |", "|---" * (K + 1) + "|"]
        for layer in layers:
            lines.append(f"| {label.get(layer, layer)} | " + " | ".join(
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
           comparison_table(runs),
           "## Training budget per task", "",
           "Epochs and training images per task, averaged over the tasks: of the network that serves the tasks, and of "
           "every network trained (goal reference models included); wall = the method's whole run.", "",
           budget_table(runs)]
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
