#!/usr/bin/env bash
# The runs behind docs/RESULTS.md, at the settings it quotes (CPU). Each writes results/<experiment>/ and
# prints its tables (the paper's numbers beside ours); logs go to results/logs/.
# PAPER=1 runs the paper's own sizes where the scripts default to them (4.1: 2,000/500 gender, 600 per accent;
# 4.2: 150 + 200 transcripts; these take hours on CPU and want a GPU: add --device cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p results/logs
run() { local name=$1; shift; echo "== $name: $*"; /usr/bin/time -f "$name %e s wall, %U s user" python "$@" > "results/logs/$name.log" 2>&1 || echo "$name FAILED (see results/logs/$name.log)"; tail -n 2 "results/logs/$name.log"; }
if [ "${PAPER:-0}" = 1 ]; then
  run probing        scripts/probing_enrichment.py --out results/probing_enrichment
  run hallucination  scripts/hallucination_monitoring.py --out results/hallucination
  run semantics      scripts/encoder_semantics.py --n 48 --out results/encoder_semantics
  run lens           scripts/lens_experiments.py --models whisper-tiny.en whisper-base --n-per-language 16 --out results/lens
  run nonspeech      scripts/nonspeech_hallucination.py --n-per-kind 8 --n-speech 16 --out results/nonspeech
  exit 0
fi
run nonspeech          scripts/nonspeech_hallucination.py --n-per-kind 2 --n-speech 4 --out results/nonspeech
run lens               scripts/lens_experiments.py --models whisper-tiny.en whisper-base --n-sentences 6 --n-per-language 3 --tuned-steps 50 --out results/lens
run probing            scripts/probing_enrichment.py --n 12 --out results/probing_enrichment
run hallucination      scripts/hallucination_monitoring.py --n 12 --out results/hallucination
run semantics          scripts/encoder_semantics.py --n 24 --out results/encoder_semantics
run acoustic_context   scripts/acoustic_contextual.py --n 8 --out results/acoustic_contextual
run repetition         scripts/repetition_circuits.py --n-per-kind 2 --max-new-tokens 80 --out results/repetition_circuits
run attribution        scripts/attribution_vs_patching.py --n 2 --out results/attribution_vs_patching
run sae_train          scripts/sae_train.py --train-sentences 80 --epochs 2 --eval-sentences 8 --n-label 8 --out results/sae_tiny
run sae_steering       scripts/sae_steering.py --langs en de fr --epochs 2 --n-test 2 --out results/sae_steering
