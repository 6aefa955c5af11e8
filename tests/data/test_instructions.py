"""Prompt/response data: rows → blocks with a `given` mask (padded with EOS or packed), the cache, chat
templates, and one-line errors that name the file and line of a bad row."""

from __future__ import annotations

import json

import numpy as np
import pytest

from radd_cli.data import tokens
from radd_cli.data.sources import source as data_source
from radd_cli.data.tokens import PROMPT, Packing
from radd_cli.errors import DataError
from radd_cli.io.tokenizer import Tokenizer, load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint) -> Tokenizer:
    return load_tokenizer(str(tiny_checkpoint))


def write_rows(path, rows) -> str:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return str(path)


def test_padded_rows_give_the_prompt_and_end_with_eos_that_count_as_response(tmp_path, tokenizer):
    rows = [{"prompt": "The cat", "response": " sat."}, {"prompt": "", "response": "The dog"}]
    source = write_rows(tmp_path / "sft.jsonl", rows)
    blocks, given = tokens.load_blocks(source, "all", tokenizer, 12, tmp_path / "cache")
    assert blocks.shape == given.shape == (2, 12)
    for block, flags, row in zip(blocks, given, rows):
        prompt, response = tokenizer.encode(row["prompt"]), tokenizer.encode(row["response"])
        assert block[: len(prompt)].tolist() == prompt and flags[: len(prompt)].all()
        rest = block[len(prompt) :].tolist()
        assert rest[: len(response)] == response and not flags[len(prompt) :].any()
        assert rest[len(response) :] == [tokenizer.eos_id] * (12 - len(prompt) - len(response))  # learns to stop


def test_packed_rows_run_back_to_back(tmp_path, tokenizer):
    rows = [{"prompt": f"The cat {i}", "response": " sat on the mat."} for i in range(10)]
    source = write_rows(tmp_path / "sft.jsonl", rows)
    blocks, given = tokens.load_blocks(source, "all", tokenizer, 8, tmp_path / "cache", Packing.pack)
    stream = tokens.token_stream(source, "all", tokenizer, tmp_path / "cache")
    ids, roles = stream.tokens, stream.roles
    assert blocks.shape[0] == len(ids) // 8
    assert blocks.reshape(-1).tolist() == ids[: blocks.size].tolist()
    assert given.reshape(-1).tolist() == ((roles[: blocks.size] & PROMPT) > 0).tolist()
    assert (blocks == tokenizer.eos_id).sum() == (ids[: blocks.size] == tokenizer.eos_id).sum()  # no padding


def test_plain_text_has_no_given_mask_and_instruction_data_is_recognised(tmp_path, tokenizer):
    text = write_rows(tmp_path / "text.jsonl", [{"text": "The cat sat on the mat. " * 4}] * 3)
    blocks, given = tokens.load_blocks(text, "all", tokenizer, 8, tmp_path / "cache")
    assert given is None and blocks.shape[1] == 8
    assert not data_source(text).prompted and not data_source("builtin").prompted
    assert data_source(write_rows(tmp_path / "p.jsonl", [{"prompt": "a", "response": "b"}])).prompted
    assert data_source(write_rows(tmp_path / "m.jsonl", [{"messages": []}])).prompted
    assert data_source("task:sort").prompted


def test_local_rows_hold_every_20th_out_for_validation(tmp_path):
    source = write_rows(tmp_path / "sft.jsonl", [{"prompt": str(i), "response": "x"} for i in range(41)])
    validation = data_source(source).rows("validation")
    assert [row.prompt for row in validation] == ["0", "20", "40"]
    assert len(data_source(source).rows("train")) == 38
    assert validation[1].where == f"{source} line 21"


def test_the_token_cache_is_reused_and_a_damaged_one_rebuilt(tmp_path, tokenizer, monkeypatch):
    source = write_rows(tmp_path / "sft.jsonl", [{"prompt": "The cat", "response": " sat."}] * 3)
    first = tokens.token_stream(source, "all", tokenizer, tmp_path / "cache")
    cached = sorted((tmp_path / "cache" / "tokens").iterdir())
    assert len(cached) == 2  # the tokens and the roles
    monkeypatch.setattr(tokens, "_tokenize_rows", lambda *a: pytest.fail("tokenized again"))
    again = tokens.token_stream(source, "all", tokenizer, tmp_path / "cache")
    assert np.array_equal(first.tokens, again.tokens) and np.array_equal(first.roles, again.roles)
    cached[0].write_bytes(b"garbage")
    monkeypatch.undo()
    rebuilt = tokens.token_stream(source, "all", tokenizer, tmp_path / "cache")
    assert np.array_equal(first.tokens, rebuilt.tokens) and np.array_equal(first.roles, rebuilt.roles)


