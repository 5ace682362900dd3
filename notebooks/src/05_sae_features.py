"""Source of notebooks/05_sae_features.ipynb (build with python notebooks/build.py)."""

# %% [markdown]
# # 05 · Sparse autoencoders on encoder frames
#
# An encoder frame (20 ms of audio) is a 384-dimensional vector at each layer, and its
# coordinates are not interpretable: many properties are superposed along directions that
# are not the basis axes. A **sparse autoencoder** (SAE) learns an overcomplete dictionary of
# directions so that each frame is a sparse, non-negative combination of them:
#
# $$f = \mathrm{TopK}\big((s\,x - b_\text{dec})\,W_\text{enc} + b_\text{enc}\big), \qquad \hat x = (f\,W_\text{dec} + b_\text{dec})/s$$
#
# trained to minimise $\lVert x - \hat x\rVert^2$ with at most $k$ active features per frame
# (TopK, Gao et al. 2024). The hope is that each feature means one thing — a phone, a word,
# silence, a position. Pluth et al. (2026) do this on Whisper encoders; here we train a toy one
# in seconds on a dozen espeak-ng sentences, which is enough to see the whole workflow:
# train, evaluate (FVU, L0), inspect a feature's top frames, splice the SAE into the model,
# and steer through a feature.

# %%
# %matplotlib inline
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

import hooked_asr
from hooked_asr.datasets.espeak import synthesize
from hooked_asr.sae import ModelFrameSource, SAEConfig, SAETrainer, SparseAutoencoder, TensorFrameSource, TrainConfig
from hooked_asr.sae.evaluate import reconstruction_metrics
from hooked_asr.sae.features import align_words, word_at
from hooked_asr.sae.steering import FeatureIntervention, splice, steer

torch.manual_seed(0)
t_start = time.perf_counter()
model = hooked_asr.load_model("whisper-tiny.en")
HOOK = "encoder.blocks.2.hook_resid_post"

# %% [markdown]
# ## Frames
#
# Whisper pads every input to 30 s, so to get many frames per encoder pass we pack three
# sentences (three espeak voices) into each training clip. `ModelFrameSource` runs the
# encoder only up to the hook and keeps the frames that carry audio plus a few padding frames
# (so that "silence" exists in the data without dominating it). A fourth clip is held out.

