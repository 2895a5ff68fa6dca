"""CPG experiment 3 on generated data in the real layouts: the A-Softmax head, the facial
benchmark with its age folds, and a pretrained face-verification network as task 1 tested with
the LFW protocol on a generated pairs.txt while gender / emotion / age are learned after it."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from synthetic import gaussian_benchmark
from test_fine_grained import write_dataset
from unforget.config import RunConfig
from unforget.data import build_benchmark
from unforget.data.facial import facial_benchmark
from unforget.errors import DataError
from unforget.evaluation.verification import read_pairs, verification_accuracy
from unforget.learner import Learner
from unforget.models import build_model
from unforget.models.heads import AngleLinear, batch_labels
from unforget.runner import build_method, run

SIDE = 16


def test_a_softmax_logits_margin_and_annealing():
    head = AngleLinear(2, 3)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]]))
    th = 0.3
    x = torch.tensor([[2 * math.cos(th), 2 * math.sin(th)]])  # |x| = 2, 0.3 rad from class 0
    head.eval()
    assert torch.allclose(head(x), torch.tensor([[2 * math.cos(th), 2 * math.sin(th), -2 * math.cos(th)]]))
    head.train()
    assert torch.allclose(head(x), head.eval()(x)) and head.train()  # no labels: no margin
    y = torch.tensor([0])
    with batch_labels(y):
        out = head(x)
    lam = 1500 / (1 + 0.1)  # first step, as the reference's AngleLoss
    psi = math.cos(4 * th)  # k = floor(4 * 0.3 / pi) = 0
    assert out[0, 0].item() == pytest.approx(2 * (math.cos(th) + (psi - math.cos(th)) / (1 + lam)), rel=1e-5)
    assert torch.allclose(out[0, 1:], torch.tensor([2 * math.sin(th), -2 * math.cos(th)]))  # other classes untouched
    assert int(head.iteration) == 1
    head.iteration.fill_(10**6)
    with batch_labels(y):
        late = head(x)
    assert late[0, 0].item() == pytest.approx(2 * (math.cos(th) + (psi - math.cos(th)) / 6), rel=1e-5)  # lambda_min 5
    # psi decreases monotonically on [0, pi] (Liu et al. 2017, Eq. 6), so the margin only ever lowers the target
    thetas = torch.linspace(0, math.pi, 200)
    head.iteration.zero_()
    xs = torch.stack([torch.cos(thetas), torch.sin(thetas)], 1)
    with batch_labels(torch.zeros(200, dtype=torch.long)):
        t = head(xs)[:, 0]
    lam = 1500 / 1.1
    psi_curve = (t - torch.cos(thetas)) * (1 + lam) + torch.cos(thetas)
    assert bool((psi_curve[1:] <= psi_curve[:-1] + 1e-4).all())


def test_a_margin_head_task_trains_and_reloads_with_its_kind(tmp_path):
    bench = gaussian_benchmark(2, 3, 12, 48, seed=2)
    bench.tasks[1] = dataclasses.replace(bench.tasks[1], head="a-softmax")
    cfg = RunConfig.model_validate({"method": "cpg", "model": {"name": "mlp", "width": 0.03},
                                    "train": {"epochs": 2, "batch_size": 16},
                                    "methods": {"cpg": {"goal": "tolerance", "prune_interval": 0.5}}})
    res = run(cfg, benchmark=bench, out_dir=tmp_path / "run", progress=False)
    m = res["_learner"].method
    assert isinstance(m.model.heads["2"], AngleLinear) and int(m.model.heads["2"].iteration) > 0
    x = torch.randn(6, 12, generator=torch.Generator().manual_seed(0))
    again = Learner.open(tmp_path / "run").method
    assert isinstance(again.model.heads["2"], AngleLinear) and isinstance(again.model.heads["1"], torch.nn.Linear)
    assert torch.equal(again.logits(x, 2), m.logits(x, 2)) and torch.equal(again.logits(x, 1), m.logits(x, 1))


@pytest.fixture(scope="module")
def face_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faces")
    write_dataset(root, "gender", 2, 6, 2, 1, size=(20, 20))
    write_dataset(root, "emotion", 3, 5, 2, 2, size=(20, 20))
    for k in range(5):
        write_dataset(root, f"age{k}", 2, 5, 2, 10 + k, size=(20, 20))
    return root


def test_facial_benchmark_folds_and_errors(face_root):
    b = facial_benchmark(face_root, age_fold=3, image_size=SIDE)
    assert [t.name for t in b.tasks] == ["gender", "emotion", "age3"] and b.input_shape == (3, SIDE, SIDE)
    x = b.tasks[0].test.x[:2]
    assert torch.allclose(b.tasks[0].transform(x), (x.float() / 255 - 0.5) / 0.5)
    reg = build_benchmark("facial", face_root, options={"age_fold": 2})
    assert reg.tasks[2].name == "age2" and reg.info["options"] == {"age_fold": 2} and reg.input_shape == (3, 112, 112)
    with pytest.raises(DataError, match="age_fold must be an integer in 0..4"):
        build_benchmark("facial", face_root, options={"age_fold": 5})
    with pytest.raises(DataError, match="has no option 'fold'; its options: age_fold"):
        build_benchmark("facial", face_root, options={"fold": 1})
    with pytest.raises(DataError, match="has no option 'age_fold'; its options: none"):
        build_benchmark("digits", options={"age_fold": 1})


def _write_lfw(root: Path, folds: int = 2, per: int = 3) -> Path:
    """A pairs.txt in LFW's layout and its images (person folders, person_0001.jpg)."""
    rng = np.random.default_rng(5)
    lines = [f"{folds}\t{per}"]
    people = set()
    for f in range(folds):
        for i in range(per):
            lines.append(f"P{f}_{i}\t1\t2")
            people.add((f"P{f}_{i}", 1)), people.add((f"P{f}_{i}", 2))
        for i in range(per):
            lines.append(f"P{f}_{i}\t1\tQ{f}_{i}\t1")
            people.add((f"Q{f}_{i}", 1))
    for person, n in people:
        (root / "lfw" / person).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(
            root / "lfw" / person / f"{person}_{n:04d}.jpg", quality=95)
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root / "pairs.txt"


