"""Serve one finished task of a task-aware VGG16-BN (the CPG paper's CIFAR network) against the
same task exported as a plain network (`unforget.export.plain_network`), in one process, and
print the time ratio (issue 11: goal <= 1.02).

The network holds three tasks as CPG leaves them: task 1 compacted to 50 % of its weights, task
2 with learned picks over task 1's weights and its own share of the released ones, task 3 the
same. Task 2 is served. ``--no-cache`` serves with the per-call masking of earlier versions
(``TaskContext.serve_cache = 0``) for comparison. Inputs: random CIFAR-shaped tensors.

    python benchmarks/serve_speed.py --widths 0.5 1.0 --batches 1 64
"""
from __future__ import annotations

import argparse

import torch

from unforget.export import plain_network
from unforget.layers import begin_task, end_task, to_task_aware, weighted_layers
from unforget.methods.compacting import own_counts, prune_own
from unforget.models import build_model

from timing import median_seconds


def cpg_like(width: float) -> torch.nn.Module:
    torch.manual_seed(0)
    net = to_task_aware(build_model("vgg16_bn", (3, 32, 32), width=width))
    for t in (1, 2, 3):
        begin_task(net, t, 10, claim_free=True, learn_picks=t > 1)
        for _, layer in weighted_layers(net):  # picks: about half of the earlier weights
            if str(t) in layer.scores:
                with torch.no_grad():
                    layer.scores[str(t)].uniform_(0.0, 0.01)
        prune_own(net, t, 0.5, own_counts(net, t))
        end_task(net, t)
    return net.eval()


def timed(fn, x: torch.Tensor, repeats: int) -> float:
    """Median seconds per call of ``fn(x)`` without autograd (:func:`timing.median_seconds`)."""
    with torch.no_grad():
        return median_seconds(lambda: fn(x), repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64], help="batch sizes")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave default)")
    ap.add_argument("--no-cache", action="store_true", help="serve without the materialised-weight cache")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; task 2 of 3, median of {a.repeats} calls")
    print("| width | batch | served (ms) | plain (ms) | served / plain |")
    print("|---|---|---|---|---|")
    for width in a.widths:
        net = cpg_like(width)
        net.task_context.serve_cache = 0 if a.no_cache else 4
        plain = plain_network(net, 2)
        for batch in a.batches:
            x = torch.randn(batch, 3, 32, 32)
            with torch.no_grad():
                assert torch.equal(net(x, 2), plain(x)), "served and plain logits differ"
            # interleave the two so that machine noise hits both alike
            served, dense = [], []
            for _ in range(3):
                served.append(timed(lambda v: net(v, 2), x, a.repeats))
                dense.append(timed(plain, x, a.repeats))
            s, d = min(served), min(dense)
            print(f"| {width} | {batch} | {1e3 * s:.2f} | {1e3 * d:.2f} | {s / d:.3f} |")


if __name__ == "__main__":
    main()
