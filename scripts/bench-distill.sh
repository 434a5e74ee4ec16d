#!/usr/bin/env bash
# Distillation on SST-2, reproduced (issue #4): the MiniLM-L6 teacher fine-tuned on a 20,000-row
# subset, and 3-layer students (teacher layers 0, 2, 4) trained on the same rows with the same
# budget from soft targets (two settings, and with layer matching), the teacher's labels only,
# and the labels alone. About 1.5 hours on a 2-core CPU with an empty cache; built models are
# cached, so a second call only re-measures. Prints the report's tables, then each student's
# paired-bootstrap deltas against the teacher and the hard-label student, and its speed-ups.
# Extra arguments go to `compbench run`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export BENCH_REPORT_ARGS="--reference hard-label-3layer"
export BENCH_RUN_ID="distill-sst2-$(date +%Y%m%d-%H%M%S)"
status=0
"$root/scripts/bench.sh" distill-sst2 "$@" || status=$?
exit "$status"
