"""Training throughput of VGG16-BN three ways, with the per-step counts that decide GPU speed
(issue 23, item 7):

- **bare loop**: the zoo's plain VGG16-BN, a plain PyTorch loop, the data already on the device,
  loss and accuracy summed on the device (the limit);
- **Trainer, plain**: the same network through :class:`unforget.training.Trainer`;
- **Trainer, task-aware**: task 2 with learned picks over half of task 1's weights, optimizers as
  the engine builds them (the costliest step of CPG's picking).

For each batch size and precision: images per second (best of ``--repeats`` epochs of
``--batches`` steps), aten ops dispatched per step (a ``TorchDispatchMode`` count of one epoch,
divided by its steps) and host reads per step (``item`` / ``bool`` / ``int`` / ``float`` /
``tolist`` of a tensor, each a device sync on a GPU). Ratios are against the bare loop, in the
same process.

    OMP_NUM_THREADS=2 python benchmarks/train_throughput.py --device cpu --width 0.25 --batch-sizes 32,128
    python benchmarks/train_throughput.py --device cuda --width 1.0            # batch 32/128/512, fp32 and bf16
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from unforget.config import TrainConfig
from unforget.data.task import Split, Task
from unforget.layers import begin_task, end_task, to_task_aware, weighted_layers
from unforget.models import build_model
from unforget.training import Trainer
from unforget.training.counters import HostReads, OpCount

class _AsIs:
    def __call__(self, x, train=False, generator=None):
        return x


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _task(n: int) -> Task:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return Task(2, "bench", [str(i) for i in range(10)], Split(x, y), Split(x[:2], y[:2]), Split(x[:2], y[:2]),
                _AsIs(), (3, 32, 32))


def _plain_net(width: float, device):
    net = build_model("vgg16_bn", (3, 32, 32), width=width)
    net.add_head(2, 10)
    return net.to(device)


def _aware_net(width: float, device, trainer: Trainer, weight_decay: float):
    net = to_task_aware(build_model("vgg16_bn", (3, 32, 32), width=width)).to(device)
    begin_task(net, 1, 10)
    gen = torch.Generator().manual_seed(1)
    for _, layer in weighted_layers(net):  # task 1 keeps half its weights, releases the rest
        layer.owner[(torch.rand(layer.owner.shape, generator=gen) < 0.5).to(device)] = 0
    end_task(net, 1)
    begin_task(net, 2, 10, learn_picks=True)
    shared = [layer.weight for _, layer in weighted_layers(net)]
    rest = [p for n, p in net.named_parameters() if all(p is not s for s in shared) and ".scores." not in n]
    scores = [p for n, p in net.named_parameters() if ".scores." in n]
    for _, layer in weighted_layers(net):
        layer.decay = weight_decay
    return net, [trainer.optimizer([{"params": shared, "weight_decay": 0.0}, {"params": rest}]),
                 trainer.pick_optimizer(scores, 5e-4)]


def bare_epoch(net, opt, x, y, batch: int, amp, device) -> None:
    """One epoch of a bare loop: no host read, data on the device."""
    correct = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), device=device)
    for i in range(0, len(x) - batch + 1, batch):
        xb, yb = x[i:i + batch], y[i:i + batch]
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = net(xb, 2)
        loss = F.cross_entropy(logits.float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        correct += (logits.argmax(1) == yb).sum()
        loss_sum += loss.detach()


def _timed(fn, device, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def _counted(fn) -> tuple[int, int]:
    with OpCount() as ops, HostReads() as reads:
        fn()
    return ops.count, reads.count


def measure(width: float, batch: int, batches: int, precision: str, device: torch.device, repeats: int) -> dict:
    n = batch * batches
    task = _task(n)
    amp = {"bf16": torch.bfloat16, "32": None}[precision]
    cfg = TrainConfig(epochs=1, batch_size=batch, lr=0.01, weight_decay=4e-5, precision=precision)
    trainer = Trainer(cfg, device=str(device), progress=False)
    torch.manual_seed(0)
    bare = _plain_net(width, device)
    bare_opt = torch.optim.SGD(bare.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=4e-5, foreach=True)
    x, y = task.train.x.to(device), task.train.y.to(device)
    plain = _plain_net(width, device)
    plain_opts = [trainer.optimizer(plain.parameters())]
    aware, aware_opts = _aware_net(width, device, trainer, cfg.weight_decay)
    runs = {"bare loop": lambda: bare_epoch(bare, bare_opt, x, y, batch, amp, device),
            "Trainer, plain": lambda: trainer.fit(plain, task, plain_opts, epochs=1),
            "Trainer, task-aware": lambda: trainer.fit(aware, task, aware_opts, epochs=1)}
    out = {}
    for name, fn in runs.items():
        seconds = _timed(fn, device, repeats)
        ops, reads = _counted(fn)
        out[name] = {"img_s": n / seconds, "ops_per_step": ops / batches, "reads_per_step": reads / batches}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--width", type=float, default=1.0, help="VGG16-BN width multiplier")
    p.add_argument("--batch-sizes", default="32,128,512")
    p.add_argument("--precisions", default="32,bf16")
    p.add_argument("--batches", type=int, default=20, help="steps per timed epoch")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    device = torch.device(a.device)
    print(f"VGG16-BN width {a.width} on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}"
          f", {torch.get_num_threads()} threads), torch {torch.__version__}, {a.batches} steps per epoch, best of "
          f"{a.repeats}\n")
    print("| batch | precision | bare loop img/s | Trainer plain img/s (x bare) | task-aware img/s (x bare) | "
          "aten ops/step bare / plain / task-aware (x bare) | host reads/step bare / plain / task-aware |")
    print("|---|---|---|---|---|---|---|")
    for batch in (int(b) for b in a.batch_sizes.split(",")):
        for precision in a.precisions.split(","):
            r = measure(a.width, batch, a.batches, precision, device, a.repeats)
            b, pl, aw = r["bare loop"], r["Trainer, plain"], r["Trainer, task-aware"]
            print(f"| {batch} | {precision} | {b['img_s']:,.0f} | {pl['img_s']:,.0f} ({pl['img_s'] / b['img_s']:.2f}x) | "
                  f"{aw['img_s']:,.0f} ({aw['img_s'] / b['img_s']:.2f}x) | {b['ops_per_step']:.0f} / "
                  f"{pl['ops_per_step']:.0f} ({pl['ops_per_step'] / b['ops_per_step']:.2f}x) / {aw['ops_per_step']:.0f} "
                  f"({aw['ops_per_step'] / b['ops_per_step']:.2f}x) | {b['reads_per_step']:.2f} / "
                  f"{pl['reads_per_step']:.2f} / {aw['reads_per_step']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
