"""Run configuration: pydantic models, YAML presets and their resolution order.

Resolution (later wins): built-in defaults < the benchmark's preset (``cpu``, ``full`` or
``paper``; own data, which has none, gets the automatic configuration of
:mod:`unforget.autoconfig` instead) < ``--config FILE`` < command-line flags. Unknown keys
anywhere, a key given twice in one YAML mapping and values out of range are a
:class:`ConfigError` (one line).
"""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from unforget.errors import ConfigError, did_you_mean


MAX_SEED = 2**32 - 1
"""Largest run seed (NumPy's limit; every derived seed then fits PyTorch's generators)."""
_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def check_device_name(device: Any) -> str:
    """``device`` (a string, or a ``torch.device``) as a string, if it names a device unforget
    can use: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``. Whether the device is present here is
    checked when a run starts or a checkpoint is loaded.

    Raises:
        ConfigError: not a device name (one line).
    """
    if type(device).__name__ == "device" and type(device).__module__ == "torch":
        device = str(device)
    if not isinstance(device, str):
        raise ConfigError(f"device must be a name such as 'cpu' or 'cuda', got {type(device).__name__} {device!r}")
    if not _DEVICE.match(device):
        raise ConfigError(f"unknown device '{device}'; use cpu, cuda, cuda:N or mps")
    return device


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BenchmarkConfig(_Strict):
    """Which task sequence, and how it is cut (see ``unforget.data.build_benchmark``)."""

    name: str = "digits"
    seed: int = 0
    val_fraction: float = Field(0.1, gt=0, lt=1)
    n_tasks: Optional[int] = Field(None, ge=1)
    max_train_per_class: Optional[int] = Field(None, ge=2)
    class_order: Optional[list[int]] = None
    task_order: Optional[list[int]] = None
    shuffle_tasks: bool = False
    options: dict[str, Any] = Field(default_factory=dict)
    """The benchmark's own options (e.g. ``facial``'s ``age_fold``); see ``unforget list``."""


class ModelConfig(_Strict):
    """Zoo model and width multiplier (1.0 = the published size)."""

    name: Optional[str] = None
    width: float = Field(1.0, gt=0, le=64)
    options: dict[str, Any] = Field(default_factory=dict)
    """The zoo model's own options, passed to its builder (e.g. ``sphereface20``:
    ``{activation: prelu, conv_bias: true}``); ``unforget list`` names the models."""


