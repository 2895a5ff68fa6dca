"""Mixed-precision training (``train.precision``: bf16, 16) keeps exact unforgetting: autocast
covers the training forward pass only; weights, masks and evaluation stay float32."""
from __future__ import annotations

import pytest
import torch

from synthetic import gaussian_benchmark
from unforget.config import RunConfig
from unforget.layers import weighted_layers
from unforget.runner import build_method


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("16", torch.float16)])
def test_mixed_precision_trains_in_low_precision_and_keeps_earlier_tasks_exact(precision, dtype):
    bench = gaussian_benchmark(3, 3, 12, 48, seed=5)
    cfg = RunConfig.model_validate({"method": "cpg", "model": {"name": "mlp", "width": 0.03},
                                    "train": {"epochs": 2, "batch_size": 16, "precision": precision},
                                    "methods": {"cpg": {"goal": "tolerance", "prune_interval": 0.4}}})
    m = build_method(cfg, bench, progress=False)
    seen: set = set()
    first = next(l for _, l in weighted_layers(m.model))
    handle = first.register_forward_hook(lambda mod, inp, out: seen.add((out.dtype, torch.is_grad_enabled())))
    probe = torch.randn(8, 12, generator=torch.Generator().manual_seed(1))
    m.learn(bench.tasks[0])
    before = m.logits(probe, 1)
    for t in bench.tasks[1:]:
        m.learn(t)
    handle.remove()
    assert (dtype, True) in seen  # training ran under autocast
    assert (torch.float32, False) in seen  # evaluation did not
    assert before.dtype == torch.float32 and torch.equal(m.logits(probe, 1), before)
    assert all(l.weight.dtype == torch.float32 for _, l in weighted_layers(m.model))


def test_unknown_precision_is_a_config_error():
    from unforget.config import validate
    from unforget.errors import ConfigError

    with pytest.raises(ConfigError, match="precision"):
        validate({"train": {"precision": "8"}})
