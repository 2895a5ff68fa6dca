"""Bytes of the task masks (every layer's owner indices and pick masks) in run checkpoints, three
ways: bit-packed (``ceil(log2(K+1))`` bits per owner plus one bit per weight a pick mask can
pick: the ``uint`` and ``pick`` encodings), entropy coded (each weight's owner and pick bits as
one code, cut into byte planes, each compressed with bzip2: the ``masks`` encoding, as WSN stores
its masks, Kang et al. 2022, Sec. 3.3), and the Shannon entropy of those codes taken as
independent symbols (the bound no coder of independent symbols beats).
``stored`` is what ``unforget.storage.encode`` writes today: the smaller of the first two, per
layer; the reported model size counts the same bytes (``stored_bytes``).

    python benchmarks/mask_storage.py runs/c10full/{cpg,pae,packnet,wsn,wsn-c0.1}/checkpoint.safetensors

Reads checkpoints written by any unforget version (plain or encoded tensors; no digest check).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from safetensors import safe_open

from unforget.checkpoint import STORAGE_KEY
from unforget.storage import (_enc_masks, _encode_one, _mask_groups, _nbytes, _stored, decode,
                              stored_bytes)


def read(path: str) -> dict[str, torch.Tensor]:
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return decode(tensors, json.loads(meta[STORAGE_KEY])) if STORAGE_KEY in meta else tensors


def entropy_bytes(tensors: dict[str, torch.Tensor], names: list[str]) -> float:
    """Shannon entropy (bytes) of the weights' ``(owner, picks...)`` tuples, each tuple one
    symbol (owner in the low bits of one int64 key, one bit per pick above them)."""
    key = tensors[names[0]].reshape(-1).to(torch.int64)
    b = max(1, int(key.max()).bit_length())
    for i, n in enumerate(names[1:]):
        key = key | (tensors[n].reshape(-1).to(torch.int64) << (b + i))
    _, counts = torch.unique(key, return_counts=True)
    p = counts.double() / counts.sum()
    return float(-(counts.double() * p.log2()).sum()) / 8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    a = ap.parse_args()
    print("| run | weights | bit-packed (KiB) | entropy coded (KiB) | entropy bound (KiB) | stored (KiB) | "
          "stored bits / weight |")
    print("|---|---|---|---|---|---|---|")
    for path in a.checkpoints:
        t = read(path)
        groups = _mask_groups(t)
        owners = [n for n in t if n.endswith(".owner") and t[n].numel() and not t[n].dtype.is_floating_point
                  and int(t[n].min()) >= 0]
        packed = coded = bound = stored = 0.0
        weights = 0
        for o in owners:
            names = [o, *groups.get(o, [])]
            weights += t[o].numel()
            packed += sum(_stored(_encode_one(n, t[n], t), t[n]) for n in names)
            enc = _enc_masks(o, t, groups.get(o, []))
            coded += sum(map(_nbytes, enc[1].values())) if enc else math.nan
            bound += entropy_bytes(t, names)
            stored += stored_bytes({n: t[n] for n in names})
        run = Path(path).parent.name
        print(f"| {run} | {weights:,} | {packed / 1024:.1f} | {coded / 1024:.1f} | {bound / 1024:.1f} | "
              f"{stored / 1024:.1f} | {8 * stored / max(1, weights):.2f} |")


if __name__ == "__main__":
    main()
