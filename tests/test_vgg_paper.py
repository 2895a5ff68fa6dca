"""The zoo's ``vgg16_bn``: the CIFAR VGG16-BN of CPG (Hung et al. 2019, Sec. 4.1; ivclab/CPG
``models/vgg.py``, ``custom_vgg_cifar100``), and the light variant ``vgg16_bn_light``.

Structure, the prunable-weight count of the paper, the reference initialisation (features and
heads), width scaling, task-aware conversion with growth of the biased FC groups, and short CLNP
and progressive-net runs on it. Everything trains at width 1/16; width 1 is built once.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from synthetic import gaussian_benchmark
from unforget.config import RunConfig
from unforget.layers import begin_task, end_task, grow_group, to_task_aware, weighted_layers
from unforget.layers.task_aware import TaskLinear
from unforget.models import build_model, list_models
from unforget.models.base import normal_head_init
from unforget.runner import build_method

PAPER_PRUNABLE = 33_584_832
"""13 conv + 2 hidden FC weights of CPG's CIFAR VGG16-BN at width 1 (heads and biases excluded)."""
CONV_CHANNELS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]


@pytest.fixture(scope="module")
def full():
    """The paper network at width 1 with one task head of 100 classes (seed 0)."""
    torch.manual_seed(0)
    net = build_model("vgg16_bn", (3, 32, 32))
    net.add_head(1, 100)
    return net.requires_grad_(False)


def _prunable(features: nn.Module) -> list[nn.Module]:
    return [m for m in features.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def test_registered_names():
    models = list_models()
    assert {"vgg16_bn", "vgg16_bn_light"} <= set(models)
    assert "light" in models["vgg16_bn_light"] and "not the paper" in models["vgg16_bn_light"]
    assert "4096" in models["vgg16_bn"]


def test_prunable_weight_count_at_width_1(full):
    layers = _prunable(full.features)
    assert len(layers) == 15
    assert sum(m.weight.numel() for m in layers) == PAPER_PRUNABLE
    # the same count through the task-aware form (meta device: no memory)
    with torch.device("meta"):
        aware = to_task_aware(build_model("vgg16_bn", (3, 32, 32)))
    assert sum(l.weight.numel() for _, l in weighted_layers(aware)) == PAPER_PRUNABLE


def test_structure(full):
    convs = [m for m in full.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == CONV_CHANNELS
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) and c.bias is None for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in full.features) == 5
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.Dropout)) for m in full.features.modules())
    mods = list(full.features)
    # every conv is followed by BN2d and ReLU
    for i, m in enumerate(mods):
        if isinstance(m, nn.Conv2d):
            assert isinstance(mods[i + 1], nn.BatchNorm2d) and isinstance(mods[i + 2], nn.ReLU)
    # the classifier: pool (identity at 32x32), flatten, FC 512->4096 (bias) ReLU, FC 4096->4096 (bias) ReLU
    tail = mods[-6:]
    assert [type(m) for m in tail][1:] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear, nn.ReLU]
    assert isinstance(tail[0], nn.AdaptiveAvgPool2d) and tail[0].output_size == 1
    fc1, fc2 = tail[2], tail[4]
    assert (fc1.in_features, fc1.out_features, fc2.in_features, fc2.out_features) == (512, 4096, 4096, 4096)
    assert fc1.bias is not None and fc2.bias is not None
    assert full.feature_dim == 4096 and full.feature_group == "fc2"
    head = full.heads["1"]
    assert (head.in_features, head.out_features) == (4096, 100) and head.bias is not None


