"""design.md "Run folders are precious": one writer per folder (an OS lock that a killed process
does not leave behind), no run overwritten by accident, the folder checked before training, no
temporary file of a killed writer left over; `unforget compare` says what it reuses, resumes or
redoes and never retrains over a damaged checkpoint."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from synthetic import gaussian_benchmark
from test_cli import _err as _cli_err
from unforget.checkpoint import CHECKPOINT
from unforget.compare import compare, plan
from unforget.config import RunConfig
from unforget.errors import CheckpointError, RunFolderError
from unforget.runfolder import locked
from unforget import learner as learner_mod
from unforget.runner import run

ROOT = Path(__file__).resolve().parents[1]


def _cfg(seed: int = 0) -> RunConfig:
    return RunConfig.model_validate({"method": "packnet", "model": {"name": "mlp", "width": 0.03},
                                     "train": {"epochs": 1, "batch_size": 16}, "seed": seed})


def _run(out: Path, n_tasks: int = 2, **kw) -> dict:
    return run(_cfg(kw.pop("seed", 0)), benchmark=gaussian_benchmark(n_tasks, 3, 12, 48, seed=3), out_dir=out,
               progress=False, **kw)


# ------------------------------------------------------------------ no overwrite by accident
def test_new_run_into_a_finished_run_is_refused(tmp_path):
    first = _run(tmp_path)
    stamp = (tmp_path / CHECKPOINT).stat().st_mtime_ns
    with pytest.raises(RunFolderError, match="already holds a run.*--resume.*--overwrite"):
        _run(tmp_path)
    assert (tmp_path / CHECKPOINT).stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "results.json").read_text())["accuracy_matrix"] == first["accuracy_matrix"]


def test_cli_refuses_before_training_and_names_both_ways_out(capsys, tmp_path):
    (tmp_path / "results.json").write_text("{}")
    err = _cli_err(capsys, ["run", "-q", "--out", str(tmp_path)])
    assert str(tmp_path) in err and "--resume" in err and "--overwrite" in err
    assert "--overwrite" in _cli_err(capsys, ["run", "-q", "--out", str(tmp_path), "--resume", "--overwrite"])


def _stop_before_training(monkeypatch):
    """Make the next run stop where training would begin, after its folder is prepared."""
    def stop(*a, **k):
        raise RuntimeError("stopped before training")
    monkeypatch.setattr(learner_mod, "build_method", stop)


def test_overwrite_removes_the_previous_run_only(tmp_path, monkeypatch):
    for name in (CHECKPOINT, "results.json", "report.md"):
        (tmp_path / name).write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    with monkeypatch.context() as mp:
        _stop_before_training(mp)
        with pytest.raises(RuntimeError, match="stopped"):
            _run(tmp_path, overwrite=True)
    # the old run's files are gone, and the failed new attempt left nothing (issue 26, item 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    res = _run(tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["accuracy_matrix"] == res["accuracy_matrix"]
    assert (tmp_path / "notes.txt").read_text() == "mine"
    resumed = _run(tmp_path, resume=True)  # the new checkpoint is a valid one
    assert resumed["accuracy_matrix"] == res["accuracy_matrix"]


# ------------------------------------------------------------------ one writer per folder
def test_a_second_writer_is_refused_at_once(tmp_path):
    with locked(tmp_path):
        with pytest.raises(RunFolderError, match="another unforget process is writing"):
            _run(tmp_path)
    _run(tmp_path)  # released: the next run goes ahead


HOLDER = """
import sys, time
sys.path.insert(0, {src!r})
from unforget.runfolder import locked
with locked({out!r}):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_lock_of_a_killed_process_does_not_block(tmp_path, capsys):
    child = subprocess.Popen([sys.executable, "-c", HOLDER.format(src=str(ROOT / "src"), out=str(tmp_path))],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        err = _cli_err(capsys, ["run", "-q", "--out", str(tmp_path)])
        assert "another unforget process" in err and str(tmp_path / ".lock") in err
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    _run(tmp_path)  # the OS dropped the dead process's lock


# ------------------------------------------------------------------ checked before training
def test_output_folder_that_is_a_file_fails_before_any_data_is_read(capsys, tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    err = _cli_err(capsys, ["run", "-q", "--benchmark", "split-cifar10", "--data-root", str(tmp_path / "none"),
                            "--out", str(f)])
    assert "is a file" in err and str(f) in err
    err = _cli_err(capsys, ["run", "-q", "--out", str(f / "sub")])
    assert "cannot be written" in err and str(f / "sub") in err


def test_stale_temp_files_are_removed_on_start(tmp_path, monkeypatch):
    for name in ("checkpoint.safetensors.tmp", "results.json.tmp", "report.md.tmp"):
        (tmp_path / name).write_bytes(b"half a file")
    _stop_before_training(monkeypatch)
    with pytest.raises(RuntimeError, match="stopped"):
        _run(tmp_path)
    assert not list(tmp_path.glob("*.tmp"))


# ------------------------------------------------------------------ compare says what it does
def test_compare_plan_reuses_resumes_redoes(tmp_path):
    n = len(gaussian_benchmark(3, 3, 12, 48, seed=3))
    assert plan(_cfg(), tmp_path / "m", n)[0] == "runs"
    _run(tmp_path / "m", n_tasks=2)
    assert plan(_cfg(), tmp_path / "m", n) == ("resumes", "its checkpoint holds 2 of 3 tasks with the same "
                                                          "configuration")
    assert plan(_cfg(), tmp_path / "m", 2)[0] == "reuses"
    action, why = plan(_cfg(seed=4), tmp_path / "m", n)
    assert action == "redoes" and "another configuration" in why
    (tmp_path / "m" / CHECKPOINT).unlink()
    action, why = plan(_cfg(), tmp_path / "m", n)
    assert action == "redoes" and "no checkpoint" in why


def test_compare_reports_a_damaged_checkpoint_instead_of_retraining(tmp_path):
    ckpt = tmp_path / "packnet" / CHECKPOINT
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    said: list[str] = []
    with pytest.raises(CheckpointError, match="damaged"):
        compare("digits", ["packnet"], tmp_path, overrides={"train": {"epochs": 1}}, progress=False, plots=False,
                say=said.append)
    assert ckpt.read_bytes().endswith(b"garbage")  # not replaced by a retrained run
    assert not (tmp_path / "packnet" / "results.json").exists()


# ------------------------------------------------------------------ a full disk
def _disk_fills_at_write(monkeypatch, n: int, how: str):
    """The ``n``-th checkpoint write (1-based) fails as a full disk does: safetensors' error,
    or a plain ``OSError(ENOSPC)`` (both seen on a small tmpfs)."""
    import errno

    import unforget.checkpoint as ckpt

    real, calls = ckpt.save_file, []

    def save_file(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == n:
            Path(filename).write_bytes(b"partial")  # what a full disk leaves behind
            if how == "safetensors":
                raise RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                                   "message: \"No space left on device\" })")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(ckpt, "save_file", save_file)


@pytest.mark.parametrize("how", ["safetensors", "oserror"])
def test_a_full_disk_is_one_line_and_the_last_task_is_safe(tmp_path, monkeypatch, how):
    from unforget.errors import DiskFullError
    from unforget.learner import Learner

    out = tmp_path / "r"
    _disk_fills_at_write(monkeypatch, 2, how)
    with pytest.raises(DiskFullError) as e:
        _run(out, n_tasks=3)
    msg = str(e.value)
    assert "\n" not in msg and "no space left" in msg and str(out) in msg and "--resume" in msg
    assert not list(out.glob("*.tmp"))  # the partial file is gone, giving the space back
    assert Learner.open(out).n_learned == 1  # task 1's checkpoint is whole
    monkeypatch.undo()
    resumed = _run(out, n_tasks=3, resume=True)
    assert resumed["accuracy_matrix"] == _run(tmp_path / "whole", n_tasks=3)["accuracy_matrix"]


def test_a_full_disk_on_the_command_line_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    import errno

    import unforget.atomic as atomic

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(atomic.Path, "write_bytes", lambda self, data: full(self, data))
    err = _cli_err(capsys, ["run", "-q", "--epochs", "1", "--out", str(tmp_path / "r")])
    assert "no space left on the disk holding" in err and "intact" in err


# ------------------------------------------------------------------ logs of abandoned attempts
def _log_rows(out: Path) -> list[tuple]:
    import csv

    with open(out / "log.csv", newline="") as f:
        return [(r["task"], r["phase"], r["desc"], r["epoch"]) for r in csv.DictReader(f)]


def test_a_resumed_run_logs_what_an_uninterrupted_one_does(tmp_path, monkeypatch):
    import unforget.training.trainer as trainer_mod

    real = trainer_mod.Trainer.fit

    def dies_in_task_3(self, model, task, *args, **kwargs):
        stats = real(self, model, task, *args, **kwargs)
        if task.id == 3:  # after task 3's first fit was logged
            raise RuntimeError("killed")
        return stats

    monkeypatch.setattr(trainer_mod.Trainer, "fit", dies_in_task_3)
    with pytest.raises(RuntimeError, match="killed"):
        _run(tmp_path / "r", n_tasks=4)
    assert {row[0] for row in _log_rows(tmp_path / "r")} == {"1", "2", "3"}
    monkeypatch.undo()
    _run(tmp_path / "r", n_tasks=4, resume=True)
    _run(tmp_path / "whole", n_tasks=4)
    assert _log_rows(tmp_path / "r") == _log_rows(tmp_path / "whole")


# ------------------------------------------------------------------ learn mixed with --resume
def test_resume_refuses_a_folder_whose_tasks_are_not_the_benchmarks(tmp_path):
    """A run stopped after task 2, then `unforget learn` (task 3 = the npz), then `--resume`: the
    benchmark's task 3 was never learned, and resuming would test the npz task's head on the
    benchmark's task 3. Refused in one line, nothing written."""
    import numpy as np

    from unforget.lifelong import learn_task

    out = tmp_path / "r"
    _run(out, n_tasks=2)
    g = np.random.default_rng(0)
    np.savez(tmp_path / "t.npz", x_train=g.normal(size=(48, 12)).astype(np.float32), y_train=np.arange(48) % 3,
             x_test=g.normal(size=(24, 12)).astype(np.float32), y_test=np.arange(24) % 3)
    learn_task(out, tmp_path / "t.npz", progress=False, say=lambda _: None)
    before = (out / "results.json").read_bytes(), (out / CHECKPOINT).read_bytes()
    with pytest.raises(RunFolderError, match=r"task 3 in .* is 't' \(added by `unforget learn` from .*t.npz\), but "
                                             r"task 3 of toy is 'toy-t3'.*unforget learn"):
        _run(out, n_tasks=4, resume=True)
    assert ((out / "results.json").read_bytes(), (out / CHECKPOINT).read_bytes()) == before


def test_the_checkpoint_is_the_truth_when_results_json_lags(tmp_path, monkeypatch, capsys):
    """A kill between the checkpoint's rename and results.json's leaves one more task in the
    checkpoint; `report` (and `learn`, `--resume`) rebuild results.json and report.md from it."""
    from unforget.cli import main

    real, calls = learner_mod.write_results, []

    def dies_before_results_of_task_3(out, results):
        calls.append(len(results["accuracy_matrix"]))
        if len(results["accuracy_matrix"]) == 3:
            raise RuntimeError("killed")
        return real(out, results)

    monkeypatch.setattr(learner_mod, "write_results", dies_before_results_of_task_3)
    out = tmp_path / "r"
    with pytest.raises(RuntimeError, match="killed"):
        _run(out, n_tasks=4)
    monkeypatch.undo()
    assert len(json.loads((out / "results.json").read_text())["accuracy_matrix"]) == 2  # lags the checkpoint
    assert main(["report", str(out), "--no-plots"]) == 0
    assert "rebuilt from the checkpoint" in capsys.readouterr().out
    rebuilt = json.loads((out / "results.json").read_text())
    assert len(rebuilt["accuracy_matrix"]) == 3 and "| T3 |" in (out / "report.md").read_text()
    finished = _run(out, n_tasks=4, resume=True)
    assert finished["accuracy_matrix"] == _run(tmp_path / "whole", n_tasks=4)["accuracy_matrix"]


def test_the_checkpoint_is_written_with_the_users_umask_not_private(tmp_path):
    """Issue 26, item 9: colleagues who may read the run folder may read its checkpoint too."""
    import os

    from unforget.cli import main as cli_main

    old = os.umask(0o022)
    try:
        assert cli_main(["run", "-q", "--epochs", "1", "--out", str(tmp_path / "r")]) == 0
    finally:
        os.umask(old)
    for name in ("checkpoint.safetensors", "results.json"):
        assert (tmp_path / "r" / name).stat().st_mode & 0o777 == 0o644, name


def test_a_run_that_fails_before_its_first_task_leaves_no_folder_behind(tmp_path, monkeypatch):
    """Issue 26, item 8: no `.lock` and `log.csv` header left in a folder that holds no run."""
    from unforget.cli import main as cli_main
    from unforget.learner import Learner

    def broken(self, *a, **k):
        raise ValueError("simulated failure in task 1")

    monkeypatch.setattr(Learner, "learn", broken)
    out = tmp_path / "m1"
    with pytest.raises(ValueError, match="simulated"):
        cli_main(["run", "-q", "--epochs", "1", "--out", str(out)])
    assert not out.exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    (existing / "notes.txt").write_text("the user's")
    with pytest.raises(ValueError, match="simulated"):
        cli_main(["run", "-q", "--epochs", "1", "--out", str(existing)])
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]
