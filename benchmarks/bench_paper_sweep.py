"""The paper's section 4.5 sweep shape: every decoder layer's three components (self-attention,
cross-attention, MLP) and every decoder cross-attention head, patched during generation, over
N items - timed for the fast sweep and for the naive one-at-a-time loop, in forward-equivalents.

A *forward-equivalent* is the cost of one clean greedy transcription of the item (encoder +
decode, the unit the naive loop pays per component). For each model:

    fast_fe   = fast sweep time / (N * clean transcription time)      per item
    naive_fe  = naive loop time per row / clean transcription time     (measured on --naive-rows rows)
    speed-up  = naive_fe * rows_per_item / fast_fe

The fast sweep is timed twice, interleaved in the same process: as it is (rows share the clean
run's prefix: blocks below a chunk's lowest layer skipped while a row's tokens are the clean ones,
one shared cross-attention cache) and without prefix sharing (the previous fast sweep:
``item_runs.prefix_layer`` answering None), with their ratio.

and a projection to large-v3 (32 layers x 20 heads: 96 components + 640 heads = 736 rows per
item, 102 items): rows x (fast cost per row in forward-equivalents) x (large-v3 transcription
time, measured when --large-v3 runs it, else scaled from the largest model run here by
parameter count). CPU runs use the real tiny.en / base (random weights of their shape when
they do not load) and espeak-ng speech; with a CUDA device ``--large-v3`` also times the
large-v3 shape itself with random weights, batched vs serial. Process CPU time on CPU, wall
time with synchronisation on CUDA.

    python benchmarks/bench_paper_sweep.py [--models whisper-tiny.en whisper-base] [--items 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch
from _models import WHISPER_SHAPES, load_model_or_random, random_whisper, speech_or_noise

from hooked_asr.patching import SweepItem, components, item_runs, sweep

PAPER = {"layers": 32, "heads": 20, "items": 102}


def clock(device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def paper_components(model) -> list:
    """Section 4.5's rows: 3 components per decoder layer, then every cross-attention head."""
    whole = components(model, stacks=["decoder"], heads=False)
    heads = components(model, kinds=["cross_attn"], stacks=["decoder"], heads=True)
    return whole + heads


@contextlib.contextmanager
def no_prefix_sharing():
    """The fast sweep as it was before generation rows shared the clean prefix."""
    keep = item_runs.prefix_layer
    item_runs.prefix_layer = lambda chunk: None
    try:
        yield
    finally:
        item_runs.prefix_layer = keep


def bench_model(
    model,
    what: str,
    items: list[SweepItem],
    batch_size: int,
    naive_rows: int,
    max_new_tokens: int,
    device: str,
    repeats: int = 1,
) -> dict:
    comps = paper_components(model)
    kw = dict(reference="noise", metrics=["changed"], missing="keep", max_new_tokens=max_new_tokens, progress=False)
    with torch.no_grad():
        sweep(model, items[:1], comps[:2], "interpolate", batch_size=2, **kw)  # warm-up
        t = clock(device)
        for it in items:
            model.transcribe(it.audio, max_new_tokens=max_new_tokens)
        t_clean = (clock(device) - t) / len(items)
        t_fast = t_old = 0.0
        for _ in range(repeats):  # interleaved: with prefix sharing, then without
            t = clock(device)
            fast = sweep(model, items, comps, "interpolate", batch_size=batch_size, **kw)
            t_fast += (clock(device) - t) / repeats
            t = clock(device)
            with no_prefix_sharing():
                old = sweep(model, items, comps, "interpolate", batch_size=batch_size, **kw)
            t_old += (clock(device) - t) / repeats
        t = clock(device)
        serial = sweep(model, items[:1], comps[:naive_rows], "interpolate", batch_size=1, **kw)
        t_serial_row = (clock(device) - t) / naive_rows
        t = clock(device)
        naive = sweep(model, items[:1], comps[:naive_rows], "interpolate", batch_size=1, share_encoder=False, **kw)
        t_naive_row = (clock(device) - t) / naive_rows
    head = fast.table[fast.table["item"] == items[0].id].head(naive_rows)["value"].tolist()
    agree = (
        head == naive.table["value"].tolist() == serial.table["value"].tolist()
        and fast.table["value"].tolist() == old.table["value"].tolist()
    )
    rows = len(comps)
    fast_fe = t_fast / (len(items) * t_clean)
    old_fe = t_old / (len(items) * t_clean)
    naive_fe = t_naive_row / t_clean
    out = {
        "model": what,
        "rows_per_item": rows,
        "items": len(items),
        "batch_size": batch_size,
        "clean_transcription_s": t_clean,
        "fast_sweep_s": t_fast,
        "fast_forward_equivalents_per_item": fast_fe,
        "fast_fe_per_row": fast_fe / rows,
        "no_prefix_sweep_s": t_old,
        "no_prefix_fe_per_row": old_fe / rows,
        "prefix_speedup": t_old / t_fast,
        "no_prefix_speedup_vs_naive": naive_fe * rows / old_fe,
        "naive_forward_equivalents_per_row": naive_fe,
        "serial_fast_fe_per_row": t_serial_row / t_clean,
        "speedup_vs_naive": naive_fe * rows / fast_fe,
        "speedup_vs_serial": (t_serial_row / t_clean) * rows / fast_fe,
        "same_verdicts_on_checked_rows": agree,
        "n_params": sum(p.numel() for p in model.parameters()),
    }
    print(
        f"{what}: {rows} rows/item x {len(items)} items; clean transcription {t_clean:.2f} s; fast sweep "
        f"{fast_fe:.1f} forward-equivalents per item ({fast_fe / rows:.3f} per row) vs naive {naive_fe:.2f} per row "
        f"-> x{out['speedup_vs_naive']:.1f} faster than the naive loop, x{out['speedup_vs_serial']:.2f} than the fast "
        f"sweep one row at a time (checked rows agree: {agree}); without prefix sharing {old_fe / rows:.3f} per row, "
        f"x{out['no_prefix_speedup_vs_naive']:.1f} vs naive: prefix sharing x{out['prefix_speedup']:.2f}"
    )
    return out


