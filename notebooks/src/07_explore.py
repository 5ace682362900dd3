"""Source of notebooks/07_explore.ipynb (build with python notebooks/build.py)."""

# %% [markdown]
# # 07 · The explorer: hear, see and click through one clip
#
# `hooked_asr.explore.explore(model, audio)` gathers what you want open while working on a
# clip and draws it as one interactive view, all linked:
#
# * the waveform and the model's log-mel input, with a play button and a cursor; click a word
#   or a token to hear its span (word timestamps);
# * the transcript's tokens coloured by probability; the selected token's attention over the
#   audio for **every decoder layer × head**, aligned under the spectrogram (one head, or the
#   mean of the alignment heads), and its self-attention over the tokens before it;
# * the logit lens of that token (top-k per layer, p(final), saturation layer) and the encoder lens;
# * optional panels: a head patching sweep (click a cell: the patched transcript), an SAE's
#   features, a probe's per-layer scores.
#
# The view is self-contained HTML (data, audio and a small hand-written script, no network):
# `display(view)` shows it here, `view.save("clip.html")` writes a file any browser opens.
# From a shell: `hooked-asr explore clip.wav`.

# %%
import time

import numpy as np
import torch
from IPython.display import display

import hooked_asr
from hooked_asr.datasets.espeak import synthesize
from hooked_asr.explore import explore, patched_transcripts
from hooked_asr.patching import components

torch.set_grad_enabled(False)
t_start = time.perf_counter()
model = hooked_asr.load_model("whisper-tiny.en")
said = "The quick brown fox jumps over the lazy dog."
audio = synthesize(said)

# %% [markdown]
# A sentence tiny.en mishears, with a patching panel: each decoder cross-attention head of the
# last layer zero-ablated, and the transcript that produces. Click the token after "quick" and
# look at the logit lens: which layers already lean to the wrong word?

# %%
heads = [c for c in components(model, kinds=["cross_attn"], heads=True, stacks=["decoder"]) if c.layer == 3]
swept, texts = patched_transcripts(model, audio, heads, intervention="zero", progress=False)
view = explore(
    model,
    audio,
    reference_text=said,
    sweep=swept,
    sweep_metric="changed",
    patched_transcripts=texts,
    encoder_lens_max_new_tokens=32,
    progress=False,
)
print(view)
display(view)

# %%
view.save("explore_quick_fox.html")
d = view.data
tokens = d["transcript"]["tokens"]
i = 2  # the first token tiny.en gets wrong
print("token", i, repr(tokens[i]["text"]), "p =", round(float(np.exp(tokens[i]["logprob"])), 3))
for layer, (strs, probs) in enumerate(zip(d["logit_lens"]["topk_strs"], d["logit_lens"]["topk_probs"])):
    print(f"layer {layer}: " + ", ".join(f"{s!r} {p:.2f}" for s, p in zip(strs[i], probs[i])))

# %%
import html
import re

page = view.to_html()
assert view.size_bytes < 1_000_000  # a 3-s clip: a small page
assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched from a network
assert d["transcript"]["text"] == model.transcribe(audio).text
assert [t["id"] for t in tokens][-1] == model.cfg.eos_token_id
assert d["logit_lens"]["topk_ids"][-1][i][0] == tokens[i]["id"]  # the last layer's top-1 is the token chosen
assert set(texts) == {c.name for c in heads} and d["patching"]["transcripts"] == texts
assert 'srcdoc="' in view._repr_html_() and html.escape("ha-data") in view._repr_html_()
print(f"all checks passed in {time.perf_counter() - t_start:.1f} s")
