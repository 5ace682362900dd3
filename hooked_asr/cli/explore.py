"""``hooked-asr explore AUDIO``: the interactive explorer of one clip, as one offline HTML file.

Writes ``<out>`` (default ``<audio name>.explore.html`` beside the current folder) and prints its
path; open it in any browser (no server, no network). ``--patching`` adds a head patching
panel: every decoder self- and cross-attention head patched with white noise, and the
transcript each patch produces.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hooked_asr.cli._common import add_audio_arguments, add_model_argument, load_model_from_args, one_audio


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explore", help="interactive HTML view: audio, spectrogram, tokens, attention, lenses")
    add_audio_arguments(p, many=False, audio_help="a wav/flac file (at most 30 s)")
    add_model_argument(p)
    p.add_argument("--language", default=None, help="language code for multilingual models (default: detect)")
    p.add_argument("--patching", action="store_true", help="add a head patching sweep (white-noise reference)")
    p.add_argument("--out", default=None, help="HTML file to write (default: <audio name>.explore.html)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hooked_asr.explore import explore, patched_transcripts

    audio, name = one_audio(args)
    model = load_model_from_args(args)
    sweep_kw = {}
    if args.patching:
        from hooked_asr.patching import components

        kinds = ["attn", "cross_attn"] if "decoder.blocks.0.cross_attn.hook_pattern" in model.hook_dict else ["attn"]
        comps = components(model, kinds=kinds, heads=True, stacks=["decoder"])
        result, texts = patched_transcripts(model, audio, comps, intervention="interpolate", reference="noise",
                                            missing="keep")  # a patched transcript may outgrow the reference
        sweep_kw = {"sweep": result, "sweep_metric": "changed", "patched_transcripts": texts}
    view = explore(model, audio, language=args.language, reference_text=args.say, **sweep_kw)
    out = Path(args.out or f"{name}.explore.html")
    view.save(out)
    print(f"heard: {view.data['transcript']['text']}")
    print(f"{out.resolve()}  ({view.size_bytes / 1e6:.2f} MB)")
    return 0


__all__ = ["add_parser", "run"]
