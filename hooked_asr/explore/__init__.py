"""An interactive explorer: hear, see and click through what a speech model does with one clip.

``explore(model, audio)`` transcribes the clip and gathers, through hook names and the public
model API, what a researcher wants open while working, all linked in one offline HTML view:

* the waveform and the model's log-mel input with a play button and a cursor; clicking a word
  or a token plays its span (word timestamps);
* the transcript's tokens with their log-probabilities; the selected token's attention over the
  audio for every decoder layer x head, aligned under the spectrogram (Whisper:
  cross-attention; Qwen2-Audio, which has none: the decoder's attention to the audio-prefix
  positions), one head or the mean of the alignment heads, and its self-attention over the
  tokens before it;
* the logit lens of that token (top-k per layer, p(final token), saturation layer;
  :func:`hooked_asr.lens.logit_lens` teacher-forced on the model's own greedy transcript,
  which is the lens during generation without decoding the clip a second time) and the encoder lens
  (:func:`hooked_asr.lens.encoder_lens`);
* optional panels: a head patching sweep (:func:`hooked_asr.patching.sweep`) as layer x head
  heatmaps (click a cell for the patched transcript), an SAE's features
  (:mod:`hooked_asr.sae.features`), a probe's per-layer scores (:class:`hooked_asr.probing.ProbeSweep`).

    >>> view = explore(model, "clip.wav")
    >>> view                  # in Jupyter: the view inline
    >>> view.save("clip.html")

What is drawn is downsampled, not what is computed (see :mod:`hooked_asr.explore.data`); a
30-s clip's page stays under ~5 MB.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float

from hooked_asr.explore import data as _data
from hooked_asr.explore.view import ExplorerView


def explore(
    model: Any,
    audio: str | Path | Float[np.ndarray, "samples"],
    *,
    sampling_rate: int | None = None,
    language: str | None = None,
    title: str | None = None,
    reference_text: str | None = None,
    top_k: int = 5,
    max_new_tokens: int | None = None,
    sweep: Any = None,
    sweep_metric: str | None = None,
    patched_transcripts: Mapping[str, str] | None = None,
    sae: Any = None,
    sae_clips: Sequence[np.ndarray] | None = None,
    sae_features: Sequence[int] | None = None,
    probe: Any = None,
    max_audio_columns: int = 400,
    encoder_lens_max_new_tokens: int | None = None,
    progress: bool = True,
) -> ExplorerView:
    """Build the explorer view of one clip: a path, or a 1-D float array at ``sampling_rate``
    (16 kHz if not given), at most one model window (30 s).

    ``reference_text``: what was said, shown beside what was heard. ``sweep``: a
    :class:`~hooked_asr.patching.sweeps.SweepResult` with head-level rows (``sweep_metric``
    picks the metric; ``patched_transcripts`` maps component -> patched text, see
    :func:`patched_transcripts`). ``sae`` (+ ``sae_clips``, ``sae_features``): an SAE on an
    encoder hook. ``probe``: a :class:`~hooked_asr.probing.ProbeSweep`.
    ``max_audio_columns``: at most this many drawn attention bins over the audio.
    ``encoder_lens_max_new_tokens``: cap on each encoder layer's decode (the lower layers
    usually loop until the cap; default as :func:`~hooked_asr.lens.encoder_lens`).
    """
    from tqdm.auto import tqdm

    from hooked_asr.lens import encoder_lens, logit_lens

    wave = _one_window(model, audio, sampling_rate)
    optional = [s for s, on in (("patching", sweep), ("sae", sae), ("probe", probe)) if on is not None]
    bar = tqdm(total=5 + len(optional), desc="explore", unit="step", disable=not progress)

    def step(name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        bar.set_postfix_str(name)
        out = fn(*args, **kwargs)
        bar.update()
        return out

    kw: dict[str, Any] = {"language": language, "word_timestamps": _data.has_cross_attention(model)}
    if max_new_tokens is not None:
        kw["max_new_tokens"] = max_new_tokens
    result = step("transcribe", model.transcribe, wave, **kw)
    lens = step("logit lens", logit_lens, model, wave, tokens=result.tokens, top_k=top_k, language=result.language)
    steps = lens.tokens.tolist()  # the transcript, then end of text
    words = step("word timings", _data.word_timings, model, result)
    audio_att, self_att = step(
        "attention",
        _data.attention_sections,
        model,
        wave,
        steps,
        result.language,
        len(steps),
        max_audio_columns=max_audio_columns,
    )
    enc = step("encoder lens", encoder_lens, model, wave, final=result, max_new_tokens=encoder_lens_max_new_tokens)
    audio_sec = _data.audio_section(wave)
    wav = audio_sec.pop("wav_base64")
    mel = _data.mel_section(model, wave)
    data: dict[str, Any] = {
        "version": 1,
        "title": title,
        "model": {
            "name": model.cfg.name,
            "arch": "whisper" if _data.has_cross_attention(model) else "qwen2_audio",
            "decoder_layers": model.cfg.decoder.n_layers,
            "decoder_heads": model.cfg.decoder.n_heads,
            "encoder_layers": model.cfg.encoder.n_layers,
        },
        "audio": audio_sec,
        "mel": mel,
        "transcript": _data.transcript_section(result, lens, words, reference_text),
        "audio_attention": audio_att,
        "self_attention": self_att,
        "logit_lens": _data.logit_lens_section(lens),
        "encoder_lens": _data.encoder_lens_section(enc),
        "downsampling": _data.downsampling_note(audio_sec, mel, audio_att),
    }
    if sweep is not None:
        data["patching"] = step("patching", _data.patching_section, sweep, sweep_metric, patched_transcripts)
    if sae is not None:
        data["sae"] = step("sae", _data.sae_section, model, sae, wave, clips=sae_clips, features=sae_features)
    if probe is not None:
        data["probe"] = step("probe", _data.probe_section, probe)
    bar.close()
    return ExplorerView(data, wav)


def _one_window(model: Any, audio: Any, sampling_rate: int | None) -> Float[np.ndarray, "samples"]:
    """The clip validated (mono, 16 kHz, at most 30 s), refused when longer than the model's window."""
    from hooked_asr.audio import SAMPLE_RATE, load_audio, window_samples

    wave = load_audio(audio, sampling_rate)
    window = window_samples(model)
    if len(wave) > window:
        raise ValueError(
            f"the clip lasts {len(wave) / SAMPLE_RATE:.2f} s but {model.cfg.name} reads {window / SAMPLE_RATE:.2f} s at a "
            f"time; the explorer shows one window: cut it with hooked_asr.audio.chunk_audio(audio, {window / SAMPLE_RATE:g}) "
            "and explore each chunk"
        )
    return wave


def patched_transcripts(
    model: Any, audio: Any, comps: Sequence[Any], **sweep_kwargs: Any
) -> tuple[Any, dict[str, str]]:
    """``(sweep result, {component: patched transcript})``: one generate-mode
    :func:`hooked_asr.patching.sweep` of ``comps`` on this clip (``sweep_kwargs`` as for
    ``sweep``: ``intervention``, ``reference="noise"``, ...) that keeps every transcript."""
    from hooked_asr.patching import SweepItem, sweep

    sweep_kwargs.setdefault("metrics", ["changed", "n_tokens"])
    result = sweep(model, [SweepItem("clip", audio)], comps, mode="generate", keep_transcripts=True, **sweep_kwargs)
    return result, result.transcripts.get("clip", {})


__all__ = ["ExplorerView", "explore", "patched_transcripts"]
