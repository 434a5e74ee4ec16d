"""Language-modeling evaluation of causal LMs: text corpora, perplexity, zero-shot classification.

Corpora (:class:`Corpus`, a tuple of documents)
    :func:`load_corpus` reads a local text file (one document, or split on ``separator``), a JSON Lines file or a
    parquet/CSV file (one document per row of ``column``); :func:`glue_corpus` builds one offline from GLUE text
    (by default the RTE and MRPC validation sentences), deterministically.

Perplexity (:func:`perplexity`)
    The Hugging Face recipe "Perplexity of fixed-length models": each document's tokens are covered by windows of
    at most ``max_length`` tokens whose starts are ``stride`` apart; each window scores only the tokens the windows
    before it did not (the labels of the overlap are -100), so every token after the first of a document is scored
    exactly once, with at least ``max_length - stride`` tokens of context once the first window is passed (with
    ``stride == max_length``, no overlap, each window's first token goes unscored, as in the recipe). Windows
    never cross documents. The result keeps the negative log-likelihood of every scored token, so perplexity
    (``exp`` of the token-weighted mean NLL; lower is better) gets a bootstrap interval over documents or windows
    (:func:`compbench.tasks.metrics.bootstrap_perplexity_ci`) and a paired delta between two models.

Bits per byte (:attr:`TokenLosses.bits_per_byte`)
    The same NLL in bits over the UTF-8 bytes of the scored tokens' text: every token holds the text from the end
    of the token before it to its own end (its leading space included; a begin-of-text token none), so the text
    left out is that of the tokens nothing scores (a document's first token, each window's first without
    overlap). Per-token perplexities of two tokenizers are in different units (one splits a text into more,
    easier tokens); bits per byte of the same text are not.

Zero-shot classification (:func:`zero_shot_scores`)
    As lm-eval-harness scores ``loglikelihood`` requests: for each prompt and each choice (a label word such as
    ``" positive"``, or a multiple-choice answer), the request is (prompt, target_delimiter + choice), exactly as
    lm-eval builds it (plain concatenation: the delimiter is added even before a choice that starts with a space),
    and its score is the summed log-probability of the continuation's tokens after the prompt's; the prediction is
    the choice with the highest (``acc``), or the highest per byte of the choice without the delimiter
    (``acc_norm``).

Torch is imported inside the functions that run a model, as elsewhere in ``compbench.tasks``.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from compbench.common.errors import UsageError
from compbench.tasks.glue import get_task
from compbench.tasks.metrics import Interval, bootstrap_nll_ratio_ci, nll_ratio_of
from compbench.tasks.sources import DataSource, detect_layout

IGNORE_INDEX = -100                      # labels that the loss skips (the Hugging Face convention)
GLUE_CORPUS_TASKS = ("rte", "mrpc")
SENTENCES_PER_DOCUMENT = 4
CORPUS_FORMATS = {".txt": "text", ".text": "text", ".md": "text", ".jsonl": "jsonl", ".ndjson": "jsonl",
                  ".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}     # a corpus file's format by extension
SST2_TEMPLATE = "Review: {sentence}\nSentiment:"
SST2_CHOICES = (" negative", " positive")  # in label-id order


# ---- corpora -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    """Documents of plain text, in a fixed order, and where they came from."""

    name: str
    documents: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "documents", tuple(self.documents))
        if not self.documents:
            raise UsageError(f"corpus {self.name} ({self.source}) has no documents")

    def __len__(self) -> int:
        return len(self.documents)

    @property
    def fingerprint(self) -> str:
        """sha256 hex over the documents (and their boundaries): part of a cache key."""
        digest = hashlib.sha256()
        for document in self.documents:
            digest.update(document.encode() + b"\0")
        return digest.hexdigest()


def _clean(values: Iterable[Any]) -> list[str]:
    """Non-blank strings, stripped of surrounding whitespace; missing values dropped."""
    out = []
    for value in values:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        text = str(value).strip()
        if text:
            out.append(text)
    return out


def _limited(documents: list[str], limit: int | None) -> list[str]:
    if limit is not None:
        if limit < 1:
            raise UsageError(f"limit {limit}: give at least 1 document")
        documents = documents[:limit]
    return documents


def read_text_table(path: Path, kind: str, columns: list[str], encoding: str = "utf-8") -> pd.DataFrame:
    """``columns`` of a JSONL, parquet or CSV file (``kind``), or a one-line error naming the file."""
    try:
        frame = (pd.read_json(path, lines=True, dtype=False, encoding=encoding) if kind == "jsonl"
                 else pd.read_parquet(path, columns=None) if kind == "parquet"
                 else pd.read_csv(path, encoding=encoding, dtype=str, keep_default_na=False))
    except Exception as exc:    # ValueError, ArrowInvalid, OSError: not that format, cut off, unreadable
        raise UsageError(f"corpus file {path} is not readable as {kind} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    for column in columns:
        if column not in frame.columns:
            raise UsageError(f"corpus file {path} has no column {column!r} (has {', '.join(map(str, frame.columns))})")
    return frame[columns]


def load_corpus(path: str | Path, *, column: str = "text", format: str = "auto", separator: str | None = None,
                limit: int | None = None, name: str | None = None, encoding: str = "utf-8") -> Corpus:
    """A corpus from a local file: text (``.txt``: the whole file is one document, or one per piece between
    ``separator``s, e.g. ``"\\n\\n"``), JSON Lines (``.jsonl``) or parquet/CSV (one document per row of ``column``).
    Blank documents are dropped; ``limit`` keeps the first ones."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"corpus file {path} does not exist")
    kind = format if format != "auto" else CORPUS_FORMATS.get(path.suffix.lower())
    if kind == "text":
        text = path.read_text(encoding=encoding)
        documents = _clean(text.split(separator) if separator else [text])
    elif kind in ("jsonl", "parquet", "csv"):
        documents = _clean(read_text_table(path, kind, [column], encoding)[column].tolist())
    else:
        raise UsageError(f"corpus file {path}: unknown format {format if format != 'auto' else path.suffix!r}; "
                         "give format text, jsonl, parquet or csv")
    if not documents:
        raise UsageError(f"corpus file {path} holds no text")
    return Corpus(name or path.stem, tuple(_limited(documents, limit)), str(path))


