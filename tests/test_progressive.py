"""Progressive neural networks (Rusu et al. 2016): earlier columns bit-identical after later
tasks (weights, batch-norm statistics, outputs), lateral connections used, size growth,
end-to-end run and checkpoint."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from synthetic import assert_same_logits, gaussian_benchmark, reload_via_checkpoint
from unforget.config import RunConfig
from unforget.errors import ConfigError
from unforget.models import MultiHeadNet, register_model
from unforget.runner import build_method, run


@register_model("test_tiny_bn_cnn", "tiny conv-BN chain with dropout (tests only)")
def _tiny_bn_cnn(input_shape, width: float = 1.0) -> MultiHeadNet:
    c = int(input_shape[0])
    net = MultiHeadNet(6, "fc1")
    net.features = nn.Sequential(nn.Conv2d(c, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                                 nn.MaxPool2d(2), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(5, 6),
                                 nn.BatchNorm1d(6), nn.ReLU(inplace=True))
    net.groups_spec = {"features.0": ("conv1", None), "features.1": ("conv1", None),
                       "features.4": ("conv2", "conv1"), "features.9": ("fc1", "conv2"), "features.10": ("fc1", None)}
    return net


def _config(model: str = "mlp", width: float = 0.03, options: dict | None = None, **train) -> RunConfig:
    return RunConfig.model_validate({"method": "progressive", "model": {"name": model, "width": width},
                                     "train": {"epochs": 2, "batch_size": 16, **train},
                                     "methods": {"progressive": options or {}}})


@pytest.mark.parametrize("model,image,width", [("mlp", None, 0.03), ("test_tiny_bn_cnn", (3, 8, 8), 1.0),
                                               ("clnp_convnet", (3, 10, 10), 0.125)])
def test_earlier_columns_bit_identical(model, image, width):
    bench = gaussian_benchmark(3, 3, 12, 48, seed=1, image=image)
    m = build_method(_config(model, width, weight_decay=0.01), bench, progress=False)
    probe = torch.randn(5, *bench.input_shape, generator=torch.Generator().manual_seed(0))
    logits, states, sizes = {}, {}, []
    for task in bench.tasks:
        m.learn(task)
        k = task.id
        logits[k] = m.logits(probe, k)
        states[k] = {n: v.clone() for n, v in m.net.state_dict().items()
                     if n.startswith((f"columns.{k - 1}.", f"laterals.{k}."))}
        sizes.append(m.size())
    for k, expected in logits.items():
        assert torch.equal(m.logits(probe, k), expected), f"task {k} changed"
    now = m.net.state_dict()
    for k, snap in states.items():
        assert snap, "column state expected"
        for n, v in snap.items():
            assert torch.equal(now[n], v), f"{n} of task {k} changed"
    # the size grows with every task: columns linearly, lateral maps quadratically
    bytes_ = [s["model_size_bytes"] for s in sizes]
    assert bytes_[0] < bytes_[1] < bytes_[2]
    assert sizes[0]["expansion_ratio"] == pytest.approx(1.0)
    assert sizes[2]["expansion_ratio"] > 3.0
    assert all(s["released_ratio"] is None for s in sizes)


def test_lateral_connections_carry_earlier_features():
    """Zeroing a lateral map into column 2 (hidden layer or head) changes task 2's logits, never
    task 1's."""
    bench = gaussian_benchmark(2, 3, 12, 48, seed=2)
    m = build_method(_config(), bench, progress=False)
    for task in bench.tasks:
        m.learn(task)
    probe = torch.randn(5, 12, generator=torch.Generator().manual_seed(1))
    assert set(m.net.laterals["2"]) == {"features_3", "head"}  # the second linear layer and the head
    for key in ("features_3", "head"):
        before = {k: m.logits(probe, k) for k in (1, 2)}
        with torch.no_grad():
            for p in m.net.laterals["2"][key].parameters():
                p.zero_()
        assert torch.equal(m.logits(probe, 1), before[1])
        assert not torch.equal(m.logits(probe, 2), before[2]), key


def test_end_to_end_run_and_checkpoint(tmp_path):
    bench = gaussian_benchmark(3, 3, 12, 48, seed=3)
    cfg = _config(options={"column_width": 0.02})
    res = run(cfg, benchmark=bench, progress=False)
    m = res.pop("_learner").method
    json.dumps(res)
    assert res["bwt"] == 0.0 and res["exact_method"] is True
    assert m.net.columns[0].features[1].out_features == 40  # 2000 x 0.02
    fresh = reload_via_checkpoint(m, cfg, bench, tmp_path / "ckpt.safetensors")
    assert_same_logits(fresh, m, (1, 2, 3), (12,))
    assert fresh.size() == m.size()


def test_residual_backbones_are_refused():
    bench = gaussian_benchmark(1, 3, image=(3, 8, 8))
    with pytest.raises(ConfigError, match="chain"):
        build_method(_config("resnet18", 0.0625), bench, progress=False)
