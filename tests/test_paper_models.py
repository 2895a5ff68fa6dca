"""The paper-scale backbones: ResNet-50 (resnet50) and the 20-layer SphereFace CNN (sphereface20).

Shapes, width groups, task-aware conversion, exact unforgetting under CPG with growth and pruning,
and loading of local torchvision-layout ResNet-50 weights. Everything runs at width 1/16 on small
inputs, except the parameter counts (meta device) and one width-1 weight round trip.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from synthetic import gaussian_benchmark
from unforget.config import RunConfig
from unforget.layers import begin_task, norm_layers, to_task_aware
from unforget.models import build_model, list_models
from unforget.models.resnet50 import PRETRAINED_ENV, PretrainedWeightsError, load_torchvision_weights
from unforget.runner import build_method

W = 1 / 16
# (name, input shape, extra kwargs, feature dim at width 1/16)
CASES = [
    ("resnet50", (3, 32, 32), {"cifar_stem": True}, 128),
    ("resnet50", (3, 64, 64), {}, 128),
    ("sphereface20", (3, 24, 20), {}, 32),
    ("sphereface20", (3, 24, 20), {"global_pool": True}, 32),
]
IDS = ["resnet50-cifar", "resnet50-imagenet", "sphereface20", "sphereface20-pool"]


@pytest.fixture(autouse=True)
def _no_env_weights(monkeypatch):
    monkeypatch.delenv(PRETRAINED_ENV, raising=False)


def _build(name, shape, kw, seed=0):
    torch.manual_seed(seed)
    return build_model(name, shape, width=W, **kw)


def test_registered():
    assert {"resnet50", "sphereface20"} <= set(list_models())


@pytest.mark.parametrize("name,shape,kw,dim", CASES, ids=IDS)
def test_forward_shapes_and_groups(name, shape, kw, dim):
    net = _build(name, shape, kw)
    assert net.feature_dim == dim
    feats = net.features(torch.randn(2, *shape))
    assert feats.shape == (2, dim) and feats.dtype == torch.float32
    net.add_head(1, 5)
    assert net(torch.randn(2, *shape), 1).shape == (2, 5)
    # every prunable layer of the features has a width group
    for mname, mod in net.features.named_modules(prefix="features"):
        if isinstance(mod, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)):
            assert mname in net.groups_spec, mname
    assert net.feature_group in {g for g, _ in net.groups_spec.values()}


def test_sphereface_global_pool_accepts_any_size():
    net = _build("sphereface20", (3, 24, 20), {"global_pool": True})
    assert net.features(torch.randn(1, 3, 17, 13)).shape == (1, 32)


@pytest.mark.parametrize("name,shape,kw", [("resnet50", (3, 224, 224), {}), ("sphereface20", (3, 112, 96), {})])
def test_parameter_counts_at_width_1(name, shape, kw):
    with torch.device("meta"):
        net = build_model(name, shape, width=1.0, **kw)
    n = sum(p.numel() for p in net.features.parameters())
    # ResNet-50 without fc (torchvision: 25,557,032 - 2,049,000); SphereFace-20 with FC-512 at 112x96
    assert n == {"resnet50": 23_508_032, "sphereface20": 22_662_272}[name]
    assert net.feature_dim == {"resnet50": 2048, "sphereface20": 512}[name]


@pytest.mark.parametrize("name,shape,kw,dim", CASES, ids=IDS)
def test_task_aware_conversion_reproduces_plain_model(name, shape, kw, dim):
    plain = _build(name, shape, kw)
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))
    # give the BNs non-trivial statistics and affine parameters
    with torch.no_grad():
        for m in plain.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    plain.train()
    plain.features(x)
    plain.eval()
    plain_bns = {n: m for n, m in plain.named_modules() if isinstance(m, nn.BatchNorm2d)}
    aware = to_task_aware(copy.deepcopy(plain))
    begin_task(aware, 1, 4)
    plain.add_head(1, 4)
    with torch.no_grad():
        aware.heads["1"].load_state_dict(plain.heads["1"].state_dict())
        for n, norm in norm_layers(aware):
            norm.norms["1"].load_state_dict(plain_bns[n].state_dict())
    aware.eval()
    ref = plain(x, 1)
    assert torch.equal(aware(x, 1), ref)
    aware.task_context.training_task = None  # the frozen path of a finished task
    assert torch.equal(aware(x, 1), ref)


@pytest.mark.parametrize("name,image", [("resnet50", (3, 16, 16)), ("sphereface20", (3, 12, 10))])
def test_cpg_exact_unforgetting_with_growth_and_pruning(name, image):
    bench = gaussian_benchmark(3, 3, 0, 16, seed=1, image=image)
    cfg = RunConfig.model_validate({
        "method": "cpg", "model": {"name": name, "width": W},
        "train": {"epochs": 1, "batch_size": 8},
        "methods": {"cpg": {"goal": "explicit", "goals": [0.0, 1.0, 0.0], "prune_interval": 0.4,
                            "retrain_epochs": 1}}})
    m = build_method(cfg, bench, progress=False)
    probe = torch.randn(4, *image, generator=torch.Generator().manual_seed(0))
    recorded, records = {}, []
    for task in bench.tasks:
        records.append(m.learn(task))
        recorded[task.id] = m.logits(probe, task.id)
        for t, logits in recorded.items():
            assert torch.equal(m.logits(probe, t), logits), f"task {t} changed after task {task.id}"
    assert records[0]["pruning_ratio"] > 0 and records[0]["growth_rounds"] == 0
    assert records[1]["growth_rounds"] == 1
    assert all(records[1]["widths"][g] > records[0]["widths"][g] for g in records[0]["widths"])
    assert records[2]["pruning_ratio"] > 0
    # the method state rebuilds the grown model and every task's logits (invariant 4, in process)
    tensors, meta = m.state()
    fresh = build_method(cfg, bench, progress=False)
    fresh.load_state(tensors, meta)
    for t, logits in recorded.items():
        assert torch.equal(fresh.logits(probe, t), logits), f"task {t} differs after reload"


# ----------------------------------------------------------------------------- pretrained weights
def _torchvision_layout(net) -> dict[str, torch.Tensor]:
    """This model's features state dict under torchvision's names, plus a 1000-class fc."""
    sd = {k[len("features."):]: v.clone() for k, v in net.state_dict().items() if k.startswith("features.")}
    sd["fc.weight"] = torch.randn(1000, net.feature_dim)
    sd["fc.bias"] = torch.zeros(1000)
    return sd


def _features_equal(a, b) -> bool:
    sa, sb = a.features.state_dict(), b.features.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors"])
def test_torchvision_layout_round_trip(tmp_path, suffix):
    src = _build("resnet50", (3, 32, 32), {}, seed=0)
    path = tmp_path / f"w{suffix}"
    sd = _torchvision_layout(src)
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}} if suffix == ".pth" else sd, path)
    dst = _build("resnet50", (3, 32, 32), {}, seed=1)
    assert not _features_equal(src, dst)
    load_torchvision_weights(dst, path)
    assert _features_equal(src, dst)


def test_pretrained_at_width_1_through_the_registry(tmp_path, monkeypatch):
    torch.manual_seed(0)
    src = build_model("resnet50", (3, 32, 32))
    sd = {k: v for k, v in _torchvision_layout(src).items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "r50.pth")
    torch.manual_seed(1)
    dst = build_model("resnet50", (3, 32, 32), pretrained=str(tmp_path / "r50.pth"))
    assert _features_equal(src, dst)
    monkeypatch.setenv(PRETRAINED_ENV, str(tmp_path / "r50.pth"))
    torch.manual_seed(2)
    assert _features_equal(src, build_model("resnet50", (3, 32, 32)))


def test_pretrained_needs_width_1(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="width 1.0"):
        build_model("resnet50", (3, 32, 32), width=W, pretrained=str(tmp_path / "any.pt"))
    monkeypatch.setenv(PRETRAINED_ENV, str(tmp_path / "any.pt"))
    with pytest.raises(ValueError, match=PRETRAINED_ENV):
        build_model("resnet50", (3, 32, 32), width=W)


@pytest.mark.parametrize("edit,key", [
    ("drop", "layer3.2.bn2.running_var"),
    ("drop", "conv1.weight"),
    ("shape", "layer1.0.conv2.weight"),
    ("shape", "layer4.2.bn3.bias"),
    ("extra", "layer5.0.conv1.weight"),
])
def test_bad_state_dict_names_the_key(tmp_path, edit, key):
    src = _build("resnet50", (3, 32, 32), {})
    sd = _torchvision_layout(src)
    if edit == "drop":
        del sd[key]
    elif edit == "shape":
        sd[key] = torch.zeros(*[s + 1 for s in sd[key].shape])
    else:
        sd[key] = torch.zeros(3)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    dst = _build("resnet50", (3, 32, 32), {}, seed=1)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")) as err:
        load_torchvision_weights(dst, path)
    assert isinstance(err.value, PretrainedWeightsError)


def test_pretrained_file_errors(tmp_path):
    net = _build("resnet50", (3, 32, 32), {})
    with pytest.raises(ValueError, match="not found"):
        load_torchvision_weights(net, tmp_path / "absent.safetensors")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        load_torchvision_weights(net, tmp_path / "junk.pt")
    # a cifar stem (3x3) cannot take the ImageNet stem's 7x7 weights
    sd = _torchvision_layout(net)
    cifar = _build("resnet50", (3, 32, 32), {"cifar_stem": True})
    with pytest.raises(ValueError, match=r"conv1\.weight"):
        load_torchvision_weights(cifar, sd)
    aware = to_task_aware(_build("resnet50", (3, 32, 32), {}))
    with pytest.raises(ValueError, match="before converting"):
        load_torchvision_weights(aware, sd)
