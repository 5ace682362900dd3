"""The held-out split (hooked_asr/probing/data.py): classes keep their shares, seeds repeat."""

from __future__ import annotations

import numpy as np

from hooked_asr.probing import stratified_split


def test_stratified_split_keeps_class_shares():
    y = np.array([0] * 50 + [1] * 10 + [2] * 4)
    tr, te = stratified_split(y, 0.2, seed=3)
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == len(y)
    assert [int((y[te] == c).sum()) for c in range(3)] == [10, 2, 1]
    tr2, te2 = stratified_split(y, 0.2, seed=3)
    assert (te == te2).all()
