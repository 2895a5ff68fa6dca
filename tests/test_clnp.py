"""CLNP (Golkar et al. 2019): exact unforgetting, zero interference weights, unit ownership,
graceful-forgetting selection, capacity diagnostics, checkpoints and its zoo convnets."""
from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from synthetic import assert_same_logits, gaussian_benchmark, reload_via_checkpoint
from unforget.config import RunConfig
from unforget.errors import ConfigError
from unforget.evaluation.plots import unit_capacity_plot as plot_capacity
from unforget.methods.graceful import search_thresholds, select_sparsest, threshold_candidates
from unforget.methods.units import unit_owner
from unforget.models import build_model
from unforget.models.base import PooledConvHead
from unforget.runner import build_method, run


def _config(model: str = "mlp", width: float = 0.03, options: dict | None = None, **train) -> RunConfig:
    return RunConfig.model_validate({"method": "clnp", "model": {"name": model, "width": width},
                                     "train": {"epochs": 2, "batch_size": 16, "lr": 0.05, **train},
                                     "methods": {"clnp": options or {}}})


def _probe(bench, n: int = 5) -> torch.Tensor:
    return torch.randn(n, *bench.input_shape, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------ graceful forgetting rules
def test_threshold_candidates_known_answer():
    act = torch.tensor([0.5, 0.0, 0.2, 0.9, 0.2, 0.4, 0.7, 0.1], dtype=torch.float64)
    # sorted: 0.0 0.1 0.2 0.2 0.4 0.5 0.7 0.9; steps 4 -> ranks 2, 4, 6, 8
    assert threshold_candidates(act, 4) == [0.0, 0.1, 0.2, 0.5, 0.9]
    assert threshold_candidates(act, 1) == [0.0, 0.9]          # dead units only, or all of them
    assert threshold_candidates(act, 8) == [0.0, 0.1, 0.2, 0.4, 0.5, 0.7, 0.9]
    assert threshold_candidates(act, 100)[-1] == 0.9
    assert threshold_candidates(torch.zeros(0), 5) == [0.0]
    with pytest.raises(ValueError):
        threshold_candidates(act, 0)


def test_search_thresholds_constructed_cases():
    # accuracy falls by 0.01 per unit of threshold in layer 0 and by 0.1 per unit in layer 1
    def acc(th):
        return 0.9 - 0.01 * th[0] - 0.1 * th[1]

    cands = [[0.0, 1.0, 2.0, 3.0], [0.0, 0.1, 0.5]]
    # floor 0.85: layer 1 first (default order: last to first) takes 0.5 (0.85), layer 0 nothing left
    th, a, trace = search_thresholds(acc, cands, 0.85)
    assert th == [0.0, 0.5] and a == pytest.approx(0.85)
    assert trace[0] == (-1, 0.0, 0.9) and [t[:2] for t in trace[1:]] == [(1, 0.5), (0, 3.0), (0, 2.0), (0, 1.0)]
    # first to last: layer 0 takes 3.0 (0.87), then layer 1 can take 0.1 (0.86)
    th, a, _ = search_thresholds(acc, cands, 0.85, order=[0, 1])
    assert th == [3.0, 0.1] and a == pytest.approx(0.86)
    # floor above the start: nothing is raised, the start is kept
    th, a, trace = search_thresholds(acc, cands, 0.95)
    assert th == [0.0, 0.0] and a == 0.9 and len(trace) == 1 + 3 + 2
    # non-monotone curve: the highest candidate within the floor wins, not the first from below
    th, _, _ = search_thresholds(lambda t: {0.0: 0.9, 1.0: 0.5, 2.0: 0.89, 3.0: 0.2}[t[0]], [[0.0, 1.0, 2.0, 3.0]], 0.88)
    assert th == [2.0]
    with pytest.raises(ValueError):
        search_thresholds(acc, [[0.0], []], 0.5)
    with pytest.raises(ValueError):
        search_thresholds(acc, cands, 0.5, order=[0, 0])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 100), min_size=1, max_size=8), st.integers(0, 100))
