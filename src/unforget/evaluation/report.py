"""Readable markdown from a run's ``results.json`` mapping."""
from __future__ import annotations

from typing import Optional


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def markdown_report(results: dict) -> str:
    """Markdown: the accuracy matrix R[i, j] in %, then per-task records and summary metrics."""
    R = results["accuracy_matrix"]
    K = len(R)
    names = [t["name"] for t in results["tasks"]][:K]
    lines = [f"## {results['method']} on {results['benchmark']}", "",
             "Accuracy matrix R[i, j] (test accuracy %, row = after learning task i, column = task j):", ""]
    lines.append("| after \\ on | " + " | ".join(f"T{j + 1}" for j in range(K)) + " |")
    lines.append("|---" * (K + 1) + "|")
    given = {j for j, t in enumerate(results["tasks"][:K]) if t.get("accuracy_given")}
    for i, row in enumerate(R):
        cells = [(_pct(row[j]) + (" (given)" if j in given and row[j] is not None else "")) if j < len(row) else ""
                 for j in range(K)]
        lines.append(f"| T{i + 1} | " + " | ".join(cells) + " |")
    for j in sorted(given):
        t = results["tasks"][j]
        pre = t.get("pretrained") or {}
        what = (f"its given accuracy {_pct(pre.get('given_accuracy'))} % (pretrained.accuracy)"
                if pre.get("given_accuracy") is not None else "no accuracy (none was given)")
        lines += ["", f"T{j + 1} ({t['name']}) is a pretrained network ({pre.get('file', '?')}) without test data: "
                      f"its column holds {what}, not a measurement. {pre.get('decision', '')}".rstrip()]
    lines += ["", "| task | name | accuracy goal | val acc. | pruning ratio | width | train time (s) |",
              "|---|---|---|---|---|---|---|"]
    for i, t in enumerate(results["tasks"][:K]):
        ratio = "—" if t.get("pruning_ratio") is None else f"{t['pruning_ratio']:.2f}"
        width = "—" if t.get("width") is None else str(t["width"])
        lines.append(f"| {i + 1} | {names[i]} | {_pct(t.get('accuracy_goal'))} | {_pct(t.get('val_accuracy'))} | "
                     f"{ratio} | {width} | {t.get('train_time_s', 0):.1f} |")
    bwt = results.get("bwt")
    size = results.get("model_size_bytes")
    lines += ["", f"- average accuracy: {_pct(results.get('average_accuracy'))} %",
              f"- BWT: {'—' if bwt is None else f'{100 * bwt:+.2f}'} %",
              f"- model size: {'—' if size is None else f'{size / 2**20:.3f} MiB ({size} bytes)'}",
              f"- Exp. (weights allocated / original): {_x(results.get('expansion_ratio'))}",
              f"- Red. (released weights left / original): {_x(results.get('released_ratio'))}",
              f"- wall time: {results.get('wall_time_s', 0):.1f} s"]
    if results.get("threads") is not None:
        lines.append(f"- torch threads: {results['threads']}")
    for j, v in sorted(((results["tasks"][K - 1].get("verification") or {}) if K else {}).items(), key=lambda kv: int(kv[0])):
        lines.append(f"- T{j} ({names[int(j) - 1]}): verification protocol {_pct(v['accuracy'])} +- {100 * v['std']:.2f} % "
                     f"over {len(v['fold_accuracies'])} folds of pairs, after the last task")
    inference = (results["tasks"][K - 1].get("task_inference") or {}) if K else {}
    if inference.get("accuracy") is not None:
        lines.append(f"- task-id inference ({inference.get('rule', 'one-shot')}, batches of {inference['batch_size']} "
                     f"test images of one task, "
                     f"task id not given): {_pct(inference['accuracy'])} % of batches right after the last task")
    elif inference.get("error"):
        lines.append(f"- task-id inference: not possible here ({inference['error']})")
    ev = results.get("evaluation") or {}
    if ev.get("certified"):
        lines.append(f"- R: {ev['certified']} entries of earlier tasks certified unchanged (task j's served network and "
                     f"test data bit-identical to when R[j, j] was measured: R[j, j] kept), {ev.get('tested', 0)} "
                     "measured by a test pass; `--retest` tests them all")
    elif ev.get("retest"):
        lines.append("- R: every entry measured by a test pass (--retest)")
    auto = results.get("auto_config")
    if auto:
        reason = str(auto.get("reason", ""))
        reason = reason[:1].upper() + reason[1:] if reason.lower().startswith("automatic configuration") \
            else f"Automatic configuration for own data: {reason}"
        lines += ["", reason]
    lines += time_table(results)
    why = decisions(results)
    if why:
        lines += ["", *why]
    return "\n".join(lines) + "\n"


def time_table(results: dict) -> list[str]:
    """Markdown lines of "Where the time went": seconds per phase (``phase_seconds``) per task
    and over the run, with each phase's share of the run; ``[]`` for results without them."""
    from unforget.training.phases import PHASES

    total = (results.get("phase_seconds") or {}).get("total") or {}
    if not total:
        return []
    cols = [p for p in PHASES if total.get(p)]
    tasks = results["tasks"]
    lines = ["", "Where the time went (seconds; each second in one phase; in brackets the training epochs of "
             "every network the phase trained, goal references included):", "",
             "| | " + " | ".join(p.replace("_", " ") for p in cols) + " | all |", "|---" * (len(cols) + 2) + "|"]
    run = (results.get("phase_seconds") or {}).get("run") or {}
    if run:
        lines.append("| run (no task) | " + " | ".join(f"{run.get(p, 0):.1f}" for p in cols) + f" | {sum(run.values()):.1f} |")
    for i, t in enumerate(tasks):
        s = t.get("phase_seconds") or {}
        work = t.get("budget") or {}
        cells = [f"{s.get(p, 0):.1f}" + (f" ({work[p]['epochs']} ep)" if p in work else "") for p in cols]
        lines.append(f"| T{i + 1} | " + " | ".join(cells) + f" | {sum(s.values()):.1f} |")
    all_s = sum(total.values())
    lines.append("| **total** | " + " | ".join(f"{total[p]:.1f}" for p in cols) + f" | {all_s:.1f} |")
    lines.append("| share | " + " | ".join(f"{100 * total[p] / all_s:.0f} %" for p in cols) + " | 100 % |")
    return lines


