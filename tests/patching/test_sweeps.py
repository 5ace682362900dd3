"""Sweeps (hooked_asr/patching/sweeps.py): batched equals one at a time and a hand-made patch,
resume from the results file, layer-by-head heatmaps.

Sweeps recompute only what a patch changes; the plain sweep (``share_encoder=False,
batch_size=1``) runs every row through the whole model, the fast one starts encoder-block
patches from the clean residual, decoder patches from the clean encoder output
(teacher-forced: with the clean cross-attention keys/values), and batches rows. Same values
to float rounding, same tokens, same rankings; and the work skipped is really skipped
(counted through hooks)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hooked_asr.patching import (
    SweepItem,
    components,
    continuation_logprob,
    interpolate,
    patched,
    record_reference,
    run_with_interventions,
    sweep,
    zero_ablate,
)
from hooked_asr.patching.components import parse_component
from hooked_asr.patching.item_runs import (
    DECODER,
    FULL,
    RowBatching,
    plan_chunks,
    resume_point,
    row_batching,
    start_point,
)


def _items(model, n=2, seed=3):
    g = torch.Generator().manual_seed(seed)
    shape = (1, model.cfg.encoder.n_mels, model.cfg.encoder.n_frames)
    return [
        SweepItem(f"item{k}", torch.randn(shape, generator=g), reference=torch.randn(shape, generator=g))
        for k in range(n)
    ]


def test_batched_sweep_equals_one_at_a_time_and_single_patches(model):
    items = _items(model)
    comps = components(model, layers=[1])
    kw = dict(mode="teacher_forced", metrics=["logprob"], max_new_tokens=6, progress=False)
    batched = sweep(model, items, comps, "interpolate", 0.8, batch_size=7, **kw)
    single = sweep(model, items, comps, "interpolate", 0.8, batch_size=1, **kw)
    assert len(batched.table) == len(comps) * len(items)
    np.testing.assert_allclose(batched.table["value"], single.table["value"], atol=1e-4)
    # one row checked against a hand-made patch of that component alone
    it, c = items[1], comps[5]
    gen = model.generate(it.audio, model.teacher_forced_inputs(it.audio).tokens[0], max_new_tokens=6)
    toks = gen.tokens[0].tolist()
    toks = toks[: toks.index(model.cfg.eos_token_id)] if model.cfg.eos_token_id in toks else toks
    t = model.teacher_forced_inputs(it.audio, toks)
    ref = record_reference(model, model.teacher_forced_inputs(it.reference, toks).kwargs, [c])
    want = continuation_logprob(
        run_with_interventions(model, [interpolate(c, ref, 0.8)], **t.kwargs), t.tokens, t.prompt_len
    )
    got = batched.table.query("component == @c.name and item == @it.id")["value"].item()
    assert got == pytest.approx(float(want.detach()), abs=1e-4)


def test_generation_sweep_batched_matches_single(model):
    items = _items(model, 1)
    comps = components(model, heads=False)
    kw = dict(metrics=["changed", "n_tokens"], missing="keep", max_new_tokens=8, progress=False)
    a = sweep(model, items, comps, "interpolate", 1.0, batch_size=len(comps), **kw)
    b = sweep(model, items, comps, "interpolate", 1.0, batch_size=1, **kw)
    assert a.table["value"].tolist() == b.table["value"].tolist()
    assert a.n_batched_runs == 1 and b.n_batched_runs == len(comps)


def test_sweep_resumes_from_its_results_file(model, tmp_path):
    items = _items(model)
    comps = components(model, heads=False)
    path = tmp_path / "sweep.jsonl"
    kw = dict(mode="teacher_forced", metrics=["logprob"], max_new_tokens=6, progress=False, results_path=path)
    sweep(model, items, comps[:3], "zero", **kw)
    calls = []

    def counting(comp, rows, cache):
        calls.append(comp.name)
        return zero_ablate(comp, rows=rows)

    counting.__name__ = "zero"  # same config as the first run
    full = sweep(model, items, comps, counting, **kw)
    assert sorted(set(calls)) == sorted(c.name for c in comps[3:])
    fresh = sweep(model, items, comps, "zero", **{**kw, "results_path": None})
    merged = full.table.sort_values(["item", "component"])["value"].to_numpy()
    np.testing.assert_allclose(merged, fresh.table.sort_values(["item", "component"])["value"].to_numpy(), atol=1e-5)
    assert json.loads(path.read_text().splitlines()[0])["config"]["intervention"] == "zero"
    with pytest.raises(ValueError, match="different sweep"):
        sweep(model, items, comps, "zero", alpha=0.5, **kw)


def test_heatmap_is_layer_by_head(model):
    items = _items(model, 1)
    comps = components(model, kinds=["cross_attn"])
    res = sweep(
        model, items, comps, "zero", mode="teacher_forced", metrics=["logprob"], max_new_tokens=5, progress=False
    )
    grid, layers = res.heatmap("logprob", "decoder", "cross_attn")
    assert grid.shape == (2, 4) and layers == [0, 1]
    row = res.table.query("component == 'decoder.blocks.1.cross_attn.head.3'")["value"].item()
    assert grid[1, 3] == row


# ---- fast sweeps equal the plain ones -----------------------------------------------------
def _same_ranking(fast: np.ndarray, plain: np.ndarray, tol: float) -> bool:
    """Ordering the plain values by the fast sweep's ranking leaves them sorted (to ``tol``)."""
    ordered = plain[np.argsort(-fast, kind="stable")]
    return bool((np.diff(ordered) <= tol).all())


