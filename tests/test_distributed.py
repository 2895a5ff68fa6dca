"""Distributed runs (issue 13): ``torchrun --nproc_per_node 2 -m unforget run`` on CPU with
gloo, started by the tests themselves. Every process must hold the same model after every task
(owner maps, pick masks, weights: one digest), BWT stays exactly 0, and the checkpoint process 0
wrote loads in one process with the very tensors both processes held."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from unforget import distributed

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="this PyTorch build has no gloo backend")


def _torchrun(tmp_path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "unforget", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


def _config(tmp_path) -> str:
    f = tmp_path / "small.yaml"
    f.write_text("model: {name: mlp, width: 0.05}\ntrain: {epochs: 2, batch_size: 16}\n"
                 "methods: {cpg: {goal: scratch, prune_epochs: 1, prune_interval: 0.3, retrain_epochs: 1}}\n")
    return str(f)


def test_two_processes_learn_the_same_model_and_the_checkpoint_serves_it(tmp_path):
    from unforget.data import build_benchmark
    from unforget.learner import Learner

    out = tmp_path / "run"
    p = _torchrun(tmp_path, "run", "-q", "--method", "cpg", "--config", _config(tmp_path), "--out", str(out))
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("## cpg on digits") == 1  # only process 0 prints
    res = json.loads((out / "results.json").read_text())
    d = res["distributed"]
    assert d["world_size"] == 2 and d["backend"] == "gloo"
    assert len(d["digests"]) == len(res["accuracy_matrix"]) == 5  # checked after every task
    assert res["bwt"] == 0.0 and res["average_accuracy"] > 0.8
    assert any(r["task"] == "5" for r in __import__("csv").DictReader(open(out / "log.csv")))
    # one process: the checkpoint holds the tensors both processes agreed on, and serves R
    learner = Learner.open(out)
    assert distributed.digest(learner.method.state()[0]) == d["digests"][-1]
    bench = build_benchmark("digits")
    assert [learner.test(t) for t in bench.tasks] == res["accuracy_matrix"][-1]


@pytest.mark.parametrize("method", ["ewc", "clnp", "wsn", "supsup", "hat"])
def test_methods_with_statistics_keep_the_processes_together(tmp_path, method):
    """EWC's Fisher information, CLNP's unit activations, the mask policies' scores (WSN,
    SupSup) and HAT's gates come out the same on both processes (the same-model check would stop
    the run otherwise)."""
    cfg = tmp_path / "m.yaml"
    cfg.write_text("model: {name: mlp, width: 0.05}\ntrain: {epochs: 1, batch_size: 16}\nmethods: {ewc: {lambda: 1.0}}\n")
    out = tmp_path / "run"
    p = _torchrun(tmp_path, "run", "-q", "--method", method, "--config", str(cfg), "--out", str(out))
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert len(res["distributed"]["digests"]) == 5


def test_an_unchecked_method_refuses(monkeypatch):
    from unforget.errors import ConfigError

    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    distributed.check_method("cpg")
    with pytest.raises(ConfigError, match="method 'mine' cannot run on 2 processes yet"):
        distributed.check_method("mine")


def _diverge(rank: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        same = {"w": torch.arange(6.0)}
        got = [distributed.check_same(same, "task 1")]
        try:
            distributed.check_same({"w": torch.arange(6.0) + rank * 1e-7}, "task 2")
            got.append("no error")
        except distributed.RanksDiverged as e:
            got.append(str(e))
        with open(f"{out}.{rank}", "w") as f:
            json.dump(got, f)
    finally:
        dist.destroy_process_group()


def test_the_processes_notice_when_their_models_differ(tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "got")
    mp.spawn(_diverge, args=(f"file://{tmp_path / 'pg'}", out), nprocs=2, join=True)
    for r in (0, 1):
        same, differ = json.loads(open(f"{out}.{r}").read())
        assert same == distributed.digest({"w": torch.arange(6.0)})
        assert "different models after task 2" in differ and "ranks [1]" in differ


def test_shards_cover_the_epoch_once_and_have_equal_length(monkeypatch):
    perm = torch.randperm(11, generator=torch.Generator().manual_seed(0))
    shards = []
    for r in range(3):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        monkeypatch.setattr(distributed, "world_size", lambda: 3)
        shards.append(distributed.shard(perm))
    assert {len(s) for s in shards} == {4}
    assert set(torch.cat(shards).tolist()) == set(perm.tolist())
    monkeypatch.setattr(distributed, "world_size", lambda: 1)
    assert torch.equal(distributed.shard(perm), perm)


def test_compare_on_two_processes_writes_one_report(tmp_path):
    out = tmp_path / "cmp"
    p = _torchrun(tmp_path, "compare", "-q", "--methods", "scratch,cpg", "--config", _config(tmp_path),
                  "--out", str(out))
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("method 2/2: cpg: runs") == 1  # process 0 speaks for both
    for m in ("scratch", "cpg"):
        res = json.loads((out / m / "results.json").read_text())
        assert res["distributed"]["world_size"] == 2 and len(res["distributed"]["digests"]) == 5
        assert res["bwt"] == 0.0
    assert "scratch" in (out / "report.md").read_text()
    again = _torchrun(tmp_path, "compare", "-q", "--methods", "scratch,cpg", "--config", _config(tmp_path),
                      "--out", str(out))
    assert again.returncode == 0 and again.stdout.count(": reuses (") == 2  # a finished comparison is reused