def test_forward_shape_and_groups():
    torch.manual_seed(0)
    net = build_model("vgg16_bn", (3, 32, 32), width=0.0625)
    net.add_head(1, 5)
    assert net(torch.randn(2, 3, 32, 32), 1).shape == (2, 5)
    # every conv / linear / BN has a width group; conv1..conv13, fc1, fc2
    for name, mod in net.features.named_modules(prefix="features"):
        if isinstance(mod, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)):
            assert name in net.groups_spec, name
    assert {g for g, _ in net.groups_spec.values()} == {f"conv{i}" for i in range(1, 14)} | {"fc1", "fc2"}
    fcs = [n for n, m in net.features.named_modules(prefix="features") if isinstance(m, nn.Linear)]
    assert [net.groups_spec[n] for n in fcs] == [("fc1", "conv13"), ("fc2", "fc1")]


def test_width_multiplier_scales_convs_and_fc():
    with torch.device("meta"):
        net = build_model("vgg16_bn", (3, 32, 32), width=0.25)
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [c // 4 for c in CONV_CHANNELS]
    fc1, fc2 = [m for m in net.features if isinstance(m, nn.Linear)]
    assert (fc1.in_features, fc1.out_features, fc2.out_features) == (128, 1024, 1024)
    assert net.feature_dim == 1024


def test_larger_inputs_pool_to_the_same_features():
    torch.manual_seed(0)
    net = build_model("vgg16_bn", (3, 64, 48), width=0.0625)
    fc1 = next(m for m in net.features if isinstance(m, nn.Linear))
    assert fc1.in_features == 32
    assert net.features(torch.randn(2, 3, 64, 48)).shape == (2, 256)
    with pytest.raises(ValueError, match="32x32"):
        build_model("vgg16_bn", (3, 16, 16))
    with pytest.raises(ValueError, match="images"):
        build_model("vgg16_bn", (784,))


def test_reference_initialisation(full):
    for m in full.features.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels * 9
            assert float(m.weight.std()) == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.05)
            assert abs(float(m.weight.mean())) < 0.1 * math.sqrt(2.0 / fan_out)
        elif isinstance(m, nn.BatchNorm2d):
            assert bool((m.weight == 1).all()) and bool((m.bias == 0).all())
        elif isinstance(m, nn.Linear):
            assert float(m.weight.std()) == pytest.approx(0.01, rel=0.02)
            assert abs(float(m.weight.mean())) < 1e-3
            assert bool((m.bias == 0).all())
    head = full.heads["1"]
    assert float(head.weight.detach().std()) == pytest.approx(0.01, rel=0.05)
    assert bool((head.bias == 0).all())


def test_head_init_on_task_aware_model_and_defaults_elsewhere():
    torch.manual_seed(0)
    aware = to_task_aware(build_model("vgg16_bn", (3, 32, 32), width=0.25))
    assert aware.head_init is normal_head_init
    begin_task(aware, 1, 200)
    head = aware.heads["1"]
    assert head.in_features == 1024
    assert float(head.weight.detach().std()) == pytest.approx(0.01, rel=0.05) and bool((head.bias == 0).all())
    # the light variant and the other models keep PyTorch's default head init (uniform 1/sqrt(fan_in))
    for name, shape in [("vgg16_bn_light", (3, 32, 32)), ("mlp", (784,))]:
        net = build_model(name, shape, width=1.0 if name == "vgg16_bn_light" else 0.5)
        assert net.head_init is None
        h = net.add_head(1, 200)
        bound = 1 / math.sqrt(h.in_features)
        assert float(h.weight.detach().abs().max()) <= bound
        assert float(h.weight.std()) == pytest.approx(bound / math.sqrt(3), rel=0.05)
        assert float(h.bias.abs().max()) > 0


def test_builds_from_the_callers_rng_state():
    torch.manual_seed(3)
    a = build_model("vgg16_bn", (3, 32, 32), width=0.0625)
    torch.manual_seed(3)
    b = build_model("vgg16_bn", (3, 32, 32), width=0.0625)
    c = build_model("vgg16_bn", (3, 32, 32), width=0.0625)  # RNG moved on: different weights
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["features.0.weight"], sc["features.0.weight"])