def _token_fingerprint(ctx) -> float:
    return float(sum((i + 1) * (t + 1) for i, t in enumerate(ctx.patched.tokens)))


# Every kind of component both stacks have, plus raw hooks the shortcuts must route around:
# the cross-attention keys (cached for other layers), the encoder's final norm (no block).
RAW = [
    "decoder.blocks.1.cross_attn.hook_k",
    "decoder.blocks.0.cross_attn.hook_v",
    "encoder.ln_final.hook_normalized",
    "encoder.blocks.1.hook_resid_pre",
    "decoder.hook_embed",
]


@pytest.mark.parametrize("encoder_batch_size", [None, 3])  # per device (CPU: 1); 3 rows split a block's 5
def test_fast_teacher_forced_sweep_equals_the_plain_one(model, encoder_batch_size):
    items = _items(model)
    comps = components(model) + [parse_component(model, r) for r in RAW]
    kw = dict(mode="teacher_forced", metrics=["logprob"], max_new_tokens=6, progress=False)
    fast = sweep(model, items, comps, "interpolate", 0.8, batch_size=7, encoder_batch_size=encoder_batch_size, **kw)
    plain = sweep(model, items, comps, "interpolate", 0.8, batch_size=1, share_encoder=False, **kw)
    assert fast.table[["component", "item"]].equals(plain.table[["component", "item"]])
    f, p = fast.table["value"].to_numpy(), plain.table["value"].to_numpy()
    np.testing.assert_allclose(f, p, atol=1e-4, rtol=0)
    np.testing.assert_allclose(fast.table["clean"], plain.table["clean"], atol=1e-5, rtol=0)
    assert np.ptp(p) > 1e-2  # the patches do something, so equality is not vacuous
    for it in fast.table["item"].unique():
        sel = (fast.table["item"] == it).to_numpy()
        assert _same_ranking(f[sel], p[sel], tol=2e-4)


def test_fast_generation_sweep_gives_the_plain_sweeps_tokens(model):
    items = _items(model, 1, seed=5)
    comps = components(model, heads=False) + [parse_component(model, r) for r in RAW[:3]]
    metrics = [_token_fingerprint, "changed", "n_tokens"]
    kw = dict(metrics=metrics, missing="keep", max_new_tokens=8, progress=False)
    fast = sweep(model, items, comps, "interpolate", 1.0, batch_size=5, **kw)
    plain = sweep(model, items, comps, "interpolate", 1.0, batch_size=1, share_encoder=False, **kw)
    assert fast.table["value"].tolist() == plain.table["value"].tolist()
    assert fast.table.query("metric == 'changed'")["value"].sum() > 0  # some patches change the transcript


