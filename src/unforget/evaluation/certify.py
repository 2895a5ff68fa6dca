"""Entries of the accuracy matrix that need no test pass.

After learning task i, row i of the accuracy matrix R re-tests every earlier task j. For an exact
method (design.md, invariant 1) the answer is known in advance: task j computes what it computed
when R[j][j] was measured, so R[i][j] = R[j][j]. A *certificate* makes that checkable instead of
assumed: a SHA-256 digest of task j's served network, as :func:`unforget.export.plain_network`
materialises it (its modules and their settings, every weight, bias, batch-norm statistic and
head tensor, bit for bit), together with task j's test split (inputs and labels). The learner
stores task j's certificate beside R[j][j]; in a later row, when the digest is unchanged, R[i][j]
is R[j][j] without a test pass, and anything the digest cannot vouch for (a changed digest, a
network that cannot be flattened, a method that may forget) is re-tested. ``--retest`` re-tests
every entry. Certified entries are listed per row (``certified`` in the task's record) and
counted in report.md.
"""
from __future__ import annotations

import hashlib
from typing import Optional

from torch import nn

from unforget.data.task import Task, feed_tensor
from unforget.errors import UnforgetError

__all__ = ["certificate"]


def certificate(model: nn.Module, task: Task) -> Optional[str]:
    """SHA-256 (hex) of task ``task.id``'s served network in ``model`` and of ``task``'s test
    split (see the module doc); ``None`` when the network cannot be cut out as one plain network
    (e.g. progressive columns), so the task is always re-tested.

    ``model`` is what the method serves the task with (``method.model_for(task.id)``); two
    equal certificates mean the same modules, tensors and test data bit for bit, hence the same
    test accuracy.
    """
    from unforget.export import plain_network

    try:
        plain = plain_network(model, task.id)
    except (UnforgetError, TypeError):
        return None
    h = hashlib.sha256(repr(plain).encode())
    for name, t in plain.state_dict().items():
        feed_tensor(h, name, t)
    feed_tensor(h, "test.x", task.test.x)
    feed_tensor(h, "test.y", task.test.y)
    h.update(f"\0{task.name}\0{tuple(task.input_shape)}".encode())
    return h.hexdigest()
