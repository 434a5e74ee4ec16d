"""Fine-tuning the base model into the task teacher (cached by content hash)."""

from __future__ import annotations

from compbench.cache.store import ArtifactStore
from compbench.common.envinfo import package_versions
from compbench.common.errors import UsageError
from compbench.common.hashing import stable_hash
from compbench.common.progress import Reporter
from compbench.config.training import TeacherConfig, TrainConfig
from compbench.models.artifact import ModelArtifact, save_hf_artifact
from compbench.models.references import ResolvedModel
from compbench.tasks.data import TaskData, frame_digest
from compbench.tasks.encoding import encode_rows
from compbench.tasks.files import labels_yaml, suggested_reading
from compbench.tasks.glue import TaskSpec
from compbench.training.evaluation import validation_evaluator
from compbench.training.loop import fit, seed_everything

# Bump when fine-tuning changes what it produces for the same inputs (part of the cache key).
FINETUNE_VERSION = "3"   # 3: the head names its labels (id2label) where the task has names
# Libraries whose versions the trained weights depend on (a new one trains again).
TRAINING_LIBRARIES = ("torch", "transformers", "safetensors", "numpy")


def teacher_key(base: ResolvedModel, data: TaskData, config: TeacherConfig) -> str:
    """Fine-tuned: depends on the base weights, the training rows and the budget (not on eval rows). Given as it
    is: on the model's weights and the task's labels only."""
    task = data.task
    if task.is_language_modeling:       # a causal LM is measured as it is: its weights are the whole recipe
        return stable_hash({"kind": "given-causal-lm", "version": FINETUNE_VERSION, "base": base.identity,
                            "task": task.name, "libraries": package_versions(TRAINING_LIBRARIES)})
    if not config.finetune:     # "reading": its lineage says which model label each label is read as
        return stable_hash({"kind": "given", "version": FINETUNE_VERSION, "base": base.identity, "task": task.name,
                            "labels": task.label_names, "num_labels": task.num_labels, "problem": task.kind,
                            "libraries": package_versions(TRAINING_LIBRARIES), "reading": 1})
    return stable_hash({
        "kind": "finetune", "version": FINETUNE_VERSION, "base": base.identity, "task": task.name,
        "labels": task.label_names, "problem": task.kind, "train_rows": frame_digest(data.train).hex(),
        "config": config.model_dump(exclude={"finetune"}),
        "libraries": package_versions(TRAINING_LIBRARIES),
    })


def finetuned_teacher(
    base: ResolvedModel, data: TaskData, config: TeacherConfig, store: ArtifactStore, reporter: Reporter
) -> ModelArtifact:
    """The task's teacher: the base model fine-tuned on the task, or (``finetune: false``) the model as given."""
    key = teacher_key(base, data, config)
    cached = store.get(key)
    if cached is not None:
        reporter.log(f"{data.task.name}: teacher from cache ({cached.path})")
        return cached
    if data.task.is_language_modeling:
        return store.build(key, lambda folder: _causal_lm_as_given(folder, base, data, reporter))
    if not config.finetune:
        return store.build(key, lambda folder: _as_given(folder, base, data, reporter))
    return store.build(key, lambda folder: _finetune(folder, base, data, config, reporter))


def problem_type(task: TaskSpec) -> str:
    """What transformers calls the task's kind (it picks the loss from it)."""
    if task.is_regression:
        return "regression"
    return "multi_label_classification" if task.is_multi_label else "single_label_classification"


def head_labels(config) -> tuple[str, ...] | None:
    """A classifier's labels in output order, as its transformers ``config`` names them (None: no ``id2label``)."""
    if not getattr(config, "id2label", None):
        return None
    return tuple(str(config.id2label[index]) for index in range(config.num_labels))


def _named(head: tuple[str, ...] | None) -> bool:
    """Whether ``head`` names its labels (not transformers' default ``LABEL_i``)."""
    return bool(head) and any(name != f"LABEL_{index}" for index, name in enumerate(head))


