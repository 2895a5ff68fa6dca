"""`unforget compare` / `unforget report` and the Python API round trip."""
from __future__ import annotations

import json

import pytest
import torch

import unforget
from synthetic import gaussian_benchmark
from unforget.cli import main
from unforget.compare import compare, write_report
from unforget.errors import ConfigError, UnforgetError
from unforget.evaluation.compare import comparison_table, verdict

def test_compare_writes_report_and_skips_finished_methods(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "-q", "--methods", "packnet,finetune", "--epochs", "1", "--out", str(out)])
    assert code == 0
    text = (out / "report.md").read_text()
    assert "| packnet |" in text and "| finetune |" in text and "Avg." in text and "Exp. (x)" in text
    for png in ("accuracy_over_tasks.png", "model_size.png", "heatmap_packnet.png", "heatmap_finetune.png",
                "capacity_packnet.png", "expansion.png"):
        assert (out / png).stat().st_size > 1000
    assert "![expansion](expansion.png)" in text  # packnet records Exp. and Red. per task; finetune does not
    res = json.loads((out / "packnet" / "results.json").read_text())
    assert res["bwt"] == 0.0 and len(res["tasks"]) == 5
    assert all(t["model_size_bytes"] > 0 for t in res["tasks"])
    # same configuration again: nothing retrains
    stamp = (out / "packnet" / "results.json").stat().st_mtime_ns
    assert main(["compare", "-q", "--methods", "packnet,finetune", "--epochs", "1", "--out", str(out)]) == 0
    assert (out / "packnet" / "results.json").stat().st_mtime_ns == stamp
    # report rebuilds from saved results alone
    (out / "report.md").unlink()
    assert main(["report", str(out), "--no-plots"]) == 0
    assert "| finetune |" in (out / "report.md").read_text()


def test_compare_rejects_bad_method_lists(tmp_path):
    with pytest.raises(ConfigError):
        compare("digits", [], tmp_path)
    with pytest.raises(ConfigError, match="twice"):
        compare("digits", ["cpg", "cpg"], tmp_path)
    with pytest.raises(UnforgetError, match="unknown method"):
        compare("digits", ["cpg", "nope"], tmp_path)
    with pytest.raises(UnforgetError, match="no results.json in .* nor \\*/results.json under it"):
        write_report(tmp_path)


def test_table_and_verdict_read_results():
    runs = {"a": {"accuracy_matrix": [[0.9], [0.8, 0.7]], "average_accuracy": 0.75, "bwt": -0.1,
                  "model_size_bytes": 2**20, "expansion_ratio": 1.0, "released_ratio": None, "wall_time_s": 3},
            "b": {"accuracy_matrix": [[0.9], [0.9, 0.8]], "average_accuracy": 0.85, "bwt": 0.0,
                  "model_size_bytes": 2**21, "expansion_ratio": 1.5, "released_ratio": 0.2, "wall_time_s": 4}}
    table = comparison_table(runs)
    assert "| a | 80.00 | 70.00 | 75.00 | -10.00 | 1.00 | — | 1.000 | — | 3 |" in table
    # epochs per task: the engine's per-task record, else the configured epochs; size against a
    # dense backbone when a scratch run (K models) is in the comparison
    runs["b"]["tasks"] = [{"network_epochs": 10}, {"network_epochs": 15}]
    runs["scratch"] = {"accuracy_matrix": [[0.9], [0.9, 0.7]], "average_accuracy": 0.8, "bwt": 0.0,
                       "model_size_bytes": 2**21, "expansion_ratio": 2.0, "released_ratio": None, "wall_time_s": 5,
                       "config": {"train": {"epochs": 4}}}
    table = comparison_table(runs)
    assert "size / dense (x)" in table
    assert "| b | 90.00 | 80.00 | 85.00 | +0.00 | 1.50 | 0.20 | 2.000 | 2.00 | 12.5 | 4 |" in table
    assert "| scratch | 90.00 | 70.00 | 80.00 | +0.00 | 2.00 | — | 2.000 | 2.00 | 4.0 | 5 |" in table
    v = verdict(runs)
    assert "highest average accuracy: **b**" in v and "most forgetting: **a**" in v and "smallest model" in v


def test_python_api_learn_and_serve(tmp_path):
    bench = gaussian_benchmark(2, 3, 12, 48, seed=9)
    cfg = {"model": {"name": "mlp", "width": 0.03}, "train": {"epochs": 2, "batch_size": 16},
           "methods": {"cpg": {"goal": "tolerance"}}}
    res = unforget.run(bench, "cpg", cfg, out=tmp_path, progress=False)
    x = bench.tasks[0].test.x
    served = {t: res.model(x, task=t) for t in (1, 2)}
    assert served[1].shape == (len(x), 3)
    acc = float((res.model.predict(x, task=1) == bench.tasks[0].test.y).float().mean())
    assert acc == pytest.approx(res["accuracy_matrix"][-1][0])
    loaded = unforget.load(tmp_path)
    assert loaded.task_ids == [1, 2]
    for t in (1, 2):
        assert torch.equal(loaded(x, task=t), served[t])
    with pytest.raises(KeyError):
        loaded(x, task=3)


