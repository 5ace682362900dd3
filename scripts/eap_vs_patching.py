"""Edge attribution (EAP, EAP-IG) against real patching, and the faithfulness of top-k-edge circuits.

For each utterance (espeak-ng sentences): the clean transcript is teacher-forced and every
attention head (encoder self, decoder self, decoder cross) and MLP is patched from an
RMS-matched white-noise reference (alpha = 1), for real (one batched forward per chunk of
components). The metric is

    m = mean log p(clean transcript tokens)

Against those effects: plain attribution patching (one backward,
:func:`hooked_asr.patching.attribution_patching`), EAP and EAP-IG node scores (the sum of
each node's outgoing edge scores over the full encoder-decoder graph; EAP's equals
attribution patching, which the script checks). Then the top-k edges of each ranking form
a circuit, evaluated by patching every other edge to the reference:
faithfulness = (m(circuit) - m(ref)) / (m(clean) - m(ref)).

    python scripts/eap_vs_patching.py --model whisper-tiny.en --n 2 --steps 8 --out results/eap_vs_patching

Writes ``components.csv`` (per component and item: real effect, attribution, EAP, EAP-IG),
``faithfulness.csv``, ``summary.json``, ``faithfulness.png``, ``circuit.png`` /
``circuit.json`` (the first item's EAP-IG top-50 circuit) and ``edges.json`` (its top 500 edges).
"""

from __future__ import annotations

import json
import time

import _common

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "please call stella and ask her to bring these things with her",
    "we should meet again next week to finish the report",
    "my favourite colour is green and my brother likes blue",
]


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--model", default="whisper-tiny.en")
    ap.add_argument("--n", type=int, default=2, help="number of sentences")
    ap.add_argument("--steps", type=int, default=8, help="EAP-IG integration steps")
    ap.add_argument("--ig-batch", type=int, default=4, help="EAP-IG steps per batched forward + backward")
    ap.add_argument("--ks", type=int, nargs="+", default=[10, 50, 200], help="circuit sizes (edges)")
    ap.add_argument(
        "--curve-ks",
        type=int,
        nargs="+",
        default=[5, 10, 20, 50, 100, 200, 500, 1000, 2000],
        help="circuit sizes for the faithfulness figure",
    )
    ap.add_argument("--batch-size", type=int, default=24, help="components per batched real-patching forward")
    ap.add_argument("--out", default="results/eap_vs_patching")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    from scipy.stats import spearmanr
    from tqdm.auto import tqdm

    from hooked_asr.circuits.circuit import faithfulness_curve, plot_faithfulness
    from hooked_asr.circuits.eap import eap, eap_ig
    from hooked_asr.circuits.graph import Graph
    from hooked_asr.circuits.path_patching import record_graph_reference
    from hooked_asr.patching import attribution_patching, components, patching_effects, record_reference

    model, out, _ = _common.setup(args)
    graph = Graph.from_model(model)
    comps = components(model, heads=True)
    ks = sorted(set(args.ks) | set(args.curve_ks))
    frames, faith, times, checks = [], [], [], []
    for i, sentence in enumerate(tqdm(SENTENCES[: args.n], desc="utterances")):
        item = _common.patching_item(model, sentence, seed=i)
        tf, clean, metric = item.tf, item.clean, item.metric
        ref = record_graph_reference(model, item.ref_kwargs, graph)
        ref.update(record_reference(model, item.ref_kwargs, comps))
        t = {}
        t0 = time.perf_counter()
        attr = attribution_patching(model, tf.kwargs, ref, comps, metric, reference_is_cache=True)
        t["attribution_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        s_eap = eap(model, tf.kwargs, ref, metric, graph, reference_is_cache=True)
        t["eap_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        s_ig = eap_ig(
            model,
            tf.kwargs,
            ref,
            metric,
            graph,
            steps=args.steps,
            batch_size=args.ig_batch,
            reference_is_cache=True,
            progress=False,
        )
        t["eap_ig_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        real = patching_effects(model, tf.kwargs, ref, comps, metric, batch_size=args.batch_size)
        t["patching_s"] = time.perf_counter() - t0
        times.append(t)
        node_eap = s_eap.node_scores().set_index("component")["score"]
        node_ig = s_ig.node_scores().set_index("component")["score"]
        df = attr.assign(
            effect=real["effect"].to_numpy(),
            eap=node_eap.reindex(attr["component"]).to_numpy(),
            eap_ig=node_ig.reindex(attr["component"]).to_numpy(),
            item=i,
            transcript=clean.text,
        )
        checks.append(float(np.abs(df["eap"] - df["attribution"]).max()))
        frames.append(df)
        for method, scores in (("EAP", s_eap), ("EAP-IG", s_ig)):
            curve = faithfulness_curve(model, scores, tf.kwargs, ref, metric, ks=ks, progress=False)
            faith.append(curve.assign(method=method, item=i))
        if i == 0:
            c = s_ig.circuit(50)
            c.meta = {"model": args.model, "sentence": sentence, "metric": "mean log p(clean transcript)"}
            c.to_json(out / "circuit.json")
            c.draw(out / "circuit.png", title=f"{args.model}: EAP-IG top-50 edges ({sentence[:30]}...)")
            plt.close("all")
            top = s_ig.to_json()
            top["edges"] = top["edges"][:500]
            (out / "edges.json").write_text(json.dumps(top, indent=1))

    all_df = pd.concat(frames)
    all_df.to_csv(out / "components.csv", index=False)
    fdf = pd.concat(faith)
    fdf.to_csv(out / "faithfulness.csv", index=False)

    def groups(df):
        g = {"pooled": df}
        for (s, k), sub in df.groupby(["stack", "kind"]):
            g[f"{s}.{k}" + ("" if k == "mlp" else " heads")] = sub
        return g

    spearman = {
        name: {m: float(spearmanr(sub[m], sub["effect"]).statistic) for m in ("attribution", "eap", "eap_ig")}
        for name, sub in groups(all_df).items()
        if len(sub) > 2
    }
    mean_faith = fdf.groupby(["method", "k"])["faithfulness"].mean().unstack(0)
    tt = pd.DataFrame(times)
    summary = {
        "model": args.model,
        "n_items": args.n,
        "steps": args.steps,
        "n_components": len(comps),
        "n_edges": graph.n_edges,
        "spearman_vs_real": spearman,
        "eap_minus_attribution_max": max(checks),
        "faithfulness": {m: {int(k): float(v) for k, v in mean_faith[m].items()} for m in mean_faith},
        "seconds": tt.mean().to_dict(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))

    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for method in mean_faith:
        plot_faithfulness(
            pd.DataFrame({"k": mean_faith.index, "faithfulness": mean_faith[method].to_numpy()}), ax=ax, label=method
        )
    ax.set_title(f"{args.model}: top-k-edge circuits ({args.n} sentences)", fontsize=9)
    fig.savefig(out / "faithfulness.png", dpi=130, bbox_inches="tight")
    plt.close(fig)

    print(pd.DataFrame(spearman).T.to_string(float_format=lambda v: f"{v:.2f}"))
    print(f"max |EAP node sum - attribution patching| = {max(checks):.2e}")
    print("faithfulness of the top-k circuit (mean over items):")
    print(mean_faith.loc[[k for k in args.ks if k in mean_faith.index]].to_string(float_format=lambda v: f"{v:.3f}"))
    print("seconds per item:", {k: round(v, 1) for k, v in tt.mean().items()})
    print(
        f"wrote {out}/components.csv, faithfulness.csv, summary.json, faithfulness.png, circuit.png, circuit.json, edges.json"
    )


if __name__ == "__main__":
    main()