def project(results: list[dict], t_large: float | None, n_large: int) -> dict:
    base = max(results, key=lambda r: r["n_params"])
    rows = PAPER["layers"] * 3 + PAPER["layers"] * PAPER["heads"]
    if t_large is None:  # same forward-equivalent cost per row; transcription time scaled by size
        t_large = base["clean_transcription_s"] * n_large / base["n_params"]
        how = f"scaled from {base['model']} by parameter count"
    else:
        how = "measured"
    fast_h = rows * base["fast_fe_per_row"] * t_large * PAPER["items"] / 3600
    naive_h = rows * base["naive_forward_equivalents_per_row"] * t_large * PAPER["items"] / 3600
    old_h = rows * base["no_prefix_fe_per_row"] * t_large * PAPER["items"] / 3600
    print(
        f"projection to large-v3 ({rows} rows x {PAPER['items']} items, transcription {t_large:.1f} s {how}, "
        f"per-row cost of {base['model']}): fast {fast_h:.1f} h (without prefix sharing {old_h:.1f} h) vs naive "
        f"{naive_h:.1f} h"
    )
    return {
        "rows_per_item": rows,
        "items": PAPER["items"],
        "large_v3_transcription_s": t_large,
        "how": how,
        "from": base["model"],
        "fast_hours": fast_h,
        "no_prefix_hours": old_h,
        "naive_hours": naive_h,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["whisper-tiny.en", "whisper-base"])
    ap.add_argument("--items", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--naive-rows", type=int, default=6, help="rows the naive loop is timed on (its cost is per row)")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument(
        "--repeats", type=int, default=1, help="interleaved timings of the fast sweep with / without prefix"
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--large-v3", action="store_true", help="also time the large-v3 shape (random weights; for a GPU)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    clips, kind = speech_or_noise(args.items)
    items = [SweepItem(f"item{i}", c) for i, c in enumerate(clips)]
    print(f"device {args.device}; torch threads {torch.get_num_threads()}; {args.items} item(s) of {kind}")
    results = []
    for name in args.models:
        model, what = load_model_or_random(name, args.device)
        results.append(
            bench_model(
                model.eval(),
                what,
                items,
                args.batch_size,
                args.naive_rows,
                args.max_new_tokens,
                args.device,
                args.repeats,
            )
        )
        del model
    t_large = None
    from transformers import WhisperConfig

    c = WhisperConfig(**WHISPER_SHAPES["large-v3"])
    # encoder layers ~12 d^2 parameters, decoder layers ~16 d^2 (cross-attention), plus the embedding: ~1.5e9
    n_large = int(
        12 * c.d_model**2 * c.encoder_layers + 16 * c.d_model**2 * c.decoder_layers + c.vocab_size * c.d_model
    )
    if args.large_v3:
        model = random_whisper("large-v3").to(args.device).eval()
        n_large = sum(p.numel() for p in model.parameters())
        items_l = [SweepItem(it.id, it.audio) for it in items]
        r = bench_model(
            model, "random large-v3-shaped", items_l, args.batch_size, args.naive_rows, args.max_new_tokens, args.device
        )
        results.append(r)
        t_large = r["clean_transcription_s"]
    out = {
        "device": args.device,
        "threads": torch.get_num_threads(),
        "models": results,
        "projection": project(results, t_large, n_large) if results else None,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