def glue_corpus(source: DataSource | str | Path, *, tasks: Sequence[str] = GLUE_CORPUS_TASKS,
                split: str = "validation", sentences_per_document: int = SENTENCES_PER_DOCUMENT,
                limit: int | None = None, name: str = "glue-text") -> Corpus:
    """A corpus of the GLUE sentences of ``tasks`` (default RTE and MRPC, validation split), offline from a data
    folder (or any :class:`DataSource`).

    The sentences are taken column by column (each task's first text column, then its second), exact repeats
    dropped, and joined with newlines into documents of ``sentences_per_document`` consecutive sentences: a
    pair's two sentences (an MRPC paraphrase, an RTE hypothesis drawn from its premise) thus land hundreds of
    sentences apart, never in one document where the first would give the second away. Deterministic."""
    if sentences_per_document < 1:
        raise UsageError(f"sentences_per_document {sentences_per_document}: give at least 1")
    if not isinstance(source, DataSource):
        source = detect_layout(Path(source).expanduser())
    sentences: list[str] = []
    seen: set[str] = set()
    for task_name in tasks:
        task = get_task(task_name)
        frame = source.load_split(task, split)
        for column in task.text_fields:
            for sentence in _clean(frame[column].tolist()):
                if sentence not in seen:
                    seen.add(sentence)
                    sentences.append(sentence)
    documents = ["\n".join(sentences[i:i + sentences_per_document])
                 for i in range(0, len(sentences), sentences_per_document)]
    if not documents:
        raise UsageError(f"no {split} text for {', '.join(tasks)} in {source.description}")
    return Corpus(name, tuple(_limited(documents, limit)),
                  f"{'+'.join(tasks)}/{split} in {source.description}, {sentences_per_document} sentences a document")


