"""Methods decode through the model's one decoding core, never a copy of it.

A hook on ``decoder.hook_logits`` records, for every decoder call, what
``model.decoding_state`` says (``None`` outside ``generate`` / ``transcribe``). What is proven:

- the logit lens during generation, probe monitors and extraction see exactly the decoding
  steps a plain ``model.transcribe`` takes (same windows, retries, steps and batch rows), and
  their transcripts are its transcript; the only other decoder calls are the documented
  teacher-forced passes (one per clip, outside decoding);
- the encoder lens and the patching sweeps make every decoder call inside ``model.generate``;
- the encoder lens's rows are ``model.results_from_generation`` of that generation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hooked_asr import HookedWhisper
from hooked_asr.activations import extract_activations
from hooked_asr.lens import encoder_lens, logit_lens_generate
from hooked_asr.monitors import ProbeMonitor, transcribe_with_monitors
from hooked_asr.probing import LinearProbe
from tests.conftest import make_hf_whisper_30s

DEC = "decoder.blocks.1.hook_resid_post"
MAX_NEW = 6


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return HookedWhisper.from_hf(make_hf_whisper_30s(2, 2, seed=1))  # clips get different transcripts


def _clips(model, n):
    rng = np.random.default_rng(0)
    return [(0.2 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in np.linspace(0.4, 1.2, n)]


def _calls(model, fn):
    seen = []

    def hook(x, hook):
        st = model.decoding_state
        seen.append(None if st is None else (st.window, st.retry, st.step, x.shape[0], x.shape[1]))

    with model.hooks(fwd_hooks=[("decoder.hook_logits", hook)]):
        out = fn()
    return seen, out


def _lang(model):
    return {"language": "en"} if model.cfg.is_multilingual else {}


def test_logit_lens_generate_sees_the_steps_of_transcribe(model):
    clip = _clips(model, 1)[0]
    plain, ref = _calls(model, lambda: model.transcribe(clip, max_new_tokens=MAX_NEW))
    lensed, lens = _calls(model, lambda: logit_lens_generate(model, clip, max_new_tokens=MAX_NEW))
    assert lensed == plain and None not in plain
    assert lens.tokens[: len(ref.tokens)].tolist() == ref.tokens and lens.text == ref.text


def test_monitors_and_extraction_see_the_steps_of_transcribe(model, tmp_path):
    clips = _clips(model, 3)
    plain, ref = _calls(model, lambda: model.transcribe(clips, max_new_tokens=MAX_NEW, **_lang(model)))
    probe = LinearProbe(model.cfg.decoder.d_model, "classification", [0, 1], dtype=torch.float64)
    mon, out = _calls(
        model,
        lambda: transcribe_with_monitors(
            model, clips, ProbeMonitor("m", probe, DEC), max_new_tokens=MAX_NEW, **_lang(model)
        ),
    )
    assert [c for c in mon if c is not None] == plain
    assert mon.count(None) == len(clips)  # one teacher-forced pass per clip, after decoding
    assert [r.tokens for r in out] == [r.tokens for r in ref]
    data = [{"audio": c, "label": i % 2} for i, c in enumerate(clips)]
    ext, store = _calls(
        model,
        lambda: extract_activations(
            model,
            data,
            [DEC],
            tmp_path,
            batch_size=len(clips),
            max_new_tokens=MAX_NEW,
            progress=False,
            language="en" if model.cfg.is_multilingual else None,
        ),
    )
    assert [c for c in ext if c is not None] == plain and ext.count(None) == len(clips)
    assert [it["tokens"] for it in store.items()] == [r.tokens for r in ref]


def test_encoder_lens_decodes_inside_generate_and_cuts_with_the_core(model):
    clip = _clips(model, 1)[0]
    final = model.transcribe(clip, max_new_tokens=MAX_NEW)
    calls, res = _calls(model, lambda: encoder_lens(model, clip, final=final, max_new_tokens=MAX_NEW))
    n = model.n_layers["encoder"]
    assert calls and None not in calls and {c[3] for c in calls} == {n}
    assert [c[2] for c in calls] == list(range(len(calls)))  # one step per decoder call, from 0
    feats = model.prepare_features(clip)["input_features"].expand(n, -1, -1)
    from hooked_asr.lens import encoder_lens_states

    states = encoder_lens_states(model, {"input_features": feats[:1]}, list(range(n)))
    gen = model.generate(
        feats, final.prompt, max_new_tokens=MAX_NEW, encoder_hidden_states=states, **model.generation_kwargs()
    )
    want = model.results_from_generation(gen, final.prompt)
    assert [(l.tokens, l.text, l.finished) for l in res.layers] == [(r.tokens, r.text, r.finished) for r in want]


def test_patching_sweeps_decode_inside_generate(model):
    from hooked_asr.patching import SweepItem, components, sweep

    clip = _clips(model, 1)[0]
    item = SweepItem("a", clip, reference=np.zeros_like(clip))
    comps = components(model, layers=[0], heads=False)[:2]
    calls, _ = _calls(
        model,
        lambda: sweep(
            model, [item], comps, "zero", metrics=["changed"], missing="keep", max_new_tokens=MAX_NEW, progress=False
        ),
    )
    decoding = [c for c in calls if c is not None]
    assert decoding and all(c is not None for c in calls if c is not None)
    # every decoding call belongs to a generate run: steps restart at 0 and count up by one
    runs, expect = 0, 0
    for c in decoding:
        if c[2] == 0:
            runs, expect = runs + 1, 0
        assert c[2] == expect
        expect += 1
    assert runs >= 1