def test_search_thresholds_one_layer_is_highest_within_floor(accs, floor_pct):
    """One layer: the chosen threshold is the highest candidate whose accuracy is >= floor, or the
    lowest when none above it is."""
    cands = [float(i) for i in range(len(accs))]
    table = {c: a / 100 for c, a in zip(cands, accs)}
    floor = floor_pct / 100
    (th,), a, _ = search_thresholds(lambda t: table[t[0]], [cands], floor)
    above = [c for c in cands[1:] if table[c] >= floor]
    assert th == (max(above) if above else 0.0) and a == table[th]


def test_select_sparsest_constructed_cases():
    models = [(0.90, 10), (0.92, 5), (0.915, 30), (0.80, 99)]
    assert select_sparsest(models, 0.91) == 2          # the sparsest of those at the floor
    assert select_sparsest(models, 0.92) == 1          # only one reaches it
    assert select_sparsest(models, 0.95) == 1          # none does: the most accurate
    assert select_sparsest(models, 0.5) == 3           # all do: the sparsest
    assert select_sparsest([(0.9, 5), (0.91, 5)], 0.8) == 1  # tie on sparsity: the more accurate
    with pytest.raises(ValueError):
        select_sparsest([], 0.5)


def test_graceful_forgetting_integration_known_answer():
    """One candidate above 0 per layer (threshold_steps 1): the activity of the layer's most
    active new unit, which releases all of them (prediction from the head bias alone: 1/3 on
    balanced 3-class data). A small margin keeps the trained network (near 1.0 on clean
    validation data); a margin of 1 releases every unit of every layer."""
    bench = gaussian_benchmark(1, 3, 12, 48, seed=2, val_noise=0.0)
    for margin in (0.05, 1.0):
        m = build_method(_config(options={"threshold_steps": 1, "margin": margin, "l1": 0.0}, epochs=6),
                         bench, progress=False)
        rec = m.learn(bench.tasks[0])
        assert rec["best_val_accuracy"] == rec["unpruned_val_accuracy"] >= 0.9
        assert rec["accuracy_goal"] == pytest.approx(rec["best_val_accuracy"] - margin)
        assert rec["val_accuracy"] == m.trainer.accuracy(m.model, bench.tasks[0], "val")
        released = all(bool((unit_owner(ul.layer) == 0).all()) for ul in m.chain)
        assert released == (margin == 1.0) == (rec["pruning_ratio"] == 1.0)
        if released:
            assert rec["val_accuracy"] == pytest.approx(1 / 3)
        else:  # threshold 0 releases only dead units (mean activity exactly 0)
            assert set(rec["thresholds"].values()) == {0.0} and rec["pruning_ratio"] < 0.5
            assert rec["val_accuracy"] >= rec["accuracy_goal"]


# ------------------------------------------------------------------ exact unforgetting
def _interference(m) -> list[float]:
    """Largest |w| from a unit not active for a row's task into that row (must be 0), per layer,
    and over each head's columns outside the units it may read."""
    out = []
    owners = {ul.group.name: unit_owner(ul.layer).long() for ul in m.chain}
    for ul in m.chain:
        if ul.source is None:
            continue
        rows, cols = owners[ul.group.name], owners[ul.source.name]
        w = ul.layer.weight.detach().reshape(*ul.layer.weight.shape[:2], -1).abs().amax(2)
        bad = (rows[:, None] > 0) & ((cols[None, :] == 0) | (cols[None, :] > rows[:, None]))
        out.append(float(w[bad].max()) if bool(bad.any()) else 0.0)
    feat = owners[m.model.feature_group]
    for t in m.learned:
        allowed = (feat == t) if m.options.head == "single" else ((feat > 0) & (feat <= t))
        outside = m.model.heads[str(t)].weight.detach()[:, ~allowed]
        out.append(float(outside.abs().max()) if outside.numel() else 0.0)
    return out


