"""Section 4.5 of "Beyond Transcription": which decoder components cause repetition loops.

1. Build repetition-prone inputs with espeak-ng (a word said many times, speech in heavy
   white noise, fragmented speech, English/other-language code-switching) and keep the ones
   where the model loops: the transcript repeats beyond what was said, or decoding runs
   to its length limit inside a loop (:mod:`hooked_asr.repetition`).
2. On those, intervene on each decoder layer's self-attention, cross-attention and MLP, then
   on every single attention head (self and cross): patching from a **clean, non-repetitive
   reference audio** (the paper's reference: an espeak-ng sentence that the model transcribes
   without a loop, alpha = 1), and zero ablation; live at every decoding step.
3. Report, per component, "% of repetitions resolved" (the paper's measure: the share of
   looping inputs whose loop is gone), and the WER change against what was said (a "fix"
   that empties the transcript is not one); then the best layer and the best head of another
   layer together (the paper's "layer 23 and head 13 in layer 18 accounted for 89 %").

The paper ([BT] §4.5, Whisper large-v3, 102 repetition-prone Common Voice utterances, Japanese and
English): cross-attention patching at layer 23 resolved 76 %, layer 18 an additional 13 %; head
13 of layer 18 alone 78.1 %; together 89 %; self-attention and feed-forward "no measurable effect".

    python scripts/repetition_circuits.py --model whisper-tiny.en --out results/repetition_circuits

Writes ``table.csv`` (component x intervention: resolved fraction, WER delta),
``items.csv`` (each input, its clean transcript, loop or not), ``sweep_<intervention>.csv``
(tidy rows), ``heads_<intervention>.png`` (layer x head) and ``layers.png``.
"""

from __future__ import annotations

import json

