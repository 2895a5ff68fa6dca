"""SupSup (Wortsman et al. 2020): fixed signed-constant weights, one top-density supermask per
task, nothing else shared trains; earlier tasks bit-identical, also after a reload."""
from __future__ import annotations

import math

import pytest
import torch

from synthetic import gaussian_benchmark
from unforget.config import RunConfig
from unforget.layers import norm_layers, weighted_layers
from unforget.learner import Learner
from unforget.runner import build_method, run


def _cfg(density=0.4, epochs=3, model="mlp", width=0.03, inference="one-shot"):
    return RunConfig.model_validate({"method": "supsup", "model": {"name": model, "width": width},
                                     "train": {"epochs": epochs, "batch_size": 16, "lr": 0.05},
                                     "methods": {"supsup": {"density": density, "score_lr": 0.01,
                                                            "inference": inference}}})


def test_supsup_learns_supermasks_over_fixed_signed_constant_weights():
    bench = gaussian_benchmark(3, 3, 12, 48, seed=8)
    m = build_method(_cfg(0.4), bench, progress=False)
    layers = [l for _, l in weighted_layers(m.model)]
    for l in layers:  # sign(w) * sqrt(2 / fan_in)
        std = math.sqrt(2.0 / l.weight[0].numel())
        assert torch.allclose(l.weight.abs(), torch.full_like(l.weight, std))
    w0 = [l.weight.detach().clone() for l in layers]
    probe = torch.randn(6, 12, generator=torch.Generator().manual_seed(2))
    outs = []
    for t in bench.tasks:
        rec = m.learn(t)
        outs.append(m.logits(probe, t.id))
        for l in layers:
            n = l.weight.numel()
            assert int(l.pick_mask(t.id).sum()) == n - int(0.6 * n)  # the SupSup code's top-k count
        assert rec["used_share"] == pytest_approx(0.4)
    assert all(torch.equal(l.weight, w) for l, w in zip(layers, w0))  # the weights never train
    assert all((l.owner == 0).all() for l in layers)  # no task owns a weight
    cap = m.capacity()
    for c, l in zip(cap.values(), layers):
        union = l.pick_mask(1) | l.pick_mask(2) | l.pick_mask(3)
        assert c["used_share"] == float(union.float().mean()) and c["owned"]["2"] == int(l.pick_mask(2).sum())
    for j in range(3):
        assert torch.equal(m.logits(probe, j + 1), outs[j])
    masks = [l.pick_mask(1) for l in layers]
    assert any(not torch.equal(l.pick_mask(2), mk) for l, mk in zip(layers, masks))  # each task its own mask
    for _, n in norm_layers(m.model):  # non-affine batch norm (none in an MLP, but the rule holds)
        for norm in n.norms.values():
            assert torch.equal(norm.weight, torch.ones_like(norm.weight))


def pytest_approx(v):
    import pytest

    return pytest.approx(v, abs=0.01)


def test_supsup_checkpoint_reloads_with_the_same_logits_and_size(tmp_path):
    bench = gaussian_benchmark(2, 3, n=32, seed=9, image=(3, 23, 23))
    res = run(_cfg(0.5, epochs=2, model="clnp_convnet_wide", width=1 / 32), benchmark=bench, out_dir=tmp_path / "run",
              progress=False)
    assert res["bwt"] == 0.0 and res["exact_method"] is True
    m = res["_learner"].method
    again = Learner.open(tmp_path / "run").method
    x = torch.randn(4, 3, 23, 23, generator=torch.Generator().manual_seed(0))
    for t in (1, 2):
        assert torch.equal(again.logits(x, t), m.logits(x, t))
    n = m.allocated_weights()
    assert res["model_size_bytes"] >= math.ceil(3 * n / 8)  # a sign bit and one mask bit per task for every weight
    norms = [bn for _, norm in norm_layers(m.model) for bn in norm.norms.values()]
    assert norms and all(torch.equal(bn.bias, torch.zeros_like(bn.bias)) and torch.equal(bn.weight, torch.ones_like(bn.weight))
                         for bn in norms)  # non-affine: only the running statistics are per task
    assert any(not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean)) for bn in norms)


def test_one_shot_task_inference_finds_the_task_of_a_batch(tmp_path):
    from unforget.evaluation.report import markdown_report

    bench = gaussian_benchmark(3, 3, 12, 96, seed=12)
    res = run(_cfg(0.5, epochs=6), benchmark=bench, progress=False)
    learner = res["_learner"]
    inf = res["tasks"][-1]["task_inference"]
    assert set(inf["per_task"]) == {"1", "2", "3"} and inf["batch_size"] == 128
    # well-separated tasks: the one-shot rule names the right task for every test batch here
    assert inf["accuracy"] == 1.0, inf
    model = learner.model
    x = bench.tasks[1].transform(bench.tasks[1].test.x)
    t, logits = model(x)
    assert t == 2 and torch.equal(logits, model(x, task=2))
    assert "task-id inference (one-shot" in markdown_report(res)
    # the rule itself: the task whose weight lowers the entropy most, from the gradient
    alphas = torch.full((3,), 1 / 3, requires_grad=True)
    p = learner.method.model.superposed_logits(x, alphas).softmax(-1)
    (g,) = torch.autograd.grad(-(p * p.clamp_min(1e-12).log()).sum(-1).mean(), alphas)
    assert int(torch.argmin(g)) + 1 == 2


def test_min_entropy_inference_picks_the_most_confident_task_model():
    bench = gaussian_benchmark(3, 3, 12, 96, seed=12)
    res = run(_cfg(0.5, epochs=6, inference="min-entropy"), benchmark=bench, progress=False)
    inf = res["tasks"][-1]["task_inference"]
    assert inf["rule"] == "min-entropy" and inf["accuracy"] == 1.0, inf
    m = res["_learner"].method
    x = bench.tasks[2].transform(bench.tasks[2].test.x[:40])
    ent = []
    for t in (1, 2, 3):  # the rule itself: each task's own model, lowest mean entropy / log C
        p = m.logits(x, t).softmax(-1)
        ent.append(float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean()) / math.log(3))
    t, logits = m.infer_task(x)
    assert t == 1 + ent.index(min(ent)) and torch.equal(logits, m.logits(x, t))
    with pytest.raises(ValueError, match="unknown task-inference rule"):
        m.infer_task(x, "oracle")


def test_task_inference_needs_heads_of_one_size():
    """The one-shot rule superposes the heads, so they must have one size; min-entropy does not."""
    import dataclasses

    bench = gaussian_benchmark(2, 3, 12, 32, seed=1)
    bench.tasks[1] = dataclasses.replace(bench.tasks[1], classes=["a", "b"], train=bench.tasks[1].train)
    for split in ("train", "val", "test"):
        s = getattr(bench.tasks[1], split)
        keep = s.y < 2
        setattr(bench.tasks[1], split, type(s)(s.x[keep], s.y[keep]))
    res = run(_cfg(0.5, epochs=1), benchmark=bench, progress=False)
    assert "same number of classes" in res["tasks"][-1]["task_inference"]["error"]
    res = run(_cfg(0.5, epochs=1, inference="min-entropy"), benchmark=bench, progress=False)
    assert res["tasks"][-1]["task_inference"]["accuracy"] is not None
