#!/usr/bin/env bash
# The runs behind docs/RESULTS.md, at the settings it quotes (CPU, 2 cores: about 40 minutes).
# Each writes results/<experiment>/ and prints its tables; logs go to results/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p results/logs
run() { local name=$1; shift; echo "== $name: $*"; /usr/bin/time -f "$name %e s wall, %U s user" python "$@" > "results/logs/$name.log" 2>&1 || echo "$name FAILED (see results/logs/$name.log)"; tail -n 2 "results/logs/$name.log"; }
run lens               scripts/lens_experiments.py --models whisper-tiny.en whisper-base --n-sentences 8 --tuned-steps 200 --out results/lens
run probing            scripts/probing_enrichment.py --n 24 --out results/probing_enrichment
run semantics          scripts/encoder_semantics.py --n 16 --out results/encoder_semantics
run hallucination      scripts/hallucination_monitoring.py --n 10 --per-kind 12 --out results/hallucination
run acoustic_context   scripts/acoustic_contextual.py --n 8 --out results/acoustic_contextual
run repetition         scripts/repetition_circuits.py --n-per-kind 3 --max-new-tokens 120 --out results/repetition_circuits
run attribution        scripts/attribution_vs_patching.py --n 2 --out results/attribution_vs_patching
run sae_train          scripts/sae_train.py --train-sentences 80 --epochs 2 --eval-sentences 8 --n-label 8 --out results/sae_tiny
run sae_steering       scripts/sae_steering.py --langs en de fr --epochs 2 --n-test 2 --out results/sae_steering
