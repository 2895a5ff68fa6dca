"""Every run says where its time goes (issue 28): exclusive seconds per phase, per task and over
the run, adding up to the run's wall time, in results.json and report.md."""
import json
import time

import pytest

from unforget.config import RunConfig
from unforget.runner import run
from unforget.training import phases
from unforget.training.phases import PHASES, PhaseClock

from synthetic import gaussian_benchmark


class _FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_nested_phases_count_each_second_once(monkeypatch):
    fake = _FakeTime()
    monkeypatch.setattr(phases.time, "perf_counter", fake)
    clock = PhaseClock()
    with clock.phase("training"):
        fake.now += 2.0
        with clock.phase("evaluation"):
            fake.now += 0.5
        fake.now += 1.0
        with clock.phase("compaction"):
            fake.now += 3.0
            with clock.phase("evaluation"):
                fake.now += 0.25
    fake.now += 10.0  # outside any phase: not counted
    assert clock.take() == {"training": 3.0, "compaction": 3.0, "evaluation": 0.75}
    assert clock.take() == {}
    with clock.phase("setup"):
        fake.now += 1.0
        assert clock.take() == {"setup": 1.0}  # an open phase counts up to now, then afresh
        fake.now += 0.5
    assert clock.take() == {"setup": 0.5}


def test_unknown_phase_is_refused():
    with pytest.raises(ValueError, match="unknown phase 'lunch'"):
        with PhaseClock().phase("lunch"):
            pass


def _config(method: str) -> RunConfig:
    options = {"cpg": {"goal": "scratch", "prune_interval": 0.5, "retrain_epochs": 1}, "packnet": {"prune_ratio": 0.5}}
    return RunConfig.model_validate({"method": method, "model": {"name": "mlp", "width": 0.1},
                                     "train": {"epochs": 2, "batch_size": 16},
                                     "methods": {method: options.get(method, {})}})


@pytest.mark.parametrize("method", ["cpg", "scratch"])
def test_phases_add_up_to_the_wall_time(tmp_path, method):
    bench = gaussian_benchmark(n_tasks=3, n=90 if method == "cpg" else 1200)  # runs of about a second
    t0 = time.perf_counter()
    res = run(_config(method), benchmark=bench, out_dir=tmp_path / "r", progress=False)
    outside = time.perf_counter() - t0
    total = res["phase_seconds"]["total"]
    assert set(total) <= set(PHASES)
    assert sum(total.values()) == pytest.approx(res["wall_time_s"], rel=1e-9)
    # measured from outside, the run took what its phases say, within a few per cent
    assert res["wall_time_s"] == pytest.approx(outside, rel=0.05)
    for t in res["tasks"]:
        s = t["phase_seconds"]
        assert s["training"] > 0 and s["evaluation"] > 0 and s["checkpoint_writing"] > 0
        assert s["size_accounting"] > 0
    if method == "cpg":  # scratch goals and compacting are their own phases
        assert res["tasks"][1]["phase_seconds"]["goal_references"] > 0
        assert all(t["phase_seconds"]["compaction"] > 0 for t in res["tasks"])
    written = json.loads((tmp_path / "r" / "results.json").read_text())
    assert written["phase_seconds"]["total"].keys() == total.keys()
    report = (tmp_path / "r" / "report.md").read_text()
    assert "Where the time went" in report and "| T3 |" in report and "| **total** |" in report


def test_resume_adds_to_the_time_of_the_first_session(tmp_path):
    bench = gaussian_benchmark(n_tasks=3, n=60)
    cfg = _config("packnet")
    first = run(cfg, benchmark=gaussian_benchmark(n_tasks=3, n=60), out_dir=tmp_path / "r", progress=False)
    bench.tasks = bench.tasks[:2]
    part = run(cfg, benchmark=bench, out_dir=tmp_path / "p", progress=False)
    resumed = run(cfg, benchmark=gaussian_benchmark(n_tasks=3, n=60), out_dir=tmp_path / "p", progress=False,
                  resume=True)
    assert resumed["accuracy_matrix"] == first["accuracy_matrix"]
    assert resumed["wall_time_s"] > part["wall_time_s"]
    assert sum(resumed["phase_seconds"]["total"].values()) == pytest.approx(resumed["wall_time_s"], rel=1e-9)
    assert resumed["phase_seconds"]["run"]["setup"] > part["phase_seconds"]["run"]["setup"]  # both sessions
