"""``hooked-asr lens AUDIO``: logit lens (per decoder layer, during generation) and encoder lens.

Prints a per-layer table, writes ``<out>/<name>.lens.png`` (heatmap: probability of the chosen
token per layer and step, top-1 token in each cell) and ``<out>/<name>.lens.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hooked_asr.cli._common import add_audio_arguments, add_model_argument, load_model_from_args, one_audio


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lens", help="logit lens and encoder lens of one transcription (table, heatmap PNG, JSON)")
    add_audio_arguments(p, many=False, audio_help="a wav/flac file")
    add_model_argument(p)
    p.add_argument("--language", default=None, help="language code for multilingual models (default: detect)")
    p.add_argument("--top-k", type=int, default=5, help="candidates kept per layer and step (default 5)")
    p.add_argument("--no-encoder-lens", action="store_true", help="skip the encoder lens")
    p.add_argument("--out", default="results/lens/cli", help="folder for the PNG and JSON (default results/lens/cli)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hooked_asr.lens import encoder_lens, logit_lens_generate
    from hooked_asr.loading.registry import DEFAULT_MODEL
    from hooked_asr.plotting import plot_logit_lens

    audio, name = one_audio(args)
    model = load_model_from_args(args)
    lens = logit_lens_generate(model, audio, top_k=args.top_k, language=args.language)
    print(f"transcript: {lens.text}")
    print(f"\nlogit lens during generation (cell: layer's top-1, p(chosen); * = saturation layer)\n{lens.table()}")
    sat = lens.saturation.float()
    print(f"\nmean saturation layer {float(sat.mean()):.2f} of 0-{lens.n_layers - 1}")
    record = {"input": args.audio or args.say, "model": args.model or DEFAULT_MODEL, "logit_lens": lens.to_dict()}
    if not args.no_encoder_lens:
        enc = encoder_lens(model, audio, language=args.language)
        print(f"\nencoder lens (decoder reads encoder layer l through the final encoder norm)\n{enc.table()}")
        record["encoder_lens"] = enc.to_dict()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png, js = out / f"{name}.lens.png", out / f"{name}.lens.json"
    plot_logit_lens(lens, png, title=f"logit lens: {lens.text or ''}"[:90])
    js.write_text(json.dumps(record, indent=1))
    print(f"\nwrote {png} and {js}")
    return 0


__all__ = ["add_parser", "run"]