@pytest.mark.parametrize("model,image,head,optimizer", [
    ("mlp", None, "multi", "sgd"), ("mlp", None, "single", "sgd"), ("mlp", None, "single", "adam"),
    ("mlp", None, "multi", "adamw"), ("clnp_convnet", (3, 10, 10), "multi", "sgd"),
    ("clnp_convnet_wide", (3, 23, 23), "single", "adamw")])
def test_exact_unforgetting_interference_and_ownership(model, image, head, optimizer):
    """design.md invariants 1 and 2 with every optimizer, weight decay on (AdamW's decoupled
    decay must not reach the frozen weights), early stopping and fine-tuning on."""
    bench = gaussian_benchmark(3, 3, 12, 48, seed=1, image=image)
    width = {"mlp": 0.03, "clnp_convnet": 0.25, "clnp_convnet_wide": 1 / 32}[model]
    m = build_method(_config(model, width, {"head": head, "margin": 0.0, "threshold_steps": 4, "finetune_epochs": 1,
                                            "finetune_lr": 0.01, "early_stop_patience": 2},
                             epochs=6, optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 0.01, momentum=0.9,
                             weight_decay=0.01), bench, progress=False)
    probe = _probe(bench)
    logits, frozen, unit_owners = {}, [], []
    for task in bench.tasks:
        before = [unit_owner(ul.layer).clone() for ul in m.chain]
        m.learn(task)
        after = [unit_owner(ul.layer).clone() for ul in m.chain]
        # units move only 0 -> k (claimed) and stay there or go back to 0 (released by k)
        for b, a in zip(before, after):
            changed = b != a
            assert bool(((b[changed] == 0) & (a[changed] == task.id)).all())
        logits[task.id] = m.logits(probe, task.id)
        frozen.append({ul.name: (ul.layer.owner == task.id, ul.layer.weight.detach().clone()) for ul in m.chain})
        unit_owners.append(after)
        assert max(_interference(m)) == 0.0, "interference weights must be exactly zero"
    for t, expected in logits.items():
        assert torch.equal(m.logits(probe, t), expected), f"task {t} changed"
    for snap in frozen:
        for ul in m.chain:
            mask, w = snap[ul.name]
            assert torch.equal(ul.layer.weight.detach()[mask], w[mask])
    # an active unit keeps its task for good
    for i, owners in enumerate(unit_owners):
        for ul, o in zip(m.chain, owners):
            active = o > 0
            assert torch.equal(unit_owner(ul.layer)[active], o[active])
    # later tasks did get units (the first one cannot have used all of them with thresholds > 0)
    assert any(bool((unit_owner(ul.layer) >= 2).any()) for ul in m.chain)


def test_reused_units_keep_earlier_biases_and_single_head_does_not_reuse_last_layer():
    bench = gaussian_benchmark(2, 3, 12, 48, seed=3)
    m = build_method(_config(options={"head": "single", "threshold_steps": 4}), bench, progress=False)
    for task in bench.tasks:
        rec = m.learn(task)
    for ul in m.chain:
        first = unit_owner(ul.layer) == 1
        assert torch.equal(ul.layer.biases["2"].detach()[first], ul.layer.biases["1"].detach()[first])
    assert rec["unit_capacity"][m.model.feature_group]["reused_units"] == 0
    head2 = m.model.heads["2"].weight.detach()
    assert bool((head2[:, unit_owner(m.chain[-1].layer) == 1] == 0).all())


