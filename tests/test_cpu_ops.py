"""The CPU fast paths of the zoo's conv nets (issue 28). The max-pool (unforget.models.pooling)
equals nn.MaxPool2d bit for bit: values, argmax ties (ReLU zeros), NaN, -inf, signed zeros, and
the gradient; other inputs take nn.MaxPool2d's own path. A dense layer written as a full-map
convolution (unforget.models.conv) is computed as the matrix product, the same way when served,
trained and exported."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import nn

from unforget.models.conv import DenseConv2d
from unforget.models.pooling import MaxPool2d, max_pool2d_cpu

SHAPES = st.tuples(st.integers(1, 5), st.integers(1, 6), st.integers(3, 13), st.integers(3, 13))


def _special(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """ReLU-like ties, signed zeros, NaN and infinities sprinkled into ``x``."""
    x = x.clone()
    r = torch.rand(x.shape, generator=gen)
    x[r < 0.35] = 0.0
    x[(r >= 0.35) & (r < 0.4)] = -0.0
    x[(r >= 0.4) & (r < 0.42)] = float("-inf")
    x[(r >= 0.42) & (r < 0.43)] = float("inf")
    x[(r >= 0.43) & (r < 0.44)] = float("nan")
    x[(r >= 0.44) & (r < 0.5)] = 1.0  # equal maxima in one window
    return x


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32) if t.dtype == torch.float32 else t.view(torch.int64)


@settings(max_examples=60, deadline=None)
@given(shape=SHAPES, kernel=st.integers(1, 3), stride=st.integers(1, 3), padding=st.integers(0, 1),
       seed=st.integers(0, 2**31), special=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_equal_to_nn_maxpool_bit_for_bit(shape, kernel, stride, padding, seed, special, dtype):
    if padding * 2 > kernel:
        padding = 0
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=dtype)
    if special:
        x = _special(x, gen)
    ref = F.max_pool2d(x, kernel, stride, padding)
    got = MaxPool2d(kernel, stride, padding)(x)
    assert got.is_contiguous() and got.dtype == dtype
    assert torch.equal(_bits(got), _bits(ref))  # NaN, -0.0 and +0.0 compared by their bits

    finite = torch.nan_to_num(x, nan=0.5, posinf=3.0, neginf=-3.0)  # gradients of finite inputs
    a, b = finite.clone().requires_grad_(), finite.clone().requires_grad_()
    g = torch.randn(ref.shape, generator=gen, dtype=dtype)
    F.max_pool2d(a, kernel, stride, padding).backward(g)
    max_pool2d_cpu(b, kernel, stride, padding).backward(g)
    assert torch.equal(_bits(a.grad), _bits(b.grad))


def test_default_stride_is_the_kernel():
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(MaxPool2d(2)(x), nn.MaxPool2d(2)(x))


def test_other_inputs_take_pytorchs_path(monkeypatch):
    calls = []
    monkeypatch.setattr("unforget.models.pooling.max_pool2d_cpu", lambda *a: calls.append(a))
    x = torch.randn(2, 3, 8, 8)
    MaxPool2d(2)(x.contiguous(memory_format=torch.channels_last))
    MaxPool2d(2, ceil_mode=True)(x)
    MaxPool2d(2, dilation=2)(x)
    MaxPool2d(2, return_indices=True)(x)
    MaxPool2d(2)(x[0])  # 3-D input
    assert calls == []
    MaxPool2d(2)(x)
    assert len(calls) == 1


def test_traced_and_scripted_as_a_plain_max_pool():
    pool = MaxPool2d(3, 2, 1).eval()
    x = torch.randn(2, 3, 9, 9)
    traced = torch.jit.trace(pool, x)
    assert "max_pool2d" in str(traced.graph)
    assert torch.equal(traced(x), F.max_pool2d(x, 3, 2, 1))


def test_state_dict_and_repr_as_nn_maxpool():
    assert repr(MaxPool2d(3, stride=2, padding=1)) == repr(nn.MaxPool2d(3, stride=2, padding=1))
    assert isinstance(MaxPool2d(2), nn.MaxPool2d)


def test_rejects_what_it_cannot_pool():
    with pytest.raises(ValueError, match="contiguous 4-D"):
        max_pool2d_cpu(torch.randn(3, 8, 8), 2)


# ------------------------------------------------------------------ dense layers written as convs
def test_dense_conv_is_the_dense_layer():
    gen = torch.Generator().manual_seed(0)
    conv = DenseConv2d(6, 5, (4, 4))
    x = torch.randn(7, 6, 4, 4, generator=gen)
    got = conv(x)
    assert got.shape == (7, 5, 1, 1)
    assert torch.equal(got.flatten(1), F.linear(x.flatten(1), conv.weight.flatten(1), conv.bias))
    torch.testing.assert_close(got, F.conv2d(x, conv.weight, conv.bias), rtol=1e-5, atol=1e-5)
    bigger = torch.randn(2, 6, 6, 6, generator=gen)  # a map larger than the kernel: a real convolution
    assert torch.equal(conv(bigger), F.conv2d(bigger, conv.weight, conv.bias))
    with pytest.raises(ValueError, match="groups=1"):
        DenseConv2d(4, 4, 2, groups=2)


def test_only_dense_layers_take_the_matrix_product():
    """A 1x1 convolution on a 1x1 map is left to F.conv2d (a pretrained network computes as PyTorch
    computes it); the zoo's dense layers, task-aware or exported, take F.linear."""
    from unforget.layers import to_task_aware, weighted_layers
    from unforget.models import build_model

    net = to_task_aware(build_model("clnp_convnet", (3, 32, 32), width=0.25))
    dense = {name: layer.dense for name, layer in weighted_layers(net)}
    assert dense.pop("features.12") is True and not any(dense.values())
    plain = nn.Conv2d(4, 3, 1)
    x = torch.randn(2, 4, 1, 1)
    assert torch.equal(plain(x), F.conv2d(x, plain.weight, plain.bias))


def test_served_and_exported_dense_layers_agree_bit_for_bit():
    from synthetic import gaussian_benchmark
    from unforget.config import RunConfig
    from unforget.learner import Learner

    bench = gaussian_benchmark(n_tasks=2, n=40, image=(3, 16, 16))
    cfg = RunConfig.model_validate({"method": "packnet", "model": {"name": "clnp_convnet", "width": 0.25},
                                    "train": {"epochs": 1, "batch_size": 16},
                                    "methods": {"packnet": {"prune_ratio": 0.5, "prune_epochs": 1}}})
    learner = Learner.create(cfg, bench, progress=False)
    for t in bench.tasks:
        learner.learn(t)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    for t in (1, 2):
        plain = learner.export(t)
        assert any(isinstance(m, DenseConv2d) for m in plain.modules())
        with torch.no_grad():
            assert torch.equal(plain(x), learner.logits(x, t))
