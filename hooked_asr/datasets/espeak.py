"""Speech without a network: a thin ctypes wrapper over libespeak-ng.

The library and its voice data come from the ``espeakng-loader`` PyPI package (Debian's
``libespeak-ng1`` is the fallback). espeak-ng is a process-global C library, so every
call goes through one lock. Audio is synthesised at espeak's 22050 Hz and resampled to
16 kHz, the rate every model here reads.
"""

from __future__ import annotations

import ctypes
import difflib
import os
import re
import struct
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from hooked_asr.audio import SAMPLE_RATE

ESPEAK_RATE = 22050
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH = 1, 3  # espeak_PARAMETER ids
_RAND_SEED = 1
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

_lock = threading.RLock()
_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(-[a-z0-9]+)*")
_MAX_LANGUAGE_PRIORITY = 30  # espeak's voice files use small priorities (1-10)


class EspeakError(RuntimeError):
    """espeak-ng is unavailable or rejected a request."""


class _VoiceStruct(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


class _Event(ctypes.Structure):
    """libespeak-ng's ``espeak_EVENT`` (speak_lib.h); a list of them ends with type 0."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_int64),
    ]


_EVENT_WORD, _EVENT_END = 1, 5


class _Espeak:
    def __init__(self) -> None:
        lib_path, data_path = self._locate()
        self.lib = ctypes.CDLL(lib_path)
        self.lib.espeak_Initialize.restype = ctypes.c_int
        rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode() if data_path else None, 0)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate}) with data at {data_path}")
        self.rate = rate
        self.chunks: list[np.ndarray] = []
        self.events: list[tuple[int, int, int, int]] = []  # (type, text_position (1-based), length, sample)
        self._cb = _CALLBACK(self._collect)  # kept alive on self: C holds only the pointer
        self.lib.espeak_SetSynthCallback(self._cb)
        self.lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        self.lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_VoiceStruct))
        # espeak-ng seeds its own noise generator (breath in the +f variants) from the clock at
        # start-up; reseeding before each utterance makes the samples the same in every process.
        # Builds before 1.51 have no such generator (and no such call).
        self.set_rand_seed = getattr(self.lib, "espeak_ng_SetRandSeed", None)
        if self.set_rand_seed is not None:
            self.set_rand_seed.argtypes = [ctypes.c_long]

    @staticmethod
    def _locate() -> tuple[str, str | None]:
        try:
            import espeakng_loader

            return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
        except Exception as e:  # missing package or a broken wheel: try the system library
            for cand in [
                "/usr/lib/x86_64-linux-gnu/libespeak-ng.so.1",
                "/usr/lib/aarch64-linux-gnu/libespeak-ng.so.1",
                "/usr/lib/libespeak-ng.so.1",
            ]:
                if Path(cand).exists():
                    return cand, None
            raise EspeakError(
                f"espeak-ng is not available ({e}). Install it with `pip install espeakng-loader` "
                "(or `apt-get install espeak-ng`)"
            ) from None

    def _collect(self, wav: ctypes.POINTER(ctypes.c_short), n: int, events: ctypes.c_void_p) -> int:
        if n > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        if events:
            ev = ctypes.cast(events, ctypes.POINTER(_Event))
            i = 0
            while ev[i].type != 0:
                if ev[i].type in (_EVENT_WORD, _EVENT_END):
                    self.events.append((ev[i].type, ev[i].text_position, ev[i].length, ev[i].sample))
                i += 1
        return 0

    def set_voice(self, voice: str) -> None:
        if self.lib.espeak_SetVoiceByName(voice.encode()) == 0:
            return
        # A language code ("en-gb") names no voice file; the voice that lists it does ("en").
        base, plus, variant = voice.partition("+")
        alias = _language_voices().get(base.lower())
        if alias is None or self.lib.espeak_SetVoiceByName(f"{alias}{plus}{variant}".encode()) != 0:
            names = list_voices()
            close = difflib.get_close_matches(voice, names, n=5, cutoff=0.5)
            raise EspeakError(
                f"unknown espeak-ng voice {voice!r}"
                + (f"; close: {', '.join(close)}" if close else "")
                + " (hooked_asr.datasets.espeak.list_voices() lists all; variants look like 'en-us+f3')"
            )


# A word's edges: 5-ms frames quieter than this fraction of the utterance's peak RMS (an amplitude, not a time).
WORD_EDGE_SILENCE = 1 / 50


@lru_cache(maxsize=1)
def _engine() -> _Espeak:
    return _Espeak()


def synthesize(
    text: str, voice: str = "en-us", rate: int = 160, pitch: int | None = None, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Speak ``text`` with an espeak-ng ``voice`` (e.g. ``en-us``, ``en-gb-scotland``, ``fr``,
    ``en-us+f3`` for a female variant) at ``rate`` words per minute; float32 mono in [-1, 1].

    The same arguments always give the same samples: espeak-ng keeps waveform state between
    utterances, and voice settings between voices, in static variables that no API call
    resets (a second call differs from the first), so each utterance is synthesised in a
    forked child whose engine has never spoken nor loaded a voice, with espeak-ng's noise
    generator (seeded from the clock at start-up) reseeded. Where ``os.fork`` is unavailable
    it runs in-process.
    """
    return _synthesize(text, voice, rate, pitch, sample_rate, False)[0]


def synthesize_words(
    text: str,
    voice: str = "en-us",
    rate: int = 160,
    pitch: int | None = None,
    sample_rate: int = SAMPLE_RATE,
    silence: float = WORD_EDGE_SILENCE,
    pause: float = 0.1,
) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """:func:`synthesize` with each word's time: ``(audio, [(word, start_s, end_s), ...])``.

    Times come from espeak-ng's own word events (``espeakEVENT_WORD``: the sample where the
    synthesiser starts the word's phonemes), so they hold for the very audio returned. An event
    fires where the word's phoneme stream starts, a pause before it included (a sentence's first
    word starts where the previous sentence ended), so a silent run longer than ``pause`` seconds
    (5-ms frames whose RMS is under ``silence`` x the utterance's peak) is cut off the word's start
    and end; shorter silences (stop closures) stay in the word. A word ends where the next one
    starts unless a pause separates them. Words are as espeak reports them (no punctuation).
    """
    return _synthesize(text, voice, rate, pitch, sample_rate, True, silence, pause)


def _word_spans(
    text: str,
    audio: np.ndarray,
    events: list[tuple[int, int, int, int]],
    engine_rate: int,
    sample_rate: int,
    silence: float = WORD_EDGE_SILENCE,
    pause: float = 0.1,
) -> list[tuple[str, float, float]]:
    hop = max(1, sample_rate // 200)  # 5-ms frames
    n = len(audio) // hop
    rms = np.sqrt((audio[: n * hop].astype(np.float64).reshape(n, hop) ** 2).mean(1)) if n else np.zeros(0)
    loud = rms > silence * (rms.max() if n else 1.0)
    long_run = max(1, int(round(pause * sample_rate / hop)))
    to_frame = sample_rate / engine_rate / hop
    raw = text.encode("utf-8")
    marks = [(t, int(pos), int(length), min(n, int(round(smp * to_frame)))) for t, pos, length, smp in events]
    spans = []
    for i, (t, pos, length, f0) in enumerate(marks):
        if t != _EVENT_WORD:
            continue
        f1 = max(f0, marks[i + 1][3] if i + 1 < len(marks) else n)
        on = np.nonzero(loud[f0:f1])[0]
        if not len(on):  # spoken inaudibly (or zero length): no timing to trust
            continue
        a = f0 + on[0] if on[0] > long_run else f0
        b = f0 + on[-1] + 1 if f1 - (f0 + on[-1] + 1) > long_run else f1
        word = raw[pos - 1 : pos - 1 + length].decode("utf-8", errors="replace")
        spans.append((word, float(a * hop / sample_rate), float(b * hop / sample_rate)))
    return spans


def _synthesize(
    text: str,
    voice: str,
    rate: int,
    pitch: int | None,
    sample_rate: int,
    words: bool,
    silence: float = WORD_EDGE_SILENCE,
    pause: float = 0.1,
) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    if not text.strip():
        raise ValueError("text is empty: nothing to synthesise")
    if not hasattr(os, "fork"):
        audio, events, er = _synthesize_here(text, voice, rate, pitch, sample_rate, with_events=True)
        return audio, (_word_spans(text, audio, events, er, sample_rate, silence, pause) if words else [])
    with _lock:
        # The parent loads the engine and the resampler but never speaks, nor loads a voice:
        # a voice (its variant especially) leaves settings behind that the next voice keeps.
        _engine()
        import scipy.signal  # noqa: F401

        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: speak once, send the samples, exit without running Python's cleanup
            code = 0
            try:
                os.close(r)
                _reply(w, lambda: _pack(*_synthesize_here(text, voice, rate, pitch, sample_rate, with_events=True)))
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        try:
            kind, body = _recv(r)
        except EOFError:
            kind, body = b"", b""
        finally:
            os.close(r)
        _, status = os.waitpid(pid, 0)
    if not kind or status != 0:
        raise EspeakError(f"the espeak-ng worker process failed (status {status}) for {text[:40]!r}")
    audio, events, engine_rate = _unpack(_answer(kind, body))
    return audio, (_word_spans(text, audio, events, engine_rate, sample_rate, silence, pause) if words else [])


def _pack(audio: np.ndarray, events: list[tuple[int, int, int, int]], engine_rate: int) -> bytes:
    ev = np.asarray(events, dtype=np.int64).reshape(-1, 4)
    return struct.pack("<II", len(ev), engine_rate) + ev.tobytes() + audio.astype(np.float32).tobytes()


def _unpack(body: bytes) -> tuple[np.ndarray, list[tuple[int, int, int, int]], int]:
    n, engine_rate = struct.unpack("<II", body[:8])
    ev = np.frombuffer(body[8 : 8 + 32 * n], dtype=np.int64).reshape(n, 4)
    audio = np.frombuffer(body[8 + 32 * n :], dtype=np.float32).copy()
    return audio, [tuple(int(x) for x in row) for row in ev], engine_rate


def _synthesize_here(
    text: str, voice: str, rate: int, pitch: int | None, sample_rate: int, with_events: bool = False
) -> Any:
    from scipy.signal import resample_poly

    with _lock:
        e = _engine()
        e.set_voice(voice)
        e.lib.espeak_SetParameter(_RATE, int(rate), 0)
        if pitch is not None:
            e.lib.espeak_SetParameter(_PITCH, int(pitch), 0)
        e.chunks, e.events = [], []
        if e.set_rand_seed is not None:
            e.set_rand_seed(_RAND_SEED)
        raw = text.encode("utf-8")
        err = e.lib.espeak_Synth(raw, len(raw) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if pitch is not None:
            e.lib.espeak_SetParameter(_PITCH, 50, 0)  # the default, so the next call is unaffected
        chunks, e.chunks = e.chunks, []
        events, e.events = e.events, []
    if err != 0 or not chunks:
        raise EspeakError(f"espeak-ng produced no audio for {text[:40]!r} (error {err})")
    audio = np.concatenate(chunks).astype(np.float32) / 32768.0
    if sample_rate != e.rate:
        import math

        g = math.gcd(sample_rate, e.rate)
        audio = resample_poly(audio, sample_rate // g, e.rate // g).astype(np.float32)
    audio = np.clip(audio, -1.0, 1.0)
    return (audio, events, e.rate) if with_events else audio


def phonemize(text: str, voice: str = "en-us") -> str:
    """IPA phonemes of ``text`` as espeak-ng pronounces it with ``voice``.

    Runs in one long-lived forked worker: text-to-phoneme calls change espeak-ng's state,
    and this process's engine must stay as it was when loaded, so that every
    :func:`synthesize` child starts from the same state.
    """
    if not hasattr(os, "fork"):
        return _phonemize_here(text, voice)
    with _lock:
        return _phoneme_worker().ask(voice, text)


def _phonemize_here(text: str, voice: str) -> str:
    with _lock:
        e = _engine()
        e.set_voice(voice)
        buf = ctypes.c_char_p(text.encode("utf-8"))
        ptr = ctypes.pointer(buf)
        out = []
        # espeak_TextToPhonemes advances the pointer one clause at a time until it is NULL.
        while ptr.contents.value:
            res = e.lib.espeak_TextToPhonemes(ptr, _CHARS_UTF8, 0x02)  # 0x02: IPA
            if res:
                out.append(res.decode("utf-8"))
    return " ".join(s.strip() for s in out if s.strip())


def _send(fd: int, kind: bytes, body: bytes) -> None:
    data = kind + struct.pack("<I", len(body)) + body
    while data:
        data = data[os.write(fd, data) :]


def _recv(fd: int) -> tuple[bytes, bytes]:
    def exactly(n: int) -> bytes:
        chunks = b""
        while len(chunks) < n:
            part = os.read(fd, n - len(chunks))
            if not part:
                raise EOFError
            chunks += part
        return chunks

    head = exactly(5)
    return head[:1], exactly(struct.unpack("<I", head[1:])[0])


def _reply(fd: int, compute: Callable[[], bytes]) -> None:
    """In a child: send ``compute()``'s bytes, or the error it raised, for :func:`_answer`."""
    try:
        _send(fd, b"A", compute())
    except Exception as e:  # noqa: BLE001 - sent to the parent, which raises it
        _send(fd, b"V" if isinstance(e, ValueError) else b"E", str(e).encode())


def _answer(kind: bytes, body: bytes) -> bytes:
    """In the parent: the bytes a child sent with :func:`_reply`, or its error raised here."""
    if kind == b"A":
        return body
    raise (ValueError if kind == b"V" else EspeakError)(body.decode(errors="replace"))


class _PhonemeWorker:
    """A forked child answering ``(voice, text)`` requests over pipes until its parent exits."""

    def __init__(self) -> None:
        _engine()  # load in the parent (loading is state-neutral) so the child inherits it
        req_r, self.req_w = os.pipe()
        self.res_r, res_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            code = 0
            try:
                os.close(self.req_w)
                os.close(self.res_r)
                while True:
                    try:
                        _, body = _recv(req_r)
                    except EOFError:
                        break
                    voice, _, text = body.decode().partition("\0")
                    _reply(res_w, lambda: _phonemize_here(text, voice).encode())
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(req_r)
        os.close(res_w)

    def ask(self, voice: str, text: str) -> str:
        _send(self.req_w, b"Q", f"{voice}\0{text}".encode())
        try:
            kind, body = _recv(self.res_r)
        except EOFError:
            raise EspeakError("the espeak-ng phoneme worker died; restart the Python process") from None
        return _answer(kind, body).decode()


@lru_cache(maxsize=1)
def _phoneme_worker() -> _PhonemeWorker:
    return _PhonemeWorker()


@lru_cache(maxsize=1)
def _voice_table() -> tuple[tuple[str, tuple[tuple[int, str], ...]], ...]:
    """Every voice espeak-ng lists: (name, ((priority, language code), ...))."""
    table = []
    with _lock:
        voices = _engine().lib.espeak_ListVoices(None)
        i = 0
        while voices[i]:
            v = voices[i].contents
            i += 1
            if not v.identifier:
                continue
            langs = []
            if v.languages:
                # repeated (priority byte, NUL-terminated code), ended by a zero byte
                raw = ctypes.string_at(v.languages, 256)
                pos = 0
                while pos < len(raw) and raw[pos] != 0:
                    end = raw.index(b"\0", pos + 1)
                    code = raw[pos + 1 : end].decode(errors="replace").lower()
                    # This build does not always end the list with a zero byte; what follows is
                    # other memory, so the list ends at the first entry that is not a language.
                    if raw[pos] > _MAX_LANGUAGE_PRIORITY or not _LANGUAGE_CODE.fullmatch(code):
                        break
                    langs.append((raw[pos], code))
                    pos = end + 1
            table.append((Path(v.identifier.decode()).name.lower(), tuple(langs)))
    return tuple(table)


def _voice_names() -> tuple[str, ...]:
    return tuple(sorted({name for name, _ in _voice_table()}))


@lru_cache(maxsize=1)
def _language_voices() -> dict[str, str]:
    """Language code -> the voice that speaks it best (``en-gb`` -> ``en``), from espeak's list."""
    best: dict[str, tuple[int, str]] = {}
    for name, langs in _voice_table():
        for prio, code in langs:
            if code and (code not in best or prio < best[code][0]):
                best[code] = (prio, name)
    return {code: name for code, (_, name) in best.items()}


def list_voices() -> list[str]:
    """Voice names ``synthesize`` accepts (add ``+f1``..``+f5``, ``+m1``.. for variants)."""
    return list(_voice_names())


__all__ = ["ESPEAK_RATE", "EspeakError", "list_voices", "phonemize", "synthesize"]
