"""Classifier heads beyond ``nn.Linear``: the A-Softmax (angular margin) head of SphereFace.

Source: Liu et al. 2017, "SphereFace: Deep Hypersphere Embedding for Face Recognition",
Sec. 3.3-3.4, Eq. 6-7 (``psi(theta) = (-1)^k cos(m theta) - 2k`` for
``theta in [k pi / m, (k + 1) pi / m]``, margin ``m = 4``), trained with the annealed mix of the
margin and plain logits of the authors' code (``lambda = max(5, 1500 / (1 + 0.1 it))``), as the
CPG reference's ``AngleLinear`` / ``AngleLoss`` do (ivclab/CPG ``models/spherenet.py``, gamma 0).
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

_LABELS: ContextVar[Optional[torch.Tensor]] = ContextVar("unforget_batch_labels", default=None)

HEAD_KINDS = ("linear", "a-softmax")
"""Head kinds a task may ask for (``Task.head``)."""


@contextlib.contextmanager
def batch_labels(y: torch.Tensor) -> Iterator[None]:
    """Within the block a margin head in training mode sees the labels ``y`` (``int64``, ``(N,)``)
    of the batch it computes (this thread / asyncio task only), as the training loop sets them."""
    token = _LABELS.set(y)
    try:
        yield
    finally:
        _LABELS.reset(token)


def _cos_m_theta(c: torch.Tensor, m: int) -> torch.Tensor:
    """``cos(m theta)`` as a polynomial of ``c = cos(theta)`` (Chebyshev, ``m`` in 0..5)."""
    polys = (lambda x: x ** 0, lambda x: x, lambda x: 2 * x ** 2 - 1, lambda x: 4 * x ** 3 - 3 * x,
             lambda x: 8 * x ** 4 - 8 * x ** 2 + 1, lambda x: 16 * x ** 5 - 20 * x ** 3 + 5 * x)
    return polys[m](c)


class AngleLinear(nn.Module):
    """A-Softmax head: ``(N, in_features)`` features -> ``(N, out_features)`` logits.

    Evaluation (and training without labels): ``|x| cos(theta_j)``, the angle between ``x`` and
    class ``j``'s normalised weight (no bias). Training with :func:`batch_labels`: the target
    class's logit becomes ``|x| (cos(theta_y) + (psi(theta_y) - cos(theta_y)) / (1 + lambda))``,
    so cross-entropy over these logits is the reference's ``AngleLoss`` (gamma 0); ``lambda``
    anneals from ``lambda_max`` to ``lambda_min`` with the head's own step counter (a buffer,
    saved in checkpoints).

    Attributes:
        weight: ``(out_features, in_features)`` float (``nn.Linear``'s layout; rows are
            normalised in use, so their length carries no meaning).
        iteration: ``int64`` scalar buffer, training steps taken with labels.
    """

    bias = None

    def __init__(self, in_features: int, out_features: int, m: int = 4, lambda_min: float = 5.0,
                 lambda_max: float = 1500.0, lambda_decay: float = 0.1) -> None:
        super().__init__()
        if not 1 <= m <= 5:
            raise ValueError(f"A-Softmax margin m must be in 1..5, got {m}")
        self.in_features, self.out_features, self.m = in_features, out_features, m
        self.lambda_min, self.lambda_max, self.lambda_decay = lambda_min, lambda_max, lambda_decay
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-1, 1))
        self.register_buffer("iteration", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.norm(dim=1, keepdim=True)
        cos = (F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t()).clamp(-1, 1)
        logits = cos * norm
        y = _LABELS.get()
        if not self.training or y is None:
            return logits
        with torch.no_grad():
            self.iteration += 1  # the reference counts this step before annealing
        lam = max(self.lambda_min, self.lambda_max / (1 + self.lambda_decay * float(self.iteration)))
        with torch.no_grad():
            k = torch.floor(self.m * cos.acos() / 3.14159265)  # the reference's constant
        psi = (1 - 2 * torch.remainder(k, 2)) * _cos_m_theta(cos, self.m) - 2 * k
        target = F.one_hot(y.to(x.device), self.out_features).to(x.dtype)
        return logits + target * (psi - cos) * norm / (1 + lam)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, m={self.m}"


def make_head(kind: str, in_features: int, n_classes: int) -> nn.Module:
    """A head of ``kind`` (:data:`HEAD_KINDS`); ``ValueError`` for another kind."""
    if kind == "a-softmax":
        return AngleLinear(in_features, n_classes)
    if kind == "linear":
        return nn.Linear(in_features, n_classes)
    raise ValueError(f"unknown head kind {kind!r}; known: {', '.join(HEAD_KINDS)}")


__all__ = ["AngleLinear", "batch_labels", "make_head", "HEAD_KINDS"]
