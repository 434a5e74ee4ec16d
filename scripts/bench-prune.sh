#!/usr/bin/env bash
# Pruning and SVD on SST-2, reproduced (issue #5): magnitude pruning at 50% / 80% (with and
# without recovery), 25% of heads + 40% of FFN neurons removed (with and without recovery), SVD
# at half the encoder's Linear parameters (with and without recovery), on PyTorch and ONNX
# Runtime, batch 1 and 32. The teacher is distill-sst2's (cached when that ran). Prints the
# report's tables, then each model's paired-bootstrap delta to the teacher, sizes and speed-ups.
# Extra arguments go to `compbench run`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export BENCH_RUN_ID="prune-sst2-$(date +%Y%m%d-%H%M%S)"
status=0
"$root/scripts/bench.sh" prune-sst2 "$@" || status=$?
exit "$status"
