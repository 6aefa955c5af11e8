"""Any source's split as one cached token stream: tokenized once, a damaged cache rebuilt, detokenizers applied,
pre-tokenized rows used as they are; blocks and the resumable block order."""

import json

import numpy as np
import pytest

from radd_cli.data import sources, tokens
from radd_cli.errors import DataError
from radd_cli.io.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["The quick brown fox jumps over the lazy dog.", "Python documentation topics.", "a b c d e f g"] * 20
    return train_tokenizer(texts, 300)


def test_pre_tokenized_rows_are_used_as_they_are(tmp_path, tokenizer):
    path = tmp_path / "ids.jsonl"
    path.write_text("\n".join(json.dumps({"input_ids": row}) for row in ([1, 2, 3, 4], [5, 6, 7, 8])))
    blocks, _ = tokens.load_blocks(str(path), "all", tokenizer, 4, tmp_path / "cache")
    assert blocks.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    for rows, found in (
        ([[1, 2], [1, 2, 999]], "row 2: input_ids must be whole numbers in 0..299, found 999"),
        ([[1.5, 2]], "row 1: input_ids must be whole numbers in 0..299, found 1.5"),
        ([[3, -1]], "row 1: .* found -1"),
        ([[1], "12"], "row 2: .* found 12"),
    ):
        path.write_text("\n".join(json.dumps({"input_ids": row}) for row in rows))
        with pytest.raises(DataError, match=f"ids.jsonl \\(all\\): {found}"):
            tokens.load_blocks(str(path), "all", tokenizer, 2, tmp_path / "cache")


def test_tokenizing_happens_once_per_source_split_and_tokenizer(tmp_path, tokenizer, monkeypatch):
    path = tmp_path / "doc.txt"
    path.write_text("some text to tokenize " * 20)
    first = tokens.token_stream(str(path), "all", tokenizer, tmp_path / "cache").tokens

    def refuse(*args):
        raise AssertionError("re-tokenized a cached source")

    monkeypatch.setattr(tokens, "_tokenize_documents", refuse)
    second = tokens.token_stream(str(path), "all", tokenizer, tmp_path / "cache").tokens
    assert np.array_equal(first, second)
    path.write_text("changed text")  # a changed file is a different source
    with pytest.raises(AssertionError, match="re-tokenized"):
        tokens.token_stream(str(path), "all", tokenizer, tmp_path / "cache").tokens


def test_named_datasets_get_their_detokenizer(tmp_path, tokenizer, monkeypatch):
    import datasets

    monkeypatch.setattr(
        sources,
        "_hub_documents",
        lambda name, spec, split: datasets.Dataset.from_dict({"text": ["the company 's shares fell N % \\/ year"]}),
    )
    stream = tokens.token_stream("ptb", "test", tokenizer, tmp_path / "cache").tokens
    assert tokenizer.decode(stream[:-1].tolist()) == "the company's shares fell 1 % / year"


def test_a_damaged_cache_file_is_rebuilt(tmp_path, tokenizer):
    path = tmp_path / "notes.txt"
    path.write_text("one document\n\nanother one\n")
    first = tokens.token_stream(str(path), "all", tokenizer, tmp_path / "cache").tokens
    [cached] = (tmp_path / "cache" / "tokens").glob("*.npy")
    cached.write_bytes(cached.read_bytes()[:20])  # truncated (a crash of an older version, a bad disk)
    again = tokens.token_stream(str(path), "all", tokenizer, tmp_path / "cache").tokens
    assert again.tolist() == first.tolist() and len(cached.read_bytes()) > 20


def test_blocks_drop_the_remainder_and_refuse_too_little_data():
    stream = np.arange(10)
    assert tokens.blocks(stream, 4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(DataError, match="has 10 tokens, fewer than one block of 16"):
        tokens.blocks(stream, 16, "notes.txt")


def test_block_order_is_a_seeded_permutation_per_epoch_and_resumable():
    order = tokens.BlockOrder(num_blocks=5, seed=3)
    first_two_epochs = order.indices(0, 10)
    assert sorted(first_two_epochs[:5]) == sorted(first_two_epochs[5:]) == list(range(5))
    assert not np.array_equal(first_two_epochs[:5], first_two_epochs[5:])
    assert np.array_equal(order.indices(3, 4), first_two_epochs[3:7])  # resume from any position
    assert not np.array_equal(tokens.BlockOrder(5, seed=4).indices(0, 5), first_two_epochs[:5])
