"""Export one task as a plain network (issue 11): the exported module's logits equal the served
ones bit for bit, TorchScript runs without unforget, ONNX through onnxruntime agrees within
1e-5, and the parameter count is the task's weights (cut to its width)."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from synthetic import gaussian_benchmark
from unforget.config import RunConfig
from unforget.errors import UnforgetError
from unforget.export import plain_network, save_plain
from unforget.layers import weighted_layers
from unforget.runner import build_method


def _learned(method: str, image: bool = False):
    bench = gaussian_benchmark(3, 3, 12, 48, seed=5, image=(3, 32, 32) if image else None)
    model = {"name": "vgg16_bn_light", "width": 0.05} if image else {"name": "mlp", "width": 0.03}
    opts = {"goal": "explicit", "goals": [0.0, 1.0, 0.0], "prune_interval": 0.4, "max_expansion": 1.5} \
        if method == "cpg" else {}
    cfg = RunConfig.model_validate({"method": method, "model": model, "train": {"epochs": 1, "batch_size": 16},
                                    "methods": {method: opts}})
    m = build_method(cfg, bench, progress=False)
    for t in bench.tasks:
        m.learn(t)
    return m, bench


@pytest.fixture(scope="module")
def cpg_conv():
    return _learned("cpg", image=True)


@pytest.mark.parametrize("method", ["cpg", "packnet", "scratch", "clnp"])
def test_exported_logits_equal_served(method):
    m, bench = _learned(method)
    x = torch.randn(6, *bench.input_shape, generator=torch.Generator().manual_seed(0))
    for t in (1, 2, 3):
        plain = plain_network(m.model_for(t), t)
        assert not any(type(mod).__module__.startswith("unforget.layers") for mod in plain.modules())
        with torch.no_grad():
            assert torch.equal(plain(x), m.logits(x, t)), f"task {t}"


def test_conv_network_exports_to_every_format(cpg_conv, tmp_path):
    m, bench = cpg_conv
    x = torch.randn(5, *bench.input_shape, generator=torch.Generator().manual_seed(1))
    t = 3
    served = m.logits(x, t)
    plain = plain_network(m.model, t)
    with torch.no_grad():
        assert torch.equal(plain(x), served)
    meta = {"task": t, "classes": ["a", "b", "c"]}
    ts = save_plain(plain, tmp_path / "t.pt", "torchscript", x[:1], meta)
    files = {"unforget.json": ""}
    loaded = torch.jit.load(str(ts), _extra_files=files)
    assert json.loads(files["unforget.json"]) == meta
    with torch.no_grad():
        assert torch.allclose(loaded(x), served, rtol=0, atol=1e-6)
    pt = save_plain(plain, tmp_path / "t.pth", "pytorch", x[:1], meta)
    again = torch.load(pt, weights_only=False)
    with torch.no_grad():
        assert torch.equal(again(x), served) and again.unforget_metadata == meta
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    path = save_plain(plain, tmp_path / "t.onnx", "onnx", x[:1], meta)
    got = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]
    assert torch.allclose(torch.from_numpy(got), served, rtol=0, atol=1e-5)
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["unforget"]) == meta


def test_parameter_count_is_the_tasks_width(cpg_conv):
    m, _ = cpg_conv
    t = 2
    plain = plain_network(m.model, t)
    weights = [mod.weight for mod in plain.features.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    expected = []
    for _, layer in weighted_layers(m.model):
        rows, cols = layer.slice_for(t)
        expected.append(layer.weight[rows, cols].numel())
        used = int(layer.task_mask(t).sum())
        plain_w = weights[len(expected) - 1]
        assert int((plain_w != 0).sum()) <= used
    assert [w.numel() for w in weights] == expected


def test_export_refuses_unknown_task(cpg_conv):
    m, _ = cpg_conv
    with pytest.raises(UnforgetError, match="task 9 was not learned"):
        plain_network(m.model, 9)


def test_loaded_learner_serves_counts_parameters_and_exports(tmp_path):
    import unforget
    from unforget.runner import run

    bench = gaussian_benchmark(2, 3, 12, 48, seed=9)
    cfg = RunConfig.model_validate({"method": "cpg", "model": {"name": "mlp", "width": 0.03},
                                    "train": {"epochs": 1, "batch_size": 16},
                                    "methods": {"cpg": {"goal": "explicit", "goals": [0.0, 0.0]}}})
    run(cfg, benchmark=bench, out_dir=tmp_path, progress=False)
    learner = unforget.load(tmp_path)
    assert learner.task_ids == [1, 2] and [t["name"] for t in learner.tasks] == ["toy-t1", "toy-t2"]
    stored = sum(p.numel() for p in learner.method.model.parameters())
    assert stored > 0 and sum(p.numel() for p in learner.model.parameters()) == stored
    x = torch.randn(4, 12)
    plain = learner.export(2)
    with torch.no_grad():
        assert torch.equal(plain(x), learner(x, task=2))