def test_each_run_reruns_only_the_encoder_blocks_at_and_after_its_patch(model):
    # Count, through hooks, how often each encoder block and each cross-attention key
    # projection runs during a teacher-forced sweep of one item.
    n_enc, n_dec = model.n_layers["encoder"], model.n_layers["decoder"]
    counts: dict[str, int] = {}

    def count(x, hook):
        counts[hook.name] = counts.get(hook.name, 0) + 1

    names = (
        [f"encoder.blocks.{l}.hook_resid_post" for l in range(n_enc)]
        + ["encoder.hook_conv1"]
        + [f"decoder.blocks.{l}.cross_attn.hook_k" for l in range(n_dec)]
        + ["encoder.blocks.1.attn.hook_q"]
    )
    comps = components(model, kinds=["attn"], layers=[1], stacks=["encoder"]) + components(model, stacks=["decoder"])
    kw = dict(mode="teacher_forced", metrics=["logprob"], max_new_tokens=6, progress=False)
    with model.hooks(fwd_hooks=[(n, count) for n in names]):
        res = sweep(model, _items(model, 1), comps, "zero", batch_size=4, encoder_batch_size=4, **kw)
    n_enc_chunks = -(-model.cfg.encoder.n_heads // 4)
    # the item's encoder front end ran once (zero ablation records no reference)
    assert counts["encoder.hook_conv1"] == 1
    assert counts["encoder.blocks.0.hook_resid_post"] == 1
    assert counts["encoder.blocks.1.hook_resid_post"] == 1 + n_enc_chunks
    # head rows start at block 1's clean head outputs: its attention ran for the clean pass only
    assert counts["encoder.blocks.1.attn.hook_q"] == 1
    # decoder chunks compute no cross-attention keys: only the clean decode, the clean
    # teacher-forced run and the encoder chunks do
    for l in range(n_dec):
        assert counts[f"decoder.blocks.{l}.cross_attn.hook_k"] == 2 + n_enc_chunks
    assert res.n_batched_runs == n_enc_chunks + -(-(len(comps) - model.cfg.encoder.n_heads) // 4)
    # encoder reruns one at a time (the CPU default): each head's encoder part runs alone, the
    # decoder part of the chunk's heads (up to 6) as one batch
    counts.clear()
    with model.hooks(fwd_hooks=[(n, count) for n in names]):
        split = sweep(model, _items(model, 1), comps, "zero", batch_size=4, encoder_batch_size=1, **kw)
    assert counts["encoder.blocks.1.hook_resid_post"] == 1 + model.cfg.encoder.n_heads
    assert counts["encoder.blocks.1.attn.hook_q"] == 1
    for l in range(n_dec):
        assert counts[f"decoder.blocks.{l}.cross_attn.hook_k"] == 2 + n_enc_chunks
    np.testing.assert_allclose(split.table["value"], res.table["value"], atol=1e-5, rtol=0)


def test_chunks_group_rows_by_where_their_run_starts(model):
    comps = [
        parse_component(model, c)
        for c in [
            "decoder.blocks.0.mlp",
            "encoder.blocks.1.attn.head.0",
            "encoder.hook_pos_embed",
            "encoder.blocks.0.mlp",
            "decoder.blocks.1.cross_attn.head.2",
            "encoder.blocks.1.mlp",
        ]
    ]
    assert [resume_point(c) for c in comps] == [DECODER, 1, FULL, 0, DECODER, 1]
    # generation: chunks fill up across starting points (a chunk starts at its lowest block)
    assert [[c.name for c in ch] for ch in plan_chunks(comps, 2, split_at_resume=False)] == [
        ["encoder.hook_pos_embed", "encoder.blocks.0.mlp"],
        ["encoder.blocks.1.attn.head.0", "encoder.blocks.1.mlp"],
        ["decoder.blocks.0.mlp", "decoder.blocks.1.cross_attn.head.2"],
    ]
    # teacher-forced: a chunk never spans two starting points
    assert [[c.name for c in ch] for ch in plan_chunks(comps, 3)] == [
        ["encoder.hook_pos_embed"],
        ["encoder.blocks.0.mlp"],
        ["encoder.blocks.1.attn.head.0", "encoder.blocks.1.mlp"],
        ["decoder.blocks.0.mlp", "decoder.blocks.1.cross_attn.head.2"],
    ]
    # when encoder reruns go one at a time, a chunk of encoder-block rows spans blocks (only its
    # decoder part is batched); the whole-model row still runs alone
    assert [[c.name for c in ch] for ch in plan_chunks(comps, 3, rows=RowBatching(3, 1, 3))] == [
        ["encoder.hook_pos_embed"],
        ["encoder.blocks.0.mlp", "encoder.blocks.1.attn.head.0", "encoder.blocks.1.mlp"],
        ["decoder.blocks.0.mlp", "decoder.blocks.1.cross_attn.head.2"],
    ]
    assert row_batching("cpu", 24) == RowBatching(24, 1, 6) and row_batching("cuda", 24) == RowBatching(24, 24, 24)
    # within a block: a head or anything after the attention starts at the block's head outputs,
    # the residual entering the block (and the attention's inputs) before them
    points = {
        n: start_point(parse_component(model, n))
        for n in [
            "encoder.blocks.1.hook_resid_pre",
            "encoder.blocks.1.attn.hook_q",
            "encoder.blocks.1.attn.head.0",
            "encoder.blocks.1.attn",
            "encoder.blocks.1.mlp",
            "encoder.blocks.1.ln2.hook_normalized",
        ]
    }
    assert list(points.values()) == [2, 2, 3, 3, 3, 3]
    assert start_point(comps[0]) == DECODER and start_point(comps[2]) == FULL


def test_qwen2_audio_fast_sweep_equals_the_plain_one_with_padded_audio():
    # No cross-attention (the audio is a decoder prefix); the encoder resumes with the same
    # key mask over padded frames as the full run.
    from hooked_asr import HookedQwen2Audio
    from tests.conftest import make_hf_qwen2_audio, make_tokenizer

    m = HookedQwen2Audio.from_hf(make_hf_qwen2_audio("gqa"), tokenizer=make_tokenizer())
    rng = np.random.default_rng(0)
    n = int(0.6 * m.cfg.encoder.n_frames * 160)  # 60 % of the window is audio, the rest padding
    items = [
        SweepItem(
            "q",
            (0.1 * rng.standard_normal(n)).astype(np.float32),
            reference=(0.1 * rng.standard_normal(n)).astype(np.float32),
        )
    ]
    assert m.prepare_features(items[0].audio)["feature_attention_mask"].float().mean() < 0.7
    comps = components(m, heads=False) + components(m, kinds=["attn"], layers=[1], stacks=["encoder"])
    kw = dict(mode="teacher_forced", metrics=["logprob"], max_new_tokens=5, progress=False)
    fast = sweep(m, items, comps, "interpolate", 0.7, batch_size=6, **kw)
    plain = sweep(m, items, comps, "interpolate", 0.7, batch_size=1, share_encoder=False, **kw)
    np.testing.assert_allclose(fast.table["value"], plain.table["value"], atol=1e-4, rtol=0)
    assert np.ptp(plain.table["value"].to_numpy()) > 1e-3


def test_generation_sweep_keeps_each_patched_transcript(model, tmp_path):
    # Each kept transcript is what an independent decode with that patch alone gives.
    items = _items(model, 1, seed=5)
    it = items[0]
    comps = components(model, heads=False)
    path = tmp_path / "gen.jsonl"
    kw = dict(metrics=["changed", "n_tokens"], max_new_tokens=8, progress=False, keep_transcripts=True)
    res = sweep(model, items, comps, "zero", 0.2, batch_size=4, results_path=path, **kw)
    texts = res.transcripts[it.id]
    assert list(texts) == [c.name for c in comps]
    assert set(res.table["metric"]) == {"changed", "n_tokens"}  # the texts are no table rows
    prompt = model.teacher_forced_inputs(it.audio).tokens[0]

    def decode() -> str:
        out = model.generate(it.audio, prompt, max_new_tokens=8, **model.generation_kwargs())
        return " ".join(str(t) for t in model.results_from_generation(out, prompt)[0].tokens)

    assert res.clean_transcripts[it.id] == decode()
    for c in comps:
        with patched(model, [zero_ablate(c, alpha=0.2)]) as tracker:
            tracker.reset()
            assert texts[c.name] == decode(), c.name
    changed = res.table.query("metric == 'changed'").set_index("component")["value"]
    assert 0 < changed.sum() < len(comps)
    assert all(changed[c] == float(texts[c] != res.clean_transcripts[it.id]) for c in texts)
    again = sweep(
        model, items, comps, "zero", 0.2, batch_size=4, results_path=path, **kw
    )  # all read back from the file
    assert again.n_batched_runs == 0 and again.transcripts == res.transcripts
    with pytest.raises(ValueError, match="mode='generate'"):
        sweep(model, items, comps, "zero", mode="teacher_forced", metrics=["logprob"], keep_transcripts=True)
