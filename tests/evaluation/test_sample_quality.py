"""Generative metrics against a tiny random GPT-2 judge (context 16) and a word-level tokenizer built here."""

from __future__ import annotations

import math
import re

import pytest
import torch

from radd_cli.errors import DataError
from radd_cli.evaluation.sample_quality import (
    GenerativeReport,
    distinct_n,
    generative_metrics,
    judge_nll,
    load_judge,
    unigram_entropy,
)

EOS = "<|endoftext|>"
CORPUS = [
    "the cat sat on the mat",
    "a dog ran in the park and the cat ran too",
    "birds sing in the morning while the sun rises over the hills",
]
CONTEXT = 16


@pytest.fixture(scope="module")
def judge_tokenizer():
    """A word-level tokenizer over CORPUS's words, with <|endoftext|> as EOS (and so as BOS)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(CORPUS, trainer=trainers.WordLevelTrainer(special_tokens=["[UNK]", EOS]))
    return PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=EOS, unk_token="[UNK]")


@pytest.fixture(scope="module")
def judge_model(judge_tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=len(judge_tokenizer), n_positions=CONTEXT)
    return GPT2LMHeadModel(config).eval()


def direct_nll(model, bos: int, ids: list[int]) -> float:
    """Summed NLL of `ids` after `bos`, straight from the model's logits, one token at a time."""
    full = torch.tensor([[bos] + ids])  # (1, T)
    with torch.no_grad():
        log_probs = torch.log_softmax(model(full).logits[0].double(), dim=-1)  # (T, V)
    return -sum(log_probs[position, token].item() for position, token in enumerate(ids))


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_judge_nll_matches_direct_computation(judge_model, judge_tokenizer):
    text = "the cat sat on the mat"
    ids = encode(judge_tokenizer, text)
    [(nll, count)] = judge_nll(judge_model, judge_tokenizer, [text])
    assert count == len(ids) == 6
    assert nll == pytest.approx(direct_nll(judge_model, judge_tokenizer.eos_token_id, ids), abs=1e-5)
    assert nll > 0


def test_long_text_is_scored_in_windows_each_after_bos(judge_model, judge_tokenizer):
    text = " ".join(CORPUS * 2)  # 58 words: windows of 15, 15, 15, 13
    ids = encode(judge_tokenizer, text)
    assert len(ids) > CONTEXT
    [(nll, count)] = judge_nll(judge_model, judge_tokenizer, [text])
    chunks = [ids[start : start + CONTEXT - 1] for start in range(0, len(ids), CONTEXT - 1)]
    expected = sum(direct_nll(judge_model, judge_tokenizer.eos_token_id, chunk) for chunk in chunks)
    assert count == len(ids) == 58 and len(chunks) == 4
    assert nll == pytest.approx(expected, abs=1e-5)


def test_padding_does_not_change_scores(judge_model, judge_tokenizer):
    texts = ["the cat", CORPUS[2], "a dog ran", " ".join(CORPUS), "sun"]
    batched = judge_nll(judge_model, judge_tokenizer, texts, batch_size=3)
    single = judge_nll(judge_model, judge_tokenizer, texts, batch_size=1)
    assert [count for _, count in batched] == [count for _, count in single] == [2, 12, 3, 29, 1]
    for (nll_batched, _), (nll_single, _) in zip(batched, single):
        assert nll_batched == pytest.approx(nll_single, abs=1e-5)


def test_empty_text_scores_nothing(judge_model, judge_tokenizer):
    assert judge_nll(judge_model, judge_tokenizer, ["", "the cat"])[0] == (0.0, 0)
    assert judge_nll(judge_model, judge_tokenizer, []) == []


@pytest.mark.parametrize(
    "ids, expected",
    [
        ([1, 1, 2, 2], math.log(2)),
        ([5, 5, 5], 0.0),
        ([1, 2, 3, 4], math.log(4)),
        ([7, 7, 7, 8], -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))),
        ([], 0.0),
    ],
)
def test_unigram_entropy(ids, expected):
    assert unigram_entropy(ids) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("n, expected", [(1, 4 / 6), (2, 3 / 4), (3, 1.0), (4, 0.0)])
