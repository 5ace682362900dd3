"""Source of notebooks/02_lenses.ipynb (build with python notebooks/build.py)."""

# %% [markdown]
# # 02 · Lenses: what each layer already "says"
#
# **Logit lens.** A decoder layer writes into a residual stream that the last layer finally
# reads out through the final norm and the unembedding. If we apply that same read-out early,
#
# $$\text{lens}_l = W_U\,\mathrm{LN}_\text{final}(h_l), \qquad h_l = \texttt{decoder.blocks.}l\texttt{.hook\_resid\_post},$$
#
# we see which token layer $l$ would predict if the network stopped there. $\text{lens}_{L-1}$
# *is* the model's output, so the question is how early the answer appears. The hooks never
# normalise silently: the lens applies `ln_final` explicitly.
#
# **Saturation layer.** The earliest layer from which the lens's top-1 equals the final
# prediction *and stays equal* in every later layer — where the decision is made.
#
# **Encoder lens.** The same idea on the other stack: cut the encoder after layer $l$, apply
# the encoder's final norm, and let the *unchanged* decoder transcribe from that. It shows
# from which depth the audio representation is already readable as text (Glazer et al., 2025).

# %%
# %matplotlib inline
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

import hooked_asr
from hooked_asr.datasets.espeak import synthesize
from hooked_asr.lens import apply_logit_lens, encoder_lens, lens_curves, logit_lens, logit_lens_generate
from hooked_asr.plotting import plot_curves, plot_logit_lens

torch.manual_seed(0)
torch.set_grad_enabled(False)
t_start = time.perf_counter()
model = hooked_asr.load_model("whisper-tiny.en")
L = model.n_layers["decoder"]

# %% [markdown]
# ## Logit lens during generation
#
# `logit_lens_generate` hooks every `decoder.blocks.{l}.hook_resid_post` while `transcribe`
# decodes greedily and keeps the newest position at each step (with the KV cache, that is the
# only position a decoder hook sees). Each cell of the table is a layer's top-1 token and the
# probability it gives the token finally chosen; `*` marks the saturation layer.

# %%
audio = synthesize("Please call Stella and ask her to bring these things with her from the store.")
lens = logit_lens_generate(model, audio, top_k=5)
print("transcript:", lens.text)
print(lens.table())

# %%
fig = plot_logit_lens(lens, title=f"logit lens: {lens.text}"[:80])
plt.show()

# %% [markdown]
# The last row is the model's own prediction, so it agrees with the transcript everywhere;
# the interesting part is below it. In a 4-layer decoder many tokens are only decided in the
# last one or two layers.
#
# **Does a layer predict the future?** `future_ranks[l, s, j]` is the rank, under layer `l` at
# step `s`, of the token that will be chosen at step `s + 1 + j`. A rank far below the vocabulary
# size (51864) would mean the residual stream already carries the next word.

# %%
for l in range(L):
    r_now = lens.chosen_rank[l].float().log10().mean()
    r_next = lens.future_ranks[l, :-1, 0].float().log10().mean()
    print(f"layer {l}: mean log10 rank of token s = {float(r_now):.2f}, of token s+1 = {float(r_next):.2f}")

# %% [markdown]
# ## Generation and teacher forcing agree
#
# `logit_lens` runs one teacher-forced forward over the same tokens (prompt + transcript +
# end of text) with `run_with_cache`. Up to float rounding (the KV-cached path multiplies
# smaller matrices), it must give the same lens as the one recorded step by step.

# %%
forced = logit_lens(model, audio, tokens=lens.tokens[:-1].tolist())  # the end-of-text token is appended again
gap = float((forced.chosen_prob - lens.chosen_prob).abs().max())
print(f"max |p_gen - p_forced| over layers and steps: {gap:.1e}")

# %% [markdown]
# ## Dataset curves and saturation
#
# Over a few clips, every token is one sample: the mean probability of the final token by
# layer, the share of tokens whose layer-`l` top-1 already is the final token, with 95 %
# Student-t intervals (`lens_curves`), and the saturation layer's distribution.

# %%
sentences = [
    "Seven red apples are on the kitchen table.",
    "The weather today is sunny with a light breeze from the west.",
]
results = [lens] + [logit_lens_generate(model, synthesize(s)) for s in sentences]
curves = lens_curves(results)
fig = plot_curves(
    {"p(final token)": curves.chosen_prob, "top-1 = final": curves.top1_agreement},
    ylabel="mean over tokens (95% CI)",
    title=f"{curves.n_tokens} tokens, {curves.n_transcripts} clips",
)
plt.show()

# %%
sat_mean, lo, hi = curves.saturation
print(f"mean saturation layer {sat_mean:.2f} (95% CI {lo:.2f}-{hi:.2f}) of 0-{L - 1}")
print("tokens saturating at each layer:", dict(enumerate(curves.saturation_hist[:L].tolist())))

# %% [markdown]
# ## Encoder lens
#
# `encoder_lens` grabs every `encoder.blocks.{l}.hook_resid_post` in one encoder pass, applies
# `finish_encoder` (Whisper: the encoder's final LayerNorm) and lets the decoder transcribe
# all layers as one batch. Flags: `empty` (nothing decoded), `loop` (a repetition loop),
# `prefix` (a prefix of the final transcript). The last layer through the final norm *is*
# `encoder.hook_out`, so its row reproduces the ordinary transcript exactly. (We hand it the
# transcript we already have instead of letting it transcribe again, and cap the decoding:
# anything much longer than the real transcript is a loop.)

# %%
from hooked_asr import TranscriptionResult

final = TranscriptionResult(
    text=lens.text, tokens=lens.tokens[:-1].tolist(), token_logprobs=[], prompt=lens.prompt, finished=True
)
enc = encoder_lens(model, audio, final=final, max_new_tokens=len(final.tokens) + 8)
print(enc.table())

# %% [markdown]
# ## Checks

# %%
n = lens.n_steps
assert torch.equal(lens.final, lens.tokens), "the last layer's lens is the model's own greedy choice"
assert lens.top1[-1].tolist() == lens.tokens.tolist()
assert int(lens.saturation.max()) <= L - 1 and int(lens.saturation.min()) >= 0
assert torch.all(lens.chosen_rank[-1] == 1)
assert gap < 1e-3, gap
p_curve = curves.chosen_prob[:, 0]
assert p_curve[-1] > p_curve[0] + 0.3, p_curve  # the answer builds up with depth
assert curves.top1_agreement[-1, 0] == 1.0
last = enc.layers[-1]
assert last.tokens == list(enc.final.tokens) and last.wer == 0.0, last
assert enc.layers[0].wer is None or enc.layers[0].wer > last.wer  # the first layer is not yet readable
print(f"all checks passed in {time.perf_counter() - t_start:.1f} s")