def test_light_variant_still_builds():
    torch.manual_seed(0)
    net = build_model("vgg16_bn_light", (3, 32, 32), width=0.0625)
    assert net.feature_dim == 32 and net.feature_group == "fc1"
    assert isinstance(net.features[-2], nn.BatchNorm1d)
    fc = [m for m in net.features if isinstance(m, nn.Linear)]
    assert len(fc) == 1 and fc[0].bias is None and fc[0].out_features == 32
    assert net.groups_spec[f"features.{len(net.features) - 2}"] == ("fc1", None)
    net.add_head(1, 5)
    assert net(torch.randn(2, 3, 32, 32), 1).shape == (2, 5)
    with torch.device("meta"):
        full = build_model("vgg16_bn_light", (3, 32, 32))
    assert sum(m.weight.numel() for m in _prunable(full.features)) == 14_710_464 + 512 * 512


def test_task_aware_conversion_and_growth_of_fc_groups():
    torch.manual_seed(0)
    net = to_task_aware(build_model("vgg16_bn", (3, 32, 32), width=0.0625))
    fcs = [(n, l) for n, l in weighted_layers(net) if isinstance(l, TaskLinear)]
    assert [l.out_group.name for _, l in fcs] == ["fc1", "fc2"]
    assert all(l.has_bias for _, l in fcs)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    begin_task(net, 1, 4)
    with torch.no_grad():  # non-zero task-1 biases, so a bias mix-up would show
        for _, l in fcs:
            l.biases["1"].uniform_(-0.1, 0.1)
    net.train()
    net(x, 1)
    end_task(net, 1)
    net.eval()
    before = net(x, 1)
    begin_task(net, 2, 3)
    for group in ("conv13", "fc1", "fc2"):
        grow_group(net, group, 5, task=2)
    assert net.groups["fc1"].size == 256 + 5 and net.groups["fc2"].size == 256 + 5
    fc1, fc2 = (l for _, l in fcs)
    assert fc1.weight.shape == (261, 37) and fc2.weight.shape == (261, 261)
    assert fc1.biases["2"].shape == (261,) and fc2.biases["2"].shape == (261,)
    assert fc1.biases["1"].shape == (256,)
    assert net.heads["2"].in_features == 261 and net.heads["1"].in_features == 256
    net.eval()
    assert net(x, 2).shape == (3, 3)
    assert torch.equal(net(x, 1), before)


def _bench():
    return gaussian_benchmark(2, 3, 0, 16, seed=1, image=(3, 32, 32))


def _cfg(method: str, options: dict) -> RunConfig:
    return RunConfig.model_validate({"method": method, "model": {"name": "vgg16_bn", "width": 0.0625},
                                     "train": {"epochs": 1, "batch_size": 8},
                                     "methods": {method: options}})


def test_clnp_runs_exactly_on_the_paper_vgg():
    bench = _bench()
    m = build_method(_cfg("clnp", {"threshold_steps": 2, "margin": 0.0}), bench, progress=False)
    assert [ul.group.name for ul in m.chain][-2:] == ["fc1", "fc2"]
    assert isinstance(m.chain[-1].probe, TaskLinear)  # no BN after the FC layers: the layer itself
    probe = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    recorded = {}
    for task in bench.tasks:
        rec = m.learn(task)
        assert set(rec["unit_capacity"]) >= {"conv1", "conv13", "fc1", "fc2"}
        recorded[task.id] = m.logits(probe, task.id)
    for t, logits in recorded.items():
        assert torch.equal(m.logits(probe, t), logits), f"task {t} changed"


def test_progressive_runs_exactly_on_the_paper_vgg():
    bench = _bench()
    m = build_method(_cfg("progressive", {}), bench, progress=False)
    probe = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    recorded = {}
    for task in bench.tasks:
        m.learn(task)
        recorded[task.id] = m.logits(probe, task.id)
    assert len(m.net.lateral_names) == 14  # conv2..conv13, fc1, fc2
    for t, logits in recorded.items():
        assert torch.equal(m.logits(probe, t), logits), f"task {t} changed"
