"""The live explorer's backend: one clip, the model, and the documented actions that recompute the view under
interventions. The served page (:mod:`.server`) and the widget (:mod:`.widget`) both call :meth:`LiveSession.handle`.

An intervention is a small JSON object (what the page sends, what :meth:`LiveSession.to_python`
turns into code; checked by :mod:`.live_specs`)::

    {"component": "decoder.blocks.2.cross_attn.head.3", "method": "zero"}            # a~ = 0
    {"component": "encoder.blocks.1.mlp", "method": "mean", "from": 0.5, "to": 1.0}   # a~ = mean over the clip, frames of 0.5-1 s
    {"component": "decoder.blocks.0.attn.head.1", "method": "noise", "tokens": [2, 5]} # a~ = a on white noise, tokens 2-4
    {"component": "encoder.blocks.3.attn.head.5", "method": "other", "from": 1.0, "to": 1.6}  # a~ = a on the other clip
    {"component": "decoder.blocks.3.cross_attn.head.0", "method": "mask", "from": 0.4, "to": 0.9}  # the head cannot see 0.4-0.9 s
    {"method": "steer", "feature": 7, "mode": "clamp", "value": 0.0, "from": 0.4, "to": 0.9}      # SAE feature 7 off there
    {"method": "probe", "value": 8.0, "from": 0.4, "to": 0.9}                                   # x + 8 * probe direction there

``method``: ``zero`` (:func:`~hooked_asr.patching.zero_ablate`), ``mean`` (:func:`~hooked_asr.patching.mean_ablate`,
the mean over every position of this clip's teacher-forced run), ``noise`` (:func:`~hooked_asr.patching.interpolate`
towards the activation on white noise at the clip's RMS, seed 0, teacher-forced on the clean transcript; positions
the reference lacks stay unpatched), ``other`` (the same towards the activation on a second clip the user gave,
:meth:`LiveSession.set_other` or an upload: cut or zero-padded to this clip's length so encoder frames line up, 20 ms
each, and run with this clip's prompt and transcript through :func:`~hooked_asr.patching.reference_cache`; a token
range must lie within that transcript; an unranged decoder site leaves positions a longer re-transcription adds
unpatched) or ``mask`` (:func:`~hooked_asr.patching.attention_masks.mask_attention`).
``alpha`` (default 1): ``a~ = (1 - alpha) a + alpha a_target``. Where: ``from``/``to`` (seconds: encoder frames)
or ``tokens`` ``[a, b)`` (the decoder positions that read those transcript tokens); none: everywhere. ``steer``
(with an SAE) edits one feature at the SAE's hook, error term kept (:func:`~hooked_asr.sae.steering.steer`: ``add``
/ ``scale`` by / ``clamp`` to ``value``; one time range per list). ``probe`` (with a probe and the hook it reads)
adds ``value`` times the probe's unit direction at that hook (:func:`~hooked_asr.sae.steering.steer_direction`,
the same steering hook). A list composes in order: SAE steering, probe steering, then the patches.

    >>> live = LiveSession(model, "clip.wav")
    >>> ivs = [{"component": "decoder.blocks.3.cross_attn.head.2", "method": "zero"}]
    >>> live.teacher_forced(ivs)["logprobs_after"]   # log p of each clean token under the ablation
    >>> live.transcribe(ivs)["text"]                 # greedy re-transcription with the hooks live
    >>> print(live.to_python(ivs))                   # the code that reproduces both
"""

from __future__ import annotations

import contextlib
import difflib
import io
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from hooked_asr.explore.live_audio import LiveError, decode_wav_bytes, pick_window
from hooked_asr.explore.live_jobs import JobRunner, TokenStream
from hooked_asr.explore.live_specs import METHODS
from hooked_asr.files import atomic_write_bytes


def word_diff(a: str, b: str) -> list[list[str]]:
    """``[[op, words]]`` turning ``a`` into ``b`` word by word; op ``=`` kept, ``-`` only in ``a``, ``+`` only in ``b``."""
    wa, wb = a.split(), b.split()
    out: list[list[str]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=wa, b=wb, autojunk=False).get_opcodes():
        if tag == "equal":
            out.append(["=", " ".join(wa[i1:i2])])
        else:
            if i2 > i1:
                out.append(["-", " ".join(wa[i1:i2])])
            if j2 > j1:
                out.append(["+", " ".join(wb[j1:j2])])
    return out


