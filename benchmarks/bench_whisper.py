"""HookedWhisper vs Hugging Face Whisper (and CTranslate2) on CPU: ratios measured in the same run.

Per batch size (1, 2, 4, 8): encoder forward, teacher-forced forward and greedy decoding of a
fixed number of tokens, hooked vs HF (sdpa attention by default), random weights at the real
tiny / base shapes (speed does not depend on the values). Then greedy transcription of the same
espeak-ng speech with the real tiny.en, hooked vs CTranslate2 (float32), same tokens checked.
Every pair is timed interleaved (A B A B ...) in process CPU time; ratios are medians of the
per-round ratios, so a shared machine's drift cancels.

Targets (issue 17): hooked / HF sdpa <= 1.0 at batch 1, 2, 4, 8; greedy transcription /
CTranslate2 <= 1.2; live hooks within 1.1x of none; ``run_with_cache`` of one hook stores only it.

    python benchmarks/bench_whisper.py [--repeats 5] [--batches 1 2 4 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# The checkout this script sits in, ahead of any installed copy (an editable install of another
# checkout would otherwise be what gets timed).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from _models import model_and_speech, random_hf_whisper  # noqa: E402
from _timing import interleaved  # noqa: E402
from transformers.generation.utils import GenerationMixin  # noqa: E402

from hooked_asr import HookedWhisper  # noqa: E402


def bench_hf(shape: str, batches: list[int], repeats: int, attn: str, n_tokens: int = 24) -> dict:
    hf = random_hf_whisper(shape, attn)
    model = HookedWhisper.from_hf(hf)
    prompt = [50258, 50259, 50359, 50363]
    no_eos = [hf.config.eos_token_id]  # both decoders then produce exactly n_tokens
    rows: dict[str, dict] = {}
    for b in batches:
        torch.manual_seed(0)
        feats = torch.randn(b, 80, 3000)
        feats[..., 1000:] = -0.5  # 10 s of audio, padded to 30 s as always
        tokens = torch.randint(0, 50000, (b, 24))
        with torch.inference_mode():
            fns = {
                "encoder/hooked": lambda: model.encode(feats),
                "encoder/hf": lambda: hf.model.encoder(feats),
                "teacher-forced/hooked": lambda: model(input_features=feats, decoder_input_ids=tokens),
                "teacher-forced/hf": lambda: hf(input_features=feats, decoder_input_ids=tokens),
                "greedy/hooked": lambda: model.generate(
                    feats, prompt, max_new_tokens=n_tokens, suppress_tokens=no_eos, begin_suppress_tokens=[]
                ),
                "greedy/hf": lambda: GenerationMixin.generate(
                    hf,
                    input_features=feats,
                    decoder_input_ids=torch.tensor([prompt] * b),
                    max_new_tokens=n_tokens,
                    min_new_tokens=n_tokens,
                    do_sample=False,
                    num_beams=1,
                    suppress_tokens=no_eos,
                ),
            }
            t = interleaved(fns, repeats)
        for what in ("encoder", "teacher-forced", "greedy"):
            rows[f"{what} b={b}"] = {
                "batch": b,
                "hooked_s": t.median(f"{what}/hooked"),
                "hf_s": t.median(f"{what}/hf"),
                "ratio": t.ratio(f"{what}/hooked", f"{what}/hf"),
                "spread": max(t.spread(f"{what}/hooked"), t.spread(f"{what}/hf")),
            }
    return {"shape": shape, "hf_attention": attn, "greedy_tokens": n_tokens, "rows": rows}


def bench_ct2(batches: list[int], repeats: int, tmp: str) -> dict | None:
    try:
        import ctranslate2

        from hooked_asr.audio import log_mel_spectrogram
        from tests.conftest import ct2_model_dir
    except Exception as err:  # noqa: BLE001
        print(f"[CTranslate2 comparison skipped: {type(err).__name__}: {err}]")
        return None
    model, clips, what = model_and_speech("whisper-tiny.en", max(batches))
    if what.startswith("random"):
        print("[CTranslate2 comparison needs the real tiny.en (same weights in both): skipped]")
        return None
    ct = ctranslate2.models.Whisper(
        ct2_model_dir("whisper-tiny.en", tmp),
        device="cpu",
        compute_type="float32",
        inter_threads=1,
        intra_threads=torch.get_num_threads(),
    )
    prompt = model.sot_sequence("en")
    eos = model.cfg.eos_token_id
    rows = {}
    for b in batches:
        feats = torch.cat([log_mel_spectrogram(c, n_mels=80).reshape(1, 80, -1) for c in clips[:b]])
        sv = ctranslate2.StorageView.from_array(feats.numpy())
        ours = lambda: model.generate(feats, prompt, max_new_tokens=100, suppress_tokens=[], begin_suppress_tokens=[])  # noqa: E731
        theirs = lambda: ct.generate(
            sv,
            [prompt] * b,
            beam_size=1,
            max_length=100 + len(prompt),  # noqa: E731
            suppress_blank=False,
            suppress_tokens=[],
        )
        live = {"decoder.blocks.0.hook_resid_post": lambda x, hook: None}

        def hooked_live():
            with model.hooks(fwd_hooks=list(live.items())):
                return ours()

        with torch.inference_mode():
            got, ref = ours(), theirs()
            same = all(
                [t for t in got.tokens[i].tolist()][: (got.tokens[i].tolist() + [eos]).index(eos)]
                == [t for t in r.sequences_ids[0] if t != eos]
                for i, r in enumerate(ref)
            )
            t = interleaved({"hooked": ours, "ct2": theirs, "hooked+hook": hooked_live}, repeats)
        rows[f"greedy transcription b={b}"] = {
            "batch": b,
            "hooked_s": t.median("hooked"),
            "ct2_s": t.median("ct2"),
            "ratio": t.ratio("hooked", "ct2"),
            "same_tokens": same,
            "live_hook_ratio": t.ratio("hooked+hook", "hooked"),
            "spread": max(t.spread("hooked"), t.spread("ct2")),
        }
    return {"model": what, "rows": rows}


def bench_cache(shape: str) -> dict:
    model = HookedWhisper.from_hf(random_hf_whisper(shape, "eager"))
    feats, tokens = torch.randn(1, 80, 3000), torch.randint(0, 50000, (1, 24))
    name = "decoder.blocks.0.hook_resid_post"
    with torch.inference_mode():
        _, one = model.run_with_cache(input_features=feats, decoder_input_ids=tokens, names_filter=name)
        _, everything = model.run_with_cache(input_features=feats, decoder_input_ids=tokens)
    nbytes = lambda c: sum(t.numel() * t.element_size() for t in c.values())  # noqa: E731
    return {
        "one_hook_names": list(one),
        "one_hook_bytes": nbytes(one),
        "that_tensor_bytes": one[name].numel() * 4,
        "all_hooks_bytes": nbytes(everything),
        "n_hooks_all": len(everything),
    }


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--shapes", nargs="*", default=["tiny", "base"], help="none: only the CTranslate2 comparison")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--hf-attention", nargs="+", default=["sdpa"])
    ap.add_argument("--skip-ct2", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import hooked_asr

    print(f"hooked_asr from {Path(hooked_asr.__file__).parent}")
    print(f"torch threads {torch.get_num_threads()}; clock: process CPU time, interleaved, medians of {args.repeats}")
    results: dict = {"threads": torch.get_num_threads(), "repeats": args.repeats, "hf": []}
    for shape in args.shapes:
        for attn in args.hf_attention:
            r = bench_hf(shape, args.batches, args.repeats, attn)
            results["hf"].append(r)
            print(f"\n== whisper-{shape} shape, HF attention={attn} ==")
            for k, v in r["rows"].items():
                print(
                    f"  {k:<22} hooked {v['hooked_s'] * 1e3:8.1f} ms   HF {v['hf_s'] * 1e3:8.1f} ms   "
                    f"ratio {v['ratio']:.2f}x   (spread {v['spread']:.0%})"
                )
        c = bench_cache(shape)
        print(
            f"  run_with_cache(one hook): {c['one_hook_bytes']} bytes = that tensor's {c['that_tensor_bytes']} "
            f"bytes (all {c['n_hooks_all']} hooks: {c['all_hooks_bytes'] / 2**20:.0f} MiB)"
        )
        results.setdefault("run_with_cache", {})[shape] = c
    if not args.skip_ct2:
        with tempfile.TemporaryDirectory() as tmp:
            r = bench_ct2(args.batches, args.repeats, tmp)
        if r:
            results["ct2"] = r
            print(f"\n== greedy transcription vs CTranslate2 float32 ({r['model']}) ==")
            for k, v in r["rows"].items():
                print(
                    f"  {k:<30} hooked {v['hooked_s'] * 1e3:8.1f} ms   CT2 {v['ct2_s'] * 1e3:8.1f} ms   "
                    f"ratio {v['ratio']:.2f}x   same tokens {v['same_tokens']}   live hook {v['live_hook_ratio']:.2f}x"
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
