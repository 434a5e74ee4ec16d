"""``ModelArtifact``: the common model interface every compressor and backend shares.

An artifact is a folder holding the model in one declared format, its tokenizer, and
``compbench.json`` (task, label count, format, lineage, recipe hash, and the seal: each file's size
and sha256). The store (``cache.store``) writes it aside and renames it into place, so a folder that
exists is whole, and checks the seal before the artifact is used.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from compbench.common.errors import CompbenchError, UnreadableArtifactError, UnsupportedError
from compbench.common.hashing import stable_hash
from compbench.models.formats import FORMATS, ArtifactFormat
from compbench.models.formats.base import GGUF_EXPORTS, ONNX_EXPORTS, OPENVINO_EXPORTS
from compbench.models.kinds import CAUSAL_LM, SEQUENCE_CLASSIFICATION, model_kind

META_FILE = "compbench.json"
# A quantized model's record of its source's (parameters, non-zero parameters), written when it is built and sealed
# with it: quantization keeps every parameter, and a weight that rounds to zero is not pruned, which the stored
# integers alone cannot tell from a weight that was zero before.
SOURCE_PARAMETERS = "source_parameters.json"
# Folders an artifact gains after it is built, caches of what is computed from it: outside its seal
# (each keeps its own). ONNX exports and OpenVINO IR, one subfolder per converter version; a teacher's logits on
# training rows; the text a causal-LM teacher wrote for sequence-level distillation.
TEACHER_LOGITS = "teacher-logits"
TEACHER_WRITTEN = "generated"
DERIVED = (ONNX_EXPORTS, OPENVINO_EXPORTS, GGUF_EXPORTS, TEACHER_LOGITS, TEACHER_WRITTEN)


@dataclass
class ModelArtifact:
    path: Path
    task: str
    num_labels: int
    format: str
    hash: str
    lineage: list[dict] = field(default_factory=list)
    precision: str = "fp32"   # of the stored weights: fp32, fp16, int8-dynamic, int8-static, int8-bnb, ...
    files: dict = field(default_factory=dict)   # the seal: relative path -> {"bytes", "sha256"}
    kind: str = SEQUENCE_CLASSIFICATION         # what the model does: sequence-classification or causal-lm

    @property
    def content_hash(self) -> str:
        """The hash of the bytes this artifact holds (its seal): what a measurement of it names."""
        return stable_hash(self.files) if self.files else ""

    @classmethod
    def load(cls, path: Path | str) -> "ModelArtifact":
        path = Path(path)
        meta = json.loads((path / META_FILE).read_text())
        return cls(path=path, **meta)

    def write_meta(self) -> None:
        meta = {k: v for k, v in asdict(self).items() if k != "path"}
        (self.path / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))

    @property
    def is_causal_lm(self) -> bool:
        return self.kind == CAUSAL_LM

    @property
    def model_format(self) -> ArtifactFormat:
        try:
            return FORMATS[self.format]
        except KeyError:
            raise CompbenchError(
                f"{self.path / META_FILE}: unknown model format {self.format!r}; known: {', '.join(FORMATS)}"
            ) from None

    def deployed_files(self) -> list[Path]:
        return self.model_format.deployed_files(self.path)

    def size_bytes(self) -> int:
        """Bytes on disk of what would be deployed (weights and model config, not the tokenizer)."""
        return files_size(self.deployed_files())

    def onnx_files(self) -> list[Path]:
        """The model as ONNX (exported on first use and cached in the artifact), then external data."""
        if self.format == "hf" and self.precision != "fp32":
            raise UnsupportedError(f"{self.precision} weights are not exported to ONNX here; "
                                   "quantize for onnxruntime with ort-dynamic or ort-static")
        return self.model_format.onnx_files(self.path)

    def parameter_counts(self) -> tuple[int, int]:
        """(parameters, non-zero parameters): a quantized model's are its source's (``SOURCE_PARAMETERS``), any
        other model's as its format counts them."""
        record = self.path / SOURCE_PARAMETERS
        if not record.exists():
            return self.model_format.parameter_counts(self.path)
        try:
            counts = json.loads(record.read_text())
            params, nonzero = int(counts["params"]), int(counts["nonzero_params"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UnreadableArtifactError(f"{record}: not a record of parameter counts ({type(exc).__name__}: "
                                          f"{exc}); remove the artifact folder {self.path} and it is built again") \
                from None
        return params, nonzero

    def keep_source_parameters(self, source: "ModelArtifact") -> None:
        """Record ``source``'s parameter counts as this model's (a quantization of it), before it is sealed."""
        params, nonzero = source.parameter_counts()
        (self.path / SOURCE_PARAMETERS).write_text(json.dumps(
            {"params": params, "nonzero_params": nonzero, "source": source.hash}, indent=1))

    def torch_model(self, device: str = "cpu"):
        return self.model_format.load_torch(self.path, device)

    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.path)


def files_size(paths: list[Path]) -> int:
    return sum(Path(p).stat().st_size for p in paths)


def save_hf_artifact(
    folder: Path, model, tokenizer, *, task: str, lineage: list[dict], precision: str = "fp32"
) -> ModelArtifact:
    """Write a PyTorch model + tokenizer as an ``hf`` artifact (hash filled in by the store)."""
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return ModelArtifact(path=folder, task=task, num_labels=model.config.num_labels, format="hf", hash="",
                         lineage=lineage, precision=precision, kind=model_kind(model.config))
