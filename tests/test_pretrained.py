"""A pretrained network as task 1 (CPG experiments 2-3): a ResNet-50 file in torchvision's key
layout becomes task 1 with its own head; later tasks of the fine-grained layout pick from it and
task 1's logits stay those of the pretrained network, bit for bit."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from test_fine_grained import write_dataset
from unforget.cli import _overrides, _parser
from unforget.config import RunConfig
from unforget.learner import Learner
from unforget.data.fine_grained import fine_grained_benchmark
from unforget.methods.base import PretrainedUnsupported
from unforget.models import build_model
from unforget.models.resnet50 import PretrainedWeightsError, torchvision_key
from unforget.runner import run

WIDTH = 0.0625
SHAPE = (3, 32, 32)


def write_torchvision_file(path: Path, n_classes: int = 7, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Linear]:
    """A random ResNet-50 (at WIDTH) saved with torchvision's key names and an fc head; returns the
    plain network and head that the file holds."""
    torch.manual_seed(seed)
    net = build_model("resnet50", SHAPE, width=WIDTH)
    with torch.no_grad():  # statistics that differ from a fresh model's, so loading them shows
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    head = torch.nn.Linear(net.feature_dim, n_classes)
    state = {torchvision_key(k): v for k, v in net.state_dict().items() if torchvision_key(k)}
    state.update({"fc.weight": head.weight.detach().clone(), "fc.bias": head.bias.detach().clone()})
    torch.save(state, path)
    return net.eval(), head.eval()


@pytest.fixture(scope="module")
def fg(tmp_path_factory):
    root = tmp_path_factory.mktemp("fg")
    for i, (name, classes) in enumerate((("cubs_cropped", 3), ("flowers", 2), ("sketches", 2))):
        write_dataset(root, name, classes, 6, 2, 10 + i)
    bench = fine_grained_benchmark(root, tasks=["cubs_cropped", "flowers", "sketches"], image_size=32)
    return root, bench


def _config(path, method="cpg", **pre):
    return RunConfig.model_validate({
        "method": method, "model": {"name": "resnet50", "width": WIDTH},
        "train": {"epochs": 1, "batch_size": 8, "lr": 0.01},
        "pretrained": {"file": str(path), "name": "imagenet", "accuracy": 0.7616, **pre},
        "methods": {"cpg": {"goal": "tolerance", "prune_interval": 0.5, "prune_epochs": 1, "retrain_epochs": 0}}})


def test_pretrained_task_one_is_the_file_and_stays_bit_identical(tmp_path, fg):
    _, bench = fg
    net, head = write_torchvision_file(tmp_path / "resnet50.pth")
    x = torch.randn(5, *SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = head(net.features(x))
    res = run(_config(tmp_path / "resnet50.pth"), benchmark=bench, out_dir=tmp_path / "out", progress=False)
    learner = res["_learner"]
    assert [t["name"] for t in res["tasks"]] == ["imagenet", "cubs_cropped", "flowers", "sketches"]
    assert torch.equal(learner.method.logits(x, 1), want)  # the pretrained network, bit for bit, after 3 tasks
    assert [row[0] for row in res["accuracy_matrix"]] == [0.7616] * 4  # given, never measured
    assert res["tasks"][0]["accuracy_given"] and res["tasks"][0]["pruning_ratio"] == 0.0
    assert "kept whole" in res["tasks"][0]["pretrained"]["decision"]
    assert res["bwt"] == 0.0 and res["benchmark_info"]["pretrained"]["classes"] == 7
    assert len(learner.method.model.heads["1"].weight) == 7
    report = (tmp_path / "out" / "report.md").read_text()
    assert "76.16 (given)" in report and "not a measurement" in report
    # later tasks picked from task 1's weights (it owns all of them: nothing was free)
    assert all(rec["weights"]["earlier"] > 0 for rec in res["tasks"][1:2])
    # the checkpoint serves the pretrained network without the weight file
    (tmp_path / "resnet50.pth").unlink()
    assert torch.equal(Learner.open(tmp_path / "out").method.logits(x, 1), want)
    assert _overrides(_parser().parse_args(["run", "--pretrained", "w.pth"]))["pretrained"] == {"file": "w.pth"}


def test_pretrained_task_one_with_data_is_measured_and_compacted(tmp_path, fg):
    root, bench = fg
    write_torchvision_file(tmp_path / "w.pth", n_classes=3, seed=2)
    write_dataset(tmp_path / "in", "imagenet", 3, 6, 2, 99)
    cfg = _config(tmp_path / "w.pth", compact=True, goal=0.0, data=str(tmp_path / "in" / "imagenet"))
    res = run(cfg, benchmark=bench, progress=False)
    t1 = res["tasks"][0]
    assert "accuracy_given" not in t1 and t1["pruning_ratio"] > 0 and t1["weights"]["released"] > 0
    assert res["accuracy_matrix"][0][0] != 0.7616 and res["bwt"] == 0.0
    assert res["tasks"][1]["weights"]["claimed"] > 0  # the released weights went to the next task


def test_methods_without_pretrained_support_and_bad_files_are_clear_errors(tmp_path, fg):
    _, bench = fg
    write_torchvision_file(tmp_path / "w.pth")
    with pytest.raises(PretrainedUnsupported, match="method ewc cannot take a pretrained task 1.*cpg"):
        run(_config(tmp_path / "w.pth", method="ewc"), benchmark=bench, progress=False)
    state = torch.load(tmp_path / "w.pth")
    del state["fc.weight"], state["fc.bias"]
    torch.save(state, tmp_path / "nohead.pth")
    with pytest.raises(PretrainedWeightsError, match="no classifier head"):
        run(_config(tmp_path / "nohead.pth"), benchmark=bench, progress=False)
    state = torch.load(tmp_path / "w.pth")
    state["layer1.0.conv1.weight"] = state["layer1.0.conv1.weight"][:1]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(PretrainedWeightsError, match="layer1.0.conv1.weight"):
        run(_config(tmp_path / "bad.pth"), benchmark=bench, progress=False)
