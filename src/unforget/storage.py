"""Compact, lossless storage of a checkpoint's tensors: what the reported model size counts is
what the file holds (issue 11, "Store what the report claims").

:func:`encode` turns a ``{name: tensor}`` mapping into the tensors actually written and a JSON-able
description of how each encoded tensor is rebuilt; :func:`decode` is its exact inverse (every
bit, dtype and shape comes back). Tensors no encoding makes smaller are stored as they are, under
their own name; an encoded tensor ``x`` is stored as parts ``x#<part>``. Encodings:

``uint``
    An integer tensor with values in ``0 .. 2**b - 1`` (a layer's ``owner``: 0 free, t the task
    that keeps the weight) as ``b = bit_length(max)`` bit planes, each bit-packed: ``b`` bits per
    entry, the ``ceil(log2(K + 1))`` bits the report counts. When every row (index along dim 0)
    holds one value (CLNP claims and releases whole units) only one value per row is stored.
``pick``
    A ``bool`` pick mask ``<layer>.pick_<t>`` whose true entries all lie where task ``t`` can pick
    (``0 < owner < t`` in ``<layer>.owner``): only those entries, one bit each, in row-major
    order. A mask that is true elsewhere (never written by unforget) is stored as ``bool``.
``bool``
    Any other ``bool`` tensor, bit-packed (one bit per entry).
``support``
    A float tensor of 2 or more dims, seen as ``(rows, columns)`` (columns: all dims after the
    first, flattened). Its entries are split into classes: for ``<layer>.weight`` the owner of
    each weight in ``<layer>.owner`` (0 = free), else one class. For every class and column a
    bit tells whether any entry of that class in that column is non-zero (bit pattern; ``-0.0``
    counts as non-zero); only the entries whose bit is set are stored, as a 1-D tensor in
    row-major order, and every other entry is ``+0.0`` again on decoding. So the values of free
    (released) weights, which are zero, are not stored; nor are CLNP's interference weights
    (columns of later or free units into an earlier task's units), nor the zero column blocks of
    CLNP's single head. Free weights that are not zero (never the case after a finished task)
    would be stored, so decoding is always exact.

An encoding is used only when it saves at least :data:`MIN_SAVING` bytes.
"""
from __future__ import annotations

import math
import re
from typing import Optional

import torch

SEP = "#"
"""Separates an encoded tensor's name from the name of one of its stored parts."""
MIN_SAVING = 64
"""Bytes an encoding must save over the plain tensor to be used (its description costs some)."""
PICK_NAME = re.compile(r"^(.*)\.pick_(\d+)$")
"""Name of a frozen pick mask: ``<layer>.pick_<t>``."""
_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8, torch.int8, torch.int16,
    torch.int32, torch.int64, torch.bool)}
_BITS_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


class EncodingError(ValueError):
    """Stored parts and their description do not fit together (a damaged file)."""


# ---------------------------------------------------------------------- bit packing
def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """A ``bool`` tensor as ``ceil(n / 8)`` ``uint8`` (flattened, least significant bit first)."""
    flat = bits.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    weights = torch.tensor([1 << i for i in range(8)], dtype=torch.uint8)
    return (flat.view(-1, 8) * weights).sum(1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: the first ``n`` bits of ``packed`` as a 1-D ``bool`` tensor."""
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != (n + 7) // 8:
        raise EncodingError(f"{packed.numel()} packed bytes of {packed.dtype} cannot hold {n} bits")
    shifts = torch.arange(8, dtype=torch.uint8)
    return ((packed.unsqueeze(1) >> shifts) & 1).reshape(-1)[:n].bool()


def _pack_uint(values: torch.Tensor, b: int) -> torch.Tensor:
    v = values.reshape(-1).to(torch.int64)
    return torch.stack([pack_bits((v >> i) & 1) for i in range(b)]) if v.numel() else \
        torch.zeros((b, 0), dtype=torch.uint8)


def _unpack_uint(planes: torch.Tensor, b: int, n: int) -> torch.Tensor:
    if planes.dim() != 2 or planes.shape[0] != b:
        raise EncodingError(f"expected {b} bit planes, found shape {tuple(planes.shape)}")
    v = torch.zeros(n, dtype=torch.int64)
    for i in range(b):
        v |= unpack_bits(planes[i].contiguous(), n).to(torch.int64) << i
    return v


def _nonzero_bits(t: torch.Tensor) -> torch.Tensor:
    """Where ``t``'s bit pattern is not all zeros (``-0.0`` and NaN count as non-zero)."""
    return t.view(_BITS_VIEW[t.element_size()]) != 0


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _dtype(name) -> torch.dtype:
    if name not in _DTYPES:
        raise EncodingError(f"unknown dtype {name!r}")
    return _DTYPES[name]


def _shape(value) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(s, int) and s >= 0 for s in value):
        raise EncodingError(f"bad shape {value!r}")
    return tuple(value)


