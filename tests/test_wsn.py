"""WSN (Kang et al. 2022) on the engine: each task uses the top-c share of |scores| per layer,
trains only weights no earlier task uses, and earlier tasks stay bit-identical -- also after a
reload in a fresh process."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from synthetic import gaussian_benchmark
from unforget.config import RunConfig
from unforget.layers import weighted_layers
from unforget.layers.masks import top_capacity_weight
from unforget.layers.policies import WSN_SCORES, kth_score
from unforget.runner import build_method, run


def _cfg(c=0.5, epochs=3):
    return RunConfig.model_validate({"method": "wsn", "model": {"name": "mlp", "width": 0.03},
                                     "train": {"epochs": epochs, "batch_size": 16, "lr": 0.05},
                                     "methods": {"wsn": {"capacity": c}}})


def test_top_capacity_gradients_reach_only_owned_selected_weights_and_all_scores():
    w = torch.randn(4, 5, requires_grad=True)
    s = torch.randn(4, 5, requires_grad=True)
    own = (torch.rand(4, 5) < 0.5).float()
    th = kth_score(s.detach().abs(), 0.4)
    out = top_capacity_weight(w, s, own, th, decay=0.1)
    m = (s.detach().abs() >= th).float()
    # k = 1 + round(0.6 * 19) = 12: the 12th smallest |score| and all above it (20 - 12 + 1 = 9), as the WSN code
    assert torch.equal(out, w.detach() * m) and int(m.sum()) == 9
    g = torch.randn(4, 5)
    out.backward(g)
    assert torch.allclose(w.grad, (g + 0.1 * w.detach()) * m * own)
    assert torch.allclose(s.grad, g * w.detach() * torch.sign(s.detach()))


def test_wsn_uses_capacity_trains_free_weights_only_and_stays_exact(tmp_path):
    bench = gaussian_benchmark(3, 3, 12, 48, seed=4)
    m = build_method(_cfg(0.5), bench, progress=False)
    layers = [l for _, l in weighted_layers(m.model)]
    probe = torch.randn(7, 12, generator=torch.Generator().manual_seed(0))
    outs, recs = [], []
    for t in bench.tasks:
        before = [(l.weight.detach().clone(), l.owner.clone()) for l in layers]
        recs.append(m.learn(t))
        outs.append([m.logits(probe, j) for j in range(1, t.id + 1)])
        for l, (w0, o0) in zip(layers, before):
            old = (o0 > 0) & (o0 < t.id)
            assert torch.equal(l.weight[old], w0[old])  # earlier tasks' weights never move
            n = l.weight.numel()
            assert abs(int(l.task_mask(t.id).sum()) - round(0.5 * n)) <= 1  # top-c share of this layer
        assert recs[-1]["used_share"] == pytest.approx(0.5, abs=0.01)
    for j in range(3):  # every earlier task's logits bit-identical after later tasks
        for later in outs[j:]:
            assert torch.equal(later[j], outs[j][j])
    with torch.no_grad():  # weights back in the free pool serve no task: changing them changes nothing
        for l in layers:
            free = l.owner == 0
            assert free.any()
            l.weight[free] = torch.randn(int(free.sum()))
    for j in range(3):
        assert torch.equal(m.logits(probe, j + 1), outs[j][j])
    assert any(int(l.pick_mask(2).sum()) > 0 for l in layers)  # task 2 reused task 1's weights


def test_wsn_run_reloads_in_a_fresh_process_with_the_same_logits(tmp_path):
    bench = gaussian_benchmark(2, 3, 12, 48, seed=6)
    res = run(_cfg(0.3, epochs=2), benchmark=bench, out_dir=tmp_path / "run", progress=False)
    assert res["bwt"] == 0.0 and res["exact_method"] is True
    probe = torch.randn(5, 12, generator=torch.Generator().manual_seed(1))
    torch.save(probe, tmp_path / "probe.pt")
    want = [res["_learner"].method.logits(probe, t) for t in (1, 2)]
    code = (f"import sys, torch; torch.set_num_threads({torch.get_num_threads()}); from unforget.learner import Learner; "
            f"m = Learner.open(r'{tmp_path / 'run'}').method; x = torch.load(r'{tmp_path / 'probe.pt'}'); "
            f"torch.save([m.logits(x, 1), m.logits(x, 2)], r'{tmp_path / 'out.pt'}')")
    subprocess.run([sys.executable, "-c", code], check=True)
    got = torch.load(tmp_path / "out.pt")
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    m = res["_learner"].method
    assert all(WSN_SCORES in l.scores for _, l in weighted_layers(m.model))  # kept for later tasks


def test_wsn_options_are_validated():
    from unforget.errors import ConfigError

    with pytest.raises(ConfigError, match="capacity"):
        build_method(_cfg(1.5), gaussian_benchmark(1, 2, 8, 8), progress=False)
