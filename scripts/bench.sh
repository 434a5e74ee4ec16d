#!/usr/bin/env bash
# Runs suites/SUITE.yaml into results/RUN_ID (RUN_ID from $BENCH_RUN_ID, or SUITE-DATE-TIME)
# and prints its report's tables. Extra arguments go to `compbench run`.
#   scripts/bench.sh int8-cpu [--limit-eval 200]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
suite="${1:?usage: scripts/bench.sh SUITE [compbench run options]}"
shift
"$root/scripts/setup.sh"
cd "$root"
run_id="${BENCH_RUN_ID:-$suite-$(date +%Y%m%d-%H%M%S)}"
status=0
"$root/.venv/bin/compbench" run "suites/$suite.yaml" --run-id "$run_id" "$@" || status=$?
# the report's tables (rebuilt with BENCH_REPORT_ARGS, e.g. --reference PIPELINE, when set)
"$root/.venv/bin/compbench" report "results/$run_id" ${BENCH_REPORT_ARGS:-} | sed -n '/^## /,$p'
exit "$status"
