"""Accuracy goals (scratch, fine-avg, fine-max, tolerance, explicit), the fine-tuning reference
chains (Hung et al. 2019, Sec. 4.1, Table 2) and the ``finetune-copies`` baseline."""
from __future__ import annotations

import random

import pytest
import torch

from synthetic import assert_same_logits, gaussian_benchmark, reload_via_checkpoint
from unforget.checkpoint import load_checkpoint, save_checkpoint
from unforget.config import RunConfig
from unforget.errors import ConfigError
from unforget.methods.base import module_bytes
from unforget.methods import goals as goals_module
from unforget.methods.goals import CHANCE_MARGIN, GOAL_SOURCES, GoalSetter, chance_level
from unforget.methods.independent import FinetuneChain
from unforget.runner import build_method

TOL = 0.01


def _config(method: str = "scratch", seed: int = 0, options: dict | None = None) -> RunConfig:
    return RunConfig.model_validate({"method": method, "seed": seed, "model": {"name": "mlp", "width": 0.03},
                                     "train": {"epochs": 2, "batch_size": 16, "lr": 0.05},
                                     "methods": {method: options or {}} if options else {}})


def _bench(n_tasks: int = 3):
    return gaussian_benchmark(n_tasks, 3, 12, 48, seed=3)


def _run_goals(source: str, bench, seed: int = 0, repeats: int = 3, perturb: bool = False, **kw) -> GoalSetter:
    """Drive a goal setter the way the engine does, task after task (``perturb``: draw from
    the global random streams in between, as the method's own training would)."""
    method = build_method(_config(seed=seed), bench, progress=False)
    gs = GoalSetter(method, source, TOL, None, repeats=repeats, **kw)
    for task in bench.tasks:
        if perturb:
            torch.randn(task.id + 3), random.random()
        goal = gs.before(task)
        gs.after_training(goal, 0.123)
        method.learned.append(task.id)
    return gs


def _shared(model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.named_parameters() if not k.startswith("heads.")}


def _close(a, b) -> bool:
    sa, sb = _shared(a), _shared(b)
    return all(torch.allclose(sa[k], sb[k], atol=1e-6) for k in sa)


# ----------------------------------------------------------------------------- fine-avg / fine-max
def test_fine_goals_are_mean_and_max_of_the_chains_accuracies():
    bench = _bench()
    avg = _run_goals("fine-avg", bench)
    mx = _run_goals("fine-max", bench)
    for task in bench.tasks:
        # re-evaluate every chain's kept model independently of the goal setter
        accs = [avg.method.trainer.accuracy(c.models[task.id], task, "val") for c in avg.chains]
        assert len(accs) == 3 and all(0.0 <= a <= 1.0 for a in accs)
        assert avg.records[task.id]["reference"] == accs
        assert avg.records[task.id]["source"] == "fine-avg"
        assert avg.records[task.id]["goal"] == pytest.approx(max(0.0, sum(accs) / len(accs) - TOL), abs=1e-12)
        # same seed, same configuration: the fine-max setter trained the very same chains
        assert mx.records[task.id]["reference"] == accs
        assert mx.records[task.id]["goal"] == pytest.approx(max(0.0, max(accs) - TOL), abs=1e-12)
    # task 1: the R from-scratch models of the chains, not the method's own accuracy (0.123)
    assert avg.records[1]["parents"] == [None, None, None]
    assert all(p is not None for t in (2, 3) for p in avg.records[t]["parents"])


def test_chain_fine_tunes_a_copy_of_an_earlier_task_model():
    bench = _bench(5)
    method = build_method(_config(), bench, progress=False)
    chain = FinetuneChain(method, repeat=0, lr=0.05)
    for task in bench.tasks[:3]:  # tasks 1-3 trained for real: their models differ
        chain.learn(task)
    chain.lr = 1e-9  # tasks 4, 5: fine-tuning barely moves the copied weights
    for task in bench.tasks[3:]:
        py_state, torch_state = random.getstate(), torch.random.get_rng_state()
        chain.learn(task)
        assert random.getstate() == py_state and torch.equal(torch.random.get_rng_state(), torch_state)
        t, p = task.id, chain.parents[task.id]
        assert p is not None and 1 <= p < t and p in chain.models
        assert list(chain.models[t].heads) == [str(t)]
        child, parent = chain.models[t], chain.models[p]
        assert _close(child, parent)
        for other in set(range(1, t)) - {p}:  # and not from another earlier model
            if not _close(chain.models[other], parent):
                assert not _close(child, chain.models[other]), (t, p, other)
    for t in (2, 3):
        assert chain.parents[t] < t


