"""A forward pass is a pure function of ``(x, task)`` (issue 11): no shared "current task"
that concurrent calls could overwrite, per-sample task ids for mixed batches, clear errors."""
from __future__ import annotations

import threading

import pytest
import torch

from synthetic import gaussian_benchmark
from unforget.config import RunConfig
from unforget.layers import weighted_layers
from unforget.runner import build_method


@pytest.fixture(scope="module")
def cpg():
    bench = gaussian_benchmark(3, 3, 12, 48, seed=3)
    cfg = RunConfig.model_validate({"method": "cpg", "model": {"name": "mlp", "width": 0.03},
                                    "train": {"epochs": 1, "batch_size": 16},
                                    "methods": {"cpg": {"goal": "explicit", "goals": [0.0, 1.0, 0.0],
                                                        "prune_interval": 0.4}}})
    m = build_method(cfg, bench, progress=False)
    for t in bench.tasks:
        m.learn(t)
    m.model.eval()
    return m


def test_two_threads_serving_two_tasks_do_not_interfere(cpg):
    """Both threads enter the network before either reaches its second layer (a barrier in a
    hook), so a task stored on the network would be overwritten by the other thread."""
    net = cpg.model
    x = torch.randn(4, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = {t: net(x, t) for t in (1, 3)}
    layers = [l for _, l in weighted_layers(net)]
    barrier = threading.Barrier(2, timeout=10)
    handle = layers[1].register_forward_pre_hook(lambda mod, inp: (barrier.wait(), None)[1])
    got: dict = {}

    def serve(t: int) -> None:
        with torch.no_grad():
            got[t] = net(x, t)

    try:
        threads = [threading.Thread(target=serve, args=(t,)) for t in (1, 3)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        handle.remove()
    assert set(got) == {1, 3}
    for t in (1, 3):
        assert torch.equal(got[t], expected[t]), f"task {t}'s logits changed when served beside another task"


def test_mixed_batch_matches_per_task_calls(cpg):
    net = cpg.model
    x = torch.randn(9, 12, generator=torch.Generator().manual_seed(1))
    tasks = torch.tensor([3, 1, 2, 2, 1, 3, 3, 1, 2])
    with torch.no_grad():
        out = net(x, tasks)
        for i in range(9):
            alone = net(x[i:i + 1], int(tasks[i]))
            assert torch.allclose(out[i, : alone.shape[1]], alone[0], rtol=0, atol=1e-6)
    assert out.shape == (9, 3)


def test_mixed_batch_pads_with_minus_inf(cpg):
    net = cpg.model
    head2 = net.heads["2"]
    net.add_head(2, 5, in_features=head2.in_features)  # task 2 with 5 classes: the others are padded
    try:
        x = torch.randn(4, 12)
        with torch.no_grad():
            out = net(x, torch.tensor([1, 2, 3, 2]))
        assert out.shape == (4, 5)
        assert torch.isneginf(out[[0, 2], 3:]).all() and torch.isfinite(out[[1, 3]]).all()
        assert (out.argmax(1)[[0, 2]] < 3).all()
    finally:
        net.heads["2"] = head2


def test_task_id_forms(cpg):
    net = cpg.model
    x = torch.randn(2, 12)
    with torch.no_grad():
        ref = net(x, 2)
        assert torch.equal(net(x, torch.tensor(2)), ref)
    with pytest.raises(TypeError, match="integer"):
        net(x, True)
    with pytest.raises(TypeError, match="integer"):
        net(x, 2.0)
    with pytest.raises(TypeError, match="integer"):
        net(x, torch.tensor([1.0, 2.0]))
    with pytest.raises(KeyError, match="no head for task 7"):
        net(x, 7)


def test_layer_without_task_says_how_to_call(cpg):
    layer = next(l for _, l in weighted_layers(cpg.model))
    with pytest.raises(RuntimeError, match=r"model\(x, task\)"):
        layer(torch.randn(2, 12))
