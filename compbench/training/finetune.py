"""Fine-tuning the base model into the task teacher (cached by content hash)."""

from __future__ import annotations

from compbench.cache.store import ArtifactStore
from compbench.common.envinfo import package_versions
from compbench.common.hashing import stable_hash
from compbench.common.progress import Reporter
from compbench.config.training import TrainConfig
from compbench.models.artifact import ModelArtifact, save_hf_artifact
from compbench.models.references import ResolvedModel
from compbench.tasks.data import TaskData, frame_digest
from compbench.tasks.encoding import encode_rows
from compbench.tasks.glue import TaskSpec
from compbench.training.evaluation import validation_evaluator
from compbench.training.loop import fit, seed_everything

# Bump when fine-tuning changes what it produces for the same inputs (part of the cache key).
FINETUNE_VERSION = "2"
# Libraries whose versions the trained weights depend on (a new one trains again).
TRAINING_LIBRARIES = ("torch", "transformers", "safetensors", "numpy")


def teacher_key(base: ResolvedModel, data: TaskData, config: TrainConfig) -> str:
    """Depends on the base weights, the training rows and the budget: not on eval rows."""
    return stable_hash({
        "kind": "finetune", "version": FINETUNE_VERSION, "base": base.identity, "task": data.task.name,
        "train_rows": frame_digest(data.train).hex(), "config": config.model_dump(),
        "libraries": package_versions(TRAINING_LIBRARIES),
    })


def finetuned_teacher(
    base: ResolvedModel, data: TaskData, config: TrainConfig, store: ArtifactStore, reporter: Reporter
) -> ModelArtifact:
    key = teacher_key(base, data, config)
    cached = store.get(key)
    if cached is not None:
        reporter.log(f"{data.task.name}: teacher from cache ({cached.path})")
        return cached
    return store.build(key, lambda folder: _finetune(folder, base, data, config, reporter))


def load_base_for_task(location: str, task: TaskSpec):
    """The base model with a fresh classification (or regression) head for ``task``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()   # "newly initialised head" is expected here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            location,
            num_labels=task.num_labels,
            problem_type="regression" if task.is_regression else "single_label_classification",
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    return model, AutoTokenizer.from_pretrained(location)


def _finetune(folder, base: ResolvedModel, data: TaskData, config: TrainConfig, reporter: Reporter) -> ModelArtifact:
    task = data.task
    seed_everything(config.seed)   # the new head's initialisation is part of the seeded run
    model, tokenizer = load_base_for_task(base.location, task)
    train_rows = encode_rows(tokenizer, task, data.train, config.max_seq_len)
    evaluate, split = validation_evaluator(data, tokenizer, config.max_seq_len)
    reporter.log(f"{task.name}: fine-tuning {base.reference} on {len(train_rows)} rows ({data.source})")
    result = fit(
        model, tokenizer, train_rows, config, evaluate=evaluate, reporter=reporter, description=f"{task.name} teacher"
    )
    score = result.history[-1]["score"]
    reporter.log(f"{task.name}: teacher {task.metric_names[0]} on {split}: {score:.4f} after {result.steps} steps "
                 f"({result.seconds:.0f}s)")
    lineage = [{
        "step": "finetune", "base": base.reference, "base_identity": base.identity, "params": config.model_dump(),
        "train_rows": len(train_rows), "steps": result.steps, "seconds": round(result.seconds, 1),
        "final_loss": result.final_loss, "history": result.history,
    }]
    return save_hf_artifact(folder, model, tokenizer, task=task.name, lineage=lineage)


