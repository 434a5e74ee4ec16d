"""Language-modeling evaluation: corpora, sliding-window perplexity, zero-shot classification by label-word
log-likelihood, and the perplexity bootstrap. Tiny random Llama / GPT-2 / Qwen2 models (no download) check the
plumbing against the Hugging Face recipe; the real SmolLM2-135M checks the numbers against plain transformers."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pandas as pd
import pytest

from compbench.common.errors import UsageError
from compbench.tasks.language_modeling import (
    SST2_CHOICES,
    SST2_TEMPLATE,
    Corpus,
    _request,
    glue_corpus,
    load_corpus,
    perplexity,
    render_prompts,
    token_bytes,
    windows,
    zero_shot_scores,
)
from compbench.tasks.metrics import (
    accuracy,
    bootstrap_ci,
    bootstrap_perplexity_ci,
    higher_is_better,
    paired_bootstrap_perplexity_delta,
    perplexity_of,
)
from compbench.tasks.sources import detect_layout

SENTENCES = [
    "the cat sat on the mat and looked at the dog .",
    "a quiet film with a warm heart , and a story that never quite lands .",
    "stocks rose on monday after the bank said rates would stay low for a year .",
    "the company said its profit fell in the third quarter , to 12 million dollars .",
    "it is a charming , funny and often moving picture about two old friends .",
    "the committee will meet again next week to decide on the new rules .",
]
CONTEXT = 64            # the tiny models' context length


pytestmark = pytest.mark.usefixtures("one_torch_thread")     # see tests/conftest.py


# ---- tiny random models ------------------------------------------------------------------------------------------


def _tiny_tokenizer(bos: bool = False):
    """A byte-level BPE trained here on a few sentences (about 300 tokens); with ``bos`` it prepends <bos>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>", "<pad>", "<bos>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(SENTENCES * 3, trainer)
    if bos:
        backend.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[
            ("<bos>", backend.token_to_id("<bos>"))])
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>",
                                   bos_token="<bos>" if bos else None,
                                   model_input_names=["input_ids", "attention_mask"])


@pytest.fixture(scope="module")
def tokenizer():
    return _tiny_tokenizer()


def _tiny_model(kind: str, vocab_size: int):
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, initializer_range=0.3)
    config = {
        "llama": lambda: LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=2, max_position_embeddings=CONTEXT, **common),
        "gpt2": lambda: GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=CONTEXT, **common),
        "qwen2": lambda: Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=2, max_position_embeddings=CONTEXT, **common),
    }[kind]()
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(scope="module", params=["llama", "gpt2", "qwen2"])
def tiny(request, tokenizer):
    return _tiny_model(request.param, len(tokenizer))


def _hf_loss_perplexity(model, ids: list[int]) -> float:
    """Plain transformers: exp(model(input_ids, labels=input_ids).loss)."""
    import torch

    tensor = torch.tensor([ids])
    with torch.inference_mode():
        return float(torch.exp(model(tensor, labels=tensor).loss))


