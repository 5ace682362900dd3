"""``hooked-asr explore AUDIO``: the interactive explorer of one clip, as one offline HTML file,
or (``--serve``) as a local page backed by the running model.

Writes ``<out>`` (default ``<audio name>.explore.html`` in the current folder) and prints its
path; open it in any browser (no server, no network). ``--patching`` adds a head patching
panel: every decoder self- and cross-attention head patched with white noise, and the
transcript each patch produces. Audio longer than the model's 30-s window: pick the window
with ``--start S`` (seconds) and ``--window W`` (at most 30).

``--serve`` starts the live explorer on ``127.0.0.1`` (``--host`` to change it) and prints a URL
with a random token, as Jupyter does: in the page, ablate or patch heads, MLPs and position
ranges, mask a head's attention to a time range, re-transcribe, export the Python that
reproduces it, upload or record your own audio (at most ``--max-upload-mb``). Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hooked_asr.cli._common import add_audio_arguments, add_model_argument, load_model_from_args, one_audio


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explore", help="interactive HTML view: audio, spectrogram, tokens, attention, lenses (--serve: live)"
    )
    add_audio_arguments(p, many=False, audio_help="a wav/flac file (longer than 30 s: choose --start/--window)")
    add_model_argument(p)
    p.add_argument("--language", default=None, help="language code for multilingual models (default: detect)")
    p.add_argument("--start", type=float, default=0.0, help="start of the window shown, in seconds (default 0)")
    p.add_argument(
        "--window",
        type=float,
        default=None,
        help="length of the window shown, in seconds, at most the model's 30 (default: up to 30 s)",
    )
    p.add_argument("--patching", action="store_true", help="add a head patching sweep (white-noise reference)")
    p.add_argument("--out", default=None, help="HTML file to write (default: <audio name>.explore.html)")
    p.add_argument(
        "--sae", default=None, help="an SAE folder (save_sae / SAELens): its feature panel, and steering in --serve"
    )
    p.add_argument("--other", default=None, help="--serve: a second clip to patch from (method 'other')")
    p.add_argument(
        "--probe", default=None, help="--serve: a saved probe (LinearProbe.save) to steer along (method 'probe')"
    )
    p.add_argument(
        "--probe-hook", default=None, help="the hook the --probe was trained on, e.g. encoder.blocks.2.hook_resid_post"
    )
    p.add_argument(
        "--serve", action="store_true", help="serve the live explorer backed by the model instead of writing a file"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=0, help="port to serve on (default: a free one)")
    p.add_argument(
        "--max-upload-mb", type=float, default=50.0, help="largest audio upload the page accepts, MB (default 50)"
    )
    p.set_defaults(func=run)


def _window(args: argparse.Namespace, model: object, audio: object) -> object:
    """The chosen window of the audio (a 1-D array), or SystemExit naming the choice to make."""
    from hooked_asr.audio import SAMPLE_RATE, load_audio, window_samples
    from hooked_asr.explore.live_audio import LiveError, pick_window

    try:
        return pick_window(
            load_audio(audio, allow_long=True), args.start, args.window, window_samples(model) / SAMPLE_RATE
        )
    except LiveError as e:
        raise SystemExit(str(e)) from None


def run(args: argparse.Namespace) -> int:
    audio, name = one_audio(args)
    model = load_model_from_args(args)
    if args.serve:
        return _serve(args, model, audio, name)
    from hooked_asr.explore import explore, patched_transcripts

    wave = _window(args, model, audio)
    sweep_kw = {}
    if args.patching:
        from hooked_asr.patching import components

        kinds = ["attn", "cross_attn"] if "decoder.blocks.0.cross_attn.hook_pattern" in model.hook_dict else ["attn"]
        comps = components(model, kinds=kinds, heads=True, stacks=["decoder"])
        result, texts = patched_transcripts(
            model, wave, comps, intervention="interpolate", reference="noise", missing="keep"
        )  # a patched transcript may outgrow the reference
        sweep_kw = {"sweep": result, "sweep_metric": "changed", "patched_transcripts": texts}
    from hooked_asr.audio import SAMPLE_RATE

    title = (
        name if not (args.start or args.window) else f"{name} {args.start:g}-{args.start + len(wave) / SAMPLE_RATE:g} s"
    )
    if args.sae:
        from hooked_asr.sae.model import load_sae

        sweep_kw["sae"] = load_sae(args.sae)
    view = explore(model, wave, language=args.language, reference_text=args.say, title=title, **sweep_kw)
    out = Path(args.out or f"{name}.explore.html")
    view.save(out)
    print(f"heard: {view.data['transcript']['text']}")
    print(f"{out.resolve()}  ({view.size_bytes / 1e6:.2f} MB)")
    return 0


def _serve(args: argparse.Namespace, model: object, audio: object, name: str) -> int:
    from hooked_asr.explore.live import LiveSession
    from hooked_asr.explore.live_audio import LiveError
    from hooked_asr.explore.server import LiveServer

    if args.patching:
        raise SystemExit("--patching writes a static panel; with --serve ablate heads in the page instead")
    if args.max_upload_mb <= 0:
        raise SystemExit(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    print(f"computing the clean view of {name} ...", flush=True)
    try:
        session = LiveSession(
            model,
            audio,
            start=args.start,
            window=args.window,
            language=args.language,
            name=name,
            model_name=args.model or model.cfg.name,
            sae_path=args.sae,
            other=args.other,
            probe=args.probe,
            probe_hook=args.probe_hook,
        )
    except LiveError as e:
        raise SystemExit(str(e)) from None
    server = LiveServer(session, host=args.host, port=args.port, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024))
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: serving on {args.host}: anyone who can reach it and has the token can run the model", flush=True
        )
    print(f"heard: {session.clean_text}", flush=True)
    print(f"live explorer at {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
        session.close()
    return 0


__all__ = ["add_parser", "run"]
