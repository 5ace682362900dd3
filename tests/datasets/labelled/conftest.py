"""The labelled-set tests' shared check: two datasets hold the same audio, item by item."""

from __future__ import annotations

import numpy as np
import pytest

from hooked_asr.datasets.labelled import LabelledDataset


def _same_audio(a: LabelledDataset, b: LabelledDataset) -> bool:
    return len(a) == len(b) and all(np.array_equal(a[i]["audio"], b[i]["audio"]) for i in range(len(a)))


@pytest.fixture
def same_audio():
    return _same_audio
