"""Sections 4.4 / 4.6 of "Beyond Transcription" on real Whisper tiny.en and base with espeak-ng speech.

For each model:

* logit lens during greedy generation on every sentence -> dataset curves (probability of the
  final token by layer, top-1 agreement, log-rank of tokens s, s+1, s+2) with 95 % confidence
  intervals, the mean saturation layer, and token similarity (embedding cosine, phoneme error
  rate) between the final token and each layer's top-5 candidates;
* encoder lens: the transcript the unchanged decoder produces from every encoder layer (one
  batch per clip), with flags (empty, repetition loop, prefix of the final transcript) and WER
  against the final transcript;
* tuned lens: trained on half of the sentences, compared with the logit lens on the other half.

Writes ``results/lens/``: ``summary.csv``, and per model ``<model>/logit_lens_curves.json``,
``saturation.csv``, ``encoder_lens.csv``/``.json``, ``token_similarity.json``, ``tuned_lens.*``,
and figures (``*.png``). Run: ``python scripts/lens_experiments.py [--models whisper-tiny.en whisper-base]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Seven red apples are on the kitchen table.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "The weather today is sunny with a light breeze from the west.",
    "She sells sea shells by the sea shore.",
    "My favourite colour is blue, but my sister prefers green.",
    "The meeting has been moved to three o'clock on Thursday afternoon.",
    "Birds fly south for the winter when the days grow short.",
    "Can you tell me the way to the nearest train station?",
    "He read the newspaper while drinking a cup of hot coffee.",
    "The children played football in the park until it got dark.",
    "Turn left at the next corner and walk two blocks north.",
    "Our library opens at nine in the morning and closes at six.",
    "A large dog barked loudly at the postman this morning.",
    "The scientist explained her discovery to a crowded room.",
    "We need to buy bread, milk, eggs and some fresh vegetables.",
    "The old bridge was closed for repairs last summer.",
    "Music helps many people relax after a long day at work.",
    "The train to London leaves from platform four in ten minutes.",
    "Learning a new language takes patience and daily practice.",
    "The mountain was covered in snow during the whole winter.",
    "Do not forget to lock the door when you leave the house.",
    "The pilot announced that we would land in twenty minutes.",
    "Fresh fruit and vegetables are good for your health.",
]
VOICES = ["en-us", "en", "en-us+f3"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["whisper-tiny.en", "whisper-base"])
    ap.add_argument("--n-sentences", type=int, default=len(SENTENCES))
    ap.add_argument("--tuned-steps", type=int, default=300, help="tuned-lens training steps (0 skips it)")
    ap.add_argument("--no-phonemes", action="store_true", help="skip the phoneme error rate (espeak phonemizer)")
    ap.add_argument("--out", default="results/lens")
    args = ap.parse_args(argv)

    import hooked_asr
    from hooked_asr.datasets.espeak import synthesize

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sentences = SENTENCES[: args.n_sentences]
    clips = [synthesize(s, voice=VOICES[i % len(VOICES)]) for i, s in enumerate(tqdm(sentences, desc="espeak-ng"))]
    summary_rows, curves_by_model = [], {}
    for name in args.models:
        model = hooked_asr.load_model(name)
        torch.manual_seed(0)
        t0 = time.time()
        row, curves = run_model(model, name, clips, sentences, out / name, args)
        row["seconds"] = round(time.time() - t0, 1)
        summary_rows.append(row)
        curves_by_model[name] = curves
        del model
    write_summary(out, summary_rows, curves_by_model)
    return 0


def run_model(model, name, clips, sentences, out: Path, args) -> tuple[dict, object]:
    from hooked_asr.lens import encoder_lens, lens_curves, logit_lens_generate, token_similarity
    from hooked_asr.plotting import plot_bars, plot_curves, plot_logit_lens

    out.mkdir(parents=True, exist_ok=True)
    lang = "en" if model.cfg.is_multilingual else None
    results = [logit_lens_generate(model, c, language=lang) for c in tqdm(clips, desc=f"{name}: logit lens")]
    curves = lens_curves(results)
    (out / "logit_lens_curves.json").write_text(json.dumps(curves.to_dict(), indent=1))
    (out / "logit_lens_examples.json").write_text(json.dumps([r.to_dict() for r in results[:3]], indent=1))
    plot_logit_lens(results[0], out / "logit_lens_example.png", title=f"{name}: {results[0].text}"[:90])
    n_layers = curves.chosen_prob.shape[0]
    plot_curves({"p(final token)": curves.chosen_prob, "top-1 = final": curves.top1_agreement},
                ylabel="mean over tokens (95% CI)", title=f"{name}: logit lens by decoder layer",
                path=out / "logit_lens_curves.png")
    plot_curves({"token s": curves.log_rank, "token s+1": curves.future_log_rank[0], "token s+2": curves.future_log_rank[1]},
                ylabel="log10 rank (95% CI)", title=f"{name}: rank of the current and next tokens",
                path=out / "future_ranks.png")
    with open(out / "saturation.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["clip", "step", "token", "token_str", "saturation_layer", "p_final_by_layer"])
        for i, r in enumerate(results):
            for s in range(r.n_steps):
                w.writerow([i, s, int(r.tokens[s]), r.token_strs[s], int(r.saturation[s]),
                            " ".join(f"{float(p):.4f}" for p in r.chosen_prob[:, s])])

    # token similarity by layer
    sim_rows = {"cosine": [], "per": []}
    phon = not args.no_phonemes
    for r in tqdm(results, desc=f"{name}: token similarity"):
        try:
            sim = token_similarity(model, r, k=5, phonemes=phon)
        except RuntimeError as err:
            print(f"phoneme similarity skipped: {err}", file=sys.stderr)
            phon = False
            sim = token_similarity(model, r, k=5, phonemes=False)
        sim_rows["cosine"].append(sim.cosine.flatten(1))
        if sim.per is not None:
            sim_rows["per"].append(sim.per.flatten(1))
    similarity = {"cosine_by_layer": _nan_mean_ci(torch.cat(sim_rows["cosine"], 1))}
    if sim_rows["per"]:
        similarity["per_by_layer"] = _nan_mean_ci(torch.cat(sim_rows["per"], 1))
    (out / "token_similarity.json").write_text(json.dumps(similarity, indent=1))
    sim_curves = {"embedding cosine": np.array(similarity["cosine_by_layer"])}
    if "per_by_layer" in similarity:
        sim_curves["phoneme error rate"] = np.array(similarity["per_by_layer"])
    plot_curves(sim_curves, ylabel="final token vs top-5 (95% CI)", title=f"{name}: candidate similarity by layer",
                path=out / "token_similarity.png")

    # encoder lens
    enc_rows, enc_json = [], []
    for i, c in enumerate(tqdm(clips, desc=f"{name}: encoder lens")):
        res = encoder_lens(model, c, language=lang)
        enc_json.append({"sentence": sentences[i], **res.to_dict()})
        for l in res.layers:
            enc_rows.append({"clip": i, "layer": l.layer, "text": l.text, "empty": l.empty, "loop": l.repetition_loop,
                             "prefix": l.matches_final_prefix, "finished": l.finished, "wer_vs_final": l.wer,
                             "final": res.final.text})
    (out / "encoder_lens.json").write_text(json.dumps(enc_json, indent=1))
    with open(out / "encoder_lens.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(enc_rows[0]))
        w.writeheader()
        w.writerows(enc_rows)
    n_enc = model.n_layers["encoder"]
    enc_summary = []
    for l in range(n_enc):
        rows = [r for r in enc_rows if r["layer"] == l]
        enc_summary.append({
            "layer": l,
            "empty": float(np.mean([r["empty"] for r in rows])),
            "loop": float(np.mean([r["loop"] for r in rows])),
            "prefix": float(np.mean([r["prefix"] for r in rows])),
            "wer": float(np.mean([min(r["wer_vs_final"], 1.0) for r in rows if r["wer_vs_final"] is not None])),
        })
    plot_bars({k: [e[k] for e in enc_summary] for k in ("empty", "loop", "prefix", "wer")},
              labels=[f"L{l}" for l in range(n_enc)], ylabel="fraction of clips / WER (capped at 1)",
              title=f"{name}: encoder lens by layer", path=out / "encoder_lens.png")

    # tuned lens
    tuned = None
    if args.tuned_steps > 0:
        tuned = run_tuned_lens(model, name, clips, out, args.tuned_steps, lang)

    sat = curves.saturation
    row = {
        "model": name,
        "decoder_layers": n_layers,
        "encoder_layers": n_enc,
        "clips": len(clips),
        "tokens": curves.n_tokens,
        "mean_saturation_layer": round(sat[0], 3),
        "saturation_ci95": f"[{sat[1]:.3f}, {sat[2]:.3f}]",
        "mean_saturation_fraction": round(curves.saturation_fraction[0], 3),
        "p_final_by_layer": " ".join(f"{p:.3f}" for p in curves.chosen_prob[:, 0]),
        "encoder_lens_wer_by_layer": " ".join(f"{e['wer']:.2f}" for e in enc_summary),
        "encoder_lens_prefix_by_layer": " ".join(f"{e['prefix']:.2f}" for e in enc_summary),
    }
    if tuned:
        row["agreement_logit_lens"] = " ".join(f"{a:.2f}" for a in tuned["agreement_logit_lens"])
        row["agreement_tuned_lens"] = " ".join(f"{a:.2f}" for a in tuned["agreement_tuned_lens"])
    print_model_report(name, curves, enc_json[0], enc_summary, tuned, similarity)
    return row, curves


def _nan_mean_ci(x: torch.Tensor) -> list[list[float]]:
    from hooked_asr.lens import mean_ci

    return [list(mean_ci(row.numpy())) for row in x]


def run_tuned_lens(model, name, clips, out: Path, steps: int, lang) -> dict:
    from hooked_asr.plotting import plot_curves
    from hooked_asr.lens import collect_decoder_residuals, compare_lenses, train_tuned_lens

    half = len(clips) // 2
    kw = {"language": lang} if lang else {}
    train = collect_decoder_residuals(model, clips[:half], **kw)
    test = collect_decoder_residuals(model, clips[half:], **kw)
    lens, hist = train_tuned_lens(model, train, steps=steps, batch_size=64, lr=1e-3, val_fraction=0.1)
    cmp = compare_lenses(model, lens, test)
    lens.save(out / "tuned_lens", extra={"trained_on": f"{half} espeak clips", "steps": steps,
                                         "train_positions": int(train.shape[1])})
    cmp["train_positions"], cmp["test_positions"] = int(train.shape[1]), int(test.shape[1])
    cmp["val_kl_before"], cmp["val_kl_after"] = hist.val_kl_before, hist.val_kl_after
    (out / "tuned_lens_comparison.json").write_text(json.dumps(cmp, indent=1))
    plot_curves({"logit lens": np.array(cmp["agreement_logit_lens"]), "tuned lens": np.array(cmp["agreement_tuned_lens"])},
                ylabel="top-1 = final prediction (held-out)", title=f"{name}: tuned vs logit lens",
                path=out / "tuned_vs_logit_lens.png")
    return cmp


def print_model_report(name, curves, enc_example, enc_summary, tuned, similarity) -> None:
    s = curves.saturation
    print(f"\n=== {name}: {curves.n_transcripts} clips, {curves.n_tokens} tokens ===")
    print(f"mean saturation layer {s[0]:.2f} (95% CI {s[1]:.2f}-{s[2]:.2f}) of 0-{curves.chosen_prob.shape[0] - 1}"
          f"  (relative depth {curves.saturation_fraction[0]:.2f})")
    print("layer  p(final)  top1=final  log10rank(s)  log10rank(s+1)  cos(top5)" + ("  PER(top5)" if "per_by_layer" in similarity else ""))
    for l in range(curves.chosen_prob.shape[0]):
        line = (f"{l:>5}  {curves.chosen_prob[l, 0]:8.3f}  {curves.top1_agreement[l, 0]:10.3f}  "
                f"{curves.log_rank[l, 0]:12.2f}  {curves.future_log_rank[0][l, 0]:14.2f}  {similarity['cosine_by_layer'][l][0]:9.3f}")
        if "per_by_layer" in similarity:
            line += f"  {similarity['per_by_layer'][l][0]:9.3f}"
        print(line)
    print(f"encoder lens, clip 0 ({enc_example['sentence']!r}):")
    for l in enc_example["layers"]:
        flags = ",".join(k for k in ("empty", "repetition_loop", "matches_final_prefix") if l[k])
        print(f"  L{l['layer']:<2} [{flags:<22}] {l['text']!r}")
    print(f"  final: {enc_example['final']['text']!r}")
    print("encoder lens over clips: " + "  ".join(f"L{e['layer']}: WER {e['wer']:.2f} prefix {e['prefix']:.2f} loop {e['loop']:.2f}"
                                                   for e in enc_summary))
    if tuned:
        print("held-out top-1 agreement with the final prediction, logit lens vs tuned lens: "
              + "  ".join(f"L{l}: {a:.2f}/{b:.2f}" for l, (a, b) in enumerate(zip(tuned["agreement_logit_lens"], tuned["agreement_tuned_lens"]))))
        print("held-out KL(final || layer): " + "  ".join(f"L{l}: {a:.2f}/{b:.2f}" for l, (a, b) in enumerate(zip(tuned["kl_logit_lens"], tuned["kl_tuned_lens"]))))


def write_summary(out: Path, rows: list[dict], curves_by_model: dict) -> None:
    from hooked_asr.plotting import plot_lens_curves

    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    (out / "summary.json").write_text(json.dumps(rows, indent=1))
    plot_lens_curves(curves_by_model, out / "p_final_by_depth.png")
    print(f"\nwrote {out}/summary.csv, summary.json, p_final_by_depth.png and per-model folders")
    for r in rows:
        print(f"{r['model']:>16}: mean saturation layer {r['mean_saturation_layer']} {r['saturation_ci95']} "
              f"of {r['decoder_layers']} decoder layers; encoder-lens WER by layer {r['encoder_lens_wer_by_layer']}")


if __name__ == "__main__":
    sys.exit(main())