def head_problem(config, task: TaskSpec) -> str | None:
    """Why a given model's head (its transformers ``config``) cannot serve ``task``, or None; the advice, followed,
    makes a suite that runs. The number of outputs must match. Where the head names its labels: labels the user
    listed (``labels_from`` ``list``) are its output order, trusted unless one of them is a model label at another
    output; a ``labels:`` mapping was put in the head's order when the task was read; labels from the data must be
    the head's own (which of yours is which output cannot be guessed); a GLUE task's too."""
    head = head_labels(config) or tuple(f"LABEL_{index}" for index in range(config.num_labels))
    names = tuple(map(str, task.label_names or ()))
    outputs = 1 if task.is_regression else task.num_labels
    if config.num_labels != outputs:
        problem = (f"the model's head has {config.num_labels} outputs ({', '.join(head)}), task {task.name} "
                   f"{outputs}" + (f" ({', '.join(names)})" if names else ""))
        if task.labels_from in ("list", "mapping", "data") and names and len(names) < len(head):
            return (f"{problem}: name each output with a label, e.g. labels: "
                    f"{labels_yaml(suggested_reading(names, head))} (if that is how they pair)")
        return f"{problem}: fine-tune a head for the task (teacher: {{finetune: true}})"
    if not names or not _named(head):
        return None
    folded = [name.casefold() for name in head]
    if task.labels_from == "mapping" or [name.casefold() for name in names] == folded:
        return None
    if task.labels_from == "list":
        moved = [(index, name) for index, name in enumerate(names)
                 if name.casefold() in folded and folded[index] != name.casefold()]
        if not moved:
            return None
        index, name = moved[0]
        return (f"labels lists {name} as output {index}, where the model has {head[index]} ({name} is its output "
                f"{folded.index(name.casefold())}): list your labels in the order of its outputs, "
                f"labels: {labels_yaml(_arranged(names, head))}, or map each to the model label it means, e.g. "
                f"labels: {labels_yaml(suggested_reading(names, head))}")
    problem = (f"the model's labels (id2label) are [{', '.join(head)}], task {task.name}'s "
               f"[{', '.join(names)}]")
    if task.labels_from != "data":
        return f"{problem}: fine-tune a head for the task (teacher: {{finetune: true}})"
    reading = suggested_reading(names, head)
    return (f"{problem}: which of yours is which output the data cannot say; map each to the model label it "
            f"means, e.g. labels: {labels_yaml(reading)} (if that is what they mean), or list yours in the order of "
            f"its outputs, labels: {labels_yaml(list(reading))}")


def _arranged(names: tuple[str, ...], head: tuple[str, ...]) -> list[str]:
    """``names`` in the head's output order: each model label at its own output, the others in their order."""
    folded = [name.casefold() for name in head]
    placed: list = [None] * len(head)
    for name in names:
        if name.casefold() in folded:
            placed[folded.index(name.casefold())] = name
    others = iter(name for name in names if name.casefold() not in folded)
    return [name if name is not None else next(others) for name in placed]


def label_reading(config, task: TaskSpec) -> dict[str, str] | None:
    """Which of a given model's labels each of the task's labels is read as (output by output), where the two
    differ; None where they are the same names or the head names none."""
    head, names = head_labels(config), tuple(map(str, task.label_names or ()))
    if not _named(head) or not names or [n.casefold() for n in names] == [n.casefold() for n in head]:
        return None
    return dict(zip(names, head))


def _as_given(folder, base: ResolvedModel, data: TaskData, reporter: Reporter) -> ModelArtifact:
    """The model as it is, checked against the task and stored as the teacher (its weights unchanged)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    task = data.task
    model = AutoModelForSequenceClassification.from_pretrained(base.location)
    problem = head_problem(model.config, task)
    if problem:
        raise UsageError(f"{base.reference}: {problem}")
    model.config.problem_type = problem_type(task)
    reporter.log(f"{task.name}: teacher {base.reference} as given (teacher.finetune: false): no training")
    lineage = [{"step": "given", "base": base.reference, "base_identity": base.identity}]
    reading = label_reading(model.config, task)
    if reading:      # the report says it
        lineage[0]["labels_read_as"] = reading
        reporter.log(f"{task.name}: labels read as the model's: "
                     + ", ".join(f"{name} as {meant}" for name, meant in reading.items()))
    return save_hf_artifact(folder, model, AutoTokenizer.from_pretrained(base.location), task=task.name,
                            lineage=lineage)


def _causal_lm_as_given(folder, base: ResolvedModel, data: TaskData, reporter: Reporter) -> ModelArtifact:
    """A causal LM stored as the reference of a language-modeling task, its weights unchanged (fp32)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base.location, dtype="float32")
    reporter.log(f"{data.task.name}: {base.reference} as given (a causal LM is measured as it is)")
    lineage = [{"step": "given", "kind": "causal-lm", "base": base.reference, "base_identity": base.identity}]
    return save_hf_artifact(folder, model, AutoTokenizer.from_pretrained(base.location), task=data.task.name,
                            lineage=lineage)


def load_base_for_task(location: str, task: TaskSpec):
    """The base model with a fresh classification (or regression) head for ``task``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()   # "newly initialised head" is expected here
    try:
        names = {"id2label": dict(enumerate(map(str, task.label_names))),
                 "label2id": {str(name): i for i, name in enumerate(task.label_names)}} if task.label_names else {}
        model = AutoModelForSequenceClassification.from_pretrained(   # the head says which output is which label
            location, num_labels=task.num_labels, problem_type=problem_type(task), **names,
            ignore_mismatched_sizes=True)   # a base that already has a head (for another task): a new one
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