# ------------------------------------------------------------------ run, capacity, checkpoint
def test_end_to_end_run_capacity_plot_and_checkpoint(tmp_path):
    bench = gaussian_benchmark(3, 3, 12, 48, seed=4)
    cfg = _config(options={"threshold_steps": 5, "margin": 0.02, "l1": [1e-4, 1e-3, 1e-4]})
    res = run(cfg, benchmark=bench, progress=False)
    m = res.pop("_learner").method
    json.dumps(res)
    assert res["bwt"] == 0.0 and res["expansion_ratio"] == 1.0 and res["exact_method"] is True
    assert 0 < res["model_size_bytes"] and 0 <= res["released_ratio"] < 1
    cap = res["capacity"]
    assert set(cap) == {"fc1", "fc2"}
    for g, info in cap.items():
        per = info["per_task"]
        assert per["task"] == [1, 2, 3] and len(per["used_share"]) == 3
        assert per["used_share"] == sorted(per["used_share"]), "used capacity never shrinks"
        assert per["reused_units"][0] == 0 and per["reused_share"][0] == 0.0
        assert info["units"] == info["free_units"] + round(info["used_share"] * info["units"])
    for i, t in enumerate(res["tasks"]):
        assert set(t["thresholds"]) == {"fc1", "fc2"} and "unit_capacity" in t
        assert [cap[g]["per_task"]["threshold"][i] for g in ("fc1", "fc2")] == list(t["thresholds"].values())
    png = plot_capacity(res, tmp_path / "capacity.png")
    assert png.stat().st_size > 1000
    with pytest.raises(ValueError):
        plot_capacity({"capacity": None}, tmp_path / "x.png")

    fresh = reload_via_checkpoint(m, cfg, bench, tmp_path / "ckpt.safetensors")
    assert_same_logits(fresh, m, (1, 2, 3), bench.input_shape)
    assert fresh.capacity() == m.capacity() and fresh.size() == m.size()


def test_options_and_models_are_checked():
    bench = gaussian_benchmark(1, 3, 12, 48, seed=5)
    with pytest.raises(ConfigError, match=r"l1 has 2 entries; the model has 3 layers \(fc1, fc2, output\)"):
        build_method(_config(options={"l1": [1e-4, 1e-4]}), bench, progress=False)
    with pytest.raises(ConfigError, match="finetune_l1"):
        build_method(_config(options={"finetune_l1": [1e-4] * 4}), bench, progress=False)
    for bad in ({"l1": -1.0}, {"threshold_steps": 0}, {"grid_lr": [0.1, -0.1]}, {"grid_l1_scale": []},
                {"thresholds": [0.0, 0.1]}, {"early_stop_patience": 0}, {"grid_tasks": "some"}):
        with pytest.raises(ConfigError):
            build_method(_config(options=bad), bench, progress=False)
    with pytest.raises(ConfigError):
        build_method(_config(options={"head": "both"}), bench, progress=False)
    with pytest.raises(ConfigError, match="chain"):
        build_method(_config("resnet18", 0.0625), gaussian_benchmark(1, 3, image=(3, 8, 8)), progress=False)


def _shapes(net, x):
    """(module type, channels, kernel, stride, padding, output H) of every conv / pool / BN of
    ``net.features``, applied to ``x`` in order."""
    out = []
    for mod in net.features:
        x = mod(x)
        if isinstance(mod, torch.nn.Conv2d):
            out.append(("conv", mod.out_channels, mod.kernel_size[0], mod.stride[0], mod.padding[0], x.shape[-1]))
        elif isinstance(mod, torch.nn.MaxPool2d):
            out.append(("maxpool", None, mod.kernel_size, mod.stride, mod.padding, x.shape[-1]))
        elif isinstance(mod, torch.nn.BatchNorm2d):
            out.append(("bn", mod.num_features, None, None, None, x.shape[-1]))
        elif isinstance(mod, torch.nn.Dropout):
            out.append(("dropout", mod.p, None, None, None, x.shape[-1]))
    return out


