"""Source of notebooks/06_circuits.ipynb (build with python notebooks/build.py)."""

# %% [markdown]
# # 06 · Circuits I: direct logit attribution, cross-attention heads, head detectors, OV circuits
#
# TransformerLens's circuit tools, for an encoder-decoder. The decoder's final residual stream is
# a sum of what every component wrote: the embeddings, each self-attention head, each
# **cross-attention** head (the only road from the audio), each MLP, and the biases. Through the
# final LayerNorm (scale `s` of the whole residual, weight `w`, bias `b`) the logit of token `t` is
#
# $$\text{logit}_t = \sum_c \frac{c - \bar c}{s}\cdot (w \odot W_U[:, t]) \;+\; b\cdot W_U[:, t],$$
#
# so **direct logit attribution** splits the logit exactly among the components. We use speech
# built word by word with espeak-ng, so every word's time in the audio is known.

# %%
# %matplotlib inline
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

import hooked_asr
from hooked_asr.audio import log_mel_spectrogram
from hooked_asr.circuits import OV, detect_heads, dla_transcript, top_heads, word_by_word
from hooked_asr.patching import frames_between, mask_attention, run_with_interventions
from hooked_asr.plotting import plot_heatmap

torch.set_grad_enabled(False)
t_start = time.perf_counter()
model = hooked_asr.load_model("whisper-tiny.en")
audio, words = word_by_word("the cat and the dog sat on the mat".split())
tokens = [t for w, _, _ in words for t in model.tokenizer.encode(" " + w)]
print("transcribed:", model.transcribe(audio).text)
print("words:", [(w, round(s, 2), round(e, 2)) for w, s, e in words])

# %% [markdown]
# ## Direct logit attribution of one word
#
# `dla_transcript` runs one teacher-forced pass over prompt + tokens and attributes, at every
# step, the logit of the token written there. We look at the step writing " dog".

