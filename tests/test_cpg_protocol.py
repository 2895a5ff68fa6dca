"""The CPG protocol of Hung et al. 2019 (Alg. 1) and its reference code (ivclab/CPG): fixed picks
while compacting, the largest ratio that meets the goal, the reserve for later tasks, growth that
restarts the task, the training-accuracy gate and the retraining step."""
from __future__ import annotations

import pytest
import torch

from synthetic import gaussian_benchmark
from unforget.config import RunConfig
from unforget.layers import SCORE_THRESHOLD, weighted_layers
from unforget.methods.compacting import ratio_ladder, reserve_ratio
from unforget.methods.goals import miss_threshold, significant_miss
from unforget.runner import build_method


def _method(options: dict, n_tasks: int = 2, seed: int = 0, method: str = "cpg", epochs: int = 2):
    bench = gaussian_benchmark(n_tasks, 3, 12, 48, seed=seed)
    cfg = RunConfig.model_validate({"method": method, "model": {"name": "mlp", "width": 0.03},
                                    "train": {"epochs": epochs, "batch_size": 16},
                                    "methods": {method: options}})
    return build_method(cfg, bench, progress=False), bench


def _script_accuracy(monkeypatch, m, values: list[float]) -> list[float]:
    """Make every validation-accuracy measurement of ``m`` return the next scripted value."""
    left = list(values)

    def fake(model, task, split="val"):
        return left.pop(0)

    monkeypatch.setattr(m.trainer, "accuracy", fake)
    return left


def _wrap(monkeypatch, m, name: str, before=None, after=None):
    orig = getattr(m, name)

    def wrapped(*a, **kw):
        if before:
            before(*a, **kw)
        out = orig(*a, **kw)
        if after:
            after(out)
        return out

    monkeypatch.setattr(m, name, wrapped)


def _picks(m, task: int) -> dict[str, torch.Tensor]:
    return {n: (l.scores[str(task)].detach() > SCORE_THRESHOLD) & (l.owner > 0) & (l.owner < task)
            for n, l in weighted_layers(m.model) if str(task) in l.scores}


def test_reference_ladder_and_reserve_ratios():
    assert ratio_ladder(0.95) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    # 1 - round(1 / (remaining + 1), 1), as CPG_cifar100_main_normal.py computes it
    assert [reserve_ratio(r) for r in (0, 1, 4, 19)] == [0.0, 0.5, 0.8, 0.9]


def test_picks_fixed_while_compacting_and_other_tasks_untouched(monkeypatch):
    m, bench = _method({"goal": "explicit", "goals": [0.0, 0.0], "prune_interval": 0.3, "retrain_epochs": 0,
                        "grow": False})
    m.learn(bench.tasks[0])
    seen = {}

    def before(task, *a, **kw):
        seen["scores"] = {n: l.scores["2"].detach().clone() for n, l in weighted_layers(m.model)}
        seen["picks"] = _picks(m, 2)
        seen["w"] = {n: (l.owner.clone(), l.weight.detach().clone()) for n, l in weighted_layers(m.model)}

    def after(out):
        assert out["ratio"] > 0
        for n, l in weighted_layers(m.model):
            assert torch.equal(l.scores["2"].detach(), seen["scores"][n]), f"pick scores of {n} moved while compacting"
            owner0, w0 = seen["w"][n]
            earlier = (owner0 > 0) & (owner0 < 2)
            assert torch.equal(l.owner[earlier], owner0[earlier]), "compacting changed an earlier task's ownership"
            assert torch.equal(l.weight.detach()[earlier], w0[earlier]), "compacting changed an earlier task's weight"
            changed = l.owner != owner0
            assert bool(((owner0[changed] == 2) & (l.owner[changed] == 0)).all()), "compacting moved an owner other than 2 -> 0"

    _wrap(monkeypatch, m, "_compact", before, after)
    m.learn(bench.tasks[1])
    for n, l in weighted_layers(m.model):
        assert torch.equal(l.pick_mask(2), seen["picks"][n]), "the frozen pick mask differs from the picks before compacting"


def test_compaction_keeps_the_largest_ratio_that_met_the_goal(monkeypatch):
    m, bench = _method({"goal": "explicit", "goals": [0.5], "grow": False, "prune_ratio": 0.9,
                        "prune_interval": 0.2}, n_tasks=1)
    # unpruned, then the ladder 0.2, 0.4, 0.6, 0.8, 0.9: a miss at 0.4 does not end the search
    _script_accuracy(monkeypatch, m, [0.95, 0.9, 0.1, 0.8, 0.2, 0.3])
    rec = m.learn(bench.tasks[0])
    assert rec["compaction"] == {"0.2": 0.9, "0.4": 0.1, "0.6": 0.8, "0.8": 0.2, "0.9": 0.3}
    assert rec["pruning_ratio"] == 0.6 and rec["val_accuracy"] == 0.8
    # the model is the 0.6 state, not the last one tried (0.9)
    released = sum(int((l.owner == 0).sum()) for _, l in weighted_layers(m.model))
    total = sum(l.owner.numel() for _, l in weighted_layers(m.model))
    assert abs(released / total - 0.6) < 0.02


