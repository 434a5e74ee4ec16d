"""Export a Hugging Face model folder to ONNX: optimum's exporter first, torch.onnx as the fallback.

Both give dynamic batch and sequence axes and the inputs ``input_ids``, ``attention_mask``
(and ``token_type_ids`` where the model has more than one segment type), output ``logits``.

A causal LM is exported by optimum alone, as a decoder with past key values (task
``text-generation-with-past``: inputs ``input_ids``, ``attention_mask``, ``position_ids``,
``past_key_values.<layer>.key/value``; outputs ``logits`` (batch, tokens, vocabulary) and ``present.*``),
with ``config.json`` and ``generation_config.json`` beside it, so that optimum's ``ORTModelForCausalLM``
loads the folder. A first forward pass takes past tensors of length 0.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

from compbench.common.errors import UnsupportedError
from compbench.models.kinds import CAUSAL_LM, model_kind

ONNX_FILE = "model.onnx"

log = logging.getLogger(__name__)


def export_onnx(model_folder: Path, output_folder: Path) -> str:
    """Write ``output_folder/model.onnx``; returns which exporter made it."""
    with quiet_tracing():
        if _is_causal_lm(model_folder):
            return _export_causal_lm(Path(model_folder), output_folder)
        return _export(model_folder, output_folder)


def export_module(model, output_folder: Path) -> str:
    """``torch.onnx.export`` of a loaded sequence-classification module (any structure inside); a causal LM's
    module through optimum, as a decoder with past key values like ``export_onnx`` gives. Returns which exporter
    made it."""
    with quiet_tracing():
        if model_kind(model.config) == CAUSAL_LM:
            return _export_causal_lm(model, output_folder)
        _export_module(model, output_folder)
        return "torch.onnx"


@contextmanager
def quiet_tracing():
    with warnings.catch_warnings():
        # tracing BERT's attention mask always warns that a Python value becomes a constant: expected here
        warnings.filterwarnings("ignore", message=r"torch\.tensor results are registered as constants")
        # F.embedding checks padding_idx against the table's size (RoBERTa, XLM-R, MPNet): a constant of the model
        warnings.filterwarnings("ignore", message=r"Converting a tensor to a Python boolean",
                                module=r"torch\.nn\.functional")
        yield


def _export(model_folder: Path, output_folder: Path) -> str:
    try:
        _export_with_optimum(model_folder, output_folder)
        return "optimum"
    except Exception as exc:  # optimum does not know every architecture; torch.onnx covers the rest
        log.warning(
            "optimum could not export %s (%s: %s); falling back to torch.onnx.export",
            model_folder,
            type(exc).__name__,
            exc,
        )
        for leftover in output_folder.iterdir():
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        _export_with_torch(model_folder, output_folder)
        return "torch.onnx"


def _is_causal_lm(model_folder: Path) -> bool:
    from transformers import AutoConfig

    return model_kind(AutoConfig.from_pretrained(model_folder)) == CAUSAL_LM


def _export_causal_lm(model, output_folder: Path) -> str:
    """``model``: a folder, or a loaded module (a format rebuilt in code). No torch.onnx fallback here: a plain
    trace would have no past key values, and generation would recompute the whole prefix at every token (a
    different model to time)."""
    from optimum.exporters.onnx import main_export, onnx_export_from_model

    task = "text-generation-with-past"
    try:
        if isinstance(model, Path):
            main_export(str(model), output_folder, task=task, device="cpu", do_validation=False,
                        local_files_only=True)
        else:
            onnx_export_from_model(model.eval(), output_folder, task=task, do_validation=False)
    except Exception as exc:  # an architecture optimum-onnx cannot export with a cache
        raise UnsupportedError(f"optimum-onnx cannot export {model_folder_or_class(model)} as a decoder with past "
                               f"key values ({type(exc).__name__}: {exc})") from exc
    return f"optimum {task}"


def model_folder_or_class(model) -> str:
    return str(model) if isinstance(model, Path) else type(model).__name__


def _export_with_optimum(model_folder: Path, output_folder: Path) -> None:
    from optimum.exporters.onnx import main_export

    main_export(str(model_folder), output_folder, task="text-classification", device="cpu",
                do_validation=False, local_files_only=True)


def _export_with_torch(model_folder: Path, output_folder: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    _export_module(AutoModelForSequenceClassification.from_pretrained(model_folder), output_folder)


def _export_module(model, output_folder: Path) -> None:
    import torch

    from compbench.models.families import forward_inputs

    model = model.eval()
    model.config.return_dict = False
    # the inputs its forward takes (DistilBERT and MPNet take no token_type_ids); token_type_ids only where there
    # are segment types to tell apart (RoBERTa's and XLM-R's single type, DeBERTa-v3's none: as optimum exports them)
    names = [name for name in forward_inputs(model)
             if name != "token_type_ids" or getattr(model.config, "type_vocab_size", 0) > 1]
    example = tuple(torch.ones(2, 8, dtype=torch.long) for _ in names)
    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in names}
    axes["logits"] = {0: "batch_size"}
    torch.onnx.export(model, example, output_folder / ONNX_FILE, input_names=names, output_names=["logits"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)
