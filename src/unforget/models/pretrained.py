"""Pretrained weights for a zoo model and its classifier head: task 1 of CPG's experiments 2 and 3
(Hung et al. 2019, Sec. 4.2: an ImageNet ResNet-50 with its 1000-class head; Sec. 4.3: a
face-verification CNN-20).

Accepted layouts:

* ``resnet50``: torchvision's and timm's ResNet-50 state dicts (the same key names: ``conv1.*``,
  ``bn1.*``, ``layer1.0.conv1.*``, ..., head ``fc.weight`` / ``fc.bias``), at any width whose
  shapes match the model (1.0 for the published files);
* any zoo model: this package's own key names (``features.*``, head ``head.weight`` /
  ``head.bias`` or ``fc.*``).

``torchvision`` as the file name fetches the published ImageNet ResNet-50 weights
(``IMAGENET1K_V1``, 76.13 % top-1 in torchvision's table) with :func:`torch.hub.load_state_dict_from_url`,
which checks the SHA-256 prefix in the file name; this needs the internet, and no test does it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from unforget.models.heads import AngleLinear
from unforget.models.resnet50 import PretrainedWeightsError, load_torchvision_weights, read_state_dict

TORCHVISION_RESNET50_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"
"""torchvision's ``ResNet50_Weights.IMAGENET1K_V1`` (the hash prefix ``0676ba61`` is checked)."""

HEAD_KEYS = (("fc.weight", "fc.bias"), ("head.weight", "head.bias"), ("classifier.weight", "classifier.bias"),
             ("fc6.weight", "fc6.bias"))
"""Classifier-head key pairs looked for, in this order (torchvision / timm ResNet: ``fc``; the
SphereFace / CPG CNN-20: ``fc6``, an ``AngleLinear`` stored ``(features, classes)``)."""

SPHERE_UNITS = (1, 2, 4, 1)
"""Residual units per stage of the 20-layer SphereFace CNN (its reference layout numbers the convs
of stage s ``conv{s}_1`` (stride 2), then two per unit)."""