# ---------------------------------------------------------------------- encoders
def _owner_of(name: str, tensors: dict[str, torch.Tensor], shape) -> Optional[str]:
    """``<layer>.owner`` for ``<layer>.<x>`` when it is a non-negative integer tensor of ``shape``."""
    owner = name.rsplit(".", 1)[0] + ".owner" if "." in name else None
    t = tensors.get(owner)
    if t is None or t.shape != shape or t.dtype.is_floating_point or t.dtype in (torch.bool,) \
            or t.dtype.is_complex or (t.numel() and int(t.min()) < 0):
        return None
    return owner


def _enc_uint(t: torch.Tensor):
    if t.numel() == 0 or int(t.min()) < 0:
        return None
    b = max(1, int(t.max()).bit_length())
    flat = t.reshape(t.shape[0], -1) if t.dim() >= 2 and t.shape[0] > 0 else None
    rows = flat is not None and bool((flat == flat[:, :1]).all())
    values = flat[:, 0] if rows else t
    return {"codec": "uint", "bits": b, "rows": rows}, {"planes": _pack_uint(values, b)}


def _enc_pick(name: str, t: torch.Tensor, tensors):
    m = PICK_NAME.match(name)
    owner = _owner_of(name, tensors, t.shape) if m else None
    if owner is None:
        return None
    o = tensors[owner]
    covered = (o > 0) & (o < int(m.group(2)))
    if bool((t & ~covered).any()):
        return None
    return {"codec": "pick", "owner": owner, "task": int(m.group(2))}, {"bits": pack_bits(t[covered])}


def _enc_support(name: str, t: torch.Tensor, tensors):
    if t.dim() < 2 or t.shape[0] == 0 or t.numel() == 0:
        return None
    owner = _owner_of(name, tensors, t.shape) if name.endswith(".weight") else None
    rows, cols = t.shape[0], t.numel() // t.shape[0]
    if owner is not None:
        cls = tensors[owner].reshape(rows, cols).to(torch.int64)
        n_cls = int(cls.max()) + 1
    else:
        cls, n_cls = torch.zeros((rows, cols), dtype=torch.int64), 1
    if n_cls * cols > 8 * _nbytes(t):  # the mask alone would not pay
        return None
    index = cls * cols + torch.arange(cols)
    support = torch.zeros(n_cls * cols, dtype=torch.bool)
    support[index[_nonzero_bits(t.reshape(rows, cols))]] = True
    keep = support[index]
    return ({"codec": "support", "classes": owner, "n_classes": n_cls},
            {"mask": pack_bits(support), "values": t.reshape(rows, cols)[keep]})


