"""Source of notebooks/04_probing.ipynb (build with python notebooks/build.py)."""

# %% [markdown]
# # 04 · Linear probes, layer by layer
#
# A **linear probe** asks whether a property of the input is *linearly decodable* from a
# layer's activations: fit a logistic regression $p(y=1\mid x) = \sigma(w\cdot z + b)$ on
# standardised activations $z = (x-\mu)/\sigma$ and measure its accuracy on held-out clips.
# Linear, because a linear read-out is what the next layers can cheaply use; a deep probe
# could decode almost anything from almost anywhere and would tell us about the probe rather
# than the model. Sweeping the layers shows where a property appears and where it fades.
#
# Speaker gender is a natural first property for an ASR encoder: it is irrelevant to the
# transcript, so a model trained only to transcribe has no reason to keep it — yet pitch and
# timbre shape every frame. Here the clips are espeak-ng male and female voice variants
# (`hooked_asr.datasets.labelled.gender_dataset`); each encoder layer is summarised per clip
# by the **mean over the frames that carry audio**.
#
# Two controls keep a probe honest: the **chance level** (the majority class's share of
# the test set), and a **shuffled-label control** (Hewitt & Liang, 2019): the same probe
# trained on randomly permuted labels. High accuracy with real labels and chance accuracy
# with shuffled ones means the property, not the probe's capacity, is what is decoded.

# %%
# %matplotlib inline
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

import hooked_asr
from hooked_asr.activations import ActivationStore, extract_activations
from hooked_asr.datasets.labelled import gender_dataset
from hooked_asr.probing import fit_probe, probe_layers

torch.manual_seed(0)
torch.set_grad_enabled(False)
t_start = time.perf_counter()
model = hooked_asr.load_model("whisper-tiny.en")

# %% [markdown]
# ## A labelled dataset
#
# Pair `j` shares the sentence, base voice and speaking rate; only the male/female variant
# differs, so nothing but the voice separates the classes.

# %%
ds = gender_dataset(n_per_class=10, seed=0, progress=False)
print(len(ds), "clips; label names:", ds.label_names)
for r in ds.records[:4]:
    print(f"  label {r['label']} ({r['label_name']:6s}) voice {r['voice']:10s} rate {r['rate']}  {r['text'][:50]}")

# %% [markdown]
# ## The activation store
#
# `extract_activations` runs the model over the dataset with hooks on the chosen names, pools
# each hook to one row per clip (encoder hooks: mean over the clip's audio frames; decoder
# hooks: the end-of-text position), and writes sharded safetensors with the labels. Asking
# only for encoder hooks runs only the encoder. A rerun with the same arguments finds the
# shards and skips them (extraction over a large corpus is resumable); other arguments on
# the same folder raise instead of mixing two datasets.

# %%
hooks = [hooked_asr.act_name("resid_post", l, "encoder") for l in range(model.n_layers["encoder"])]
hooks = ["encoder.hook_pos_embed"] + hooks  # the input to block 0: conv features + positions
t0 = time.perf_counter()
store = extract_activations(model, ds, hooks, out_dir="acts/gender", batch_size=5, shard_size=8, progress=False)
t_extract = time.perf_counter() - t0
t0 = time.perf_counter()
store = extract_activations(model, ds, hooks, out_dir="acts/gender", batch_size=5, shard_size=8, progress=False)
t_rerun = time.perf_counter() - t0
print(f"extracted in {t_extract:.1f} s; rerun (nothing to do) in {t_rerun:.2f} s")
print(store)
X = store.load("encoder.blocks.3.hook_resid_post")
y = store.labels("label")
print("rows", tuple(X.shape), "| labels", y.tolist())

# %% [markdown]
# ## One probe
#
# `fit_probe` standardises with the training split's statistics, fits an L2-regularised
# logistic regression with L-BFGS, and scores a stratified held-out split (half the clips
# here, since the set is tiny).

# %%
res = fit_probe(X, y, test_size=0.5, seed=0)
print(f"train acc {res.train_acc:.2f} | test acc {res.test_acc:.2f} | F1 {res.f1:.2f} | chance {res.chance:.2f}")
print("confusion (rows = true, cols = predicted):\n", res.confusion)

# %% [markdown]
# ## Every layer
#
# `probe_layers` fits one probe per hook of the store on the *same* split, so layers compare
# on the same clips. With espeak voices the male/female difference is large (F0 ~100 vs
# ~200 Hz), so it should be decodable everywhere; on real speakers the curve is where it gets
# interesting (the paper finds gender decodable through the encoder, fading in the decoder).

# %%
sweep = probe_layers(store, label_key="label", test_size=0.5, seed=0, title="gender, whisper-tiny.en encoder")
print(sweep.summary())
fig = sweep.plot()
plt.show()

# %% [markdown]
# With ten training clips per probe these accuracies are coarse (one test clip is 0.1), so
# read the curve's shape, not its decimals.
#
# ## Shuffled-label control
#
# The same probes on permuted labels. With 10 training clips and 384 dimensions a probe can
# fit *any* labelling of the training set (train accuracy 1), which is exactly why held-out
# accuracy, and this control, are needed.

# %%
rng = np.random.default_rng(0)
y_shuffled = torch.as_tensor(rng.permutation(y.numpy()))
control = probe_layers(store, y=y_shuffled, test_size=0.5, seed=0, title="shuffled labels")
print(control.summary())
real_acc = np.array([r["test_acc"] for r in sweep.rows])
ctrl_acc = np.array([r["test_acc"] for r in control.rows])
print("selectivity (real - shuffled test accuracy) by layer:", np.round(real_acc - ctrl_acc, 2).tolist())

# %% [markdown]
# ## Checks

# %%
assert t_rerun < t_extract / 3, (t_rerun, t_extract)  # the rerun found every shard
assert X.shape == (len(ds), model.cfg.encoder.d_model)
assert sorted(y.tolist()) == [0] * 10 + [1] * 10
best = max(sweep.rows, key=lambda r: r["test_acc"])
assert best["test_acc"] > best["chance"] + 0.25, best  # the probe beats chance
assert real_acc.mean() > ctrl_acc.mean() + 0.2, (real_acc, ctrl_acc)  # and is selective
assert all(r["train_acc"] == 1.0 for r in control.rows)  # capacity: it can fit noise on train
print(f"all checks passed in {time.perf_counter() - t_start:.1f} s")
