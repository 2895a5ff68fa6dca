"""A training step never waits on the host (issue 23, item 1): loss, accuracy and the divergence
check stay on the device and are read once per epoch, so the host reads of a fit do not grow
with its number of steps. Counted on the CPU with a TorchFunctionMode, as they would happen on a
GPU (every ``item`` / ``bool`` / ``int`` / ``float`` / ``tolist`` of a tensor is a sync there)."""
import pytest
import torch

from unforget.config import TrainConfig
from unforget.data.task import Split, Task
from unforget.layers import begin_task, end_task, to_task_aware, weighted_layers
from unforget.models import build_model
from unforget.training import Trainer
from unforget.training.counters import HostReads
from unforget.training.trainer import TrainingDiverged

class _Float:
    def __call__(self, x, train=False, generator=None):
        return x


def _task(n: int, shape=(3, 32, 32)) -> Task:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    return Task(2, "syncs", list("abcd"), Split(x, y), Split(x[:8], y[:8]), Split(x[:8], y[:8]), _Float(), shape)


def _plain(trainer: Trainer):
    net = build_model("vgg16_bn_light", (3, 32, 32), width=0.0625)
    net.add_head(2, 4)
    return net, [trainer.optimizer(net.parameters())]


def _task_aware(trainer: Trainer):
    """Task 2 with learned picks over half of task 1's weights, optimizers as the engine builds them."""
    net = to_task_aware(build_model("vgg16_bn_light", (3, 32, 32), width=0.0625))
    begin_task(net, 1, 4)
    for _, layer in weighted_layers(net):
        layer.owner[torch.rand(layer.owner.shape, generator=torch.Generator().manual_seed(1)) < 0.5] = 0
    end_task(net, 1)
    begin_task(net, 2, 4, learn_picks=True)
    shared = [layer.weight for _, layer in weighted_layers(net)]
    rest = [p for n, p in net.named_parameters() if all(p is not s for s in shared) and ".scores." not in n]
    scores = [p for n, p in net.named_parameters() if ".scores." in n]
    for _, layer in weighted_layers(net):
        layer.decay = 4e-5
    return net, [trainer.optimizer([{"params": shared, "weight_decay": 0.0}, {"params": rest}]),
                 trainer.pick_optimizer(scores, 5e-4)]


def _reads_of_a_fit(build, steps: int) -> int:
    trainer = Trainer(TrainConfig(epochs=2, batch_size=8), progress=False)
    net, opts = build(trainer)
    task = _task(8 * steps)
    with HostReads() as reads:
        trainer.fit(net, task, opts)
    return reads.count


@pytest.mark.parametrize("build", [_plain, _task_aware], ids=["plain", "task-aware"])
def test_no_host_read_inside_a_training_step(build):
    few, many = _reads_of_a_fit(build, 3), _reads_of_a_fit(build, 9)
    assert few == many, f"{many - few} host reads in 12 more training steps"
    assert few <= 4 * 2  # a handful per epoch, read once at its end


def test_divergence_is_still_caught_with_the_epoch_and_phase():
    trainer = Trainer(TrainConfig(epochs=3, batch_size=8, lr=1e30), progress=False)
    net, opts = _plain(trainer)
    with pytest.raises(TrainingDiverged, match=r"task 2 \(compact 0.50, epoch 1\).*not finite"):
        trainer.fit(net, _task(32), opts, desc="compact 0.50")
