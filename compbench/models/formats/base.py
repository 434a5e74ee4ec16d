"""The on-disk format interface: what is deployed, how it is counted, how it loads into PyTorch
or is exported to ONNX; formats register by name.
"""

from __future__ import annotations

import json
import os
import tempfile
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, ClassVar, Iterator

from compbench.common.envinfo import package_versions
from compbench.common.errors import UnreadableArtifactError, UnsupportedError
from compbench.common.files import atomic_path
from compbench.common.hashing import stable_hash
from compbench.common.sealing import manifest_of, seal_problem, unique_aside
from compbench.models.onnx_export import ONNX_FILE, export_module

FORMATS: dict[str, "ArtifactFormat"] = {}


def register_format(cls: type["ArtifactFormat"]) -> type["ArtifactFormat"]:
    FORMATS[cls.name] = cls()
    return cls


class ArtifactFormat(ABC):
    name: ClassVar[str]

    @abstractmethod
    def deployed_files(self, folder: Path) -> list[Path]:
        """The files a deployment of this model ships (weights and model config)."""

    @abstractmethod
    def parameter_counts(self, folder: Path) -> tuple[int, int]:
        """(parameters, non-zero parameters) as stored."""

    def load_torch(self, folder: Path, device: str = "cpu"):
        raise UnsupportedError(f"a model in the {self.name!r} format cannot be loaded into PyTorch")

    def onnx_files(self, folder: Path) -> list[Path]:
        """The ONNX model file first, then any external-data files it references."""
        raise UnsupportedError(f"a model in the {self.name!r} format cannot be exported to ONNX")


# The exporters' libraries: a graph exported with other versions of them is exported again.
EXPORT_LIBRARIES = ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxscript")


ONNX_EXPORTS = "onnx"           # in an artifact's folder: its ONNX exports, one subfolder per exporter version
OPENVINO_EXPORTS = "openvino"   # ... and its OpenVINO IR, one subfolder per converter version (models.openvino_export)
GGUF_EXPORTS = "gguf"           # ... and its GGUF file, one subfolder per writer version (models.gguf_export)
EXPORT_SEAL = "seal.json"       # in an export's folder: its files' sizes and sha256


def onnx_export_dir(folder: Path) -> Path:
    """``<artifact>/onnx/<key>/``: the export of this artifact by this machine's exporter versions."""
    return folder / ONNX_EXPORTS / stable_hash(package_versions(EXPORT_LIBRARIES), length=12)


def cached_onnx_export(folder: Path, export: Callable[[Path], str]) -> list[Path]:
    """The artifact in ``folder`` as ONNX, exported once per exporter version into ``onnx_export_dir``
    (``cached_export``); ``export(tmp_folder)`` writes the model there and returns which exporter made it."""
    return onnx_model_files(cached_export(onnx_export_dir(folder), export) / ONNX_FILE)


def cached_export(target: Path, export: Callable[[Path], str]) -> Path:
    """The folder holding what ``export(tmp_folder)`` writes (it returns which exporter made it), made on first use
    in ``target`` (written aside, sealed, then renamed); an export that no longer matches its seal is moved aside
    and made again; where the cache cannot be written (read-only, full) the export goes to a temporary folder of
    this process instead, which is returned."""
    problem = _export_problem(target)
    if problem is None:
        return target
    if target.exists():
        try:
            os.rename(target, unique_aside(target, "damaged"))
        except FileNotFoundError:     # another process moved it first
            pass
        except OSError as exc:
            raise UnreadableArtifactError(f"{problem}; it cannot be replaced ({exc.strerror}): remove {target}") \
                from None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target, folder=True) as tmp:
            _sealed_export(tmp, export)
    except OSError:
        target = Path(tempfile.mkdtemp(prefix="compbench-export-"))
        _sealed_export(target, export)
    return target


def _sealed_export(folder: Path, export: Callable[[Path], str]) -> None:
    (folder / "exporter.txt").write_text(export(folder) + "\n")
    (folder / EXPORT_SEAL).write_text(json.dumps(manifest_of(folder, (EXPORT_SEAL,)), indent=1))


def _export_problem(target: Path) -> str | None:
    """What is wrong with the export in ``target`` (None: it matches its seal)."""
    try:
        manifest = json.loads((target / EXPORT_SEAL).read_text())
    except (OSError, ValueError):
        return f"{target / EXPORT_SEAL}: missing or unreadable"
    return seal_problem(target, manifest, (EXPORT_SEAL,))


class TorchModuleFormat(ArtifactFormat):
    """Formats whose PyTorch module is rebuilt in code (not by ``from_pretrained``): ONNX comes
    from exporting that module."""

    def onnx_files(self, folder: Path) -> list[Path]:
        return cached_onnx_export(folder, lambda tmp: export_module(self.load_torch(folder), tmp))


def onnx_model_files(model_file: Path) -> list[Path]:
    """The ONNX file and the external-data files its initializers point to."""
    import onnx

    model = onnx.load(str(model_file), load_external_data=False)
    external = {
        entry.value
        for tensor in model.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return [model_file] + sorted(model_file.parent / name for name in external)


@contextmanager
def reading_safetensors(path: Path) -> Iterator[None]:
    """Reading the safetensors file ``path``: a file the library cannot read (cut off, damaged, not safetensors,
    gone) is an error naming it and saying what to do, not the library's message without a path."""
    from safetensors import SafetensorError

    try:
        yield
    except (SafetensorError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise UnreadableArtifactError(
            f"{path}: not a readable safetensors file ({reason}); remove the artifact folder {Path(path).parent} "
            "and it is built again"
        ) from exc


def checked_safetensors(folder: Path) -> list[Path]:
    """The folder's ``*.safetensors`` files, each one's header read and checked against its size (cheap: no
    tensor is read), so that a damaged file is named before a loader that would not name it reads them."""
    from safetensors import safe_open

    files = sorted(Path(folder).glob("*.safetensors"))
    for path in files:
        with reading_safetensors(path), safe_open(str(path), framework="pt"):
            pass
    return files
