"""Source of notebooks/08_live_explorer.ipynb (build with python notebooks/build.py)."""

# %% [markdown]
# # 08 · The live explorer: ablate a head and read, hear and see the consequence
#
# Notebook 07's explorer shows what was computed before the page was written. The **live**
# explorer is the same page connected to this kernel: pick a decoder head (the grid on the
# right), press *ablate the selected head*, and the model recomputes with hooks:
#
# * the clean transcript forced through the intervened model: each token's log-prob before → after,
#   the selected token's attention over the audio (clean above, intervened below) and its logit lens;
# * a greedy re-transcription with the hooks live at every step, and its word diff against the clean one;
# * *export Python*: the code that reproduces those numbers with the public API.
#
# Interventions compose: zero / mean / white-noise ablation, or a patch from **another clip** you give,
# of any head, MLP or hook over a time range (encoder frames, cross-attention keys) or a token range
# (decoder positions), masks that keep a head's attention off a time range (shift-drag on the
# spectrogram), and steering along an SAE feature or a **probe's direction**. The re-transcription
# **streams in** (its tokens appear while it decodes). *Your own audio*: upload a file or
# record from the microphone; long audio takes a window (`start`, `window`).
#
# The widget is an [anywidget](https://anywidget.dev) (JupyterLab, Notebook 7, VS Code); its page
# talks to Python over the kernel's channel, no port opened. The same backend serves
# `hooked-asr explore clip.wav --serve` (a local page with a token, like Jupyter's).

# %%
import time

import torch
from IPython.display import display

import hooked_asr
from hooked_asr.datasets.espeak import synthesize
from hooked_asr.explore.widget import live_widget

torch.set_grad_enabled(False)
t_start = time.perf_counter()
model = hooked_asr.load_model("whisper-tiny.en")
said = "She opened the window and looked at the sea."
audio = synthesize(said)

# %% [markdown]
# The widget: in a live notebook, click head `4` in row `L0` of the head grid, then
# *ablate the selected head*. (A saved notebook shows no widget: widgets need a running kernel.)

# %%
w = live_widget(model, audio, name="sea", encoder_lens_max_new_tokens=8)
display(w)
print("heard:", w.session.clean_text)

# %% [markdown]
# What the button does, from Python: the page sends a list of interventions (plain data) and the
# session answers with the same functions. Zero-ablating cross-attention head 4 of layer 0 makes
# tiny.en hear "window" where "sea" was said.

# %%
live = w.session
ablate = [{"component": "decoder.blocks.0.cross_attn.head.4", "method": "zero"}]
tf = live.teacher_forced(ablate)
tokens = live.view.data["transcript"]["tokens"]
for t, before, after in zip(tokens, tf["logprobs_before"], tf["logprobs_after"]):
    print(f"{t['text']!r:>12}  log p {before:7.3f} -> {after:7.3f}")
out = live.transcribe(ablate)
print("re-transcribed:", out["text"])
print("word diff:", out["diff"])

# %% [markdown]
# Compose: also hide 0.9-1.5 s from every cross-attention head of the last layer, and mean-ablate the
# encoder's layer-1 MLP over the first half second. Then export the code that reproduces it.

# %%
composed = ablate + [
    {"component": "decoder.blocks.3.cross_attn", "method": "mask", "from": 0.9, "to": 1.5},
    {"component": "encoder.blocks.1.mlp", "method": "mean", "from": 0.0, "to": 0.5},
]
tf2 = live.teacher_forced(composed)
out2 = live.transcribe(composed)
print("re-transcribed:", out2["text"])
code = live.to_python(composed)
print(code)

# %% [markdown]
# Another clip as the reference: patch the last encoder layer's attention over "the sea" with its value
# on a different sentence. The other clip is cut or zero-padded to this clip's length (encoder frames
# line up, 20 ms each) and run with this clip's prompt and transcript, through
# `hooked_asr.patching.reference_cache` (in the page: *upload as the other clip*). The re-transcription
# streams: `on_tokens` sees the transcript so far after every step (the page shows the same).

# %%
live.set_other(synthesize("He closed the door and walked to the car."), name="door")
from_other = [{"component": "encoder.blocks.3.attn", "method": "other", "from": 1.8, "to": 2.6}]
tf3 = live.teacher_forced(from_other)
print(f"sum log p {tf3['sum_before']:.2f} -> {tf3['sum_after']:.2f}")
streamed = []
out3 = live.transcribe(from_other, on_tokens=lambda ids, text: streamed.append(text))
print(*streamed[-3:], sep="\n")
print("re-transcribed:", out3["text"])

# %% [markdown]
# Steering along a probe's direction: a linear probe at `encoder.blocks.2.hook_resid_post` tells
# speech frames (the first 2.5 s) from the silent padding; the session adds `value` times its unit
# direction at that hook (`hooked_asr.sae.steering.steer_direction`, the one steering hook SAE
# features use too), here over "the sea", towards silence.

# %%
import numpy as np

from hooked_asr.probing.probe import fit_probe

hook = "encoder.blocks.2.hook_resid_post"
_, cache = model.run_with_cache(**live.tf.kwargs, names_filter=[hook])
is_speech = (torch.arange(250) < 125).long()  # 5 s of 20-ms frames: speech, then silence
live.set_probe(fit_probe(cache[hook][0, :250], is_speech).probe, hook)
push = [{"method": "probe", "value": -60.0, "from": 1.9, "to": 2.4}]
tf4 = live.teacher_forced(push)
print(f"sum log p {tf4['sum_before']:.2f} -> {tf4['sum_after']:.2f}")
print("re-transcribed:", live.transcribe(push)["text"])
print(live.to_python(push))  # loads the probe from the session's folder (tests/explore/test_live.py runs such code)

# %%
from hooked_asr.patching import patched, zero_ablate

ns = {}
exec(code, ns)  # the exported code, run as is: the same numbers
assert ns["out"].text == out2["text"]
np.testing.assert_allclose(ns["logprobs"].numpy(), tf2["logprobs_after"], atol=1e-5)
with patched(model, [zero_ablate("decoder.blocks.0.cross_attn.head.4")]):
    assert model.transcribe(audio).text == out["text"] != said  # the button's transcript is the API's
assert tf["logprobs_after"][8] < tf["logprobs_before"][8] - 1  # "sea" loses most of its probability
reply = w.answer({"id": 1, "action": "teacher_forced", "body": {"interventions": ablate}})
assert reply["result"]["logprobs_after"] == tf["logprobs_after"]  # what the widget's page receives
print(f"all checks passed in {time.perf_counter() - t_start:.1f} s")