def test_clnp_convnets_follow_tables_2_and_3():
    """Golkar et al. 2019, Table 2 (narrow: conv 32-32, max-pool 3x3 / 2, dropout 0.25, conv
    64-64, pool, dropout, dense 512 + dropout 0.5, padding 1 everywhere) and Table 3 (wide, fully
    convolutional: 128 / 256 s2 p0 / 512 p0 / 1024 s2 p1 / 2048 p0, each with batch norm, then
    Conv 6 3x3 to the classes and AvgPool)."""
    x = torch.randn(2, 3, 32, 32)
    narrow = build_model("clnp_convnet", (3, 32, 32))
    assert _shapes(narrow, x) == [
        ("conv", 32, 3, 1, 1, 32), ("conv", 32, 3, 1, 1, 32), ("maxpool", None, 3, 2, 1, 16), ("dropout", 0.25, None, None, None, 16),
        ("conv", 64, 3, 1, 1, 16), ("conv", 64, 3, 1, 1, 16), ("maxpool", None, 3, 2, 1, 8), ("dropout", 0.25, None, None, None, 8),
        ("conv", 512, 8, 1, 0, 1), ("dropout", 0.5, None, None, None, 512)]  # Dense 1 over the 64 x 8 x 8 map
    narrow.add_head(1, 10)
    assert isinstance(narrow.heads["1"], torch.nn.Linear) and narrow(x, 1).shape == (2, 10)
    assert len([m for m in build_model("clnp_convnet", (3, 32, 32), dropout=False).features
                if isinstance(m, torch.nn.Dropout)]) == 0

    wide = build_model("clnp_convnet_wide", (3, 32, 32))
    convs = [s for s in _shapes(wide, x) if s[0] == "conv"]
    assert convs == [("conv", 128, 3, 1, 1, 32), ("conv", 256, 3, 2, 0, 15), ("conv", 512, 3, 1, 0, 13),
                     ("conv", 1024, 3, 2, 1, 7), ("conv", 2048, 3, 1, 0, 5)]
    assert [s[1] for s in _shapes(wide, x) if s[0] == "bn"] == [128, 256, 512, 1024, 2048]
    assert not any(isinstance(m, torch.nn.Dropout) for m in wide.modules())
    wide.add_head(1, 10)
    head = wide.heads["1"]
    assert isinstance(head, PooledConvHead) and head.weight.shape == (10, 2048, 3, 3) and head.padding == (0, 0)
    feats = wide.features(x)
    pooled = torch.nn.functional.avg_pool2d(torch.nn.functional.conv2d(feats, head.weight, head.bias), 3)
    assert feats.shape == (2, 2048, 5, 5) and torch.allclose(wide(x, 1), pooled.flatten(1), atol=1e-6)
    assert [c.out_channels for c in build_model("clnp_convnet_wide", (3, 32, 32), width=0.25).features
            if isinstance(c, torch.nn.Conv2d)] == [32, 64, 128, 256, 512]
    with pytest.raises(ValueError, match="23x23"):
        build_model("clnp_convnet_wide", (3, 22, 22))
    with pytest.raises(ValueError):
        build_model("clnp_convnet", (784,))


def test_released_units_are_reinitialised_when_claimed():
    """A unit released by task 1 has all-zero incoming weights; task 2 claims and re-initialises
    it (PyTorch's default bound 1/sqrt(fan_in)); units never used keep their initial weights."""
    from unforget.layers import begin_task
    from unforget.methods.units import reinit_released_rows

    bench = gaussian_benchmark(2, 3, 12, 48, seed=6, val_noise=0.0)
    m = build_method(_config(options={"threshold_steps": 1, "margin": 1.0}), bench, progress=False)
    m.learn(bench.tasks[0])
    ul = m.chain[0]
    assert bool((ul.layer.weight.detach() == 0).all()), "margin 1 releases every unit"
    begin_task(m.model, 2, 3)
    ul.layer.weight.data[:3] = 1.0  # pretend three units were never released
    n = reinit_released_rows(ul, 2, torch.Generator().manual_seed(0))
    w = ul.layer.weight.detach()
    assert n == ul.units - 3 and bool((w[:3] == 1.0).all())
    assert bool((w[3:] != 0).all()) and float(w[3:].abs().max()) <= 1 / 12 ** 0.5