# %%
sentences = [
    "The quick brown fox jumps over the lazy dog.",
    "Seven red apples are on the kitchen table.",
    "She sells sea shells by the sea shore.",
    "The weather today is sunny with a light breeze from the west.",
    "Birds fly south for the winter when the days grow short.",
    "He read the newspaper while drinking a cup of hot coffee.",
    "Turn left at the next corner and walk two blocks north.",
    "Our library opens at nine in the morning and closes at six.",
    "A large dog barked loudly at the postman this morning.",
]
voices = ["en-us", "en-us+f3", "en"]
gap = np.zeros(4000, dtype=np.float32)  # 0.25 s between sentences
train_clips = [
    np.concatenate([x for s in sentences[i : i + 3] for x in (synthesize(s, voice=voices[i // 3]), gap)])
    for i in (0, 3, 6)
]
held_out = synthesize("Please call Stella and ask her to bring these things with her from the store.")

source = ModelFrameSource(model, train_clips, HOOK, batch_size=3, pad_frames=8)
chunks = list(source.iter_with_meta())
frames = torch.cat([c[0] for c in chunks])  # [n_frames, 384]
clip_of = torch.cat([c[1] for c in chunks])  # which clip each frame came from
frame_of = torch.cat([c[2] for c in chunks])  # its index inside the clip (20 ms steps)
test_frames = torch.cat(list(ModelFrameSource(model, [held_out], HOOK, batch_size=1, pad_frames=8)))
print(f"{len(frames)} training frames, {len(test_frames)} held-out frames of width {frames.shape[1]}")

# %% [markdown]
# ## Train
#
# `SAETrainer` handles the details that make SAEs train well: an input scale `s` so that
# scaled frames have mean squared norm `d_in`, `b_dec` initialised at the data mean, decoder
# rows kept at unit norm, an auxiliary loss that revives dead features, warm-up and decay
# of the learning rate. A 2.7x overcomplete dictionary with `k = 16` and ~60 steps is a toy,
# but it trains in seconds.

# %%
sae = SparseAutoencoder(
    SAEConfig(d_in=384, d_sae=1024, architecture="topk", k=16, hook_name=HOOK, model_name="whisper-tiny.en")
)
train_cfg = TrainConfig(total_frames=60 * 256, batch_size=256, buffer_frames=4096, lr=3e-3, log_every=5, progress=False)
t0 = time.perf_counter()
state = SAETrainer(sae, train_cfg).train(TensorFrameSource(frames, chunk_size=512))
print(f"{state.step} steps in {time.perf_counter() - t0:.1f} s")
hist = state.history
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot([h["step"] for h in hist], [h["fvu"] for h in hist])
ax.set_xlabel("step")
ax.set_ylabel("training FVU")
ax.set_ylim(0, None)
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## Evaluate: FVU and L0
#
# **FVU** (fraction of variance unexplained) $= \sum_n \lVert x_n-\hat x_n\rVert^2 / \sum_n
# \lVert x_n-\bar x\rVert^2$: 0 is perfect, 1 is no better than predicting the mean frame.
# **L0** is the mean number of active features per frame (at most `k` for TopK). **Dead**
# features never fire. Held-out FVU is what matters; with this little data the SAE overfits.

# %%
train_m = reconstruction_metrics(sae, TensorFrameSource(frames))
test_m = reconstruction_metrics(sae, TensorFrameSource(test_frames))
for name, m in [("train", train_m), ("held-out", test_m)]:
    print(f"{name:9s} FVU {m.fvu:.3f}  L0 {m.l0:.1f}  dead {m.dead_fraction:.1%}  dense {m.dense_fraction:.1%}")

# %% [markdown]
# ## A feature and its top-activating frames
#
# Many features of a small SAE are *positional* (they fire at the start of every clip: the
# encoder knows where it is in the 30 s window) or fire on silence. To find one that tracks
# the content, we rank features by their largest activation on frames inside the speech (not
# the first 0.2 s, not the padding), among features that fire on 0.5-5 % of frames. Then we
# align the words of that clip (`align_words` times each transcript word with the alignment
# heads' cross-attention and dynamic time warping) and look at where the feature fires.

# %%
from hooked_asr.audio import audio_frames as speech_frames

with torch.no_grad():
    f_train = sae.encode(frames)  # [n_frames, d_sae]
freq = (f_train > 0).float().mean(0)
n_speech = torch.tensor([speech_frames(len(c)) for c in train_clips])
inside = (frame_of >= 10) & (frame_of < n_speech[clip_of])
candidates = torch.nonzero((freq > 0.005) & (freq < 0.05)).flatten()
feature = int(candidates[f_train[inside][:, candidates].max(0).values.argmax()])
acts = f_train[:, feature]
print(
    f"feature {feature}: fires on {float(freq[feature]):.1%} of frames, max {float(acts.max()):.2f};",
    "frames per clip:",
    [int((acts[clip_of == c] > 0).sum()) for c in range(len(train_clips))],
)

c0 = int(clip_of[acts.argmax()])
words = align_words(model, train_clips[c0])
trace = acts[clip_of == c0].numpy()
peaks = np.argsort(-trace)[:5]
for fr in sorted(peaks):
    t = (fr + 0.5) * 0.02
    print(f"  clip {c0}  t = {t:5.2f} s  activation {trace[fr]:5.2f}  word: {word_at(words, t)!r}")

fig, ax = plt.subplots(figsize=(9, 2.6))
ax.plot(np.arange(len(trace)) * 0.02, trace)
for w in words:
    ax.axvline(w.start, color="grey", lw=0.5)
    ax.text(w.start, trace.max() * 1.02, w.text, fontsize=7, rotation=45)
ax.set_xlabel("time (s)")
ax.set_ylabel(f"feature {feature}")
plt.show()

# %% [markdown]
# ## Splice and steer
#
# **Splice**: replace the activation at the hook by the SAE's reconstruction $\hat x$ and
# transcribe. Whatever the SAE fails to reconstruct is lost, so the transcript's errors are a
# downstream measure of the FVU. We splice only the frames that carry audio (`frame_mask`):
# this SAE never saw the ~1300 padding frames of a 30 s window, and reconstructing those badly
# sends the decoder into a loop.
#
# **Steer**: keep the SAE's error term, $x \mapsto x + (\hat x(f') - \hat x(f))$ with $f'$ the
# edited features, so the model sees its own activation moved *only* by the edit. Adding $a$
# to feature $i$ moves every selected frame by exactly $a\,W_\text{dec}[i]/s$. With no edit,
# steering is an exact identity.

# %%
mask = torch.zeros(model.cfg.encoder.n_ctx, dtype=torch.bool)
mask[: speech_frames(len(held_out)) + 8] = True
clean = model.transcribe(held_out)
cap = 2 * len(clean.tokens) + 8
with splice(model, sae, frame_mask=mask):
    spliced = model.transcribe(held_out, max_new_tokens=cap)
amount = 2 * float(acts.max())
with steer(model, sae, [FeatureIntervention(feature=feature, mode="add", value=amount)], frame_mask=mask):
    steered = model.transcribe(held_out, max_new_tokens=cap)
print("clean:   ", clean.text)
print("spliced: ", spliced.text)
print(f"steered (feature {feature} += {amount:.1f} on the speech frames):", steered.text)

# %% [markdown]
# A toy SAE with held-out FVU around 0.5 loses most of what the decoder needs: the spliced
# transcript falls apart, and a large push along one feature derails it too. This is the
# downstream cost that FVU alone hides, and why real encoder SAEs train on hours of audio
# (`scripts/sae_train.py`) and report spliced WER and cross-entropy recovered
# (`hooked_asr.sae.evaluate.splice_metrics`).
#
# The exact effect of a steer on the residual stream: record what the next block reads
# (`encoder.blocks.3.hook_resid_pre`) with and without the edit. `model.encode` runs the
# encoder alone (a `run_with_cache` forward would run the decoder too).

# %%
feats = model.prepare_features(held_out)
NEXT = "encoder.blocks.3.hook_resid_pre"


@torch.no_grad()
def next_block_input(interventions=None):
    grabbed = {}

    def grab(x, hook):
        grabbed["x"] = x.clone()

    if interventions is None:
        with model.hooks(fwd_hooks=[(NEXT, grab)]):
            model.encode(**feats)
    else:
        with steer(model, sae, interventions), model.hooks(fwd_hooks=[(NEXT, grab)]):
            model.encode(**feats)
    return grabbed["x"]


base = next_block_input()
moved = next_block_input([FeatureIntervention(feature=feature, mode="add", value=amount)]) - base  # every frame
identity = next_block_input([])
expected = amount * sae.W_dec[feature].detach() / sae.input_scale
print(
    "max |moved - a W_dec[i] / s| =",
    f"{float((moved - expected).abs().max()):.1e}",
    "| |a W_dec[i] / s| =",
    f"{float(expected.norm()):.2f}",
)

# %% [markdown]
# ## Checks

# %%
assert test_m.fvu < 1.0 and train_m.fvu < 0.5, (train_m.fvu, test_m.fvu)  # better than the mean frame
assert train_m.l0 <= sae.cfg.k + 1e-6 and test_m.l0 <= sae.cfg.k + 1e-6
assert hist[-1]["fvu"] < hist[0]["fvu"]  # training reduced the error
assert torch.equal(identity, base)  # no edit: exact identity
assert torch.allclose(moved, expected.expand_as(moved), atol=1e-3)
assert float(acts.max()) > 0 and len(words) > 0
print(f"all checks passed in {time.perf_counter() - t_start:.1f} s")