class TrainConfig(_Strict):
    """Shared training-loop hyper-parameters; SGD with Nesterov momentum by default.

    ``optimizer`` picks the ``torch.optim`` class every method trains its weights with:
    ``sgd`` (``momentum``, ``nesterov``), ``adam`` or ``adamw`` (``betas``, ``eps``; Kingma & Ba
    2015, Loshchilov & Hutter 2019). ``weight_decay`` is L2 added to the gradient for ``sgd`` and
    ``adam`` and decoupled (``w -= lr * wd * w``) for ``adamw``. Methods with exact unforgetting
    give their shared weight tensors no optimizer weight decay at all: they fold the decay into
    the gradient of the weights the task in training owns (``layers/masks.py``), so with
    ``adamw`` those weights get the coupled form, since a decoupled one would also shrink the
    frozen weights of earlier tasks. ``lr_milestones`` are epochs at which the learning rate is
    multiplied by ``lr_gamma``: strictly increasing, in ``1..epochs - 1`` (validation fails otherwise).
    """

    epochs: int = Field(3, ge=1, le=100000)
    batch_size: int = Field(64, ge=2, le=1_000_000)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(1e-2, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(4e-5, ge=0)
    lr_milestones: list[int] = Field(default_factory=list)
    lr_gamma: float = Field(0.1, gt=0)
    eval_batch_size: int = Field(512, ge=1)
    precision: Literal["32", "bf16", "16"] = "32"
    """Training arithmetic: ``32`` (float32), ``bf16`` or ``16`` (``torch.autocast`` around the
    forward pass and loss; ``16`` adds ``torch.amp.GradScaler``). Weights, optimizer states,
    masks and evaluation stay float32, so served logits and the exactness of earlier tasks do not
    depend on it."""
    memory_format: Literal["auto", "contiguous", "channels_last"] = "auto"
    """Layout of conv nets' 4-D weights and inputs while training: ``channels_last`` (NHWC,
    faster convolutions on recent GPUs) or ``contiguous`` (NCHW). ``auto``: ``channels_last`` on
    CUDA, ``contiguous`` elsewhere (on this project's CPU machine channels_last was slower;
    BENCHMARKS.md). The model returns to ``contiguous`` after every fit, so evaluation, serving
    and checkpoints never depend on it."""
    deterministic: bool = True
    """Train and evaluate with ``torch.use_deterministic_algorithms(True)``, cuDNN's autotuner
    off and ``CUBLAS_WORKSPACE_CONFIG`` set (:mod:`unforget.training.determinism`), so a repeated
    or resumed run ends bit-identical on the same device type and PyTorch build (on a GPU too).
    An operation without a deterministic implementation then stops the run with one line; off
    lets PyTorch choose faster nondeterministic kernels."""
    tf32: Optional[bool] = None
    """Whether float32 matmuls and convolutions may use TensorFloat-32 on Ampere-or-later GPUs
    (``None``: PyTorch's defaults, recorded in ``results.json``)."""
    data_on_device: Literal["auto", "true", "false"] = "auto"
    """Keep a task's training split on the training device for a fit and make its batches there
    (batch order and augmentation as device ops, drawn from a generator on the device;
    :mod:`unforget.training.feed`): ``auto`` when it takes at most a quarter of the device's free
    memory (always on the CPU), ``false``: gather and augment on the host and copy each batch
    (pinned, non-blocking). On the CPU both are the same computation."""
    compile: bool = False
    """Train through ``torch.compile`` (TorchInductor; on CPU it needs a C++ compiler). Off by
    default: compiling costs time up front and only pays on long runs. Evaluation and serving
    stay eager."""
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    """``torch.compile``'s ``mode`` when ``compile`` is on: ``reduce-overhead`` replays the
    step's kernels as CUDA graphs (static shapes; CUDA only, ignored elsewhere),
    ``max-autotune`` also searches kernel configurations (longer compiles)."""

    @field_validator("data_on_device", mode="before")
    @classmethod
    def _yaml_bool(cls, v):
        return {True: "true", False: "false"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("betas")
    @classmethod
    def _betas(cls, v):
        if not all(0 <= b < 1 for b in v):
            raise ValueError("Adam's betas must both be in [0, 1)")
        return v

    @field_validator("lr_milestones")
    @classmethod
    def _milestones(cls, m, info):
        if any(b <= a for a, b in zip(m, m[1:])):
            raise ValueError(f"{m} must be strictly increasing epochs")
        epochs = info.data.get("epochs")
        if m and epochs is not None and not 1 <= m[0] <= m[-1] < epochs:
            where = f"lie in 1..{epochs - 1}" if epochs > 1 else "be [] (none)"
            raise ValueError(f"{m} must {where} (train.epochs is {epochs}; a milestone at or after the last "
                             "epoch never takes effect): give fewer or lower ones, or [] for a constant "
                             "learning rate")
        return m


class PretrainedConfig(_Strict):
    """A pretrained network as task 1 (Hung et al. 2019, Sec. 4.2-4.3: the ImageNet ResNet-50 /
    the face-verification CNN-20 that later tasks pick from): ``pretrained:`` in a config file,
    ``--pretrained FILE`` on the command line (:mod:`unforget.models.pretrained`).

    ``file``: a local weight file (state dict / safetensors in torchvision's or timm's ResNet
    key layout, or the zoo model's own), or ``torchvision`` for the published ImageNet
    ResNet-50 weights fetched with ``torch.hub`` (online only; hash checked). ``name``: task 1's
    name. ``accuracy``: its published accuracy, recorded (marked as given) when no test data is
    at hand. ``data``: an image folder for task 1 (``train/`` and / or ``test/`` class folders;
    classes in the head's order) to measure it and, with ``compact: true``, to compact it to
    ``goal`` (default ``accuracy - 0.005``, the reference's ImageNet rule). Without training
    data task 1 is kept whole (Piggyback's protocol)."""

    file: Optional[str] = None
    name: str = "pretrained"
    accuracy: Optional[float] = Field(None, ge=0, le=1)
    goal: Optional[float] = Field(None, ge=0, le=1)
    compact: bool = False
    data: Optional[str] = None
    head: Literal["linear", "a-softmax"] = "linear"
    """Kind of task 1's head in the file (``a-softmax``: SphereFace's margin head)."""
    pairs: Optional[str] = None
    """A verification ``pairs.txt`` (LFW layout): task 1 is then tested with the verification
    protocol on those pairs (face verification), whose images are under ``pairs_root``
    (``pairs_root/<person>/<person>_0001.jpg``)."""
    pairs_root: Optional[str] = None


class RunConfig(_Strict):
    """Everything that defines a run; written resolved into ``results.json`` under ``config``.

    ``seed`` is in ``0..2**32 - 1``; ``device`` is ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""

    benchmark: BenchmarkConfig = Field(default_factory=BenchmarkConfig)
    method: str = "cpg"
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    methods: dict[str, dict[str, Any]] = Field(default_factory=dict)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    device: str = "cpu"
    pretrained: Optional[PretrainedConfig] = None

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        try:
            return check_device_name(v)
        except ConfigError as e:
            raise ValueError(str(e)) from None


PRESETS = ("cpu", "paper", "full", "wsn")


def run_identity(config: RunConfig) -> dict:
    """The resolved configuration of a run as JSON, keeping only the run's own method section
    (other methods' sections of a shared preset do not change what this run does); written as
    ``results.json``'s ``config`` and compared on ``--resume`` and by ``unforget compare``."""
    data = config.model_dump(mode="json")
    data["methods"] = {k: v for k, v in data["methods"].items() if k == config.method}
    return data


def same_run(stored: Any, config: RunConfig) -> bool:
    """Whether ``stored`` (a checkpoint's or ``results.json``'s ``config``) is the
    :func:`run_identity` of ``config``. ``stored`` is validated again first, so keys added to the
    configuration after it was written compare at their defaults (a run folder written before
    ``train.optimizer`` existed is an SGD run); a mapping that no longer validates never matches."""
    try:
        return run_identity(RunConfig.model_validate(stored)) == run_identity(config)
    except ValidationError:
        return False


def run_differences(stored: Any, config: RunConfig) -> list[str]:
    """The settings (dotted keys, ``"train.deterministic: True -> False"``) in which ``config``
    differs from ``stored`` (a checkpoint's or ``results.json``'s ``config``, validated again
    first); ``["the stored configuration is not valid"]`` when it no longer validates."""
    try:
        old = run_identity(RunConfig.model_validate(stored))
    except ValidationError:
        return ["the stored configuration is not valid"]
    new = run_identity(config)

    def flat(d: dict, prefix: str = "") -> dict:
        out: dict = {}
        for k, v in d.items():
            if isinstance(v, dict) and v:
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    a, b = flat(old), flat(new)
    return [f"{k}: {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    itself silently keeps the last one). Merge keys (``<<: *anchor``) may still be overridden."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if first is not key_node.start_mark:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"key {key!r} is given twice, on lines {first.line + 1} and {key_node.start_mark.line + 1}; "
                        "keep one", None)
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(e: yaml.YAMLError) -> str:
    """One line from a PyYAML error: what is wrong and where."""
    problem = getattr(e, "problem", None)
    mark = getattr(e, "problem_mark", None)
    if not problem:
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return problem + (f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else "")


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML ``text`` with :class:`UniqueKeyLoader`; raises :class:`ConfigError` naming ``source``."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source} is not valid YAML: {_yaml_problem(e)}") from None
    except RecursionError:
        raise ConfigError(f"{source} is nested too deeply to be a configuration") from None


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping from ``path``.

    Raises:
        ConfigError: missing or unreadable file, not UTF-8 text (e.g. a binary file), not valid
            YAML, a key given twice in one mapping, or not a mapping at the top level.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"config file {p} cannot be read ({e.strerror or type(e).__name__})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p} is not a text file (not UTF-8); give a YAML file") from None
    if "\0" in text:
        raise ConfigError(f"config file {p} is not a text file (it holds NUL bytes); give a YAML file")
    data = parse_yaml(text, f"config file {p}") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level")
    return data


def has_preset(benchmark: str, name: str) -> bool:
    """Whether ``benchmark`` has a built-in ``name`` preset (own data has none)."""
    return (resources.files("unforget") / "presets" / f"{benchmark}.{name}.yaml").is_file()


def preset(benchmark: str, name: str = "cpu") -> dict:
    """The preset mapping for ``benchmark``: ``{}`` for the default ``cpu`` preset of a benchmark
    that has none (own data); raises :class:`ConfigError` for any other preset the benchmark
    lacks, listing those it has."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; presets: {', '.join(PRESETS)}")
    f = resources.files("unforget") / "presets" / f"{benchmark}.{name}.yaml"
    if not f.is_file():
        if name == "cpu":
            return {}
        have = [p for p in PRESETS if has_preset(benchmark, p)]
        raise ConfigError(f"benchmark '{benchmark}' has no '{name}' preset; it has: {', '.join(have) or 'none (defaults only)'}")
    return parse_yaml(f.read_text(), f"preset {benchmark}.{name}") or {}


def validation_message(e: ValidationError, source: str, model: Optional[type[BaseModel]] = None) -> str:
    """The first error of a pydantic validation as one line naming ``source`` and the key, e.g.
    ``"config.yaml: 'train.lr': Input should be greater than 0"``; an unknown key of ``model``
    (the validated pydantic class) gets the closest known key as a suggestion."""
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown key '{loc}'{did_you_mean(err['loc'][-1], known_keys(model, err['loc'][:-1]))}"
    msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return f"{source}: '{loc}': {msg}"


def known_keys(model: Optional[type[BaseModel]], path) -> list[str]:
    """The field names of the pydantic model found by following ``path`` (field names) from
    ``model`` through nested models; ``[]`` where the path leaves the models."""
    for part in path:
        field = getattr(model, "model_fields", {}).get(str(part))
        model = getattr(field, "annotation", None)
    return list(getattr(model, "model_fields", {})) if isinstance(model, type) else []


def validate(data: dict, source: str = "config") -> RunConfig:
    """Turn a mapping into a :class:`RunConfig`; raises :class:`ConfigError` with one line."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(validation_message(e, source, RunConfig)) from None


def resolve(benchmark: Optional[str] = None, method: Optional[str] = None, *, preset_name: str = "cpu",
            config_file: Optional[str | Path] = None, overrides: Optional[dict] = None,
            auto: Optional[dict] = None) -> RunConfig:
    """Resolve a run configuration: defaults < preset < ``auto`` (the automatic configuration
    of own data, :mod:`unforget.autoconfig`) < config file < ``overrides``.

    The benchmark whose preset is used is, by priority, ``benchmark``, the config file's
    ``benchmark.name``, or the default (``digits``).

    Raises:
        ConfigError: unreadable or invalid config file (reported against the file), unknown
            preset, or an invalid value in the result (one line).
    """
    file_data = load_yaml(config_file) if config_file else {}
    file_bench = file_data.get("benchmark")
    bname = benchmark or (file_bench.get("name") if isinstance(file_bench, dict) else None) or BenchmarkConfig().name
    data = _merge(_merge(preset(bname, preset_name), auto or {}), file_data)
    if file_data:
        validate(data, str(config_file))  # the file's mistakes (e.g. unknown keys) are reported against it
    data = _merge(data, overrides or {})
    data = _merge(data, {"benchmark": {"name": bname}})
    if method:
        data["method"] = method
    return validate(data, "configuration")