def test_pretrained_face_verification_is_tested_on_pairs_and_stays_exact(tmp_path, face_root):
    torch.manual_seed(0)
    net = build_model("sphereface20", (3, SIDE, SIDE), width=0.0625)
    head_in_out = torch.randn(net.feature_dim, 9)  # the SphereFace code keeps AngleLinear's weight (in, out)
    torch.save({**net.state_dict(), "head.weight": head_in_out}, tmp_path / "face.pth")
    pairs = _write_lfw(tmp_path)
    bench = facial_benchmark(face_root, age_fold=1, image_size=SIDE)
    cfg = RunConfig.model_validate({
        "method": "cpg", "model": {"name": "sphereface20", "width": 0.0625},
        "train": {"epochs": 1, "batch_size": 8},
        "pretrained": {"file": str(tmp_path / "face.pth"), "name": "face_verification", "head": "a-softmax",
                       "accuracy": 0.9942, "pairs": str(pairs), "pairs_root": str(tmp_path / "lfw")},
        "methods": {"cpg": {"goal": "explicit", "goals": {"gender": 0.0, "emotion": 0.0, "age1": 0.0},
                            "prune_interval": 0.5, "prune_epochs": 1, "retrain_epochs": 0}}})
    res = run(cfg, benchmark=bench, out_dir=tmp_path / "out", progress=False)
    # the expected verification accuracy, from the pretrained plain network on the same images
    pf = read_pairs(pairs)
    task1 = res["_learner"].method
    tf = bench.tasks[0].transform
    first = torch.stack([torch.from_numpy(np.asarray(Image.open(tmp_path / "lfw" / p.first[0] /
                                                                f"{p.first[0]}_{p.first[1]:04d}.jpg").resize((SIDE, SIDE), Image.BILINEAR)).transpose(2, 0, 1).copy())
                         for p in pf.pairs])
    second = torch.stack([torch.from_numpy(np.asarray(Image.open(tmp_path / "lfw" / p.second[0] /
                                                                 f"{p.second[0]}_{p.second[1]:04d}.jpg").resize((SIDE, SIDE), Image.BILINEAR)).transpose(2, 0, 1).copy())
                          for p in pf.pairs])
    with torch.no_grad():
        want = verification_accuracy(net.eval().features(tf(first)), net.features(tf(second)),
                                     [p.same for p in pf.pairs], pf.folds()).accuracy
    R = res["accuracy_matrix"]
    assert [row[0] for row in R] == [want] * 4 and want != 0.9942  # measured on the pairs, the same after 3 tasks
    assert [t["name"] for t in res["tasks"]] == ["face_verification", "gender", "emotion", "age1"]
    assert "accuracy_given" not in res["tasks"][0] and res["tasks"][0]["test_protocol"].startswith("verification")
    assert [t["accuracy_goal"] for t in res["tasks"][1:]] == [0.0, 0.0, 0.0]  # goals by task name
    assert isinstance(task1.model.heads["1"], AngleLinear)
    assert torch.equal(task1.model.heads["1"].weight, head_in_out.t())
    assert res["bwt"] == 0.0
    v = res["tasks"][-1]["verification"]["1"]
    assert v["accuracy"] == want and len(v["fold_accuracies"]) == 2 and v["std"] == pytest.approx(
        float(np.std(v["fold_accuracies"])))
    from unforget.evaluation.report import markdown_report

    assert "T1 (face_verification): verification protocol" in markdown_report(res)