def _n(v) -> str:
    return "—" if v is None else f"{int(v):,}"


def _goal_text(t: dict, first: bool) -> str:
    g = t.get("goal_record") or {}
    goal = t.get("accuracy_goal")
    src = g.get("source")
    ref = g.get("reference") or []
    tol = g.get("tolerance", 0.0) or 0.0
    if goal is None:
        return "no accuracy goal (this configuration never reads one)"
    if src == "explicit":
        text = f"accuracy goal {_pct(goal)} % (given explicitly)"
    elif g.get("fallback"):
        text = f"accuracy goal {_pct(goal)} % = own unpruned accuracy {_pct(ref[0] if ref else None)} % − {100 * tol:.2f}"
    elif src in ("fine-avg", "fine-max") and ref:
        agg = "mean" if src == "fine-avg" else "max"
        text = (f"accuracy goal {_pct(goal)} % = {src} reference ({agg} of {len(ref)}: "
                f"{', '.join(_pct(r) for r in ref)} %) − {100 * tol:.2f}")
    elif ref:
        what = "own unpruned accuracy" if src == "tolerance" or first else f"{src} reference"
        text = f"accuracy goal {_pct(goal)} % = {what} {_pct(ref[0])} % − {100 * tol:.2f}"
    else:
        text = f"accuracy goal {_pct(goal)} %"
    if g.get("chance") is not None:
        text += f" (chance: {_pct(g['chance'])} %)"
    if g.get("fallback"):
        text += f"; fallback: {g['fallback']}"
    if g.get("warning"):
        text += f"; **warning**: {g['warning']}"
    return text


def _compaction_text(t: dict) -> Optional[str]:
    ladder = t.get("compaction")
    if ladder is None:
        return None
    ratio = t.get("pruning_ratio") or 0.0
    tried = ", ".join(f"{float(r):.2f} → {_pct(v)} %" for r, v in ladder.items()) or "none"
    if ratio == 0 and not ladder:
        why = "nothing pruned"
    elif t.get("missed_goal"):
        why = (f"the goal was missed before compacting, so the task was pruned to the reserve ratio "
               f"{t.get('reserve_ratio') or ratio:.2f} to leave free weights for {t.get('reserve_for_tasks')} later task(s)")
    elif t.get("accuracy_goal") is None:
        why = "a fixed ratio"
    else:
        why = "the largest ratio tried whose validation accuracy met the goal"
    return (f"compacting from {_pct(t.get('unpruned_val_accuracy'))} % unpruned: ratios tried {tried}; kept "
            f"{ratio:.2f} ({why})")


def decisions(results: dict) -> list[str]:
    """Markdown lines explaining, per task, what a picking / growing / compacting method (CPG,
    PAE, PackNet, Piggyback) did and why: the accuracy goal and where it came from, each training
    round with its validation accuracy and the growth decision, each pruning ratio tried with its
    validation accuracy and the one kept, the retraining, and the weights claimed, released,
    kept and picked. ``[]`` for runs whose task records hold none of this (other methods)."""
    tasks = results.get("tasks") or []
    if not any("growth" in t or "weights" in t for t in tasks):
        return []
    out = [f"### Why {results.get('method', 'the method')} did what it did, task by task", ""]
    for i, t in enumerate(tasks):
        out.append(f"**Task {i + 1} — {t.get('name', '')}**: final validation accuracy {_pct(t.get('val_accuracy'))} %")
        pre = t.get("pretrained")
        if t.get("capacity_c") is not None:
            out.append(f"- used the top {100 * t['capacity_c']:.0f} % of |scores| in each layer (WSN capacity c): "
                       f"{100 * (t.get('used_share') or 0):.1f} % of all weights")
        elif pre:
            out.append(f"- a pretrained network ({pre.get('file')}), not trained here: {pre.get('decision', '')}")
        else:
            out.append(f"- {_goal_text(t, first=i == 0)}")
        for step in t.get("growth") or []:
            out.append(f"- trained at {step.get('expansion', 1.0):.2f}x with {_n(step.get('claimed'))} free weights claimed: "
                       f"validation {_pct(step.get('val_accuracy'))} %, training {_pct(step.get('train_accuracy'))} % → "
                       f"{step.get('decision', '')}")
        comp = _compaction_text(t)
        if comp:
            out.append(f"- {comp}")
        rt = t.get("retrain") or {}
        if rt.get("epochs"):
            out.append(f"- retrained {rt['epochs']} epoch(s) with fresh picks: "
                       + ("kept (better validation accuracy)" if rt.get("kept") else "not kept (no better validation accuracy)"))
        w = t.get("weights")
        if w:
            picks = (f"; {_n(w.get('picked'))} of the {_n(w.get('earlier'))} earlier tasks' weights in its slice "
                     "picked" if w.get("earlier") else "")
            out.append(f"- weights: {_n(w.get('claimed'))} claimed, {_n(w.get('released'))} released, "
                       f"{_n(w.get('kept'))} kept{picks}")
        out.append("")
    return out[:-1]


def _x(v) -> str:
    return "—" if v is None else f"{v:.3f}x"
