"""The method interface and registry: how a task is learned and what is frozen afterwards."""
from __future__ import annotations

from typing import ClassVar, Optional

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from unforget.config import RunConfig, validation_message
from unforget.data.task import Benchmark, SequencePlan, Task
from unforget.errors import ConfigError, RegistryError, did_you_mean
from unforget.models import MultiHeadNet, build_model
from unforget.training import Trainer

_METHODS: dict[str, type["Method"]] = {}


class PretrainedUnsupported(ConfigError):
    """A pretrained task 1 given to a method that cannot take one, or not as task 1."""


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


def register_method(cls: type["Method"]) -> type["Method"]:
    """Class decorator: make ``cls`` available as ``cls.name`` (``unforget run --method``)."""
    _METHODS[cls.name] = cls
    return cls


def list_methods() -> dict[str, str]:
    """Registered method names and one-line descriptions."""
    from unforget import methods as _  # noqa: F401  (import registers the built-in methods)

    return {k: v.description for k, v in sorted(_METHODS.items())}


def check_method_sections(cfg: RunConfig, source: str) -> None:
    """Validate every ``methods.<name>`` section of ``cfg`` against its method's options before
    anything runs, naming ``source`` (the config file) in the one-line error.

    Raises:
        ConfigError: an unknown method section or an invalid option."""
    for name in cfg.methods:
        method_options(cfg, get_method(name).Options if name in list_methods() else BaseModel, name, source)


def get_method(name: str) -> type["Method"]:
    """The method class registered as ``name``; raises :class:`RegistryError` listing the names."""
    list_methods()
    if name not in _METHODS:
        raise RegistryError(f"unknown method '{name}'{did_you_mean(name, _METHODS)}; "
                            f"known methods: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def method_options(cfg: RunConfig, model_cls: type[BaseModel], name: str, source: str = "configuration") -> BaseModel:
    """Validate the ``methods.<name>`` section of ``cfg`` against the method's option model;
    errors name ``source`` (e.g. the config file the section came from).

    Raises:
        ConfigError: a section for a method that is not registered, or invalid options (one line).
    """
    unknown = set(cfg.methods) - set(list_methods())
    if unknown:
        raise ConfigError(f"{source}: 'methods' has unknown method section(s): {', '.join(sorted(unknown))}")
    try:
        return model_cls.model_validate(cfg.methods.get(name, {}))
    except ValidationError as e:
        raise ConfigError(validation_message(e, f"{source}: methods.{name}", model_cls)) from None


def default_model_name(plan: SequencePlan | Benchmark) -> str:
    """``vgg16_bn`` (CPG's CIFAR VGG16-BN) for 3-channel images of at least 32x32, else ``mlp``."""
    shape = tuple(plan.input_shape)
    return "vgg16_bn" if len(shape) == 3 and shape[0] == 3 and shape[1] >= 32 else "mlp"


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def module_bytes(module: nn.Module) -> int:
    """Bytes of all parameters and buffers of ``module`` (dense, as stored)."""
    return tensor_bytes(list(module.parameters()) + list(module.buffers()))


class Method:
    """Base class of continual-learning methods.

    A method is built for one sequence (``config``, ``plan``: a :class:`SequencePlan` or a
    :class:`Benchmark`, ``trainer``), learns tasks in order with :meth:`learn` (tasks beyond the
    plan too), and serves any learned task through :meth:`model_for`. Subclasses set
    ``name``, ``description``, ``Options`` (a pydantic model of the ``methods.<name>`` config
    section) and whether the method is allowed to forget (``exact``: False).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = NoOptions
    exact: ClassVar[bool] = False
    """True when the method guarantees bit-exact outputs on earlier tasks (BWT exactly 0)."""
    takes_pretrained: ClassVar[bool] = False
    """True when the method can take a pretrained network as task 1
    (:class:`~unforget.data.task.PretrainedTask`)."""

    def __init__(self, config: RunConfig, plan: SequencePlan | Benchmark, trainer: Trainer) -> None:
        self.config = config
        self.plan = SequencePlan.of(plan)
        self.trainer = trainer
        self.options = method_options(config, self.Options, self.name)
        self.learned: list[int] = []

    # ---------------------------------------------------------------- helpers for subclasses
    @property
    def device(self) -> torch.device:
        return self.trainer.device

    def model_name(self) -> str:
        return self.config.model.name or default_model_name(self.plan)

    def new_backbone(self, seed_offset: int = 0, width: Optional[float] = None) -> MultiHeadNet:
        """A fresh zoo model for this run (at ``width``, default the config's), initialised from
        ``config.seed`` and ``seed_offset`` without disturbing the global random stream."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed * 7919 + seed_offset)
            net = build_model(self.model_name(), self.plan.input_shape, width=width or self.config.model.width,
                              **self.config.model.options)
        return net.to(self.device)

    # ---------------------------------------------------------------- interface
    def learn(self, task: Task) -> dict:
        """Learn ``task`` (its id is ``len(self.learned) + 1``) and return its record: at least
        ``val_accuracy``; also ``accuracy_goal``, ``pruning_ratio``, ``width`` where they apply."""
        raise NotImplementedError

    def model_for(self, task_id: int) -> nn.Module:
        """A module whose ``forward(x, task_id)`` gives task ``task_id``'s logits."""
        raise NotImplementedError

    def size(self) -> dict:
        """``model_size_bytes`` (everything needed to serve all learned tasks), ``expansion_ratio``
        and ``released_ratio`` (``None`` where they do not apply)."""
        raise NotImplementedError

    def capacity(self) -> Optional[dict]:
        """Per-layer share of weights in use, or ``None``."""
        return None

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Everything needed to rebuild the learned model: ``(tensors, json-able metadata)``."""
        raise NotImplementedError

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Inverse of :meth:`state` on a freshly built method of the same configuration."""
        raise NotImplementedError

    def networks(self) -> list[nn.Module]:
        """Every network the method keeps to serve its tasks (for parameter counts and device
        moves): attributes that are modules, or dicts / lists of modules. Override when a
        method keeps them elsewhere."""
        found: list[nn.Module] = []
        for value in vars(self).values():
            items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
            found.extend(v for v in items if isinstance(v, nn.Module) and all(v is not f for f in found))
        return found

    def logits(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        """Task ``task_id``'s logits for float inputs ``x`` (evaluation mode, no gradient)."""
        model = self.model_for(task_id)
        was = model.training
        model.eval()
        with torch.no_grad():
            out = model(x.to(self.device), task_id)
        model.train(was)
        return out