def test_chains_differ_across_repeats_and_are_reproducible():
    bench = _bench()
    a = _run_goals("fine-avg", bench, repeats=4)
    b = _run_goals("fine-avg", bench, repeats=4, perturb=True)
    c = _run_goals("fine-avg", bench, seed=1, repeats=4)
    parents = [ch.parents[3] for ch in a.chains]
    assert len(set(parents)) > 1, parents  # random parents are drawn per repeat
    first = [_shared(ch.models[1]) for ch in a.chains]
    assert not any(torch.equal(first[0][k], first[1][k]) for k in first[0])
    # each repeat starts task 1 from its own initialisation (seen with a learning rate of ~0)
    frozen = build_method(_config().model_copy(update={"train": _config().train.model_copy(update={"lr": 1e-12})}),
                          bench, progress=False)
    inits = [FinetuneChain(frozen, repeat=r) for r in range(2)]
    for ch in inits:
        ch.learn(bench.tasks[0])
    assert not _close(inits[0].models[1], inits[1].models[1])
    for ca, cb in zip(a.chains, b.chains):  # the same seed reproduces every chain bit for bit
        assert ca.parents == cb.parents and ca.accuracies == cb.accuracies
        for t in ca.models:
            sa, sb = ca.models[t].state_dict(), cb.models[t].state_dict()
            assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(x, y) for x, y in zip(_shared(a.chains[0].models[1]).values(),
                                                     _shared(c.chains[0].models[1]).values()))
    # the parent draw is uniform over the earlier tasks, per repeat and task
    chains = [FinetuneChain(a.method, repeat=r) for r in range(40)]
    for ch in chains:
        ch.models = dict.fromkeys(range(1, 10))
    draws = [ch.parent_for(10) for ch in chains]
    assert all(1 <= d <= 9 for d in draws) and len(set(draws)) >= 5
    assert draws == [ch.parent_for(10) for ch in chains]


def test_goal_setter_state_roundtrip_and_resume(tmp_path):
    bench = _bench()
    method = build_method(_config(), bench, progress=False)
    gs = GoalSetter(method, "fine-max", TOL, None, repeats=2)
    for task in bench.tasks[:2]:
        gs.after_training(gs.before(task), 0.5)
        method.learned.append(task.id)
    tensors, meta = gs.state()
    save_checkpoint(tmp_path / "g.safetensors", {f"goal.{k}": v for k, v in tensors.items()}, {"goals": meta})
    loaded, lmeta = load_checkpoint(tmp_path / "g.safetensors")
    fresh_method = build_method(_config(), bench, progress=False)
    fresh = GoalSetter(fresh_method, "fine-max", TOL, None, repeats=2)
    fresh.load_state({k[len("goal."):]: v for k, v in loaded.items()}, lmeta["goals"])
    fresh_method.learned.extend([1, 2])
    assert fresh.records == gs.records
    probe = torch.randn(4, 12, generator=torch.Generator().manual_seed(0))
    for c, f in zip(gs.chains, fresh.chains):
        assert f.parents == c.parents and f.accuracies == c.accuracies
        for t, m in c.models.items():
            assert torch.equal(f.models[t](probe, t), m(probe, t))
    # resuming continues the chains exactly as the uninterrupted run does
    assert fresh.before(bench.tasks[2]) == gs.before(bench.tasks[2])
    with pytest.raises(ConfigError, match="chain"):
        GoalSetter(fresh_method, "fine-max", TOL, None, repeats=3).load_state({}, lmeta["goals"])


# ----------------------------------------------------------------------------- other sources
def test_scratch_tolerance_explicit_records():
    bench = _bench(2)
    method = build_method(_config(), bench, progress=False)
    s = GoalSetter(method, "scratch", TOL, None)
    assert s.before(bench.tasks[0]) is None  # the first task's own network is the scratch model
    assert s.after_training(None, 0.8) == pytest.approx(0.8 - TOL)
    assert s.records[1] == {"source": "scratch", "reference": [0.8], "goal": pytest.approx(0.8 - TOL), "tolerance": TOL,
                            "chance": chance_level(bench.tasks[0])}
    method.learned.append(1)
    g = s.before(bench.tasks[1])
    assert g is not None and s.after_training(g, 0.1) == g
    ref = s.records[2]["reference"]
    assert len(ref) == 1 and g == pytest.approx(max(0.0, ref[0] - TOL))
    t = GoalSetter(method, "tolerance", 0.9, None)
    assert t.before(bench.tasks[0]) is None and t.after_training(None, 0.5) == 0.0
    e = GoalSetter(method, "explicit", TOL, [0.3, 0.7])
    assert e.after_training(e.before(bench.tasks[1]), 0.1) == 0.7
    assert e.records[2]["reference"] == [] and e.records[2]["goal"] == 0.7
    assert s.chains == []


# ----------------------------------------------------------------------------- untrained references
def test_chance_level_is_the_majority_validation_share():
    task = _bench(1).tasks[0]
    counts = torch.bincount(task.val.y, minlength=task.n_classes)
    assert chance_level(task) == pytest.approx(float(counts.max()) / len(task.val.y))
    assert 1 / task.n_classes <= chance_level(task) < 1


