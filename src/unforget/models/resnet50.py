"""ResNet-50 backbone (bottleneck blocks [3, 4, 6, 3]) with a width multiplier, registered as
``resnet50``, and loading of user-supplied torchvision-layout weights from a local file.

Source: He et al. 2016, "Deep Residual Learning for Image Recognition", Sec. 3.3-4.1 and Table 1
(50-layer column); the model Hung et al. 2019 (CPG) use for the fine-grained tasks, Sec. 4.2.

Module names mirror torchvision's ``resnet50`` under ``features.`` (``features.conv1``,
``features.layer1.0.conv1``, ``features.layer1.0.downsample.0``, ...), so a torchvision state
dict maps onto this model by prefixing its keys with ``features.``; ``fc.*`` is ignored because
the classifier heads are per task.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Mapping, Optional, Sequence

import torch
from torch import nn

from unforget.errors import UnforgetError
from unforget.models.base import MultiHeadNet, scaled
from unforget.models.pooling import GlobalAvgPool2d, MaxPool2d
from unforget.models.zoo import register_model

PRETRAINED_ENV = "UNFORGET_PRETRAINED_RESNET50"
"""Environment variable read when ``pretrained`` is not given: a path to local ResNet-50 weights."""

STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))
"""(bottleneck width, blocks) per stage at width 1; the block output is 4 x the bottleneck width
(He et al. 2016, Table 1, 50-layer)."""

EXPANSION = 4


class PretrainedWeightsError(UnforgetError, ValueError):
    """A pretrained weight file that cannot be used: absent, unreadable, not width 1.0, or with
    a missing / unexpected key or a shape mismatch (the message names the key)."""


class Bottleneck(nn.Module):
    """Bottleneck block: 1x1 (reduce) - 3x3 (stride) - 1x1 (expand), each followed by BN, ReLU
    after the residual addition; projection shortcut (1x1 conv + BN) when shape changes.

    The stride sits on the 3x3 conv (torchvision's "ResNet v1.5") rather than the first 1x1 conv
    of He et al. 2016; both have the same parameter shapes, so torchvision weights load.
    Input ``(N, in_ch, H, W)`` float -> ``(N, 4 * mid, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(self, in_ch: int, mid: int, out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample: Optional[nn.Sequential] = None
        if stride != 1 or in_ch != out:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return torch.relu(h + (x if self.downsample is None else self.downsample(x)))


@register_model("resnet50", "ResNet-50 (bottleneck [3,4,6,3], ImageNet stem; optional local torchvision weights)")
def resnet50(input_shape: Sequence[int], width: float = 1.0, cifar_stem: bool = False,
             pretrained: Optional[str] = None) -> MultiHeadNet:
    """ResNet-50: stem, 4 stages of 3 / 4 / 6 / 3 bottleneck blocks (bottleneck widths 64, 128,
    256, 512 x ``width``; block outputs 4 x that), global average pool; per-task heads read the
    ``(N, 2048 * width)`` pooled features (feature group ``stage4``).

    Args:
        input_shape: one input ``(C, H, W)``; any ``H, W >= 1`` (global average pool).
        width: width multiplier (1.0 = the published network: 23,508,032 backbone parameters).
        cifar_stem: ``False`` (default): ImageNet stem, 7x7 stride-2 conv + 3x3 stride-2 max-pool
            (He et al. 2016, Table 1). ``True``: 3x3 stride-1 conv and no max-pool, for 32x32
            inputs (as in the zoo's ``resnet18``; He et al. 2016, Sec. 4.2).
        pretrained: path to a LOCAL torchvision-layout ResNet-50 state dict (``.safetensors`` or a
            ``torch.save`` file ``.pt`` / ``.pth``, loaded with ``weights_only=True``); ``fc.*``
            is ignored. ``None`` reads ``$UNFORGET_PRETRAINED_RESNET50`` (unset or empty: random
            initialisation). Nothing is ever downloaded. Only valid at ``width == 1.0`` with the
            ImageNet stem on 3-channel inputs.

    Returns:
        A :class:`MultiHeadNet` without heads; forward takes float ``(N, C, H, W)``.

    Width groups: the stem is group ``stem``; in stage s the outputs of every block's last
    1x1 conv and of the projection shortcut are summed, so they share group ``stage{s}``; each
    block's two inner convs have their own groups ``stage{s}.block{b}.conv1`` / ``.conv2``.

    Raises:
        ValueError: ``input_shape`` is not ``(C, H, W)``.
        PretrainedWeightsError (a ``ValueError``): ``pretrained`` given (or set by the
            environment variable) with ``width != 1.0``, or the file is absent, unreadable, has
            a missing / unexpected key or a shape mismatch (the message names the key).
    """
    if len(input_shape) != 3:
        raise ValueError(f"resnet50 takes image inputs (C, H, W), got input_shape {tuple(input_shape)}")
    from_env = False
    if pretrained is None:
        pretrained = os.environ.get(PRETRAINED_ENV) or None
        from_env = pretrained is not None
    if pretrained is not None and width != 1.0:
        src = f"${PRETRAINED_ENV}" if from_env else "pretrained"
        raise PretrainedWeightsError(f"pretrained ResNet-50 weights ({src}={pretrained}) need width 1.0, got width {width}")
    in_ch = int(input_shape[0])
    stem = scaled(64, width)
    spec: dict[str, tuple[str, Optional[str]]] = {}
    layers: "OrderedDict[str, nn.Module]" = OrderedDict()
    if cifar_stem:
        layers["conv1"] = nn.Conv2d(in_ch, stem, 3, stride=1, padding=1, bias=False)
    else:
        layers["conv1"] = nn.Conv2d(in_ch, stem, 7, stride=2, padding=3, bias=False)
    layers["bn1"] = nn.BatchNorm2d(stem)
    layers["relu"] = nn.ReLU(inplace=True)
    if not cifar_stem:
        layers["maxpool"] = MaxPool2d(3, stride=2, padding=1)
    spec["features.conv1"] = ("stem", None)
    spec["features.bn1"] = ("stem", None)
    prev, prev_group = stem, "stem"
    for s, (mid0, n_blocks) in enumerate(STAGES, 1):
        mid, out = scaled(mid0, width), scaled(mid0 * EXPANSION, width)
        group = f"stage{s}"
        blocks = []
        for b in range(n_blocks):
            stride = 2 if (s > 1 and b == 0) else 1
            block = Bottleneck(prev, mid, out, stride)
            name = f"features.layer{s}.{b}"
            inner1, inner2 = f"{group}.block{b + 1}.conv1", f"{group}.block{b + 1}.conv2"
            spec[f"{name}.conv1"] = (inner1, prev_group)
            spec[f"{name}.bn1"] = (inner1, None)
            spec[f"{name}.conv2"] = (inner2, inner1)
            spec[f"{name}.bn2"] = (inner2, None)
            spec[f"{name}.conv3"] = (group, inner2)
            spec[f"{name}.bn3"] = (group, None)
            if block.downsample is not None:
                spec[f"{name}.downsample.0"] = (group, prev_group)
                spec[f"{name}.downsample.1"] = (group, None)
            blocks.append(block)
            prev, prev_group = out, group
        layers[f"layer{s}"] = nn.Sequential(*blocks)
    layers["avgpool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    net = MultiHeadNet(prev, prev_group)
    net.features = nn.Sequential(layers)
    net.groups_spec = spec
    _init_weights(net.features)
    if pretrained is not None:
        load_torchvision_weights(net, pretrained)
    return net


def _init_weights(features: nn.Module) -> None:
    """torchvision's ResNet initialisation: Kaiming-normal (fan_out, ReLU) convs, BN (1, 0)."""
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ------------------------------------------------------------------------- pretrained weights
def torchvision_key(name: str) -> Optional[str]:
    """The torchvision ``resnet50`` state-dict key of this model's key ``name``
    (``features.layer1.0.conv1.weight`` -> ``layer1.0.conv1.weight``); ``None`` for keys
    outside ``features`` (heads)."""
    prefix = "features."
    return name[len(prefix):] if name.startswith(prefix) else None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a local ``.safetensors`` file or a ``torch.save`` file (loaded
    with ``torch.load(path, map_location="cpu", weights_only=True)``). A checkpoint wrapping
    the state dict under ``"state_dict"`` or ``"model"`` is unwrapped, and a DataParallel
    ``module.`` prefix is dropped.

    Raises:
        PretrainedWeightsError: the file is absent or unreadable, or holds no tensor mapping.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise PretrainedWeightsError(f"pretrained weights file '{p}' not found (weights are never downloaded; "
                                     f"give a local .safetensors / .pt / .pth file)")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(p), device="cpu")
        else:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - reported as a user error naming the file
        raise PretrainedWeightsError(f"cannot read pretrained weights '{p}': {type(e).__name__}: {e}") from e
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise PretrainedWeightsError(f"pretrained weights '{p}' hold no state dict (a mapping of names to tensors)")
    out: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        key = k[len("module."):] if isinstance(k, str) and k.startswith("module.") else k
        if not isinstance(v, torch.Tensor):
            raise PretrainedWeightsError(f"pretrained weights '{p}': key '{k}' is not a tensor ({type(v).__name__})")
        out[str(key)] = v
    return out


def load_torchvision_weights(net: MultiHeadNet, source: str | os.PathLike | Mapping[str, torch.Tensor]) -> None:
    """Copy torchvision-layout ResNet-50 weights into ``net.features`` (in place, strict).

    Every parameter and BN buffer of ``net.features`` must be present in ``source`` with the
    same shape (BN ``num_batches_tracked`` may be absent: older torchvision files lack it);
    ``fc.weight`` / ``fc.bias`` are ignored; any other key is unexpected. Values are cast to
    the model's dtype. Call before :func:`unforget.layers.to_task_aware`.

    Args:
        net: a plain (not yet task-aware) model built by :func:`resnet50` at width 1.0.
        source: a path (see :func:`read_state_dict`) or a state dict.

    Raises:
        PretrainedWeightsError (a ``ValueError``): the model is task-aware already, or a key is
            missing or unexpected, or a shape differs (the message names the key and shapes).
    """
    if getattr(net, "task_context", None) is not None:
        raise PretrainedWeightsError("load pretrained weights before converting the model with to_task_aware")
    where = f"'{source}'" if isinstance(source, (str, os.PathLike)) else "the given state dict"
    state = read_state_dict(source) if isinstance(source, (str, os.PathLike)) else dict(source)
    own = {k: v for k, v in net.state_dict().items() if torchvision_key(k) is not None}
    wanted = {torchvision_key(k): k for k in own}
    unexpected = [k for k in state if k not in wanted and not k.startswith("fc.")]
    if unexpected:
        raise PretrainedWeightsError(f"pretrained weights {where}: unexpected key '{unexpected[0]}' "
                                     f"({len(unexpected)} unexpected in all); expected a torchvision ResNet-50 state dict")
    missing = [tv for tv in wanted if tv not in state and not tv.endswith("num_batches_tracked")]
    if missing:
        raise PretrainedWeightsError(f"pretrained weights {where}: missing key '{missing[0]}' ({len(missing)} missing in all)")
    for tv, name in wanted.items():
        if tv in state and tuple(state[tv].shape) != tuple(own[name].shape):
            raise PretrainedWeightsError(f"pretrained weights {where}: key '{tv}' has shape {tuple(state[tv].shape)}, "
                                         f"the model needs {tuple(own[name].shape)} (width 1.0, ImageNet stem, "
                                         f"{net.features.conv1.in_channels}-channel input)")
    with torch.no_grad():
        for tv, name in wanted.items():
            if tv in state:
                own[name].copy_(state[tv].to(own[name].dtype))
