#!/usr/bin/env bash
# Distillation on SST-2 with scarce labels (suites/distill-sst2.yaml): the MiniLM-L6 teacher fine-tuned
# on 2,000 labelled rows, and 3-layer students trained with the same budget (400 steps) from the labels
# alone, soft targets, the teacher's labels, relations, peers, self-distillation and teacher-made data
# (spare rows the teacher labels, augmented copies); then the teacher-made-data student on ONNX Runtime,
# INT8, and pruned + INT8. About 75 minutes on a 2-core CPU with an empty cache; built models are cached,
# so a second call only re-measures. Prints the report's tables (each model's paired-bootstrap delta
# against the hard-label student) and `compbench recommend` within 1 point at batch 1.
# Extra arguments go to `compbench run`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export BENCH_REPORT_ARGS="--reference hard-label-3layer"
export BENCH_RUN_ID="distill-sst2-$(date +%Y%m%d-%H%M%S)"
status=0
"$root/scripts/bench.sh" distill-sst2 "$@" || status=$?
"$root/.venv/bin/compbench" recommend "$root/results/$BENCH_RUN_ID" --max-drop 1pt --batch 1 || true
exit "$status"
