"""Source of notebooks/03_patching_cross_attention_head.ipynb (build with python notebooks/build.py)."""

# %% [markdown]
# # 03 · Patching cross-attention heads
#
# Cross-attention is the only road from the audio to the text in Whisper: every decoder layer
# reads the encoder output through 6 heads. **Activation patching** asks which of those heads
# carry the information a transcript needs. Run the model on the real input, but replace one
# component's activation `a` by its value `a_ref` on a *reference* input that lacks the
# information (white noise with the same loudness):
#
# $$\tilde a = (1-\alpha)\,a + \alpha\,a_\text{ref}$$
#
# `alpha = 1` is a full patch, `alpha = 0` changes nothing, values in between measure how
# gradually the output degrades. If the transcript's probability falls when one head is
# patched, that head carries audio the decoder relies on. A head is patched on its `hook_z`
# slice (its output before `W_O`), so exactly its contribution `z_h W_O[h]` changes.
#
# Decoder activations are indexed by token position, so the reference run is *teacher-forced
# on the clean transcript's tokens*: position `i` of the reference then holds the same token as
# position `i` of the clean run, and only the audio differs.

# %%
# %matplotlib inline
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

import hooked_asr
from hooked_asr.datasets.espeak import synthesize
from hooked_asr.patching import (
    SweepItem,
    components,
    continuation_logprob,
    interpolate,
    patch,
    patched,
    record_reference,
    run_with_interventions,
    sweep,
    white_noise_like,
    zero_ablate,
)
from hooked_asr.plotting import plot_curves, plot_heatmap
from hooked_asr.repetition import excess_repeats, find_loops, is_runaway, repeated_word

torch.manual_seed(0)
torch.set_grad_enabled(False)
t_start = time.perf_counter()
model = hooked_asr.load_model("whisper-tiny.en")

sentence = "Please call Stella and ask her to bring these things with her from the store."
audio = synthesize(sentence)
noise = white_noise_like(audio, seed=0)  # same length, same RMS: only the content differs
clean = model.transcribe(audio)
print("clean:", clean.text)

# %% [markdown]
# ## One head
#
# `record_reference` caches the hooks a list of components needs on the reference run;
# `patched(model, [...])` installs the interventions for every forward, `generate` and
# `transcribe` inside the block (a `PositionTracker` keeps absolute positions right while the
# KV cache feeds one token at a time). The patched transcript may be longer than the clean
# one; `missing="keep"` leaves positions the reference lacks unpatched.
#
# We score teacher-forced runs by `log p(clean transcript)`; the encoder output is computed
# once and reused, since a decoder intervention cannot change it.

# %%
tf = model.teacher_forced_inputs(audio, continuation=clean.tokens)
ref_tf = model.teacher_forced_inputs(noise, continuation=clean.tokens)
enc = model.encode(tf.kwargs["input_features"])
dec_kwargs = {"encoder_hidden_states": enc, "decoder_input_ids": tf.tokens}


def score(interventions):
    logits = run_with_interventions(model, interventions, **dec_kwargs)
    return float(continuation_logprob(logits, tf.tokens, tf.prompt_len)[0])


clean_lp = score([])
head = "decoder.blocks.3.cross_attn.head.0"
ref = record_reference(model, ref_tf.kwargs, [head])
print(
    f"log p(transcript): clean {clean_lp:.2f} | {head} patched from noise {score([patch(head, ref)]):.2f}"
    f" | zero-ablated {score([zero_ablate(head)]):.2f}"
)
with patched(model, [patch(head, ref, missing="keep")]):
    print("patched transcript:", model.transcribe(audio).text)

# %% [markdown]
# ## A sweep over every head
#
# `sweep` runs one intervention per component and collects a tidy table. It batches: the
# input is repeated `batch_size` times and row `j` gets the intervention on component `j`, so
# the 24 decoder cross-attention heads cost one batched forward (`mode="teacher_forced"`,
# metric `logprob`). `mode="generate"` would decode a patched transcript per head and score
# it with transcript metrics (`changed`, `wer_delta`, `loop`, ...), at a higher cost.

