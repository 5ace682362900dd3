"""``hooked-asr demo``: the main job, end to end on the embedded model, offline.

On a sentence spoken by espeak-ng (by default one that whisper tiny.en hears exactly) it runs
transcription, the logit lens during generation, the encoder lens, a head-level patching sweep
(each attention and cross-attention head of the decoder patched with RMS-matched white noise,
effect on the transcript's log-probability, and the transcript each patch produces) and a
small speech-vs-noise probe on the encoder's layers. A second, misheard sentence shows where
the lenses see it go wrong: the logit lens teacher-forced on what was *said*, at the first
token the model got wrong. It writes a self-contained report (``report.html`` with the figures
inlined, ``report.json`` with every number) and the interactive explorer of both clips
(``explorer.html``, ``misheard.explorer.html``) to the folder it prints.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import time
from pathlib import Path
from typing import Any

from hooked_asr.cli._common import add_model_argument, load_model_from_args

DEFAULT_SENTENCE = "She opened the window and looked at the sea."  # tiny.en hears it exactly
MISHEARD_SENTENCE = (
    "The quick brown fox jumps over the lazy dog."  # tiny.en: "The quick roundfark stump over the lazy nog."
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="transcription, lenses, a head patching sweep and a probe, as an HTML report")
    add_model_argument(p, default_help="whisper-tiny.en, shipped on PyPI")
    p.add_argument("--say", default=DEFAULT_SENTENCE, help="the sentence espeak-ng speaks")
    p.add_argument(
        "--misheard",
        default=MISHEARD_SENTENCE,
        help="a second sentence, one the model gets wrong, to see where it goes wrong ('' to skip)",
    )
    p.add_argument("--voice", default="en-us", help="espeak-ng voice")
    p.add_argument("--out", default="hooked_asr_demo", help="report folder")
    p.add_argument("--probe-size", type=int, default=12, help="clips per class for the speech-vs-noise probe")
    p.set_defaults(func=run)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>(empty)</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(f'{v:.3f}' if isinstance(v, float) else str(v))}</td>" for v in r.values())
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _speech_probe(model: Any, n_per_class: int, out: Path) -> tuple[Any, list[dict[str, Any]], Path]:
    """A speech-vs-non-speech probe on every encoder layer (mean over the audio frames):
    ``n_per_class`` espeak sentences against noise, tones, chirps and music of the same lengths."""
    from hooked_asr.datasets.labelled import speech_nonspeech_dataset
    from hooked_asr.probing import probe_model

    data = speech_nonspeech_dataset(n_per_class, seed=0)
    swept = probe_model(
        model,
        data,
        hooks="encoder",
        out_dir=out / "probe_store",
        test_size=0.25,
        title="speech vs non-speech, encoder layers",
    )
    png = out / "probe.png"
    swept.plot(png)
    swept.to_csv(out / "probe.csv")
    rows = [
        {"layer": r["layer"], "train_acc": r["train_acc"], "test_acc": r["test_acc"], "f1": r["f1"]} for r in swept.rows
    ]
    return swept, rows, png


def _lenses(model: Any, audio: Any, out: Path) -> tuple[Any, Any, Any]:
    """Transcript, logit lens during generation (figure), encoder lens."""
    from hooked_asr.lens import encoder_lens, logit_lens_generate
    from hooked_asr.plotting import plot_logit_lens

    result = model.transcribe(audio)
    lens = logit_lens_generate(model, audio)
    plot_logit_lens(lens, out / "logit_lens.png", title=f"logit lens: {lens.text or ''}"[:90])
    return result, lens, encoder_lens(model, audio, final=result)


def _head_sweep(model: Any, audio: Any, said: str, out: Path) -> tuple[Any, dict[str, str], str]:
    """Every decoder self- and cross-attention head patched with white noise: the change in
    log p(transcript) (teacher-forced, figure) and the transcript each patch produces."""
    from hooked_asr.explore import patched_transcripts
    from hooked_asr.patching import SweepItem, components, sweep
    from hooked_asr.patching.plotting import plot_head_heatmaps

    comps = components(model, kinds=["attn", "cross_attn"], heads=True, stacks=["decoder"])
    swept = sweep(
        model,
        [SweepItem("say", audio, text=said)],
        comps,
        "interpolate",
        alpha=1.0,
        mode="teacher_forced",
        metrics=["logprob"],
        reference="noise",
        progress=True,
    )
    heat = plot_head_heatmaps(
        swept,
        "logprob",
        out / "head_patching.png",
        relative_to_clean=True,
        title="decoder heads patched with white noise: change in log p(transcript)",
    )
    _, texts = patched_transcripts(
        model, audio, comps, intervention="interpolate", alpha=1.0, reference="noise", missing="keep", progress=False
    )  # a patched transcript may outgrow the reference
    return swept, texts, str(heat)


def _misheard(model: Any, said: str, audio: Any) -> dict[str, Any]:
    """Where a misheard sentence goes wrong: the first token of the transcript that differs from
    what was said, and per decoder layer the logit lens there, teacher-forced on what was said
    (same prefix), so each layer's p(said token) and p(heard token) sit side by side."""
    import torch

    from hooked_asr.lens import logit_lens, token_string

    heard = model.transcribe(audio)
    said_tokens = model.tokenizer.encode(" " + said.strip())
    i = next(
        (k for k, (a, b) in enumerate(zip(heard.tokens, said_tokens)) if a != b),
        min(len(heard.tokens), len(said_tokens)),
    )
    lens = logit_lens(model, audio, tokens=said_tokens, keep_logits=True)
    rows = []
    if i < len(said_tokens) and i < len(heard.tokens):
        probs = torch.softmax(lens.logits[:, i].float(), dim=-1)
        s_tok, h_tok = said_tokens[i], heard.tokens[i]
        for layer in range(lens.n_layers):
            rows.append(
                {
                    "layer": layer,
                    "top-1": lens.topk_strs[layer][i][0],
                    f"p(said {token_string(model, s_tok)!r})": float(probs[layer, s_tok]),
                    "rank said": int(lens.chosen_rank[layer, i]),
                    f"p(heard {token_string(model, h_tok)!r})": float(probs[layer, h_tok]),
                }
            )
    return {
        "said": said,
        "heard": heard.text,
        "said_tokens": said_tokens,
        "heard_tokens": heard.tokens,
        "first_wrong_token": i,
        "said_token": token_string(model, said_tokens[i]) if i < len(said_tokens) else None,
        "heard_token": token_string(model, heard.tokens[i]) if i < len(heard.tokens) else None,
        "lens": rows,
    }


