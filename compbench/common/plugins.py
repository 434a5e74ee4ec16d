"""The registries of compressors and backends that suites name.

Built-ins are listed as ``"module:Class"`` and imported on first use (as lm-eval-harness
registers its tasks), so only a command that builds or measures imports torch;
third-party packages add theirs through the entry-point groups ``compbench.compressors`` and
``compbench.backends`` (see ``examples/compbench-layerdrop``).
"""

from __future__ import annotations

from compbench.common.registry import Registry

COMPRESSORS: Registry = Registry(
    "compressor", "compbench.compressors", base="compbench.compressors.base:Compressor",
    builtins={
        "distill": "compbench.compressors.distill:Distill",
        "prune": "compbench.compressors.prune:Prune",
        "quantize": "compbench.compressors.quantize:Quantize",
        "svd": "compbench.compressors.svd:Svd",
    })

BACKENDS: Registry = Registry(
    "backend", "compbench.backends", base="compbench.backends.base:Backend",
    builtins={
        "llamacpp": "compbench.backends.llamacpp:LlamaCppBackend",
        "onnxruntime": "compbench.backends.onnxruntime:OnnxRuntimeBackend",
        "openvino": "compbench.backends.openvino:OpenVinoBackend",
        "torch": "compbench.backends.torch:TorchBackend",
    })