def test_distinct_n(n, expected):
    assert distinct_n([[1, 2, 3], [1, 2, 4]], n) == pytest.approx(expected)


def test_distinct_n_does_not_cross_samples_and_rejects_n_below_one():
    assert distinct_n([[1], [1]], 2) == 0.0  # no bigram (1, 1) across the boundary
    assert distinct_n([[3, 3, 3, 3]], 2) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="n >= 1"):
        distinct_n([[1, 2]], 0)


def test_report_combines_judge_and_sampler_tokens(judge_model, judge_tokenizer):
    texts = CORPUS[:2]
    sampler_ids = [[1, 1, 2, 2], [5, 5, 5, 5, 6]]
    report = generative_metrics(texts, sampler_ids, judge_model, judge_tokenizer, batch_size=2)
    scores = judge_nll(judge_model, judge_tokenizer, texts)
    total_nll, total_tokens = sum(nll for nll, _ in scores), sum(count for _, count in scores)
    assert report.num_tokens == [6, 11]
    assert report.token_weighted_perplexity == pytest.approx(math.exp(total_nll / total_tokens), rel=1e-6)
    assert report.perplexity == pytest.approx([math.exp(nll / count) for nll, count in scores], rel=1e-6)
    assert report.mean_perplexity == pytest.approx(sum(report.perplexity) / 2)
    assert report.entropy == pytest.approx([math.log(2), -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))])
    # n-grams of the sampler's tokens: 9 unigrams (4 distinct), 7 bigrams (5), 5 trigrams (4), 3 4-grams (3)
    assert report.distinct == pytest.approx({1: 4 / 9, 2: 5 / 7, 3: 4 / 5, 4: 1.0})
    as_dict = report.to_dict()
    assert as_dict["distinct"] == pytest.approx({"1": 4 / 9, "2": 5 / 7, "3": 4 / 5, "4": 1.0})
    assert as_dict["num_tokens"] == [6, 11] and as_dict["mean_entropy"] == report.mean_entropy


def test_report_without_sampler_tokens_uses_judge_tokens(judge_model, judge_tokenizer):
    report = generative_metrics(["the cat sat on the mat"], None, judge_model, judge_tokenizer)
    judge_ids = encode(judge_tokenizer, "the cat sat on the mat")  # "the" twice, four other words once
    assert isinstance(report, GenerativeReport)
    assert report.entropy == pytest.approx([unigram_entropy(judge_ids)])
    assert report.entropy[0] == pytest.approx(-(2 / 6) * math.log(2 / 6) - 4 * (1 / 6) * math.log(1 / 6))
    assert report.distinct[1] == pytest.approx(5 / 6)


def test_report_rejects_empty_and_mismatched_input(judge_model, judge_tokenizer):
    with pytest.raises(DataError, match="no samples"):
        generative_metrics([], None, judge_model, judge_tokenizer)
    with pytest.raises(DataError, match="2 sample texts but 1 token lists"):
        generative_metrics(["the cat", "a dog"], [[1]], judge_model, judge_tokenizer)
    with pytest.raises(DataError, match=re.escape("samples [1] are empty")):
        generative_metrics(["the cat", ""], None, judge_model, judge_tokenizer)


def test_load_judge_missing_folder_names_it(tmp_path):
    missing = tmp_path / "no-such-judge"
    with pytest.raises(DataError, match=re.escape(str(missing))) as caught:
        load_judge(str(missing))
    assert "hf download" in str(caught.value) and "\n" not in str(caught.value)


def test_load_judge_from_saved_folder(judge_model, judge_tokenizer, tmp_path):
    judge_model.save_pretrained(tmp_path)
    judge_tokenizer.save_pretrained(tmp_path)
    model, tokenizer = load_judge(str(tmp_path))
    assert not model.training and next(model.parameters()).dtype == torch.float32
    texts = ["the cat sat on the mat", " ".join(CORPUS)]
    loaded = judge_nll(model, tokenizer, texts)
    original = judge_nll(judge_model, judge_tokenizer, texts)
    assert [count for _, count in loaded] == [count for _, count in original]
    for (nll_loaded, _), (nll_original, _) in zip(loaded, original):
        assert nll_loaded == pytest.approx(nll_original, abs=1e-5)