def _explorer_views(
    model: Any,
    audio: Any,
    say: str,
    swept: Any,
    texts: dict[str, str],
    probe: Any,
    mis_audio: Any,
    mis_said: str | None,
    out: Path,
) -> dict[str, str]:
    """The interactive explorer of the clip (with the sweep and the probe) and of the misheard clip."""
    from hooked_asr.explore import explore

    views = {
        "explorer": explore(
            model,
            audio,
            reference_text=say,
            sweep=swept,
            sweep_metric="logprob",
            patched_transcripts=texts,
            probe=probe,
            progress=False,
        ).save(out / "explorer.html")
    }
    if mis_said:
        views["misheard_explorer"] = explore(
            model, mis_audio, reference_text=mis_said, title="misheard example", progress=False
        ).save(out / "misheard.explorer.html")
    return {k: v.name for k, v in views.items()}


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from hooked_asr.datasets.espeak import synthesize

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = tqdm(total=6, desc="demo", unit="stage")
    timings: dict[str, float] = {}

    def stage(name: str, fn: Any, *a: Any) -> Any:
        stages.set_postfix_str(name)
        t = time.perf_counter()
        value = fn(*a)
        timings[name] = time.perf_counter() - t
        stages.update()
        return value

    def load() -> tuple[Any, Any, Any]:
        import soundfile as sf

        from hooked_asr.audio import SAMPLE_RATE

        model = load_model_from_args(args)
        audio = synthesize(args.say, voice=args.voice)
        sf.write(out / "speech.wav", audio, SAMPLE_RATE)
        return model, audio, synthesize(args.misheard, voice=args.voice) if args.misheard else None

    model, audio, mis_audio = stage("load", load)
    result, lens, enc = stage("lenses", _lenses, model, audio, out)
    swept, texts, heat = stage("patching", _head_sweep, model, audio, args.say, out)
    probe, probe_rows, probe_png = stage("probe", _speech_probe, model, args.probe_size, out)
    misheard = stage("misheard", _misheard, model, args.misheard, mis_audio) if args.misheard else None
    if misheard is None:
        stages.update()
    views = stage(
        "explorer", _explorer_views, model, audio, args.say, swept, texts, probe, mis_audio, args.misheard, out
    )
    stages.close()
    report = _write_report(
        model, args, result, lens, enc, swept, texts, probe_rows, misheard, views, timings, out, Path(heat), probe_png
    )
    _print_summary(args, report, enc, out)
    return 0


