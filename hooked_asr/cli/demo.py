"""``hooked-asr demo``: the main job, end to end on the embedded model, offline.

On a sentence spoken by espeak-ng it runs transcription, the logit lens during generation,
the encoder lens, a head-level patching sweep (each attention and cross-attention head of
the decoder patched with RMS-matched white noise, effect on the transcript's log-probability)
and a small speech-vs-noise probe on the encoder's layers, then writes a self-contained
report (``report.html`` with the figures inlined, ``report.json`` with every number) to
the folder it prints.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import time
from pathlib import Path
from typing import Any

DEFAULT_SENTENCE = "The quick brown fox jumps over the lazy dog."


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="transcription, lenses, a head patching sweep and a probe, as an HTML report")
    p.add_argument("--model", default=None, help="model name or path (default: whisper-tiny.en, shipped on PyPI)")
    p.add_argument("--say", default=DEFAULT_SENTENCE, help="the sentence espeak-ng speaks")
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
        "<tr>" + "".join(f"<td>{html.escape(f'{v:.3f}' if isinstance(v, float) else str(v))}</td>" for v in r.values()) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _speech_probe(model: Any, n_per_class: int, out: Path) -> tuple[list[dict[str, Any]], Path]:
    """A speech-vs-non-speech probe on every encoder layer (mean over the audio frames):
    ``n_per_class`` espeak sentences against noise, tones, chirps and music of the same lengths."""
    from hooked_asr.datasets.labelled import speech_nonspeech_dataset
    from hooked_asr.probing import probe_model

    data = speech_nonspeech_dataset(n_per_class, seed=0)
    swept = probe_model(model, data, hooks="encoder", out_dir=out / "probe_store", test_size=0.25,
                        title="speech vs non-speech, encoder layers")
    png = out / "probe.png"
    swept.plot(png)
    swept.to_csv(out / "probe.csv")
    rows = [{"layer": r["layer"], "train_acc": r["train_acc"], "test_acc": r["test_acc"], "f1": r["f1"]}
            for r in swept.rows]
    return rows, png


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from hooked_asr.datasets.espeak import synthesize
    from hooked_asr.lens import encoder_lens, logit_lens_generate
    from hooked_asr.loading.registry import DEFAULT_MODEL, load_model
    from hooked_asr.patching import SweepItem, components, sweep
    from hooked_asr.patching.plotting import plot_head_heatmaps
    from hooked_asr.plotting import plot_logit_lens

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = tqdm(total=6, desc="demo", unit="stage")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    stages.set_postfix_str("loading the model")
    model = load_model(args.model or DEFAULT_MODEL)
    audio = synthesize(args.say, voice=args.voice)
    import soundfile as sf

    sf.write(out / "speech.wav", audio, 16000)
    timings["load"] = time.perf_counter() - t0
    stages.update()

    stages.set_postfix_str("transcribing")
    t = time.perf_counter()
    result = model.transcribe(audio)
    timings["transcribe"] = time.perf_counter() - t
    stages.update()

    stages.set_postfix_str("logit lens")
    t = time.perf_counter()
    lens = logit_lens_generate(model, audio)
    plot_logit_lens(lens, out / "logit_lens.png", title=f"logit lens: {lens.text or ''}"[:90])
    timings["logit_lens"] = time.perf_counter() - t
    stages.update()

    stages.set_postfix_str("encoder lens")
    t = time.perf_counter()
    enc = encoder_lens(model, audio, final=result)
    timings["encoder_lens"] = time.perf_counter() - t
    stages.update()

    stages.set_postfix_str("head patching sweep")
    t = time.perf_counter()
    comps = components(model, kinds=["attn", "cross_attn"], heads=True, stacks=["decoder"])
    swept = sweep(model, [SweepItem("say", audio, text=args.say)], comps, "interpolate", alpha=1.0,
                  mode="teacher_forced", metrics=["logprob"], reference="noise", progress=True)
    heat = plot_head_heatmaps(swept, "logprob", out / "head_patching.png", relative_to_clean=True,
                              title="decoder heads patched with white noise: change in log p(transcript)")
    timings["patching"] = time.perf_counter() - t
    stages.update()

    stages.set_postfix_str("speech-vs-noise probe")
    t = time.perf_counter()
    probe_rows, probe_png = _speech_probe(model, args.probe_size, out)
    timings["probe"] = time.perf_counter() - t
    stages.update()
    stages.close()

    summary = swept.summary().reset_index()
    clean = float(swept.table["clean"].iloc[0])
    top = summary.assign(delta=summary["logprob"] - clean).sort_values("delta").head(8)
    patch_rows = [{"component": r.component, "log p after": float(r.logprob), "change": float(r.delta)} for r in top.itertuples()]
    lens_rows = [{"layer": l, "mean p(chosen)": float(lens.chosen_prob[l].mean()),
                  "top-1 = final": float((lens.top1[l] == lens.final).float().mean())} for l in range(lens.n_layers)]
    enc_rows = [{"layer": r.layer, "transcript": r.text, "empty": r.empty, "loop": r.repetition_loop,
                 "prefix of final": r.matches_final_prefix} for r in enc.layers]
    sat = lens.saturation.float()
    report = {
        "model": model.cfg.name, "sentence": args.say, "voice": args.voice,
        "transcript": result.text, "tokens": result.tokens, "token_logprobs": result.token_logprobs,
        "mean_saturation_layer": float(sat.mean()), "logit_lens": lens.to_dict(), "encoder_lens": enc.to_dict(),
        "patching": {"clean_logprob": clean, "most_damaging": patch_rows, "table": swept.table.to_dict("records")},
        "probe": probe_rows, "timings_s": timings,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    sections = [
        ("Transcript", f"<p>Said: <b>{html.escape(args.say)}</b> (espeak-ng, {html.escape(args.voice)})<br>"
                       f"Heard: <b>{html.escape(result.text or '')}</b> (mean log-prob {result.avg_logprob:.2f})</p>"),
        ("Logit lens during generation", _img(out / "logit_lens.png")
         + f"<p>Mean saturation layer {float(sat.mean()):.2f} (layers 0-{lens.n_layers - 1}).</p>" + _table(lens_rows)),
        ("Encoder lens: the decoder reads each encoder layer", _table(enc_rows)),
        ("Head patching (decoder self- and cross-attention, white-noise reference)", _img(Path(heat))
         + f"<p>Clean log p(transcript) = {clean:.2f}. The heads whose patch hurts most:</p>" + _table(patch_rows)),
        ("Speech vs non-speech probe on encoder layers", _img(probe_png) + _table(probe_rows)),
    ]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}img{max-width:100%}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}")
    body = "".join(f"<h2>{html.escape(h)}</h2>{c}" for h, c in sections)
    (out / "report.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>hooked_asr demo</title><style>{style}</style></head>"
        f"<body><h1>hooked_asr demo: {html.escape(model.cfg.name)}</h1>{body}"
        f"<p>Timings (s): {html.escape(json.dumps({k: round(v, 1) for k, v in timings.items()}))}</p></body></html>")

    print(f"\nsaid:  {args.say}\nheard: {result.text}")
    print(f"mean saturation layer {float(sat.mean()):.2f} of 0-{lens.n_layers - 1}")
    print(f"\nencoder lens\n{enc.table()}")
    print("\nheads whose white-noise patch lowers log p(transcript) most:")
    for r in patch_rows[:5]:
        print(f"  {r['component']:<40} {r['change']:+.2f}")
    print("\nspeech-vs-noise probe, test accuracy by encoder layer: "
          + ", ".join(f"{r['layer']}: {r['test_acc']:.2f}" for r in probe_rows))
    print(f"\nreport: {(out / 'report.html').resolve()}\n        {(out / 'report.json').resolve()}")
    return 0