def encode(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """``(stored tensors, descriptions)`` for CPU, contiguous ``tensors`` (see the module doc);
    ``decode(*encode(t)) == t`` bit for bit."""
    stored: dict[str, torch.Tensor] = {}
    specs: dict[str, dict] = {}
    taken = {n.rpartition(SEP)[0] for n in tensors if SEP in n}  # "x" stays plain beside an "x#..."
    for name in sorted(tensors):
        t = tensors[name]
        enc = None
        if SEP not in name and name not in taken and t.dtype in _DTYPES.values():
            if t.dtype == torch.bool:
                enc = _enc_pick(name, t, tensors) or ({"codec": "bool"}, {"bits": pack_bits(t)})
            elif t.dtype.is_floating_point:
                enc = _enc_support(name, t, tensors)
            else:
                enc = _enc_uint(t)
        if enc is not None:
            spec, parts = enc
            parts = {f"{name}{SEP}{p}": v.contiguous() for p, v in parts.items()}
            if sum(map(_nbytes, parts.values())) + MIN_SAVING <= _nbytes(t):
                specs[name] = {**spec, "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}
                stored.update(parts)
                continue
        stored[name] = t
    return stored, specs


# ---------------------------------------------------------------------- decoders
def _part(stored, name, part) -> torch.Tensor:
    key = f"{name}{SEP}{part}"
    if key not in stored:
        raise EncodingError(f"{key} is missing")
    return stored[key]


def _dec_uint(name, spec, stored, out):
    shape, b = _shape(spec["shape"]), spec["bits"]
    if not isinstance(b, int) or not 1 <= b <= 63:
        raise EncodingError(f"{name}: bad bit count {b!r}")
    n = math.prod(shape)
    if spec["rows"]:
        if len(shape) < 2:
            raise EncodingError(f"{name}: per-row values need 2 or more dims")
        v = _unpack_uint(_part(stored, name, "planes"), b, shape[0])
        v = v.unsqueeze(1).expand(shape[0], n // shape[0] if shape[0] else 0)
    else:
        v = _unpack_uint(_part(stored, name, "planes"), b, n)
    return v.reshape(shape).to(_dtype(spec["dtype"]))


def _dec_bool(name, spec, stored, out):
    shape = _shape(spec["shape"])
    return unpack_bits(_part(stored, name, "bits"), math.prod(shape)).reshape(shape)


def _classes(name, spec, out, shape) -> Optional[torch.Tensor]:
    owner = spec.get("classes" if spec["codec"] == "support" else "owner")
    if owner is None:
        return None
    if owner not in out or tuple(out[owner].shape) != shape or out[owner].dtype.is_floating_point \
            or out[owner].dtype == torch.bool:
        raise EncodingError(f"{name}: its owner tensor {owner} is missing or does not fit")
    return out[owner]


def _dec_pick(name, spec, stored, out):
    shape, task = _shape(spec["shape"]), spec["task"]
    owner = _classes(name, spec, out, shape)
    if not isinstance(task, int):
        raise EncodingError(f"{name}: bad task {task!r}")
    covered = (owner > 0) & (owner < task)
    pick = torch.zeros(shape, dtype=torch.bool)
    pick[covered] = unpack_bits(_part(stored, name, "bits"), int(covered.sum()))
    return pick


def _dec_support(name, spec, stored, out):
    shape, dtype, n_cls = _shape(spec["shape"]), _dtype(spec["dtype"]), spec["n_classes"]
    if len(shape) < 2 or not isinstance(n_cls, int) or n_cls < 1:
        raise EncodingError(f"{name}: bad support description")
    rows = shape[0]
    cols = math.prod(shape) // rows if rows else 0
    owner = _classes(name, spec, out, shape)
    cls = owner.reshape(rows, cols).to(torch.int64) if owner is not None else \
        torch.zeros((rows, cols), dtype=torch.int64)
    if cls.numel() and (int(cls.min()) < 0 or int(cls.max()) >= n_cls):
        raise EncodingError(f"{name}: classes outside 0..{n_cls - 1}")
    support = unpack_bits(_part(stored, name, "mask"), n_cls * cols)
    keep = support[cls * cols + torch.arange(cols)]
    values = _part(stored, name, "values")
    if values.dtype != dtype or values.dim() != 1 or values.numel() != int(keep.sum()):
        raise EncodingError(f"{name}: {values.numel()} stored values of {values.dtype}, "
                            f"{int(keep.sum())} of {dtype} expected")
    w = torch.zeros((rows, cols), dtype=dtype)
    w[keep] = values
    return w.reshape(shape)


_DECODERS = {"uint": _dec_uint, "bool": _dec_bool, "pick": _dec_pick, "support": _dec_support}
_DEPENDENT = ("pick", "support")  # read a decoded owner tensor


def decode(stored: dict[str, torch.Tensor], specs: dict[str, dict]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`encode`.

    Raises:
        EncodingError: a description or a part is missing, malformed or does not fit.
    """
    if not isinstance(specs, dict):
        raise EncodingError("the tensor descriptions are not a mapping")
    out = {k: v for k, v in stored.items() if k.rpartition(SEP)[0] not in specs or k in specs}
    clash = sorted(set(out) & set(specs))
    if clash:
        raise EncodingError(f"{clash[0]} is stored both plain and encoded")
    for dependent in (False, True):
        for name, spec in sorted(specs.items()):
            if not isinstance(spec, dict) or spec.get("codec") not in _DECODERS:
                raise EncodingError(f"{name}: unknown encoding")
            if (spec["codec"] in _DEPENDENT) != dependent:
                continue
            try:
                t = _DECODERS[spec["codec"]](name, spec, stored, out)
            except (KeyError, TypeError, RuntimeError, IndexError) as e:
                raise EncodingError(f"{name}: {type(e).__name__}") from None
            if dependent and spec.get("dtype") is not None and t.dtype != _dtype(spec["dtype"]):
                raise EncodingError(f"{name}: decoded as {t.dtype}, described as {spec['dtype']}")
            out[name] = t
    return out
