"""``quantize`` method ``gguf``: the model as a GGUF file of type ``gguf_type`` (format ``gguf``), for the
``llamacpp`` backend.

- ``f32``, ``f16``, ``bf16``: the fp32 model written by compbench's GGUF writer (``models.gguf_export``) with its
  matrices in that type (norms in F32).
- ``q8_0``, ``q6_k``, ``q5_k_m``, ``q4_k_m``, ``q4_0``: llama.cpp's own quantizer (``llama_model_quantize``, as
  ``llama-quantize`` runs it) on the F32 file, with llama.cpp's choices per tensor (the ``_m`` mixes keep some
  matrices at more bits, and a tied token table, which is also the output, at Q6_K or more); the lineage lists the
  elements stored per type.
- ``imatrix: true``: an importance matrix from ``calibration_rows`` seeded chunks of the task's training text (never
  its evaluation text): the mean square of every matrix's input per column, computed with PyTorch hooks on the fp32
  model, as ``llama-imatrix`` computes it on llama.cpp's graph, handed to the quantizer
  (``llama_model_quantize_params.imatrix``), which then weights each column's rounding error by it.

The chain is always: the fp32 model (for SmolLM2, its Q4_1 GGUF de-quantized to fp32) -> F32 GGUF -> the type; the
lineage says so. The step's key covers llama-cpp-python's and gguf's versions and this module's code version.
"""

from __future__ import annotations

import ctypes
import time

import numpy as np

from compbench.common.envinfo import package_versions, usable_cores
from compbench.common.errors import UnsupportedError
from compbench.common.hashing import stable_hash
from compbench.compressors.base import CompressContext
from compbench.compressors.quantize import QuantizeParams, finish, method
from compbench.models.artifact import ModelArtifact
from compbench.models.formats.gguf import FLOAT_TYPES, GGUF_FILE, gguf_tensor_types

CODE_VERSION = "1"
LIBRARIES = ("llama-cpp-python", "gguf")
# gguf_type -> llama.cpp's llama_ftype (llama.h)
FILE_TYPES = {"q8_0": 7, "q6_k": 18, "q5_k_m": 17, "q4_k_m": 15, "q4_0": 2}


def key_material() -> dict:
    return {"gguf_code_version": CODE_VERSION, "gguf_libraries": package_versions(LIBRARIES)}


@method("gguf")
def gguf(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext) -> ModelArtifact:
    from compbench.models.gguf_export import gguf_file, write_gguf

    if not model.is_causal_lm:
        raise UnsupportedError("quantize method gguf writes causal LMs (llama.cpp runs them), not a classifier")
    target = ctx.work_dir / GGUF_FILE
    details: dict = {"type": params.gguf_type}
    start = time.perf_counter()
    if params.gguf_type in FLOAT_TYPES:
        details["made_by"] = write_gguf(model, target, params.gguf_type)
        details["chain"] = f"fp32 model -> {params.gguf_type.upper()} GGUF (compbench's writer)"
    else:
        llama_cpp = _llama_cpp()
        source = gguf_file(model)
        imatrix = None
        if params.imatrix:
            imatrix, details["imatrix"] = importance_matrix(model, ctx, params.calibration_rows)
        quantize_file(llama_cpp, source, target, FILE_TYPES[params.gguf_type], imatrix)
        details["made_by"] = f"llama_model_quantize (llama-cpp-python {llama_cpp.__version__})"
        details["chain"] = (f"fp32 model -> F32 GGUF (compbench's writer) -> {params.gguf_type.upper()} "
                            f"(llama.cpp{', importance matrix' if imatrix else ''})")
    details["seconds"] = round(time.perf_counter() - start, 2)
    details["tensor_types"] = gguf_tensor_types(target)
    artifact = finish(model, ctx, fmt="gguf", precision=params.gguf_type)
    artifact.lineage = [{"gguf": details}]
    return artifact


def _llama_cpp():
    from compbench.models.llama_cpp import llama_cpp_module

    llama_cpp = llama_cpp_module()
    if llama_cpp is None:
        raise UnsupportedError("quantize method gguf with a quantized type needs llama-cpp-python: scripts/setup.sh "
                               "--with llamacpp")
    return llama_cpp


def quantize_file(llama_cpp, source, target, file_type: int, imatrix: dict[str, np.ndarray] | None) -> None:
    """``llama_model_quantize`` of ``source`` into ``target``; ``imatrix``: each tensor's column importances."""
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = file_type
    params.nthread = usable_cores()
    keep = []          # the arrays the entries point into, alive until the call returns
    if imatrix:
        entries = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()     # the last, all zero, ends it
        for entry, (name, values) in zip(entries, sorted(imatrix.items())):
            array = np.ascontiguousarray(values, dtype=np.float32)
            keep.append((name.encode(), array))
            entry.name = keep[-1][0]
            entry.data = array.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entry.size = array.size
        params.imatrix = entries
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if status != 0 or not target.exists():
        raise RuntimeError(f"llama_model_quantize returned {status} for {source.name} -> type {file_type}")


def importance_matrix(model: ModelArtifact, ctx: CompressContext, count: int) -> tuple[dict[str, np.ndarray], dict]:
    """Each matrix's mean squared input per column over ``count`` seeded chunks of training text, under its GGUF
    name (a tied ``lm_head`` reads the token table: ``token_embd.weight``), and the record of what was read."""
    import gguf
    import torch

    from compbench.tasks.encoding import encode_training_rows

    torch_model = model.torch_model().eval()
    config = torch_model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name: str):
        def record(module, inputs, output) -> None:
            x = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])
            sums[name] = sums.get(name, 0) + (x * x).sum(dim=0)
            counts[name] = counts.get(name, 0) + x.shape[0]
        return record

    handles = []
    for module_name, module in torch_model.named_modules():
        if isinstance(module, torch.nn.Linear):
            if module_name == "lm_head" and tied:
                target = "token_embd.weight"
            else:
                target = names.get_name(f"{module_name}.weight", try_suffixes=(".weight",))
            if target is None:
                raise UnsupportedError(f"no llama.cpp name for the matrix {module_name}")
            handles.append(module.register_forward_hook(hook(target)))
    encoded = encode_training_rows(model.tokenizer(), ctx.data.task, ctx.data.train, ctx.max_seq_len)
    picked = np.sort(np.random.default_rng(ctx.seed).permutation(len(encoded))[:count])
    try:
        with torch.inference_mode():
            for index in picked:
                torch_model(input_ids=torch.tensor([encoded.features[index]["input_ids"]]))
    finally:
        for handle in handles:
            handle.remove()
    matrix = {name: (sums[name] / counts[name]).numpy() for name in sums}
    tokens = int(sum(len(encoded.features[index]["input_ids"]) for index in picked))
    record = {"split": "train", "chunks": len(picked), "tokens": tokens, "seed": ctx.seed, "tensors": len(matrix),
              "chunks_digest": stable_hash(encoded.labels[picked].tolist())}
    return matrix, record
