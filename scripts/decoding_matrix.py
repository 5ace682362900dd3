"""The differential harness: every ``transcribe`` option of ours against openai-whisper itself, on the
same weights (openai-whisper's ``Whisper`` filled from our safetensors), over ~2 min of audio mixing
espeak voices, pauses, white noise and near-silence. Writes the table into docs/decoding.md
(between the ``matrix`` markers) and docs/decoding_matrix.json.

    python scripts/decoding_matrix.py                      # tiny.en and base, the full matrix
    python scripts/decoding_matrix.py --models whisper-tiny.en --seconds 45 --no-write   # a quick look

Each cell: token ids of every kept segment identical to openai-whisper's, or the reason it differs.
"""

from __future__ import annotations

import _common  # noqa: F401  (puts this checkout first on sys.path)

import json
import re
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import hooked_asr
from hooked_asr.datasets.espeak import synthesize
from hooked_asr.files import atomic_write_text
from hooked_asr.loading.openai_whisper import openai_whisper_from_hf_dir, segment_tokens_of_openai, transcribe_both
from hooked_asr.loading.registry import weights_dir
from hooked_asr.text import word_error_rate

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = [
    ("The weather today is sunny with a light breeze from the west.", "en-us"),
    ("Please remember to bring your notebook to the meeting tomorrow.", "en-gb"),
    ("Our train leaves the station at seven in the morning.", "en-us+f3"),
    ("She planted tomatoes and beans in the small garden behind the house.", "en-us"),
    ("The library closes early on Sundays during the summer.", "en-gb-scotland"),
    ("He bought fresh bread and a bottle of milk at the corner shop.", "en-us"),
    ("We walked along the river until the sun went down.", "en-us+f3"),
    ("The children played football in the park after school.", "en-gb"),
    ("My brother is learning to play the piano this year.", "en-us"),
    ("The museum has a new exhibition about ancient boats.", "en-us+f3"),
    ("They painted the kitchen a bright shade of yellow.", "en-gb-scotland"),
    ("A large dog was sleeping under the wooden table.", "en-us"),
    ("The doctor told him to drink more water every day.", "en-gb"),
    ("Our neighbours are moving to a bigger house next month.", "en-us"),
    ("The teacher wrote three questions on the board.", "en-us+f3"),
    ("I left my umbrella on the bus this morning.", "en-us"),
    ("The cake needs another ten minutes in the oven.", "en-gb"),
    ("Birds were singing in the trees outside my window.", "en-us"),
]


