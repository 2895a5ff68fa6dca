"""Lifelong use (issue 11): a model trained by a run learns more tasks later, in fresh
processes, from data the run never saw; earlier tasks answer exactly as before."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import unforget
from synthetic import gaussian_benchmark
from unforget.config import RunConfig
from unforget.errors import DataError, RunFolderError
from unforget.lifelong import learn_task
from unforget.runner import run

DIM = 12


def _npz(path, seed: int, n_classes: int = 3):
    g = np.random.default_rng(seed)
    centers = g.normal(size=(n_classes, DIM)) * 2.0

    def split(n):
        y = np.arange(n) % n_classes
        return (centers[y] + g.normal(size=(n, DIM))).astype(np.float32), y

    xtr, ytr = split(60)
    xte, yte = split(30)
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte, classes=np.array([f"k{c}" for c in range(3)]))
    return path


def _learn_in_fresh_process(out, data, name):
    code = f"import sys; from unforget.cli import main; sys.exit(main(['learn', {str(out)!r}, '--data', {str(data)!r}, " \
           f"'--name', {name!r}, '-q']))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("method", ["cpg", "packnet"])
def test_learn_two_more_tasks_in_fresh_processes(tmp_path, method):
    opts = {"goal": "tolerance", "goal_tolerance": 0.5, "prune_interval": 0.4} if method == "cpg" else {}
    cfg = RunConfig.model_validate({"method": method, "model": {"name": "mlp", "width": 0.03},
                                    "train": {"epochs": 2, "batch_size": 16}, "methods": {method: opts}})
    out = tmp_path / "run"
    run(cfg, benchmark=gaussian_benchmark(2, 3, DIM, 48, seed=4), out_dir=out, progress=False)
    probe = torch.randn(7, DIM, generator=torch.Generator().manual_seed(0))
    before = unforget.load(out)
    recorded = {t: before(probe, task=t) for t in (1, 2)}

    said = _learn_in_fresh_process(out, _npz(tmp_path / "third.npz", 1), "third")
    assert "2 tasks learned, learning task 3 (third)" in said
    _learn_in_fresh_process(out, _npz(tmp_path / "fourth.npz", 2), "fourth")

    after = unforget.load(out)
    assert after.task_ids == [1, 2, 3, 4] and [t["name"] for t in after.tasks][2:] == ["third", "fourth"]
    for t in (1, 2):
        assert torch.equal(after(probe, task=t), recorded[t]), f"task {t} changed"
    res = json.loads((out / "results.json").read_text())
    R = res["accuracy_matrix"]
    # the toy benchmark cannot be rebuilt from disk: tasks 1-2 are not re-evaluated (null), never invented;
    # task 3 is re-read from its file and, the method being exact, scores what it scored when learned
    assert R[2][:2] == [None, None] and R[3][:2] == [None, None]
    assert R[3][2] == R[2][2] and all(0.0 <= v <= 1.0 for v in (R[2][2], R[3][2], R[3][3]))
    assert res["tasks"][2]["classes"] == ["k0", "k1", "k2"] and res["tasks"][3]["source"]["path"].endswith("fourth.npz")
    assert res["checkpoint_bytes"] == (out / "checkpoint.safetensors").stat().st_size

    # ship task 3 (learned by `learn`) as TorchScript: runs without unforget, same logits
    from unforget.cli import main

    ts = tmp_path / "task3.pt"
    assert main(["export", str(out), "--task", "3", "--format", "torchscript", "--out", str(ts)]) == 0
    files = {"unforget.json": ""}
    shipped = torch.jit.load(str(ts), _extra_files=files)
    assert json.loads(files["unforget.json"])["classes"] == ["k0", "k1", "k2"]
    with torch.no_grad():
        assert torch.allclose(shipped(probe), after(probe, task=3), rtol=0, atol=1e-6)


def test_learn_refuses_what_does_not_fit(tmp_path):
    cfg = RunConfig.model_validate({"method": "packnet", "model": {"name": "mlp", "width": 0.03},
                                    "train": {"epochs": 1, "batch_size": 16}})
    out = tmp_path / "run"
    with pytest.raises(RunFolderError, match="no trained model"):
        learn_task(tmp_path, tmp_path / "x.npz", progress=False)
    run(cfg, benchmark=gaussian_benchmark(1, 3, DIM, 48, seed=4), out_dir=out, progress=False)
    wrong = tmp_path / "wide.npz"
    np.savez(wrong, x_train=np.zeros((6, DIM + 1), np.float32), y_train=np.arange(6) % 2,
             x_test=np.zeros((2, DIM + 1), np.float32), y_test=np.arange(2))
    with pytest.raises(DataError):
        learn_task(out, wrong, progress=False)
    with pytest.raises(DataError, match="not images"):
        learn_task(out, tmp_path, progress=False)
    with pytest.raises(DataError, match="no task data"):
        learn_task(out, tmp_path / "absent.npz", progress=False)
    assert unforget.load(out).task_ids == [1]  # nothing was written


def test_learning_the_same_data_twice_needs_again(tmp_path):
    """A retry after a `learn` that was stopped once its checkpoint was written must not learn
    the same data a second time without being asked (issue 29, item 2)."""
    from unforget.errors import RunFolderError
    from unforget.lifelong import learn_task

    cfg = RunConfig.model_validate({"method": "packnet", "model": {"name": "mlp", "width": 0.03},
                                    "train": {"epochs": 1, "batch_size": 16}})
    out = tmp_path / "run"
    run(cfg, benchmark=gaussian_benchmark(2, 3, DIM, 48, seed=4), out_dir=out, progress=False)
    data = _npz(tmp_path / "third.npz", 1)
    learn_task(out, data, progress=False, say=lambda _: None)
    before = (out / "checkpoint.safetensors").read_bytes()
    with pytest.raises(RunFolderError, match=r"is task 3's \('third'\), learned already.*--again"):
        learn_task(out, data, progress=False, say=lambda _: None)
    assert (out / "checkpoint.safetensors").read_bytes() == before  # nothing learned, nothing written
    res = learn_task(out, data, progress=False, say=lambda _: None, again=True)
    assert len(res["accuracy_matrix"]) == 4 and res["tasks"][3]["data_digest"] == res["tasks"][2]["data_digest"]


def _image_folder_run(tmp_path, n_later: int):
    """A 2-task packnet run on image folders in ``tmp_path/seq``, and ``n_later`` more task
    folders (``t3``, ...) in ``tmp_path/myimages`` for ``learn``; returns ``(run, seq, data)``."""
    from test_data_custom import make_tree
    from unforget.cli import main

    names = [f"t{i}" for i in range(1, 3 + n_later)]
    spec = {f"{t}/{split}/{c}": (8 if split == "train" else 3) for t in names
            for split in ("train", "test") for c in ("a", "b")}
    data = make_tree(tmp_path / "myimages", spec)
    seq = tmp_path / "seq"
    seq.mkdir()
    for t in ("t1", "t2"):
        (data / t).rename(seq / t)
    run = tmp_path / "run"
    assert main(["run", "-q", "--benchmark", "image-folder", "--data-root", str(seq), "--method", "packnet",
                 "--epochs", "1", "--out", str(run)]) == 0
    return run, seq, data


def test_learn_retests_earlier_tasks_from_the_folder_the_run_recorded(tmp_path, capsys):
    """Issue 26, item 3: `learn` without --data-root finds the run's image folders where the
    run recorded them, so average accuracy and BWT stay defined."""
    from unforget.cli import main

    run, _, data = _image_folder_run(tmp_path, 1)
    capsys.readouterr()
    assert main(["learn", str(run), "--data", str(data / "t3")]) == 0
    out = capsys.readouterr().out
    assert "earlier tasks re-evaluated: 2 of 2" in out and "not re-evaluated" not in out
    res = json.loads((run / "results.json").read_text())
    assert all(v is not None for v in res["accuracy_matrix"][-1]) and res["average_accuracy"] is not None


def test_a_row_left_empty_by_unreachable_data_is_filled_once_the_data_is_back(tmp_path, capsys):
    """Issue 26, item 3: `learn` while the run's data was away left R[3][1..2] empty; a later
    `learn` with the data back fills them from the certificates (an exact method's earlier task
    is unchanged, so R[3][j] = R[j][j]), and BWT is defined again."""
    from unforget.cli import main

    run, seq, data = _image_folder_run(tmp_path, 2)
    seq.rename(tmp_path / "away")
    assert main(["learn", str(run), "--data", str(data / "t3")]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["accuracy_matrix"][2][:2] == [None, None] and res["bwt"] is None
    (tmp_path / "away").rename(seq)
    assert main(["learn", str(run), "--data", str(data / "t4")]) == 0
    res = json.loads((run / "results.json").read_text())
    R = res["accuracy_matrix"]
    assert R[2][:2] == [R[0][0], R[1][1]] and all(v is not None for row in R for v in row)
    assert res["bwt"] is not None and res["tasks"][2]["certified_later"] == [1, 2]
