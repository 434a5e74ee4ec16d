#!/usr/bin/env bash
# INT8 on CPU, reproduced: the SST-2 teacher (as in the quick suite, cached) as PyTorch fp32,
# PyTorch dynamic INT8, ORT fp32, ORT dynamic INT8 (per-tensor and per-channel) and ORT
# static INT8, at batch 1 and 32, sequence length 128, on the full validation split.
# Prints the report's table; the run folder is under results/. Extra arguments go to
# `compbench run` (e.g. --limit-eval 200 for a faster, noisier check).
exec "$(dirname "${BASH_SOURCE[0]}")/bench.sh" int8-cpu "$@"
