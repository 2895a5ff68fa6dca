"""HAT (Serra et al. 2018): unit gates, annealed scale, conditioned gradients, gate regulariser;
not exact, its BWT measured; a checkpoint reloads with the same logits."""
from __future__ import annotations

import pytest
import torch

from synthetic import gaussian_benchmark
from unforget.config import RunConfig
from unforget.errors import ConfigError
from unforget.layers import weighted_layers
from unforget.learner import Learner
from unforget.methods.hat import HATHook, HATOptions
from unforget.runner import build_method, run
from unforget.training import TrainState


def _cfg(model="mlp", width=0.03, epochs=3, **hat):
    return RunConfig.model_validate({"method": "hat", "model": {"name": model, "width": width},
                                     "train": {"epochs": epochs, "batch_size": 16, "lr": 0.05, "weight_decay": 0.0},
                                     "methods": {"hat": hat}})


def test_gates_condition_gradients_and_saturated_connections_do_not_move():
    bench = gaussian_benchmark(2, 3, 12, 64, seed=3)
    m = build_method(_cfg(epochs=4), bench, progress=False)
    m.learn(bench.tasks[0])
    layers = [l for _, l in weighted_layers(m.model)]
    prev = [l.policy.prev(l).clone() for l in layers]
    w1 = [l.weight.detach().clone() for l in layers]
    assert all(((p == 0) | (p > 0)).all() for p in prev) and any((p == 1.0).any() for p in prev)
    m.learn(bench.tasks[1])
    frozen_seen = 0
    for i, l in enumerate(layers):
        out_full = prev[i] == 1.0
        in_full = prev[i - 1] == 1.0 if i > 0 else torch.ones(l.weight.shape[1], dtype=torch.bool)
        both = out_full[:, None] & in_full[None, :]
        frozen_seen += int(both.sum())
        assert torch.equal(l.weight[both], w1[i][both])  # 1 - min(a_out, a_in) = 0: exactly no update
        free = (prev[i] < 0.5)[:, None] & torch.ones_like(both)
        if free.any():
            assert not torch.equal(l.weight[free], w1[i][free])  # open units still learn
    assert frozen_seen > 0
    assert torch.equal(layers[0].scores["1"], layers[0].scores["1"].detach())  # task 1's embedding kept


def test_annealing_and_regulariser_follow_the_paper():
    bench = gaussian_benchmark(2, 3, 12, 32, seed=5)
    m = build_method(_cfg(epochs=1), bench, progress=False)
    m.learn(bench.tasks[0])
    from unforget.layers import begin_task

    begin_task(m.model, 2, 3, claim_free=True, learn_picks=True)
    layers = [l for _, l in weighted_layers(m.model)]
    o = HATOptions()
    hook = HATHook(layers, 2, o)
    st = TrainState(model=m.model, task=bench.tasks[1], optimizers=[], steps_per_epoch=5)
    st.step = 5  # first batch of an epoch
    hook.before_forward(st)
    assert layers[0].policy.s == pytest.approx(1 / 400)
    st.step = 9  # last batch
    hook.before_forward(st)
    assert layers[0].policy.s == pytest.approx(400)
    a = [torch.sigmoid(400 * l.scores["2"]) for l in layers]
    p = [l.policy.prev(l) for l in layers]
    want = 0.75 * sum((ai * (1 - pi)).sum() for ai, pi in zip(a, p)) / sum((1 - pi).sum() for pi in p)
    assert float(hook.penalty(st).detach()) == pytest.approx(float(want.detach()), rel=1e-6)


def test_hat_reports_its_measured_bwt_and_reloads(tmp_path):
    bench = gaussian_benchmark(3, 3, 12, 48, seed=7)
    res = run(_cfg(epochs=2), benchmark=bench, out_dir=tmp_path / "run", progress=False)
    assert res["exact_method"] is False and isinstance(res["bwt"], float) and res["bwt"] <= 0.05
    assert 0 < res["tasks"][0]["units_open"] <= 1
    m = res["_learner"].method
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(0))
    again = Learner.open(tmp_path / "run").method
    for t in (1, 2, 3):
        assert torch.equal(again.logits(x, t), m.logits(x, t))


def test_hat_refuses_residual_networks():
    with pytest.raises(ConfigError, match="chain model"):
        build_method(_cfg(model="resnet18", width=0.125), gaussian_benchmark(1, 2, n=8, image=(3, 16, 16)),
                     progress=False)


def test_a_hat_task_exports_to_a_plain_network_with_its_gates():
    from unforget.export import plain_network

    bench = gaussian_benchmark(2, 3, 12, 32, seed=2)
    m = build_method(_cfg(epochs=1), bench, progress=False)
    for t in bench.tasks:
        m.learn(t)
    x = torch.randn(4, 12, generator=torch.Generator().manual_seed(3))
    plain = plain_network(m.model, 1)
    with torch.no_grad():
        assert torch.allclose(plain(x), m.logits(x, 1), atol=1e-6)
    assert not any(getattr(mod, "unit_gate", False) for mod in plain.modules())
