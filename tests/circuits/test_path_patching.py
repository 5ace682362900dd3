"""Path patching: a sender's reference value reaching chosen receivers only.

Identities: path patching a sender into every receiver downstream of it equals patching the
sender's node with the existing intervention API (random Whisper of both stacks, Qwen2-Audio's
grouped-query decoder, real tiny.en); patching every edge is the reference run; an encoder head
patched into one cross-attention head's keys and values equals that head's k / v recomputed by
hand from the caches (ln_final of the clean encoder residual plus the sender's delta, times W_K, W_V)."""

from __future__ import annotations

import pytest
import torch

from hooked_asr.circuits.graph import Graph
from hooked_asr.circuits.heads import head_result
from hooked_asr.circuits.path_patching import path_patch, record_graph_reference, run_with_patched_edges
from hooked_asr.patching import patch, record_reference, run_with_interventions
from tests.circuits.conftest import qwen_inputs, whisper_inputs


@pytest.fixture(scope="module")
def setup(whisper_rand):
    m = whisper_rand
    kw = whisper_inputs(m, batch=1, seed=0)
    rkw = dict(whisper_inputs(m, batch=1, seed=1), decoder_input_ids=kw["decoder_input_ids"])
    g = Graph.from_model(m)
    return m, g, kw, rkw, record_graph_reference(m, rkw, g)


def test_graph_edges_follow_the_forward(setup):
    m, g, *_ = setup
    enc, dec = m.cfg.encoder, m.cfg.decoder
    n_send = 1 + enc.n_layers * (enc.n_heads + 1) + 1 + dec.n_layers * (2 * dec.n_heads + 1)
    assert len(g.senders) == n_send
    r = {x.name: j for j, x in enumerate(g.receivers)}
    s = {x.name: i for i, x in enumerate(g.senders)}
    # an encoder head reaches later encoder heads, every cross-attention k / v, never a decoder q or the logits
    e = s["encoder.blocks.0.attn.head.1"]
    assert g.allowed[e, r["encoder.blocks.1.attn.head.0<q>"]] and not g.allowed[e, r["encoder.blocks.0.attn.head.0<q>"]]
    assert (
        g.allowed[e, r["decoder.blocks.2.cross_attn.head.3<k>"]]
        and g.allowed[e, r["decoder.blocks.0.cross_attn.head.0<v>"]]
    )
    assert not g.allowed[e, r["decoder.blocks.2.cross_attn.head.3<q>"]] and not g.allowed[e, r["logits"]]
    # within a decoder block: self-attention -> cross-attention q -> MLP; not back
    d = s["decoder.blocks.1.attn.head.2"]
    assert g.allowed[d, r["decoder.blocks.1.cross_attn.head.0<q>"]] and g.allowed[d, r["decoder.blocks.1.mlp"]]
    assert (
        not g.allowed[d, r["decoder.blocks.1.attn.head.0<k>"]]
        and not g.allowed[d, r["decoder.blocks.1.cross_attn.head.0<k>"]]
    )
    assert (
        not g.allowed[s["decoder.blocks.2.mlp"], r["decoder.blocks.2.mlp"]]
        and g.allowed[s["decoder.blocks.2.mlp"], r["logits"]]
    )


@pytest.mark.parametrize(
    "sender",
    [
        "encoder.embed",
        "encoder.blocks.0.attn.head.2",
        "encoder.blocks.1.mlp",
        "decoder.blocks.1.attn.head.4",
        "decoder.blocks.1.cross_attn.head.3",
        "decoder.blocks.2.mlp",
    ],
)
def test_sender_into_all_receivers_equals_patching_the_node(setup, sender):
    m, g, kw, rkw, ref = setup
    node = g.senders[g.sender_index([sender])[0]]
    with torch.no_grad():
        clean = m(**kw)
        node_patched = run_with_interventions(
            m, [patch(node.component, record_reference(m, rkw, [node.component]))], **kw
        )
    paths = path_patch(m, kw, ref, [sender])  # receivers=None: every receiver downstream
    assert (node_patched - clean).abs().max() > 1e-2  # the patch does something
    torch.testing.assert_close(paths, node_patched, atol=5e-5, rtol=0)


def test_patching_every_edge_is_the_reference_run_and_none_the_clean_run(setup):
    m, g, kw, rkw, ref = setup
    with torch.no_grad():
        clean, reference = m(**kw), m(**rkw)
    torch.testing.assert_close(run_with_patched_edges(m, kw, ref, g.allowed, g), reference, atol=5e-5, rtol=0)
    torch.testing.assert_close(
        run_with_patched_edges(m, kw, ref, torch.zeros_like(g.allowed), g), clean, atol=1e-5, rtol=0
    )


