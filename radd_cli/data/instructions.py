"""Prompt/response data for fine-tuning (docs/fine-tuning.md): rows → token blocks and a `given` mask.

Sources: a `.jsonl` file (or a folder of them) whose rows are {"prompt": ..., "response": ...} or
{"messages": [{"role": ..., "content": ...}, ...]} (the tokenizer's chat template renders all messages but
the last as the prompt; the last, the assistant's, is the response), or a built-in task `task:NAME`.
Local sources hold every 20th row out as `validation`, like plain text.

Each row becomes its prompt's tokens, which are *given* (never masked, never scored), then the
response's tokens and EOS. Blocks of L tokens are made in one of two ways (`data.packing`):
- `pad` (LLaDA's recipe): one row per block, filled up with EOS tokens that belong to the response, so
  the model learns where an answer ends;
- `pack`: rows back to back, cut into blocks (a row may straddle two blocks).
The token stream and a roles array (prompt or response, start of a row) are cached like plain text, so
any block length or packing can be cut from them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from radd_cli.data import sources as data
from radd_cli.data import tasks
from radd_cli.errors import ConfigError, DataError
from radd_cli.files import WriteError, cause, remove, write_atomically
from radd_cli.io.tokenizer import Tokenizer
from radd_cli.validation import Choice

PROMPT, START = 1, 2  # bits of the roles array: a prompt token; the first token of a row
FORMAT = "instructions-1"  # part of the cache key: change it when the tokenization changes


class Packing(Choice):
    """How prompt/response rows fill blocks: one per block padded with EOS, or back to back."""

    pad = "pad"
    pack = "pack"


@dataclass(frozen=True)
class Row:
    where: str  # "FILE line N" or "task:NAME (split) row N", for messages
    prompt: str | None = None
    response: str | None = None
    messages: tuple[dict, ...] | None = None


def is_instruction_source(source: str) -> bool:
    """A built-in task, or local JSON lines whose first row has `prompt` or `messages`."""
    if tasks.is_task(source):
        return True
    path = Path(source).expanduser()
    if source in data.DATASETS or source == data.BUILTIN or not path.exists():
        return False
    files = [f for f in data.local_files(path) if f.suffix in (".jsonl", ".json")]
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


def read_rows(source: str, split: str) -> list[Row]:
    """Every row of (source, split), each checked; a bad one is a DataError naming its file and line."""
    if tasks.is_task(source):
        name = tasks.task_name(source)
        return [
            Row(f"{source} ({split}) row {i + 1}", e.prompt, e.response)
            for i, e in enumerate(tasks.examples(name, split))
        ]
    data.check_split(source, split)
    rows = [row for file in data.local_files(Path(source).expanduser()) for row in _file_rows(file)]
    if not rows:
        raise DataError(f"{source} holds no rows: its files are empty; give JSON lines with prompt and response")
    if split == "all":
        return rows
    held_out = split == "validation"
    kept = [row for i, row in enumerate(rows) if (i % data.VALIDATION_EVERY == 0) == held_out]
    if not kept:
        raise DataError(
            f"{source} has {len(rows)} row(s), too few to hold one in {data.VALIDATION_EVERY} out for validation; "
            "use data.train_split = 'all' and give separate validation data"
        )
    return kept


def _file_rows(file: Path) -> list[Row]:
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


def tokenize(rows: list[Row], tokenizer: Tokenizer, batch: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, roles): each row's prompt tokens then its response tokens and EOS, all rows back to back."""
    dtype = np.uint16 if tokenizer.vocab_size < 2**16 else np.uint32
    tokens, roles = [], []
    for start in range(0, len(rows), batch):
        texts = [prompt_and_response(row, tokenizer) for row in rows[start : start + batch]]
        prompts = tokenizer.encode_batch([prompt for prompt, _ in texts])
        responses = tokenizer.encode_batch([response for _, response in texts])
        for prompt, response in zip(prompts, responses):
            ids = prompt + response + [tokenizer.eos_id]
            role = np.zeros(len(ids), dtype=np.uint8)
            role[: len(prompt)] = PROMPT
            role[0] |= START
            tokens.append(np.asarray(ids, dtype=dtype))
            roles.append(role)
    return np.concatenate(tokens), np.concatenate(roles)


