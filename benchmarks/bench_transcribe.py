"""Long-form transcription and beam search: hooked_asr vs faster-whisper and Hugging Face, same run.

    python benchmarks/bench_transcribe.py                 # 2 minutes of espeak speech, tiny.en
    python benchmarks/bench_transcribe.py --seconds 600   # the 10-minute file of issue 12 (progress bar)

Prints a table (seconds and ratio ours / reference) and writes it as JSON (``--out``). Long-form:
greedy, temperature 0, previous-text conditioning, openai-whisper's thresholds, no VAD, for all
three. Beam search: ``generate(num_beams=5)`` vs HF ``generate(num_beams=5)`` on one 30-s window, and
long-form ``transcribe(beam_size=5)`` vs faster-whisper (CTranslate2 fp32) and openai-whisper itself
(its ``Whisper`` filled from the same safetensors), interleaved, this process's CPU time, one thread
(``--beam-seconds``, ``--repeats``; the issue-29 target: <= 1.0x faster-whisper). In the same
rounds: the int8 path (``load_model(..., quantize="int8")``) beam 5 vs faster-whisper int8 (target
<= 1.2x), greedy with word timestamps vs faster-whisper fp32's (target <= 1.0x), and with
``--before DIR`` the same three from another checkout (a fresh process each round, timed by its own
process CPU time after a one-window warm-up).
Also reports the WER between the transcripts, so a speed-up never hides a different answer.

    OMP_NUM_THREADS=1 python benchmarks/bench_transcribe.py --seconds 60 --skip-hf --threads 1 --before /tmp/old
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

SENTENCES = [
    "The weather today is sunny with a light breeze from the west.",
    "Please remember to bring your notebook to the meeting tomorrow.",
    "Our train leaves the station at seven in the morning.",
    "She planted tomatoes and beans in the small garden behind the house.",
    "The library closes early on Sundays during the summer.",
    "We walked along the river until the sun went down.",
    "The children played football in the park after school.",
    "The doctor told him to drink more water every day.",
]


def speech(seconds: float) -> np.ndarray:
    from _models import long_speech

    return long_speech(seconds, SENTENCES)


def report(rows: dict, name: str, row: dict) -> None:
    rows[name] = row
    print(
        f"  {name:32s} " + "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
        flush=True,
    )


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="whisper-tiny.en")
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-hf", action="store_true", help="skip HF's long-form generate")
    ap.add_argument("--out", default="bench_transcribe.json")
    ap.add_argument("--beam-seconds", type=float, default=60.0, help="long-form beam-5 audio (0 skips it)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds of the long-form beam rows")
    ap.add_argument(
        "--before", default=None, help="another checkout's root: its beam 5, int8 and word rows in the same rounds"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import hooked_asr
    from hooked_asr.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram
    from hooked_asr.loading.registry import PYPI_CHECKPOINTS, weights_dir
    from hooked_asr.text import word_error_rate

    model = hooked_asr.load_model(args.model)
    audio = speech(args.seconds)
    rows: dict[str, dict] = {}

    t_ours, ours = timed(
        lambda: model.transcribe(audio, language="en" if model.cfg.is_multilingual else None, progress=True)
    )
    report(rows, "long-form, ours", {"seconds": t_ours, "windows": ours.extra.get("n_windows", 1)})

    try:
        from faster_whisper import WhisperModel

        parts, data_dir = PYPI_CHECKPOINTS[model.cfg.name].files()
        d = parts[0].parent if len(parts) == 1 else None
        if d is None:
            raise RuntimeError("faster-whisper needs one model.bin; this checkpoint ships in parts")
        fw = WhisperModel(str(d), device="cpu", compute_type="float32", cpu_threads=args.threads)

        def run_fw():
            segs, _ = fw.transcribe(
                audio, beam_size=1, temperature=0.0, language="en", vad_filter=False, condition_on_previous_text=True
            )
            return "".join(s.text for s in segs).strip()

        t_fw, fw_text = timed(run_fw)
        report(
            rows,
            "long-form, faster-whisper",
            {"seconds": t_fw, "ours / theirs": t_ours / t_fw, "WER(theirs, ours)": word_error_rate(fw_text, ours.text)},
        )
    except Exception as e:  # noqa: BLE001 - a missing reference is reported, not fatal
        report(rows, "long-form, faster-whisper", {"error": str(e)})

    from transformers import WhisperForConditionalGeneration
    from transformers.generation.utils import GenerationMixin

    hf = WhisperForConditionalGeneration.from_pretrained(
        weights_dir() / model.cfg.name, attn_implementation="sdpa"
    ).eval()
    for key in ("lang_to_id", "task_to_id"):  # HF reads an empty dict as "multilingual"
        if getattr(hf.generation_config, key, None) == {}:
            delattr(hf.generation_config, key)
    if not args.skip_hf:
        mel = log_mel_spectrogram(audio, model.cfg.encoder.n_mels, padding=N_SAMPLES)
        n = mel.shape[-1] - N_FRAMES

        def run_hf():
            with torch.no_grad():
                g = hf.generate(
                    input_features=mel[:, :, :n],
                    attention_mask=torch.ones(1, n, dtype=torch.long),
                    return_timestamps=True,
                    condition_on_prev_tokens=True,
                    temperature=0.0,
                    logprob_threshold=-1.0,
                    no_speech_threshold=0.6,
                    compression_ratio_threshold=2.4,
                )
            g = g if isinstance(g, torch.Tensor) else g["sequences"]
            return model.tokenizer.decode(g[0].tolist()).strip()

        t_hf, hf_text = timed(run_hf)
        report(
            rows,
            "long-form, HF generate",
            {"seconds": t_hf, "ours / theirs": t_ours / t_hf, "WER(theirs, ours)": word_error_rate(hf_text, ours.text)},
        )

    feats = model.prepare_features(audio[: 16000 * 25])["input_features"]
    prompt, kw = model.sot_sequence("en" if model.cfg.is_multilingual else None), model.generation_kwargs()
    t_b, b = timed(lambda: model.generate(feats, prompt, num_beams=5, max_new_tokens=100, **kw))
    with torch.no_grad():
        t_hb, hb = timed(
            lambda: GenerationMixin.generate(
                hf,
                input_features=feats,
                decoder_input_ids=torch.tensor([prompt]),
                num_beams=5,
                do_sample=False,
                max_new_tokens=100,
                suppress_tokens=kw["suppress_tokens"],
                begin_suppress_tokens=kw["begin_suppress_tokens"],
                eos_token_id=kw["eos_token_id"],
            )
        )
    report(
        rows,
        "beam search (5 beams, 25 s)",
        {
            "seconds": t_b,
            "HF seconds": t_hb,
            "ours / theirs": t_b / t_hb,
            "same tokens": b.sequences.tolist() == hb.tolist(),
        },
    )
    if args.beam_seconds > 0:
        long_beam(model, args, rows)
    print(f"{model.cfg.name}, {args.seconds:.0f} s of speech, {args.threads} threads")
    with open(args.out, "w") as f:
        json.dump(
            {"model": model.cfg.name, "seconds_of_audio": args.seconds, "threads": args.threads, "rows": rows},
            f,
            indent=2,
        )
    print(f"wrote {args.out}")


# One timed transcription in a fresh process from another checkout (``--before``): it prints its own
# process CPU time, since a child's CPU time is not this process's.
CHILD = r"""
import json, sys, time
import numpy as np
import torch
torch.set_num_threads(1)
root, name, mode, audio_path = sys.argv[1:5]
sys.path.insert(0, root)
import hooked_asr
model = hooked_asr.load_model(name, quantize="int8" if mode == "int8" else None)
audio = np.load(audio_path)
kw = dict(word_timestamps=True) if mode == "words" else dict(beam_size=5)
model.transcribe(audio[: 16000 * 30], temperature=0.0, progress=False, **kw)  # lazy initialisation
t = time.process_time()
text = model.transcribe(audio, temperature=0.0, progress=False, **kw).text
print(json.dumps({"cpu_s": time.process_time() - t, "text": text}))
"""


def long_beam(model, args, rows: dict) -> None:
    """Long-form beam 5 (fp32 and int8) and greedy with word timestamps: ours / faster-whisper /
    openai-whisper (/ another checkout, ``--before``), interleaved rounds, one thread, process CPU time."""
    import os
    import subprocess
    import sys
    import tempfile

    import whisper
    from _timing import interleaved
    from faster_whisper import WhisperModel

    import hooked_asr
    from hooked_asr.loading.openai_whisper import openai_whisper_from_hf_dir
    from hooked_asr.loading.registry import PYPI_CHECKPOINTS, weights_dir
    from hooked_asr.text import word_error_rate

    torch.set_num_threads(1)
    audio = speech(args.beam_seconds)
    lang = "en" if model.cfg.is_multilingual else None
    parts, _ = PYPI_CHECKPOINTS[model.cfg.name].files()
    fw = {
        ct: WhisperModel(str(parts[0].parent), device="cpu", compute_type=ct, cpu_threads=1)
        for ct in ("float32", "int8")
        if len(parts) == 1
    }
    oa = openai_whisper_from_hf_dir(weights_dir() / model.cfg.name)
    int8 = hooked_asr.load_model(model.cfg.name, quantize="int8")
    texts: dict[str, str] = {}

    def ours(m, key, **kw):
        def fn():
            texts[key] = m.transcribe(audio, temperature=0.0, progress=False, language=lang, **kw).text

        return fn

    def faster(ct, key, **kw):
        def fn():
            segs, _ = fw[ct].transcribe(
                audio,
                best_of=1,
                temperature=0.0,
                language="en",
                vad_filter=False,
                condition_on_previous_text=True,
                **kw,
            )
            texts[key] = "".join(s.text for s in segs).strip()

        return fn

    def openai():
        texts["openai-whisper"] = whisper.transcribe(
            oa, audio, beam_size=5, temperature=0.0, fp16=False, language="en"
        )["text"].strip()

    fns = {
        "ours": ours(model, "ours", beam_size=5),
        "openai-whisper": openai,
        "ours int8": ours(int8, "ours int8", beam_size=5),
        "ours words": ours(model, "ours words", word_timestamps=True),
    }
    if fw:
        fns |= {
            "faster-whisper": faster("float32", "faster-whisper", beam_size=5),
            "faster-whisper int8": faster("int8", "faster-whisper int8", beam_size=5),
            "faster-whisper words": faster("float32", "faster-whisper words", beam_size=1, word_timestamps=True),
        }
    child_cpu: dict[str, list[float]] = {}
    if args.before:
        wav = tempfile.NamedTemporaryFile(suffix=".npy", delete=False)
        np.save(wav, audio)
        wav.close()

        def before(mode, key):
            def fn():
                env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=args.before)
                cmd = [sys.executable, "-c", CHILD, args.before, model.cfg.name, mode, wav.name]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if out.returncode:
                    raise RuntimeError(f"--before {mode} failed:\n{out.stderr[-2000:]}")
                got = json.loads(out.stdout.strip().splitlines()[-1])
                child_cpu.setdefault(key, []).append(got["cpu_s"])
                texts[key] = got["text"]

            return fn

        fns |= {
            "before": before("beam", "before"),
            "before int8": before("int8", "before int8"),
            "before words": before("words", "before words"),
        }
    paired = interleaved(fns, repeats=args.repeats)
    for key, cpu in child_cpu.items():  # the child's own CPU time, not this process's wait
        paired.samples[key] = cpu[-args.repeats :]

    def row(name: str, a: str, b: str) -> None:
        if a in fns and b in fns:
            report(
                rows,
                name,
                {
                    "ratio": paired.ratio(a, b),
                    "ratio of mins": min(paired.samples[a]) / min(paired.samples[b]),
                    f"{a} s": paired.median(a),
                    f"{b} s": paired.median(b),
                    "WER": word_error_rate(texts[b], texts[a]),
                    "audio s": args.beam_seconds,
                },
            )

    row("long-form beam 5, ours / faster-whisper fp32", "ours", "faster-whisper")
    row("long-form beam 5, ours / openai-whisper", "ours", "openai-whisper")
    row("long-form beam 5 int8, ours / faster-whisper int8", "ours int8", "faster-whisper int8")
    row("greedy + word timestamps, ours / faster-whisper fp32", "ours words", "faster-whisper words")
    for mode in ("", " int8", " words"):
        row(f"ours{mode} / before{mode}", f"ours{mode}", f"before{mode}")
        row(f"before{mode} / faster-whisper{mode or ' fp32'}", f"before{mode}", f"faster-whisper{mode}")
    rows["spread (max - min) / median"] = {k: paired.spread(k) for k in fns}
    print("  spread:", {k: round(v, 2) for k, v in rows["spread (max - min) / median"].items()})


if __name__ == "__main__":
    main()