def _hf_recipe(model, ids: list[int], max_length: int, stride: int) -> float:
    """The Hugging Face "Perplexity of fixed-length models" loop, written out independently: labels of the
    overlap set to -100, each window's mean loss weighted by the labels it scores after the shift."""
    import torch

    encodings = torch.tensor([ids])
    seq_len = encodings.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc
        input_ids = encodings[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        scored = int((target_ids[:, 1:] != -100).sum())
        if scored:
            with torch.inference_mode():
                loss = model(input_ids, labels=target_ids).loss
            nll_sum += float(loss) * scored
            n_tokens += scored
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return float(np.exp(nll_sum / n_tokens))


def _long_text(tokenizer, n_tokens: int = 60) -> str:
    text = " ".join(SENTENCES)
    assert len(tokenizer(text).input_ids) >= n_tokens
    return text


def test_one_window_equals_the_transformers_loss(tiny, tokenizer):
    text = SENTENCES[1]
    ids = tokenizer(text).input_ids
    losses = perplexity(tiny, tokenizer, text, max_length=CONTEXT)
    assert losses.n_tokens == len(ids) - 1 and losses.n_windows == 1
    assert losses.perplexity == pytest.approx(_hf_loss_perplexity(tiny, ids), rel=1e-5)


@pytest.mark.parametrize("max_length,stride", [(16, 8), (16, 5), (16, 16), (7, 2), (CONTEXT, 3)])
def test_striding_equals_the_hugging_face_recipe(tiny, tokenizer, max_length, stride):
    text = _long_text(tokenizer)
    ids = tokenizer(text).input_ids[:40]
    text = tokenizer.decode(ids)
    assert tokenizer(text).input_ids == ids
    losses = perplexity(tiny, tokenizer, text, max_length=max_length, stride=stride, batch_size=3)
    assert losses.perplexity == pytest.approx(_hf_recipe(tiny, ids, max_length, stride), rel=1e-5)
    unscored_window_starts = 0 if stride < max_length else len(windows(len(ids), max_length, stride)) - 1
    assert losses.n_tokens == len(ids) - 1 - unscored_window_starts


def test_windows_cover_every_token_once():
    assert windows(10, 4, 2) == [(0, 4, 1), (2, 6, 2), (4, 8, 2), (6, 10, 2)]
    assert windows(7, 8, 3) == [(0, 7, 1)]                  # fits one window: no striding at all
    assert windows(5, 4, 4) == [(0, 4, 1)]                  # the last one-token window would score nothing
    assert windows(1, 4, 2) == [] and windows(2, 4, 2) == [(0, 2, 1)]
    for n, max_length, stride in [(50, 8, 3), (33, 5, 1), (64, 16, 15), (17, 16, 8)]:
        scored = [begin + i for begin, end, first in windows(n, max_length, stride) for i in range(first, end - begin)]
        assert scored == list(range(1, n))
        assert all(end - begin <= max_length for begin, end, _ in windows(n, max_length, stride))
    with pytest.raises(ValueError, match="stride"):
        windows(10, 4, 5)
    with pytest.raises(ValueError, match="stride"):
        windows(10, 4, 0)
    with pytest.raises(ValueError, match="max_length"):
        windows(10, 1, 1)


def test_batching_does_not_change_the_result(tiny, tokenizer):
    texts = SENTENCES[:4]
    one = perplexity(tiny, tokenizer, texts, max_length=12, stride=5, batch_size=1)
    many = perplexity(tiny, tokenizer, texts, max_length=12, stride=5, batch_size=5)
    np.testing.assert_allclose(many.nll, one.nll, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(many.document, one.document)
    np.testing.assert_array_equal(many.window, one.window)


def test_documents_never_share_a_window(tiny, tokenizer):
    texts = SENTENCES[:3]
    together = perplexity(tiny, tokenizer, texts, max_length=16, stride=8)
    apart = [perplexity(tiny, tokenizer, t, max_length=16, stride=8) for t in texts]
    np.testing.assert_allclose(together.nll, np.concatenate([a.nll for a in apart]), rtol=1e-5, atol=1e-6)
    sums, counts = together.unit_sums("document")
    assert counts.tolist() == [a.n_tokens for a in apart] and together.n_documents == 3
    assert sums == pytest.approx([a.nll.sum() for a in apart], rel=1e-6)
    assert together.n_windows == sum(a.n_windows for a in apart)
    assert together.unit_sums("window")[1].sum() == together.n_tokens
    assert together.unit_perplexity("document") == pytest.approx(together.perplexity, rel=1e-9)
    assert together.unit_perplexity("window") == pytest.approx(together.perplexity, rel=1e-9)
    low, high = together.interval("document", n_resamples=200).as_list()
    assert low <= together.perplexity <= high


def test_a_begin_of_text_token_is_context_not_a_scored_token():
    tokenizer = _tiny_tokenizer(bos=True)
    model = _tiny_model("llama", len(tokenizer))
    ids = tokenizer(SENTENCES[0]).input_ids
    assert ids[0] == tokenizer.bos_token_id
    losses = perplexity(model, tokenizer, SENTENCES[0], max_length=CONTEXT)
    assert losses.n_tokens == len(ids) - 1
    assert losses.perplexity == pytest.approx(_hf_loss_perplexity(model, ids), rel=1e-5)
    context, continuation = _request(tokenizer, "the cat sat", " on the mat")
    assert context[0] == tokenizer.bos_token_id and tokenizer.bos_token_id not in continuation
    assert tokenizer.decode(continuation) == " on the mat"


def test_bits_per_byte_by_hand_on_the_text_of_the_scored_tokens(tiny, tokenizer):
    """Bits per byte = the scored tokens' NLL (nats) / ln 2 / the UTF-8 bytes of their text, by hand: without a
    begin-of-text token the first token is context, and its text (bytes counted from the decoded token, not from
    offsets) is left out; with <bos> every byte of the document is scored. Multi-byte characters count their bytes."""
    text = "café au lait , naïve : déjà vu ."
    ids = tokenizer(text).input_ids
    losses = perplexity(tiny, tokenizer, text, max_length=CONTEXT)
    first = len(tokenizer.decode(ids[:1]).encode())
    scored = len(text.encode()) - first
    assert len(text.encode()) > len(text) and losses.unit_bytes().tolist() == [scored]
    assert losses.bits_per_byte == pytest.approx(losses.nll.sum() / math.log(2) / scored, rel=1e-12)
    # the same by the plain transformers loss: mean NLL x scored tokens, in bits, over the bytes
    by_hand = math.log(_hf_loss_perplexity(tiny, ids)) * (len(ids) - 1) / math.log(2) / scored
    assert losses.bits_per_byte == pytest.approx(by_hand, rel=1e-5)
    with_bos = _tiny_tokenizer(bos=True)
    model = _tiny_model("llama", len(with_bos))
    assert perplexity(model, with_bos, text, max_length=CONTEXT).unit_bytes().tolist() == [len(text.encode())]
    # without overlap each window's first token goes unscored, and so does its text (its leading space too)
    long = _long_text(tokenizer)
    long_ids = tokenizer(long).input_ids
    strided = perplexity(tiny, tokenizer, long, max_length=16, stride=16)
    scored_at = {begin + i for begin, end, first in windows(len(long_ids), 16, 16) for i in range(first, end - begin)}
    unscored = sum(len(tokenizer.decode(long_ids[:p + 1]).encode()) - len(tokenizer.decode(long_ids[:p]).encode())
                   for p in range(len(long_ids)) if p not in scored_at)
    assert len(long_ids) - len(scored_at) > 2
    assert strided.unit_bytes().tolist() == [len(long.encode()) - unscored]
    low, high = strided.interval(metric="bits_per_byte", n_resamples=50).as_list()
    assert low == high == pytest.approx(strided.bits_per_byte)         # one document: nothing to resample


def test_token_bytes_add_up_to_the_text():
    text = "Déjà vu  twice\n中文"
    # <bos> at (0, 0); 中 split over two byte-level tokens whose offsets both cover it: the first holds its bytes
    offsets = [(0, 0), (0, 4), (4, 7), (7, 8), (8, 14), (14, 15), (15, 16), (15, 16), (16, 17)]
    sizes = token_bytes(text, offsets)
    assert sizes.tolist() == [0, 6, 3, 1, 6, 1, 3, 0, 3] and sizes.sum() == len(text.encode()) == 23


def test_bad_inputs_are_errors(tokenizer):
    model = _tiny_model("gpt2", len(tokenizer))
    for texts, message in [("", "document 0 is empty"), ("   \n", "document 0 is empty"), ([], "no texts"),
                           (["fine text", ""], "document 1 is empty"), (["a"], "no token to score")]:
        with pytest.raises(ValueError, match=message):
            perplexity(model, tokenizer, texts, max_length=16)
    with pytest.raises(ValueError, match="stride"):
        perplexity(model, tokenizer, SENTENCES[0], max_length=16, stride=17)
    with pytest.raises(ValueError, match="stride"):
        perplexity(model, tokenizer, SENTENCES[0], max_length=16, stride=0)
    with pytest.raises(ValueError, match="max_length"):
        perplexity(model, tokenizer, SENTENCES[0], max_length=1)
    with pytest.raises(ValueError, match="context length 64"):
        perplexity(model, tokenizer, SENTENCES[0], max_length=CONTEXT + 1)
    with pytest.raises(ValueError, match="batch_size"):
        perplexity(model, tokenizer, SENTENCES[0], max_length=16, batch_size=0)
    defaults = perplexity(model, tokenizer, SENTENCES[0])
    assert (defaults.max_length, defaults.stride) == (CONTEXT, CONTEXT // 2)


def _manual_loglik(model, tokenizer, prompt: str, choice: str) -> tuple[float, int]:
    """log p(choice | prompt) from one plain forward pass over prompt + choice, and the choice's token count."""
    import torch

    context = tokenizer(prompt).input_ids
    whole = tokenizer(prompt + choice).input_ids
    with torch.inference_mode():
        log_probs = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), -1)
    return sum(float(log_probs[k - 1, whole[k]]) for k in range(len(context), len(whole))), len(whole) - len(context)


def test_zero_shot_scores_are_the_label_words_log_likelihood(tiny, tokenizer):
    prompts = ["the film was", "stocks rose on"]
    choices = [" good", " monday after the bank"]
    one_token = [" the", " a"]                  # one token each: scored from one shared pass over the prompt
    assert all(len(tokenizer(c).input_ids) == 1 for c in one_token)
    for options in (choices, one_token):
        scores = zero_shot_scores(tiny, tokenizer, prompts, options, batch_size=3)
        assert scores.logliks.shape == (2, 2) and scores.predictions.tolist() == scores.logliks.argmax(1).tolist()
        for i, prompt in enumerate(prompts):
            for j, choice in enumerate(options):
                expected, n = _manual_loglik(tiny, tokenizer, prompt, choice)
                assert scores.logliks[i, j] == pytest.approx(expected, rel=1e-4)
                assert scores.n_tokens[i, j] == n
    scores = zero_shot_scores(tiny, tokenizer, prompts, choices, batch_size=3)
    assert scores.n_bytes.tolist() == [[5, 22], [5, 22]]
    per_row = zero_shot_scores(tiny, tokenizer, prompts, [choices, choices[::-1]])
    np.testing.assert_allclose(per_row.logliks[0], scores.logliks[0], rtol=1e-5)
    np.testing.assert_allclose(per_row.logliks[1], scores.logliks[1, ::-1], rtol=1e-5)
    moved = zero_shot_scores(tiny, tokenizer, ["the film was "], ["good", "bad"])      # lm-eval: the space moves
    plain = zero_shot_scores(tiny, tokenizer, ["the film was"], [" good", " bad"])
    np.testing.assert_allclose(moved.logliks, plain.logliks, rtol=1e-5)
    assert set(scores.normalized_predictions.tolist()) <= {0, 1}


def test_zero_shot_bad_inputs_are_errors(tokenizer):
    model = _tiny_model("llama", len(tokenizer))
    with pytest.raises(ValueError, match="at least two choices"):
        zero_shot_scores(model, tokenizer, ["a"], [" b"])
    with pytest.raises(ValueError, match="is empty"):
        zero_shot_scores(model, tokenizer, ["a"], [" b", ""])
    with pytest.raises(ValueError, match="2 prompts but 1"):
        zero_shot_scores(model, tokenizer, ["a", "b"], [[" x", " y"]])
    with pytest.raises(ValueError, match="no prompts"):
        zero_shot_scores(model, tokenizer, [], [" x", " y"])
    empty_prompt = zero_shot_scores(model, tokenizer, [""], [" good", " bad"])     # conditioned on <eos>
    assert np.all(np.isfinite(empty_prompt.logliks))


def test_prompts_render_from_rows():
    frame = pd.DataFrame({"sentence": ["a fine film", "dull"], "label": [1, 0]})
    assert render_prompts(SST2_TEMPLATE, frame) == ["Review: a fine film\nSentiment:", "Review: dull\nSentiment:"]
    with pytest.raises(UsageError, match="premise"):
        render_prompts("{premise}", frame)


# ---- corpora -----------------------------------------------------------------------------------------------------


def test_corpora_from_files(tmp_path):
    (tmp_path / "a.txt").write_text("First paragraph.\n\nSecond one.\n\n\n")
    assert load_corpus(tmp_path / "a.txt").documents == ("First paragraph.\n\nSecond one.",)
    assert load_corpus(tmp_path / "a.txt", separator="\n\n").documents == ("First paragraph.", "Second one.")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in [{"text": "one"}, {"text": "  "},
                                                                         {"text": None}, {"text": "two"}]))
    corpus = load_corpus(tmp_path / "b.jsonl")
    assert corpus.documents == ("one", "two") and corpus.name == "b" and len(corpus) == 2
    pd.DataFrame({"body": ["x y", "z", ""]}).to_parquet(tmp_path / "c.parquet")
    assert load_corpus(tmp_path / "c.parquet", column="body", limit=1).documents == ("x y",)
    pd.DataFrame({"text": ["p", "q"]}).to_csv(tmp_path / "d.csv", index=False)
    assert load_corpus(tmp_path / "d.csv").documents == ("p", "q")
    assert load_corpus(tmp_path / "d.csv").fingerprint != load_corpus(tmp_path / "c.parquet", column="body").fingerprint
    with pytest.raises(UsageError, match="no column 'text' .*body"):
        load_corpus(tmp_path / "c.parquet")
    with pytest.raises(UsageError, match="does not exist"):
        load_corpus(tmp_path / "missing.txt")
    (tmp_path / "e.bin").write_bytes(b"\0")
    with pytest.raises(UsageError, match="unknown format"):
        load_corpus(tmp_path / "e.bin")
    (tmp_path / "f.txt").write_text("  \n ")
    with pytest.raises(UsageError, match="holds no text"):
        load_corpus(tmp_path / "f.txt")
    (tmp_path / "g.parquet").write_bytes(b"not parquet")
    with pytest.raises(UsageError, match="not readable as parquet"):
        load_corpus(tmp_path / "g.parquet")
    with pytest.raises(UsageError, match="no documents"):
        Corpus("empty", (), "nowhere")


