"""``train.optimizer``: SGD, Adam and AdamW from ``torch.optim``, for every method, and exact
unforgetting with each (design.md invariant 1): frozen weights get a zero gradient and no
optimizer weight decay, so not even AdamW's decoupled decay moves them."""
from __future__ import annotations

import pytest
import torch

from synthetic import gaussian_benchmark
from unforget.cli import _overrides, _parser
from unforget.config import RunConfig, TrainConfig, resolve, run_identity, same_run
from unforget.errors import ConfigError
from unforget.layers import weighted_layers
from unforget.runner import build_method
from unforget.training import Trainer


def test_trainer_builds_the_configured_optimizer():
    p = [torch.nn.Parameter(torch.ones(3))]
    sgd = Trainer(TrainConfig(lr=0.1, momentum=0.8, weight_decay=1e-3)).optimizer(p)
    assert type(sgd) is torch.optim.SGD
    assert sgd.defaults["momentum"] == 0.8 and sgd.defaults["nesterov"] and sgd.defaults["weight_decay"] == 1e-3
    assert not Trainer(TrainConfig(momentum=0.0)).optimizer(p).defaults["nesterov"]  # Nesterov needs momentum
    cfg = TrainConfig(optimizer="adam", lr=0.002, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.0)
    adam = Trainer(cfg).optimizer(p, lr=0.5, weight_decay=0.25)
    assert type(adam) is torch.optim.Adam
    assert (adam.defaults["lr"], adam.defaults["betas"], adam.defaults["eps"], adam.defaults["weight_decay"]) == \
        (0.5, (0.8, 0.99), 1e-6, 0.25)
    adamw = Trainer(TrainConfig(optimizer="adamw", weight_decay=0.01)).optimizer(
        [{"params": p, "weight_decay": 0.0}, {"params": [torch.nn.Parameter(torch.ones(2))]}])
    assert type(adamw) is torch.optim.AdamW and [g["weight_decay"] for g in adamw.param_groups] == [0.0, 0.01]


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_zero_gradient_without_decay_never_moves_a_weight(name):
    """The property exact unforgetting rests on, for each optimizer: an entry whose gradient is
    exactly 0 at every step and that gets no weight decay keeps its value bit for bit. With the
    config's decay (0.1) instead, SGD, Adam and AdamW all move it."""
    for wd, moves in ((0.0, False), (None, True)):
        w = torch.nn.Parameter(torch.tensor([0.7, -1.3, 2.0]))
        before = w.detach().clone()
        opt = Trainer(TrainConfig(optimizer=name, lr=0.1, weight_decay=0.1)).optimizer([w], weight_decay=wd)
        for step in range(5):
            opt.zero_grad()
            (w * torch.tensor([1.0, 0.0, step % 2])).sum().backward()  # entry 1 never gets a gradient
            opt.step()
        assert torch.equal(w.detach()[1], before[1]) != moves
        assert not torch.equal(w.detach()[0], before[0])


def test_optimizer_configuration_is_checked_and_reaches_the_command_line():
    with pytest.raises(ConfigError, match="optimizer"):
        resolve("digits", "cpg", overrides={"train": {"optimizer": "rmsprop"}})
    with pytest.raises(ConfigError, match="betas"):
        resolve("digits", "cpg", overrides={"train": {"betas": [0.9, 1.0]}})
    a = _parser().parse_args(["run", "--optimizer", "adamw", "--lr", "0.001"])
    cfg = resolve("digits", "cpg", overrides=_overrides(a))
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.batch_size) == ("adamw", 0.001, 32)
    assert resolve("digits", "cpg").train.optimizer == "sgd"


def test_paper_presets_train_as_the_clnp_paper():
    """Golkar et al. 2019: permuted MNIST with Adam 0.002, batch 256, L1 1e-7 / 1e-5 / 1e-6
    (Sec. 3.1); CIFAR-10/100 on the Table 2 net with Adam 0.001 and L1 5e-5 (Sec. 3.2)."""
    pm = resolve("permuted-mnist", "clnp", preset_name="paper")
    assert (pm.train.optimizer, pm.train.lr, pm.train.batch_size) == ("adam", 0.002, 256)
    assert pm.methods["clnp"] == {"head": "single", "l1": [1e-7, 1e-5, 1e-6], "margin": 0.0005, "threshold_steps": 100}
    assert (pm.model.name, pm.model.width, pm.benchmark.max_train_per_class) == ("mlp", 1.0, None)
    cifar = resolve("cifar10-cifar100", "clnp", preset_name="paper")
    assert (cifar.train.optimizer, cifar.train.lr, cifar.model.name, cifar.benchmark.n_tasks) == \
        ("adam", 0.001, "clnp_convnet", 6)
    assert cifar.methods["clnp"]["l1"] == 5e-5


def test_run_folders_written_before_the_optimizer_key_still_match():
    """A stored configuration without the keys added since (``optimizer``, ``betas``, ``eps``)
    is the same SGD run; a changed value or an invalid mapping is not."""
    cfg = RunConfig.model_validate({"method": "cpg", "train": {"epochs": 2}})
    old = run_identity(cfg)
    for key in ("optimizer", "betas", "eps"):
        del old["train"][key]
    assert same_run(old, cfg)
    assert not same_run({**old, "train": {**old["train"], "optimizer": "adam"}}, cfg)
    assert not same_run({**old, "train": {**old["train"], "momentum": 0.5}}, cfg)
    assert not same_run({"train": {"bogus": 1}}, cfg) and not same_run(None, cfg)


def _config(method: str, optimizer: str, options: dict) -> RunConfig:
    return RunConfig.model_validate({"method": method, "model": {"name": "mlp", "width": 0.03},
                                     "train": {"epochs": 2, "batch_size": 16, "optimizer": optimizer, "lr": 0.01,
                                               "weight_decay": 0.1},
                                     "methods": {method: options}})


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
@pytest.mark.parametrize("method,options", [
    ("cpg", {"goal": "explicit", "goals": [0.0, 1.0, 0.0], "prune_interval": 0.4, "retrain_epochs": 1}),
    ("packnet", {"prune_ratio": 0.6}),
    ("clnp", {"head": "single", "margin": 0.0, "threshold_steps": 4, "finetune_epochs": 1}),
])
def test_exact_unforgetting_with_adam_and_adamw(method, options, optimizer):
    """design.md invariant 1 for CPG (picks, growth, compacting), PackNet and CLNP trained with
    Adam / AdamW and weight decay 0.1: every finished task's logits stay bit-identical, and so
    do the weights earlier tasks own."""
    bench = gaussian_benchmark(3, 3, 12, 48, seed=11)
    m = build_method(_config(method, optimizer, options), bench, progress=False)
    probe = torch.randn(5, *bench.input_shape, generator=torch.Generator().manual_seed(0))
    logits, owned = {}, {}
    for task in bench.tasks:
        m.learn(task)
        logits[task.id] = m.logits(probe, task.id)
        owned[task.id] = {n: (l.owner == task.id, l.weight.detach().clone()) for n, l in weighted_layers(m.model)}
    for t, expected in logits.items():
        assert torch.equal(m.logits(probe, t), expected), f"task {t} changed"
    layers = dict(weighted_layers(m.model))
    moved = 0
    for t, snap in owned.items():
        for n, (mask, w) in snap.items():
            now = layers[n].weight.detach()[tuple(slice(0, s) for s in w.shape)]
            assert torch.equal(now[mask], w[mask]), f"weights of task {t} in {n} moved"
            moved += int((now[~mask] != w[~mask]).sum())
    assert moved > 0, "later tasks must have trained weights of their own"
