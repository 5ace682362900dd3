"""One pipeline from audio to pooled rows (hooked_asr/activations/rows.py).

What is proven: a probe trained on rows that extract_activations stored scores *identically*
(bit for bit) when a monitor reads the same clips live, on Whisper and on Qwen2-Audio, because
both read pooled_rows; a batch that transcription splits into prompt groups (Qwen2-Audio clips
of different lengths) gives exactly the rows of its clips run one by one; the decoder rows are
the teacher-forced end-of-text position on the transcript.
"""

from __future__ import annotations

import numpy as np
import torch

from hooked_asr import HookedQwen2Audio
from hooked_asr.activations import extract_activations
from hooked_asr.activations.rows import pooled_rows
from hooked_asr.audio import window_samples
from hooked_asr.monitors import ProbeMonitor, transcribe_with_monitors
from hooked_asr.probing import fit_probe
from tests.activations._workers import clips, small_whisper
from tests.conftest import make_hf_qwen2_audio, make_tokenizer


def _store_and_monitor_agree(model, data, hooks, tmp_path, batch_size, **kw):
    store = extract_activations(
        model,
        data,
        hooks,
        tmp_path,
        shard_size=len(data),
        batch_size=batch_size,
        progress=False,
        dataset_id="rows",
        **kw,
    )
    y = store.labels("label")
    mons = [ProbeMonitor(f"m{i}", fit_probe(store.load(h), y, test_size=0).probe, h) for i, h in enumerate(hooks)]
    for b0 in range(0, len(data), batch_size):
        batch = [d["audio"] for d in data[b0 : b0 + batch_size]]
        out = transcribe_with_monitors(model, batch, mons, **kw)
        for m in mons:
            rows = store.load(m.hook_name)[b0 : b0 + len(batch)]
            want = m.probe.predict_proba(rows)[:, 1].double().tolist()
            assert [r.extra["monitors"][m.name] for r in out] == want, m.hook_name  # identical, not close
        assert [r.text for r in out] == [it["transcript"] for it in store.items()[b0 : b0 + len(batch)]]


def test_probe_on_extracted_rows_scores_identically_on_monitor_rows_whisper(tmp_path):
    torch.set_num_threads(1)
    model = small_whisper()
    hooks = ["encoder.blocks.1.hook_resid_post", "decoder.blocks.1.hook_resid_post"]
    _store_and_monitor_agree(model, clips(6, seed=3), hooks, tmp_path, batch_size=3, max_new_tokens=4, language="en")


def _qwen_clips(model, n, seed=0):
    rng = np.random.default_rng(seed)
    w = window_samples(model)
    return [
        {"audio": (0.2 * rng.standard_normal(int(rng.integers(w // 4, w)))).astype(np.float32), "label": i % 2}
        for i in range(n)
    ]


def test_probe_on_extracted_rows_scores_identically_on_monitor_rows_qwen2_audio(tmp_path):
    model = HookedQwen2Audio.from_hf(make_hf_qwen2_audio("gqa"), tokenizer=make_tokenizer())
    hooks = ["encoder.blocks.2.hook_resid_post", "decoder.blocks.2.hook_resid_post"]
    _store_and_monitor_agree(model, _qwen_clips(model, 4), hooks, tmp_path, batch_size=2, max_new_tokens=3)


def test_split_batch_gives_the_rows_of_its_clips_one_by_one():
    model = HookedQwen2Audio.from_hf(make_hf_qwen2_audio("gqa"), tokenizer=make_tokenizer())
    data = [d["audio"] for d in _qwen_clips(model, 3, seed=1)]
    sites = [
        ("encoder.hook_pooled", "mean"),
        ("decoder.blocks.1.hook_resid_post", "final"),
        ("decoder.blocks.1.hook_resid_post", "mean"),
    ]
    batch = pooled_rows(model, data, sites, max_new_tokens=3)
    for i, clip in enumerate(data):
        one = pooled_rows(model, [clip], sites, max_new_tokens=3)
        assert one.results[0].tokens == batch.results[i].tokens
        for s in sites:
            assert torch.equal(one.rows[s][0], batch.rows[s][i]), s
        # the decoder's final row is the end-of-text position of prompt + transcript + eos
        r = one.results[0]
        tf = model.teacher_forced_inputs(clip, continuation=list(r.tokens) + [model.cfg.eos_token_id])
        _, cache = model.run_with_cache(**tf.kwargs, names_filter=["decoder.blocks.1.hook_resid_post"])
        torch.testing.assert_close(one.rows[sites[1]][0], cache["decoder.blocks.1.hook_resid_post"][0, -1:])


def test_extraction_reads_a_datasets_silent_clips_and_monitors_ask_for_the_switch(tmp_path):
    """Non-speech studies extract silence on purpose: a dataset's silent clip is read (its loader
    already decided, with its own allow_silence), while live transcription still refuses silence
    unless asked. Reproducer: extraction went through transcribe's silence check and raised."""
    import pytest

    from hooked_asr.audio import AudioError

    torch.set_num_threads(1)
    model = small_whisper()
    data = clips(2, seed=5) + [{"audio": np.zeros(8000, np.float32), "label": 0, "id": "silence", "gain": 0.0}]
    hooks = ["encoder.blocks.1.hook_resid_post", "decoder.blocks.1.hook_resid_post"]
    store = extract_activations(
        model,
        data,
        hooks,
        tmp_path,
        shard_size=len(data),
        batch_size=3,
        progress=False,
        dataset_id="silence",
        max_new_tokens=3,
        language="en",
    )
    assert all(store.load(h).shape[0] == 3 for h in hooks)
    mon = ProbeMonitor("m", fit_probe(store.load(hooks[1]), store.labels("label"), test_size=0).probe, hooks[1])
    with pytest.raises(AudioError, match="allow_silence"):
        transcribe_with_monitors(model, [data[2]["audio"]], [mon], max_new_tokens=3, language="en")
    out = transcribe_with_monitors(
        model, [data[2]["audio"]], [mon], max_new_tokens=3, language="en", allow_silence=True
    )
    want = mon.probe.predict_proba(store.load(hooks[1])[2:3])[:, 1].double().tolist()
    assert [out[0].extra["monitors"]["m"]] == want