def test_encoder_head_into_one_cross_attention_head_matches_a_hand_computed_k_and_v(setup):
    m, g, kw, rkw, ref = setup
    sender, layer, head = "encoder.blocks.1.attn.head.3", 2, 4
    got = path_patch(m, kw, ref, [sender], [f"decoder.blocks.{layer}.cross_attn.head.{head}"])
    # by hand, from caches and weights: k_h = ln_final(x_enc + Delta_s) W_K[h] (+ b_V for v), other heads clean
    last = f"encoder.blocks.{m.cfg.encoder.n_layers - 1}.hook_resid_post"
    _, c = m.run_with_cache(**kw, names_filter=[last, "encoder.blocks.1.attn.hook_z"])
    _, rc = m.run_with_cache(**rkw, names_filter=["encoder.blocks.1.attn.hook_z"])
    delta = head_result(m, rc, sender) - head_result(m, c, sender)
    y = m.encoder.ln_final(c[last] + delta)
    attn = m.decoder.blocks[layer].cross_attn
    new = {"k": y @ attn.W_K[head], "v": y @ attn.W_V[head] + attn.b_V[head]}

    def put(inp):
        def fn(act, hook):
            act = act.clone()
            act[:, :, head] = new[inp]
            return act

        return fn

    with torch.no_grad():
        want = m.run_with_hooks(**kw, fwd_hooks=[(f"decoder.blocks.{layer}.cross_attn.hook_{i}", put(i)) for i in "kv"])
        clean = m(**kw)
    assert (want - clean).abs().max() > 1e-3
    torch.testing.assert_close(got, want, atol=5e-5, rtol=0)
    # through the keys only: a different, smaller intervention
    only_k = path_patch(m, kw, ref, [sender], [f"decoder.blocks.{layer}.cross_attn.head.{head}<k>"])
    assert (only_k - got).abs().max() > 1e-5


def test_qwen_gqa_decoder_sender_into_all_receivers_equals_patching_the_node(qwen_gqa):
    m = qwen_gqa
    g = Graph.from_model(m)  # no cross-attention: the decoder graph, audio inside decoder.embed
    assert {n.stack for n in g.senders} == {"decoder"}
    assert sum(r.input == "k" for r in g.receivers) == m.cfg.decoder.n_layers * m.cfg.decoder.n_kv_heads
    kw, rkw = qwen_inputs(m, seed=0), qwen_inputs(m, seed=1)
    ref = record_graph_reference(m, rkw, g)
    for sender in ["decoder.embed", "decoder.blocks.0.attn.head.5", "decoder.blocks.1.mlp"]:
        node = g.senders[g.sender_index([sender])[0]]
        with torch.no_grad():
            want = run_with_interventions(m, [patch(node.component, record_reference(m, rkw, [node.component]))], **kw)
            clean = m(**kw)
        assert (want - clean).abs().max() > 1e-3
        torch.testing.assert_close(path_patch(m, kw, ref, [sender], graph=g), want, atol=5e-5, rtol=0)


def test_bad_requests_say_what_to_do(setup, qwen_gqa):
    m, g, kw, rkw, ref = setup
    with pytest.raises(KeyError, match="no sender matches"):
        path_patch(m, kw, ref, ["encoder.blocks.9.attn.head.0"], graph=g)
    with pytest.raises(ValueError, match="cross-attention <k>/<v>"):
        path_patch(m, kw, ref, ["encoder.blocks.0.mlp"], ["decoder.blocks.0.cross_attn.head.0<q>"], graph=g)
    with pytest.raises(ValueError, match="not encoder_hidden_states"):
        path_patch(
            m,
            {"encoder_hidden_states": torch.zeros(1, 2, 3), "decoder_input_ids": kw["decoder_input_ids"]},
            ref,
            ["decoder.blocks.0.mlp"],
            graph=g,
        )
    short = dict(kw, decoder_input_ids=kw["decoder_input_ids"][:, :3])
    with pytest.raises(ValueError, match="decoder tokens differ from the clean run's at position 3"):
        path_patch(m, short, ref, ["decoder.blocks.0.mlp"], graph=g)  # the cache remembers its tokens
    with pytest.raises(ValueError, match="teacher-force the reference"):
        path_patch(m, short, dict(ref), ["decoder.blocks.0.mlp"], graph=g)  # a hand-built cache: shapes
    with pytest.raises(ValueError, match="stacks=\\('decoder',\\)"):
        Graph.from_model(qwen_gqa, stacks=("encoder", "decoder"))


def test_real_tiny_en_encoder_head_into_all_receivers_equals_patching_it(whisper_tiny_en):
    from hooked_asr.datasets.espeak import synthesize
    from hooked_asr.patching import white_noise_like

    m = whisper_tiny_en
    audio = synthesize("the cat sat on the mat")
    tokens = m.tokenizer.encode(" The cat sat on the mat.")
    kw = m.teacher_forced_inputs(audio, tokens).kwargs
    rkw = m.teacher_forced_inputs(white_noise_like(audio, seed=0), tokens).kwargs
    g = Graph.from_model(m)
    ref = record_graph_reference(m, rkw, g)
    sender = "encoder.blocks.2.attn.head.1"
    with torch.no_grad():
        want = run_with_interventions(m, [patch(sender, record_reference(m, rkw, [sender]))], **kw)
        clean = m(**kw)
    assert (want - clean).abs().max() > 1e-3
    torch.testing.assert_close(path_patch(m, kw, ref, [sender], graph=g), want, atol=2e-4, rtol=0)