import _common


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--model", default="whisper-tiny.en")
    ap.add_argument("--n-per-kind", type=int, default=6, help="inputs per kind (4 kinds)")
    ap.add_argument("--max-new-tokens", type=int, default=160, help="length limit of clean decoding (loops run to it)")
    ap.add_argument(
        "--interventions",
        nargs="+",
        default=["patch", "zero"],
        choices=["patch", "zero"],
        help="patch: from the clean non-repetitive reference audio; zero: ablation",
    )
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/repetition_circuits")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from hooked_asr.patching import SweepItem, components, sweep
    from hooked_asr.patching.metrics import Transcript
    from hooked_asr.text import word_error_rate
    from hooked_asr.patching.plotting import plot_head_heatmaps
    from hooked_asr.repetition import find_loops, is_repetition_failure, repetition_prone_inputs, words

    model, out, _ = _common.setup(args)
    inputs = repetition_prone_inputs(seed=args.seed, n_per_kind=args.n_per_kind)
    references = clean_references(model, args)
    item_rows, looping = [], []
    for it in inputs:
        res = model.transcribe(it["audio"], max_new_tokens=args.max_new_tokens, language="en")
        t = Transcript(res.tokens, res.text, res.finished)
        loop = is_repetition_failure(t.words, words(it["text"]), tokens=t.tokens, finished=t.finished)
        loops = find_loops(t.words)
        item_rows.append(
            {
                "id": it["id"],
                "kind": it["kind"],
                "spoken": it["text"],
                "transcript": res.text,
                "n_tokens": len(res.tokens),
                "finished": res.finished,
                "loop": loop,
                "longest_loop": max((lp.length for lp in loops), default=0),
                "wer": word_error_rate(it["text"], res.text),
            }
        )
        if loop:
            ref = references[len(looping) % len(references)]
            looping.append(
                SweepItem(
                    it["id"],
                    it["audio"],
                    reference=ref["audio"],
                    text=it["text"],
                    extra={"kind": it["kind"], "reference_text": ref["text"]},
                )
            )
    items_df = pd.DataFrame(item_rows)
    items_df.to_csv(out / "items.csv", index=False)
    print(items_df.groupby("kind")["loop"].agg(["sum", "count"]).rename(columns={"sum": "looping", "count": "inputs"}))
    if not looping:
        print("no input made the model loop; try more inputs (--n-per-kind) or a longer --max-new-tokens")
        rows = [
            dict(zip(PAPER_COLUMNS, [label, paper, "- (no looping input)", None, None])) for label, paper in PAPER_ROWS
        ]
        _common.print_table(
            rows,
            f"\n§4.5, % of repetitions resolved (0 looping inputs of {len(inputs)}; the paper: 102)",
            PAPER_COLUMNS,
        )
        (out / "summary.json").write_text(
            json.dumps({"model": args.model, "n_inputs": len(inputs), "n_looping": 0, "paper_table": rows}, indent=1)
        )
        return

    comps = components(model, kinds=["attn", "cross_attn", "mlp"], heads=False, stacks=["decoder"]) + components(
        model, kinds=["cross_attn", "attn"], heads=True, stacks=["decoder"]
    )
    summary = []
    for iv in args.interventions:
        res = sweep(
            model,
            looping,
            comps,
            iv,
            1.0,
            metrics=["loop_resolved", "wer_delta", "repeated"],
            missing="keep",
            batch_size=args.batch_size,
            patched_max_new_tokens=args.max_new_tokens,
            max_new_tokens=args.max_new_tokens,
            results_path=out / f"sweep_{iv}.jsonl",
            teacher_forced_kwargs={"language": "en"},
        )
        res.table.to_csv(out / f"sweep_{iv}.csv", index=False)
        s = res.summary()
        s.insert(0, "intervention", iv)
        summary.append(s)
        plot_head_heatmaps(
            res,
            "loop_resolved",
            out / f"heads_{iv}.png",
            title=f"{args.model}: loops resolved by {iv} on one cross-attention head",
        )
    table = pd.concat(summary).reset_index()
    table.to_csv(out / "table.csv", index=False)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    whole = table[~table["component"].str.contains(".head.", regex=False)]
    for iv, g in whole.groupby("intervention"):
        ax.plot(range(len(g)), g["loop_resolved"], "o-", label=iv)
        ax.set_xticks(
            range(len(g)), [c.replace("decoder.blocks.", "L") for c in g["component"]], rotation=60, ha="right"
        )
    ax.set_ylabel("fraction of loops resolved")
    ax.set_ylim(-0.05, 1.05)
    ax.legend()
    ax.set_title(f"{args.model}: decoder components ({len(looping)} looping inputs)")
    fig.savefig(out / "layers.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    best = table.sort_values(["loop_resolved", "wer_delta"], ascending=[False, True]).head(12)
    print(f"\n{len(looping)} looping inputs of {len(inputs)}; components that resolve the most loops:")
    print(best.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    paper_rows, combined = paper_table(model, looping, table, args)
    (out / "summary.json").write_text(
        json.dumps(
            {
                "model": args.model,
                "n_inputs": len(inputs),
                "n_looping": len(looping),
                "looping_by_kind": items_df.groupby("kind")["loop"].sum().astype(int).to_dict(),
                "top": best.to_dict(orient="records"),
                "paper_table": paper_rows,
                "combined": combined,
            },
            indent=1,
            default=float,
        )
    )
    print(f"wrote {out}/table.csv, items.csv, heads_*.png, layers.png, summary.json")


REFERENCE_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Seven red apples are on the kitchen table.",
    "The meeting has been moved to three o'clock on Thursday afternoon.",
    "Birds fly south for the winter when the days grow short.",
]
PAPER_ROWS = [
    ("best cross-attention layer", "layer 23: 76 %"),
    ("second cross-attention layer", "layer 18: +13 %"),
    ("best single head", "layer 18 head 13 (cross-attention): 78.1 %"),
    ("best self-attention layer", "no measurable effect"),
    ("best feed-forward layer", "no measurable effect"),
    ("best layer + best head of another layer", "layer 23 + L18 H13: 89 %"),
]
PAPER_COLUMNS = [
    "component",
    "paper (large-v3, §4.5)",
    "ours: component",
    "% resolved (patch, clean ref)",
    "% resolved (zero ablation)",
]


def clean_references(model, args) -> list[dict]:
    """Clean, non-repetitive espeak-ng sentences the model transcribes without a loop."""
    from hooked_asr.datasets.espeak import synthesize
    from hooked_asr.patching.metrics import Transcript
    from hooked_asr.repetition import is_repetition_failure, words

    refs = []
    for text in REFERENCE_SENTENCES:
        audio = synthesize(text, voice="en-us")
        r = model.transcribe(audio, max_new_tokens=args.max_new_tokens, language="en")
        t = Transcript(r.tokens, r.text, r.finished)
        if not is_repetition_failure(t.words, words(text), tokens=t.tokens, finished=t.finished):
            refs.append({"text": text, "audio": audio, "transcript": r.text})
    if not refs:
        raise SystemExit("no clean reference sentence decodes without a loop; check the model")
    return refs


def _pct(table, comp: str, iv: str):
    row = table[(table["component"] == comp) & (table["intervention"] == iv)]
    return float(100 * row["loop_resolved"].iloc[0]) if len(row) else None


def paper_table(model, looping, table, args) -> tuple[list[dict], dict]:
    """The paper's §4.5 rows beside ours: best cross-attention layer, the next layer's extra
    share, best head alone, self-attention / MLP, and best layer + best head together (zero)."""
    from hooked_asr.patching import patched, zero_ablate
    from hooked_asr.patching.metrics import Transcript
    from hooked_asr.repetition import is_repetition_failure, words

    iv0 = "patch" if "patch" in args.interventions else args.interventions[0]
    t = table[table["intervention"] == iv0]
    whole = t[~t["component"].str.contains(".head.", regex=False)]
    heads = t[t["component"].str.contains(".head.", regex=False)]

    def best(df, kind):
        df = df[df["component"].str.contains(f".{kind}", regex=False)]
        if kind == "attn":
            df = df[~df["component"].str.contains("cross_attn", regex=False)]
        return df.sort_values(["loop_resolved", "wer_delta"], ascending=[False, True])["component"].head(2).tolist()

    xl = best(whole, "cross_attn")
    xh = best(heads, "cross_attn")
    sa, mlp = best(whole, "attn"), best(whole, "mlp")
    both = [
        c
        for c in [
            xl[0] if xl else None,
            next((h for h in xh if xl and h.split(".")[2] != xl[0].split(".")[2]), xh[0] if xh else None),
        ]
        if c
    ]
    rows = []
    picks = [
        xl[0] if xl else None,
        xl[1] if len(xl) > 1 else None,
        xh[0] if xh else None,
        sa[0] if sa else None,
        mlp[0] if mlp else None,
    ]
    for (label, paper), comp in zip(PAPER_ROWS[:5], picks):
        rows.append(
            dict(
                zip(
                    PAPER_COLUMNS,
                    [
                        label,
                        paper,
                        comp or "-",
                        _pct(table, comp, "patch") if comp else None,
                        _pct(table, comp, "zero") if comp else None,
                    ],
                )
            )
        )
    resolved = []
    with patched(model, [zero_ablate(c) for c in both]):
        for it in looping:
            r = model.transcribe(it.audio, max_new_tokens=args.max_new_tokens, language="en")
            tr = Transcript(r.tokens, r.text, r.finished)
            resolved.append(not is_repetition_failure(tr.words, words(it.text), tokens=tr.tokens, finished=tr.finished))
    combined = {"components": both, "zero_resolved_pct": 100 * sum(resolved) / max(len(resolved), 1)}
    rows.append(
        dict(zip(PAPER_COLUMNS, [*PAPER_ROWS[5], " + ".join(both) or "-", None, combined["zero_resolved_pct"]]))
    )
    print()
    _common.print_table(
        rows, f"§4.5, % of repetitions resolved ({len(looping)} looping inputs; the paper: 102)", PAPER_COLUMNS
    )
    return rows, combined


if __name__ == "__main__":
    main()