def test_the_glue_corpus_is_deterministic_and_keeps_pairs_apart(glue_data):
    corpus = glue_corpus(glue_data)
    assert corpus == glue_corpus(detect_layout(glue_data)) and corpus.fingerprint == glue_corpus(glue_data).fingerprint
    sentences = [s for d in corpus.documents for s in d.split("\n")]
    assert len(sentences) == len(set(sentences)) and all(len(d.split("\n")) <= 4 for d in corpus.documents)
    source = detect_layout(glue_data)
    from compbench.tasks.glue import get_task

    mrpc = source.load_split(get_task("mrpc"), "validation")
    where = {s: i for i, d in enumerate(corpus.documents) for s in d.split("\n")}
    pairs = [(where.get(a.strip()), where.get(b.strip())) for a, b in zip(mrpc.sentence1, mrpc.sentence2)
             if a.strip() != b.strip()]
    assert all(a != b for a, b in pairs if a is not None and b is not None)
    one_each = glue_corpus(glue_data, tasks=["rte"], sentences_per_document=1, limit=5)
    assert len(one_each) == 5 and all("\n" not in d for d in one_each.documents)
    with pytest.raises(UsageError):
        glue_corpus(glue_data, sentences_per_document=0)


# ---- the perplexity bootstrap ------------------------------------------------------------------------------------


