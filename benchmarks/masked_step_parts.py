"""The pieces of a task-aware training step, timed in one process (BENCHMARKS.md, "A cheaper
masked step"): masking a weight with ``torch.where`` over a ``bool`` mask against a
multiplication by a float 0/1 mask, and one optimizer step (SGD with Nesterov momentum, Adam,
AdamW, and Adam over VGG16-BN 0.25's pick scores) in PyTorch's default, ``foreach`` and
``fused`` implementations, with whether each gives the default's values bit for bit.

    python benchmarks/masked_step_parts.py
"""
from __future__ import annotations

import torch

from timing import median_seconds
from unforget.models import build_model


def masking() -> None:
    for shape in [(128, 128, 3, 3), (1024, 1024)]:
        g = torch.Generator().manual_seed(0)
        w = torch.randn(shape, generator=g)
        mask = torch.rand(shape, generator=g) < 0.6
        zero, maskf = torch.zeros(()), mask.float()
        t_where = median_seconds(lambda: torch.where(mask, w, zero), repeats=200)
        t_mul = median_seconds(lambda: w * maskf, repeats=200)
        assert torch.equal(torch.where(mask, w, zero), w * maskf)
        print(f"{tuple(shape)}: where(bool mask) {t_where * 1e6:.0f} us, x float mask {t_mul * 1e6:.0f} us "
              f"({t_where / t_mul:.1f}x), same values")


def optimizer_step(name: str, cls, shapes, **kw) -> None:
    p0 = [torch.rand(s, generator=torch.Generator().manual_seed(i)) for i, s in enumerate(shapes)]
    out = {}
    for impl in ("default", "foreach", "fused"):
        ps = [torch.nn.Parameter(p.clone()) for p in p0]
        opt = cls(ps, lr=1e-2, **kw, **({} if impl == "default" else {impl: True}))
        g = torch.Generator().manual_seed(1)
        grads = [[torch.randn(p.shape, generator=g) for p in ps] for _ in range(10)]
        for step in grads:  # the values after 10 steps
            for p, gr in zip(ps, step):
                p.grad = gr
            opt.step()
        out[impl] = ([p.detach().clone() for p in ps], median_seconds(opt.step, repeats=10))
    base = out["default"][0]
    cells = [f"{impl} {t * 1e3:.1f} ms" + ("" if impl == "default" else
             (" (same values)" if all(torch.equal(a, b) for a, b in zip(v, base)) else " (other values)"))
             for impl, (v, t) in out.items()]
    n = sum(torch.Size(s).numel() for s in shapes)
    print(f"{name}, {n / 1e6:.1f} M values: " + ", ".join(cells))


def main() -> None:
    masking()
    big = [(256, 256, 3, 3), (1024, 1024), (4096, 2048), (64,)]
    optimizer_step("SGD nesterov", torch.optim.SGD, big, momentum=0.9, nesterov=True, weight_decay=4e-5)
    optimizer_step("Adam", torch.optim.Adam, big, weight_decay=4e-5)
    optimizer_step("AdamW", torch.optim.AdamW, big, weight_decay=1e-2)
    vgg = [p.shape for p in build_model("vgg16_bn", (3, 32, 32), width=0.25).parameters() if p.dim() > 1]
    optimizer_step("Adam over VGG16-BN 0.25 pick scores", torch.optim.Adam, vgg)


if __name__ == "__main__":
    main()
