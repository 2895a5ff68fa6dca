"""Training epoch of VGG16-BN (plain and task-aware, task 2 with learned picks) with
``train.memory_format`` contiguous against channels_last, in one process, alternating, and the
ratio channels_last / contiguous per network (best of ``--repeats``).

    python benchmarks/memory_format.py --width 0.25 --batch-size 32 --batches 20 --repeats 3
"""
from __future__ import annotations

import argparse
import time

import torch

from unforget.config import TrainConfig
from unforget.data.task import Split, Task
from unforget.layers import begin_task, end_task, to_task_aware, weighted_layers
from unforget.models import build_model
from unforget.training import Trainer


class _Float:
    def __call__(self, x, train=False, generator=None):
        return x


def _network(kind: str, width: float, trainer: Trainer):
    torch.manual_seed(0)
    if kind == "plain":
        m = build_model("vgg16_bn", (3, 32, 32), width=width)
        m.add_head(2, 10)
        return m, [trainer.optimizer(m.parameters())]
    m = to_task_aware(build_model("vgg16_bn", (3, 32, 32), width=width))
    begin_task(m, 1, 10)
    for _, layer in weighted_layers(m):  # task 1 keeps half its weights
        layer.owner[torch.rand(layer.owner.shape) < 0.5] = 0
    end_task(m, 1)
    begin_task(m, 2, 10, learn_picks=True)
    scores = [p for n, p in m.named_parameters() if ".scores." in n]
    rest = [p for n, p in m.named_parameters() if ".scores." not in n]
    return m, [trainer.optimizer(rest), trainer.pick_optimizer(scores, 5e-4)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    n = a.batch_size * a.batches
    x = torch.randn(n, 3, 32, 32)
    few = Split(x[:2], torch.zeros(2, dtype=torch.long))
    task = Task(2, "bench", [str(i) for i in range(10)], Split(x, torch.randint(0, 10, (n,))), few, few, _Float(),
                (3, 32, 32))
    best: dict = {}
    for _ in range(a.repeats):
        for fmt in ("contiguous", "channels_last"):
            trainer = Trainer(TrainConfig(epochs=1, batch_size=a.batch_size, lr=0.01, memory_format=fmt),
                              device=a.device, progress=False)
            for kind in ("plain", "task-aware"):
                model, opts = _network(kind, a.width, trainer)
                model.to(a.device)
                trainer.fit(model, task, opts, epochs=1)  # warm-up
                t0 = time.perf_counter()
                trainer.fit(model, task, opts, epochs=1)
                dt = time.perf_counter() - t0
                best[(kind, fmt)] = min(dt, best.get((kind, fmt), float("inf")))
    print(f"VGG16-BN width {a.width}, batch {a.batch_size}, {a.batches} batches, {torch.get_num_threads()} threads, "
          f"{a.device}, best of {a.repeats}")
    for kind in ("plain", "task-aware"):
        c, cl = best[(kind, "contiguous")], best[(kind, "channels_last")]
        print(f"{kind:>10}: contiguous {c:.3f} s   channels_last {cl:.3f} s   ratio channels_last / contiguous {cl / c:.3f}")


if __name__ == "__main__":
    main()