class LiveSession:
    """One clip, explored live: the clean view computed once, interventions recomputed on demand.

    ``audio``: a path or a 1-D array at ``sampling_rate`` (16 kHz if not given), any length;
    ``start`` / ``window`` (seconds) pick the model window shown. The clip of the window is kept
    as a float WAV in ``workdir`` (a private temporary folder by default) so exported code
    reads exactly the samples the page used. Model calls are serialised (hooks are global state).
    ``other``: a second clip for the ``other`` method (also :meth:`set_other`). ``probe`` (a
    :class:`~hooked_asr.probing.probe.LinearProbe` or the path it was saved to) with ``probe_hook`` (the
    hook it was trained on): the ``probe`` method steers along its direction.
    """

    def __init__(
        self,
        model: Any,
        audio: Any,
        *,
        sampling_rate: int | None = None,
        start: float = 0.0,
        window: float | None = None,
        language: str | None = None,
        name: str | None = None,
        workdir: str | Path | None = None,
        encoder_lens_max_new_tokens: int | None = 40,
        model_name: str | None = None,
        sae: Any = None,
        sae_path: str | Path | None = None,
        other: Any = None,
        probe: Any = None,
        probe_hook: str | None = None,
    ):
        self.model = model
        self.model_name = model_name or model.cfg.name
        self.language = language
        self.encoder_lens_max_new_tokens = encoder_lens_max_new_tokens
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="hooked-asr-live-")
        self.workdir = Path(workdir if workdir is not None else self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if sae is None and sae_path is not None:
            from hooked_asr.sae.model import load_sae

            sae = load_sae(sae_path)
        self.sae, self.sae_path = sae, (str(sae_path) if sae_path is not None else None)
        self.probe, self.probe_path, self.probe_hook = self._load_probe(probe, probe_hook)
        self.lock = threading.RLock()
        self.runner = JobRunner()
        self.other: Any = None
        self.set_audio(audio, sampling_rate=sampling_rate, start=start, window=window, name=name)
        if other is not None:
            self.set_other(other)

    def set_probe(self, probe: Any, probe_hook: str) -> None:
        """The probe (a :class:`~hooked_asr.probing.probe.LinearProbe` or its path) the ``probe`` method steers
        along, and the hook it was trained on."""
        with self.lock:
            self.probe, self.probe_path, self.probe_hook = self._load_probe(probe, probe_hook)

    def _load_probe(self, probe: Any, hook: str | None) -> tuple[Any, str | None, str | None]:
        if probe is None:
            return None, None, None
        from hooked_asr.probing.probe import LinearProbe

        path = None if isinstance(probe, LinearProbe) else str(probe)
        probe = probe if path is None else LinearProbe.load(probe)
        if not isinstance(hook, str):
            raise LiveError(
                "a probe needs probe_hook: the hook it was trained on, e.g. 'encoder.blocks.2.hook_resid_post'"
            )
        self.model.check_hook_name(hook)
        stack = self.model.cfg.encoder if hook.startswith("encoder.") else self.model.cfg.decoder
        if int(probe.d_in) != int(stack.d_model):
            raise LiveError(f"the probe reads {probe.d_in} features; {hook} carries {stack.d_model}")
        return probe, path, hook

    # ---- clean state ---------------------------------------------------------------------------
    def set_audio(
        self,
        audio: Any,
        *,
        sampling_rate: int | None = None,
        start: float = 0.0,
        window: float | None = None,
        name: str | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        """Load new audio (any length) and show the window ``[start, start + window)``."""
        from hooked_asr.audio import load_audio

        if isinstance(audio, (str, Path)):
            name = name or Path(audio).stem
        full = load_audio(audio, sampling_rate, allow_long=True)
        with self.lock:
            self.full_wave, self.name = full, name or "clip"
            self.set_window(start, window, progress=progress)

    def set_window(
        self, start: float = 0.0, window: float | None = None, progress: Callable[[str], None] | None = None
    ) -> None:
        """Show another window of the loaded audio; recomputes the clean view."""
        import soundfile as sf

        from hooked_asr.audio import SAMPLE_RATE, window_samples
        from hooked_asr.explore import explore
        from hooked_asr.explore.live_cache import CleanRun

        wave = pick_window(self.full_wave, start, window, window_samples(self.model) / SAMPLE_RATE)
        with self.lock:
            if progress:
                progress("computing the clean view")
            view = explore(
                self.model,
                wave,
                language=self.language,
                title=self.name,
                progress=False,
                encoder_lens_max_new_tokens=self.encoder_lens_max_new_tokens,
                sae=self.sae,
            )
            self.wave, self.start, self.view = wave, float(start), view
            self.audio_path = self.workdir / "clip.wav"
            buf = io.BytesIO()
            sf.write(buf, wave, SAMPLE_RATE, subtype="FLOAT", format="WAV")
            atomic_write_bytes(self.audio_path, buf.getvalue())
            t = view.data["transcript"]
            self.clean_text = t["text"]
            self.clean_language = t["language"] if getattr(self.model.cfg, "is_multilingual", False) else None
            self.steps = [int(x["id"]) for x in t["tokens"]]  # the transcript, then end of text
            self.tf = self.model.teacher_forced_inputs(wave, continuation=self.steps, **self._lang())
            self.clean = CleanRun(self.model, wave, self.tf, self._lang())
            if self.other is not None:
                self.clean.set_other(self.other)
            self.clean_logprobs = self._forced([])[1]

    def set_other(
        self, audio: Any, *, sampling_rate: int | None = None, start: float = 0.0, name: str | None = None
    ) -> None:
        """The second clip the ``other`` method patches from (a path or a 1-D array; from ``start`` s, at
        most the model's window). It is cut or zero-padded to the shown clip's length when used, so its
        encoder frames line up with the clip's; kept as a float WAV in ``workdir`` for the exported code."""
        import soundfile as sf

        from hooked_asr.audio import SAMPLE_RATE, load_audio, window_samples

        if isinstance(audio, (str, Path)):
            name = name or Path(audio).stem
        full = load_audio(audio, sampling_rate, allow_long=True)
        wave = pick_window(full, start, min(len(full) / SAMPLE_RATE - start, window_samples(self.model) / SAMPLE_RATE))
        with self.lock:
            self.other, self.other_name = wave, name or "other"
            self.other_path = self.workdir / "other.wav"
            buf = io.BytesIO()
            sf.write(buf, wave, SAMPLE_RATE, subtype="FLOAT", format="WAV")
            atomic_write_bytes(self.other_path, buf.getvalue())
            self.clean.set_other(wave)

    def _lang(self) -> dict[str, Any]:
        return {"language": self.clean_language} if self.clean_language else {}

    @property
    def duration(self) -> float:
        from hooked_asr.audio import SAMPLE_RATE

        return len(self.wave) / SAMPLE_RATE

    # ---- interventions ---------------------------------------------------------------------------
    def methods(self) -> list[str]:
        """The methods this session offers (``steer`` with an SAE, ``probe`` with a probe)."""
        return [
            m for m in METHODS if (m != "steer" or self.sae is not None) and (m != "probe" or self.probe is not None)
        ]

    def validate(self, specs: Any) -> list[dict[str, Any]]:
        """The intervention list, checked and normalised (see the module docstring); raises :class:`LiveError`."""
        from hooked_asr.explore.live_specs import validate

        return validate(self, specs)

    def _positions(self, spec: Mapping[str, Any]) -> range | None:
        from hooked_asr.patching.attention_masks import frames_between

        if "from" in spec:
            return frames_between(spec["from"], spec["to"])
        if "tokens" in spec:
            p = self.tf.prompt_len
            return range(p + spec["tokens"][0], p + spec["tokens"][1])
        return None

    def interventions(self, specs: Any) -> list[Any]:
        """The :mod:`hooked_asr.patching` objects of a validated list (steering is applied around them)."""
        from hooked_asr.patching import interpolate, mean_ablate, parse_component, zero_ablate
        from hooked_asr.patching.attention_masks import mask_attention

        norm = [s for s in self.validate(specs) if s["method"] not in ("steer", "probe")]
        hooks = {s["component"]: parse_component(self.model, s["component"]).hook_name for s in norm}
        refs = {
            m: self.clean.references(m, [hooks[s["component"]] for s in norm if s["method"] == m])
            for m in ("mean", "noise", "other")
            if any(s["method"] == m for s in norm)
        }
        out = []
        for s in norm:
            comp, pos, alpha, m = s["component"], self._positions(s), s.get("alpha", 1.0), s["method"]
            if m == "zero":
                out.append(zero_ablate(comp, alpha=alpha, positions=pos))
            elif m == "mean":
                out.append(mean_ablate(comp, refs[m], alpha=alpha, positions=pos))
            elif m in ("noise", "other"):
                missing = "error" if m == "other" and pos is not None else "keep"
                out.append(interpolate(comp, refs[m], alpha, positions=pos, missing=missing))
            else:
                out.append(mask_attention(comp, pos))
        return out

    def hooks_touched(self, norm: Sequence[Mapping[str, Any]]) -> list[str]:
        """The hook names a validated list writes at."""
        from hooked_asr.patching import parse_component

        return [parse_component(self.model, s["component"]).hook_name for s in norm]

    # ---- actions ----------------------------------------------------------------------------------
    def frame_mask(self, spec: Mapping[str, Any]) -> torch.Tensor | None:
        """The encoder frames a steer applies to (``None``: all)."""
        from hooked_asr.patching.attention_masks import frames_between

        if "from" not in spec:
            return None
        mask = torch.zeros(int(self.model.cfg.encoder.n_ctx), dtype=torch.bool)
        mask[[f for f in frames_between(spec["from"], spec["to"]) if f < len(mask)]] = True
        return mask

    @contextlib.contextmanager
    def _applied(self, norm: Sequence[Mapping[str, Any]]) -> Iterator[None]:
        """SAE steering, probe steering, then the patching interventions, live inside the block."""
        from hooked_asr.patching import patched
        from hooked_asr.sae.steering import FeatureIntervention, steer, steer_direction

        steers = [s for s in norm if s["method"] == "steer"]
        with contextlib.ExitStack() as stack:
            if steers:
                edits = [FeatureIntervention(s["feature"], s["mode"], s["value"]) for s in steers]
                stack.enter_context(steer(self.model, self.sae, edits, frame_mask=self.frame_mask(steers[0])))
            for s in norm:
                if s["method"] == "probe":
                    d = self.probe.direction
                    stack.enter_context(
                        steer_direction(self.model, self.probe_hook, d, s["value"], frame_mask=self.frame_mask(s))
                    )
            stack.enter_context(patched(self.model, self.interventions(norm)))
            yield

    @torch.no_grad()
    def _forced(self, norm: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], list[float]]:
        """The clean transcript teacher-forced under ``norm``, from the cached clean run
        (:class:`~hooked_asr.explore.live_cache.CleanRun`): the logit lens and the attention over the audio
        (the page's layout), and ``log p(step_s | prompt, steps_<s)`` of each step (end of text included),
        which the last layer's lens is (``ln_final`` then the unembedding: the model's output)."""
        from hooked_asr.explore import data as _data
        from hooked_asr.lens import decoder_lens_names, logit_lens_of_cache

        with self._applied(norm):
            kwargs = self.clean.forward_kwargs(self.hooks_touched(norm))
            # two decoder runs on one encoder output: a live hook_pattern takes attention off its fused
            # kernel, which moves logits by ~1e-5; the log-probs are the plain forward's
            _, cache = self.model.run_with_cache(**kwargs, names_filter=decoder_lens_names(self.model))
            _, patterns = self.model.run_with_cache(**kwargs, names_filter=_data.pattern_names(self.model))
        lens = logit_lens_of_cache(
            self.model, cache, self.tf, top_k=5, n_future=0, keep_logits=True
        )  # no future ranks: the page shows none
        lp = torch.log_softmax(lens.logits[-1].float(), -1).gather(-1, lens.tokens[:, None].to(lens.logits.device))
        lens.logits = None  # [layer, step, vocab]: not kept with the session
        columns = self.view.data["audio_attention"]["columns"]
        audio_att, _ = _data.attention_sections_of_cache(
            self.model, patterns, self.tf, len(self.wave), len(self.steps), max_audio_columns=columns
        )
        return {"logit_lens": _data.logit_lens_section(lens), "audio_attention": audio_att}, [
            float(x) for x in lp[:, 0].cpu()
        ]

    def teacher_forced(self, specs: Any) -> dict[str, Any]:
        """The clean transcript forced through the intervened model: each token's log-prob before and
        after, the logit lens and the attention over the audio (same layout as the page's clean data)."""
        with self.lock:
            norm = self.validate(specs)
            views, after = self._forced(norm)
        return {
            "interventions": norm,
            "logprobs_before": self.clean_logprobs,
            "logprobs_after": after,
            "sum_before": float(sum(self.clean_logprobs)),
            "sum_after": float(sum(after)),
            **views,
        }

    @torch.no_grad()
    def transcribe(
        self,
        specs: Any,
        on_step: Callable[[int], None] | None = None,
        on_tokens: Callable[[list[int], str], None] | None = None,
    ) -> dict[str, Any]:
        """Greedy re-transcription with the interventions live at every decoding step (``model.transcribe``),
        and its word diff against the clean transcript. ``on_step(n)`` after each decoder call;
        ``on_tokens(ids, text)`` with the transcript so far each time a step adds a token (:class:`TokenStream`)."""
        from hooked_asr.explore.data import token_strings

        with self.lock:
            norm = self.validate(specs)
            count = [0]

            def step(x: torch.Tensor, hook: Any) -> None:
                count[0] += 1
                if on_step:
                    on_step(count[0])

            hooks = [("decoder.hook_embed", step)]
            if on_tokens is not None:
                stream = TokenStream(self.model, lambda ids: on_tokens(ids, self.model.to_string(ids)))
                hooks.append(("decoder.hook_embed", stream.hook))
            with self._applied(norm), self.model.hooks(fwd_hooks=hooks):
                out = self.model.transcribe(self.wave, **self._lang())
        return {
            "interventions": norm,
            "text": out.text,
            "clean_text": self.clean_text,
            "diff": word_diff(self.clean_text, out.text),
            "tokens": [int(t) for t in out.tokens],
            "token_strs": token_strings(self.model, list(out.tokens)),
            "token_logprobs": [float(x) for x in out.token_logprobs],
            "decoder_calls": count[0],
        }

    def to_python(self, specs: Any) -> str:
        """Python that reproduces :meth:`teacher_forced`'s log-probs and :meth:`transcribe`'s text for
        this list with the public API (it reads the window's samples from this session's WAV)."""
        from hooked_asr.explore.live_export import session_code

        return session_code(self, self.validate(specs))

    def _sae_folder(self) -> str:
        """Where the exported code loads the SAE from: the folder it was loaded from, else a copy saved
        in the session's folder."""
        if self.sae_path is None:
            from hooked_asr.sae.model import save_sae

            folder = self.workdir / "sae"
            save_sae(self.sae, folder)
            self.sae_path = str(folder)
        return self.sae_path

    def _probe_file(self) -> str:
        """Where the exported code loads the probe from (a copy in the session's folder if it came as an object)."""
        if self.probe_path is None:
            self.probe_path = str(self.probe.save(self.workdir / "probe"))
        return self.probe_path

    # ---- jobs (long work with progress) --------------------------------------------------------
    @property
    def jobs(self) -> dict[str, dict[str, Any]]:
        return self.runner.jobs

    def start_job(self, kind: str, fn: Callable[[Callable[..., None]], Any]) -> str:
        """Run ``fn(report)`` in a thread; ``report(message, step=None, **extra)`` updates what :meth:`job` shows."""
        return self.runner.start(kind, fn)

    def job(self, jid: Any) -> dict[str, Any]:
        return self.runner.get(jid)

    def start_transcribe(self, specs: Any) -> str:
        """A re-transcription job whose ``partial`` (text) and ``partial_tokens`` grow as it decodes."""
        self.validate(specs)  # refuse a bad list now, not in the thread
        limit = int(getattr(self.model.cfg.decoder, "n_ctx", 448)) // 2
        return self.start_job(
            "transcribe",
            lambda report: self.transcribe(
                specs,
                on_step=lambda n: report(f"decoding: step {n} (at most ~{limit})", n, limit=limit),
                on_tokens=lambda ids, text: report(
                    f"decoding: step {len(ids) + 1} (at most ~{limit})", partial=text, partial_tokens=len(ids)
                ),
            ),
        )

    def start_upload(
        self, data: bytes, start: float = 0.0, window: float | None = None, name: str = "upload", role: str = "clip"
    ) -> str:
        """Uploaded bytes as the clip (``role='clip'``: a new clean view) or as the other clip (``'other'``)."""
        if role not in ("clip", "other"):
            raise LiveError(f"an upload is the 'clip' or the 'other' clip, got {role!r}")
        wave = decode_wav_bytes(data)
        if role == "other":
            pick_window(wave, start, None, 1e9)  # refuse a start outside it now

            def other(report: Callable[..., None]) -> dict[str, Any]:
                report("reading the other clip")
                self.set_other(wave, start=start, name=name)
                return self.state()

            return self.start_job("audio", other)

        def work(report: Callable[..., None]) -> dict[str, Any]:
            report("reading the audio")
            self.set_audio(wave, start=start, window=window, name=name, progress=report)
            return self.state()

        return self.start_job("audio", work)

    def start_window(self, start: float, window: float | None) -> str:
        def work(report: Callable[..., None]) -> dict[str, Any]:
            self.set_window(start, window, progress=report)
            return self.state()

        return self.start_job("audio", work)

    def state(self) -> dict[str, Any]:
        from hooked_asr.audio import SAMPLE_RATE

        return {
            "name": self.name,
            "text": self.clean_text,
            "start": self.start,
            "duration": self.duration,
            "total": len(self.full_wave) / SAMPLE_RATE,
            "model": self.model_name,
            "methods": self.methods(),
            "prompt_len": self.tf.prompt_len,
            "sae": None if self.sae is None else {"hook": self.sae.cfg.hook_name, "d_sae": int(self.sae.d_sae)},
            "probe": None
            if self.probe is None
            else {"hook": self.probe_hook, "classes": [str(c) for c in self.probe.classes]},
            "other": None
            if self.other is None
            else {"name": self.other_name, "duration": len(self.other) / SAMPLE_RATE},
        }

    # ---- the one dispatcher ------------------------------------------------------------------------
    def handle(self, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Answer one documented action (JSON in, JSON out): ``state``, ``teacher_forced``, ``transcribe``
        (returns a job), ``job``, ``export``, ``window`` (a job), ``upload_base64`` (widget uploads, ``as``:
        ``clip`` or ``other``; a job)."""
        if not isinstance(body, Mapping):
            raise LiveError("the request body must be a JSON object")
        if action == "state":
            return self.state()
        if action == "teacher_forced":
            return self.teacher_forced(body.get("interventions", []))
        if action == "transcribe":
            return {"job": self.start_transcribe(body.get("interventions", []))}
        if action == "job":
            return self.job(body.get("id"))
        if action == "export":
            return {"code": self.to_python(body.get("interventions", []))}
        if action == "window":
            start, window = body.get("start", 0.0), body.get("window")
            pick_window(self.full_wave, start, window)  # refuse now
            return {"job": self.start_window(start, window)}
        if action == "upload_base64":
            import base64

            raw = body.get("data")
            if not isinstance(raw, str):
                raise LiveError("upload_base64 needs 'data': the file as base64")
            name = str(body.get("name") or "upload")[:80]
            job = self.start_upload(
                base64.b64decode(raw), body.get("start", 0.0), body.get("window"), name, str(body.get("as", "clip"))
            )
            return {"job": job}
        raise LiveError(
            f"unknown action {action!r}: one of state, teacher_forced, transcribe, job, export, window, upload_base64"
        )

    # ---- the page ----------------------------------------------------------------------------------
    def page(self, config: Mapping[str, Any] | None = None) -> str:
        """The explorer page of the clean view with the live panel, as one HTML string. ``config``
        goes to the page's script as ``window.HA_LIVE`` (transport, limits)."""
        from hooked_asr.explore.view import json_for_script, static_text

        html = self.view.to_html()
        cfg = dict(config or {})
        cfg["state"] = self.state()
        extra = (
            f"<style>{static_text('live.css')}</style>\n<script>window.HA_LIVE = {json_for_script(cfg)};</script>\n"
            f"<script>{static_text('live.js')}</script>\n"
        )
        i = html.rindex("</body>")
        html = html[:i] + extra + html[i:]
        # no favicon request: it would carry no token and be refused
        return html.replace("<head>", '<head><link rel="icon" href="data:,">', 1)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


__all__ = ["LiveSession", "word_diff"]
