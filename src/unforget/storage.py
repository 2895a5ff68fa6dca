"""Compact, lossless storage of a checkpoint's tensors: what the reported model size counts is
what the file holds (issue 11, "Store what the report claims").

:func:`encode` turns a ``{name: tensor}`` mapping into the tensors actually written and a JSON-able
description of how each encoded tensor is rebuilt; :func:`decode` is its exact inverse (every
bit, dtype and shape comes back). Tensors no encoding makes smaller are stored as they are, under
their own name; an encoded tensor ``x`` is stored as parts ``x#<part>``. Encodings:

``uint``
    An integer tensor with values in ``0 .. 2**b - 1`` (a layer's ``owner``: 0 free, t the task
    that keeps the weight) as ``b = bit_length(max)`` bit planes, each bit-packed: ``b`` bits per
    entry (``ceil(log2(K + 1))`` bits for K tasks). When every row (index along dim 0)
    holds one value (CLNP claims and releases whole units) only one value per row is stored.
``pick``
    A ``bool`` pick mask ``<layer>.pick_<t>`` whose true entries all lie where task ``t`` can pick
    (``0 < owner < t`` in ``<layer>.owner``): only those entries, one bit each, in row-major
    order. A mask that is true elsewhere (never written by unforget) is stored as ``bool``.
``masks``
    A layer's ``owner`` together with all its pick masks ``<layer>.pick_<t>`` (of its shape; none
    for PackNet), as the paper of WSN stores its task masks (Kang et al. 2022, Sec. 3.3: each weight's masks of
    all tasks as one N-bit code, entropy coded): every weight's tuple ``(owner, pick_t1, pick_t2,
    ...)`` is one code of ``b + P`` bits (the owner's ``b`` bits, then one bit per pick mask in
    task order), cut into bytes as the paper cuts its codes into 7-bit pieces: byte plane ``j``
    holds bits ``8j .. 8j + 7`` of every weight's code (row-major), and each plane is compressed
    with bzip2 (Python's ``bz2``: Burrows-Wheeler transform, move-to-front, Huffman
    coding). The pick masks are then described as ``masked`` (stored in their owner's
    ``masks``). Used when it stores fewer bytes than ``uint`` and ``pick`` would.
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

import bz2
import hashlib
import math
import re
from collections import OrderedDict
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


def _enc_masks(name: str, tensors, picks: list[str]):
    """The ``masks`` encoding of owner tensor ``name`` and its pick masks ``picks``."""
    owner = tensors[name].reshape(-1).to(torch.int64)
    b = max(1, int(owner.max()).bit_length())
    if b > 62:
        return None
    bits = [(owner >> k) & 1 for k in range(b)] + [tensors[p].reshape(-1).to(torch.int64) for p in picks]
    planes = []
    for j in range(0, len(bits), 8):  # the code's bits 8j .. 8j + 7 as one byte per weight
        plane = torch.zeros_like(owner)
        for i, bit in enumerate(bits[j:j + 8]):
            plane |= bit << i
        planes.append(_bz2(plane.to(torch.uint8)))
    return ({"codec": "masks", "coder": "bz2", "owner_bits": b, "picks": picks},
            {"data": torch.cat(planes), "sizes": torch.tensor([len(p) for p in planes], dtype=torch.int64)})


_BZ2_MEMO: "OrderedDict[bytes, bytes]" = OrderedDict()
_BZ2_MEMO_ENTRIES = 512


def _bz2(t: torch.Tensor) -> torch.Tensor:
    """``t``'s bytes bzip2-compressed (level 9), as ``uint8``. The same bytes are compressed
    once: the last :data:`_BZ2_MEMO_ENTRIES` results are kept by a BLAKE2 digest of their input,
    because a run codes the same masks for its reported size and again for each checkpoint."""
    raw = t.numpy().tobytes()
    key = hashlib.blake2b(raw, digest_size=32).digest() + len(raw).to_bytes(8, "little")
    packed = _BZ2_MEMO.get(key)
    if packed is None:
        packed = _BZ2_MEMO[key] = bz2.compress(raw, 9)
        while len(_BZ2_MEMO) > _BZ2_MEMO_ENTRIES:
            _BZ2_MEMO.popitem(last=False)
    else:
        _BZ2_MEMO.move_to_end(key)
    return torch.frombuffer(bytearray(packed), dtype=torch.uint8)


def _unbz2(name: str, packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_bz2`: the bytes as ``int64`` (1-D)."""
    try:
        raw = bz2.decompress(packed.numpy().tobytes())
    except (OSError, ValueError):
        raise EncodingError(f"{name}: the compressed masks do not decompress") from None
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).to(torch.int64) if raw else torch.zeros(0, dtype=torch.int64)


