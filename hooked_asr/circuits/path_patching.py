"""Path patching (Wang et al. 2022; Goldowsky-Dill et al. 2023): a sender's effect on chosen receivers only.

With senders ``S`` and receivers ``R`` (inputs of nodes: ``<head><q|k|v>``, an MLP's input,
``logits``; :mod:`hooked_asr.circuits.graph`), every receiver ``v in R`` reads::

    x~_v = x_v + sum_{s in S upstream of v} (a^ref_s - a_s)

and every other input reads its value in the same forward, so the reference value of a
sender reaches the metric only *through* the receivers (the senders' other paths stay
clean). Receivers then affect everything downstream of them as usual. Because a norm sits
between the residual and each receiver, the receiver's projection is recomputed from
``norm(x~_v)`` head by head rather than adding a delta after it (see the graph module).

Encoder senders reach the decoder only through cross-attention keys and values: the path
``encoder.blocks.3.attn.head.1 -> decoder.blocks.1.cross_attn.head.2<k>, <v>`` patches what
that one cross-attention head reads from that one encoder head, nothing else.

Identity (tested): path patching a sender into *every* receiver downstream of it equals
patching the sender's node (``a_s = a^ref_s``; :func:`hooked_asr.patching.patch`).

    >>> ref = record_graph_reference(model, noise, target_kwargs=tf.kwargs)   # the clean prompt and tokens
    >>> logits = path_patch(model, tf.kwargs, ref, ["encoder.blocks.3.attn.head.1"],
    ...                     ["decoder.blocks.1.cross_attn.head.2"])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from jaxtyping import Bool, Float

from hooked_asr.circuits.graph import EdgeForward, Graph
from hooked_asr.patching.interventions import record_reference
from hooked_asr.patching.references import (
    ReferenceCache,
    decoder_tokens,
    is_reference_cache,
    reference_cache,
)


def record_graph_reference(
    model: Any,
    reference_kwargs: Any,
    graph: Graph | None = None,
    *,
    target_kwargs: Mapping[str, Any] | None = None,
    **reference_options: Any,
) -> ReferenceCache:
    """The reference run's activations at every sender hook of ``graph`` (``hook_z`` per attention,
    ``hook_mlp_out``, ``blocks.0.hook_resid_pre``): a cache for :func:`path_patch`, EAP and circuits.

    ``reference_kwargs``: the reference's forward kwargs, or (with ``target_kwargs``, the clean run's)
    its audio, run with the clean run's decoder tokens (:func:`~hooked_asr.patching.reference_inputs`;
    ``reference_options``: ``audio=``, ``seed=``, ``tokens=``). With ``target_kwargs`` a reference whose
    decoder tokens differ from the clean ones is refused; the cache remembers its tokens, so every
    method it is passed to checks them against its own clean run.
    """
    graph = graph or Graph.from_model(model)
    if target_kwargs is not None:
        return reference_cache(model, target_kwargs, reference_kwargs, graph.sender_hooks(), False, **reference_options)
    if not (isinstance(reference_kwargs, Mapping) and decoder_tokens(reference_kwargs) is not None):
        raise ValueError(
            "record_graph_reference needs forward kwargs, or the reference audio with target_kwargs= "
            "(the clean run's inputs, whose prompt and tokens the reference runs with)"
        )
    return record_reference(model, reference_kwargs, graph.sender_hooks())


def as_reference_cache(
    model: Any,
    graph: Graph,
    reference: Any,
    reference_is_cache: bool | None = None,
    target_kwargs: Mapping[str, Any] | None = None,
) -> ReferenceCache:
    """A reference cache as it is, or recorded from reference inputs or audio (:func:`record_graph_reference`);
    ``reference_is_cache=None`` tells them apart by their keys (hook names vs ``input_features`` /
    ``decoder_input_ids``). With ``target_kwargs`` (the clean run) a reference whose decoder tokens differ
    from the clean ones is refused, and audio runs with the clean tokens."""
    if target_kwargs is None:
        if reference_is_cache or (reference_is_cache is None and is_reference_cache(reference)):
            return reference_cache(model, {}, reference, graph.sender_hooks(), True)
        return record_graph_reference(model, reference, graph)
    return reference_cache(model, target_kwargs, reference, graph.sender_hooks(), reference_is_cache)


def _reference_acts(
    model: Any,
    graph: Graph,
    reference: Any,
    reference_is_cache: bool | None = None,
    target_kwargs: Mapping[str, Any] | None = None,
) -> list[torch.Tensor]:
    cache = as_reference_cache(model, graph, reference, reference_is_cache, target_kwargs)
    with torch.no_grad():
        return [a.detach() for a in graph.sender_activations(model, cache)]


def _check_kwargs(kwargs: Mapping[str, Any]) -> None:
    if kwargs.get("encoder_hidden_states") is not None:
        raise ValueError(
            "edges through the encoder need the encoder to run: pass input_features, not encoder_hidden_states"
        )


@torch.no_grad()
def run_with_patched_edges(
    model: Any,
    target_kwargs: Mapping[str, Any],
    reference: Mapping[str, Any],
    mask: Bool[torch.Tensor, "sender receiver"],
    graph: Graph | None = None,
    reference_is_cache: bool | None = None,
) -> Float[torch.Tensor, "batch pos d_vocab"]:
    """Teacher-forced logits with the edges ``mask[i, j]`` (``graph.senders[i] -> graph.receivers[j]``)
    patched to the reference: receiver ``j`` reads ``x_j + sum_i mask[i, j] (a^ref_i - a_i)``."""
    graph = graph or Graph.from_model(model)
    _check_kwargs(target_kwargs)
    if tuple(mask.shape) != tuple(graph.allowed.shape):
        raise ValueError(f"mask must be [sender, receiver] = {tuple(graph.allowed.shape)}, got {tuple(mask.shape)}")
    ref = _reference_acts(model, graph, reference, reference_is_cache, target_kwargs)
    ef = EdgeForward(model, graph, ref=ref, mask=mask)
    with ef.active():
        return model(**target_kwargs)


def path_patch(
    model: Any,
    target_kwargs: Mapping[str, Any],
    reference: Mapping[str, Any],
    senders: str | Sequence[str],
    receivers: str | Sequence[str] | None = None,
    *,
    graph: Graph | None = None,
    reference_is_cache: bool | None = None,
) -> Float[torch.Tensor, "batch pos d_vocab"]:
    """Logits with the senders' reference values reaching only ``receivers`` (``None``: all receivers).

    ``senders``: node names (``encoder.blocks.3.attn.head.1``, ``decoder.blocks.0.mlp``,
    ``encoder.embed``) or prefixes (``encoder.blocks.3.attn``: every head). ``receivers``:
    ``decoder.blocks.1.cross_attn.head.2<k>``, a whole head (all of q, k, v the senders reach),
    a prefix, ``decoder.blocks.2.mlp``, ``logits``. ``reference``: a cache from
    :func:`record_graph_reference`, or the reference inputs teacher-forced on the target's
    tokens (told apart by their keys; ``reference_is_cache`` forces one reading).
    """
    graph = graph or Graph.from_model(model)
    mask = graph.edge_mask(senders, receivers)
    return run_with_patched_edges(model, target_kwargs, reference, mask, graph, reference_is_cache)


__all__ = ["as_reference_cache", "path_patch", "record_graph_reference", "run_with_patched_edges"]
