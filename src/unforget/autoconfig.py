"""The automatic configuration of a run on one's own data (``image-folder``, ``npz``, a
:func:`~unforget.data.tensor_benchmark` or any benchmark without a preset).

Built-in benchmarks have presets sized to them (``presets/*.yaml``). Own data has none, and the
generic defaults (a full-width VGG16-BN or 2 x 2000 MLP for 3 epochs) are sized to nothing: on
three small folders of images they ran 10 minutes on 2 cores and stayed near chance. So a run on
own data gets settings chosen from what the data holds — input shape, training images and classes
per task, number of tasks — and the device; :func:`auto_config` documents the rules. The choice
is printed as one line (what, why, how to override) and recorded in ``results.json``
(``auto_config``).

Resolution order with it (later wins): defaults < the automatic configuration < ``--config FILE``
< command-line flags. Anything the user sets is kept.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Callable, Optional

from unforget.config import RunConfig, has_preset, load_yaml, preset, resolve, validate
from unforget.data.task import Benchmark

IMAGES_SEEN_PER_TASK = {"resnet18": 3000, "vgg16_bn": 6000, "mlp": 6000}
"""Training images each task sees (epochs x training images; for a convolutional network, in
32x32 equivalents), per network. Measured on 288 CIFAR-10 images per task (BENCHMARKS.md, "Own
data"): a ResNet-18 at width 0.25 learns as well in 10 epochs as in 20 (78.8 % / 77.9 %, one
model per task), a VGG16-BN at width 0.25 needs 20 (65.4 % at 10, 73.8 % at 20); 6,000 is also
what the split-cifar10 cpu preset gives each task (1,800 images x 3 epochs)."""
MIN_EPOCHS, MAX_EPOCHS = 3, 30
SMALL_TASK = 2000
"""Below this many training images per task, batches of 32 (the CPG paper's batch size; more
steps per epoch); from it on, 64."""
LARGE_TASK = 5000
"""From this many training images per task, a wider network (see :func:`auto_config`)."""
GOAL_METHODS = ("cpg", "pae")
"""Methods whose accuracy goal gets a tolerance of at least one validation image."""


@dataclass
class AutoConfig:
    """What :func:`auto_config` chose.

    Attributes:
        settings: the configuration layer (``{"model": ..., "train": ..., "methods": ...}``).
        data: what it was chosen from (input shape, training images and classes per task,
            tasks, validation images per task, device).
        reason: one line: the choice, why, and how to override it.
    """

    settings: dict
    data: dict
    reason: str
    overridden: dict = field(default_factory=dict)

    def finish(self, cfg: RunConfig, milestones_given: bool = False) -> RunConfig:
        """The final configuration: ``cfg`` (the automatic layer under the user's file and
        flags) with the learning-rate decay at :func:`decay_milestones` of its final epochs,
        unless the user gave ``train.lr_milestones`` (``milestones_given``); records which of
        the chosen settings the user replaced (:meth:`note_overrides`).

        Raises:
            ConfigError: the result is not a valid configuration (one line).
        """
        self.settings["train"]["lr_milestones"] = decay_milestones(self.settings["train"]["epochs"])
        if not milestones_given:
            ms = decay_milestones(cfg.train.epochs)
            data = cfg.model_dump(mode="json")
            data["train"]["lr_milestones"] = ms
            cfg = validate(data, "configuration")
            decay = f"; lr x0.1 at epochs {', '.join(map(str, ms))}" if ms else ""
            self.reason = self.reason.replace("; override with", f"{decay}; override with", 1)
        self.note_overrides(cfg, skip=() if milestones_given else ("lr_milestones",))
        return cfg

    def note_overrides(self, cfg: RunConfig, skip: tuple[str, ...] = ()) -> dict:
        """Record (and append to :attr:`reason`) which chosen model and training settings the
        final configuration ``cfg`` replaced (the user's config file or flags), except the keys
        in ``skip``; returns them."""
        final = {"model": cfg.model.model_dump(), "train": cfg.train.model_dump()}
        changed = {f"{sec}.{k}": final[sec][k] for sec in ("model", "train") for k, v in self.settings[sec].items()
                   if k not in skip and final[sec][k] != v}
        self.overridden = changed
        self.reason = self._in_force(self.reason, final)
        if changed:
            self.reason += "; yours kept: " + ", ".join(f"{k} {v}" for k, v in changed.items())
        return changed

    def _in_force(self, reason: str, final: dict) -> str:
        """``reason`` with the model, width, epochs and batch in force (the user's where they
        replaced the chosen ones, marked ``yours``), so the line never states a setting the run
        does not use."""
        chosen_m, chosen_t = self.settings["model"], self.settings["train"]
        fm, ft = final["model"], final["train"]
        pairs = [(f"{chosen_m['name']} at width {chosen_m['width']:g}", f"{fm['name']} at width {fm['width']:g}"),
                 (f"{chosen_t['epochs']} epochs", f"{ft['epochs']} epochs"),
                 (f"batch {chosen_t['batch_size']}", f"batch {ft['batch_size']}")]
        for old, new in pairs:
            if old != new and f"(yours; {old} chosen)" not in reason:
                reason = reason.replace(old, f"{new} (yours; {old} chosen)", 1)
        return reason

    def record(self) -> dict:
        """The JSON-able ``auto_config`` entry of ``results.json``."""
        return {"settings": self.settings, "data": self.data, "reason": self.reason, "overridden": self.overridden}


def decay_milestones(epochs: int) -> list[int]:
    """Epochs at which the learning rate drops x0.1: half and 80 % of ``epochs`` (rounded),
    those in ``1..epochs - 1``; ``[]`` for fewer than 2 epochs."""
    return sorted({m for m in (round(0.5 * epochs), round(0.8 * epochs)) if 1 <= m <= epochs - 1})


def _user_set_milestones(config_file, overrides: Optional[dict]) -> bool:
    for source in ((load_yaml(config_file) if config_file else {}), overrides or {}):
        train = source.get("train") if isinstance(source, dict) else None
        if isinstance(train, dict) and "lr_milestones" in train:
            return True
    return False


def _methods_of(benchmark: str) -> dict:
    return preset(benchmark, "cpu").get("methods", {})


def auto_config(bench: Benchmark, device: str = "cpu") -> AutoConfig:
    """Settings for ``bench`` on ``device``:

    - **model**: RGB images of at least 32x32 get ``resnet18`` (the zoo's CIFAR ResNet-18) below
      :data:`LARGE_TASK` training images per task — on little data it learned about 5 points
      better than VGG16-BN in half the epochs (BENCHMARKS.md) — and ``vgg16_bn`` (the CPG paper's
      network) from there on; other inputs get ``mlp`` (vectors, grey or small images). Width on
      a CPU 0.25 (``mlp`` 0.1: 2 x 200 units) below :data:`LARGE_TASK`, 0.5 (0.25) from it on; on a
      GPU 0.5 (0.25) below it and the published width 1.0 from it on.
    - **epochs**: each task sees about :data:`IMAGES_SEEN_PER_TASK` training images for that
      network (fewer when a convolutional network's images are larger than 32x32, in proportion
      to their pixels), between :data:`MIN_EPOCHS` and :data:`MAX_EPOCHS` epochs.
    - **batch size**: on a CPU 32 below :data:`SMALL_TASK` training images per task, else 64; on
      a GPU twice that (64 / 128: batch 32 leaves a large GPU idle, issue 23), halved down to 32
      while it is more than a sixteenth of the training images (at least 16 steps per epoch).
      The learning rate is not rescaled; accuracy at the GPU batch sizes is not measured yet.
    - **learning rate**: the run's (SGD 0.01 by default), multiplied by 0.1 at half and at 80 %
      of the epochs (:func:`decay_milestones`, the CPG paper's 50/80-of-100 schedule scaled): on
      288 images per task the last epoch's validation accuracy swung by 15 points from epoch to
      epoch at a constant rate, and the decay gained 4 points on average (BENCHMARKS.md). The
      milestones follow the final number of epochs (:meth:`AutoConfig.finish`), unless the user gives
      ``train.lr_milestones`` (``[]``: constant).
    - **method settings**: those of the nearest built-in cpu preset (``split-cifar10`` for the
      convolutional networks, ``split-mnist`` for ``mlp``), with CPG's and PAE's
      ``goal_tolerance`` raised to at least one validation image of the smallest validation split
      (a goal closer than one image to the reference cannot be told from noise).

    The median over tasks is used for per-task counts.

    Raises:
        ValueError: ``bench`` has no tasks.
    """
    if not bench.tasks:
        raise ValueError("the benchmark has no tasks")
    shape = tuple(bench.input_shape)
    n_train = int(statistics.median(len(t.train) for t in bench.tasks))
    n_val = min(len(t.val) for t in bench.tasks)
    classes = int(statistics.median(t.n_classes for t in bench.tasks))
    gpu = not device.startswith("cpu")
    large = n_train >= LARGE_TASK
    conv = len(shape) == 3 and shape[0] == 3 and min(shape[1:]) >= 32
    if conv:
        model = "vgg16_bn" if large else "resnet18"
        width = (1.0 if large else 0.5) if gpu else (0.5 if large else 0.25)
        budget = IMAGES_SEEN_PER_TASK[model] * min(1.0, 1024 / (shape[1] * shape[2]))
        methods = _methods_of("split-cifar10")
    else:
        model = "mlp"
        width = (1.0 if large else 0.25) if gpu else (0.25 if large else 0.1)
        budget = IMAGES_SEEN_PER_TASK[model]
        methods = _methods_of("split-mnist")
    epochs = int(min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(budget / max(1, n_train)))))
    batch = (32 if n_train < SMALL_TASK else 64) * (2 if gpu else 1)
    while gpu and batch > 32 and batch * 16 > n_train:
        batch //= 2
    batch_note = " (sized to the GPU)" if gpu else ""
    methods = {m: dict(v) for m, v in methods.items()}
    tol_note = ""
    if n_val > 0:
        one_image = math.ceil(1000 / n_val) / 1000
        for m in GOAL_METHODS:
            sec = methods.setdefault(m, {})
            if sec.get("goal_tolerance", 0.01) < one_image:
                sec["goal_tolerance"] = one_image
                tol_note = f", goal tolerance {one_image:.3f} (one of {n_val} validation images)"
    settings = {"model": {"name": model, "width": width}, "train": {"epochs": epochs, "batch_size": batch},
                "methods": methods}
    shape_text = "x".join(str(s) for s in shape)
    data = {"input_shape": list(shape), "train_images_per_task": n_train, "val_images_min": n_val,
            "classes_per_task": classes, "tasks": len(bench.tasks), "device": device}
    reason = (f"automatic configuration for own data ({len(bench.tasks)} tasks of {shape_text} inputs, ~{n_train} "
              f"training images and {classes} classes per task, {device}): {model} at width {width:g}, {epochs} epochs "
              f"(~{int(budget)} images seen per task), batch {batch}{batch_note}{tol_note}; override with --model, --width, "
              "--epochs, --batch-size or --config FILE")
    return AutoConfig(settings, data, reason)


def resolve_for_data(benchmark: Optional[str], method: Optional[str], *, preset_name: str = "cpu",
                     config_file=None, overrides: Optional[dict] = None,
                     load: Callable[[RunConfig], Benchmark],
                     say: Callable[[str], None] = print) -> tuple[RunConfig, Optional[Benchmark], Optional[AutoConfig]]:
    """:func:`~unforget.config.resolve`, plus the automatic configuration when the benchmark has
    no ``preset_name`` preset (own data): the benchmark is then built first (``load(config)``)
    and :func:`auto_config` slides in under the config file and the flags; ``say`` gets its one
    line.

    Returns:
        ``(config, benchmark or None, AutoConfig or None)``: the benchmark when it was built.
    Raises:
        ConfigError / DataError: as ``resolve`` and ``load``.
    """
    cfg = resolve(benchmark, method, preset_name=preset_name, config_file=config_file, overrides=overrides)
    if has_preset(cfg.benchmark.name, preset_name):
        return cfg, None, None
    bench = load(cfg)
    auto = auto_config(bench, cfg.device)
    cfg = resolve(benchmark, method, preset_name=preset_name, config_file=config_file, overrides=overrides,
                  auto=auto.settings)
    cfg = auto.finish(cfg, _user_set_milestones(config_file, overrides))
    say(auto.reason)
    return cfg, bench, auto