@pytest.mark.parametrize("reserve,ratio", [(None, 0.5), (4, 0.8)])
def test_missed_goal_still_pruned_to_the_reserve(monkeypatch, reserve, ratio):
    opts = {"goal": "explicit", "goals": [0.0, 1.0, 0.0], "grow": False, "retrain_epochs": 0}
    if reserve is not None:
        opts["reserve_for_tasks"] = reserve
    m, bench = _method(opts, n_tasks=3)
    m.learn(bench.tasks[0])
    claimed = {}
    _wrap(monkeypatch, m, "_compact",
          before=lambda *a, **kw: claimed.update({n: int((l.owner == 2).sum()) for n, l in weighted_layers(m.model)}))
    rec = m.learn(bench.tasks[1])
    assert rec["missed_goal"] and rec["pruning_ratio"] == ratio
    assert rec["reserve_for_tasks"] == (reserve if reserve is not None else 1)
    kept = {n: int((l.owner == 2).sum()) for n, l in weighted_layers(m.model)}
    for n in kept:
        assert kept[n] == claimed[n] - int(ratio * claimed[n] + 1e-9)
    assert m.size()["released_ratio"] > 0
    m.learn(bench.tasks[2])
    assert sum(int((l.owner == 3).sum()) for _, l in weighted_layers(m.model)) > 0, "task 3 found no free weight"


def test_growth_restarts_from_the_state_before_the_task(monkeypatch):
    m, bench = _method({"goal": "explicit", "goals": [0.0, 1.0], "max_expansion": 1.5, "retrain_epochs": 0})
    m.learn(bench.tasks[0])
    before = {n: l.weight.detach().clone() for n, l in weighted_layers(m.model)}
    starts = []
    orig = m._train_task

    def spy(task, **kw):
        starts.append({n: l.weight.detach().clone() for n, l in weighted_layers(m.model)})
        return orig(task, **kw)

    monkeypatch.setattr(m, "_train_task", spy)
    rec = m.learn(bench.tasks[1])
    assert rec["growth_rounds"] == 1 and len(starts) == 2
    for n, w0 in before.items():
        again = starts[1][n][tuple(slice(0, s) for s in w0.shape)]
        assert torch.equal(again, w0), f"{n}: the second attempt did not start from the weights before the task"
        assert starts[1][n].shape != w0.shape or n.endswith("0"), "growth must add units"


@pytest.mark.parametrize("confidence,shortfall,rounds", [
    (0.95, "within noise", 0), (0.95, "resolved", 1), (None, "within noise", 1), (None, "none", 0)])
def test_growth_needs_a_miss_the_validation_split_can_resolve(monkeypatch, confidence, shortfall, rounds):
    """Issue 25 item 4: a shortfall smaller than the validation images resolve (one-sided binomial
    test at ``goal_confidence``) does not grow; one they resolve does, and null grows on any."""
    goal = 0.9
    m, bench = _method({"goal": "explicit", "goals": [0.0, goal], "max_expansion": 1.5, "compact": "none",
                        "goal_confidence": confidence})
    m.learn(bench.tasks[0])
    n = len(bench.tasks[1].val)
    edge = miss_threshold(goal, n, 0.95)  # the lowest accuracy 95 % confidence does not call a miss
    assert 0 < edge < goal
    val = {"within noise": edge, "resolved": edge - 1 / n, "none": goal}[shortfall]
    scripted = [(val, 1.0), (1.0, 1.0)]
    monkeypatch.setattr(m, "_train_task", lambda task, **kw: scripted.pop(0))
    rec = m.learn(bench.tasks[1])
    assert rec["growth_rounds"] == rounds
    assert (m.size()["expansion_ratio"] > 1.0) == (rounds > 0)
    first = rec["growth"][0]["decision"]
    assert ("within noise" in first) == (confidence is not None and shortfall == "within noise"), first
    if rounds and confidence is not None:
        assert f"by more than {n} validation images resolve" in first, first