# ---- perplexity --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenLosses:
    """The negative log-likelihood (nats) of every scored token, with the document and window it belongs to."""

    nll: np.ndarray             # float64 (tokens,)
    document: np.ndarray        # int64 (tokens,): index of the token's document
    window: np.ndarray          # int64 (tokens,): index of the token's window (numbered over the whole corpus)
    n_documents: int
    n_windows: int
    max_length: int
    stride: int
    n_bytes: np.ndarray | None = None   # int64 (tokens,): UTF-8 bytes of each token's text (None: no offsets)

    @property
    def n_tokens(self) -> int:
        """How many tokens were scored (a document's first token never is: nothing predicts it)."""
        return int(self.nll.size)

    @property
    def mean_nll(self) -> float:
        """Token-weighted mean negative log-likelihood (nats per token)."""
        return float(self.nll.mean())

    @property
    def perplexity(self) -> float:
        """exp(mean NLL): lower is better."""
        return float(np.exp(self.mean_nll))

    @property
    def bits_per_byte(self) -> float | None:
        """Summed NLL in bits over the UTF-8 bytes of the scored tokens' text (lower is better); None without the
        tokens' bytes."""
        if self.n_bytes is None:
            return None     # per document: a token may hold no byte (a character split over two tokens)
        return nll_ratio_of("bits_per_byte", self.unit_sums("document")[0], self.unit_bytes("document"))

    def _units(self, by: str) -> tuple[np.ndarray, int]:
        if by not in ("document", "window"):
            raise ValueError(f"by must be 'document' or 'window', not {by!r}")
        return (self.document, self.n_documents) if by == "document" else (self.window, self.n_windows)

    def unit_sums(self, by: str = "document") -> tuple[np.ndarray, np.ndarray]:
        """(NLL sum, scored tokens) per document or per window, every unit listed (zeros where none scored)."""
        index, n = self._units(by)
        return (np.bincount(index, weights=self.nll, minlength=n),
                np.bincount(index, minlength=n).astype(np.int64))

    def unit_bytes(self, by: str = "document") -> np.ndarray | None:
        """UTF-8 bytes of the scored tokens' text per document or per window (None without the tokens' bytes)."""
        if self.n_bytes is None:
            return None
        index, n = self._units(by)
        return np.bincount(index, weights=self.n_bytes, minlength=n).astype(np.int64)

    def interval(self, by: str = "document", *, metric: str = "perplexity", n_resamples: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> Interval:
        """Percentile-bootstrap interval of the perplexity (or ``metric="bits_per_byte"``), resampling documents (or
        windows)."""
        sums, counts = self.unit_sums(by)
        if metric == "bits_per_byte":
            counts = self.unit_bytes(by)
        return bootstrap_nll_ratio_ci(metric, sums, counts, n_resamples=n_resamples, confidence=confidence,
                                      seed=seed)

    def unit_perplexity(self, by: str = "document") -> float:
        """The perplexity from the per-unit sums (equal to :attr:`perplexity`: a check of the bookkeeping)."""
        return nll_ratio_of("perplexity", *self.unit_sums(by))


def context_length(model) -> int | None:
    """The longest input the model's config allows (``max_position_embeddings``, ``n_positions``), or None."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def windows(n_tokens: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """The sliding windows over ``n_tokens`` tokens: ``(begin, end, first scored position in the window)``.

    The Hugging Face recipe: windows start every ``stride`` tokens and hold at most ``max_length``; each scores
    the tokens after the previous window's end (``trg_len``), the last one ends at the last token. Position 0 of
    a window is never scored (nothing in the window predicts it): with ``stride < max_length`` that is only a
    document's first token; with ``stride == max_length`` (no overlap) the first token of every window, as in the
    recipe. A window that would score nothing is left out; a one-token document has none."""
    if max_length < 2:
        raise ValueError(f"max_length {max_length}: a window needs at least 2 tokens to score one")
    if not 1 <= stride <= max_length:
        raise ValueError(f"stride {stride} must lie in 1..max_length ({max_length}), or tokens would go unscored")
    out: list[tuple[int, int, int]] = []
    if n_tokens < 2:
        return out
    previous_end = 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + max_length, n_tokens)
        target = end - previous_end                      # tokens this window scores
        first_scored = max(end - begin - target, 1)      # window position of the first scored label
        if first_scored < end - begin:                   # without overlap a one-token last window scores nothing
            out.append((begin, end, first_scored))
        previous_end = end
        if end == n_tokens:
            break
    return out


def device_of(model):
    """The torch device a causal LM (a torch module, or optimum's ORT model) reads its inputs on."""
    import torch

    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        # optimum's ORTModelForCausalLM holds no torch parameters; its device is where it reads its inputs
        return torch.device(getattr(model, "device", "cpu"))


def token_bytes(text: str, offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """UTF-8 bytes of each token's text, from a fast tokenizer's character offsets: a token holds the text from
    the end of the one before it to its own end, so the counts add up to the text's bytes (a leading space goes
    with the token it begins, as byte-level BPE has it; a special token at (0, 0) holds none; text after the last
    token's end, if any, goes to the last)."""
    byte_at = np.concatenate([[0], np.cumsum([len(char.encode()) for char in text], dtype=np.int64)])
    ends = np.maximum.accumulate(np.asarray([end for _, end in offsets], dtype=np.int64))
    ends[-1] = len(text)
    return np.diff(byte_at[ends], prepend=0)


def _tokens(tokenizer, text: str, where: str) -> tuple[list[int], np.ndarray | None]:
    """The document's token ids as the tokenizer makes them by default, and each token's bytes (None for a
    tokenizer that gives no character offsets: a slow one)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where} is empty: there is no text to score")
    fast = getattr(tokenizer, "is_fast", False)
    encoded = tokenizer(text, return_offsets_mapping=True) if fast else tokenizer(text)
    ids = list(encoded.input_ids)
    if not ids:
        raise ValueError(f"{where} gives no tokens")
    return ids, token_bytes(text, encoded["offset_mapping"]) if fast else None


@contextmanager
def scoring(model) -> Iterator[None]:
    """The block scores ``model``: eval mode without autograd, its training mode restored afterwards."""
    import torch

    was_training = getattr(model, "training", False)
    modes = hasattr(model, "train")      # an ONNX Runtime model (optimum's ORTModel) has no training mode
    if modes:
        model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        if modes:
            model.train(was_training)


def _pad_id(tokenizer) -> int:
    for value in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if value is not None:
            return int(value)
    return 0                # any id: padded positions are masked out and never scored


def _batched_forward(model, rows: list[list[int]], pad_id: int):
    """Logits (float32) of right-padded ``rows`` and their attention mask."""
    import torch

    longest = max(len(row) for row in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, :len(row)] = 1
    device = device_of(model)
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
    return out.logits.float(), mask


def perplexity(model, tokenizer, texts: str | Sequence[str], max_length: int | None = None,
               stride: int | None = None, *, batch_size: int = 1) -> TokenLosses:
    """Token-weighted NLL of ``texts`` (one document or a sequence) under a causal LM, by sliding windows.

    ``max_length`` defaults to the model's context length, ``stride`` to ``max_length // 2`` (at least 1);
    each document is tokenized as the tokenizer does by default (with a begin-of-text token where its model
    expects one). ``batch_size`` windows run per forward pass (right-padded: same result). Raises ValueError
    for an empty document, a window longer than the model's context, or a corpus with no token to score."""
    import torch

    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ValueError("no texts to score")
    limit = context_length(model)
    if max_length is None:
        if limit is None:
            raise ValueError("the model's config gives no context length: pass max_length")
        max_length = limit
    if limit is not None and max_length > limit:
        raise ValueError(f"max_length {max_length} exceeds the model's context length {limit}")
    stride = max(max_length // 2, 1) if stride is None else stride
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size}: give at least 1")
    plan: list[tuple[int, list[int], int, np.ndarray | None]] = []  # (document, window ids, first scored, bytes)
    for d, text in enumerate(texts):
        ids, sizes = _tokens(tokenizer, text, f"document {d}")
        plan += [(d, ids[begin:end], first, None if sizes is None else sizes[begin:end])
                 for begin, end, first in windows(len(ids), max_length, stride)]
    if not plan:
        raise ValueError("no token to score: every document is a single token")

    nll, document, window, scored_bytes = [], [], [], []
    pad_id = _pad_id(tokenizer)
    with scoring(model):
        for start in range(0, len(plan), batch_size):
            batch = plan[start:start + batch_size]
            logits, _ = _batched_forward(model, [ids for _, ids, _, _ in batch], pad_id)
            for row, (d, ids, first, sizes) in enumerate(batch):
                targets = torch.tensor(ids[first:], dtype=torch.long, device=logits.device)
                losses = torch.nn.functional.cross_entropy(logits[row, first - 1:len(ids) - 1], targets,
                                                           reduction="none")
                nll.append(losses.double().cpu().numpy())
                document.append(np.full(len(targets), d, dtype=np.int64))
                window.append(np.full(len(targets), start + row, dtype=np.int64))
                scored_bytes.append(None if sizes is None else sizes[first:])
    values = np.concatenate(nll)
    if not np.all(np.isfinite(values)):
        raise ValueError("the model gave a non-finite log-likelihood (nan or inf logits)")
    n_bytes = None if any(sizes is None for sizes in scored_bytes) else np.concatenate(scored_bytes)
    return TokenLosses(values, np.concatenate(document), np.concatenate(window), len(texts), len(plan),
                       max_length, stride, n_bytes)


# ---- zero-shot classification ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZeroShotScores:
    """Per prompt and choice: the summed log-likelihood of the choice's tokens after the prompt, their number,
    and the choice's length in bytes; the predictions are choice indices (raw and per-byte normalised)."""

    logliks: np.ndarray          # float64 (rows, choices)
    n_tokens: np.ndarray         # int64 (rows, choices)
    n_bytes: np.ndarray          # int64 (rows, choices)

    @property
    def predictions(self) -> np.ndarray:
        """The most likely choice of each row (lm-eval's ``acc``); a tie goes to the first."""
        return self.logliks.argmax(axis=1)

    @property
    def normalized_predictions(self) -> np.ndarray:
        """The most likely choice per byte of its text (lm-eval's ``acc_norm``)."""
        return (self.logliks / np.maximum(self.n_bytes, 1)).argmax(axis=1)


def render_prompts(template: str, rows: pd.DataFrame | Iterable[dict]) -> list[str]:
    """``template.format(**row)`` for each row (a frame's rows or mappings), e.g. ``SST2_TEMPLATE``."""
    records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else list(rows)
    try:
        return [template.format(**record) for record in records]
    except KeyError as exc:
        raise UsageError(f"prompt template {template!r} names {exc}, which the rows lack") from None


def _request(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation token ids as lm-eval-harness encodes a pair: spaces at the context's end move to
    the continuation, the whole is encoded and the continuation is what follows the context's own tokens."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    context_ids = list(tokenizer(context).input_ids) if context else []
    if not context_ids:                                     # nothing to condition on: start from the text token
        start = next((t for t in (tokenizer.bos_token_id, tokenizer.eos_token_id) if t is not None), None)
        if start is None:
            raise ValueError("an empty prompt needs a tokenizer with a begin- or end-of-text token")
        return [int(start)], list(tokenizer(continuation, add_special_tokens=False).input_ids)
    whole = list(tokenizer(context + continuation).input_ids)
    return context_ids, whole[len(context_ids):]


def zero_shot_scores(model, tokenizer, prompts: Sequence[str], choices: Sequence[str] | Sequence[Sequence[str]],
                     *, batch_size: int = 8, max_length: int | None = None,
                     target_delimiter: str = "") -> ZeroShotScores:
    """Score each choice as the continuation of each prompt (lm-eval-harness ``loglikelihood``): the continuation
    is ``target_delimiter + choice`` (lm-eval's tasks default to ``" "``; here the caller says, a task entry's own
    default being ``" "`` for multiple choice).

    ``choices`` is one list shared by every prompt (label words, e.g. ``SST2_CHOICES``) or one list per prompt
    (multiple choice; all of the same length). Inputs longer than ``max_length`` (default: the model's context)
    lose tokens from the left of the prompt."""
    import torch

    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts to score")
    shared = len(choices) > 0 and all(isinstance(c, str) for c in choices)
    per_row = [list(choices)] * len(prompts) if shared else [list(c) for c in choices]
    if len(per_row) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(per_row)} lists of choices")
    k = len(per_row[0]) if per_row else 0
    if k < 2 or any(len(c) != k for c in per_row):
        raise ValueError("give at least two choices, the same number for every prompt")
    max_length = max_length or context_length(model) or 2048
    requests = []                                   # (row, choice, index of its input, continuation ids)
    inputs: dict[tuple[int, ...], int] = {}         # one forward pass per distinct input: the choices of a row that
    for i, (prompt, options) in enumerate(zip(prompts, per_row)):      # are one token each share their prompt's
        for j, choice in enumerate(options):
            if not choice:
                raise ValueError(f"choice {j} of prompt {i} is empty")
            context_ids, continuation_ids = _request(tokenizer, prompt, target_delimiter + choice)
            if not continuation_ids:
                raise ValueError(f"choice {choice!r} gives no tokens after prompt {i}")
            if len(continuation_ids) > max_length:
                raise ValueError(f"choice {choice!r} is {len(continuation_ids)} tokens, more than max_length "
                                 f"{max_length}")
            ids = tuple((context_ids + continuation_ids)[-(max_length + 1):][:-1])   # inputs: all but the last token
            requests.append((i, j, inputs.setdefault(ids, len(inputs)), continuation_ids))
    unique = list(inputs)
    logliks = np.zeros((len(prompts), k))
    n_tokens = np.zeros((len(prompts), k), dtype=np.int64)
    n_bytes = np.array([[len(c.encode()) for c in options] for options in per_row], dtype=np.int64)
    by_input: dict[int, list[tuple[int, int, list[int]]]] = {}
    for i, j, index, continuation in requests:
        by_input.setdefault(index, []).append((i, j, continuation))
    pad_id = _pad_id(tokenizer)
    with scoring(model):
        for start in range(0, len(unique), batch_size):
            logits, _ = _batched_forward(model, [list(ids) for ids in unique[start:start + batch_size]], pad_id)
            for row in range(logits.shape[0]):
                length = len(unique[start + row])
                for i, j, continuation in by_input[start + row]:
                    n = len(continuation)       # the last n inputs predict the continuation's n tokens
                    log_probs = torch.log_softmax(logits[row, length - n:length], dim=-1)
                    picked = log_probs.gather(1, torch.tensor(continuation, device=log_probs.device)[:, None])
                    logliks[i, j] = float(picked.double().sum())
                    n_tokens[i, j] = n
    return ZeroShotScores(logliks, n_tokens, n_bytes)

