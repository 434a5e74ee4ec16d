"""An artifact as OpenVINO IR (``openvino_model.xml`` + ``.bin``), made once per converter version and cached
beside the artifact, outside its seal, as ONNX exports are.

- **Encoders** (sequence classification, any format with an ONNX export, ONNX Runtime-quantized graphs too):
  ``openvino.convert_model`` of the artifact's ONNX export. The ONNX file is the one ONNX Runtime runs, so the two
  runtimes execute the same graph (same inputs, same dynamic axes) and their parity and speed-up compare engines,
  not exporters; it is cached already, and OpenVINO's ONNX front end reads it in about a second.
- **Causal LMs**: optimum-intel's exporter (``export_from_model``) on the model as PyTorch loads it: the stateful
  decoder OpenVINO deploys (KV cache inside the graph, ``beam_idx``), with ``config.json`` and
  ``generation_config.json``, so ``OVModelForCausalLM`` loads the folder. The ONNX export is a stateless decoder
  with past key values as inputs, which OpenVINO runs slower and optimum-intel would refuse as stateful.

Weights are saved at fp32 (``compress_to_fp16=False``: OpenVINO's ``save_model`` stores fp16 by default, a second
compression nobody asked for). An artifact already stored as ``openvino`` (an NNCF build) is its own IR.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from compbench.common.envinfo import package_versions
from compbench.common.hashing import stable_hash
from compbench.models.formats.base import OPENVINO_EXPORTS, cached_export
from compbench.models.formats.openvino import OPENVINO_XML

# The converters' libraries (and the ONNX exporters' behind an encoder's graph): others make the IR again.
CONVERTER_LIBRARIES = ("openvino", "optimum-intel", "nncf", "torch", "transformers", "optimum", "optimum-onnx",
                       "onnx")


def openvino_ir(artifact) -> Path:
    """The folder holding ``artifact`` as fp32 OpenVINO IR (``OPENVINO_XML``), converted on first use."""
    if artifact.format == "openvino":
        return artifact.path
    key = stable_hash(package_versions(CONVERTER_LIBRARIES), length=12)
    target = artifact.path / OPENVINO_EXPORTS / key
    convert = _convert_causal_lm if artifact.is_causal_lm else _convert_encoder
    return cached_export(target, lambda folder: convert(artifact, folder))


def _convert_encoder(artifact, folder: Path) -> str:
    import openvino

    model = openvino.convert_model(str(artifact.onnx_files()[0]))
    openvino.save_model(model, str(folder / OPENVINO_XML), compress_to_fp16=False)
    shutil.copyfile(artifact.path / "config.json", folder / "config.json")
    return f"openvino.convert_model of the ONNX export (openvino {openvino.__version__})"


def _convert_causal_lm(artifact, folder: Path) -> str:
    from optimum.exporters.openvino import export_from_model

    from compbench.models.onnx_export import quiet_tracing

    model = artifact.torch_model().eval()
    with quiet_tracing():
        export_from_model(model, folder, task="text-generation-with-past", stateful=True)
    generation_config = artifact.path / "generation_config.json"
    if generation_config.exists() and not (folder / generation_config.name).exists():
        shutil.copyfile(generation_config, folder / generation_config.name)
    return f"optimum-intel {package_versions(('optimum-intel',))['optimum-intel']} export_from_model (stateful)"