def test_perplexity_bootstrap():
    sums, counts = np.array([10.0, 20.0, 0.0, 30.0]), np.array([5, 10, 0, 10])
    assert perplexity_of(sums, counts) == pytest.approx(np.exp(60 / 25))
    interval = bootstrap_perplexity_ci(sums, counts, n_resamples=300, seed=1)
    assert interval.low <= perplexity_of(sums, counts) <= interval.high
    assert interval == bootstrap_perplexity_ci(sums, counts, n_resamples=300, seed=1)
    delta, same = paired_bootstrap_perplexity_delta(sums, counts, sums, counts, n_resamples=100)
    assert delta == 0.0 and same.as_list() == [0.0, 0.0]
    delta, worse = paired_bootstrap_perplexity_delta(sums, counts, sums * 1.1, counts, n_resamples=100)
    assert delta > 0 and worse.low > 0
    with pytest.raises(ValueError, match="no scored tokens"):
        perplexity_of([1.0], [0])
    with pytest.raises(ValueError, match="cannot be paired"):
        paired_bootstrap_perplexity_delta(sums, counts, sums[:2], counts[:2])
    assert not higher_is_better("perplexity") and higher_is_better("accuracy")


# ---- the real SmolLM2-135M ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2(cache_root):
    """The packaged model through its alias (converted once per test session into the session's cache)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from compbench.models.references import resolve_model

    resolved = resolve_model("smollm2-135m", cache_dir=cache_root)
    return (AutoModelForCausalLM.from_pretrained(resolved.location).eval(),
            AutoTokenizer.from_pretrained(resolved.location))


@pytest.fixture(scope="module")
def sentences(glue_data) -> list[str]:
    """MRPC's news sentences (about 30 tokens each), one a document."""
    return list(glue_corpus(glue_data, tasks=["mrpc"], sentences_per_document=1).documents)