def test_miss_threshold_by_hand():
    """Goal 0.5 on 10 images: P(X <= 1) = 11/1024 < 0.05 <= P(X <= 2) = 56/1024, so 2/10 correct
    is the lowest accuracy that is not a miss at 95 % confidence; any shortfall without one."""
    assert miss_threshold(0.5, 10, 0.95) == 0.2
    assert significant_miss(0.1, 0.5, 10, 0.95) and not significant_miss(0.2, 0.5, 10, 0.95)
    assert miss_threshold(0.5, 10, None) == 0.5 and significant_miss(0.49, 0.5, 10, None)
    assert miss_threshold(1.0, 50, 0.95) == 1.0, "a goal of 100 % is missed by any error"
    assert miss_threshold(0.5, 0, 0.95) == 0.5


@pytest.mark.parametrize("gate,rounds", [(None, 0), (1.0, 1)])
def test_training_accuracy_gate_expands(gate, rounds):
    m, bench = _method({"goal": "explicit", "goals": [0.0], "train_accuracy_gate": gate, "prune_interval": 0.5},
                       n_tasks=1)
    rec = m.learn(bench.tasks[0])
    assert rec["growth_rounds"] == rounds
    assert (m.size()["expansion_ratio"] > 1.0) == (rounds > 0)


@pytest.mark.parametrize("better", [False, True])
def test_retraining_kept_only_when_better(monkeypatch, better):
    m, bench = _method({"goal": "explicit", "goals": [0.0, 0.0], "grow": False, "prune_ratio": 0.5,
                        "prune_interval": 0.5, "retrain_epochs": 3, "retrain_patience": 2})
    m.learn(bench.tasks[0])
    state = {}

    def before(task, val):
        state["w"] = {n: l.weight.detach().clone() for n, l in weighted_layers(m.model)}
        state["picks"] = _picks(m, 2)

    _wrap(monkeypatch, m, "_retrain", before)
    # unpruned, ratio 0.5, then up to 3 retraining epochs
    after = [0.9, 0.9, 0.95, 0.8, 0.8] if better else [0.9, 0.9, 0.5, 0.5, 0.5]
    _script_accuracy(monkeypatch, m, [0.9, 0.9] + after[2:])
    rec = m.learn(bench.tasks[1])
    assert rec["retrain"]["kept"] is better
    same = all(torch.equal(l.weight.detach(), state["w"][n]) for n, l in weighted_layers(m.model))
    assert same is not better
    if not better:
        assert rec["retrain"]["epochs"] == 2  # early stop after 2 epochs without a better accuracy
        for n, l in weighted_layers(m.model):
            assert torch.equal(l.pick_mask(2), state["picks"][n])
        assert rec["val_accuracy"] == 0.9
    else:
        assert rec["val_accuracy"] == 0.95


def test_paper_preset_carries_the_reference_settings():
    """`--preset paper` on split-cifar100 = the reference scripts' values (ivclab/CPG experiment1)."""
    from unforget.config import resolve
    from unforget.methods.cpg import CPGOptions, PackNetOptions, PAEOptions

    def opts(method, cls):
        cfg = resolve("split-cifar100", method, preset_name="paper")
        return cfg, cls.model_validate(cfg.methods[method])

    cfg, cpg = opts("cpg", CPGOptions)
    assert cfg.model.name == "vgg16_bn" and cfg.model.width == 1.0
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.lr_milestones) == (100, 32, 0.01, [50, 80])
    assert ratio_ladder(cpg.prune_ratio, cpg.prune_interval) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    assert (cpg.prune_epochs, cpg.prune_lr, cpg.prune_within_epochs, cpg.prune_frequency) == (20, 1e-3, 4, 10)
    assert (cpg.retrain_epochs, cpg.retrain_lr, cpg.retrain_pick_lr, cpg.retrain_patience) == (30, 1e-3, 1e-4, 5)
    assert (cpg.pick_lr, cpg.pick_lr_milestones, cpg.pick_lr_gamma, cpg.pick_freeze_epoch) == (5e-4, [50], 0.2, 70)
    assert (cpg.max_expansion, cpg.grow_step, cpg.train_accuracy_gate, cpg.goal_tolerance) == (1.5, 0.5, 0.95, 0.0)
    _, pae = opts("pae", PAEOptions)
    assert (pae.goal, pae.max_expansion, pae.picks) == ("fine-max", 2.0, "all")
    _, packnet = opts("packnet", PackNetOptions)
    assert (packnet.prune_ratio, packnet.prune_epochs, packnet.prune_lr, packnet.compact) == (0.6, 30, 1e-3, "fixed")


