"""The int8 fast path against faster-whisper int8, long-form greedy, same run.

    python benchmarks/bench_int8.py [--models whisper-tiny.en whisper-base] [--seconds 100] [--rounds 3]

Per model, on ``--seconds`` of espeak-ng speech (the sentences of ``_models.SENTENCES`` with
0.6 s pauses): ``load_model(name, quantize="int8").transcribe`` and ``load_model(name)`` (fp32)
against faster-whisper ``WhisperModel(compute_type="int8")`` and ``"float32"`` on the same
CTranslate2 checkpoint. All greedy, temperature 0, previous-text conditioning, no VAD, English,
one thread, interleaved rounds, process CPU time (``_timing.interleaved``). Prints the ratios
(goal: int8 path / faster-whisper int8 <= 1.2) and the agreement of the transcripts: WER of each
int8 transcript against its own fp32 one, and ours against faster-whisper's, so a speed-up
never hides a different answer.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _models import long_speech  # noqa: E402  (puts this checkout first on sys.path)
from _timing import interleaved  # noqa: E402

import torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["whisper-tiny.en", "whisper-base"])
    ap.add_argument("--seconds", type=float, default=100.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)

    import hooked_asr
    from faster_whisper import WhisperModel

    from hooked_asr.text import word_error_rate
    from hooked_asr.loading.registry import PYPI_CHECKPOINTS

    audio = long_speech(args.seconds)
    print(f"{len(audio) / 16000:.0f} s of espeak-ng speech, greedy long-form, one thread, {args.rounds} rounds")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            parts, data_dir = PYPI_CHECKPOINTS[name].files()
            d = parts[0].parent
            if len(parts) > 1:  # faster-whisper reads one model.bin: join the parts
                d = Path(tmp) / name
                d.mkdir()
                with open(d / "model.bin", "wb") as out:
                    for p in parts:
                        out.write(p.read_bytes())
                for f in ("config.json", "tokenizer.json", "vocabulary.txt"):
                    if (data_dir / f).exists():
                        (d / f).write_bytes((data_dir / f).read_bytes())
            fp32 = hooked_asr.load_model(name)
            int8 = hooked_asr.load_model(name, quantize="int8")
            fw8 = WhisperModel(str(d), device="cpu", compute_type="int8", cpu_threads=1)
            fw32 = WhisperModel(str(d), device="cpu", compute_type="float32", cpu_threads=1)
            lang = "en" if fp32.cfg.is_multilingual else None
            texts: dict[str, str] = {}

            def ours(model, key):
                def run():
                    texts[key] = model.transcribe(audio, language=lang).text.strip()

                return run

            def theirs(model, key):
                def run():
                    segs, _ = model.transcribe(
                        audio,
                        beam_size=1,
                        temperature=0.0,
                        language="en",
                        vad_filter=False,
                        condition_on_previous_text=True,
                    )
                    texts[key] = "".join(s.text for s in segs).strip()

                return run

            t = interleaved(
                {
                    "int8": ours(int8, "int8"),
                    "fw-int8": theirs(fw8, "fw-int8"),
                    "fp32": ours(fp32, "fp32"),
                    "fw-fp32": theirs(fw32, "fw-fp32"),
                },
                repeats=args.rounds,
                warmup=1,
            )
            row = {
                "model": name,
                "seconds_audio": len(audio) / 16000,
                "clock": t.clock,
                "median_s": {k: t.median(k) for k in t.samples},
                "spread": {k: t.spread(k) for k in t.samples},
                "int8 / faster-whisper int8": t.ratio("int8", "fw-int8"),
                "fp32 / faster-whisper fp32": t.ratio("fp32", "fw-fp32"),
                "int8 / fp32 (ours)": t.ratio("int8", "fp32"),
                "WER(fp32, int8) ours": word_error_rate(texts["fp32"], texts["int8"]),
                "WER(fw fp32, fw int8)": word_error_rate(texts["fw-fp32"], texts["fw-int8"]),
                "WER(fw int8, int8)": word_error_rate(texts["fw-int8"], texts["int8"]),
                "WER(fw fp32, fp32)": word_error_rate(texts["fw-fp32"], texts["fp32"]),
            }
            rows.append(row)
            print(
                f"{name}: "
                + ", ".join(f"{k} {v:.2f} s (spread {row['spread'][k]:.0%})" for k, v in row["median_s"].items())
            )
            for k, v in row.items():
                if " / " in k or k.startswith("WER"):
                    print(f"  {k}: {v:.3f}")
    if args.json:
        from hooked_asr.files import atomic_write_text

        atomic_write_text(args.json, json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
