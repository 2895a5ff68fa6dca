"""Reproducibility settings of training (issue 27): deterministic algorithms and TF32.

``train.deterministic`` (on by default: the project promises that a resumed run ends bit-identical
to an uninterrupted one) makes every fit and evaluation run under
``torch.use_deterministic_algorithms(True)`` with cuDNN's autotuner off, and sets
``CUBLAS_WORKSPACE_CONFIG=:4096:8`` before CUDA starts (cuBLAS needs it to be deterministic).
``train.tf32`` chooses whether float32 matmuls and convolutions may use TensorFloat-32 on
Ampere-or-later GPUs (``None``: PyTorch's defaults). Both are set for the duration of a fit or an
evaluation pass and restored afterwards, so a library user's own settings are left as they were.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional

import torch

from unforget.errors import UnforgetError

CUBLAS_WORKSPACE = ":4096:8"
"""The ``CUBLAS_WORKSPACE_CONFIG`` value PyTorch's reproducibility notes give for deterministic cuBLAS."""


class NondeterministicOperation(UnforgetError):
    """``train.deterministic`` is on and an operation has no deterministic implementation here."""


def prepare_process(deterministic: bool) -> None:
    """Before CUDA starts: with ``deterministic``, set ``CUBLAS_WORKSPACE_CONFIG`` unless the user
    set it (it is read when cuBLAS starts, so a process that already used it keeps its value)."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)


@contextlib.contextmanager
def scope(deterministic: bool, tf32: Optional[bool]) -> Iterator[None]:
    """Within the block: ``torch.use_deterministic_algorithms(deterministic)``, cuDNN's
    ``benchmark`` off and ``deterministic`` on when ``deterministic``, and TF32 for matmuls and
    convolutions as ``tf32`` says (``None``: unchanged). Everything is restored on exit. An
    operation without a deterministic implementation raises :class:`NondeterministicOperation`
    (one line naming the setting)."""
    cudnn = torch.backends.cudnn
    fill = torch.utils.deterministic
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             cudnn.benchmark, cudnn.deterministic, torch.backends.cuda.matmul.allow_tf32, cudnn.allow_tf32,
             fill.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(deterministic)
    # deterministic mode also fills every torch.empty with NaN (a debugging aid, not needed for
    # determinism of code that writes before it reads): a pass over memory per allocation
    fill.fill_uninitialized_memory = False
    if deterministic:
        cudnn.benchmark, cudnn.deterministic = False, True
    if tf32 is not None:
        torch.backends.cuda.matmul.allow_tf32 = cudnn.allow_tf32 = bool(tf32)
    try:
        yield
    except RuntimeError as e:
        if deterministic and is_nondeterministic_error(e):
            raise nondeterministic_failure(e) from e
        raise
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        cudnn.benchmark, cudnn.deterministic = saved[2], saved[3]
        torch.backends.cuda.matmul.allow_tf32, cudnn.allow_tf32 = saved[4], saved[5]
        fill.fill_uninitialized_memory = saved[6]


def is_nondeterministic_error(e: BaseException) -> bool:
    """Whether ``e`` is PyTorch's error for an operation without a deterministic implementation."""
    return "does not have a deterministic implementation" in str(e)


def nondeterministic_failure(e: BaseException) -> NondeterministicOperation:
    """One line for PyTorch's nondeterministic-operation error ``e``."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    op = first.split(" does not have")[0][:200]
    return NondeterministicOperation(
        f"{op} has no deterministic implementation on this device, and train.deterministic is on; train with "
        "--no-deterministic (train.deterministic: false) to allow it (repeats and resumed runs may then differ)")


def record(deterministic: bool, tf32: Optional[bool], device: str) -> dict:
    """The settings a run trained under, for ``results.json`` and the checkpoint: the device type,
    the PyTorch build, deterministic algorithms, cuDNN benchmark and TF32 (as in force when
    ``tf32`` is ``None``) and ``CUBLAS_WORKSPACE_CONFIG``."""
    cudnn = torch.backends.cudnn
    return {"device_type": torch.device(device).type, "torch": torch.__version__,
            "cuda": torch.version.cuda, "deterministic": bool(deterministic),
            "cudnn_benchmark": False if deterministic else bool(cudnn.benchmark),
            "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32) if tf32 is None else bool(tf32),
            "tf32_conv": bool(cudnn.allow_tf32) if tf32 is None else bool(tf32),
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}


def resume_differences(stored: Optional[dict], now: dict) -> list[str]:
    """What differs between the settings a checkpoint was trained under (``stored``, from
    :func:`record`; ``None`` for a checkpoint written before they were recorded) and ``now``,
    among those bit-identity depends on: the device type, the PyTorch and CUDA builds, and the
    deterministic and TF32 settings. Each entry reads ``"key: old -> new"``."""
    if not stored:
        return []
    keys = ("device_type", "torch", "cuda", "deterministic", "tf32_matmul", "tf32_conv")
    return [f"{k}: {stored.get(k)} -> {now.get(k)}" for k in keys if k in stored and stored.get(k) != now.get(k)]