def _reference_cnn20(widths=(4, 8, 16, 32), emb=32, side=SIDE, classes=5, seed=0) -> dict:
    """A random state dict in the SphereFace / CPG reference layout (conv{s}_{i}, PReLU relu{s}_{i},
    fc5 Linear over the flattened final map, fc6 AngleLinear stored (features, classes))."""
    g = torch.Generator().manual_seed(seed)
    state, prev, hw = {}, 3, side
    for s, (ch, units) in enumerate(zip(widths, (1, 2, 4, 1)), 1):
        for i in range(1, 2 * units + 2):
            cin = prev if i == 1 else ch
            state[f"conv{s}_{i}.weight"] = torch.randn(ch, cin, 3, 3, generator=g) * 0.2
            state[f"conv{s}_{i}.bias"] = torch.randn(ch, generator=g) * 0.1
            state[f"relu{s}_{i}.weight"] = torch.rand(ch, generator=g) * 0.5
        prev, hw = ch, (hw - 1) // 2 + 1
    state["fc5.weight"] = torch.randn(emb, prev * hw * hw, generator=g) * 0.1
    state["fc5.bias"] = torch.randn(emb, generator=g) * 0.1
    state["fc6.weight"] = torch.randn(emb, classes, generator=g)
    return state


def _reference_embedding(state: dict, x: torch.Tensor) -> torch.Tensor:
    """The reference's forward_to_embeddings, written out from its layer list."""
    def cp(s, i, h, stride=1):
        return F.prelu(F.conv2d(h, state[f"conv{s}_{i}.weight"], state[f"conv{s}_{i}.bias"], stride, 1),
                       state[f"relu{s}_{i}.weight"])
    h = x
    for s, units in enumerate((1, 2, 4, 1), 1):
        h = cp(s, 1, h, stride=2)
        for u in range(units):
            h = h + cp(s, 2 * u + 3, cp(s, 2 * u + 2, h))
    return F.linear(h.flatten(1), state["fc5.weight"], state["fc5.bias"])