def test_the_heat_maps_of_a_comparison_share_one_colour_scale(tmp_path, monkeypatch):
    """Issue 26, item 5: PackNet's 69.0 and scratch's 71.5 must not both be the darkest cell."""
    from unforget.evaluation import plots

    runs = {"packnet": {"benchmark": "b", "method": "packnet", "accuracy_matrix": [[0.69], [0.70, 0.80]]},
            "scratch": {"benchmark": "b", "method": "scratch", "accuracy_matrix": [[0.715], [0.715, 0.95]]}}
    seen = []
    real = plots.accuracy_heatmap

    def recorded(name, results, path, scale=None):
        seen.append(scale)
        return real(name, results, path, scale)

    monkeypatch.setattr(plots, "accuracy_heatmap", recorded)
    for other in ("accuracy_over_sequence", "model_size_plot", "expansion_plot", "capacity_plot"):
        monkeypatch.setattr(plots, other, lambda *a, **k: None)  # they need a full results.json
    for name, r in runs.items():
        plots.accuracy_heatmap(name, r, tmp_path / f"{name}.png")  # alone: fitted to its own values
    plots.all_plots(runs, tmp_path)
    assert seen[:2] == [None, None]
    assert seen[2] == seen[3] and seen[2][0] <= 69.0 and seen[2][1] >= 95.0


def test_the_capacity_table_names_layers_as_the_figures_do():
    """Issue 26, item 10: one naming (``layer1.0.conv1``, not ``features.3.conv1``)."""
    from unforget.evaluation.compare import capacity_table
    from unforget.evaluation.plots import layer_labels

    names = ["features.0", "features.3.conv1", "features.3.conv2"]
    run = {"config": {"model": {"name": "resnet18"}},
           "tasks": [{"capacity": {n: 0.5 for n in names}}, {"capacity": {n: 0.75 for n in names}}]}
    table = capacity_table({"cpg": run})
    labels = layer_labels(run, names)
    assert labels["features.3.conv1"] != "features.3.conv1"
    assert all(f"| {labels[n]} |" in table for n in names) and "features.3" not in table


def test_budget_counts_every_network_trained_and_the_table_shows_it(tmp_path):
    """Each task's record counts the epochs and training images of every network trained for it,
    goal references included, and the comparison prints them beside the wall (issue 30)."""
    from unforget.config import RunConfig
    from unforget.evaluation.compare import budget_table
    from unforget.runner import run

    bench = gaussian_benchmark(3, 3, 12, 48, seed=7)
    runs = {}
    for method, opts in (("scratch", {}), ("cpg", {"goal": "scratch", "prune_interval": 0.5, "retrain_epochs": 1})):
        cfg = RunConfig.model_validate({"method": method, "model": {"name": "mlp", "width": 0.03},
                                        "train": {"epochs": 2, "batch_size": 16}, "methods": {method: opts}})
        runs[method] = run(cfg, benchmark=bench, out_dir=tmp_path / method, progress=False)
    for task, rec in zip(bench.tasks, runs["scratch"]["tasks"]):
        assert rec["budget"] == {"training": {"epochs": 2, "images": 2 * len(task.train)}}
    for task, rec in zip(bench.tasks, runs["cpg"]["tasks"]):
        b = rec["budget"]
        assert b.get("goal_references") == (None if task.id == 1 else {"epochs": 2, "images": 2 * len(task.train)})
        served = sum(p["epochs"] for name, p in b.items() if name != "goal_references")
        assert served == rec["network_epochs"] and b["compaction"]["epochs"] >= 1
        assert all(p["images"] == p["epochs"] * len(task.train) for p in b.values())
    table = budget_table(runs)
    scratch_row = next(line for line in table.splitlines() if line.startswith("| scratch |"))
    assert scratch_row.split(" | ")[1:5] == ["2.0", "2.0", "0.0", f"{2 * sum(len(t.train) for t in bench.tasks) / 3:,.0f}"]
    cpg_row = next(line for line in table.splitlines() if line.startswith("| cpg |")).split(" | ")
    assert cpg_row[3] == f"{4 / 3:.1f}" and float(cpg_row[2]) > float(cpg_row[1])
    assert "wall x scratch" in table and float(scratch_row.split(" | ")[-1].rstrip(" |")) == 1.0
    from unforget.evaluation import markdown_report

    t2 = [line for line in markdown_report(runs["cpg"]).splitlines() if line.startswith("| T2 |")][-1]  # time table
    assert t2.count(" ep)") == 3 and "(2 ep)" in t2, t2  # training, compaction, goal references (2 epochs)
