"""Time one training epoch of task-aware VGG16-BN against the same network built from plain
``nn.Conv2d`` layers, in one process, and print the ratio (issue: goal < 1.10).

The task-aware model trains task 2 with learned picks over task 1's weights (the costliest
path: masks, straight-through scores, manual weight decay). Data: random CIFAR-shaped tensors.

    python benchmarks/vgg_epoch_overhead.py --width 0.5 --batch-size 64 --batches 30
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=30, help="batches per epoch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave default)")
    ap.add_argument("--precision", choices=["32", "bf16", "16"], default="32",
                    help="train.precision of both networks (autocast)")
    ap.add_argument("--memory-format", choices=["auto", "contiguous", "channels_last"], default="auto",
                    help="train.memory_format of both networks")
    ap.add_argument("--compile", action="store_true", help="train.compile for both networks")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    n = a.batch_size * a.batches
    x = torch.randn(n, 3, 32, 32)
    task = Task(2, "bench", [str(i) for i in range(10)], Split(x, torch.randint(0, 10, (n,))),
                Split(x[:2], torch.zeros(2, dtype=torch.long)), Split(x[:2], torch.zeros(2, dtype=torch.long)),
                _Float(), (3, 32, 32))
    cfg = TrainConfig(epochs=1, batch_size=a.batch_size, lr=0.01, weight_decay=4e-5, precision=a.precision,
                      memory_format=a.memory_format, compile=a.compile)
    trainer = Trainer(cfg, progress=False)

    plain = build_model("vgg16_bn", (3, 32, 32), width=a.width)
    plain.add_head(2, 10)
    plain_opt = [trainer.optimizer(plain.parameters())]

    aware = to_task_aware(build_model("vgg16_bn", (3, 32, 32), width=a.width))
    begin_task(aware, 1, 10)
    for _, l in weighted_layers(aware):  # task 1 keeps half its weights, releases the rest
        l.owner[torch.rand(l.owner.shape) < 0.5] = 0
    end_task(aware, 1)
    begin_task(aware, 2, 10, learn_picks=True)
    shared = [l.weight for _, l in weighted_layers(aware)]
    rest = [p for n_, p in aware.named_parameters() if p not in set(shared) and ".scores." not in n_]
    scores = [p for n_, p in aware.named_parameters() if ".scores." in n_]
    aware_opt = [trainer.optimizer([{"params": shared, "weight_decay": 0.0}, {"params": rest}]),
                 trainer.pick_optimizer(scores, 5e-4)]  # as the engine builds it
    for _, l in weighted_layers(aware):
        l.decay = cfg.weight_decay  # weight decay on owned weights, folded into their gradient

    def epoch(model, opts, hooks):
        t0 = time.perf_counter()
        trainer.fit(model, task, opts, hooks, epochs=1)
        return time.perf_counter() - t0

    epoch(plain, plain_opt, [])  # warm-up both
    epoch(aware, aware_opt, [])
    tp, ta = [], []
    for _ in range(a.repeats):
        tp.append(epoch(plain, plain_opt, []))
        ta.append(epoch(aware, aware_opt, []))
    p, t = min(tp), min(ta)
    print(f"VGG16-BN width {a.width}, batch {a.batch_size}, {a.batches} batches/epoch, {torch.get_num_threads()} threads, "
          f"precision {a.precision}, memory format {a.memory_format}{', compiled' if a.compile else ''}")
    print(f"plain nn.Conv2d epoch: {p:.3f} s   task-aware epoch (task 2, learned picks): {t:.3f} s   "
          f"ratio: {t / p:.3f}  (best of {a.repeats})")


if __name__ == "__main__":
    main()