def test_reference_cnn20_weights_load_with_per_task_prelu(tmp_path, face_root):
    state = _reference_cnn20()
    torch.save(state, tmp_path / "face_weight.pth")
    pairs = _write_lfw(tmp_path)
    bench = facial_benchmark(face_root, age_fold=0, image_size=SIDE)
    cfg = RunConfig.model_validate({
        "method": "cpg", "model": {"name": "sphereface20", "width": 0.0625,
                                   "options": {"activation": "prelu", "conv_bias": True}},
        "train": {"epochs": 1, "batch_size": 8, "lr": 0.05},
        "pretrained": {"file": str(tmp_path / "face_weight.pth"), "name": "face_verification", "head": "a-softmax",
                       "pairs": str(pairs), "pairs_root": str(tmp_path / "lfw")},
        "methods": {"cpg": {"goal": "tolerance", "prune_interval": 0.5, "prune_epochs": 1, "retrain_epochs": 0}}})
    res = run(cfg, benchmark=bench, progress=False)
    m = res["_learner"].method
    x = torch.randn(4, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(3))
    m.model.eval()
    with torch.no_grad():
        got = m.model.embed(x, 1)
    assert torch.allclose(got, _reference_embedding(state, x), atol=1e-5)  # after 3 more tasks trained PReLUs
    act = m.model.features.stage1.act
    assert torch.equal(act.norms["1"].weight, state["relu1_1.weight"]) and set(act.norms) == {"1", "2", "3", "4"}
    assert not torch.equal(act.norms["4"].weight, act.norms["1"].weight)  # later tasks trained their own slopes
    assert torch.equal(m.model.heads["1"].weight, state["fc6.weight"].t()) and res["bwt"] == 0.0
    with pytest.raises(Exception, match="unexpected key 'conv9_1.weight'"):
        torch.save({**state, "conv9_1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
        cfg2 = cfg.model_copy(update={"pretrained": cfg.pretrained.model_copy(update={"file": str(tmp_path / "bad.pth")})})
        run(cfg2, benchmark=bench, progress=False)


def test_model_options_pass_through_and_unknown_ones_are_refused():
    from unforget.errors import RegistryError

    net = build_model("sphereface20", (3, SIDE, SIDE), width=0.0625, activation="prelu", conv_bias=True)
    assert isinstance(net.features.stage2.units[1].act2, torch.nn.PReLU) and net.features.stage2.units[1].conv1.bias is not None
    with pytest.raises(RegistryError, match="model 'sphereface20' has no option 'act'; its options: negative_slope"):
        build_model("sphereface20", (3, SIDE, SIDE), act="prelu")


def test_face_verification_learned_from_identities_is_tested_on_lfw_pairs(tmp_path, face_root):
    import shutil

    root = tmp_path / "faces"
    shutil.copytree(face_root, root)
    write_dataset(root, "face_verification", 4, 6, 0, 7, size=(20, 20))
    shutil.rmtree(root / "face_verification" / "test")
    _write_lfw(tmp_path)
    shutil.copytree(tmp_path / "lfw", root / "lfw")
    shutil.copy(tmp_path / "pairs.txt", root / "lfw_pairs.txt")
    bench = facial_benchmark(root, age_fold=4, image_size=SIDE, verification=True)
    assert [t.name for t in bench.tasks] == ["face_verification", "gender", "emotion", "age4"]
    assert bench.tasks[0].head == "a-softmax" and len(bench.tasks[0].pairs) == 12
    cfg = RunConfig.model_validate({
        "method": "cpg", "model": {"name": "sphereface20", "width": 0.0625},
        "train": {"epochs": 2, "batch_size": 8},
        "methods": {"cpg": {"goal": "tolerance", "prune_interval": 0.5, "prune_epochs": 1, "retrain_epochs": 0}}})
    res = run(cfg, benchmark=bench, progress=False)
    m = res["_learner"].method
    head = m.model.heads["1"]
    assert isinstance(head, AngleLinear) and int(head.iteration) > 0  # trained with the margin
    from unforget.evaluation.verification import evaluate_pairs

    now = evaluate_pairs(m.model, bench.tasks[0]).accuracy
    assert [row[0] for row in res["accuracy_matrix"]] == [now] * 4  # the LFW protocol, exact after 3 tasks
    assert res["tasks"][0]["test_protocol"].startswith("verification") and res["bwt"] == 0.0
    with pytest.raises(DataError, match="lfw_pairs.txt"):
        (root / "lfw_pairs.txt").unlink()
        facial_benchmark(root, image_size=SIDE, verification=True)


def test_torchvision_weights_are_fetched_with_their_hash_checked(monkeypatch):
    from unforget.models import pretrained as P

    calls = []

    def fake(url, **kw):
        calls.append((url, kw))
        return {"fc.weight": torch.zeros(3, 4), "fc.bias": torch.zeros(3)}

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake)
    w = P.read_pretrained("torchvision")
    assert calls[0][0].endswith("resnet50-0676ba61.pth") and calls[0][1]["check_hash"] is True
    assert w.n_classes == 3 and w.source == P.TORCHVISION_RESNET50_URL

    def offline(url, **kw):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(P.PretrainedWeightsError, match="offline: give a local file"):
        P.read_pretrained("torchvision")
