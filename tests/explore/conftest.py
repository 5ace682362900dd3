"""Explorer views shared by tests/explore: one of a 30-s clip on the real tiny.en (the size
target's worst case, also what the browser test loads) and a short one with every optional panel."""

from __future__ import annotations

import numpy as np
import pytest

THIRTY_S = 30 * 16000
PARAGRAPH = (
    "Researchers explore before they measure. For text models they open attention and logit lens views. "
    "For audio there is nothing that puts the sound, the spectrogram, the tokens and the heads side by side. "
    "This paragraph is long enough to fill most of a thirty second window, so that the size of the page can be "
    "measured where it matters most: on the longest clip that one window of the model can read at once. "
    "We speak slowly and clearly."
)
SHORT = "She opened the window and looked at the sea."


@pytest.fixture(scope="session")
def thirty_second_clip() -> np.ndarray:
    """About 27 s of espeak speech padded with silence to 30 s (one full window)."""
    from hooked_asr.datasets.espeak import synthesize

    speech = synthesize(PARAGRAPH, voice="en-us")[:THIRTY_S]
    return np.pad(speech, (0, THIRTY_S - len(speech)))


@pytest.fixture(scope="session")
def thirty_second_view(whisper_tiny_en, thirty_second_clip):
    from hooked_asr.explore import explore

    # The lower encoder layers loop until the cap: 40 tokens show that as well as 200 would.
    return explore(whisper_tiny_en, thirty_second_clip, progress=False, encoder_lens_max_new_tokens=40)


@pytest.fixture(scope="session")
def panels_view(whisper_tiny_en):
    """A short clip with a head patching sweep (and its transcripts), an SAE and probe scores."""
    from hooked_asr.datasets.espeak import synthesize
    from hooked_asr.explore import explore, patched_transcripts
    from hooked_asr.patching import components
    from hooked_asr.sae.model import identity_sae

    model = whisper_tiny_en
    audio = synthesize(SHORT, voice="en-us")
    comps = [
        c
        for c in components(model, kinds=["cross_attn"], heads=True, stacks=["decoder"])
        if c.layer in (0, model.cfg.decoder.n_layers - 1)
    ]
    swept, texts = patched_transcripts(model, audio, comps, intervention="zero", progress=False)
    sae = identity_sae(model.cfg.encoder.d_model, hook_name="encoder.blocks.2.hook_resid_post")
    probe_rows = [
        {"layer": l, "train_acc": 0.5 + 0.1 * l, "test_acc": 0.5 + 0.08 * l, "f1": 0.5, "chance": 0.5}
        for l in range(model.cfg.encoder.n_layers)
    ]
    view = explore(
        model,
        audio,
        reference_text=SHORT,
        sweep=swept,
        sweep_metric="changed",
        patched_transcripts=texts,
        sae=sae,
        sae_features=[0, 1, 2],
        probe=probe_rows,
        progress=False,
        encoder_lens_max_new_tokens=24,
    )
    return view, audio, swept, texts
