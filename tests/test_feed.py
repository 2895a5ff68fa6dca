"""The data path of a fit (issue 23, item 2): when a task's training split stays on the device,
batches are made there; on the CPU both settings are the same computation, bit for bit, and
making a batch reads nothing back from the device."""
import pickle

import pytest
import torch

from synthetic import gaussian_benchmark
from unforget.config import RunConfig, TrainConfig
from unforget.data.task import Split
from unforget.data.transforms import ImageTransform
from unforget.runner import build_method
from unforget.training.counters import HostReads
from unforget.training.feed import DEVICE_SHARE, BatchFeed, on_device


def _split(n=10):
    return Split(torch.zeros(n, 3, 8, 8, dtype=torch.uint8), torch.zeros(n, dtype=torch.int64))


def test_auto_keeps_a_split_on_the_device_only_when_it_fits():
    split = _split()
    size = 10 * 3 * 8 * 8 + 10 * 8
    cuda = torch.device("cuda")
    assert on_device(split, "auto", cuda, free=int(size / DEVICE_SHARE) + 1)
    assert not on_device(split, "auto", cuda, free=int(size / DEVICE_SHARE) - 100)
    assert on_device(split, "auto", torch.device("cpu"))
    assert on_device(split, "true", cuda, free=0) and not on_device(split, "false", torch.device("cpu"))
    with pytest.raises(ValueError, match="auto, true or false"):
        on_device(split, "yes", cuda)


def test_yaml_booleans_are_accepted():
    assert TrainConfig.model_validate({"data_on_device": True}).data_on_device == "true"
    assert TrainConfig.model_validate({"data_on_device": False}).data_on_device == "false"


def test_a_resident_feed_makes_batches_where_the_model_computes():
    feed = BatchFeed(_split(), torch.device("cpu"), resident=True, seed=3)
    assert feed.generator.device == feed.x.device == torch.device("cpu")
    x, y = feed.batch(feed.order()[:4], ImageTransform(mean=0.5, std=0.25, crop_padding=2, hflip=True))
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32 and y.shape == (4,)


def test_making_an_augmented_normalised_batch_reads_nothing_from_the_device():
    t = ImageTransform(mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4), crop_padding=2, hflip=True, cutout=3,
                       permutation=torch.randperm(3 * 8 * 8, generator=torch.Generator().manual_seed(0)))
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    t(x, train=True, generator=torch.Generator().manual_seed(1))  # the per-device constants are made once
    with HostReads() as reads:
        t(x, train=True, generator=torch.Generator().manual_seed(1))
    assert reads.count == 0


def test_the_per_device_constants_do_not_change_values_or_travel_in_a_pickle():
    kw = dict(mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4))
    t = ImageTransform(**kw)
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    from unforget.data.transforms import normalize

    assert torch.equal(t(x), normalize(x.float() / 255, kw["mean"], kw["std"]))
    assert pickle.loads(pickle.dumps(t))._stats_on == {}
    with pytest.raises(ValueError, match="std must be > 0"):
        ImageTransform(mean=0.5, std=0.0)(x)


def test_on_the_cpu_both_settings_train_the_same_weights_bit_for_bit():
    bench = gaussian_benchmark(1, 3, n=40, seed=3, image=(3, 16, 16))
    states = []
    for setting in ("true", "false"):
        cfg = RunConfig.model_validate({"method": "scratch", "model": {"name": "resnet18", "width": 0.125},
                                        "train": {"epochs": 2, "batch_size": 16, "data_on_device": setting}})
        m = build_method(cfg, bench, progress=False)
        m.learn(bench.tasks[0])
        states.append({k: v.clone() for k, v in m.models[1].state_dict().items()})
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
