"""One prompt for clean and reference runs in the circuit methods, on the real multilingual whisper-base.

Decoder layer 0's self-attention reads only the token embeddings, so a reference run with the clean
run's decoder tokens has exactly the clean activations at its heads: path patching a head, its EAP /
EAP-IG scores and a circuit patching only its edges must give exactly the clean value. White noise of
seed 2 is detected as <|nn|> (the speech: <|en|>), so a reference built with
``teacher_forced_inputs(noise, tokens)`` runs with another prompt: every method refuses it.
"""

from __future__ import annotations

import pytest
import torch

HEAD = "decoder.blocks.0.attn.head.3"


@pytest.fixture(scope="module")
def setup(whisper_base):
    from hooked_asr.circuits import Graph
    from hooked_asr.datasets.espeak import synthesize
    from hooked_asr.patching import continuation_logprob, white_noise_like

    model = whisper_base
    audio = synthesize("he was reading a book")
    noise = white_noise_like(audio, seed=2)
    cont = model.tokenizer.encode(" He was reading a book.")
    tf = model.teacher_forced_inputs(audio, cont, language="en")
    wrong = model.teacher_forced_inputs(noise, cont).kwargs
    assert wrong["decoder_input_ids"][0, 1] != tf.kwargs["decoder_input_ids"][0, 1]  # <|nn|> vs <|en|>
    graph = Graph.from_model(model, stacks=("decoder",))

    def metric(logits):
        return continuation_logprob(logits, tf.tokens, tf.prompt_len)

    with torch.no_grad():
        clean_logits = model(**tf.kwargs)
    return model, graph, tf, noise, wrong, metric, clean_logits


def test_path_patching_a_layer0_head_from_noise_is_exactly_clean(setup):
    from hooked_asr.circuits import path_patch, record_graph_reference

    model, graph, tf, noise, wrong, metric, clean = setup
    with pytest.raises(ValueError, match=r"<\|nn\|>.*<\|en\|>"):
        path_patch(model, tf.kwargs, wrong, [HEAD], graph=graph)
    with pytest.raises(ValueError, match=r"<\|nn\|>.*<\|en\|>"):
        path_patch(model, tf.kwargs, record_graph_reference(model, wrong, graph), [HEAD], graph=graph)
    ref = record_graph_reference(model, noise, graph, target_kwargs=tf.kwargs)
    assert float(metric(path_patch(model, tf.kwargs, ref, [HEAD], graph=graph))) == float(metric(clean))
    assert float(metric(path_patch(model, tf.kwargs, noise, [HEAD], graph=graph))) == float(metric(clean))


def test_eap_and_eap_ig_score_a_layer0_head_exactly_zero(setup):
    from hooked_asr.circuits import eap, eap_ig

    model, graph, tf, noise, wrong, metric, _ = setup
    rows = graph.sender_index([HEAD])
    # two steps are far from complete here; completeness is tested in test_eap.py, not this check's subject
    for fn, kw in ((eap, {}), (eap_ig, {"steps": 2, "batch_size": 2, "progress": False, "check": False})):
        with pytest.raises(ValueError, match=r"<\|nn\|>.*<\|en\|>"):
            fn(model, tf.kwargs, wrong, metric, graph, **kw)
        s = fn(model, tf.kwargs, noise, metric, graph, **kw)
        assert s.scores[rows].abs().max() == 0.0 and s.scores.abs().max() > 0


def test_circuit_patching_only_a_layer0_head_is_exactly_clean(setup):
    from hooked_asr.circuits import Circuit

    model, graph, tf, noise, wrong, metric, _ = setup
    edges = graph.allowed.clone()
    edges[graph.sender_index([HEAD])] = False  # every edge out of the head patched, all else clean
    c = Circuit(graph, edges)
    with pytest.raises(ValueError, match=r"<\|nn\|>.*<\|en\|>"):
        c.evaluate(model, tf.kwargs, wrong, metric)
    ev = c.evaluate(model, tf.kwargs, noise, metric)
    assert ev.metric == ev.clean and ev.reference != ev.clean