# %%
res = dla_transcript(model, audio, tokens=tokens)
step = res.token_strings.index(" dog")
print(res.summary(k=8, step=step))
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
for ax, kind in zip(axes, ["attn", "cross_attn"]):
    grid = res.heatmap(kind, step=step).numpy()
    vmax = np.abs(res.heatmap("cross_attn", step=step).numpy()).max()
    im = ax.imshow(grid, origin="lower", cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    ax.set(title=f"decoder {kind} heads", xlabel="head", ylabel="layer")
fig.colorbar(im, ax=axes, label="logit attribution")
plt.show()

# %% [markdown]
# The identity holds to float rounding: the rows sum to the model's own logit.

# %%
print(f"max |sum of components - logit| over {len(res.positions)} steps: {res.max_abs_error:.2e}")

# %% [markdown]
# ## The top cross-attention heads' patterns under the spectrogram
#
# `run_with_cache(..., return_cache_object=True)` returns an `ActivationCache` with
# TransformerLens's shorthand keys: `cache["cross_pattern", l]` is
# `decoder.blocks.{l}.cross_attn.hook_pattern` `[batch, head, token, frame]`.

# %%
tf = model.teacher_forced_inputs(audio, tokens)
_, cache = model.run_with_cache(
    **tf.kwargs,
    return_cache_object=True,
    names_filter=lambda n: n.endswith(("cross_attn.hook_pattern", "encoder.hook_out")),
)
cross_grid = res.heatmap("cross_attn", step=step)
best = top_heads(cross_grid, 3)
n_frames = int(np.ceil(len(audio) / 320))  # encoder frames holding audio (20 ms each)
mel = log_mel_spectrogram(audio, 80)[0, :, : 2 * n_frames]
rows = slice(tf.prompt_len - 1, tf.prompt_len - 1 + len(tokens))  # the rows writing each token
fig, axes = plt.subplots(1 + len(best), 1, figsize=(9, 2 + 1.6 * len(best)), sharex=False)
axes[0].imshow(mel, origin="lower", aspect="auto", extent=[0, n_frames * 0.02, 0, 80])
for w, s, e in words:
    axes[0].axvline(s, color="w", lw=0.6)
    axes[0].text(s, 70, w, color="w", fontsize=8)
axes[0].set(title="log-mel spectrogram", ylabel="mel bin")
for ax, (l, h) in zip(axes[1:], best):
    p = cache["cross_pattern", l][0, h, rows, :n_frames]
    ax.imshow(p, aspect="auto", cmap="magma", extent=[0, n_frames * 0.02, len(tokens) - 0.5, -0.5])
    ax.set_yticks(range(len(tokens)), model.to_str_tokens(torch.tensor(tokens)), fontsize=6)
    ax.set(title=f"decoder.blocks.{l}.cross_attn.head.{h} (DLA {cross_grid[l, h]:+.2f})")
axes[-1].set_xlabel("seconds")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Head detectors
#
# `detect_heads` scores every head for a behaviour from its patterns: `alignment` (mass on the
# frames of the word being written, scored against the word timings), `previous_token`,
# `padding` (cross-attention to the frames after the audio, where Whisper pads to 30 s). OpenAI
# published tiny.en's alignment heads in the checkpoint's config (`model.cfg.alignment_heads`,
# marked `*`).

# %%
scores = detect_heads(
    model, [{"audio": audio, "words": words}], ["alignment", "previous_token", "padding"], progress=False
)
published = {tuple(h) for h in model.cfg.alignment_heads}
for name, grid in [
    ("alignment", scores["alignment"]),
    ("previous_token", scores["previous_token"]),
    ("padding (cross-attention)", scores["padding"]["decoder.cross_attn"]),
]:
    g = grid.numpy()
    text = [[f"{g[l, h]:.2f}{'*' if (l, h) in published else ''}" for h in range(6)] for l in range(4)]
    plot_heatmap(
        g,
        [str(l) for l in range(4)],
        [str(h) for h in range(6)],
        cell_text=text,
        title=name,
        vmin=0,
        vmax=float(g.max()),
    )
    plt.show()
top_align = top_heads(scores["alignment"], len(published))
print(
    f"alignment detector's top {len(published)}: {top_align}; {len(published & set(top_align))} are published "
    f"alignment heads (chance {len(published) ** 2 / 24:.1f})"
)

# %% [markdown]
# ## One head's OV circuit, read through the unembedding
#
# `OV(model, "decoder", "cross_attn", l, h)` is `W_V[h] W_O[h]` as a TransformerLens
# `FactoredMatrix`. Feeding it the encoder frames of one word and reading the result through
# `W_U` shows which tokens the head writes when it attends there (before the final norm).

# %%
l, h = best[0]
ov = OV(model, "decoder", "cross_attn", l, h)
frames = list(frames_between(*[(s, e) for w, s, e in words if w == "dog"][0]))
enc = cache["encoder.hook_out"][0, frames]  # [frames, d_model]: what the values read
writes = (((enc @ ov.A) @ ov.B) @ model.W_U).mean(0)  # [d_vocab], b_V and the final norm left out
top_tokens = model.to_str_tokens(writes.topk(10).indices)
print(f"{ov}\nhead {l}.{h} attending to the frames of 'dog' writes towards: {top_tokens}")

# %% [markdown]
# ## Masking the head's attention to the word's frames
#
# A pattern-level intervention: `mask_attention` sets the head's scores on those frames to
# `-inf` before the softmax, so it attends elsewhere.

# %%
dog = tf.prompt_len - 1 + step
clean_logit = res.logits[0, step].item()
masked = run_with_interventions(model, [mask_attention(f"decoder.blocks.{l}.cross_attn.head.{h}", frames)], **tf.kwargs)
masked_logit = masked[0, dog, tokens[step]].item()
print(f"logit of ' dog': clean {clean_logit:.2f}, head {l}.{h} masked off the word's frames {masked_logit:.2f}")

# %% [markdown]
# ## Checks

# %%
assert res.max_abs_error < 1e-4  # DLA sums to the logit
assert len(published & set(top_align)) >= 3  # well above chance (2.7)
assert " dog" in top_tokens and masked_logit < clean_logit - 1  # the head carries the word
assert scores["previous_token"].max() > 0.5
print(f"all checks passed in {time.perf_counter() - t_start:.1f} s")

# %% [markdown]
# ## Part II · Paths and edges
#
# Node patching asks *which component* matters; circuits are about *which connections*. The
# graph (`hooked_asr.circuits.graph`) has a **sender** for every head of the three attention
# kinds, every MLP and both embeddings, and a **receiver** for every input that reads a
# residual stream: each head's `q`, `k`, `v`, each MLP's input, the logits. Inside a stack an
# edge joins a sender to every receiver after it; an **encoder** sender reaches the decoder
# only through the keys and values of cross-attention (`finish_encoder`, then `W_K`, `W_V`).
#
# Cutting an edge `u -> v` means receiver `v` reads $x_v + (a^\text{ref}_u - a_u)$ while every
# other input reads its own value. A norm sits between the residual and each receiver, so the
# receiver recomputes its own input head by head: $q_h = \mathrm{LN}(x_v + \Delta)\,W_Q[h] + b_Q[h]$.

# %%
from hooked_asr.circuits.circuit import faithfulness_curve, plot_faithfulness
from hooked_asr.circuits.eap import eap, eap_ig
from hooked_asr.circuits.graph import Graph
from hooked_asr.circuits.path_patching import path_patch, record_graph_reference
from hooked_asr.datasets.espeak import synthesize
from hooked_asr.patching import continuation_logprob, patch, record_reference, reference_inputs, white_noise_like

graph = Graph.from_model(model)
print(f"{len(graph.senders)} senders, {len(graph.receivers)} receivers, {graph.n_edges} edges")

# %% [markdown]
# ### One encoder → cross-attention path
#
# **Path patching** sends a sender's reference value into chosen receivers only. Here every
# of the first four heads of encoder layer 3 is sent, one at a time, into the keys and values of cross-attention
# head 2 of decoder layer 1 (the head the patching sweep of notebook 03 finds), and into every
# receiver (which is the same as patching the node: the identity below is tested).

# %%
p_audio = synthesize("Please call Stella and ask her to bring these things with her.")
p_clean = model.transcribe(p_audio)
p_tf = model.teacher_forced_inputs(p_audio, p_clean.tokens)
p_ref_kwargs = reference_inputs(model, p_tf.kwargs, white_noise_like(p_audio, seed=0))  # the clean prompt
p_metric = lambda lg: continuation_logprob(lg, p_tf.tokens, p_tf.prompt_len)  # noqa: E731
p_ref = record_graph_reference(model, p_ref_kwargs, graph)
m_clean = float(p_metric(model(**p_tf.kwargs)))
receiver = "decoder.blocks.1.cross_attn.head.2"
via_path, via_all = [], []
for h in range(4):
    s = f"encoder.blocks.3.attn.head.{h}"
    via_path.append(float(p_metric(path_patch(model, p_tf.kwargs, p_ref, [s], [receiver], graph=graph))) - m_clean)
    via_all.append(float(p_metric(path_patch(model, p_tf.kwargs, p_ref, [s], graph=graph))) - m_clean)
fig, ax = plt.subplots(figsize=(6, 2.6))
x = np.arange(len(via_path))
ax.bar(x - 0.2, via_all, 0.4, label="into every receiver (= node patch)")
ax.bar(x + 0.2, via_path, 0.4, label=f"only into {receiver} <k>,<v>")
ax.set_xticks(x, [f"E3.h{h}" for h in x])
ax.set_ylabel("change of mean log p")
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# ### An EAP-IG circuit on a contrastive pair
#
# Text circuit work finds sparse circuits with *minimal pairs* (IOI's names swapped); against white
# noise everything changes at once. The audio counterpart (`hooked_asr.patching.contrastive`): "he was
# reading a book" spoken word by word, and the same clip with "book" spoken as "letter" in the same
# slot (every other sample identical). Both runs teacher-force the clean text with the clean prompt;
# the metric is the logit difference at the word, $m = \text{logit}(\text{" book"}) - \text{logit}(\text{" letter"})$.
#
# **EAP** scores every edge with one backward pass, $\Delta_u \cdot \partial m/\partial x_v$;
# **EAP-IG** averages the gradient along the straight path from the clean to the reference
# embeddings, and checks itself: the input nodes' scores must add up to the true effect
# $m(\text{ref}) - m(\text{clean})$ (`scores.completeness`; a warning beyond 10 %, `steps="auto"` adds
# steps until it holds). The top-k edges form a circuit, evaluated by *really* patching every edge
# outside it: faithfulness $= (m(C) - m_\text{ref}) / (m_\text{clean} - m_\text{ref})$.

# %%
import warnings

from hooked_asr.patching.contrastive import word_swap

pair = word_swap(["he", "was", "reading", "a", "book"], 4, "letter")
x = pair.inputs(model)
print("clean:", model.transcribe(pair.clean).text, "| corrupt:", model.transcribe(pair.corrupt).text)
print("m(clean), m(corrupt):", [round(v, 2) for v in x.values(model)])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    scores = eap_ig(model, x.clean, x.corrupt, x.metric, graph, steps=2, batch_size=2)
print(
    "completeness:",
    {k: round(v, 3) for k, v in scores.meta["completeness"].items() if k in ("input_sum", "effect", "rel_error")},
    "| warnings:",
    [str(w.message)[:60] for w in caught],
)
print(scores.ranked().head(8).to_string(index=False))

# %%
fractions = [0.005, 0.02, 0.1, 1.0]
curve = faithfulness_curve(model, scores, x.clean, x.corrupt, x.metric, fractions=fractions)
noise_scores = eap(
    model, x.clean, white_noise_like(pair.clean, seed=0), x.metric, graph
)  # the clean prompt, noise audio
noise_curve = faithfulness_curve(
    model, noise_scores, x.clean, white_noise_like(pair.clean, seed=0), x.metric, fractions=fractions
)
print(curve[["k", "fraction", "faithfulness"]].to_string(index=False))
print(noise_curve[["k", "fraction", "faithfulness"]].to_string(index=False))
fig, axes = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [1, 2.4]})
plot_faithfulness(curve, ax=axes[0], label="contrastive pair, EAP-IG (2 steps)")
plot_faithfulness(noise_curve, ax=axes[0], label="white noise, EAP")
scores.circuit(30).draw(ax=axes[1], title="book vs letter: the top-30 edges")
plt.show()

# %% [markdown]
# Against the corrupt clip a few percent of the edges carry most of the logit difference; against
# white noise the same metric needs far more of the graph (`docs/circuits.md` has the full curves,
# MIB's CPR / CMD and the completeness of EAP-IG with more steps, on tiny.en and base).

# %%
# What this part showed, checked: path patching a sender into every receiver is node patching;
# the full circuit is the model (faithfulness 1).
s = "encoder.blocks.3.attn.head.0"
node = run_with_interventions(model, [patch(s, record_reference(model, p_ref_kwargs, [s]))], **p_tf.kwargs)
assert abs(float(p_metric(node)) - m_clean - via_all[0]) < 1e-3
assert abs(curve["faithfulness"].iloc[-1] - 1.0) < 1e-4
assert curve["faithfulness"].iloc[2] > noise_curve["faithfulness"].iloc[2]  # at 10 % of the edges: the pair ahead
