"""Checkpoints: every tensor in a ``safetensors`` file (no pickled code is ever executed on
load), the JSON metadata in the file's header, and a SHA-256 digest of both that is verified on
every load; written atomically (temporary file + rename).

Tensors are stored compactly and losslessly (:mod:`unforget.storage`): pick masks as bits over
the weights they can pick, owners in ``ceil(log2(K + 1))`` bits -- or a layer's owners and pick
masks entropy coded together when that is smaller -- no values for free weights, so that the
file holds what the reported model size counts. How each stored tensor is rebuilt is
described in the header (:data:`STORAGE_KEY`); the digest covers the metadata, that description
and the tensors as stored. Files without the description (written before compact storage) hold
every tensor plainly and still load."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from unforget.atomic import as_user_file, disk_full_is_one_line, temp_path
from unforget.errors import CheckpointError
from unforget.storage import PICK_NAME, EncodingError, decode, encode

CHECKPOINT = "checkpoint.safetensors"
META_KEY, DIGEST_KEY = "unforget", "unforget_sha256"
STORAGE_KEY = "unforget_storage"
"""Header key of the JSON description of the encoded tensors (:func:`unforget.storage.encode`)."""
TRAINING_ONLY = ("goal.",)
"""Prefixes of tensors a checkpoint keeps only to learn further tasks, not to serve: the accuracy
goals' fine-tuning reference models (``fine-avg`` / ``fine-max``), which the reported model size
rightly leaves out (:func:`checkpoint_parts`)."""
RUN_KEYS = ("config", "method", "accuracy_matrix", "records", "wall_time_s", "input_shape")
"""Metadata keys every run checkpoint (written by :func:`unforget.runner.run`) carries."""


def digest(meta_json: str, tensors: dict[str, torch.Tensor], storage_json: str | None = None) -> str:
    """SHA-256 (hex) of the metadata string, the storage description (when there is one) and of
    every stored tensor's name, dtype, shape and bytes (in name order); any changed bit changes
    it."""
    h = hashlib.sha256(meta_json.encode())
    if storage_json is not None:
        h.update(f"\0storage\0{storage_json}".encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous().reshape(-1)
        h.update(f"\0{name}\0{t.dtype}\0{tuple(tensors[name].shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write ``tensors`` and the JSON-able ``meta`` to ``path`` atomically, with their digest;
    returns the path.

    Raises:
        DiskFullError: the disk is full (one line; the previous checkpoint at ``path`` is intact).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    flat, specs = encode({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    flat = {k: v.contiguous().clone() for k, v in flat.items()}  # no shared storage in the file
    text, storage = json.dumps(meta), json.dumps(specs)
    with disk_full_is_one_line(path):
        save_file(flat, str(tmp), metadata={META_KEY: text, STORAGE_KEY: storage,
                                            DIGEST_KEY: digest(text, flat, storage)})
        as_user_file(tmp)  # safetensors creates its files 0600
        os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint written by :func:`save_checkpoint`: ``(tensors, meta)``, after
    checking its digest.

    Raises:
        CheckpointError: missing, truncated or foreign file, no or wrong digest, metadata that
            is not a JSON mapping (one line naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for damaged files
        raise CheckpointError(f"checkpoint {path} is damaged or not an unforget checkpoint ({type(e).__name__})") from None
    text, expected, storage = header.get(META_KEY), header.get(DIGEST_KEY), header.get(STORAGE_KEY)
    if text is None:
        raise CheckpointError(f"checkpoint {path} has no unforget metadata")
    if expected is None:
        raise CheckpointError(f"checkpoint {path} has no digest (written by an older unforget?); rerun with --overwrite")
    if digest(text, tensors, storage) != expected:
        raise CheckpointError(f"checkpoint {path} is damaged: its SHA-256 digest does not match its contents")
    try:
        meta = json.loads(text)
    except ValueError:
        raise CheckpointError(f"checkpoint {path} is damaged: its metadata is not JSON") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path} is damaged: its metadata is not a JSON mapping")
    if storage is not None:
        try:
            tensors = decode(tensors, json.loads(storage))
        except (ValueError, EncodingError) as e:  # a JSONDecodeError is a ValueError
            msg = str(e).splitlines()[0] if isinstance(e, EncodingError) else "not JSON"
            raise CheckpointError(f"checkpoint {path} is damaged: its tensor storage does not decode ({msg})") from None
    return {k: v.to(device) for k, v in tensors.items()}, meta


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint of ``path``: a run folder's ``checkpoint.safetensors``, or ``path`` itself."""
    path = Path(path)
    return path / CHECKPOINT if path.is_dir() else path


def no_trained_model(path: str | Path) -> str:
    """The one line every command gives for a ``path`` (run folder or file) without a
    checkpoint."""
    return (f"{path} holds no trained model (no {CHECKPOINT}); train one with `unforget run --out {path}` first, "
            "or give the folder of a run")


def checkpoint_size(path: str | Path) -> int:
    """Bytes of the checkpoint file at ``path`` (a run folder or the file): the number
    ``results.json`` reports as ``checkpoint_bytes`` beside ``model_size_bytes``."""
    return checkpoint_file(path).stat().st_size