def _write_report(
    model: Any,
    args: argparse.Namespace,
    result: Any,
    lens: Any,
    enc: Any,
    swept: Any,
    texts: dict[str, str],
    probe_rows: list[dict[str, Any]],
    misheard: dict[str, Any] | None,
    views: dict[str, str],
    timings: dict[str, float],
    out: Path,
    heat: Path,
    probe_png: Path,
) -> dict[str, Any]:
    """``report.json`` (every number) and ``report.html`` (figures inlined, links to the explorer views)."""
    summary = swept.summary().reset_index()
    clean = float(swept.table["clean"].iloc[0])
    top = summary.assign(delta=summary["logprob"] - clean).sort_values("delta").head(8)
    patch_rows = [
        {
            "component": r.component,
            "log p after": float(r.logprob),
            "change": float(r.delta),
            "patched transcript": texts.get(r.component, ""),
        }
        for r in top.itertuples()
    ]
    lens_rows = [
        {
            "layer": l,
            "mean p(chosen)": float(lens.chosen_prob[l].mean()),
            "top-1 = final": float((lens.top1[l] == lens.final).float().mean()),
        }
        for l in range(lens.n_layers)
    ]
    enc_rows = [
        {
            "layer": r.layer,
            "transcript": r.text,
            "empty": r.empty,
            "loop": r.repetition_loop,
            "prefix of final": r.matches_final_prefix,
        }
        for r in enc.layers
    ]
    sat = lens.saturation.float()
    report = {
        "model": model.cfg.name,
        "sentence": args.say,
        "voice": args.voice,
        "transcript": result.text,
        "tokens": result.tokens,
        "token_logprobs": result.token_logprobs,
        "mean_saturation_layer": float(sat.mean()),
        "logit_lens": lens.to_dict(),
        "encoder_lens": enc.to_dict(),
        "patching": {
            "clean_logprob": clean,
            "most_damaging": patch_rows,
            "table": swept.table.to_dict("records"),
            "patched_transcripts": texts,
        },
        "probe": probe_rows,
        "misheard": misheard,
        "explorer": views,
        "timings_s": timings,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    link = (
        f"<p><a href='{html.escape(views['explorer'])}'>Open the interactive explorer of this clip</a>: hear it, "
        "click a token to see every head's attention over the audio and its logit lens.</p>"
    )
    sections = [
        (
            "Transcript",
            f"<p>Said: <b>{html.escape(args.say)}</b> (espeak-ng, {html.escape(args.voice)})<br>"
            f"Heard: <b>{html.escape(result.text or '')}</b> (mean log-prob {result.avg_logprob:.2f})</p>" + link,
        ),
        (
            "Logit lens during generation",
            _img(out / "logit_lens.png")
            + f"<p>Mean saturation layer {float(sat.mean()):.2f} (layers 0-{lens.n_layers - 1}).</p>"
            + _table(lens_rows),
        ),
        ("Encoder lens: the decoder reads each encoder layer", _table(enc_rows)),
        (
            "Head patching (decoder self- and cross-attention, white-noise reference)",
            _img(heat)
            + f"<p>Clean log p(transcript) = {clean:.2f}. The heads whose patch hurts most:</p>"
            + _table(patch_rows),
        ),
        ("Speech vs non-speech probe on encoder layers", _img(probe_png) + _table(probe_rows)),
    ]
    if misheard is not None:
        mlink = views.get("misheard_explorer")
        sections.append(
            (
                "A misheard sentence: where it goes wrong",
                (
                    f"<p>Said: <b>{html.escape(misheard['said'])}</b><br>Heard: <b>{html.escape(misheard['heard'] or '')}</b></p>"
                    f"<p>First wrong token (#{misheard['first_wrong_token']}): said {html.escape(repr(misheard['said_token']))}, "
                    f"heard {html.escape(repr(misheard['heard_token']))}. The logit lens there, teacher-forced on what was said: "
                    "at which layer does the heard token take over, and how far down is the said one?</p>"
                    + _table(misheard["lens"])
                    + (
                        f"<p><a href='{html.escape(mlink)}'>Open the explorer of the misheard clip</a></p>"
                        if mlink
                        else ""
                    )
                ),
            )
        )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}img{max-width:100%}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
    )
    body = "".join(f"<h2>{html.escape(h)}</h2>{c}" for h, c in sections)
    (out / "report.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>hooked_asr demo</title><style>{style}</style></head>"
        f"<body><h1>hooked_asr demo: {html.escape(model.cfg.name)}</h1>{body}"
        f"<p>Timings (s): {html.escape(json.dumps({k: round(v, 1) for k, v in timings.items()}))}</p></body></html>"
    )
    return report


def _print_summary(args: argparse.Namespace, report: dict[str, Any], enc: Any, out: Path) -> None:
    n_layers = len(report["logit_lens"]["layers"])
    print(f"\nsaid:  {args.say}\nheard: {report['transcript']}")
    print(f"mean saturation layer {report['mean_saturation_layer']:.2f} of 0-{n_layers - 1}")
    print(f"\nencoder lens\n{enc.table()}")
    print("\nheads whose white-noise patch lowers log p(transcript) most:")
    for r in report["patching"]["most_damaging"][:5]:
        print(f"  {r['component']:<40} {r['change']:+.2f}  -> {r['patched transcript']}")
    print(
        "\nspeech-vs-noise probe, test accuracy by encoder layer: "
        + ", ".join(f"{r['layer']}: {r['test_acc']:.2f}" for r in report["probe"])
    )
    m = report["misheard"]
    if m is not None:
        print(
            f"\nmisheard: said {m['said']!r}, heard {m['heard']!r}; first wrong token #{m['first_wrong_token']}: "
            f"said {m['said_token']!r}, heard {m['heard_token']!r}"
        )
        for r in m["lens"]:
            print("  " + "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    print(f"\nreport:   {(out / 'report.html').resolve()}\n          {(out / 'report.json').resolve()}")
    for name in report["explorer"].values():
        print(f"explorer: {(out / name).resolve()}")


__all__ = ["DEFAULT_SENTENCE", "MISHEARD_SENTENCE", "add_parser", "run"]
