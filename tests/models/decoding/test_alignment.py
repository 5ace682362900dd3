"""The alignment step's median filter equals openai-whisper's ``median_filter`` (reflected edges)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hooked_asr.models.decoding.alignment import median_filter


@pytest.mark.parametrize("width", [3, 5, 7, 9, 13])
@pytest.mark.parametrize("shape", [(4, 30, 200), (2, 5), (1, 9)])
def test_median_filter_equals_openai_whisper(width, shape):
    reference = pytest.importorskip("whisper.timing").median_filter
    x = torch.randn(shape)
    x[..., ::5] = 0.5  # ties
    assert torch.equal(median_filter(x, width), reference(x, width))
    x[..., 1] = float("nan")  # NaN sorts last, as torch's sort
    torch.testing.assert_close(median_filter(x, width), reference(x, width), equal_nan=True, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (6, 1), (5, 9), (40, 300), (300, 40)])
def test_dtw_equals_openai_whisper(shape):
    dtw_cpu = pytest.importorskip("whisper.timing").dtw_cpu
    from hooked_asr.models.decoding.alignment import dtw

    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    for cost in (
        rng.standard_normal(shape).astype(np.float32).astype(np.float64),  # float32 values, as ours adds
        rng.integers(0, 3, shape).astype(np.float64),  # many ties
    ):
        rows, cols = dtw(cost)
        expected = dtw_cpu(cost.copy())
        assert np.array_equal(rows, expected[0]) and np.array_equal(cols, expected[1])


@pytest.mark.parametrize("norm, width", [("zscore", 7), ("l2", 3)])
def test_each_head_normalises_on_its_own(norm, width):
    """The detected-heads alignment reuses the seed heads' normalised matrices for the heads it picks
    again: a head's normalised matrix must not depend on which other heads were normalised beside it."""
    from hooked_asr.models.decoding.alignment import _normalise

    raw = torch.randn(12, 30, 200) * 3
    whole = _normalise(raw, width, 1.0, norm)
    for heads in ([3], [5, 0, 11], [7, 2]):
        assert torch.equal(_normalise(raw[heads], width, 1.0, norm), whole[heads])
