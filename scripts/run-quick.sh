#!/usr/bin/env bash
# The main job, offline: set up .venv if needed, then run the quick suite on the packaged
# MiniLM weights and the GLUE data beside the repository (../shared/data/glue).
# Extra arguments go to `compbench run` (e.g. --data-dir, --limit-train).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
cd "$root"
exec "$root/.venv/bin/compbench" run suites/quick.yaml "$@"