@pytest.mark.parametrize("source", ["scratch", "fine-avg"])
def test_a_reference_near_chance_never_sets_the_goal(monkeypatch, source):
    bench = _bench(2)
    task = bench.tasks[1]
    chance = chance_level(task)
    for above, falls_back in ((CHANCE_MARGIN - 0.01, True), (CHANCE_MARGIN + 0.01, False)):
        reference = chance + above  # what every reference model "reaches" on task 2

        def fake_train(method, model, task, **kw):
            return reference if task.id == 2 else 0.9

        monkeypatch.setattr(goals_module, "train_plain", fake_train)
        monkeypatch.setattr("unforget.methods.independent.train_plain", fake_train)
        method = build_method(_config(), bench, progress=False)
        s = GoalSetter(method, source, TOL, None, repeats=2)
        s.after_training(s.before(bench.tasks[0]), 0.9)
        method.learned.append(1)
        goal = s.before(task)
        final = s.after_training(goal, 0.9)
        rec = s.records[2]
        if falls_back:
            assert goal is None and final == pytest.approx(0.9 - TOL)
            assert rec["reference"] == [0.9] and rec["unused_reference"][0] == pytest.approx(reference)
            assert "chance" in rec["fallback"] and "own unpruned accuracy" in rec["fallback"]
        else:
            assert final == pytest.approx(reference - TOL) and "fallback" not in rec
        assert "warning" not in rec and rec["chance"] == chance


def test_a_task_that_did_not_learn_is_warned_about(monkeypatch):
    bench = _bench(2)
    method = build_method(_config(), bench, progress=False)
    s = GoalSetter(method, "scratch", TOL, None)
    chance = chance_level(bench.tasks[0])
    s.after_training(s.before(bench.tasks[0]), chance + 0.02)
    assert "did not learn" in s.records[1]["warning"]
    s.after_training(s.before(bench.tasks[0]), chance + 0.2)
    assert "warning" not in s.records[1]
    with pytest.raises(ConfigError, match="goal_chance_margin"):
        GoalSetter(method, "scratch", TOL, None, chance_margin=1.5)


def test_the_fallback_reaches_results_json(monkeypatch, tmp_path):
    """A CPG run whose scratch references do not learn (the reference trainer is replaced by one
    that answers chance) sets every goal from the task's own unpruned accuracy and says so."""
    import json

    import unforget

    bench = _bench(2)
    monkeypatch.setattr(goals_module, "train_plain", lambda method, model, task, **k: chance_level(task))
    cfg = {"model": {"name": "mlp", "width": 0.03}, "train": {"epochs": 2, "batch_size": 16, "lr": 0.05},
           "methods": {"cpg": {"goal": "scratch", "goal_tolerance": TOL}}}
    unforget.run(bench, "cpg", cfg, out=tmp_path, progress=False)
    t2 = json.loads((tmp_path / "results.json").read_text())["tasks"][1]
    assert "did not learn" in t2["goal_record"]["fallback"]
    assert t2["accuracy_goal"] == pytest.approx(t2["unpruned_val_accuracy"] - TOL)
    assert "fallback" in (tmp_path / "report.md").read_text()


def test_bad_goal_options_are_config_errors():
    method = build_method(_config(), _bench(1), progress=False)
    assert GOAL_SOURCES == ("scratch", "fine-avg", "fine-max", "tolerance", "explicit")
    with pytest.raises(ConfigError) as err:
        GoalSetter(method, "finetune", TOL, None)
    msg = str(err.value)
    assert "\n" not in msg and "'finetune'" in msg and all(s in msg for s in GOAL_SOURCES)
    with pytest.raises(ConfigError, match="explicit"):
        GoalSetter(method, "explicit", TOL, None)
    with pytest.raises(ConfigError, match="goal_repeats"):
        GoalSetter(method, "fine-avg", TOL, None, repeats=0)
    with pytest.raises(ConfigError, match="finetune_lr"):
        GoalSetter(method, "fine-avg", TOL, None, finetune_lr=0.0)
    with pytest.raises(ConfigError, match="goals"):
        GoalSetter(method, "explicit", TOL, [0.5]).before(_bench(2).tasks[1])


# ----------------------------------------------------------------------------- finetune-copies
def test_finetune_copies_never_changes_earlier_tasks_and_round_trips(tmp_path):
    bench = _bench(4)
    cfg = _config("finetune-copies", options={"lr": 0.02})
    m = build_method(cfg, bench, progress=False)
    assert m.exact and m.chain.lr == 0.02
    probe = torch.randn(5, 12, generator=torch.Generator().manual_seed(0))
    recorded = {}
    for task in bench.tasks:
        rec = m.learn(task)
        assert rec["parent_task"] == m.chain.parents[task.id]
        assert (rec["parent_task"] is None) == (task.id == 1)
        recorded[task.id] = m.logits(probe, task.id)
    for t, logits in recorded.items():
        assert torch.equal(m.logits(probe, t), logits), f"task {t} changed"
    assert len({id(m.model_for(t)) for t in m.learned}) == 4
    size = m.size()
    assert size["expansion_ratio"] == 4.0 and size["released_ratio"] is None
    assert size["model_size_bytes"] == sum(module_bytes(m.model_for(t)) for t in m.learned)
    fresh = reload_via_checkpoint(m, cfg, bench, tmp_path / "c.safetensors")
    assert fresh.learned == m.learned and fresh.chain.parents == m.chain.parents
    assert_same_logits(m, fresh, m.learned, bench.input_shape)