def test_plain_english_is_sane_and_shuffled_words_are_far_less_likely(smollm2, sentences):
    model, tokenizer = smollm2
    plain = list(sentences[:16])
    rng = random.Random(0)
    shuffled = []
    for sentence in plain:
        words = sentence.split()
        rng.shuffle(words)
        shuffled.append(" ".join(words))
    ordered = perplexity(model, tokenizer, plain, max_length=128, batch_size=8)
    mixed = perplexity(model, tokenizer, shuffled, max_length=128, batch_size=8)
    low, high = ordered.interval("document").as_list()
    print(f"\nSmolLM2 perplexity on {len(plain)} MRPC sentences: {ordered.perplexity:.1f} [{low:.1f}, {high:.1f}] "
          f"({ordered.n_tokens} tokens); the same words shuffled: {mixed.perplexity:.1f}")
    assert 10 < ordered.perplexity < 150
    assert mixed.perplexity > 10 * ordered.perplexity


def test_perplexity_equals_plain_transformers(smollm2, sentences):
    """The independent check of issue 17: a text that fits one window, scored by compbench and by
    exp(model(input_ids, labels=input_ids).loss)."""
    model, tokenizer = smollm2
    text = "\n".join(sentences[:3])
    ids = tokenizer(text).input_ids
    reference = _hf_loss_perplexity(model, ids)
    ours = perplexity(model, tokenizer, text, max_length=512)
    print(f"\nSmolLM2 on {len(ids)} tokens: compbench {ours.perplexity:.4f}, plain transformers {reference:.4f}")
    assert ours.n_windows == 1 and ours.n_tokens == len(ids) - 1
    assert ours.perplexity == pytest.approx(reference, rel=0.005)