# %%
heads = components(model, kinds=["cross_attn"], stacks=["decoder"], heads=True)
result = sweep(
    model,
    [SweepItem("stella", audio, text=sentence)],
    heads,
    intervention="interpolate",
    alpha=1.0,
    mode="teacher_forced",
    metrics=["logprob"],
    reference="noise",
    batch_size=len(heads),
    progress=False,
)
print(f"{len(heads)} heads in {result.n_batched_runs} batched run(s), {result.seconds:.1f} s")
summary = result.summary()["logprob"] - clean_lp
print(summary.sort_values().head(5).to_string(float_format=lambda v: f"{v:+.2f}"))

# %%
grid, layers = result.heatmap("logprob", "decoder", "cross_attn")
delta = grid - clean_lp
lim = float(np.abs(delta).max())
fig = plot_heatmap(
    delta,
    [f"L{l}" for l in layers],
    [f"h{h}" for h in range(grid.shape[1])],
    vmin=-lim,
    vmax=lim,
    cmap="RdBu",
    title="patch one cross-attention head from noise: change in log p(transcript)",
    cbar_label="Δ log p",
)
plt.show()

# %% [markdown]
# ## Interpolation
#
# For the most important head, how does the damage grow with `alpha`? `alpha > 1`
# extrapolates past the reference (allowed: `alpha >= 0`). A curve that stays flat and then
# drops says the decoder tolerates a partly corrupted head and fails past a threshold — a
# linear, attribution-style estimate from small `alpha` would miss the effect entirely.

# %%
best = summary.idxmin()
ref_best = record_reference(model, ref_tf.kwargs, [best])
alphas = [0.0, 0.5, 0.75, 1.0, 1.5]
curve = np.array([score([interpolate(best, ref_best, alpha=a)]) for a in alphas])
fig = plot_curves(
    {best: curve},
    x=alphas,
    xlabel="alpha",
    ylabel="log p(clean transcript)",
    title="interpolating one head towards its noise activation",
)
plt.show()

# %% [markdown]
# ## Repetition loops
#
# A classic failure of sequence decoders is the loop: the same n-gram again and again until
# the length limit. `hooked_asr.repetition.find_loops` finds n-grams repeated back to back (at
# least `min_repeats` times), on tokens or words. Speech can repeat itself too, so the loops
# that count are the ones the model *adds* (`excess_repeats` against what was said), or a
# decode that hit its length limit inside a loop (`is_runaway`). Repetitive input is the
# easiest way to provoke one.

# %%
print(find_loops("and then we went we went we went we went home"))
spoken_audio, spoken = repeated_word("hello", 8)
rep = model.transcribe(spoken_audio, max_new_tokens=32)
loops = find_loops(rep.text)
print("said:       ", spoken)
print("transcribed:", rep.text)
print(
    "loops:",
    loops,
    "| extra repeats beyond what was said:",
    excess_repeats(rep.text, spoken),
    "| runaway:",
    is_runaway(rep.tokens, rep.finished),
)

# %% [markdown]
# ## Checks

# %%
# alpha = 0 and patching a head with its own clean activation change nothing
own = record_reference(model, tf.kwargs, [best])
assert score([interpolate(best, ref_best, alpha=0.0)]) == clean_lp
assert abs(score([patch(best, own)]) - clean_lp) < 1e-3
# the sweep's batched row and a single intervention agree, and the curve starts at the clean value
assert abs(curve[alphas.index(1.0)] - result.summary().loc[best, "logprob"]) < 1e-2, (curve, summary[best])
assert curve[0] == clean_lp and curve[alphas.index(1.0)] < clean_lp - 0.5
assert summary.min() < -0.5  # some head matters
assert len(find_loops("a b a b a b c")) == 1 and not find_loops("a b c d")
assert find_loops("we went we went we went home")[0].ngram == ("we", "went")
print(f"all checks passed in {time.perf_counter() - t_start:.1f} s")
