"""Memory of a full cache: ``run_with_cache`` on every hook of a 30-s window against Hugging Face's
eager forward with every attention and hidden state returned (``output_attentions=True,
output_hidden_states=True``), the same weights, the same audio and decoder tokens.

Each side runs in a fresh process on the same saved inputs: load, reset the peak resident set
(``/proc/self/clear_refs``), then the call, keeping what it returned. Printed: the peak and the held
resident set over the memory before the call, and the bytes of the tensors returned (ours: what the
``ActivationCache`` stores; a pattern kept with its scores is rebuilt on access). Ratios are ours over
Hugging Face's, per round, median over the rounds (the tensor bytes do not vary).

    python benchmarks/bench_cache_memory.py [--model whisper-tiny.en] [--tokens 24] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])

CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[4])
import torch
torch.set_num_threads(1)

def rss_mb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

def unique_bytes(tensors):
    seen = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())

kind, name, inputs = sys.argv[1], sys.argv[2], torch.load(sys.argv[3])
feats, tokens = inputs["input_features"], inputs["decoder_input_ids"]
if kind == "hf":
    from transformers import WhisperForConditionalGeneration
    from hooked_asr.loading.registry import weights_dir
    hf = WhisperForConditionalGeneration.from_pretrained(weights_dir() / name, attn_implementation="eager").eval()
    call = lambda: hf(input_features=feats, decoder_input_ids=tokens, output_attentions=True, output_hidden_states=True)
else:
    import hooked_asr
    model = hooked_asr.load_model(name)
    call = lambda: model.run_with_cache(input_features=feats, decoder_input_ids=tokens)
with torch.no_grad():
    before = rss_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set
    kept = call()
    peak, held = rss_mb("VmHWM"), rss_mb("VmRSS")
if kind == "hf":
    out = [kept.logits, kept.encoder_last_hidden_state]
    for k in ("encoder_hidden_states", "encoder_attentions", "decoder_hidden_states", "decoder_attentions", "cross_attentions"):
        out += list(getattr(kept, k))
else:
    out = [kept[0], *kept[1].cache_dict.values()]  # what is stored (a pattern kept with its scores is rebuilt on access)
print(json.dumps({"peak_mb": peak - before, "held_mb": held - before, "tensor_mb": unique_bytes(out) / 2**20}))
"""


def run(kind: str, name: str, inputs: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, kind, name, inputs, ROOT], env=env, capture_output=True, text=True
    )
    if out.returncode:
        raise RuntimeError(f"{kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="whisper-tiny.en")
    ap.add_argument("--tokens", type=int, default=24, help="decoder tokens after the prompt")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import tempfile

    import torch
    from tqdm import tqdm

    import hooked_asr
    from hooked_asr.datasets.espeak import synthesize

    model = hooked_asr.load_model(args.model)
    audio = synthesize("She opened the window and looked at the sea. " * 6)[: 16000 * 30]
    said = [int(t) for t in model.transcribe(audio).tokens][: args.tokens]
    inputs = {
        "input_features": model.prepare_features(audio)["input_features"],
        "decoder_input_ids": torch.tensor([model.sot_sequence() + said]),
    }
    del model
    samples: dict[str, list[dict]] = {"hooked": [], "hf": []}
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(inputs, Path(tmp) / "inputs.pt")
        for r in tqdm(range(args.rounds), desc="rounds"):
            for kind in ("hooked", "hf") if r % 2 == 0 else ("hf", "hooked"):
                samples[kind].append(run(kind, args.model, str(Path(tmp) / "inputs.pt")))
    ratio = statistics.median(a["peak_mb"] / b["peak_mb"] for a, b in zip(samples["hooked"], samples["hf"]))
    held = statistics.median(a["held_mb"] / b["held_mb"] for a, b in zip(samples["hooked"], samples["hf"]))
    tensors = samples["hooked"][0]["tensor_mb"] / samples["hf"][0]["tensor_mb"]
    med = {k: {m: statistics.median(s[m] for s in v) for m in ("peak_mb", "held_mb")} for k, v in samples.items()}
    print(f"{args.model}, 30-s window, {args.tokens} decoder tokens, every hook vs HF eager with attentions:")
    for k, m in med.items():
        print(
            f"  {k:<7} peak +{m['peak_mb']:.0f} MB, held +{m['held_mb']:.0f} MB, "
            f"tensors returned {samples[k][0]['tensor_mb']:.0f} MiB"
        )
    print(f"  full cache / HF eager with attentions: peak {ratio:.2f}x, held {held:.2f}x, tensors {tensors:.2f}x")
    if args.json:
        from hooked_asr.files import atomic_write_text

        atomic_write_text(
            args.json,
            json.dumps(
                {
                    "model": args.model,
                    "samples": samples,
                    "peak_ratio": ratio,
                    "held_ratio": held,
                    "tensor_ratio": tensors,
                }
            ),
        )


if __name__ == "__main__":
    main()
