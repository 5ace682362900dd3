"""Section 4.5 of "Beyond Transcription": which decoder components cause repetition loops.

1. Build repetition-prone inputs with espeak-ng (a word said many times, speech in heavy
   white noise, fragmented speech, English/other-language code-switching) and keep the ones
   where the model loops: the transcript repeats beyond what was said, or decoding runs
   to its length limit inside a loop (:mod:`hooked_asr.repetition`).
2. On those, intervene on each decoder layer's self-attention, cross-attention and MLP,
   and on every single cross-attention head: zero ablation, and patching from an
   RMS-matched white-noise reference (alpha = 1), live at every decoding step.
3. Report, per component, the fraction of looping inputs whose loop is resolved, and the
   WER change against what was said (a "fix" that empties the transcript is not one).

    python scripts/repetition_circuits.py --model whisper-tiny.en --out results/repetition_circuits

Writes ``table.csv`` (component x intervention: resolved fraction, WER delta),
``items.csv`` (each input, its clean transcript, loop or not), ``sweep_<intervention>.csv``
(tidy rows), ``heads_<intervention>.png`` (layer x head) and ``layers.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="whisper-tiny.en")
    ap.add_argument("--n-per-kind", type=int, default=6, help="inputs per kind (4 kinds)")
    ap.add_argument("--max-new-tokens", type=int, default=160, help="length limit of clean decoding (loops run to it)")
    ap.add_argument("--interventions", nargs="+", default=["zero", "interpolate"])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/repetition_circuits")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from hooked_asr.loading.registry import load_model
    from hooked_asr.patching import SweepItem, components, sweep
    from hooked_asr.patching.metrics import Transcript, word_error_rate
    from hooked_asr.patching.plotting import plot_head_heatmaps
    from hooked_asr.repetition import find_loops, is_repetition_failure, repetition_prone_inputs, words

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model)
    inputs = repetition_prone_inputs(seed=args.seed, n_per_kind=args.n_per_kind)
    item_rows, looping = [], []
    for it in inputs:
        res = model.transcribe(it["audio"], max_new_tokens=args.max_new_tokens, language="en")
        t = Transcript(res.tokens, res.text, res.finished)
        loop = is_repetition_failure(t.words, words(it["text"]), tokens=t.tokens, finished=t.finished)
        loops = find_loops(t.words)
        item_rows.append({"id": it["id"], "kind": it["kind"], "spoken": it["text"], "transcript": res.text,
                          "n_tokens": len(res.tokens), "finished": res.finished, "loop": loop,
                          "longest_loop": max((lp.length for lp in loops), default=0),
                          "wer": word_error_rate(it["text"], res.text)})
        if loop:
            looping.append(SweepItem(it["id"], it["audio"], text=it["text"], extra={"kind": it["kind"]}))
    items_df = pd.DataFrame(item_rows)
    items_df.to_csv(out / "items.csv", index=False)
    print(items_df.groupby("kind")["loop"].agg(["sum", "count"]).rename(columns={"sum": "looping", "count": "inputs"}))
    if not looping:
        print("no input made the model loop; try more inputs (--n-per-kind) or a longer --max-new-tokens")
        return

    comps = components(model, kinds=["attn", "cross_attn", "mlp"], heads=False, stacks=["decoder"]) + \
        components(model, kinds=["cross_attn"], heads=True, stacks=["decoder"])
    summary = []
    for iv in args.interventions:
        res = sweep(model, looping, comps, iv, 1.0, metrics=["loop_resolved", "wer_delta", "repeated"],
                    reference="noise", reference_seed=args.seed, missing="keep", batch_size=args.batch_size,
                    patched_max_new_tokens=args.max_new_tokens, max_new_tokens=args.max_new_tokens,
                    results_path=out / f"sweep_{iv}.jsonl", teacher_forced_kwargs={"language": "en"})
        res.table.to_csv(out / f"sweep_{iv}.csv", index=False)
        s = res.summary()
        s.insert(0, "intervention", iv)
        summary.append(s)
        plot_head_heatmaps(res, "loop_resolved", out / f"heads_{iv}.png",
                           title=f"{args.model}: loops resolved by {iv} on one cross-attention head")
    table = pd.concat(summary).reset_index()
    table.to_csv(out / "table.csv", index=False)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    whole = table[~table["component"].str.contains(".head.", regex=False)]
    for iv, g in whole.groupby("intervention"):
        ax.plot(range(len(g)), g["loop_resolved"], "o-", label=iv)
        ax.set_xticks(range(len(g)), [c.replace("decoder.blocks.", "L") for c in g["component"]], rotation=60, ha="right")
    ax.set_ylabel("fraction of loops resolved")
    ax.set_ylim(-0.05, 1.05)
    ax.legend()
    ax.set_title(f"{args.model}: decoder components ({len(looping)} looping inputs)")
    fig.savefig(out / "layers.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    best = table.sort_values(["loop_resolved", "wer_delta"], ascending=[False, True]).head(12)
    print(f"\n{len(looping)} looping inputs of {len(inputs)}; components that resolve the most loops:")
    print(best.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    (out / "summary.json").write_text(json.dumps({
        "model": args.model, "n_inputs": len(inputs), "n_looping": len(looping),
        "looping_by_kind": items_df.groupby("kind")["loop"].sum().astype(int).to_dict(),
        "top": best.to_dict(orient="records"),
    }, indent=1, default=float))
    print(f"wrote {out}/table.csv, items.csv, heads_*.png, layers.png, summary.json")


if __name__ == "__main__":
    main()
