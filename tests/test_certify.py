"""Evaluation that costs what it must (issue 28): an exact method's earlier task whose served
network and test data are bit-identical to when R[j][j] was measured keeps R[j][j] without a
test pass; anything else is tested; --retest tests everything."""
import torch

from unforget.config import RunConfig
from unforget.data.task import Split
from unforget.evaluation.certify import certificate
from unforget.learner import Learner
from unforget.runner import run

from synthetic import gaussian_benchmark


def _config(method: str, **options) -> RunConfig:
    return RunConfig.model_validate({"method": method, "model": {"name": "mlp", "width": 0.1},
                                     "train": {"epochs": 2, "batch_size": 16}, "methods": {method: options}})


def _count_tests(learner, monkeypatch) -> list[int]:
    tested: list[int] = []
    real = Learner.test

    def counting(self, task, split="test"):
        tested.append(task.id)
        return real(self, task, split)

    monkeypatch.setattr(Learner, "test", counting)
    return tested


def test_certified_matrix_equals_the_retested_one(monkeypatch):
    bench = gaussian_benchmark(n_tasks=4, n=90)
    cfg = _config("cpg", goal="scratch", prune_interval=0.5, retrain_epochs=1)
    tested = _count_tests(None, monkeypatch)
    full = run(cfg, benchmark=bench, progress=False, retest=True)
    assert sorted(tested) == sorted(j for i in range(1, 5) for j in range(1, i + 1))  # 10 test passes
    tested.clear()
    cheap = run(cfg, benchmark=gaussian_benchmark(n_tasks=4, n=90), progress=False)
    assert sorted(tested) == [1, 2, 3, 4]  # only the diagonal
    assert cheap["accuracy_matrix"] == full["accuracy_matrix"]
    assert cheap["bwt"] == full["bwt"] == 0.0
    assert cheap["evaluation"] == {"retest": False, "tested": 4, "certified": 6}
    assert full["evaluation"] == {"retest": True, "tested": 10, "certified": 0}
    assert [t["certified"] for t in cheap["tasks"]] == [[], [1], [1, 2], [1, 2, 3]]


def test_a_changed_network_or_test_set_is_tested_again():
    bench = gaussian_benchmark(n_tasks=3, n=60)
    learner = Learner.create(_config("packnet", prune_ratio=0.5), bench, progress=False)
    learner.learn(bench.tasks[0])
    learner.learn(bench.tasks[1], test_on=bench.tasks[:1])
    assert learner.records[1]["certified"] == [1]
    with torch.no_grad():  # damage task 1's head behind the method's back: the certificate sees it
        learner.method.model.heads["1"].bias.add_(5.0)
    learner.learn(bench.tasks[2], test_on=bench.tasks[:2])
    assert learner.records[2]["certified"] == [2]
    assert learner.R[2][0] == learner.test(bench.tasks[0])  # measured, not R[0][0] carried over

    t2 = bench.tasks[1]
    before = certificate(learner.method.model_for(2), t2)
    t2.test = Split(t2.test.x.flip(0), t2.test.y.flip(0))  # same images, another order: other data bytes
    assert certificate(learner.method.model_for(2), t2) != before
    assert learner.certified_accuracy(t2) is None


def test_methods_that_may_forget_are_always_tested():
    bench = gaussian_benchmark(n_tasks=3, n=60)
    learner = Learner.create(_config("finetune"), bench, progress=False)
    for t in bench.tasks:
        learner.learn(t, test_on=bench.tasks[:t.id - 1])
    assert all(not rec["certified"] for rec in learner.records)
    assert "certificate" not in learner.records[0]


def test_certificates_survive_a_resume(tmp_path):
    cfg = _config("packnet", prune_ratio=0.5)
    bench = gaussian_benchmark(n_tasks=3, n=60)
    bench.tasks = bench.tasks[:2]
    run(cfg, benchmark=bench, out_dir=tmp_path / "r", progress=False)
    resumed = run(cfg, benchmark=gaussian_benchmark(n_tasks=3, n=60), out_dir=tmp_path / "r", progress=False,
                  resume=True)
    assert resumed["tasks"][2]["certified"] == [1, 2]
    whole = run(cfg, benchmark=gaussian_benchmark(n_tasks=3, n=60), progress=False, retest=True)
    assert resumed["accuracy_matrix"] == whole["accuracy_matrix"]
