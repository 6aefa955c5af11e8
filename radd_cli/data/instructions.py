"""Prompt/response rows (docs/fine-tuning.md): read from JSON lines, one checked row at a time.

A row is {"prompt": ..., "response": ...}, or {"messages": [{"role": ..., "content": ...}, ...]} whose last
message (the assistant's) is the response and the rest, rendered by the tokenizer's chat template, the prompt.
A bad row is a DataError naming its file and line. tokens.py turns rows into tokens and a `given` mask: the
prompt is conditioned on, never masked and never scored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from radd_cli.errors import DataError
from radd_cli.io.tokenizer import Tokenizer


@dataclass(frozen=True)
class Row:
    where: str  # "FILE line N" or "task:NAME (split) row N", for messages
    prompt: str | None = None
    response: str | None = None
    messages: tuple[dict, ...] | None = None

    def texts(self) -> list[str]:
        """Its pieces of text, each apart (a tokenizer trained on rows learns them apart, as they are tokenized)."""
        return [m["content"] for m in self.messages] if self.messages is not None else [self.prompt, self.response]


def first_row_is_prompted(files: list[Path]) -> bool:
    """Whether the first row of these JSON lines files is a prompt/response row (`prompt` or `messages`)."""
    for file in files:
        for _, line in _lines(file):
            try:
                first = json.loads(line)
            except json.JSONDecodeError:
                return False
            return isinstance(first, dict) and ("prompt" in first or "messages" in first)
    return False


def _lines(file: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of each line that is not blank."""
    try:
        with open(file, encoding="utf-8-sig") as handle:  # a BOM (Windows editors write one) is not data
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield number, line
    except UnicodeDecodeError as error:
        raise DataError(f"{file} is not UTF-8 text ({error.reason}); give JSON lines") from None


def file_rows(file: Path) -> list[Row]:
    if file.suffix not in (".jsonl", ".json"):
        raise DataError(f"{file}: prompt/response data is JSON lines (.jsonl); this folder mixes in other files")
    rows = [_row(line, f"{file} line {number}") for number, line in _lines(file)]
    if not rows:
        raise DataError(f"{file} is empty; give one JSON object per line with prompt and response")
    return rows


def _row(line: str, where: str) -> Row:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{where} is not JSON ({error.msg}); give one JSON object per line") from None
    if not isinstance(value, dict):
        raise DataError(f'{where} is not a JSON object; give {{"prompt": ..., "response": ...}}')
    if "messages" in value:
        return Row(where, messages=_messages(value["messages"], where))
    missing = [key for key in ("prompt", "response") if key not in value]
    if missing:
        raise DataError(f"{where} has no {' or '.join(repr(k) for k in missing)}; every row needs prompt and response")
    for key in ("prompt", "response"):
        if not isinstance(value[key], str):
            raise DataError(f"{where}: {key} is {str(value[key])[:40]!r}, not a string; fix or drop that row")
    return Row(where, value["prompt"], value["response"])


def _messages(messages, where: str) -> tuple[dict, ...]:
    well_formed = isinstance(messages, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
    )
    if not well_formed or not messages:
        raise DataError(f'{where}: messages must be a list of {{"role": ..., "content": ...}} with string values')
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{where}: the last message must be the assistant's (the response to learn)")
    return tuple(messages)


def prompt_and_response(row: Row, tokenizer: Tokenizer) -> tuple[str, str]:
    """The prompt and response text of a row; messages go through the tokenizer's chat template."""
    if row.messages is None:
        return row.prompt, row.response
    if not getattr(tokenizer.hf, "chat_template", None):
        raise DataError(
            f"{row.where} holds messages, but the tokenizer {tokenizer.name} has no chat template; give "
            "prompt/response rows, or a tokenizer that has one"
        )
    prompt = tokenizer.hf.apply_chat_template(list(row.messages[:-1]), tokenize=False, add_generation_prompt=True)
    return prompt, row.messages[-1]["content"]
