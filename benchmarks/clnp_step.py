"""Where a CLNP training step's time goes, against a plain training step of the same MLP, in one
process (issue 9: "profile the run and say where its time goes if it takes more than an hour").

The network is the permuted-MNIST paper preset's (784 -> 2000 -> 2000 -> 10, Adam, batch 256) in
the state CLNP trains task 2 in: task 1 keeps a share of each hidden layer's units (``--kept``),
task 2 claims the rest. One step is split into the parts CLNP adds to a plain step, each timed on
its own (``timing.median_seconds`` over ``--repeats`` calls):

* ``fwd+bwd``: masked forward (``owned_weight``), cross-entropy, backward (no L1);
* ``l1``: the L1 regulator as ``L1Penalty`` applies it (its gradient added after the backward
  pass), and ``l1 by autograd``: the penalty's value and its backward, as before;
* ``grad mask``: ``GradMask.after_backward`` (frozen biases and head columns);
* ``optimizer``: ``torch.optim.Adam.step`` over the shared weights, biases, head.

The plain baseline is ``torch.nn.Sequential`` of the same shapes with Adam. Inputs are random.
``--profile`` adds ``torch.profiler``'s ten most expensive operators of the CLNP step.

    OMP_NUM_THREADS=1 python benchmarks/clnp_step.py
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from unforget.config import resolve
from unforget.data.task import SequencePlan
from unforget.layers import begin_task, end_task
from unforget.learner import build_method
from unforget.methods.units import unit_owner

from timing import median_seconds


def clnp_at_task_2(kept: float):
    """The paper preset's CLNP with task 1 done (``kept`` of each hidden layer's units) and task
    2 begun; returns ``(method, optimizers, grad mask hook, l1 hook)``."""
    cfg = resolve("permuted-mnist", "clnp", preset_name="paper")
    m = build_method(cfg, SequencePlan(input_shape=(1, 28, 28), n_tasks=10), progress=False)
    begin_task(m.model, 1, 10, claim_free=True, learn_picks=False)
    cand = [unit_owner(ul.layer) == 1 for ul in m.chain]
    dropped = [c & (torch.arange(c.numel()) >= int(kept * c.numel())) for c in cand]
    m._release(1, dropped)
    end_task(m.model, 1)
    m.learned.append(1)
    begin_task(m.model, 2, 10, claim_free=True, learn_picks=False)
    cand = [unit_owner(ul.layer) == 2 for ul in m.chain]
    m._prepare(2, cand)
    opts = m._optimizers(2, None)
    return m, opts, m._grad_masks(2, cand, False), m._l1_penalty(2, m.l1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--kept", type=float, default=0.2, help="share of each hidden layer task 1 keeps")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(0)
    x, y = torch.randn(a.batch, 1, 28, 28), torch.randint(0, 10, (a.batch,))

    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 2000), torch.nn.ReLU(),
                                torch.nn.Linear(2000, 2000), torch.nn.ReLU(), torch.nn.Linear(2000, 10))
    popt = torch.optim.Adam(plain.parameters(), lr=0.002)

    def plain_fb():
        popt.zero_grad(set_to_none=False)
        F.cross_entropy(plain(x), y).backward()

    def plain_step():
        plain_fb()
        popt.step()

    m, opts, gmask, l1 = clnp_at_task_2(a.kept)
    model = m.model.train()

    def zero():
        for o in opts:
            o.zero_grad(set_to_none=False)

    def clnp_fb():
        zero()
        F.cross_entropy(model(x, 2), y).backward()

    def clnp_l1():
        l1.after_backward(None)

    def clnp_l1_autograd():
        l1.value().backward()

    def clnp_mask():
        gmask.after_backward(None)

    def clnp_opt():
        for o in opts:
            o.step()

    def clnp_step():
        zero()
        F.cross_entropy(model(x, 2), y).backward()
        l1.after_backward(None)
        gmask.after_backward(None)
        for o in opts:
            o.step()

    rows = [("plain fwd+bwd", median_seconds(plain_fb, a.repeats)),
            ("plain optimizer", median_seconds(popt.step, a.repeats)),
            ("plain step", median_seconds(plain_step, a.repeats)),
            ("clnp fwd+bwd", median_seconds(clnp_fb, a.repeats)),
            ("clnp l1", median_seconds(clnp_l1, a.repeats)),
            ("clnp l1 autograd", median_seconds(clnp_l1_autograd, a.repeats)),
            ("clnp grad mask", median_seconds(clnp_mask, a.repeats)),
            ("clnp optimizer", median_seconds(clnp_opt, a.repeats)),
            ("clnp step", median_seconds(clnp_step, a.repeats))]
    base = dict(rows)["plain step"]
    print(f"batch {a.batch}, torch threads {torch.get_num_threads()}, task 1 keeps {a.kept:.0%} of the units")
    print(f"{'part':<20}{'ms':>9}{'x plain step':>14}")
    for name, s in rows:
        print(f"{name:<20}{s * 1e3:9.2f}{s / base:14.2f}")
    if a.profile:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(10):
                clnp_step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


if __name__ == "__main__":
    main()