def cnn20_state(state: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """The reference CNN-20 layout (SphereFace's ``sphere20a`` as the CPG reference's
    ``face_weight.pth`` stores it: ``conv{s}_{i}.weight`` / ``.bias``, PReLU ``relu{s}_{i}.weight``,
    embedding ``fc5`` as a ``Linear(512 * h * w, 512)``) in this package's ``sphereface20`` key
    names: ``conv{s}_1`` -> ``features.stage{s}.down``, ``conv{s}_{2u+2}`` / ``conv{s}_{2u+3}`` ->
    ``features.stage{s}.units.{u}.conv1`` / ``conv2``, ``relu`` likewise to ``act`` / ``act1`` /
    ``act2``, and ``fc5`` reshaped to the full-extent conv ``features.fc5`` (the same function:
    the flattened map is read in (C, H, W) order either way).

    Raises:
        PretrainedWeightsError: a key outside that layout, or an ``fc5`` that does not fit.
    """
    modules: dict[str, str] = {}
    for st, n_units in enumerate(SPHERE_UNITS, 1):
        modules[f"conv{st}_1"], modules[f"relu{st}_1"] = f"features.stage{st}.down", f"features.stage{st}.act"
        for u in range(n_units):
            unit = f"features.stage{st}.units.{u}"
            modules[f"conv{st}_{2 * u + 2}"], modules[f"relu{st}_{2 * u + 2}"] = f"{unit}.conv1", f"{unit}.act1"
            modules[f"conv{st}_{2 * u + 3}"], modules[f"relu{st}_{2 * u + 3}"] = f"{unit}.conv2", f"{unit}.act2"
    own = net.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, v in state.items():
        layer, _, leaf = key.partition(".")
        if layer in modules:
            out[f"{modules[layer]}.{leaf}"] = v
        elif layer == "fc5":
            fc5 = own.get(f"features.fc5.{leaf}")
            if fc5 is None or v.numel() != fc5.numel():
                raise PretrainedWeightsError(f"CNN-20 weights: fc5.{leaf} has shape {tuple(v.shape)}, the model's "
                                             f"embedding needs {None if fc5 is None else tuple(fc5.shape)} values "
                                             "(check the input size: 112x112 gives a 7x7 final map)")
            out[f"features.fc5.{leaf}"] = v.reshape(fc5.shape)
        else:
            raise PretrainedWeightsError(f"CNN-20 weights: unexpected key '{key}'")
    return out


@dataclass
class PretrainedWeights:
    """A pretrained state dict split into the backbone's tensors and the head's.

    Attributes:
        state: every tensor of the file (keys as in the file).
        head: ``(weight (n_classes, features), bias (n_classes,) or None)``, or ``None`` when
            the file has no classifier head.
        source: where it came from (a path or the URL), for results.
    """

    state: dict[str, torch.Tensor]
    head: Optional[tuple[torch.Tensor, Optional[torch.Tensor]]]
    source: str

    @property
    def n_classes(self) -> Optional[int]:
        """Classes of a linear head ``(classes, features)``."""
        return None if self.head is None else int(self.head[0].shape[0])

    def classes_for(self, kind: str) -> Optional[int]:
        """Classes of the head read as ``kind``: a ``linear`` head is stored ``(classes, features)``,
        an ``a-softmax`` head ``(features, classes)`` (SphereFace's ``AngleLinear`` layout)."""
        if self.head is None:
            return None
        return int(self.head[0].shape[1 if kind == "a-softmax" else 0])


def read_pretrained(file: str | os.PathLike) -> PretrainedWeights:
    """Read a pretrained weight file (``.safetensors``, ``.pt`` / ``.pth``; see
    :func:`~unforget.models.resnet50.read_state_dict`) or, for ``"torchvision"``, fetch the
    published ImageNet ResNet-50.

    Raises:
        PretrainedWeightsError: the file is absent or unreadable, a head weight is not 2-D, or the
            download fails (offline: the message says to give a local file).
    """
    if str(file) == "torchvision":
        try:
            state = torch.hub.load_state_dict_from_url(TORCHVISION_RESNET50_URL, map_location="cpu", check_hash=True,
                                                       progress=False)
        except Exception as e:  # noqa: BLE001 - offline, proxy, hash mismatch: one user-facing line
            raise PretrainedWeightsError(f"cannot fetch torchvision's ResNet-50 weights ({type(e).__name__}: {e}); "
                                         "this machine may be offline: give a local file with --pretrained FILE") from e
        source = TORCHVISION_RESNET50_URL
    else:
        state = read_state_dict(file)
        source = str(file)
    head = None
    for wk, bk in HEAD_KEYS:
        if wk in state:
            w = state[wk]
            if w.dim() != 2:
                raise PretrainedWeightsError(f"pretrained weights {source}: head '{wk}' has shape {tuple(w.shape)}, "
                                             "expected (classes, features)")
            head = (w, state.get(bk))
            break
    return PretrainedWeights(dict(state), head, source)


def load_backbone(net: nn.Module, model_name: str, weights: PretrainedWeights) -> None:
    """Copy the backbone tensors of ``weights`` into the plain (not yet task-aware) zoo model
    ``net`` in place, strictly: every tensor of ``net.features`` must be given with its shape.

    Raises:
        PretrainedWeightsError: a missing, unexpected or mis-shaped key (the message names it).
    """
    heads = {k for pair in HEAD_KEYS for k in pair}
    state = {k: v for k, v in weights.state.items() if k not in heads}
    if model_name == "resnet50" and not any(k.startswith("features.") for k in state):
        load_torchvision_weights(net, state)  # torchvision / timm key names
        return
    if model_name == "sphereface20" and "conv1_1.weight" in state:
        state = cnn20_state(state, net)  # the SphereFace / CPG reference layout
    own = {k: v for k, v in net.state_dict().items() if k.startswith("features.")}
    given = {k if k.startswith("features.") else f"features.{k}": v for k, v in state.items()}
    unexpected = sorted(set(given) - set(own))
    if unexpected:
        raise PretrainedWeightsError(f"pretrained weights {weights.source}: unexpected key '{unexpected[0]}' "
                                     f"({len(unexpected)} in all) for model {model_name}")
    missing = [k for k in own if k not in given and not k.endswith("num_batches_tracked")]
    if missing:
        raise PretrainedWeightsError(f"pretrained weights {weights.source}: missing key '{missing[0]}' "
                                     f"({len(missing)} in all) for model {model_name}")
    for k, v in given.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise PretrainedWeightsError(f"pretrained weights {weights.source}: key '{k}' has shape {tuple(v.shape)}, "
                                         f"model {model_name} needs {tuple(own[k].shape)} (check --width)")
    with torch.no_grad():
        for k, v in given.items():
            own[k].copy_(v.to(own[k].dtype))


def load_head(head: nn.Module, weights: PretrainedWeights) -> None:
    """Copy the file's classifier head into ``head``: an ``nn.Linear`` of the file's shape, or an
    :class:`~unforget.models.heads.AngleLinear` whose weight the file stores transposed.

    Raises:
        PretrainedWeightsError: the file has no head, or the shapes differ.
    """
    if weights.head is None:
        raise PretrainedWeightsError(f"pretrained weights {weights.source} hold no classifier head "
                                     f"(looked for {', '.join(w for w, _ in HEAD_KEYS)})")
    w, b = weights.head
    want = tuple(head.weight.shape) if isinstance(getattr(head, "weight", None), torch.Tensor) else None
    if isinstance(head, AngleLinear):
        w = w.t()  # stored (features, classes), as SphereFace's AngleLinear keeps it
    if want is None or tuple(w.shape) != want:
        raise PretrainedWeightsError(f"pretrained head {tuple(w.shape)} does not fit the model's head {want or type(head).__name__}")
    with torch.no_grad():
        head.weight.copy_(w.to(head.weight.dtype))
        if head.bias is not None:
            if b is None:
                head.bias.zero_()
            else:
                head.bias.copy_(b.to(head.bias.dtype))
