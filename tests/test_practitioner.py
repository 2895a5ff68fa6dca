"""A practitioner's first day with their own data: the automatic configuration, the per-epoch
training log (CSV, TensorBoard), progress on a pipe, ``--threads``, ``--preset`` errors, the
per-task explanation of CPG's decisions, and a comparison that survives a failing figure."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synthetic import gaussian_benchmark
from unforget.autoconfig import IMAGES_SEEN_PER_TASK, MAX_EPOCHS, MIN_EPOCHS, auto_config
from unforget.cli import main
from unforget.data.task import Benchmark, Split, Task
from unforget.evaluation.report import decisions
from unforget.training.epochlog import COLUMNS, PHASES, phase_of


def _write_npz(folder: Path, n_tasks: int = 2, per_class: int = 24, size: int = 8, seed: int = 0) -> Path:
    """Own data as a user brings it: one .npz per task, grey uint8 images of two classes told
    apart by which half of the image is bright."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(n_tasks):
        def split(n):
            y = np.arange(n) % 2
            x = rng.integers(0, 80, (n, size, size)).astype(np.uint8)
            for i, c in enumerate(y):
                rows = slice(0, size // 2) if (c + t) % 2 == 0 else slice(size // 2, size)
                x[i, rows] += 150
            return x, y
        xtr, ytr = split(2 * per_class)
        xte, yte = split(per_class)
        np.savez(folder / f"task{t + 1}.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return folder


def _bench(shape, n_train: int, n_val: int = 20, n_tasks: int = 3, classes: int = 2) -> Benchmark:
    def split(n):
        return Split(torch.zeros(n, *shape), torch.arange(n) % classes)

    tasks = [Task(t, f"t{t}", [str(c) for c in range(classes)], split(n_train), split(n_val), split(10),
                  lambda x, train=False, generator=None: x, tuple(shape)) for t in range(1, n_tasks + 1)]
    return Benchmark("tensors", tasks, tuple(shape))


# ----------------------------------------------------------------------------- automatic configuration
def test_auto_config_sizes_small_rgb_images_for_a_cpu():
    a = auto_config(_bench((3, 32, 32), n_train=288, n_val=32), "cpu")
    s = a.settings
    assert s["model"] == {"name": "resnet18", "width": 0.25}
    assert s["train"]["epochs"] == -(-IMAGES_SEEN_PER_TASK["resnet18"] // 288) and s["train"]["batch_size"] == 32
    assert s["methods"]["cpg"]["goal_tolerance"] >= 1 / 32  # at least one validation image
    assert "resnet18 at width 0.25" in a.reason and "override with" in a.reason and "\n" not in a.reason
    assert a.record()["data"]["train_images_per_task"] == 288


def test_auto_config_follows_data_size_image_size_and_device():
    big = auto_config(_bench((3, 32, 32), n_train=45_000), "cpu").settings
    assert big["model"] == {"name": "vgg16_bn", "width": 0.5} and big["train"] == {"epochs": MIN_EPOCHS, "batch_size": 64}
    assert auto_config(_bench((3, 32, 32), n_train=45_000), "cuda").settings["model"]["width"] == 1.0
    tiny = auto_config(_bench((3, 32, 32), n_train=20), "cpu").settings
    assert tiny["train"]["epochs"] == MAX_EPOCHS
    # 64x64 images cost four times a 32x32 one: a quarter of the images seen
    e32 = auto_config(_bench((3, 32, 32), n_train=200), "cpu").settings["train"]["epochs"]
    e64 = auto_config(_bench((3, 64, 64), n_train=200), "cpu").settings["train"]["epochs"]
    assert e64 < e32 and e64 == max(MIN_EPOCHS, -(-IMAGES_SEEN_PER_TASK["resnet18"] // 4 // 200))
    grey = auto_config(_bench((1, 28, 28), n_train=360), "cpu").settings
    assert grey["model"] == {"name": "mlp", "width": 0.1}
    assert auto_config(_bench((20,), n_train=360), "cpu").settings["model"]["name"] == "mlp"


def test_auto_config_sizes_the_batch_to_a_gpu_and_keeps_16_steps_per_epoch():
    def batch(n, device):
        return auto_config(_bench((3, 32, 32), n_train=n), device).settings["train"]["batch_size"]

    assert (batch(45_000, "cpu"), batch(45_000, "cuda")) == (64, 128)
    assert (batch(1_500, "cpu"), batch(1_500, "cuda")) == (32, 64)
    assert batch(600, "cuda") == 32 and batch(300, "cpu") == 32  # 16 steps per epoch, never below 32
    assert "sized to the GPU" in auto_config(_bench((3, 32, 32), n_train=45_000), "cuda").reason


def test_own_data_run_prints_and_records_the_choice_and_keeps_the_users_flags(capsys, tmp_path):
    data = _write_npz(tmp_path / "data")
    before = torch.get_num_threads()
    try:
        code = main(["run", "-q", "--benchmark", "npz", "--data-root", str(data), "--method", "scratch",
                     "--epochs", "2", "--threads", "1", "--out", str(tmp_path / "run")])
    finally:
        torch.set_num_threads(before)
    assert code == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("automatic configuration for own data"))
    assert "mlp at width 0.1" in line and "yours kept: train.epochs 2" in line
    assert "2 epochs (yours; " in line  # the settings in force, not only the chosen ones (issue 26, item 7)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Automatic configuration for own data" in report
    assert "for own data: automatic configuration" not in report.lower()
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["threads"] == 1
    assert res["auto_config"]["overridden"] == {"train.epochs": 2}
    assert res["config"]["model"] == {"name": "mlp", "width": 0.1, "options": {}} and res["config"]["train"]["epochs"] == 2
    assert res["config"]["train"]["batch_size"] == 32
    assert res["config"]["train"]["lr_milestones"] == [1]  # the decay follows the user's 2 epochs
    assert "Automatic configuration for own data" in (tmp_path / "run" / "report.md").read_text()


def test_the_learning_rate_decay_follows_the_epochs_unless_the_user_sets_it(tmp_path):
    from unforget.autoconfig import decay_milestones, resolve_for_data

    assert decay_milestones(11) == [6, 9] and decay_milestones(2) == [1] and decay_milestones(1) == []
    bench = _bench((3, 32, 32), n_train=288, n_val=32)
    cfg, _, auto = resolve_for_data("npz", "cpg", load=lambda c: bench, say=lambda _: None)
    assert cfg.train.lr_milestones == decay_milestones(cfg.train.epochs) and "lr x0.1 at epochs" in auto.reason
    f = tmp_path / "mine.yaml"
    f.write_text("train: {lr_milestones: []}\n")
    cfg, _, auto = resolve_for_data("npz", "cpg", config_file=f, load=lambda c: bench, say=lambda _: None)
    assert cfg.train.lr_milestones == [] and auto.overridden == {"train.lr_milestones": []}
    cfg, _, _ = resolve_for_data("npz", "cpg", overrides={"train": {"epochs": 5}}, load=lambda c: bench,
                                 say=lambda _: None)
    assert cfg.train.lr_milestones == [2, 4]


def test_builtin_benchmarks_keep_their_presets(capsys, tmp_path):
    assert main(["run", "-q", "--method", "scratch", "--epochs", "1", "--out", str(tmp_path)]) == 0
    assert "automatic configuration" not in capsys.readouterr().out
    assert json.loads((tmp_path / "results.json").read_text())["auto_config"] is None


def test_a_preset_own_data_lacks_is_an_error(capsys, tmp_path):
    data = _write_npz(tmp_path / "data")
    assert main(["run", "-q", "--benchmark", "npz", "--data-root", str(data), "--preset", "paper",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("unforget: error:") and "no 'paper' preset" in err and "\n" not in err
    assert not (tmp_path / "run" / "results.json").exists()


def test_threads_must_be_positive(capsys, tmp_path):
    assert main(["run", "-q", "--threads", "0", "--out", str(tmp_path)]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err


# ----------------------------------------------------------------------------- logs and progress
def test_phase_names():
    assert [phase_of(d) for d in ("train", "grow 1.50x", "compact 0.30", "prune 0.50", "retrain 2/5", "finetune",
                                  "goal (scratch)", "finetune ref 2 (from task 1)")] == \
        ["train", "grow", "compact", "compact", "fine-tune", "fine-tune", "goal-reference", "goal-reference"]
    assert set(PHASES) >= {"train", "grow", "compact", "fine-tune"}


def _cpg_run(tmp_path, *extra) -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model: {name: mlp, width: 0.05}\ntrain: {epochs: 2, batch_size: 32}\n"
                   "methods: {cpg: {goal: scratch, prune_epochs: 1, prune_patience: 1, retrain_epochs: 1}}\n")
    out = tmp_path / "run"
    assert main(["run", "--method", "cpg", "--config", str(cfg), "--out", str(out), *extra]) == 0
    return out


def test_every_run_writes_a_per_epoch_log_and_plain_progress_on_a_pipe(capsys, tmp_path):
    out = _cpg_run(tmp_path)
    err = capsys.readouterr().err
    # stderr is not a terminal here: plain lines, no carriage-return frames of progress bars
    assert "\r" not in err
    lines = err.splitlines()
    assert any(l.startswith("task 1/5 digits (0, 1): train 1/2: loss") and "fit ETA" in l for l in lines)
    assert any(l.startswith("task 2/5") and "run ETA" in l for l in lines)  # known once a task finished
    assert any(l.startswith("[cpg] task 5/5") for l in lines)
    with open(out / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == COLUMNS
    phases = {r["phase"] for r in rows}
    assert {"train", "compact", "goal-reference"} <= phases and phases <= set(PHASES)
    assert {int(r["task"]) for r in rows} == {1, 2, 3, 4, 5}
    compact = [r for r in rows if r["phase"] == "compact"]
    assert compact and all(0 < float(r["pruning_ratio"]) < 1 for r in compact)
    assert all(r["pruning_ratio"] == "" for r in rows if r["phase"] == "train")
    assert all(0 <= float(r["val_accuracy"]) <= 1 and float(r["seconds"]) > 0 and float(r["lr"]) > 0 for r in rows)
    first = [r for r in rows if r["task"] == "1" and r["phase"] == "train"]
    assert [r["epoch"] for r in first] == ["1", "2"] and first[0]["method"] == "cpg"
    # the report explains each task's decisions
    report = (out / "report.md").read_text()
    assert "Why cpg did what it did" in report and "ratios tried" in report and "claimed" in report


def test_tensorboard_events_with_the_extra(capsys, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = _cpg_run(tmp_path, "-q", "--log", "tensorboard")
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "task1/train/loss" in tags and "task2/compact/pruning_ratio" in tags
    assert len(acc.Scalars("task1/train/val_accuracy")) == 2


def test_a_new_run_starts_a_new_log_and_a_resume_appends(tmp_path):
    from unforget.config import resolve
    from unforget.runner import run

    cfg = resolve("digits", "scratch", overrides={"train": {"epochs": 1}})
    (tmp_path / "log.csv").write_text("stale\n")
    run(cfg, out_dir=tmp_path, progress=False)
    n = len((tmp_path / "log.csv").read_text().splitlines())
    assert n == 1 + 5 and "stale" not in (tmp_path / "log.csv").read_text()  # header + one epoch per task


# ----------------------------------------------------------------------------- decisions and compare
def test_decisions_explain_growth_compacting_and_weights():
    task = {"name": "cat-dog", "val_accuracy": 0.8, "unpruned_val_accuracy": 0.82, "accuracy_goal": 0.85,
            "missed_goal": True, "pruning_ratio": 0.5, "reserve_ratio": 0.5, "reserve_for_tasks": 1,
            "compaction": {"0.1": 0.81, "0.2": 0.8}, "retrain": {"epochs": 2, "kept": False},
            "goal_record": {"source": "scratch", "reference": [0.86], "goal": 0.85, "tolerance": 0.01, "chance": 0.5},
            "growth": [{"expansion": 1.0, "val_accuracy": 0.7, "train_accuracy": 0.9, "claimed": 100,
                        "decision": "validation accuracy 70.00 % < goal 85.00 %: grow to 1.50x and train again"},
                       {"expansion": 1.5, "val_accuracy": 0.82, "train_accuracy": 0.95, "claimed": 150,
                        "decision": "cannot grow"}],
            "weights": {"claimed": 150, "released": 75, "kept": 75, "picked": 10, "earlier": 40}}
    first = "\n".join(decisions({"method": "cpg", "tasks": [task]}))
    assert "own unpruned accuracy 86.00 %" in first  # task 1's scratch reference is its own network
    text = "\n".join(decisions({"method": "cpg", "tasks": [task, task]})).split("**Task 2")[1]
    assert "scratch reference 86.00 %" in text and "chance: 50.00 %" in text
    assert "grow to 1.50x" in text and "trained at 1.50x with 150 free weights claimed" in text
    assert "0.10 → 81.00 %" in text and "reserve ratio 0.50" in text and "not kept" in text
    assert "150 claimed, 75 released, 75 kept; 10 of the 40 earlier" in text
    assert decisions({"method": "ewc", "tasks": [{"name": "a", "val_accuracy": 0.5}]}) == []


def test_compare_names_each_method_even_when_quiet_and_survives_a_failing_figure(capsys, tmp_path, monkeypatch):
    import unforget.evaluation.plots as plots

    def broken(*a, **k):
        raise RuntimeError("no display for you")

    monkeypatch.setattr(plots, "all_plots", broken)
    assert main(["compare", "-q", "--methods", "scratch,finetune", "--epochs", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "method 1/2: scratch: runs" in out and "method 2/2: finetune: runs" in out
    assert "figures skipped (RuntimeError: no display for you)" in out
    assert (tmp_path / "report.md").is_file() and (tmp_path / "finetune" / "log.csv").is_file()


def test_api_sizes_a_benchmark_object_under_the_users_settings(tmp_path):
    import unforget

    bench = gaussian_benchmark(2, 3, 12, 48, seed=1)
    res = unforget.run(bench, "scratch", {"train": {"epochs": 1}}, progress=False)
    assert res["auto_config"]["settings"]["model"] == {"name": "mlp", "width": 0.1}
    assert res["config"]["model"]["width"] == 0.1 and res["config"]["train"]["epochs"] == 1


def test_figure_layer_names_and_panels():
    from unforget.evaluation.plots import MAX_LINES, _chunks, layer_labels

    vgg = [f"features.{i}" for i in (0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40, 46, 48)]
    labels = layer_labels({"config": {"model": {"name": "vgg16_bn"}}}, vgg)
    assert [labels[n] for n in vgg] == ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
                                        "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3", "fc6", "fc7"]
    res = ["features.0", "features.3.conv1", "features.3.conv2", "features.4.conv1", "features.5.conv1",
           "features.5.shortcut.0"]
    assert list(layer_labels({"config": {"model": {"name": "resnet18"}}}, res).values()) == \
        ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "layer2.0.conv1", "layer2.0.downsample"]
    assert layer_labels({"config": {"model": {"name": "mlp"}}}, ["features.1", "features.3"]) == \
        {"features.1": "fc1", "features.3": "fc2"}
    assert layer_labels({}, ["fc1", "fc2"]) == {"fc1": "fc1", "fc2": "fc2"}
    groups = _chunks(vgg)
    assert sum(groups, []) == vgg and all(len(g) <= MAX_LINES for g in groups) and len(groups) == 2


def test_the_running_average_says_over_which_tasks_it_is():
    """Issue 26, item 7: after `learn` with earlier tasks not re-tested, the line must not call
    the new task's accuracy alone "avg so far"."""
    from unforget.learner import average_so_far

    assert average_so_far([0.5, 1.0], 2) == "avg so far 75.00 %"
    assert average_so_far([0.875], 4) == "avg of the 1 of 4 tasks tested 87.50 %"


def test_a_task_added_by_learn_is_not_task_4_of_3():
    from types import SimpleNamespace

    from unforget.learner import ProgressLine

    display = SimpleNamespace(label="", eta=None)
    learner = SimpleNamespace(plan=SimpleNamespace(n_tasks=3), method=SimpleNamespace(trainer=SimpleNamespace(display=display)))
    ProgressLine().before_task(learner, SimpleNamespace(id=4, name="new"))
    assert display.label == "task 4/4 new"
