"""Two CPU operations of the zoo's conv nets, PyTorch's default against this project's
(issue 28): max pooling (``nn.MaxPool2d`` against :class:`unforget.models.pooling.MaxPool2d`,
same values and gradients bit for bit) and a dense layer written as a full-map convolution
(``F.conv2d`` against :func:`unforget.models.conv.dense_conv2d`), at the shapes of CLNP's Table-2
convnet at width 0.5 (batch 64 for training, 512 for evaluation), VGG16-BN's first pool at width
0.25 and ResNet-50's stem pool.

    OMP_NUM_THREADS=1 python benchmarks/cpu_ops.py

Prints milliseconds per call (median) and the ratio default / ours; one torch thread by default
(``--threads``).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from timing import median_seconds
from unforget.models.conv import dense_conv2d
from unforget.models.pooling import MaxPool2d

POOLS = [  # (label, input shape, kernel, stride, padding)
    ("clnp_convnet 0.5 pool 1, batch 64", (64, 16, 32, 32), 3, 2, 1),
    ("clnp_convnet 0.5 pool 2, batch 64", (64, 32, 16, 16), 3, 2, 1),
    ("clnp_convnet 0.5 pool 1, batch 512 (eval)", (512, 16, 32, 32), 3, 2, 1),
    ("vgg16_bn 0.25 pool 1, batch 64", (64, 16, 32, 32), 2, 2, 0),
    ("resnet50 0.25 stem pool, batch 32 at 112 px", (32, 16, 112, 112), 3, 2, 1),
]
DENSE = [  # (label, input shape, out channels)
    ("clnp_convnet 0.5 Dense 1, batch 64", (64, 32, 8, 8), 256),
    ("clnp_convnet 1.0 Dense 1, batch 64", (64, 64, 8, 8), 512),
]


def _ms(fn, repeats: int) -> float:
    return 1000 * median_seconds(fn, repeats, warmup=2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=15)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); ms per call, median of {a.repeats}")
    print("\nmax pooling: nn.MaxPool2d | unforget MaxPool2d | ratio   (forward, no grad; forward + backward)")
    for label, shape, k, s, pad in POOLS:
        x = torch.relu(torch.randn(shape, generator=g))
        ref, ours = nn.MaxPool2d(k, s, pad), MaxPool2d(k, s, pad)
        assert torch.equal(ref(x), ours(x))
        with torch.no_grad():
            f_ref, f_ours = _ms(lambda: ref(x), a.repeats), _ms(lambda: ours(x), a.repeats)
        xg = x.clone().requires_grad_()
        grad = torch.randn(ref(x).shape, generator=g)

        def fb(pool):
            return lambda: pool(xg).backward(grad)

        b_ref, b_ours = _ms(fb(ref), a.repeats), _ms(fb(ours), a.repeats)
        print(f"  {label:<44} fwd {f_ref:7.2f} | {f_ours:7.2f} | {f_ref / f_ours:4.1f}x   "
              f"fwd+bwd {b_ref:7.2f} | {b_ours:7.2f} | {b_ref / b_ours:4.1f}x")
    print("\ndense layer as a full-map convolution: F.conv2d | unforget dense_conv2d (F.linear) | ratio   (forward + backward)")
    for label, shape, out in DENSE:
        x = torch.randn(shape, generator=g, requires_grad=True)
        w = torch.randn(out, *shape[1:], generator=g, requires_grad=True)
        b = torch.randn(out, generator=g, requires_grad=True)
        grad = torch.randn(shape[0], out, 1, 1, generator=g)
        ref = _ms(lambda: F.conv2d(x, w, b).backward(grad), a.repeats)
        ours = _ms(lambda: dense_conv2d(x, w, b).backward(grad), a.repeats)
        diff = (F.conv2d(x, w, b) - dense_conv2d(x, w, b)).abs().max().item()
        print(f"  {label:<44} {ref:7.2f} | {ours:7.2f} | {ref / ours:4.1f}x   (largest difference {diff:.1e})")


if __name__ == "__main__":
    main()
