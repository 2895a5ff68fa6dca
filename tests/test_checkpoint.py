"""design.md invariant 4: a checkpoint reloaded in a fresh process reproduces every task's logits
bit for bit; checkpoints are atomic safetensors files and ``--resume`` continues a run."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import unforget
from synthetic import gaussian_benchmark
from unforget.checkpoint import CHECKPOINT, DIGEST_KEY, META_KEY, digest, load_checkpoint, save_checkpoint
from unforget.config import RunConfig
from unforget.errors import CheckpointError, UnforgetError
from unforget.runner import run

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys, torch
torch.set_num_threads({threads})  # same intra-op threads as the parent: same reduction order
sys.path[:0] = [{src!r}, {tests!r}]
import unforget
from synthetic import gaussian_benchmark
from unforget.checkpoint import load_checkpoint
from unforget.config import RunConfig
from unforget.runner import build_method
tensors, meta = load_checkpoint({ckpt!r})
bench = gaussian_benchmark(3, 3, 12, 48, seed=7)
method = build_method(RunConfig.model_validate(meta["config"]), bench, progress=False)
method.load_state(tensors, meta["method"])
probe = torch.load({probe!r})
torch.save({{t: method.logits(probe, t) for t in (1, 2, 3)}}, {out!r})
"""


def _cfg(method: str) -> RunConfig:
    opts = {"goal": "explicit", "goals": [0.0, 1.0, 0.0], "prune_interval": 0.4} \
        if method in ("cpg", "pae") else {}
    return RunConfig.model_validate({"method": method, "model": {"name": "mlp", "width": 0.03},
                                     "train": {"epochs": 2, "batch_size": 16}, "methods": {method: opts}})


@pytest.mark.parametrize("method", ["cpg", "pae", "packnet", "piggyback", "scratch", "finetune", "finetune-copies"])
def test_checkpoint_reproduces_logits_in_fresh_process(tmp_path, method):
    bench = gaussian_benchmark(3, 3, 12, 48, seed=7)
    res = run(_cfg(method), benchmark=bench, out_dir=tmp_path, progress=False)
    m = res["_learner"].method
    probe = torch.randn(6, 12, generator=torch.Generator().manual_seed(1))
    expected = {t: m.logits(probe, t) for t in (1, 2, 3)}
    torch.save(probe, tmp_path / "probe.pt")
    code = SCRIPT.format(threads=torch.get_num_threads(), src=str(ROOT / "src"), tests=str(ROOT / "tests"), ckpt=str(tmp_path / CHECKPOINT),
                         probe=str(tmp_path / "probe.pt"), out=str(tmp_path / "out.pt"))
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONHASHSEED": "1"})
    got = torch.load(tmp_path / "out.pt")
    for t in (1, 2, 3):
        assert torch.equal(got[t], expected[t]), f"task {t} logits differ after reload"
    results = json.loads((tmp_path / "results.json").read_text())
    for key in ("benchmark", "method", "config", "tasks", "accuracy_matrix", "average_accuracy", "bwt",
                "model_size_bytes", "expansion_ratio", "released_ratio", "wall_time_s"):
        assert key in results
    for t in results["tasks"]:
        for key in ("name", "classes", "accuracy_goal", "pruning_ratio", "width", "train_time_s"):
            assert key in t
    assert [len(r) for r in results["accuracy_matrix"]] == [1, 2, 3]
    if method != "finetune":
        assert results["bwt"] == 0.0


def test_resume_continues_from_last_finished_task(tmp_path):
    bench = gaussian_benchmark(3, 3, 12, 48, seed=8)
    full = run(_cfg("cpg"), benchmark=bench, out_dir=tmp_path / "full", progress=False)
    short = gaussian_benchmark(3, 3, 12, 48, seed=8)
    short.tasks = short.tasks[:2]
    run(_cfg("cpg"), benchmark=short, out_dir=tmp_path / "part", progress=False)
    resumed = run(_cfg("cpg"), benchmark=bench, out_dir=tmp_path / "part", resume=True, progress=False)
    assert resumed["accuracy_matrix"] == full["accuracy_matrix"]
    assert len(resumed["tasks"]) == 3


def test_resume_refuses_other_config(tmp_path):
    bench = gaussian_benchmark(2, 3, 12, 48, seed=8)
    run(_cfg("packnet"), benchmark=bench, out_dir=tmp_path, progress=False)
    other = _cfg("packnet").model_copy(update={"seed": 5})
    with pytest.raises(UnforgetError, match="another configuration"):
        run(other, benchmark=bench, out_dir=tmp_path, resume=True, progress=False)


