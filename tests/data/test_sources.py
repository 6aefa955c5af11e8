"""Data: sources, splits, tokenize-once caching, packing into blocks, the resumable block order."""

import json

import numpy as np
import pytest

from radd_cli.data import sources as data
from radd_cli.errors import ConfigError, DataError
from radd_cli.io.tokenizer import load_tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["The quick brown fox jumps over the lazy dog.", "Python documentation topics.", "a b c d e f g"] * 20
    return train_tokenizer(texts, 300)


def test_builtin_corpus_needs_no_download_and_splits_by_document():
    everything = data.load_documents("builtin", "all")
    train, valid = data.load_documents("builtin", "train"), data.load_documents("builtin", "validation")
    assert len(everything) > 50 and len(valid) >= 1 and len(train) + len(valid) == len(everything)
    assert not set(train["text"]) & set(valid["text"])
    assert any("statement" in text for text in train["text"])


def test_local_text_jsonl_and_folders(tmp_path, tokenizer):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("first document\nwith two lines")
    (tmp_path / "notes" / "b.jsonl").write_text(
        json.dumps({"text": "second"}) + "\n" + json.dumps({"text": "third"}) + "\n"
    )
    documents = data.load_documents(str(tmp_path / "notes"), "all")
    assert sorted(documents["text"]) == ["first document\nwith two lines", "second", "third"]
    stream = data.token_stream(str(tmp_path / "notes"), "all", tokenizer, tmp_path / "cache")
    assert (stream == tokenizer.eos_id).sum() == 3 and stream[-1] == tokenizer.eos_id  # EOS after each document


def test_pre_tokenized_rows_are_used_as_they_are(tmp_path, tokenizer):
    path = tmp_path / "ids.jsonl"
    path.write_text("\n".join(json.dumps({"input_ids": row}) for row in ([1, 2, 3, 4], [5, 6, 7, 8])))
    blocks = data.load_blocks(str(path), "all", tokenizer, 4, tmp_path / "cache")
    assert blocks.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    for rows, found in (
        ([[1, 2], [1, 2, 999]], "row 2: input_ids must be whole numbers in 0..299, found 999"),
        ([[1.5, 2]], "row 1: input_ids must be whole numbers in 0..299, found 1.5"),
        ([[3, -1]], "row 1: .* found -1"),
        ([[1], "12"], "row 2: .* found 12"),
    ):
        path.write_text("\n".join(json.dumps({"input_ids": row}) for row in rows))
        with pytest.raises(DataError, match=f"ids.jsonl \\(all\\): {found}"):
            data.load_blocks(str(path), "all", tokenizer, 2, tmp_path / "cache")


def test_tokenizing_happens_once_per_source_split_and_tokenizer(tmp_path, tokenizer, monkeypatch):
    path = tmp_path / "doc.txt"
    path.write_text("some text to tokenize " * 20)
    first = data.token_stream(str(path), "all", tokenizer, tmp_path / "cache")

    def refuse(*args):
        raise AssertionError("re-tokenized a cached source")

    monkeypatch.setattr(data, "_tokenize", refuse)
    second = data.token_stream(str(path), "all", tokenizer, tmp_path / "cache")
    assert np.array_equal(first, second)
    path.write_text("changed text")  # a changed file is a different source
    with pytest.raises(AssertionError, match="re-tokenized"):
        data.token_stream(str(path), "all", tokenizer, tmp_path / "cache")


def test_named_datasets_get_their_detokenizer(tmp_path, tokenizer, monkeypatch):
    import datasets

    monkeypatch.setattr(
        data,
        "_hub_documents",
        lambda name, split: datasets.Dataset.from_dict({"text": ["the company 's shares fell N % \\/ year"]}),
    )
    stream = data.token_stream("ptb", "test", tokenizer, tmp_path / "cache")
    assert tokenizer.decode(stream[:-1].tolist()) == "the company's shares fell 1 % / year"