def checkpoint_parts(path: str | Path) -> dict[str, int]:
    """Bytes of the checkpoint file at ``path`` by part, read from its header alone (no tensor
    is loaded): ``header`` (the safetensors header: tensor table, metadata, storage
    description), ``training_only`` (tensors kept only to learn further tasks:
    :data:`TRAINING_ONLY`) and ``model`` (all other stored tensors: what serving needs, the
    counterpart of the reported ``model_size_bytes``). They sum to :func:`checkpoint_size`.

    Raises:
        CheckpointError: missing file or unreadable header.
    """
    path = checkpoint_file(path)
    table = _header(path)
    try:
        spans = {k: v["data_offsets"][1] - v["data_offsets"][0] for k, v in table.items() if k != "__metadata__"}
    except (KeyError, TypeError, IndexError) as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__})") from None
    training = sum(b for k, b in spans.items() if k.startswith(TRAINING_ONLY))
    size = path.stat().st_size
    return {"header": size - sum(spans.values()), "training_only": training,
            "model": sum(spans.values()) - training}


def _header(path: Path) -> dict:
    """The safetensors header (tensor table and ``__metadata__``) of the file at ``path``.

    Raises:
        CheckpointError: missing file or unreadable header.
    """
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            table = json.loads(f.read(n))
        if not isinstance(table, dict):
            raise ValueError("not a mapping")
        return table
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__})") from None


def checkpoint_meta(path: str | Path) -> dict:
    """The run metadata of the checkpoint at ``path`` (a run folder or the file), read from its
    header alone (no tensor is loaded, the digest is not checked).

    Raises:
        CheckpointError: missing file, unreadable header or metadata.
    """
    path = checkpoint_file(path)
    try:
        meta = json.loads(_header(path)["__metadata__"][META_KEY])
        if not isinstance(meta, dict):
            raise ValueError("not a mapping")
        return meta
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__})") from None


def checkpoint_tasks(path: str | Path) -> int:
    """Number of tasks the run checkpoint at ``path`` (a run folder or the file) holds, read
    from its header alone (no tensor is loaded, the digest is not checked).

    Raises:
        CheckpointError: missing file, unreadable header or metadata.
    """
    try:
        return len(checkpoint_meta(path)["records"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {checkpoint_file(path)} cannot be read ({type(e).__name__})") from None


def check_run_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> int:
    """Check a run checkpoint's metadata keys (:data:`RUN_KEYS`) and its masks; returns the
    number K of learned tasks (rows of the accuracy matrix).

    Every ``*.owner`` tensor is an integer tensor with values in 0..K (0: free); every
    ``*.pick_t`` is a bool tensor of the shape of its layer's ``owner``, for a learned task
    ``t`` (2..K), and picks only weights of earlier tasks (owner in 1..t-1) -- except for a
    method whose state says ``mask_policy: supermask`` (SupSup), whose masks cover every weight
    of tasks 1..K.

    Raises:
        CheckpointError: one line naming the file and what is wrong.
    """
    missing = [k for k in RUN_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint {path} is damaged: its metadata lacks {', '.join(missing)}")
    if not isinstance(meta["accuracy_matrix"], list) or not isinstance(meta["records"], list) \
            or len(meta["records"]) != len(meta["accuracy_matrix"]):
        raise CheckpointError(f"checkpoint {path} is damaged: accuracy_matrix and records disagree")
    k = len(meta["accuracy_matrix"])
    method_meta = meta["method"] if isinstance(meta["method"], dict) else {}
    supermasks = method_meta.get("mask_policy") == "supermask"  # masks over every weight (SupSup)
    for name, t in tensors.items():
        if name.endswith(".owner"):
            if t.dtype.is_floating_point or t.dtype == torch.bool or t.dtype.is_complex:
                raise CheckpointError(f"checkpoint {path}: {name} has dtype {t.dtype}, not an integer type")
            if t.numel() and (int(t.min()) < 0 or int(t.max()) > k):
                raise CheckpointError(f"checkpoint {path}: {name} holds owners {int(t.min())}..{int(t.max())}, "
                                      f"outside 0..{k} (learned tasks)")
        m = PICK_NAME.match(name)
        if m:
            _check_pick(path, name, t, tensors.get(m.group(1) + ".owner"), int(m.group(2)), k, supermasks)
    return k


def _check_pick(path, name: str, pick: torch.Tensor, owner, task: int, k: int, supermask: bool = False) -> None:
    first = 1 if supermask else 2
    if not first <= task <= k:
        raise CheckpointError(f"checkpoint {path}: {name} is a pick mask of task {task}, not one of the "
                              f"learned tasks {first}..{k}")
    if pick.dtype != torch.bool:
        raise CheckpointError(f"checkpoint {path}: {name} has dtype {pick.dtype}, not bool")
    if owner is None or owner.shape != pick.shape:
        raise CheckpointError(f"checkpoint {path}: {name} has no owner tensor of its shape {tuple(pick.shape)}")
    if not supermask and bool((pick & ~((owner > 0) & (owner < task))).any()):
        raise CheckpointError(f"checkpoint {path}: {name} picks weights that no earlier task owns")
