"""design.md "Run folders are precious": a run SIGKILLed right after the checkpoint of task k
and resumed ends with what a run never interrupted ends with: the same accuracy matrix, the
same results.json numbers (times aside) and bit-identical checkpoint tensors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unforget.checkpoint import CHECKPOINT, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import os, signal, sys, torch
torch.set_num_threads({threads})
sys.path[:0] = [{src!r}, {tests!r}]
from synthetic import gaussian_benchmark
import unforget.learner as learner
import unforget.runner as runner
from unforget.config import RunConfig

kill_after = {kill_after}
real_save = learner.save_checkpoint

def save_then_die(path, tensors, meta):  # a real SIGKILL right after task k's checkpoint is on disk
    out = real_save(path, tensors, meta)
    if len(meta["records"]) == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
    return out

learner.save_checkpoint = save_then_die
cfg = RunConfig.model_validate({cfg!r})
runner.run(cfg, benchmark=gaussian_benchmark(5, 3, 12, 48, seed=11), out_dir={out!r}, resume={resume},
           progress=False)
"""


OPTIONS = {"cpg": {"goal": "fine-avg", "goal_repeats": 2},  # fine-tune chains with their own random streams
           "ewc": {"lambda": 10.0}, "clnp": {}}
METHODS = list(OPTIONS)


def _cfg(method: str) -> dict:
    return {"method": method, "model": {"name": "mlp", "width": 0.03}, "train": {"epochs": 2, "batch_size": 16},
            "methods": {method: OPTIONS[method]}}


def _run(method: str, out: Path, kill_after: int = 0, resume: bool = False) -> int:
    code = SCRIPT.format(threads=torch.get_num_threads(), src=str(ROOT / "src"), tests=str(ROOT / "tests"),
                         kill_after=kill_after, cfg=_cfg(method), out=str(out), resume=resume)
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": "1"}).returncode


def _timeless(x):
    """``x`` without wall-clock times (keys ending in ``time_s`` or ``_seconds``) and the checkpoint's file size
    (its header records those times, whose digits vary in number)."""
    if isinstance(x, dict):
        return {k: _timeless(v) for k, v in x.items() if not k.endswith(("time_s", "_seconds")) and k != "checkpoint_bytes"}
    if isinstance(x, list):
        return [_timeless(v) for v in x]
    return x


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    runs = {}
    for method in METHODS:
        out = tmp_path_factory.mktemp(f"full-{method}")
        assert _run(method, out) == 0
        runs[method] = out
    return runs



@pytest.mark.parametrize("kill_after", [2, 4])
@pytest.mark.parametrize("method", METHODS)
def test_killed_and_resumed_run_is_bit_identical(tmp_path, uninterrupted, method, kill_after):
    out = tmp_path / "run"
    assert _run(method, out, kill_after=kill_after) == -signal.SIGKILL
    _, meta = load_checkpoint(out / CHECKPOINT)
    assert len(meta["records"]) == kill_after  # it died after task k's checkpoint, before the end
    assert _run(method, out, resume=True) == 0
    full = uninterrupted[method]
    want, got = (json.loads((d / "results.json").read_text()) for d in (full, out))
    assert len(got["accuracy_matrix"]) == 5
    assert got["accuracy_matrix"] == want["accuracy_matrix"]
    assert _timeless(got) == _timeless(want)
    (t_want, m_want), (t_got, m_got) = (load_checkpoint(d / CHECKPOINT) for d in (full, out))
    assert sorted(t_got) == sorted(t_want)
    for k in t_want:
        assert t_got[k].dtype == t_want[k].dtype and torch.equal(t_got[k], t_want[k]), f"{k} differs after resume"
    assert _timeless(m_got) == _timeless(m_want)
    assert not list(out.glob("*.tmp"))