def test_smollm2_bits_per_byte_equals_one_computed_by_hand(smollm2, sentences):
    """Bits per byte of the real SmolLM2 on a short text, by hand: plain transformers' mean loss x the scored tokens
    (nats), / ln 2, / the UTF-8 bytes of the scored tokens' text (all but the first token: SmolLM2 adds no <bos>)."""
    import torch

    model, tokenizer = smollm2
    text = f"{sentences[0]}\n{sentences[1]} Café crème, a naïve façade."
    ids = tokenizer(text).input_ids
    scored_text = tokenizer.decode(ids[1:], clean_up_tokenization_spaces=False)
    assert tokenizer.decode(ids[:1], clean_up_tokenization_spaces=False) + scored_text == text
    with torch.inference_mode():
        nats = float(model(torch.tensor([ids]), labels=torch.tensor([ids])).loss) * (len(ids) - 1)
    by_hand = nats / math.log(2) / len(scored_text.encode())
    ours = perplexity(model, tokenizer, text, max_length=512)
    print(f"\nSmolLM2 on {len(ids)} tokens, {len(text.encode())} bytes: {ours.bits_per_byte:.4f} bits per byte "
          f"(by hand {by_hand:.4f}), perplexity {ours.perplexity:.2f}")
    assert ours.unit_bytes().tolist() == [len(scored_text.encode())]
    assert ours.bits_per_byte == pytest.approx(by_hand, rel=1e-4)


