"""Every compressor on every encoder family, through the real pipeline build and both backends.

Each family is a tiny randomly initialised model (hidden 32, 2 heads, 2 layers, FFN 64) built from its
``transformers`` config class, with the packaged MiniLM tokenizer (vocab 30522; the weights are random,
so a family's own tokenizer would add nothing). Families whose tokenizers give no ``token_type_ids``
(RoBERTa, XLM-R, DistilBERT, MPNet) get a tokenizer that gives none, as theirs do.

Each (family, compressor) either builds a model that loads and runs on the backends listed for the
compressor (logits of the right shape, finite, and the same on both backends), or is refused with an
``UnsupportedError`` whose message says why. ``EXPECTED`` is the matrix measured here: a change in what
works shows up as a failure, and the matrix is printed at the end of the module.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from compbench.backends.torch import TorchSession
from compbench.cache.store import ArtifactStore
from compbench.common.cpu_features import native_precision_problem
from compbench.common.errors import UnsupportedError
from compbench.common.plugins import BACKENDS
from compbench.common.progress import Reporter
from compbench.compressors.chain import PipelineBuild
from compbench.config.backends import BackendOptions
from compbench.config.schema import PipelineConfig, StepConfig
from compbench.models.artifact import ModelArtifact, save_hf_artifact
from compbench.models.families import FAMILIES, GENERIC_LAYER_LINEARS, family_of, layer_linears
from compbench.tasks.data import load_task_data
from compbench.tasks.encoding import encode_rows, pad_batch
from compbench.tasks.glue import get_task
from compbench.tasks.sources import ParquetFolderSource

SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
NO_SEGMENTS = ["input_ids", "attention_mask"]     # tokenizers of RoBERTa, XLM-R, DistilBERT, MPNet


def family_configs() -> dict:
    """model_type -> (config, tokenizer's model_input_names or None for the MiniLM tokenizer's own)."""
    import transformers as hf

    common = dict(vocab_size=30522, num_labels=2, max_position_embeddings=128)
    return {
        "bert": (hf.BertConfig(**SIZES, **common), None),
        "distilbert": (hf.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **common), NO_SEGMENTS),
        "roberta": (hf.RobertaConfig(**SIZES, **common, type_vocab_size=1), NO_SEGMENTS),   # as roberta-base
        "xlm-roberta": (hf.XLMRobertaConfig(**SIZES, **common, type_vocab_size=1), NO_SEGMENTS),
        # DeBERTa-v3's settings: relative attention with log buckets, shared keys, no absolute positions, no segments
        "deberta-v2": (hf.DebertaV2Config(**SIZES, **common, relative_attention=True, pos_att_type=["p2c", "c2p"],
                                          position_buckets=32, max_relative_positions=-1, norm_rel_ebd="layer_norm",
                                          share_att_key=True, position_biased_input=False, type_vocab_size=0),
                       None),
        "deberta": (hf.DebertaConfig(**SIZES, **common, relative_attention=True, pos_att_type=["c2p", "p2c"],
                                     type_vocab_size=0), None),
        "electra": (hf.ElectraConfig(**SIZES, **common, embedding_size=16), None),
        "albert": (hf.AlbertConfig(**SIZES, **common, embedding_size=16), None),
        "mpnet": (hf.MPNetConfig(**SIZES, **common), NO_SEGMENTS),
    }


MODEL_TYPES = ["bert", "distilbert", "roberta", "xlm-roberta", "deberta-v2", "deberta", "electra", "albert", "mpnet"]
BOTH = ("torch", "onnxruntime")
TRAIN = {"max_steps": 2, "batch_size": 8, "learning_rate": 1e-3}
# compressor column -> (step, or None for the uncompressed model; the backends its model runs on)
CELLS: dict[str, tuple[dict | None, tuple[str, ...]]] = {
    "baseline": (None, BOTH),
    "quantize dynamic": ({"compressor": "quantize", "params": {"method": "dynamic"}}, ("torch",)),
    "quantize fp16": ({"compressor": "quantize", "params": {"method": "fp16"}}, ("torch",)),    # on the CPU
    "quantize ort-dynamic": ({"compressor": "quantize", "params": {"method": "ort-dynamic"}}, ("onnxruntime",)),
    "quantize ort-static": ({"compressor": "quantize", "params": {"method": "ort-static", "calibration_rows": 16}},
                            ("onnxruntime",)),
    "quantize ort-fp16": ({"compressor": "quantize", "params": {"method": "ort-fp16"}}, ("onnxruntime",)),
    "prune magnitude": ({"compressor": "prune", "params": {"method": "magnitude", "amount": 0.5}}, BOTH),
    "prune heads": ({"compressor": "prune", "params": {"method": "heads", "amount": 0.5, "importance_rows": 16}},
                    BOTH),
    "prune ffn": ({"compressor": "prune", "params": {"method": "ffn", "amount": 0.5, "importance_rows": 16}}, BOTH),
    "svd": ({"compressor": "svd", "params": {"rank": 8}}, BOTH),
    # layer matching on: hidden states and attention maps through the family's config names
    "distill layers": ({"compressor": "distill", "params": {
        "student": {"layers": [1]}, "hidden_weight": 1.0, "attention_weight": 1.0, "keep_best": False,
        "train": TRAIN}}, BOTH),
    "distill sized": ({"compressor": "distill", "params": {
        "student": {"num_layers": 1, "hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32},
        "hidden_weight": 1.0, "keep_best": False, "train": TRAIN}}, BOTH),
}

OK = "ok"
# What is refused, and a phrase of the reason; every other (family, compressor) works on its backends.
REFUSED = {
    ("deberta-v2", "prune heads"): "DeBERTa (v1 and v2) implements no prune_heads",
    ("deberta", "prune heads"): "DeBERTa (v1 and v2) implements no prune_heads",
    ("mpnet", "prune heads"): "not the relative position bias",
    ("albert", "distill layers"): "shares one set of layer weights",
}
EXPECTED = {(family, cell): REFUSED.get((family, cell), OK) for family in MODEL_TYPES for cell in CELLS}
MEASURED: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module", autouse=True)
def print_matrix(request):
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if MEASURED and capture is not None and reporter is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\n" + matrix_markdown(MEASURED))


def matrix_markdown(measured: dict[tuple[str, str], str]) -> str:
    """family x compressor: ``ok`` (built, and ran on the compressor's backends) or ``skipped (n)``, reasons below."""
    cells = [cell for cell in CELLS if any((family, cell) in measured for family in MODEL_TYPES)]
    short = {"torch": "torch", "onnxruntime": "ort"}
    lines = ["| family | " + " | ".join(f"{cell} ({'+'.join(short[b] for b in CELLS[cell][1])})" for cell in cells)
             + " |", "|---" * (len(cells) + 1) + "|"]
    reasons: list[str] = []
    for family in MODEL_TYPES:
        row = []
        for cell in cells:
            outcome = measured.get((family, cell), "")
            if outcome.startswith("skipped: "):
                reasons.append(f"({len(reasons) + 1}) {family} / {cell}: {outcome.removeprefix('skipped: ')}")
                outcome = f"skipped ({len(reasons)})"
            row.append(outcome)
        if any(row):
            lines.append(f"| {family} | " + " | ".join(row) + " |")
    return "\n".join(lines + [""] + reasons)


@pytest.fixture(scope="module")
def sst2(glue_data):
    return load_task_data(get_task("sst2"), ParquetFolderSource(glue_data / "glue"), limit_train=32, limit_eval=16,
                          seed=0)


@pytest.fixture(scope="module")
def builds(minilm_path, sst2, tmp_path_factory):
    """model_type -> PipelineBuild from that family's tiny teacher (built on first use)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    configs, made = family_configs(), {}

    def build(model_type: str) -> PipelineBuild:
        if model_type not in made:
            config, input_names = configs[model_type]
            torch.manual_seed(0)
            model = AutoModelForSequenceClassification.from_config(config).eval()
            tokenizer = AutoTokenizer.from_pretrained(minilm_path, **(
                {"model_input_names": input_names} if input_names else {}))
            store = ArtifactStore(tmp_path_factory.mktemp(f"family-{model_type}"))
            teacher = store.build("teacher", lambda folder: save_hf_artifact(folder, model, tokenizer, task="sst2",
                                                                             lineage=[]))
            made[model_type] = PipelineBuild(teacher, sst2, store, seed=0, device="cpu",
                                             reporter=Reporter(enabled=False), max_seq_len=32)
        return made[model_type]

    return build


def logits_on(artifact: ModelArtifact, backend: str, batch: dict[str, np.ndarray]) -> np.ndarray:
    if backend == "torch" and artifact.precision == "fp16" and native_precision_problem("fp16"):
        # the torch backend refuses to time emulated fp16 on this CPU; the numbers are still PyTorch's to check
        session = TorchSession(artifact.torch_model().eval(), torch.device("cpu"), 1, [])
    else:
        session = BACKENDS.get(backend)().load(artifact, BackendOptions(name=backend, threads=1))
    try:
        return session.run(batch)
    finally:
        session.close()


def check_structure(cell: str, artifact: ModelArtifact) -> None:
    """What the compressor did, seen through the family's table (so the table matches the model)."""
    if cell not in ("quantize dynamic", "prune heads", "prune ffn", "svd", "distill layers", "distill sized",
                    "prune magnitude"):
        return
    module = artifact.torch_model()
    family = family_of(module)
    layers = family.layer_list(module)
    if cell == "quantize dynamic":       # every table 8-bit but those read whole (DeBERTa's relative positions)
        tables = {name: type(m) for name, m in module.named_modules()
                  if isinstance(m, (torch.nn.Embedding, torch.ao.nn.quantized.Embedding))}
        assert tables and all((kind is torch.nn.Embedding) == (name in family.whole_embeddings)
                              for name, kind in tables.items()), tables
    elif cell == "prune heads":            # one head of two gone in every (physical) layer
        assert artifact.lineage[-1]["heads_removed"] == len(layers)
        assert all(family.part(layer, family.attention_output).in_features == 16 for layer in layers)
        assert all(linear.out_features == 16 for layer in layers for linear in family.head_projections(layer))
    elif cell == "prune ffn":
        assert family.ffn_size(module.config) == 32
        assert all(family.part(layer, family.ffn_out).in_features == 32 for layer in layers)
    elif cell == "svd":                  # rank 8 is below break-even for every Linear of every layer
        record = artifact.lineage[-1]
        assert record["left_dense"] == {} and len(record["ranks"]) == 6 * len(layers), record["ranks"]
    elif cell == "distill layers":
        assert family.num_layers(module.config) == 1
    elif cell == "distill sized":        # the sizes went into the family's own config fields
        config = module.config
        assert (family.num_layers(config), family.hidden_size(config), family.ffn_size(config)) == (1, 16, 32)
        assert all(family.part(layer, family.ffn_in).weight.shape == (32, 16) for layer in layers)
    elif cell == "prune magnitude":
        assert artifact.lineage[-1]["sparsity"] == pytest.approx(0.5, abs=0.01)
        assert artifact.lineage[-1]["pruned_modules"] == 6 * len(layers)


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_compressor_on_every_family(builds, sst2, model_type, cell):
    build = builds(model_type)
    step, backends = CELLS[cell]
    try:
        artifact = build.teacher if step is None else build.run(
            PipelineConfig(name=cell.replace(" ", "-"), steps=[StepConfig(**step)]))
    except UnsupportedError as exc:
        MEASURED[(model_type, cell)] = f"skipped: {exc}"
        expected = EXPECTED[(model_type, cell)]
        assert expected != OK, f"{model_type} / {cell} refused: {exc}"
        assert expected in str(exc)
        return
    check_structure(cell, artifact)
    tokenizer = artifact.tokenizer()
    rows = encode_rows(tokenizer, sst2.task, sst2.eval["validation"][:4], 32)
    batch = pad_batch(tokenizer, rows.features)
    outputs = {backend: logits_on(artifact, backend, batch) for backend in backends}
    for backend, logits in outputs.items():
        assert logits.shape == (4, 2) and np.isfinite(logits).all(), (backend, logits)
    if len(outputs) == 2:
        np.testing.assert_allclose(outputs["onnxruntime"], outputs["torch"], atol=1e-4)
    MEASURED[(model_type, cell)] = OK
    assert EXPECTED[(model_type, cell)] == OK, f"{model_type} / {cell} was expected to be refused, and works"


def test_the_table_covers_the_families_and_refuses_others_by_name():
    from transformers import GPT2Config

    assert set(MODEL_TYPES) <= set(FAMILIES)
    with pytest.raises(UnsupportedError, match=r"model_type 'gpt2'.*supported: albert, bert, deberta"):
        family_of(GPT2Config())
    # magnitude pruning and SVD need no table: without one, their default modules are BERT's naming
    assert layer_linears(GPT2Config()) == GENERIC_LAYER_LINEARS


def tiny_models() -> dict:
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return {model_type: AutoModelForSequenceClassification.from_config(config).eval()
            for model_type, (config, _) in family_configs().items()}


def test_weight_importance_reads_each_familys_projections():
    """Head and neuron scores from the weights (no data), then the heads and neurons removed, per family."""
    from compbench.compressors.prune import PruneParams, head_importance, heads_to_prune, neuron_importance, shrink_ffn

    params = PruneParams(method="heads", amount=0.5, importance="weight")
    ids = torch.randint(1000, 2000, (2, 7))
    for model_type, model in tiny_models().items():
        family = family_of(model)
        physical = len(family.layer_list(model))
        scores = neuron_importance(model, None, None, params.model_copy(update={"method": "ffn"}))
        assert [tuple(layer.shape) for layer in scores] == [(64,)] * physical
        shrink_ffn(model, [torch.argsort(layer, descending=True)[:24] for layer in scores])
        assert family.ffn_size(model.config) == 24
        if (model_type, "prune heads") in REFUSED:
            with pytest.raises(UnsupportedError, match=re.escape(REFUSED[(model_type, "prune heads")])):
                head_importance(model, None, None, params)
        else:
            scores = head_importance(model, None, None, params)
            assert scores.shape == (physical, 2) and (scores > 0).all()
            model.prune_heads(heads_to_prune(scores, 0.5))
        assert model(input_ids=ids).logits.shape == (2, 2), model_type


def test_layer_subsets_copy_each_familys_layers_and_renumber_pruned_heads():
    from compbench.training.students import layer_subset

    for model_type, teacher in tiny_models().items():
        family = family_of(teacher)
        if family.shared_layers:
            with pytest.raises(UnsupportedError, match="give the student num_layers"):
                layer_subset(teacher, [1])
            continue
        student = layer_subset(teacher, [1])
        assert family.num_layers(student.config) == 1
        copied, source = family.layer_list(student)[0].state_dict(), family.layer_list(teacher)[1].state_dict()
        assert copied.keys() == source.keys() and all(torch.equal(copied[k], source[k]) for k in copied), model_type
    bert = tiny_models()["bert"]
    bert.prune_heads({1: [0]})
    student = layer_subset(bert, [1])     # teacher layer 1 (one head left) is the student's layer 0
    assert student.config.pruned_heads == {0: [0]}
    assert student.bert.encoder.layer[0].attention.self.query.out_features == 16