def token_stream(source: str, split: str, tokenizer: Tokenizer, cache_dir) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, roles) of (source, split), cached on disk as two arrays beside the plain-text cache."""
    cache = Path(cache_dir).expanduser() / "tokens"
    identity = [tasks.task_name(source), tasks.SPLITS] if tasks.is_task(source) else data.source_identity(source)
    template = getattr(tokenizer.hf, "chat_template", None)
    key = hashlib.sha256(json.dumps([FORMAT, identity, split, tokenizer.fingerprint(), template]).encode()).hexdigest()
    stem = f"{Path(source).name or 'data'}-{split}-{key[:16]}".replace(":", "-")
    paths = cache / f"{stem}.npy", cache / f"{stem}-roles.npy"
    if all(path.is_file() for path in paths):
        try:
            return tuple(np.load(path, mmap_mode="r") for path in paths)
        except (OSError, ValueError, EOFError):  # a damaged cache file of ours: tokenize again
            for path in paths:
                remove(path)
    arrays = tokenize(read_rows(source, split), tokenizer)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WriteError(f"cannot create the token cache {cache}: {cause(error)}; set data.cache_dir") from error
    for path, array in zip(paths[::-1], arrays[::-1]):  # the roles first: the tokens file marks a complete pair
        write_atomically(path, lambda temporary, array=array: np.save(temporary, array))
    return arrays


def cut_blocks(
    tokens: np.ndarray, roles: np.ndarray, length: int, packing: Packing, eos_id: int, locate
) -> tuple[np.ndarray, np.ndarray]:
    """(blocks (n, L), given (n, L) bool). `locate(k)` names row k (0-based) for errors."""
    starts = np.flatnonzero(roles & START)
    sizes = np.diff(np.append(starts, len(tokens)))  # (rows,)
    prompts = np.add.reduceat((roles & PROMPT).astype(np.int64), starts)  # (rows,) prompt tokens of each
    too_long = np.flatnonzero(prompts >= length)
    if len(too_long):
        k = int(too_long[0])
        raise DataError(
            f"{locate(k)}: the prompt is {prompts[k]} tokens, leaving no room for a response in a block of "
            f"{length}; shorten it, drop the row, or raise model.length"
        )
    if packing == Packing.pack:
        count = len(tokens) // length
        if count == 0:
            raise DataError(f"{locate(0)}: the rows hold {len(tokens)} tokens, fewer than one block of {length}")
        given = (roles[: count * length] & PROMPT).astype(bool)
        return np.asarray(tokens[: count * length]).reshape(count, length), given.reshape(count, length)
    over = np.flatnonzero(sizes > length)
    if len(over):
        k = int(over[0])
        raise DataError(
            f"{locate(k)}: prompt, response and EOS take {sizes[k]} tokens, more than a block of {length}; "
            "shorten the row, drop it, raise model.length, or set data.packing = 'pack'"
        )
    filled = np.arange(length) < sizes[:, None]  # (rows, L): where each row's own tokens go
    blocks = np.full((len(sizes), length), eos_id, dtype=tokens.dtype)
    blocks[filled] = tokens  # row-major: row by row, in order
    given = np.zeros((len(sizes), length), dtype=bool)
    given[filled] = (roles & PROMPT).astype(bool)
    return blocks, given


def load_blocks(
    source: str, split: str, tokenizer: Tokenizer, length: int, cache_dir, packing: Packing = Packing.pad
) -> tuple[np.ndarray, np.ndarray | None]:
    """(blocks, given) of any training source: `given` is None for plain text (nothing is conditioned on)."""
    if not is_instruction_source(source):
        return data.load_blocks(source, split, tokenizer, length, cache_dir), None
    tokens, roles = token_stream(source, split, tokenizer, cache_dir)
    return cut_blocks(tokens, roles, length, packing, tokenizer.eos_id, lambda k: read_rows(source, split)[k].where)


def training_texts(source: str, split: str) -> Iterable[str]:
    """The text a tokenizer is trained on: each document, or each row's prompt and response."""
    if is_instruction_source(source):  # prompts and responses are tokenized apart, so learn them apart
        for row in read_rows(source, split):
            yield from [m["content"] for m in row.messages] if row.messages is not None else [row.prompt, row.response]
        return
    documents = data.load_documents(source, split)
    if "text" not in documents.column_names:
        raise ConfigError("tokenizer.name = 'train' needs text documents, not pre-tokenized input_ids")
    for row in documents:
        yield row["text"]
