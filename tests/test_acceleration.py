"""Device-speed options (``train.memory_format``, ``train.compile``) change how a fit computes,
never what the model holds: earlier tasks stay bit-identical and the model is contiguous after."""
from __future__ import annotations

import pytest
import torch

from synthetic import gaussian_benchmark
from unforget.config import RunConfig
from unforget.layers import weighted_layers
from unforget.runner import build_method
from unforget.training import acceleration


def _cfg(**train):
    return RunConfig.model_validate({"method": "cpg", "model": {"name": "vgg16_bn", "width": 0.0625},
                                     "train": {"epochs": 1, "batch_size": 16, **train},
                                     "methods": {"cpg": {"goal": "tolerance", "prune_interval": 0.5}}})


def test_channels_last_trains_in_nhwc_and_returns_contiguous_and_exact():
    bench = gaussian_benchmark(2, 3, n=48, seed=3, image=(3, 32, 32))
    m = build_method(_cfg(memory_format="channels_last"), bench, progress=False)
    first = next(l for _, l in weighted_layers(m.model))
    layouts: set = set()
    handle = first.register_forward_hook(
        lambda mod, inp, out: layouts.add((torch.is_grad_enabled(), mod.weight.is_contiguous(memory_format=torch.channels_last)
                                           and not mod.weight.is_contiguous())))
    probe = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    m.learn(bench.tasks[0])
    before = m.logits(probe, 1)
    m.learn(bench.tasks[1])
    handle.remove()
    assert (True, True) in layouts  # training steps saw NHWC weights
    assert (False, True) not in layouts  # evaluation never did
    assert all(l.weight.is_contiguous() and l.owner.is_contiguous() for _, l in weighted_layers(m.model))
    assert torch.equal(m.logits(probe, 1), before)


def test_auto_layout_is_contiguous_on_cpu_and_for_mlps():
    conv = build_method(_cfg(), gaussian_benchmark(1, 2, n=8, image=(3, 32, 32)), progress=False).model
    assert acceleration.training_layout(conv, "auto", torch.device("cpu")) == torch.contiguous_format
    assert acceleration.training_layout(conv, "auto", torch.device("cuda")) == torch.channels_last
    mlp = torch.nn.Linear(3, 2)
    assert acceleration.training_layout(mlp, "channels_last", torch.device("cuda")) == torch.contiguous_format


def _first_task_compiled(cfg, bench):
    """The method of ``cfg`` after learning task 1 under compile (skips when this machine cannot
    compile), a probe batch, and task 1's logits on it."""
    m = build_method(cfg, bench, progress=False)
    probe = torch.randn(5, 12, generator=torch.Generator().manual_seed(2))
    try:
        m.learn(bench.tasks[0])
    except acceleration.CompileError as e:  # e.g. no C++ compiler on this machine
        pytest.skip(str(e))
    return m, probe, m.logits(probe, 1)


def test_compile_trains_through_dynamo_and_keeps_earlier_tasks_exact():
    pytest.importorskip("torch._dynamo")
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    bench = gaussian_benchmark(2, 3, 12, 32, seed=4)
    cfg = RunConfig.model_validate({"method": "packnet", "model": {"name": "mlp", "width": 0.02},
                                    "train": {"epochs": 1, "batch_size": 16, "compile": True}})
    m, probe, before = _first_task_compiled(cfg, bench)
    m.learn(bench.tasks[1])
    assert sum(counters["stats"].values()) > 0 and counters["stats"]["unique_graphs"] > 0  # dynamo captured graphs
    assert torch.equal(m.logits(probe, 1), before)


def test_a_compile_failure_is_one_clear_error(monkeypatch):
    from torch._dynamo.exc import Unsupported

    class Broken(torch.nn.Module):
        def __init__(self, net, mode="default"):
            super().__init__()
            self.net = net

        def forward(self, *a):
            raise Unsupported("generated failure")

    monkeypatch.setattr(acceleration, "compiled", Broken)
    bench = gaussian_benchmark(1, 2, 8, 16)
    cfg = RunConfig.model_validate({"method": "scratch", "model": {"name": "mlp", "width": 0.02},
                                    "train": {"epochs": 1, "batch_size": 8, "compile": True}})
    m = build_method(cfg, bench, progress=False)
    with pytest.raises(acceleration.CompileError, match="without --compile"):
        m.learn(bench.tasks[0])


def test_compile_makes_no_graph_break_and_no_recompile_within_a_cpg_task(monkeypatch):
    """Issue 23, item 4: the task of a call is a constant of the trace (no ContextVar graph
    break), the layers' mask caches are bypassed while tracing (no guard on their contents), so
    a CPG task compiles one graph per set of trainable tensors and reuses it across epochs and
    every step of the compaction ladder; a later task drops the earlier task's graphs."""
    pytest.importorskip("torch._dynamo")
    from torch._dynamo.utils import counters
    from unforget.training.trainer import Trainer

    torch._dynamo.reset()
    counters.clear()
    added: list = []
    fit = Trainer._fit

    def counted(self, model, task, *a):
        before = counters["stats"]["unique_graphs"]
        out = fit(self, model, task, *a)
        added.append((task.id, a[3], counters["stats"]["unique_graphs"] - before))  # a[3]: desc
        return out

    monkeypatch.setattr(Trainer, "_fit", counted)
    bench = gaussian_benchmark(3, 3, 12, 40, seed=4)
    cfg = RunConfig.model_validate({"method": "cpg", "model": {"name": "mlp", "width": 0.02},
                                    "train": {"epochs": 2, "batch_size": 16, "compile": True},
                                    "methods": {"cpg": {"goal": "tolerance", "prune_interval": 0.2}}})
    m, probe, before = _first_task_compiled(cfg, bench)
    m.learn(bench.tasks[1])
    m.learn(bench.tasks[2])
    assert not counters["graph_break"], dict(counters["graph_break"])
    compaction = [(t, g) for t, desc, g in added if desc.startswith("compact")]
    assert len(compaction) >= 4, added  # the ladder ran several steps
    for t in (2, 3):
        fits = [g for task, _, g in added if task == t]
        assert sum(fits) <= 2, added  # one graph with trainable picks, one with them frozen
        steps = [g for task, g in compaction if task == t]
        assert steps and all(g == 0 for g in steps[1:]), added  # the ladder reuses its graph
    assert torch.equal(m.logits(probe, 1), before)


def test_compile_mode_reaches_torch_compile_from_the_command_line(monkeypatch, tmp_path):
    from unforget.cli import main

    seen: list = []

    def fake_compile(net, **kw):
        seen.append(kw)
        return net

    monkeypatch.setattr(torch, "compile", fake_compile)
    assert main(["run", "-q", "--method", "scratch", "--epochs", "1", "--compile-mode", "reduce-overhead",
                 "--out", str(tmp_path)]) == 0
    assert seen and all(kw == {"mode": "reduce-overhead", "dynamic": False} for kw in seen), seen
