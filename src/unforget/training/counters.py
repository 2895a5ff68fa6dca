"""Counts that decide speed on a GPU, measured on any device: host reads of tensors (each a
device sync on a GPU) and aten ops dispatched (each about one kernel launch). The training-speed
tests and ``benchmarks/train_throughput.py`` use them as CPU proxies of GPU step time (issue 23).
"""
from __future__ import annotations

from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["HOST_READS", "HostReads", "OpCount"]

HOST_READS = frozenset({"item", "__bool__", "__int__", "__float__", "tolist"})
"""Tensor methods that copy a value to the host (``if tensor:``, ``int(t)``, ``float(t)``,
``t.item()``, ``t.tolist()``): on a GPU each waits for every queued kernel."""


class HostReads(TorchFunctionMode):
    """``with HostReads() as r: ...`` counts the host reads (:data:`HOST_READS`) in the block
    (``r.count``)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in HOST_READS:
            self.count += 1
        return func(*args, **(kwargs or {}))


class OpCount(TorchDispatchMode):
    """``with OpCount() as c: ...`` counts the aten ops dispatched in the block (``c.count``),
    views and in-place ops included."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))
