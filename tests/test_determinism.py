"""Reproducibility settings (issue 27): ``train.deterministic`` reaches PyTorch for every fit and
is restored after, is recorded in results.json and the checkpoint, a resume under other settings
is refused or warned about in one line, and an operation without a deterministic implementation
stops the run with one line naming the flag."""
import json
import sys

import pytest
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_host_syncs import _plain, _task  # noqa: E402
from unforget.cli import main  # noqa: E402
from unforget.config import TrainConfig  # noqa: E402
from unforget.training import Trainer, determinism  # noqa: E402
from unforget.training.hooks import Hook  # noqa: E402


class _Probe(Hook):
    def __init__(self, fail: bool = False):
        self.seen: set = set()
        self.fail = fail

    def before_forward(self, state):
        self.seen.add((torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark))
        if self.fail:  # what PyTorch raises for e.g. adaptive_avg_pool2d's CUDA backward
            raise RuntimeError("adaptive_avg_pool2d_backward_cuda does not have a deterministic implementation, "
                               "but you set 'torch.use_deterministic_algorithms(True)'.")


@pytest.mark.parametrize("deterministic", [True, False])
def test_the_flag_reaches_pytorch_inside_a_fit_and_is_restored_after(deterministic):
    before = torch.are_deterministic_algorithms_enabled()
    trainer = Trainer(TrainConfig(epochs=1, batch_size=8, deterministic=deterministic), progress=False)
    net, opts = _plain(trainer)
    probe = _Probe()
    trainer.fit(net, _task(16), opts, hooks=[probe])
    assert probe.seen == {(deterministic, False)} if deterministic else {(False, torch.backends.cudnn.benchmark)}
    assert torch.are_deterministic_algorithms_enabled() == before


def test_an_operation_without_a_deterministic_implementation_is_one_line():
    trainer = Trainer(TrainConfig(epochs=1, batch_size=8), progress=False)
    net, opts = _plain(trainer)
    with pytest.raises(determinism.NondeterministicOperation) as e:
        trainer.fit(net, _task(16), opts, hooks=[_Probe(fail=True)])
    assert "\n" not in str(e.value) and "--no-deterministic" in str(e.value)
    assert str(e.value).startswith("adaptive_avg_pool2d_backward_cuda has no deterministic implementation")
    off = Trainer(TrainConfig(epochs=1, batch_size=8, deterministic=False), progress=False)
    net, opts = _plain(off)
    with pytest.raises(RuntimeError, match="does not have a deterministic"):  # not ours to reword when off
        off.fit(net, _task(16), opts, hooks=[_Probe(fail=True)])


def test_settings_are_recorded_and_a_resume_under_others_is_refused_or_warned(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert main(["run", "-q", "--epochs", "1", "--no-deterministic", "--out", str(out)]) == 0
    rec = json.loads((out / "results.json").read_text())
    assert rec["config"]["train"]["deterministic"] is False
    assert rec["reproducibility"]["deterministic"] is False and rec["reproducibility"]["device_type"] == "cpu"
    assert rec["reproducibility"]["torch"] == torch.__version__
    # the deterministic setting is part of the run: resuming without --no-deterministic names it
    capsys.readouterr()
    assert main(["run", "-q", "--epochs", "1", "--out", str(out), "--resume"]) != 0
    err = capsys.readouterr().err.strip()
    assert "train.deterministic: False -> True" in err and len(err.splitlines()) == 1
    # another PyTorch build (or device type) is warned about, and the run goes on
    real = determinism.record
    monkeypatch.setattr(determinism, "record", lambda *a: {**real(*a), "torch": "0.0.0-other"})
    with pytest.warns(UserWarning, match=r"torch: .* -> 0\.0\.0-other.*not end bit-identical"):
        assert main(["run", "-q", "--epochs", "1", "--no-deterministic", "--out", str(out), "--resume"]) == 0

