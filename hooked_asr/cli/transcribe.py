"""``hooked-asr transcribe AUDIO...``: greedy transcripts with per-token log-probabilities."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transcribe", help="transcribe audio files (or a sentence spoken by espeak-ng with --say)")
    p.add_argument("audio", nargs="*", help="wav/flac/ogg files")
    p.add_argument("--say", default=None, help="synthesise this sentence with espeak-ng and transcribe it")
    p.add_argument("--voice", default="en-us", help="espeak-ng voice for --say")
    p.add_argument("--model", default=None, help="model name or path (default: whisper-tiny.en)")
    p.add_argument("--language", default=None, help="language code for multilingual models (default: detect)")
    p.add_argument("--json", action="store_true", help="print JSON with tokens and log-probabilities")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hooked_asr.loading.registry import DEFAULT_MODEL, load_model

    if not args.audio and not args.say:
        raise SystemExit("give audio files or --say 'a sentence'")
    model = load_model(args.model or DEFAULT_MODEL)
    inputs: list = list(args.audio)
    if args.say:
        from hooked_asr.datasets.espeak import synthesize

        inputs.append(synthesize(args.say, voice=args.voice))
    for name, audio in zip(args.audio + (["--say"] if args.say else []), inputs):
        out = model.transcribe(audio, language=args.language)
        if args.json:
            print(json.dumps({"input": name, "text": out.text, "language": out.language, "tokens": out.tokens,
                              "token_logprobs": out.token_logprobs, "finished": out.finished}))
        else:
            print(f"{name}: {out.text}   (avg log-prob {out.avg_logprob:.2f})")
    return 0
