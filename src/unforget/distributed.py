"""Several processes on one or more machines: PyTorch's own distributed engine, started by
``torchrun`` (``torchrun --nproc_per_node N -m unforget run ...``).

What runs where:

- every process builds the same benchmark and the same network from the same seed; each
  training epoch draws one permutation of the training split (the same on every process) and
  process r trains on its shard ``perm[r::N]`` (padded as ``DistributedSampler`` pads), one
  mini-batch of ``train.batch_size`` per process per step, so the effective batch is N x that;
- the network trains inside ``torch.nn.parallel.DistributedDataParallel`` (gloo on CPU, NCCL on
  CUDA): the gradients of weights, biases, batch norms, heads and pick scores are averaged across
  processes before the exactness rules (frozen weights: zero gradient, no decay) and the optimizer
  step, and the batch-norm buffers of process 0 are broadcast every step, so every process
  holds the same tensors;
- every decision that shapes the model (ownership, pruning ratios, picks, growth, goals) is
  taken from validation accuracies that process 0 measures and broadcasts (:func:`agree_float`);
  after every task the processes compare a digest of all their tensors (:func:`check_same`) and
  stop with an error if any differ;
- only process 0 writes the run folder (checkpoint, ``results.json``, reports, logs) and prints.

Every built-in method runs distributed (:data:`SUPPORTED`); a method registered elsewhere
refuses (:func:`check_method`) until it is shown to take the same decisions on every process.
"""
from __future__ import annotations

import hashlib
import os
from typing import Optional

import torch
import torch.distributed as dist

from unforget.errors import ConfigError, UnforgetError

SUPPORTED = ("cpg", "pae", "packnet", "piggyback", "scratch", "finetune", "finetune-copies", "clnp", "ewc", "si",
             "progressive", "wsn", "supsup", "hat")
"""Built-in methods that run under torchrun: each ran 5 tasks of digits on 2 CPU processes with
the same model on both after every task (:func:`check_same`). Their statistics (EWC's Fisher
information, SI's path integral, CLNP's unit activations) come from the same samples and the
same averaged gradients on every process; WSN's shared scores, SupSup's supermask scores and
HAT's gate embeddings are parameters of the model, averaged like its weights, and HAT's annealed
scale follows the step, which every process shares. A method registered elsewhere refuses until it is
listed here (the same-model check would stop it anyway if its processes drifted apart)."""


class RanksDiverged(UnforgetError):
    """The processes of a distributed run no longer hold the same model."""


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets
    ``WORLD_SIZE``) as one of several."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def active() -> bool:
    """Whether a process group of more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process writes files and prints (rank 0, or the only process)."""
    return rank() == 0


def init(device: str = "cpu") -> Optional[dict]:
    """Join the process group torchrun describes in the environment (``MASTER_ADDR``,
    ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``): NCCL when ``device`` is CUDA,
    gloo otherwise; on CUDA each process uses the GPU of its ``LOCAL_RANK``. Returns
    ``{"world_size", "backend"}``, or ``None`` when not launched as several processes.

    Raises:
        ConfigError: CUDA asked for but fewer GPUs than local processes.
    """
    if not launched():
        return None
    cuda = str(device).startswith("cuda")
    backend = "nccl" if cuda else "gloo"
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ConfigError(f"process {local} on this machine needs a GPU, but PyTorch sees "
                              f"{torch.cuda.device_count()}; start at most that many processes per machine")
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return {"world_size": dist.get_world_size(), "backend": backend}


def close() -> None:
    """Leave the process group (end of a distributed command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_method(name: str) -> None:
    """Raise :class:`ConfigError` (one line, with the reason) for a method that cannot run
    distributed yet; nothing when not distributed."""
    if not active() or name in SUPPORTED:
        return
    why = "it has not been checked to take the same decisions on every process"
    raise ConfigError(f"method '{name}' cannot run on {world_size()} processes yet: {why}; run it in one "
                      f"process, or use one of: {', '.join(SUPPORTED)}")


def shard_length(n: int) -> int:
    """Length of each process's shard of ``n`` items (:func:`shard`): ``ceil(n / world size)``."""
    return -(-n // world_size())


def shard(perm: torch.Tensor) -> torch.Tensor:
    """This process's share of an epoch's permutation ``perm`` (int64 ``(n,)``): ``perm`` padded
    with its own first entries to a multiple of the world size, then every world-size-th entry
    from this rank on (``torch.utils.data.DistributedSampler``'s rule, without its shuffling,
    which the caller's seeded ``perm`` already did). Every process gets the same length."""
    w = world_size()
    if w == 1:
        return perm
    total = shard_length(len(perm)) * w
    if total > len(perm):
        perm = torch.cat([perm, perm[: total - len(perm)]])
    return perm[rank()::w]


def agree_float(value: float) -> float:
    """``value`` as process 0 has it (every process returns the same float); itself when not
    distributed."""
    if not active():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.broadcast(t, src=0)
    return float(t.item())


def sum_across(values: list[float]) -> list[float]:
    """Element-wise sums of ``values`` over all processes (itself when not distributed)."""
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def from_main(obj):
    """``obj`` as process 0 has it (a picklable object, e.g. a decision taken on process 0 from
    files only it may read); itself when not distributed."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors`` in name order."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def check_same(tensors: dict[str, torch.Tensor], what: str) -> Optional[str]:
    """Compare :func:`digest` of ``tensors`` across processes; returns the common digest
    (``None`` when not distributed).

    Raises:
        RanksDiverged: the processes hold different tensors (one line naming ``what``).
    """
    if not active():
        return None
    mine = digest(tensors)
    all_digests: list = [None] * world_size()
    dist.all_gather_object(all_digests, mine)
    if len(set(all_digests)) != 1:
        differ = [r for r, d in enumerate(all_digests) if d != all_digests[0]]
        raise RanksDiverged(f"the processes hold different models after {what} (ranks {differ} differ from rank 0); "
                            "the distributed run cannot continue exactly")
    return mine


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` inside ``DistributedDataParallel`` (every parameter that needs a gradient
    takes part; parameters a step does not reach, such as other tasks' heads, are allowed), or
    ``model`` itself when not distributed. The wrapper broadcasts process 0's parameters and
    floating-point buffers when built and the buffers (batch-norm statistics) at every forward
    pass; integer and bool buffers (owner maps, pick masks) are left out."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    # owner maps and pick masks (integer / bool buffers) never change during a fit and are the
    # same on every process (check_same verifies it after each task); gloo cannot broadcast bool
    frozen = [n for n, b in model.named_buffers() if not b.is_floating_point()]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, frozen)
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