def test_checkpoint_atomic_and_damaged(tmp_path):
    p = save_checkpoint(tmp_path / "c.safetensors", {"a": torch.arange(4)}, {"x": 1})
    assert not (tmp_path / "c.safetensors.tmp").exists()
    t, meta = load_checkpoint(p)
    assert torch.equal(t["a"], torch.arange(4)) and meta == {"x": 1}
    p.write_bytes(p.read_bytes()[:20])
    with pytest.raises(UnforgetError, match="damaged"):
        load_checkpoint(p)
    with pytest.raises(UnforgetError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")


# ------------------------------------------------------------------ a damaged checkpoint is never used
@pytest.fixture(scope="module")
def cpg_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cpg3")
    run(_cfg("cpg"), benchmark=gaussian_benchmark(3, 3, 12, 48, seed=8), out_dir=out, progress=False)
    return out


def _resume_err(cpg_run, tmp_path, damage) -> str:
    """Copy ``cpg_run``, damage the copy's checkpoint with ``damage(path)``, resume it and
    return the one-line CheckpointError it raises (also via ``unforget.load``)."""
    out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    shutil.copytree(cpg_run, out)
    damage(out / CHECKPOINT)
    with pytest.raises(CheckpointError) as e:
        run(_cfg("cpg"), benchmark=gaussian_benchmark(3, 3, 12, 48, seed=8), out_dir=out, resume=True,
            progress=False)
    with pytest.raises(CheckpointError):
        unforget.load(out)
    msg = str(e.value)
    assert "\n" not in msg and str(out / CHECKPOINT) in msg
    return msg


def _resave(edit):
    """A damage that edits ``(tensors, meta)`` in place and re-saves them with a valid digest."""
    def damage(path):
        tensors, meta = load_checkpoint(path)
        edit(tensors, meta)
        save_checkpoint(path, tensors, meta)
    return damage


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def test_flipped_bit_is_caught_by_the_digest(cpg_run, tmp_path):
    assert "digest does not match" in _resume_err(cpg_run, tmp_path, _flip_last_byte)


def test_metadata_without_digest_or_not_json(tmp_path):
    flat = {"a": torch.arange(3)}
    p = tmp_path / "c.safetensors"
    save_file(flat, str(p), metadata={META_KEY: "{}"})
    with pytest.raises(UnforgetError, match="no digest"):
        load_checkpoint(p)
    save_file(flat, str(p), metadata={META_KEY: "{not json", DIGEST_KEY: digest("{not json", flat)})
    with pytest.raises(UnforgetError, match="metadata is not JSON"):
        load_checkpoint(p)
    save_file(flat, str(p), metadata={META_KEY: "{}", DIGEST_KEY: digest("{}", {"a": torch.arange(4)})})
    with pytest.raises(UnforgetError, match="digest does not match"):
        load_checkpoint(p)


def test_missing_metadata_keys(cpg_run, tmp_path):
    msg = _resume_err(cpg_run, tmp_path, _resave(lambda t, m: m.pop("records")))
    assert "lacks records" in msg


def test_method_state_that_does_not_fit(cpg_run, tmp_path):
    msg = _resume_err(cpg_run, tmp_path, _resave(lambda t, m: m["method"].pop("heads")))
    assert "does not fit method 'cpg'" in msg and "KeyError" in msg


def _first(tensors, suffix):
    return next(k for k in sorted(tensors) if k.endswith(suffix))


def test_owner_outside_the_learned_tasks(cpg_run, tmp_path):
    def edit(t, m):
        t[_first(t, ".owner")].view(-1)[0] = 4
    assert "outside 0..3" in _resume_err(cpg_run, tmp_path, _resave(edit))


def test_pick_mask_over_weights_no_earlier_task_owns(cpg_run, tmp_path):
    def edit(t, m):
        name = _first(t, ".pick_2")
        owner = t[name.replace(".pick_2", ".owner")]
        t[name] = t[name] | (owner != 1)  # task 2 picks weights that are free or its own
    assert "picks weights that no earlier task owns" in _resume_err(cpg_run, tmp_path, _resave(edit))


def test_pick_mask_of_wrong_type_or_task(cpg_run, tmp_path):
    def as_float(t, m):
        name = _first(t, ".pick_2")
        t[name] = t[name].float()
    assert "not bool" in _resume_err(cpg_run, tmp_path, _resave(as_float))

    def unknown_task(t, m):
        name = _first(t, ".pick_2")
        t[name.replace(".pick_2", ".pick_7")] = t.pop(name)
    assert "not one of the learned tasks 2..3" in _resume_err(cpg_run, tmp_path, _resave(unknown_task))


def test_resume_restores_the_trainers_fit_counters(cpg_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(cpg_run, out)
    _, meta = load_checkpoint(out / CHECKPOINT)
    saved = {int(t): r for t, r in meta["trainer_rounds"].items()}
    assert sorted(saved) == [1, 2, 3] and all(r >= 1 for r in saved.values())
    res = run(_cfg("cpg"), benchmark=gaussian_benchmark(3, 3, 12, 48, seed=8), out_dir=out, resume=True,
              progress=False)
    assert res["_learner"].method.trainer._rounds == saved
