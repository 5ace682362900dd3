"""Attribution patching (hooked_asr/patching/attribution.py): exact for a linear metric, the
derivative of real patching otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from hooked_asr.patching import (
    attribution_patching,
    components,
    continuation_logprob,
    patching_effects,
    record_reference,
)


def test_attribution_is_exact_for_a_linear_metric(model, tf):
    t, r = tf
    metric = lambda logits: logits[:, -1, 7] - logits[:, -1, 3]  # noqa: E731
    a = attribution_patching(model, t.kwargs, r.kwargs, ["decoder.hook_logits"], metric)
    ref = record_reference(model, r.kwargs, ["decoder.hook_logits"])
    e = patching_effects(model, t.kwargs, ref, ["decoder.hook_logits"], metric)
    assert a["attribution"].item() == pytest.approx(e["effect"].item(), rel=1e-5)


def test_attribution_is_the_derivative_of_real_patching(model, tf):
    t, r = tf
    metric = lambda logits: continuation_logprob(logits, t.tokens, t.prompt_len)  # noqa: E731
    comps = components(model)
    attr = attribution_patching(model, t.kwargs, r.kwargs, comps, metric)["attribution"].to_numpy()
    ref = record_reference(model, r.kwargs, comps)
    eps = 1e-2
    fd = patching_effects(
        model.double(),
        {k: (v.double() if v.is_floating_point() else v) for k, v in t.kwargs.items()},
        {k: v.double() for k, v in ref.items()},
        comps,
        metric,
        batch_size=len(comps),
        alpha=eps,
    )
    model.float()
    np.testing.assert_allclose(fd["effect"].to_numpy() / eps, attr, rtol=0.05, atol=2e-3 * np.abs(attr).max())
