"""Methods ask, layers change themselves (issue 11): a task-aware layer's ownership changes go
through ``release`` / ``claim``, and its cached masks never go stale, whoever changes it."""
from __future__ import annotations

import torch

from unforget.layers import begin_task, end_task, to_task_aware, weighted_layers
from unforget.models import build_model


def _net():
    torch.manual_seed(0)
    net = to_task_aware(build_model("mlp", (5,), hidden=(4, 4))).eval()
    begin_task(net, 1, 3)
    end_task(net, 1)
    return net


def test_release_frees_zeroes_and_clears_momentum():
    net = _net()
    layer = next(l for _, l in weighted_layers(net))
    opt = torch.optim.SGD([layer.weight], lr=0.1, momentum=0.9)
    layer.weight.grad = torch.ones_like(layer.weight)
    opt.step()
    x = torch.randn(2, 5)
    with torch.no_grad():
        before = net(x, 1)  # fills the layer's mask cache for task 1
    mask = torch.zeros_like(layer.owner, dtype=torch.bool)
    mask[0] = True
    assert layer.release(mask, [opt]) == mask.sum()
    assert bool((layer.owner[0] == 0).all()) and bool((layer.weight[0] == 0).all())
    assert bool((opt.state[layer.weight]["momentum_buffer"][0] == 0).all())
    assert bool((layer.task_mask(1)[0] == 0).all())  # the cache followed
    with torch.no_grad():
        assert not torch.equal(net(x, 1), before)


def test_claim_takes_free_weights_only():
    net = _net()
    layer = next(l for _, l in weighted_layers(net))
    free = torch.zeros_like(layer.owner, dtype=torch.bool)
    free[1] = True
    layer.release(free)
    assert layer.claim(torch.ones_like(free), 2) == free.sum()
    assert bool((layer.owner[1] == 2).all()) and bool((layer.owner[~free] == 1).all())


def test_load_state_dict_refreshes_cached_masks():
    net, other = _net(), _net()
    layer = next(l for _, l in weighted_layers(net))
    mask = torch.zeros_like(layer.owner, dtype=torch.bool)
    mask[:, :2] = True
    layer.release(mask)
    x = torch.randn(3, 5)
    with torch.no_grad():
        net(x, 1)  # cache masks of the layer with released weights
        net.load_state_dict(other.state_dict())
        assert torch.equal(net(x, 1), other(x, 1))


def test_served_weights_are_cached_exactly_and_dropped_on_change():
    net = _net()
    x = torch.randn(3, 5)
    layers = [l for _, l in weighted_layers(net)]
    with torch.no_grad():
        net.task_context.serve_cache = 0
        plain = net(x, 1)
        net.task_context.serve_cache = 4
        first, again = net(x, 1), net(x, 1)
        assert torch.equal(first, plain) and torch.equal(again, plain)
        assert all(1 in l._cache.get("served", {}) for l in layers)
        layers[0].weight.mul_(2.0)  # any in-place write to W
        assert not torch.equal(net(x, 1), plain)
        layers[0].weight.div_(2.0)
        assert torch.equal(net(x, 1), plain)


def test_serve_cache_is_bounded():
    net = _net()
    for t in (2, 3, 4):
        begin_task(net, t, 3, claim_free=False)
        end_task(net, t)
    net.task_context.serve_cache = 2
    x = torch.randn(2, 5)
    with torch.no_grad():
        for t in (1, 2, 3, 4):
            net(x, t)
    layer = next(l for _, l in weighted_layers(net))
    assert list(layer._cache["served"]) == [3, 4]