def test_striding_stays_close_to_one_window(smollm2, sentences):
    model, tokenizer = smollm2
    text, n = "", 0
    for sentence in sentences:
        text = f"{text}\n{sentence}" if text else sentence
        n = len(tokenizer(text).input_ids)
        if n >= 400:
            break
    single = perplexity(model, tokenizer, text, max_length=512)
    strided = perplexity(model, tokenizer, text, max_length=192, stride=96, batch_size=4)
    print(f"\nSmolLM2 on {n} tokens: one window {single.perplexity:.2f}, windows of 192 every 96 "
          f"{strided.perplexity:.2f} ({strided.n_windows} windows)")
    assert single.n_windows == 1 and strided.n_windows > 1 and strided.n_tokens == single.n_tokens
    assert strided.perplexity == pytest.approx(single.perplexity, rel=0.05)


def test_zero_shot_sst2(smollm2, glue_data):
    model, tokenizer = smollm2
    frame = pd.read_parquet(glue_data / "glue" / "sst2" / "validation.parquet").head(40)
    scores = zero_shot_scores(model, tokenizer, render_prompts(SST2_TEMPLATE, frame), SST2_CHOICES, batch_size=16)
    labels = frame["label"].to_numpy()
    value = accuracy(scores.predictions, labels)
    low, high = bootstrap_ci("accuracy", scores.predictions, labels, n_resamples=500).as_list()
    majority = max(labels.mean(), 1 - labels.mean())
    print(f"\nSmolLM2 zero-shot SST-2 on {len(frame)} sentences: accuracy {value:.3f} [{low:.3f}, {high:.3f}] "
          f"(acc_norm {accuracy(scores.normalized_predictions, labels):.3f}; majority {majority:.3f})")
    assert 0.0 <= value <= 1.0 and scores.logliks.shape == (40, 2)
    assert value > majority        # measured 0.90 on these 40 rows (0.79 on all 872)


def test_multiple_choice_scores_prompt_delimiter_and_answer_as_lm_eval_does(smollm2):
    """lm-eval-harness's convention on a hand-made HellaSwag row: the request is (context, target_delimiter +
    ending), target_delimiter " " by default, plain concatenation; the log-probabilities summed are those of the
    tokens after the context's own, computed here from one forward pass of the whole string. Before, a data task's
    ending was glued to the prompt ("... He" + "is using ..." -> "Heis")."""
    import torch

    from compbench.tasks.causal_lm import ZeroShotConfig

    model, tokenizer = smollm2
    prompt = "Roof shingle removal: A man is sitting on a roof. He"
    endings = ["is using wrap to wrap a pair of skis.", "starts pulling up roofing on a roof."]
    entry = ZeroShotConfig(name="hellaswag", data="rows.jsonl", template="{ctx}", choices_column="endings")
    assert entry.delimiter == " "
    scores = zero_shot_scores(model, tokenizer, [prompt], [endings], target_delimiter=entry.delimiter)
    context = tokenizer(prompt).input_ids
    for j, ending in enumerate(endings):
        whole = tokenizer(prompt + " " + ending).input_ids            # the exact string scored
        assert whole[:len(context)] == context
        continuation = whole[len(context):]
        assert tokenizer.decode(continuation) == " " + ending          # the space is the answer's first token's
        with torch.inference_mode():
            log_probs = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), -1)
        by_hand = sum(float(log_probs[len(context) - 1 + i, token]) for i, token in enumerate(continuation))
        assert scores.n_tokens[0, j] == len(continuation)
        assert scores.logliks[0, j] == pytest.approx(by_hand, abs=1e-3)
        assert scores.n_bytes[0, j] == len(ending.encode())            # acc_norm: the answer's bytes, as lm-eval
    glued = zero_shot_scores(model, tokenizer, [prompt], [endings])    # what data tasks scored before
    assert not np.allclose(glued.logliks, scores.logliks)
