"""The alignment step's median filter equals openai-whisper's ``median_filter`` (reflected edges)."""

from __future__ import annotations

import pytest
import torch

from hooked_asr.models.decoding.alignment import median_filter


@pytest.mark.parametrize("width", [3, 7])
@pytest.mark.parametrize("shape", [(4, 30, 200), (2, 5), (1, 9)])
def test_median_filter_equals_openai_whisper(width, shape):
    reference = pytest.importorskip("whisper.timing").median_filter
    x = torch.randn(shape)
    x[..., ::5] = 0.5  # ties
    assert torch.equal(median_filter(x, width), reference(x, width))
    x[..., 1] = float("nan")  # NaN sorts last, as torch's sort
    torch.testing.assert_close(median_filter(x, width), reference(x, width), equal_nan=True, rtol=0, atol=0)
