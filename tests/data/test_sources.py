"""Sources as types: the built-in text, local files and folders, Hub datasets, their splits and the one hold-out
rule, and the errors that say how to give data."""

import json

import pytest

from radd_cli.data import tokens
from radd_cli.data.sources import source
from radd_cli.errors import ConfigError, DataError
from radd_cli.io.tokenizer import load_tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["The quick brown fox jumps over the lazy dog.", "Python documentation topics.", "a b c d e f g"] * 20
    return train_tokenizer(texts, 300)


def test_builtin_corpus_needs_no_download_and_splits_by_document():
    everything = source("builtin").documents("all")
    train, valid = source("builtin").documents("train"), source("builtin").documents("validation")
    assert len(everything) > 50 and len(valid) >= 1 and len(train) + len(valid) == len(everything)
    assert not set(train["text"]) & set(valid["text"])
    assert any("statement" in text for text in train["text"])


def test_local_text_jsonl_and_folders(tmp_path, tokenizer):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("first document\nwith two lines")
    (tmp_path / "notes" / "b.jsonl").write_text(
        json.dumps({"text": "second"}) + "\n" + json.dumps({"text": "third"}) + "\n"
    )
    documents = source(str(tmp_path / "notes")).documents("all")
    assert sorted(documents["text"]) == ["first document\nwith two lines", "second", "third"]
    stream = tokens.token_stream(str(tmp_path / "notes"), "all", tokenizer, tmp_path / "cache").tokens
    assert (stream == tokenizer.eos_id).sum() == 3 and stream[-1] == tokenizer.eos_id  # EOS after each document


def test_bad_sources_are_clear_errors(tmp_path, tokenizer, monkeypatch):
    with pytest.raises(DataError, match="no such file or folder.*openwebtext"):
        source(str(tmp_path / "missing.txt")).documents("all")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no .txt, .jsonl, .json files"):
        source(str(tmp_path / "empty")).documents("all")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(DataError, match="unknown file type"):
        source(str(tmp_path / "image.png")).documents("all")
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 10)
    with pytest.raises(DataError, match="is not UTF-8 text"):
        source(str(tmp_path / "binary.txt")).documents("all")
    (tmp_path / "rows.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(DataError, match="need a `text`"):
        source(str(tmp_path / "rows.jsonl")).documents("all")
    (tmp_path / "blank.txt").write_text("")
    with pytest.raises(DataError, match="holds no documents|fewer than one block"):
        tokens.load_blocks(str(tmp_path / "blank.txt"), "all", tokenizer, 8, tmp_path / "cache")
    with pytest.raises(ConfigError, match="has no split 'test'"):
        source("builtin").documents("test")
    with pytest.raises(ConfigError, match="split: lambada has no split 'train'"):
        source("lambada").documents("train")


def test_unreachable_dataset_and_tokenizer_name_how_to_give_a_local_copy(monkeypatch):
    import datasets.config
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match="cannot load dataset ptb \\(ptb_text_only\\).*pass FILE.jsonl"):
        source("ptb").documents("test")
    with pytest.raises(DataError, match="cannot load the tokenizer 'not-a-real/tokenizer'.*--local-dir"):
        load_tokenizer("not-a-real/tokenizer")


def test_files_that_are_not_regular_are_refused_instead_of_blocking(tmp_path, tokenizer):
    import os

    os.mkfifo(tmp_path / "pipe.txt")
    for path in (tmp_path / "pipe.txt", tmp_path):
        with pytest.raises(DataError, match="pipe.txt is not a regular file"):
            source(str(path)).documents("all")


@pytest.mark.parametrize(
    "name, content", [("blank.jsonl", b"\n\n   \n\t\n"), ("blank.txt", b"\n \n"), ("bom.jsonl", b"\xef\xbb\xbf\n\n")]
)
def test_a_file_of_blank_lines_holds_no_documents(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)  # was a message of the datasets library: "corresponds to no data"
    with pytest.raises(DataError, match="holds no documents: its files are empty or hold only blank lines"):
        source(str(tmp_path / name)).documents("all")