def test_messages_use_the_tokenizer_chat_template(tmp_path, tokenizer):
    messages = [{"role": "user", "content": "The cat"}, {"role": "assistant", "content": " sat."}]
    source = write_rows(tmp_path / "chat.jsonl", [{"messages": messages}])
    with pytest.raises(DataError, match=f"{source} line 1 holds messages, but the tokenizer .* has no chat template"):
        tokens.load_blocks(source, "all", tokenizer, 16, tmp_path / "cache")
    tokenizer.hf.chat_template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}assistant:"
    try:
        blocks, given = tokens.load_blocks(source, "all", tokenizer, 32, tmp_path / "cache")
    finally:
        tokenizer.hf.chat_template = None
    prompt = tokenizer.encode("user: The cat\nassistant:")
    assert blocks[0, : len(prompt)].tolist() == prompt and given[0].sum() == len(prompt)
    assert blocks[0, len(prompt) : len(prompt) + 2].tolist() == tokenizer.encode(" sat.")[:2]


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "The cat"}', "line 2 has no 'response'; every row needs prompt and response"),
        ('{"response": "sat"}', "line 2 has no 'prompt'"),
        ('{"prompt": 3, "response": "x"}', "line 2: prompt is '3', not a string"),
        ("not json", "line 2 is not JSON"),
        ("[1, 2]", "line 2 is not a JSON object"),
        ('{"messages": "hi"}', "line 2: messages must be a list"),
        ('{"messages": [{"role": "user", "content": "hi"}]}', "line 2: the last message must be the assistant's"),
        ('{"prompt": "' + "The cat sat on the mat. " * 8 + '", "response": "x"}', "line 2: the prompt is"),
        (
            '{"prompt": "The", "response": "' + "cat sat on the mat. " * 8 + '"}',
            "line 2: prompt, response and EOS take",
        ),
    ],
)
def test_a_bad_row_is_an_error_naming_its_file_and_line(tmp_path, tokenizer, line, message):
    path = tmp_path / "sft.jsonl"
    write_rows(path, [{"prompt": "The cat", "response": " sat."}, line])
    with pytest.raises(DataError, match=f"^{path} {message}"):
        tokens.load_blocks(str(path), "all", tokenizer, 16, tmp_path / "cache")


def test_an_empty_file_and_a_long_prompt_when_packing_are_errors(tmp_path, tokenizer):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    folder = tmp_path / "data"
    folder.mkdir()
    write_rows(folder / "a.jsonl", [{"prompt": "The cat", "response": " sat."}])
    (folder / "b.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match=f"{folder / 'b.jsonl'} is empty"):
        data_source(str(folder)).rows("all")
    long = write_rows(tmp_path / "long.jsonl", [{"prompt": "The cat sat on the mat. " * 8, "response": "x"}])
    with pytest.raises(DataError, match="long.jsonl line 1: the prompt is .* no room for a response"):
        tokens.load_blocks(long, "all", tokenizer, 16, tmp_path / "cache", Packing.pack)
    assert not data_source(str(empty)).prompted  # plain-text loading names it as empty


def test_a_byte_order_mark_is_not_data(tmp_path, tokenizer):
    """Editors on Windows start UTF-8 files with a BOM: the first row's fields were reported missing."""
    rows = [{"prompt": "The cat", "response": " sat."}, {"prompt": "The dog", "response": " ran."}]
    plain = write_rows(tmp_path / "plain.jsonl", rows)
    marked = tmp_path / "marked.jsonl"
    marked.write_bytes(b"\xef\xbb\xbf" + (tmp_path / "plain.jsonl").read_bytes())
    assert data_source(str(marked)).prompted
    assert data_source(str(marked)).rows("all")[0].prompt == "The cat"
    assert [r.response for r in data_source(str(marked)).rows("all")] == [
        r.response for r in data_source(plain).rows("all")
    ]