def test_blocks_drop_the_remainder_and_refuse_too_little_data():
    stream = np.arange(10)
    assert data.blocks(stream, 4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(DataError, match="has 10 tokens, fewer than one block of 16"):
        data.blocks(stream, 16, "notes.txt")


def test_block_order_is_a_seeded_permutation_per_epoch_and_resumable():
    order = data.BlockOrder(num_blocks=5, seed=3)
    first_two_epochs = order.indices(0, 10)
    assert sorted(first_two_epochs[:5]) == sorted(first_two_epochs[5:]) == list(range(5))
    assert not np.array_equal(first_two_epochs[:5], first_two_epochs[5:])
    assert np.array_equal(order.indices(3, 4), first_two_epochs[3:7])  # resume from any position
    assert not np.array_equal(data.BlockOrder(5, seed=4).indices(0, 5), first_two_epochs[:5])


def test_bad_sources_are_clear_errors(tmp_path, tokenizer, monkeypatch):
    with pytest.raises(DataError, match="no such file or folder.*openwebtext"):
        data.load_documents(str(tmp_path / "missing.txt"), "all")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no .txt, .jsonl, .json files"):
        data.load_documents(str(tmp_path / "empty"), "all")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(DataError, match="unknown file type"):
        data.load_documents(str(tmp_path / "image.png"), "all")
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 10)
    with pytest.raises(DataError, match="is not UTF-8 text"):
        data.load_documents(str(tmp_path / "binary.txt"), "all")
    (tmp_path / "rows.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(DataError, match="need a `text`"):
        data.load_documents(str(tmp_path / "rows.jsonl"), "all")
    (tmp_path / "blank.txt").write_text("")
    with pytest.raises(DataError, match="holds no documents|fewer than one block"):
        data.load_blocks(str(tmp_path / "blank.txt"), "all", tokenizer, 8, tmp_path / "cache")
    with pytest.raises(ConfigError, match="has no split 'test'"):
        data.load_documents("builtin", "test")
    with pytest.raises(ConfigError, match="dataset lambada has no split 'train'"):
        data.load_documents("lambada", "train")


def test_unreachable_dataset_and_tokenizer_name_how_to_give_a_local_copy(monkeypatch):
    import datasets.config
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match="cannot load dataset ptb \\(ptb_text_only\\).*pass FILE.jsonl"):
        data.load_documents("ptb", "test")
    with pytest.raises(DataError, match="cannot load the tokenizer 'not-a-real/tokenizer'.*--local-dir"):
        load_tokenizer("not-a-real/tokenizer")


def test_a_damaged_cache_file_is_rebuilt(tmp_path, tokenizer):
    path = tmp_path / "notes.txt"
    path.write_text("one document\n\nanother one\n")
    first = data.token_stream(str(path), "all", tokenizer, tmp_path / "cache")
    [cached] = (tmp_path / "cache" / "tokens").glob("*.npy")
    cached.write_bytes(cached.read_bytes()[:20])  # truncated (a crash of an older version, a bad disk)
    again = data.token_stream(str(path), "all", tokenizer, tmp_path / "cache")
    assert again.tolist() == first.tolist() and len(cached.read_bytes()) > 20


def test_files_that_are_not_regular_are_refused_instead_of_blocking(tmp_path, tokenizer):
    import os

    os.mkfifo(tmp_path / "pipe.txt")
    for source in (tmp_path / "pipe.txt", tmp_path):
        with pytest.raises(DataError, match="pipe.txt is not a regular file"):
            data.load_documents(str(source), "all")


@pytest.mark.parametrize(
    "name, content", [("blank.jsonl", b"\n\n   \n\t\n"), ("blank.txt", b"\n \n"), ("bom.jsonl", b"\xef\xbb\xbf\n\n")]
)
def test_a_file_of_blank_lines_holds_no_documents(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)  # was a message of the datasets library: "corresponds to no data"
    with pytest.raises(DataError, match="holds no documents: its files are empty or hold only blank lines"):
        data.load_documents(str(tmp_path / name), "all")