# ------------------------------------------------------------------ the paper's protocol pieces
def _head_l1(options: dict, **train) -> float:
    bench = gaussian_benchmark(1, 3, 12, 48, seed=7, val_noise=0.0)
    m = build_method(_config(options={"margin": 0.0, "threshold_steps": 1, **options}, epochs=6, **train),
                     bench, progress=False)
    m.learn(bench.tasks[0])
    return float(m.model.heads["1"].weight.detach().abs().sum())


def test_l1_reaches_the_output_layer_in_training_and_fine_tuning():
    """The last L1 coefficient penalises the output layer (Golkar et al. 2019, Sec. 3.1: a
    coefficient for the final layer); so does the last one of ``finetune_l1``."""
    free = _head_l1({"l1": [0.0, 0.0, 0.0]})
    assert _head_l1({"l1": [0.0, 0.0, 0.05]}) < 0.5 * free
    assert _head_l1({"l1": [0.05, 0.05, 0.0]}) > 0.5 * free  # hidden-layer L1 leaves the head alone
    ft = {"l1": 0.0, "finetune_epochs": 4, "finetune_lr": 0.05}
    assert _head_l1({**ft, "finetune_l1": [0.0, 0.0, 0.05]}) < 0.5 * _head_l1({**ft, "finetune_l1": 0.0})


def test_fine_tuning_runs_at_its_own_learning_rate():
    """CLNP + FT trains at ``finetune_lr`` (the paper: 1e-4), not at ``train.lr``: at 1e-30 the
    fine-tuned network is bit-identical to the one never fine-tuned; at 0.05 it is not."""
    bench = gaussian_benchmark(1, 3, 12, 48, seed=8)

    def state(**options):
        m = build_method(_config(options={"finetune_l1": 0.0, "threshold_steps": 4, **options}, weight_decay=0.0),
                         bench, progress=False)
        m.learn(bench.tasks[0])
        return m.model.state_dict()

    plain = state()
    tiny = state(finetune_epochs=2, finetune_lr=1e-30)
    moved = state(finetune_epochs=2, finetune_lr=0.05)
    assert all(torch.equal(plain[k], tiny[k]) for k in plain)
    assert not all(torch.equal(plain[k], moved[k]) for k in plain)


def test_early_stopping_keeps_the_best_epoch():
    """With ``early_stop_patience`` p the task trains until p epochs in a row bring no better
    validation accuracy, then goes back to the best epoch (Golkar et al. 2019, Sec. 3.2)."""
    bench = gaussian_benchmark(1, 3, 12, 48, seed=2)
    m = build_method(_config(options={"early_stop_patience": 3, "l1": 0.0}, epochs=30, lr=0.5), bench, progress=False)
    seen = []
    evaluate = m.trainer.accuracy

    def spy(model, task, split="val"):
        seen.append(evaluate(model, task, split))
        return seen[-1]

    m.trainer.accuracy = spy
    rec = m.learn(bench.tasks[0])
    n = rec["epochs"]
    epochs = seen[:n]
    best = max(range(n), key=lambda i: (epochs[i], -i))
    assert n < 30 and n == best + 1 + 3, "stops after 3 epochs without a better accuracy"
    assert epochs[-1] < epochs[best], "this case must end below its best epoch (else it proves nothing)"
    assert seen[n] == rec["unpruned_val_accuracy"] == epochs[best], "the best epoch's weights are kept"


