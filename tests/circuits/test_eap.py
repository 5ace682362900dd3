"""Edge attribution patching (EAP, EAP-IG) and circuits evaluated by real patching.

Identities: the EAP scores of a node's outgoing edges sum to that node's attribution-patching
score computed by hooked_asr.patching.attribution (random Whisper, batch of 2; Qwen2-Audio's
decoder; real tiny.en decoder heads); EAP-IG along the embedding path converges to the real
patching effect of the embedding node, which the path moves linearly, while plain EAP does not;
a circuit of no edges is the reference run (faithfulness 0), of every edge the clean run (1)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hooked_asr.circuits.circuit import Circuit, faithfulness_curve
from hooked_asr.circuits.eap import eap, eap_ig
from hooked_asr.circuits.graph import Graph
from hooked_asr.circuits.path_patching import record_graph_reference
from hooked_asr.patching import attribution_patching, patching_effects, record_reference
from tests.circuits.conftest import qwen_inputs, whisper_inputs


def logit_diff(logits):
    return logits[:, -1, 5] - logits[:, -1, 7]


@pytest.fixture(scope="module")
def setup(whisper_rand):
    m = whisper_rand
    kw = whisper_inputs(m, batch=2, seed=0)
    kw["decoder_input_ids"] = kw["decoder_input_ids"][:1].expand(2, -1)
    rkw = dict(whisper_inputs(m, batch=1, seed=1), decoder_input_ids=kw["decoder_input_ids"][:1])
    g = Graph.from_model(m)
    return m, g, kw, rkw, record_graph_reference(m, rkw, g)


def test_eap_outgoing_edges_sum_to_node_attribution_patching(setup):
    m, g, kw, rkw, ref = setup
    scores = eap(m, kw, ref, logit_diff, g, reference_is_cache=True)
    nodes = scores.node_scores()
    ap = attribution_patching(m, kw, rkw, [n.component for n in g.senders], logit_diff)
    assert np.abs(ap["attribution"]).max() > 0.1
    np.testing.assert_allclose(nodes["score"], ap["attribution"], atol=2e-4 * np.abs(ap["attribution"]).max())
    # off-graph pairs stay zero, and edges of one node differ (the split is not uniform)
    assert (scores.scores[~g.allowed] == 0).all()
    row = scores.scores[g.sender_index(["encoder.blocks.0.attn.head.1"])[0]]
    assert row.abs().max() > 10 * row[row != 0].abs().min()


def test_qwen_gqa_eap_outgoing_edges_sum_to_node_attribution_patching(qwen_gqa):
    m = qwen_gqa
    g = Graph.from_model(m)
    kw, rkw = qwen_inputs(m, seed=0), qwen_inputs(m, seed=1)
    metric = lambda lg: lg[:, -1].log_softmax(-1)[:, 9]  # noqa: E731
    nodes = eap(m, kw, rkw, metric, g).node_scores()
    ap = attribution_patching(m, kw, rkw, [n.component for n in g.senders], metric)
    np.testing.assert_allclose(nodes["score"], ap["attribution"], atol=2e-4 * np.abs(ap["attribution"]).max())


def test_eap_ig_converges_to_the_real_patching_effect_of_the_embedding(setup):
    m, g, kw, rkw, ref = setup
    kw1 = {k: v[:1] for k, v in kw.items()}
    node = "encoder.blocks.0.hook_resid_pre"  # encoder.embed: the IG path moves it linearly
    real = float(patching_effects(m, kw1, record_reference(m, rkw, [node]), [node], logit_diff)["effect"][0])
    i = g.sender_index(["encoder.embed"])[0]
    err = {}
    for steps in (2, 8, 32):
        s = eap_ig(m, kw1, ref, logit_diff, g, steps=steps, batch_size=16, reference_is_cache=True, progress=False)
        err[steps] = abs(float(s.node_scores()["score"][i]) - real)
    first_order = abs(float(eap(m, kw1, ref, logit_diff, g, reference_is_cache=True).node_scores()["score"][i]) - real)
    assert abs(real) > 0.3 and first_order > 0.2 * abs(real)  # nonlinear enough that EAP is off
    assert err[32] < err[8] < err[2] and err[32] < 0.01 * abs(real)


def test_circuit_of_no_edges_is_the_reference_run_and_of_all_edges_the_clean_run(setup):
    m, g, kw, rkw, ref = setup
    with torch.no_grad():
        clean, reference = float(logit_diff(m(**kw)).sum()), float(logit_diff(m(**rkw)).sum()) * 2
    empty = Circuit(g, torch.zeros_like(g.allowed)).evaluate(m, kw, ref, logit_diff)
    full = Circuit(g, g.allowed.clone()).evaluate(m, kw, ref, logit_diff)
    assert empty.metric == pytest.approx(reference, abs=1e-3) and empty.faithfulness == pytest.approx(0, abs=1e-4)
    assert full.metric == pytest.approx(clean, abs=1e-4) and full.faithfulness == pytest.approx(1, abs=1e-5)


def test_top_k_circuit_ranks_round_trips_and_draws(setup, tmp_path):
    m, g, kw, rkw, ref = setup
    scores = eap(m, kw, ref, logit_diff, g, reference_is_cache=True)
    table = scores.ranked()
    assert len(table) == g.n_edges and table["score"].abs().is_monotonic_decreasing
    c = scores.circuit(20)
    assert c.n_edges == 20 and {f"{s}->{r}" for s, r, _ in c.edge_list()} == set(table["edge"][:20])
    c.to_json(tmp_path / "c.json")
    back = Circuit.from_json(g, tmp_path / "c.json")
    assert torch.equal(back.edges, c.edges) and json.loads((tmp_path / "c.json").read_text())["n_edges"] == 20
    curve = faithfulness_curve(m, scores, kw, ref, logit_diff, ks=(0, 20, g.n_edges), progress=False)
    assert curve["faithfulness"].iloc[0] == pytest.approx(0, abs=1e-4) and curve["faithfulness"].iloc[
        -1
    ] == pytest.approx(1, abs=1e-5)
    c.draw(tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="not an edge"):
        Circuit(g, ~g.allowed)


def test_real_tiny_en_eap_sums_to_attribution_patching(whisper_tiny_en):
    from hooked_asr.datasets.espeak import synthesize
    from hooked_asr.patching import continuation_logprob, white_noise_like

    m = whisper_tiny_en
    audio = synthesize("the cat sat on the mat")
    tf = m.teacher_forced_inputs(audio, m.tokenizer.encode(" The cat sat on the mat."))
    rkw = m.teacher_forced_inputs(white_noise_like(audio, seed=0), tf.tokens[0, tf.prompt_len :].tolist()).kwargs
    metric = lambda lg: continuation_logprob(lg, tf.tokens, tf.prompt_len)  # noqa: E731
    g = Graph.from_model(m)
    nodes = eap(m, tf.kwargs, rkw, metric, g).node_scores()
    ap = attribution_patching(m, tf.kwargs, rkw, [n.component for n in g.senders], metric)
    np.testing.assert_allclose(nodes["score"], ap["attribution"], atol=1e-3 * np.abs(ap["attribution"]).max())


def test_eap_ig_checks_its_completeness_and_adapts_its_steps(setup):
    from hooked_asr.circuits.eap import CompletenessWarning

    m, g, kw, rkw, ref = setup
    with torch.no_grad():  # the true effect, from the two real runs
        effect = float(logit_diff(m(**rkw)).sum() * 2 - logit_diff(m(**kw)).sum())
    with pytest.warns(CompletenessWarning, match="% off"):
        one = eap_ig(m, kw, ref, logit_diff, g, steps=1, progress=False)
    c = one.completeness
    assert c.effect == pytest.approx(effect, rel=1e-4, abs=1e-4) and not c.holds and c.steps == 1
    auto = eap_ig(m, kw, ref, logit_diff, g, steps="auto", batch_size=16, max_steps=72, progress=False)
    c = auto.completeness
    assert [h[0] for h in c.history] == [8, 24, 72][: len(c.history)] and auto.steps == c.history[-1][0]
    assert c.holds == (c.rel_error <= 0.1) and (c.holds or c.capped)
    # tripling keeps every gradient taken: 'auto' ending at n steps equals a plain run of n steps
    plain = eap_ig(m, kw, ref, logit_diff, g, steps=auto.steps, batch_size=16, progress=False, check=False)
    torch.testing.assert_close(auto.scores, plain.scores, atol=1e-5 * float(plain.scores.abs().max()), rtol=1e-4)
    assert json.loads(json.dumps(auto.to_json()))["meta"]["completeness"]["steps"] == auto.steps


def test_mib_cpr_and_cmd_are_areas_of_real_faithfulness_curves(setup):
    from hooked_asr.circuits.circuit import area_under, mib_scores

    m, g, kw, rkw, ref = setup
    x, y = [0.001, 0.01, 0.1, 1.0], [0.2, -0.5, 0.9, 1.0]
    assert area_under(x, y) == pytest.approx(np.trapezoid(y, x))
    scores = eap(m, kw, ref, logit_diff, g, reference_is_cache=True)
    fr = (0.0, 0.05, 0.5, 1.0)
    mib = mib_scores(m, scores, kw, ref, logit_diff, fractions=fr, progress=False)
    for curve in (mib.cpr_curve, mib.cmd_curve):
        assert list(curve["k"]) == [int(f * g.n_edges) for f in fr]
        assert curve["faithfulness"].iloc[0] == pytest.approx(0.0, abs=1e-5)  # no edge: the reference run
        assert curve["faithfulness"].iloc[-1] == pytest.approx(1.0, abs=1e-5)  # every edge: the clean run
    assert mib.cpr == pytest.approx(np.trapezoid(mib.cpr_curve["faithfulness"], fr))
    assert mib.cmd == pytest.approx(np.trapezoid((1 - mib.cmd_curve["faithfulness"]).abs(), fr))
