"""The live explorer's backend: one clip, the model, and the documented actions that recompute the view under
interventions. The served page (:mod:`.server`) and the widget (:mod:`.widget`) both call :meth:`LiveSession.handle`.

An intervention is a small JSON object (what the page sends, what :meth:`LiveSession.to_python`
turns into code)::

    {"component": "decoder.blocks.2.cross_attn.head.3", "method": "zero"}            # a~ = 0
    {"component": "encoder.blocks.1.mlp", "method": "mean", "from": 0.5, "to": 1.0}   # a~ = mean over the clip, frames of 0.5-1 s
    {"component": "decoder.blocks.0.attn.head.1", "method": "noise", "tokens": [2, 5]} # a~ = a on white noise, tokens 2-4
    {"component": "decoder.blocks.3.cross_attn.head.0", "method": "mask", "from": 0.4, "to": 0.9}  # the head cannot see 0.4-0.9 s
    {"method": "steer", "feature": 7, "mode": "clamp", "value": 0.0, "from": 0.4, "to": 0.9}      # SAE feature 7 off there

``method``: ``zero`` (:func:`~hooked_asr.patching.zero_ablate`), ``mean`` (:func:`~hooked_asr.patching.mean_ablate`,
the mean over every position of this clip's teacher-forced run), ``noise`` (:func:`~hooked_asr.patching.interpolate`
towards the activation on white noise at the clip's RMS, seed 0, teacher-forced on the clean transcript; positions
the reference lacks stay unpatched) or ``mask`` (:func:`~hooked_asr.patching.attention_masks.mask_attention`).
``alpha`` (default 1): ``a~ = (1 - alpha) a + alpha a_target``. Where: ``from``/``to`` (seconds: encoder frames)
or ``tokens`` ``[a, b)`` (the decoder positions that read those transcript tokens); none: everywhere. ``steer``
(with an SAE) edits one feature at the SAE's hook, error term kept (:func:`~hooked_asr.sae.steering.steer`: ``add``
/ ``scale`` by / ``clamp`` to ``value``; one time range per list). A list composes in order; anything else
(unknown keys, methods or hooks) is refused with a message that names it.

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
import math
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from hooked_asr.explore.live_audio import LiveError, decode_wav_bytes, pick_window
from hooked_asr.explore.live_export import NOISE_SEED
from hooked_asr.files import atomic_write_bytes

METHODS = ("zero", "mean", "noise", "mask", "steer")
SPEC_KEYS = {"component", "method", "alpha", "from", "to", "tokens", "feature", "mode", "value"}
STEER_MODES = ("add", "scale", "clamp")
MAX_INTERVENTIONS = 64
MAX_FINISHED_JOBS = 32


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
        self.lock = threading.RLock()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.set_audio(audio, sampling_rate=sampling_rate, start=start, window=window, name=name)

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
            self.clean_logprobs = self._lens([])[1]
            self._means: dict[str, torch.Tensor] = {}
            self._noise: dict[str, torch.Tensor] = {}

    def _lang(self) -> dict[str, Any]:
        return {"language": self.clean_language} if self.clean_language else {}

    @property
    def duration(self) -> float:
        from hooked_asr.audio import SAMPLE_RATE

        return len(self.wave) / SAMPLE_RATE

    # ---- interventions ---------------------------------------------------------------------------
    def validate(self, specs: Any) -> list[dict[str, Any]]:
        """The intervention list, checked and normalised (see the module docstring); raises :class:`LiveError`."""
        from hooked_asr.patching import parse_component
        from hooked_asr.patching.interventions import position_kind

        if not isinstance(specs, list) or len(specs) > MAX_INTERVENTIONS:
            raise LiveError(
                f"interventions must be a list of at most {MAX_INTERVENTIONS} objects, got {type(specs).__name__}"
            )
        out = []
        for i, s in enumerate(specs):
            if not isinstance(s, Mapping):
                raise LiveError(
                    f"intervention {i} must be an object like {{'component': ..., 'method': 'zero'}}, got {s!r}"
                )
            extra = set(s) - SPEC_KEYS
            if extra:
                raise LiveError(f"intervention {i}: unknown keys {sorted(extra)}; allowed: {sorted(SPEC_KEYS)}")
            comp_s, method = s.get("component"), s.get("method")
            if method == "steer":
                out.append(self._validate_steer(i, s))
                continue
            if set(s) & {"feature", "mode", "value"}:
                raise LiveError(f"intervention {i}: 'feature'/'mode'/'value' belong to method 'steer'")
            if not isinstance(comp_s, str) or not 0 < len(comp_s) <= 200:
                raise LiveError(
                    f"intervention {i}: component must be a string like 'decoder.blocks.0.cross_attn.head.3'"
                )
            if method not in METHODS:
                raise LiveError(f"intervention {i}: method {method!r} is not one of {list(METHODS)}")
            try:
                comp = parse_component(self.model, comp_s)
            except Exception as e:
                raise LiveError(f"intervention {i}: {e}") from None
            alpha = s.get("alpha", 1.0)
            if (
                isinstance(alpha, bool)
                or not isinstance(alpha, (int, float))
                or not (math.isfinite(alpha) and 0 <= alpha <= 10)
            ):
                raise LiveError(f"intervention {i}: alpha must be a number in [0, 10], got {alpha!r}")
            norm: dict[str, Any] = {"component": comp.name, "method": method}
            if alpha != 1.0:
                norm["alpha"] = float(alpha)
            if method == "mask":
                if comp.kind not in ("attn", "cross_attn"):
                    raise LiveError(f"intervention {i}: 'mask' needs an attention (head), got {comp.name!r}")
                unit = "token" if comp.stack == "decoder" and comp.kind == "attn" else "frame"
                if "alpha" in norm:
                    raise LiveError(f"intervention {i}: a mask has no alpha")
            else:
                if comp.hook_name.endswith(("hook_mel", "hook_conv1", "hook_conv2")):
                    raise LiveError(f"intervention {i}: {comp.hook_name} has no position axis to intervene on")
                unit = position_kind(comp.hook_name)
            has_time, has_tokens = "from" in s or "to" in s, "tokens" in s
            if unit == "frame" and has_tokens or unit == "token" and has_time:
                want = "'from'/'to' (seconds)" if unit == "frame" else "'tokens': [a, b] (transcript tokens)"
                raise LiveError(f"intervention {i}: {comp.name} is indexed by {unit}s: give {want}")
            if has_time:
                a, b = s.get("from", 0.0), s.get("to", self.duration)
                if (
                    not all(
                        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in (a, b)
                    )
                    or not 0 <= a < b
                ):
                    raise LiveError(f"intervention {i}: need 0 <= from < to (seconds), got from={a!r} to={b!r}")
                norm["from"], norm["to"] = float(a), float(b)
            if has_tokens:
                tk = s["tokens"]
                if not (
                    isinstance(tk, list)
                    and len(tk) == 2
                    and all(isinstance(x, int) and not isinstance(x, bool) for x in tk)
                    and 0 <= tk[0] < tk[1]
                ):
                    raise LiveError(f"intervention {i}: tokens must be [a, b] with 0 <= a < b, got {tk!r}")
                norm["tokens"] = [int(tk[0]), int(tk[1])]
            if method == "mask" and not (has_time or has_tokens):
                raise LiveError(f"intervention {i}: a mask needs the range it hides: 'from'/'to' seconds or 'tokens'")
            out.append(norm)
        ranges = {(s.get("from"), s.get("to")) for s in out if s["method"] == "steer"}
        if len(ranges) > 1:
            raise LiveError(
                f"every 'steer' of a list shares one time range (one SAE splice), got {sorted(ranges, key=str)}"
            )
        return out

    def _validate_steer(self, i: int, s: Mapping[str, Any]) -> dict[str, Any]:
        if self.sae is None:
            raise LiveError(f"intervention {i}: 'steer' needs an SAE: start the session with sae= (CLI: --sae PATH)")
        hook = self.sae.cfg.hook_name
        if s.get("component", hook) != hook:
            raise LiveError(
                f"intervention {i}: the SAE reads {hook!r}; a steer's component is that hook, got {s.get('component')!r}"
            )
        if set(s) & {"alpha", "tokens"}:
            raise LiveError(
                f"intervention {i}: a steer takes feature, mode, value and from/to, not {sorted(set(s) & {'alpha', 'tokens'})}"
            )
        f, mode, value = s.get("feature"), s.get("mode", "add"), s.get("value", 0.0)
        if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < int(self.sae.d_sae):
            raise LiveError(f"intervention {i}: feature must be an integer in 0..{int(self.sae.d_sae) - 1}, got {f!r}")
        if mode not in STEER_MODES:
            raise LiveError(f"intervention {i}: mode {mode!r} is not one of {list(STEER_MODES)}")
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (math.isfinite(value) and abs(value) <= 1e4)
        ):
            raise LiveError(f"intervention {i}: value must be a finite number with |value| <= 1e4, got {value!r}")
        norm: dict[str, Any] = {
            "component": hook,
            "method": "steer",
            "feature": int(f),
            "mode": mode,
            "value": float(value),
        }
        if "from" in s or "to" in s:
            a, b = s.get("from", 0.0), s.get("to", self.duration)
            if (
                not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in (a, b))
                or not 0 <= a < b
            ):
                raise LiveError(f"intervention {i}: need 0 <= from < to (seconds), got from={a!r} to={b!r}")
            norm["from"], norm["to"] = float(a), float(b)
        return norm

    def _positions(self, spec: Mapping[str, Any]) -> range | None:
        from hooked_asr.patching.attention_masks import frames_between

        if "from" in spec:
            return frames_between(spec["from"], spec["to"])
        if "tokens" in spec:
            p = self.tf.prompt_len
            return range(p + spec["tokens"][0], p + spec["tokens"][1])
        return None

    def _reference(self, method: str, hook: str) -> Mapping[str, torch.Tensor]:
        """The clip's mean at ``hook``, or its activation on white noise (cached per hook)."""
        from hooked_asr.patching import mean_activations, record_reference
        from hooked_asr.patching.references import white_noise_like

        store = self._means if method == "mean" else self._noise
        if hook not in store:
            if method == "mean":
                store[hook] = mean_activations(self.model, [self.tf.kwargs], [hook])[hook]
            else:
                noise = white_noise_like(self.wave, seed=NOISE_SEED)
                kw = self.model.teacher_forced_inputs(
                    noise, continuation=self.steps, allow_silence=True, **self._lang()
                ).kwargs
                store[hook] = record_reference(self.model, kw, [hook])[hook]
        return store

    def interventions(self, specs: Any) -> list[Any]:
        """The :mod:`hooked_asr.patching` objects of a validated list."""
        from hooked_asr.patching import interpolate, mean_ablate, parse_component, zero_ablate
        from hooked_asr.patching.attention_masks import mask_attention

        out = []
        for s in self.validate(specs):
            if s["method"] == "steer":
                continue  # applied by _applied(), around these
            comp, pos, alpha = s["component"], self._positions(s), s.get("alpha", 1.0)
            hook = parse_component(self.model, comp).hook_name
            if s["method"] == "zero":
                out.append(zero_ablate(comp, alpha=alpha, positions=pos))
            elif s["method"] == "mean":
                out.append(mean_ablate(comp, self._reference("mean", hook), alpha=alpha, positions=pos))
            elif s["method"] == "noise":
                out.append(interpolate(comp, self._reference("noise", hook), alpha, positions=pos, missing="keep"))
            else:
                out.append(mask_attention(comp, pos))
        return out

    # ---- actions ----------------------------------------------------------------------------------
    def _steer_mask(self, steers: Sequence[Mapping[str, Any]]) -> torch.Tensor | None:
        """The frames a list's steering applies to (``None``: all), over the SAE hook's frames."""
        from hooked_asr.patching.attention_masks import frames_between

        if not steers or "from" not in steers[0]:
            return None
        mask = torch.zeros(int(self.model.cfg.encoder.n_ctx), dtype=torch.bool)
        mask[[f for f in frames_between(steers[0]["from"], steers[0]["to"]) if f < len(mask)]] = True
        return mask

    @contextlib.contextmanager
    def _applied(self, norm: Sequence[Mapping[str, Any]]) -> Iterator[None]:
        """SAE steering (if any), then the patching interventions, live inside the block."""
        from hooked_asr.patching import patched

        steers = [s for s in norm if s["method"] == "steer"]
        with contextlib.ExitStack() as stack:
            if steers:
                from hooked_asr.sae.steering import FeatureIntervention, steer

                edits = [FeatureIntervention(s["feature"], s["mode"], s["value"]) for s in steers]
                stack.enter_context(steer(self.model, self.sae, edits, frame_mask=self._steer_mask(steers)))
            stack.enter_context(patched(self.model, self.interventions(norm)))
            yield

    @torch.no_grad()
    def _lens(self, norm: Sequence[Mapping[str, Any]]) -> tuple[Any, list[float]]:
        """The logit lens of the clean transcript under ``ivs`` and ``log p(step_s | prompt, steps_<s)`` of each
        of its steps (end of text included): the last layer's lens is the model's output (``ln_final`` then
        the unembedding), so one forward gives both."""
        from hooked_asr.lens import logit_lens

        with self._applied(norm):
            lens = logit_lens(self.model, self.wave, tokens=self.steps[:-1], top_k=5, keep_logits=True, **self._lang())
        lp = torch.log_softmax(lens.logits[-1].float(), -1).gather(-1, lens.tokens[:, None].to(lens.logits.device))[
            :, 0
        ]
        lens.logits = None  # [layer, step, vocab]: not kept with the session
        return lens, [float(x) for x in lp.cpu()]

    @torch.no_grad()
    def teacher_forced(self, specs: Any) -> dict[str, Any]:
        """The clean transcript forced through the intervened model: each token's log-prob before and
        after, the logit lens and the attention over the audio (same layout as the page's clean data)."""
        from hooked_asr.explore import data as _data

        with self.lock:
            norm = self.validate(specs)
            lens, after = self._lens(norm)
            with self._applied(norm):
                audio_att, _ = _data.attention_sections(
                    self.model,
                    self.wave,
                    self.steps,
                    self.clean_language,
                    len(self.steps),
                    max_audio_columns=self.view.data["audio_attention"]["columns"],
                )
        return {
            "interventions": norm,
            "logprobs_before": self.clean_logprobs,
            "logprobs_after": after,
            "sum_before": float(sum(self.clean_logprobs)),
            "sum_after": float(sum(after)),
            "logit_lens": _data.logit_lens_section(lens),
            "audio_attention": audio_att,
        }

    @torch.no_grad()
    def transcribe(self, specs: Any, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Greedy re-transcription with the interventions live at every decoding step (``model.transcribe``),
        and its word diff against the clean transcript. ``on_step(n)`` after each decoder call."""
        from hooked_asr.explore.data import token_strings

        with self.lock:
            norm = self.validate(specs)
            count = [0]

            def step(x: torch.Tensor, hook: Any) -> None:
                count[0] += 1
                if on_step:
                    on_step(count[0])

            with self._applied(norm), self.model.hooks(fwd_hooks=[("decoder.hook_embed", step)]):
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

    # ---- jobs (long work with progress) --------------------------------------------------------
    def start_job(self, kind: str, fn: Callable[[Callable[..., None]], Any]) -> str:
        """Run ``fn(report)`` in a thread; ``report(message, step=None)`` updates what :meth:`job` shows."""
        jid = uuid.uuid4().hex[:12]
        job: dict[str, Any] = {"id": jid, "kind": kind, "state": "running", "message": "queued", "step": 0}
        finished = [k for k, j in self.jobs.items() if j["state"] != "running"]
        for k in finished[: max(0, len(finished) - MAX_FINISHED_JOBS)]:  # a long session keeps the newest results only
            self.jobs.pop(k, None)
        self.jobs[jid] = job

        def report(message: str, step: int | None = None) -> None:
            job["message"] = message
            if step is not None:
                job["step"] = step

        def run() -> None:
            try:
                job["result"] = fn(report)
                job["state"] = "done"
            except Exception as e:  # shown in the page; the server keeps serving
                job["state"], job["error"] = "error", f"{type(e).__name__}: {e}"

        threading.Thread(target=run, daemon=True, name=f"hooked-asr-live-{kind}").start()
        return jid

    def job(self, jid: Any) -> dict[str, Any]:
        if not isinstance(jid, str) or jid not in self.jobs:
            raise LiveError(f"no job {jid!r}")
        return {k: v for k, v in self.jobs[jid].items()}

    def start_transcribe(self, specs: Any) -> str:
        self.validate(specs)  # refuse a bad list now, not in the thread
        limit = int(getattr(self.model.cfg.decoder, "n_ctx", 448)) // 2
        return self.start_job(
            "transcribe",
            lambda report: self.transcribe(
                specs, on_step=lambda n: report(f"decoding: step {n} (at most ~{limit})", n)
            ),
        )

    def start_upload(self, data: bytes, start: float = 0.0, window: float | None = None, name: str = "upload") -> str:
        wave = decode_wav_bytes(data)

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
            "methods": [m for m in METHODS if m != "steer" or self.sae is not None],
            "prompt_len": self.tf.prompt_len,
            "sae": None if self.sae is None else {"hook": self.sae.cfg.hook_name, "d_sae": int(self.sae.d_sae)},
        }

    # ---- the one dispatcher ------------------------------------------------------------------------
    def handle(self, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Answer one documented action (JSON in, JSON out): ``state``, ``teacher_forced``, ``transcribe``
        (returns a job), ``job``, ``export``, ``window`` (a job), ``upload_base64`` (widget uploads; a job)."""
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
            return {
                "job": self.start_upload(
                    base64.b64decode(raw),
                    body.get("start", 0.0),
                    body.get("window"),
                    str(body.get("name") or "upload")[:80],
                )
            }
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


__all__ = ["LiveError", "LiveSession", "METHODS", "decode_wav_bytes", "pick_window", "word_diff"]
