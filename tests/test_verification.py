"""The LFW face-verification protocol (pairs.txt, 10-fold threshold selection), checked by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unforget.evaluation.verification import (PairsFormatError, lfw_image_path, pair_distances, read_pairs,
                                              verification_accuracy)


def _pairs_text(folds: int, per: int) -> str:
    lines = [f"{folds}\t{per}"]
    for f in range(folds):
        lines += [f"Person_{f}_{i}\t1\t2" for i in range(per)]
        lines += [f"Person_{f}_{i}\t1\tOther_{f}_{i}\t3" for i in range(per)]
    return "\n".join(lines) + "\n"


def _at_distance(d: float) -> tuple[list[float], list[float]]:
    """Two 2-D embeddings whose protocol distance is d (angle d * pi / 4)."""
    th = d * math.pi / 4
    return [1.0, 0.0], [math.cos(th), math.sin(th)]


def test_two_folds_give_the_accuracy_computed_by_hand(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text(_pairs_text(2, 2))
    pf = read_pairs(path)
    assert (pf.n_folds, pf.per_fold, len(pf.pairs)) == (2, 2, 8)
    assert [p.same for p in pf.pairs] == [True, True, False, False] * 2
    assert pf.pairs[2].first == ("Person_0_0", 1) and pf.pairs[2].second == ("Other_0_0", 3)
    # fold 1: matched at 0.205, 0.605, mismatched at 1.005, 0.505; fold 2: 0.305, 1.205 / 1.505, 0.905
    dists = [0.205, 0.605, 1.005, 0.505, 0.305, 1.205, 1.505, 0.905]
    a, b = zip(*(_at_distance(d) for d in dists))
    assert np.allclose(pair_distances(torch.tensor(a), torch.tensor(b)), dists)
    r = verification_accuracy(torch.tensor(a), torch.tensor(b), [p.same for p in pf.pairs], pf.folds())
    # fold 1 is tested at the first best threshold of fold 2 (0.31: 3 of 4 right there): 0.205 same (right),
    # 0.605 called different (wrong), 1.005 and 0.505 different (right) -> 3/4. Fold 2 at fold 1's first
    # best threshold 0.21: 0.305 and 1.205 called different (wrong), 1.505, 0.905 right -> 2/4.
    assert r.thresholds == pytest.approx([0.31, 0.21])
    assert r.fold_accuracies == [0.75, 0.5]
    assert r.accuracy == pytest.approx(0.625) and r.std == pytest.approx(0.125)
    assert str(r) == "62.50 +- 12.50 %"
    # the same with contiguous folds given as a number (KFold without shuffling)
    assert verification_accuracy(np.array(a), np.array(b), [p.same for p in pf.pairs], 2) == r


def test_perfectly_separated_embeddings_score_one_on_ten_folds(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text(_pairs_text(10, 3))
    pf = read_pairs(path)
    g = torch.Generator().manual_seed(0)
    base = torch.randn(60, 8, generator=g)
    same = torch.tensor([p.same for p in pf.pairs])
    other = torch.where(same[:, None], base + 0.01 * torch.randn(60, 8, generator=g), -base)
    r = verification_accuracy(base, other, same.tolist(), pf.folds())
    assert r.accuracy == 1.0 and r.std == 0.0 and len(r.fold_accuracies) == 10


@pytest.mark.parametrize("text,match", [
    ("", "empty"),
    ("10\n", "header"),
    ("2 x\n", "integer"),
    ("1 1\nA 1 2\n", "promises 1 folds"),
    ("1 1\nA 1 2 3\nB 1 C 2\n", "line 2: fold 1 expects a matched pair"),
    ("1 1\nA 1 2\nB 1 2\n", "line 3: fold 1 expects a mismatched pair"),
    ("1 1\nA 1 two\nB 1 C 2\n", "line 2: an image number must be an integer"),
])
def test_a_malformed_pairs_file_is_one_clear_error(tmp_path, text, match):
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    with pytest.raises(PairsFormatError, match=match) as e:
        read_pairs(path)
    assert "\n" not in str(e.value)


def test_missing_pairs_file_and_image_paths(tmp_path):
    with pytest.raises(PairsFormatError, match="not found"):
        read_pairs(tmp_path / "absent.txt")
    assert lfw_image_path(tmp_path, "Aaron_Peirsol", 3) == tmp_path / "Aaron_Peirsol" / "Aaron_Peirsol_0003.jpg"