def _mask_groups(tensors) -> dict[str, list[str]]:
    """Owner tensor name -> the names of its pick masks (sorted by task), for every non-negative
    integer ``<layer>.owner`` with at least one entry."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for name, t in tensors.items():
        if SEP in name:
            continue
        m = PICK_NAME.match(name)
        if m and t.dtype == torch.bool:
            owner = _owner_of(name, tensors, t.shape)
            if owner is not None and tensors[owner].numel():
                groups.setdefault(owner, []).append((int(m.group(2)), name))
        elif name.endswith(".owner") and _owner_of(name, tensors, t.shape) == name and t.numel():
            groups.setdefault(name, [])
    return {o: [n for _, n in sorted(ps)] for o, ps in groups.items()}


def _encode_one(name: str, t: torch.Tensor, tensors):
    """The encoding :func:`encode` would give ``t`` on its own (``(spec, parts)``), or ``None``
    to store it as it is."""
    if SEP in name or t.dtype not in _DTYPES.values():
        return None
    if t.dtype == torch.bool:
        enc = _enc_pick(name, t, tensors) or ({"codec": "bool"}, {"bits": pack_bits(t)})
    elif t.dtype.is_floating_point:
        enc = _enc_support(name, t, tensors)
    else:
        enc = _enc_uint(t)
    if enc is not None and sum(map(_nbytes, enc[1].values())) + MIN_SAVING <= _nbytes(t):
        return enc
    return None


def _stored(enc, t: torch.Tensor) -> int:
    return _nbytes(t) if enc is None else sum(map(_nbytes, enc[1].values()))


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
    chosen = {n: _encode_one(n, t, tensors) for n, t in tensors.items() if n not in taken}
    for owner, picks in _mask_groups(tensors).items():
        if owner in taken or any(p in taken for p in picks):
            continue
        enc = _enc_masks(owner, tensors, picks)
        alone = sum(_stored(chosen[n], tensors[n]) for n in [owner, *picks])
        if enc is not None and sum(map(_nbytes, enc[1].values())) + MIN_SAVING <= alone:
            chosen[owner] = enc
            for p in picks:
                chosen[p] = ({"codec": "masked", "owner": owner}, {})
    for name in sorted(tensors):
        t, enc = tensors[name], chosen.get(name)
        if enc is None:
            stored[name] = t
            continue
        spec, parts = enc
        specs[name] = {**spec, "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}
        stored.update({f"{name}{SEP}{p}": v.contiguous() for p, v in parts.items()})
    return stored, specs


def stored_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """Bytes :func:`encode` stores for ``tensors`` (the tensor data, not the descriptions): what a
    method's reported model size counts for them, so that report and file agree (issue 11)."""
    return sum(map(_nbytes, encode(tensors)[0].values()))


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


def _dec_masks(name, spec, stored, out):
    shape, picks, b = _shape(spec["shape"]), spec["picks"], spec["owner_bits"]
    if spec.get("coder") != "bz2" or not isinstance(picks, list) or not isinstance(b, int) or not 1 <= b <= 62:
        raise EncodingError(f"{name}: bad masks description")
    n, n_bits = math.prod(shape), b + len(picks)
    data, sizes = _part(stored, name, "data"), _part(stored, name, "sizes")
    if sizes.dim() != 1 or sizes.numel() != -(-n_bits // 8) or int(sizes.sum()) != data.numel() \
            or (sizes.numel() and int(sizes.min()) < 0):
        raise EncodingError(f"{name}: {sizes.numel()} byte planes of {data.numel()} bytes do not fit {n_bits} bits")
    bits, at = [], 0
    for size in sizes.tolist():
        plane = _unbz2(name, data[at:at + size])
        at += size
        if plane.numel() != n:
            raise EncodingError(f"{name}: a byte plane of {plane.numel()} entries for {n} weights")
        bits += [(plane >> i) & 1 for i in range(min(8, n_bits - len(bits)))]
    owner = torch.zeros(n, dtype=torch.int64)
    for k in range(b):
        owner |= bits[k] << k
    for i, p in enumerate(picks):
        out[p] = bits[b + i].bool().reshape(shape)
    return owner.reshape(shape).to(_dtype(spec["dtype"]))


def _dec_masked(name, spec, stored, out):
    if name not in out or spec.get("owner") not in out:
        raise EncodingError(f"{name}: not among the masks of {spec.get('owner')!r}")
    return out[name]


_DECODERS = {"uint": _dec_uint, "bool": _dec_bool, "pick": _dec_pick, "support": _dec_support,
             "masks": _dec_masks, "masked": _dec_masked}
_DEPENDENT = ("pick", "support", "masked")  # read a decoded owner tensor


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