@pytest.mark.parametrize("own_free", [True, False])
def test_pick_learning_rate_schedule(own_free):
    """Pick lr x0.2 from epoch 50, 0 from epoch 70 only when the task has free weights of its own
    (CPG_cifar100_main_normal.py: ``stop_lr_mask``)."""
    m, _ = _method({"pick_lr_milestones": [50], "pick_lr_gamma": 0.2, "pick_freeze_epoch": 70}, n_tasks=1)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=5e-4)
    sched = m._pick_schedule(opt, own_free=own_free)
    lrs = []
    for _ in range(80):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[49] == pytest.approx(5e-4) and lrs[50] == pytest.approx(1e-4) and lrs[69] == pytest.approx(1e-4)
    assert lrs[70] == (0.0 if own_free else pytest.approx(1e-4))


# ------------------------------------------------------------------ compact_search: bisect (issue 30)
def _accuracy_by_ratio(monkeypatch, m, met_up_to: float, unpruned: float = 0.95) -> list[float]:
    """Validation accuracy 0.9 at pruning ratios up to ``met_up_to``, 0.1 above (goal 0.5); the
    ratio is read off the model (share of the task's weights released). Returns the ratios seen."""
    seen: list[float] = []

    def fake(model, task, split="val"):
        owned = sum(int((l.owner == task.id).sum()) for _, l in weighted_layers(model))
        if not seen and not getattr(fake, "started", False):
            fake.started, fake.claimed = True, owned
            return unpruned
        r = round(1 - owned / fake.claimed, 2)
        seen.append(r)
        return 0.9 if r <= met_up_to + 1e-9 else 0.1

    monkeypatch.setattr(m.trainer, "accuracy", fake)
    return seen


def test_bisect_tries_the_largest_first_then_halves_and_keeps_the_largest_that_met(monkeypatch):
    m, bench = _method({"goal": "explicit", "goals": [0.5], "grow": False, "compact_search": "bisect",
                        "retrain_epochs": 0}, n_tasks=1)
    snaps = []
    real_snapshot = m._snapshot
    monkeypatch.setattr(m, "_snapshot", lambda: snaps.append(real_snapshot()) or snaps[-1])
    seen = _accuracy_by_ratio(monkeypatch, m, met_up_to=0.6)
    rec = m.learn(bench.tasks[0])
    # ladder 0.1 .. 0.9, 0.95: 0.95 misses, 0.5 meets, 0.7 misses, 0.6 meets: 4 steps, not 10
    assert seen == [0.95, 0.5, 0.7, 0.6]
    assert list(rec["compaction"]) == ["0.95", "0.5", "0.7", "0.6"] and rec["network_epochs"] == 2 + 4
    assert rec["pruning_ratio"] == 0.6 and rec["val_accuracy"] == 0.9
    # the model is exactly the state kept after the 0.6 step (snapshots: unpruned, 0.5, 0.6)
    kept = snaps[-1]
    for k, v in m.model.state_dict().items():
        if k in kept:
            assert torch.equal(v, kept[k]), f"{k} differs from the state that met the goal"


def test_bisect_stops_after_one_step_when_the_largest_ratio_meets(monkeypatch):
    m, bench = _method({"goal": "explicit", "goals": [0.5], "grow": False, "compact_search": "bisect",
                        "retrain_epochs": 0}, n_tasks=1)
    seen = _accuracy_by_ratio(monkeypatch, m, met_up_to=0.95)
    rec = m.learn(bench.tasks[0])
    assert seen == [0.95] and rec["pruning_ratio"] == 0.95


def test_bisect_keeps_the_reserve_ratio_when_nothing_above_it_met(monkeypatch):
    m, bench = _method({"goal": "explicit", "goals": [0.5, 0.5, 0.5], "grow": False, "compact_search": "bisect",
                        "retrain_epochs": 0, "reserve_for_tasks": 4}, n_tasks=3)  # reserve ratio 0.8
    seen = _accuracy_by_ratio(monkeypatch, m, met_up_to=0.3)
    rec = m.learn(bench.tasks[0])
    assert seen[-1] == 0.8 and rec["pruning_ratio"] == 0.8  # below the reserve: pruned to it anyway
    released = sum(int((l.owner == 0).sum()) for _, l in weighted_layers(m.model))
    total = sum(l.owner.numel() for _, l in weighted_layers(m.model))
    assert abs(released / total - 0.8) < 0.02


def test_the_reference_ladder_is_the_default_and_the_paper_presets():
    from unforget.config import preset
    from unforget.methods.engine import EngineOptions

    assert EngineOptions().compact_search == "ladder"
    for bench in ("split-cifar100", "split-cifar10", "fine-grained", "facial", "permuted-mnist", "cifar10-cifar100"):
        for method, options in preset(bench, "paper").get("methods", {}).items():
            assert options.get("compact_search", "ladder") == "ladder", (bench, method)
            if method in ("cpg", "pae"):  # growth on any shortfall, as the reference (not the default's test)
                assert "goal_confidence" in options and options["goal_confidence"] is None, (bench, method)
