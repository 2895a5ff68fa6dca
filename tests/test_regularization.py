"""EWC (Kirkpatrick et al. 2017) and SI (Zenke et al. 2017): the shared anchored quadratic
penalty, the importance estimates against hand computations on 2-parameter models, end-to-end
runs and checkpoints."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from synthetic import assert_same_logits, gaussian_benchmark, reload_via_checkpoint
from unforget.config import RunConfig
from unforget.errors import ConfigError
from unforget.methods.regularization import PathIntegral, empirical_fisher, quadratic_penalty
from unforget.models import MultiHeadNet, register_model
from unforget.runner import build_method, run


@register_model("test_linear2", "2-parameter backbone for hand computations (tests only)")
def _linear2(input_shape, width: float = 1.0) -> MultiHeadNet:
    """``features(x) = w . x`` with ``w`` of shape ``(1, 2)``: two shared parameters."""
    net = MultiHeadNet(1, "fc1")
    net.features = nn.Sequential(nn.Linear(2, 1, bias=False))
    net.groups_spec = {"features.0": ("fc1", None)}
    return net


def _config(method: str, model: str = "mlp", options: dict | None = None, **train) -> RunConfig:
    return RunConfig.model_validate({"method": method, "model": {"name": model, "width": 0.03},
                                     "train": {"epochs": 2, "batch_size": 16, **train},
                                     "methods": {method: options or {}}})


# ------------------------------------------------------------------ the shared penalty
def test_quadratic_penalty_zero_at_anchor_and_grows_with_distance():
    g = torch.Generator().manual_seed(0)
    anchor = {"a": torch.randn(3, 2, generator=g), "b": torch.randn(4, generator=g)}
    omega = {"a": torch.rand(3, 2, generator=g) + 0.1, "b": torch.rand(4, generator=g) + 0.1}
    assert float(quadratic_penalty(anchor, omega, anchor)) == 0.0
    d = {k: torch.randn(v.shape, generator=g) for k, v in anchor.items()}
    values = [float(quadratic_penalty({k: anchor[k] + e * d[k] for k in anchor}, omega, anchor))
              for e in (0.0, 0.1, 0.5, 1.0, 2.0)]
    assert values[0] == 0.0 and all(b > a for a, b in zip(values, values[1:]))
    expected = sum(float((omega[k] * d[k] ** 2).sum()) for k in anchor)
    assert values[3] == pytest.approx(expected, rel=1e-5) and values[4] == pytest.approx(4 * expected, rel=1e-5)


@pytest.mark.parametrize("method,strength", [("ewc", 50.0), ("si", 0.3)])
def test_method_penalty_zero_at_anchor_after_a_task(method, strength):
    bench = gaussian_benchmark(1, 3, 12, 48, seed=1)
    opts = {"lambda": 2 * strength} if method == "ewc" else {"c": strength}
    m = build_method(_config(method, options=opts), bench, progress=False)
    assert m.penalty() is None
    m.learn(bench.tasks[0])
    assert m.strength == strength
    assert float(m.penalty().detach()) == 0.0
    with torch.no_grad():
        for p in m.shared.values():
            p.add_(0.05)
    near = float(m.penalty().detach())
    with torch.no_grad():
        for p in m.shared.values():
            p.add_(0.05)
    assert float(m.penalty().detach()) == pytest.approx(4 * near, rel=1e-4) and near > 0
    grads = torch.autograd.grad(m.penalty(), list(m.shared.values()))
    for g, (n, expected) in zip(grads, m.penalty_grad().items()):
        assert torch.allclose(g, expected, rtol=1e-5, atol=1e-8)


def test_ewc_merged_anchor_has_the_gradient_of_one_penalty_per_task():
    """Kirkpatrick et al. 2017 sum one quadratic per earlier task; the merged form must have
    the same gradient everywhere."""
    bench = gaussian_benchmark(2, 3, 12, 48, seed=2)
    m = build_method(_config("ewc"), bench, progress=False)
    per_task = []
    for task in bench.tasks:
        m.learn(task)
        fisher = m.importance(task, [])
        per_task.append((fisher, {n: p.detach().clone() for n, p in m.shared.items()}))
    with torch.no_grad():
        for p in m.shared.values():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * 0.1)
    merged = torch.autograd.grad(m.penalty(), list(m.shared.values()))
    separate = torch.autograd.grad(sum(m.strength * quadratic_penalty(m.shared, f, a) for f, a in per_task),
                                   list(m.shared.values()))
    for a, b in zip(merged, separate):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------ importance vs. hand computation
class _TwoParam(nn.Module):
    """logits = (w1 x1 + w2 x2, 0)."""

    def __init__(self, w1: float, w2: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([w1, w2]))

    def forward(self, x, task):
        return torch.stack([x @ self.w, torch.zeros(len(x))], 1)


def test_empirical_fisher_matches_hand_computation():
    # w = (ln 3, 0). Sample 1: x = (1, 0), y = 0: p0 = 3/4, d log p0 / dw = x (1 - p0) = (1/4, 0).
    # Sample 2: x = (1, 1), y = 1: p0 = 3/4, d log p1 / dw = -x p0 = (-3/4, -3/4).
    # F = mean of squares = ((1/16 + 9/16) / 2, (0 + 9/16) / 2) = (5/16, 9/32).
    model = _TwoParam(math.log(3.0), 0.0)
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([0, 1])
    fisher = empirical_fisher(model, 1, x, y, {"w": model.w})
    assert torch.allclose(fisher["w"], torch.tensor([5 / 16, 9 / 32]), atol=1e-6)


def test_path_integral_matches_hand_computation():
    # Two SGD steps (lr 0.1) with gradients g1 = (1, -2), g2 = (0.5, 1): omega = lr (g1^2 + g2^2).
    p = nn.Parameter(torch.tensor([0.3, -0.2]))
    pi = PathIntegral({"p": p})
    for g in (torch.tensor([1.0, -2.0]), torch.tensor([0.5, 1.0])):
        p.grad = g.clone()
        pi.after_backward(None)
        with torch.no_grad():
            p -= 0.1 * p.grad
        pi.after_step(None)
    assert torch.allclose(pi.omega["p"], torch.tensor([0.1 * 1.25, 0.1 * 5.0]), atol=1e-6)
    # the penalty's own gradient is not part of the path integral
    q = nn.Parameter(torch.tensor([1.0]))
    pi = PathIntegral({"q": q}, penalty_grad=lambda: {"q": torch.tensor([3.0])})
    q.grad = torch.tensor([5.0])  # task gradient 2 + penalty gradient 3
    pi.after_backward(None)
    with torch.no_grad():
        q -= 0.5 * q.grad
    pi.after_step(None)
    assert torch.allclose(pi.omega["q"], torch.tensor([2.0 * 2.5]))


def test_si_and_ewc_importance_match_hand_computation_on_a_2_parameter_backbone():
    """Learn one task with full-batch SGD (no momentum, no weight decay) on the 2-parameter
    backbone, and recompute omega (SI) and the Fisher (EWC) by hand from the same trajectory."""
    bench = gaussian_benchmark(1, 3, 2, 24, seed=4)
    task = bench.tasks[0]
    lr, epochs = 0.2, 3
    train = {"epochs": epochs, "batch_size": 24, "lr": lr, "momentum": 0.0, "weight_decay": 0.0}
    si = build_method(_config("si", "test_linear2", {"xi": 0.1}, **train), bench, progress=False)
    ewc = build_method(_config("ewc", "test_linear2", {"fisher_samples": 1000}, **train), bench, progress=False)
    # the method's first draw from the global generator is its new head: replay it
    w0 = si.model.features[0].weight.detach().clone()
    rng = torch.get_rng_state()
    si.learn(task)
    head = si.model.heads["1"]
    torch.set_rng_state(rng)
    head0 = nn.Linear(1, 3)
    w, a, b = (t.detach().clone().requires_grad_(True) for t in (w0, head0.weight, head0.bias))
    x, y = task.train.x.float(), task.train.y
    omega = torch.zeros_like(w0)
    for _ in range(epochs):
        loss = F.cross_entropy((x @ w.t()) @ a.t() + b, y)
        gw, ga, gb = torch.autograd.grad(loss, [w, a, b])
        with torch.no_grad():
            omega += lr * gw ** 2
            w -= lr * gw
            a -= lr * ga
            b -= lr * gb
    assert torch.allclose(head.weight.detach(), a.detach(), atol=1e-5)
    assert torch.allclose(si.model.features[0].weight.detach(), w.detach(), atol=1e-5)
    delta = w.detach() - w0
    assert torch.allclose(si.omega["0.weight"], omega / (delta ** 2 + 0.1), rtol=1e-3, atol=1e-6)
    assert torch.equal(si.anchor["0.weight"], si.model.features[0].weight.detach())
    # EWC: Fisher of the learned model; for s = w . x, logits = A s + b,
    # d log p_y / dw = (A_y - sum_k p_k A_k) x
    ewc.learn(task)
    w, A, bb = (ewc.model.features[0].weight.detach()[0], ewc.model.heads["1"].weight.detach()[:, 0],
                ewc.model.heads["1"].bias.detach())
    s = x @ w
    p = torch.softmax(s[:, None] * A[None, :] + bb, 1)
    g = (A[y] - p @ A)[:, None] * x
    assert torch.allclose(ewc.omega["0.weight"][0], (g ** 2).mean(0), rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------ end to end
@pytest.mark.parametrize("method,options", [("ewc", {"lambda": 1000.0, "fisher_samples": 20}),
                                            ("si", {"c": 1.0, "xi": 0.1})])
def test_end_to_end_run_and_checkpoint(tmp_path, method, options):
    bench = gaussian_benchmark(3, 3, 12, 48, seed=5)
    cfg = _config(method, options=options)
    res = run(cfg, benchmark=bench, progress=False)
    m = res.pop("_learner").method
    json.dumps(res)
    assert res["exact_method"] is False and [len(r) for r in res["accuracy_matrix"]] == [1, 2, 3]
    assert res["bwt"] is not None and res["released_ratio"] is None
    assert set(m.omega) == set(m.shared)
    if method == "ewc":
        assert all(bool((v >= 0).all()) for v in m.omega.values())
    fresh = reload_via_checkpoint(m, cfg, bench, tmp_path / "ckpt.safetensors")
    assert_same_logits(fresh, m, (1, 2, 3), (12,))
    for n in m.omega:
        assert torch.equal(fresh.omega[n], m.omega[n]) and torch.equal(fresh.anchor[n], m.anchor[n])


def test_options():
    bench = gaussian_benchmark(1, 3, 12, 48, seed=6)
    assert build_method(_config("ewc", options={"lambda": 7.0}), bench, progress=False).options.ewc_lambda == 7.0
    assert build_method(_config("ewc", options={"ewc_lambda": 8.0}), bench, progress=False).options.ewc_lambda == 8.0
    si = build_method(_config("si"), bench, progress=False)
    assert si.options.xi == 0.1
    with pytest.raises(ConfigError):
        build_method(_config("si", options={"xi": 0.0}), bench, progress=False)
    with pytest.raises(ConfigError):
        build_method(_config("ewc", options={"fisher": 3}), bench, progress=False)