def mixed_audio(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech in four voices with pauses of 0.3-3 s, a 4-s white-noise burst and 5 s of near-silence."""
    rng = np.random.default_rng(seed)
    parts, total = [], 0
    for i, (text, voice) in enumerate(SENTENCES * 4):
        parts.append(synthesize(text, voice=voice))
        parts.append(np.zeros(int(16000 * rng.uniform(0.3, 3.0)), np.float32))
        if i == 6:
            parts.append((0.05 * rng.standard_normal(16000 * 4)).astype(np.float32))
        if i == 11:
            parts.append((1e-4 * rng.standard_normal(16000 * 5)).astype(np.float32))
        total = sum(p.size for p in parts)
        if total >= seconds * 16000:
            break
    return np.concatenate(parts)[: int(seconds * 16000)]


CELLS: list[tuple[str, dict]] = [
    ("greedy", dict(temperature=0.0)),
    ("greedy, condition_on_previous_text=False", dict(temperature=0.0, condition_on_previous_text=False)),
    ("beam_size=5", dict(temperature=0.0, beam_size=5)),
    (
        "beam_size=5, condition_on_previous_text=False",
        dict(temperature=0.0, beam_size=5, condition_on_previous_text=False),
    ),
    ("beam_size=5, patience=2", dict(temperature=0.0, beam_size=5, patience=2.0)),
    ("beam_size=5, length_penalty=0.6", dict(temperature=0.0, beam_size=5, length_penalty=0.6)),
    ("beam_size=5, length_penalty=1.0", dict(temperature=0.0, beam_size=5, length_penalty=1.0)),
    ("initial_prompt (text)", dict(temperature=0.0, initial_prompt="Weather, trains and gardens.")),
    (
        "initial_prompt, carry_initial_prompt",
        dict(temperature=0.0, initial_prompt="Weather, trains and gardens.", carry_initial_prompt=True),
    ),
    ("without_timestamps", dict(temperature=0.0, without_timestamps=True)),
    ("word_timestamps", dict(temperature=0.0, word_timestamps=True, alignment_heads="openai")),
    (
        "word_timestamps, punctuations '' / '.,'",
        dict(
            temperature=0.0,
            word_timestamps=True,
            alignment_heads="openai",
            prepend_punctuations="",
            append_punctuations=".,",
        ),
    ),
    (
        "word_timestamps, hallucination_silence_threshold=1",
        dict(temperature=0.0, word_timestamps=True, alignment_heads="openai", hallucination_silence_threshold=1.0),
    ),
    ("clip_timestamps='5,40,60'", dict(temperature=0.0, clip_timestamps="5,40,60")),
    ("temperature fallback (openai default tuple)", dict(temperature=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0))),
    ("fallback, best_of=5, prompt_reset_on_temperature", dict(temperature=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), best_of=5)),
]
MULTILINGUAL_CELLS: list[tuple[str, dict]] = [
    ("language=None (detected)", dict(temperature=0.0, language=None)),
    ("task='translate'", dict(temperature=0.0, task="translate", language=None)),
]


def first_difference(ours: list, theirs: list) -> str:
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            return f"segment {i} (seek {a[0]} vs {b[0]})"
    return f"segment {min(len(ours), len(theirs))} (counts {len(ours)} vs {len(theirs)})"


def run_cell(model, reference, audio, options: dict) -> dict:
    torch.manual_seed(0)
    t0 = time.perf_counter()
    ours, theirs = transcribe_both(model, reference, audio, **options)
    seconds = time.perf_counter() - t0
    a = [(s.seek, s.tokens) for s in ours.segments]
    b = segment_tokens_of_openai(theirs)
    row = {
        "identical": a == b,
        "wer": word_error_rate(theirs["text"], ours.text or ""),
        "seconds": round(seconds, 1),
        "segments": len(a),
    }
    if options.get("word_timestamps") and a == b:
        ow = [w for s in ours.segments for w in (s.words or [])]
        tw = [w for s in theirs["segments"] for w in s.get("words", [])]
        if len(ow) == len(tw) and ow:
            row["word_start_max_diff_s"] = round(max(abs(x.start - y["start"]) for x, y in zip(ow, tw)), 3)
    if a != b:
        sampled = isinstance(options.get("temperature"), tuple) and (
            any(s.temperature > 0 for s in ours.segments) or any(s["temperature"] > 0 for s in theirs["segments"])
        )
        if sampled:
            first = next((s.seek for s in ours.segments if s.temperature > 0), None)
            first_theirs = next((s["seek"] for s in theirs["segments"] if s["temperature"] > 0), None)
            row["why"] = (
                f"a window fell back to sampling (ours first at seek {first}, openai at {first_theirs}); "
                "samples differ between implementations (different random streams); identical up to there"
                if a[: _common_prefix(a, b)]
                else "sampled from the first window"
            )
        else:
            row["why"] = "differs at " + first_difference(a, b)
    return row


def _common_prefix(a: list, b: list) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return max(n, 1)


def language_row(model, reference, audio) -> dict:
    from whisper.audio import log_mel_spectrogram, pad_or_trim

    mel = pad_or_trim(log_mel_spectrogram(torch.from_numpy(audio), 80, padding=16000 * 30), 3000)
    _, theirs = reference.detect_language(mel)
    ours = model.language_probabilities(mel[None])[0]
    return {
        "max_abs_diff": max(abs(ours[k] - theirs[k]) for k in theirs),
        "ours": max(ours, key=ours.get),
        "openai": max(theirs, key=theirs.get),
    }


def markdown(results: dict) -> str:
    lines = ["| model | option | identical to openai-whisper | WER(openai, ours) | note |", "|---|---|---|---|---|"]
    for name, rows in results["models"].items():
        for cell, r in rows["cells"].items():
            note = r.get("why", "")
            if "word_start_max_diff_s" in r:
                note = f"word starts within {r['word_start_max_diff_s']} s"
            lines.append(f"| {name} | `{cell}` | {'yes' if r['identical'] else '**no**'} | {r['wer']:.3f} | {note} |")
        if "language" in rows:
            lr = rows["language"]
            lines.append(
                f"| {name} | `detect_language` probabilities | {'yes' if lr['max_abs_diff'] < 1e-4 else '**no**'} "
                f"| | max abs diff {lr['max_abs_diff']:.1e}; {lr['ours']} / {lr['openai']} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--models", nargs="+", default=["whisper-tiny.en", "whisper-base"])
    parser.add_argument("--seconds", type=float, default=130.0, help="length of the mixed audio (default 130)")
    parser.add_argument("--cells", default="", help="only cells whose name contains one of these comma-separated texts")
    parser.add_argument("--no-write", action="store_true", help="print the table; leave docs/ as it is")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    audio = mixed_audio(args.seconds)
    french = np.concatenate(
        [
            synthesize("Bonjour, je voudrais un café et un croissant, s'il vous plaît.", voice="fr"),
            np.zeros(16000 * 2, np.float32),
        ]
        * 6
    )
    json_path = ROOT / "docs" / "decoding_matrix.json"
    results: dict = {"audio_seconds": len(audio) / 16000, "models": {}}
    if json_path.exists() and not args.no_write:  # a partial run (--models, --cells) updates the stored table
        stored = json.loads(json_path.read_text())
        if stored.get("audio_seconds") == results["audio_seconds"]:
            results = stored
    for name in args.models:
        model = hooked_asr.load_model(name)
        reference = openai_whisper_from_hf_dir(weights_dir() / name)
        cells = CELLS + (MULTILINGUAL_CELLS if model.cfg.is_multilingual else [])
        cells = [(c, o) for c, o in cells if any(part in c for part in args.cells.split(","))]
        rows: dict = results["models"].setdefault(name, {"cells": {}})
        for cell, options in tqdm(cells, desc=name):
            clip = french if "language" in options else audio
            rows["cells"][cell] = run_cell(model, reference, clip, options)
        if model.cfg.is_multilingual:
            rows["language"] = language_row(model, reference, french[: 16000 * 8])
    table = markdown(results)
    print(table)
    if not args.no_write:
        atomic_write_text(json_path, json.dumps(results, indent=1) + "\n")
        doc = (ROOT / "docs" / "decoding.md").read_text()
        block = (
            f"<!-- matrix:start (python scripts/decoding_matrix.py; {results['audio_seconds']:.0f} s of mixed audio) -->\n"
            f"{table}\n<!-- matrix:end -->"
        )
        doc = re.sub(r"<!-- matrix:start.*?<!-- matrix:end -->", lambda _: block, doc, flags=re.S)
        atomic_write_text(ROOT / "docs" / "decoding.md", doc)


if __name__ == "__main__":
    main()