def test_grid_on_the_first_task_is_kept_for_later_tasks(tmp_path):
    """Graceful forgetting over a grid (Golkar et al. 2019, Sec. 2.2): every point trains from
    the same start; points outside the margin of the best are not sparsified; the sparsest point
    within it is kept, and later tasks train only at the first task's choice (``grid_tasks:
    first``, also after a checkpoint reload) or run the grid again (``all``)."""
    bench = gaussian_benchmark(2, 3, 12, 48, seed=9, val_noise=0.0)
    options = {"grid_l1_scale": [0.0, 1.0], "grid_lr": [1e-7, 0.05, 0.2], "margin": 0.05, "threshold_steps": 60,
               "l1": [0.03, 0.03, 0.0]}
    cfg = _config(options=options, epochs=4)
    m = build_method(cfg, bench, progress=False)
    rec = m.learn(bench.tasks[0])
    grid = rec["grid"]
    assert [(g["l1_scale"], g["lr"]) for g in grid] == [(s, lr) for s in (0.0, 1.0) for lr in (1e-7, 0.05, 0.2)]
    assert rec["best_val_accuracy"] == max(g["unpruned_val"] for g in grid) >= 0.9
    for g in grid:
        inside = g["unpruned_val"] >= rec["best_val_accuracy"] - 0.05
        assert (g["val"] is not None) == inside and (g["released"] is not None) == inside
        assert inside == (g["lr"] != 1e-7), "lr 1e-7 learns nothing: outside the margin"
    searched = [g for g in grid if g["val"] is not None]
    pick = searched[select_sparsest([(g["val"], g["released"]) for g in searched], rec["accuracy_goal"])]
    assert pick is not searched[0] and pick["released"] > searched[0]["released"], "a case where sparsity decides"
    assert rec["chosen"] == {"l1_scale": pick["l1_scale"], "lr": pick["lr"]}
    assert rec["val_accuracy"] == pick["val"] == m.trainer.accuracy(m.model, bench.tasks[0], "val")

    fresh = reload_via_checkpoint(m, cfg, bench, tmp_path / "ckpt.safetensors")
    for method in (m, fresh):
        rec2 = method.learn(bench.tasks[1])
        assert [(g["l1_scale"], g["lr"]) for g in rec2["grid"]] == [(pick["l1_scale"], pick["lr"])]
    again = build_method(_config(options={**options, "grid_tasks": "all"}, epochs=4), bench, progress=False)
    again.learn(bench.tasks[0])
    assert len(again.learn(bench.tasks[1])["grid"]) == 6


def test_l1_as_a_gradient_equals_autograd_of_the_penalty():
    """``L1Penalty`` adds ``c * sign(W) * mask`` to the gradient after the backward pass; it must
    give bit for bit what autograd of ``c * sum |W * mask|`` accumulates, zeros (sign 0), masked
    entries and whole tensors (the head, ``mask=None``) included."""
    from unforget.methods.clnp import L1Penalty

    gen = torch.Generator().manual_seed(3)
    w1 = torch.randn(40, 30, generator=gen)
    w1[::3, ::2] = 0.0
    w2 = torch.randn(10, 40, generator=gen)
    mask = (torch.rand(40, 30, generator=gen) > 0.4).float()
    upstream = [torch.randn(40, 30, generator=gen), torch.randn(10, 40, generator=gen)]
    terms = lambda a, b: [(a, 3e-3, mask), (b, 7e-5, None), (b, 0.0, None)]

    a1, a2 = w1.clone().requires_grad_(), w2.clone().requires_grad_()
    ((a1 * upstream[0]).sum() + (a2 * upstream[1]).sum() + L1Penalty(terms(a1, a2)).value()).backward()
    h1, h2 = w1.clone().requires_grad_(), w2.clone().requires_grad_()
    ((h1 * upstream[0]).sum() + (h2 * upstream[1]).sum()).backward()
    L1Penalty(terms(h1, h2)).after_backward(None)
    assert torch.equal(h1.grad, a1.grad) and torch.equal(h2.grad, a2.grad)
    assert not torch.equal(h1.grad, upstream[0])  # the penalty did something
    fresh = w2.clone().requires_grad_()  # no gradient yet: the hook creates it
    L1Penalty([(fresh, 0.5, None)]).after_backward(None)
    assert torch.equal(fresh.grad, 0.5 * torch.sign(w2))
