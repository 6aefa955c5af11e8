"""Any source's split as one cached token stream, cut into blocks of L tokens (docs/evaluation.md), and the
resumable order training reads the blocks in.

Each document is tokenized (after its source's detokenizer) and followed by EOS; each prompt/response row becomes
its prompt's tokens, then the response's and EOS, with a roles array marking the prompt and the start of each row.
The stream (and roles) is cached on disk once per (source, split, tokenizer), so a second run does not tokenize
again and any block length can be cut from it. Plain text is concatenated and cut into blocks, dropping the
remainder; rows fill blocks one per block padded with EOS (`pad`, LLaDA's recipe: the model learns where an answer
ends) or back to back (`pack`), with `given` marking the prompt positions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from radd_cli.data import markov
from radd_cli.data.instructions import Row, prompt_and_response
from radd_cli.data.sources import Source, source
from radd_cli.errors import DataError
from radd_cli.files import WriteError, cause, remove, write_atomically
from radd_cli.io.tokenizer import Tokenizer, load_tokenizer
from radd_cli.validation import Choice

DEFAULT_CACHE = "~/.cache/radd"  # where token streams are cached (data.cache_dir, radd eval --cache-dir)
FORMAT = "tokens-2"  # part of the cache key: change it when the tokenization changes
PROMPT, START = 1, 2  # bits of the roles array: a prompt token; the first token of a row


class Packing(Choice):
    """How prompt/response rows fill blocks: one per block padded with EOS, or back to back."""

    pad = "pad"
    pack = "pack"


@dataclass
class TokenStream:
    """A split's tokens, EOS after each document or row; for rows, `roles` marks prompts and row starts."""

    tokens: np.ndarray  # (T,) uint16 or uint32
    roles: np.ndarray | None  # (T,) uint8 bits PROMPT | START, or None for plain text
    locate: Callable[[int], str]  # names row k (0-based) for errors


def tokenizer_for(name_or_path: str) -> Tokenizer:
    """The tokenizer a recipe names: a built-in language's (`markov`), or any that transformers loads."""
    if str(name_or_path) == markov.NAME:
        return markov.tokenizer()
    return load_tokenizer(name_or_path)


def token_stream(name: str, split: str, tokenizer: Tokenizer, cache_dir: str | Path, progress=None) -> TokenStream:
    """The split's token stream, from the cache when it is there (a damaged cache file of ours is made again)."""
    origin = source(name)
    origin.check_split(split)
    prompted = origin.prompted
    template = getattr(tokenizer.hf, "chat_template", None) if prompted else None
    key = [FORMAT, origin.identity(), split, tokenizer.fingerprint(), template]
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
    stem = f"{Path(name).name or 'data'}-{split}-{digest}".replace(":", "-")
    cache = Path(cache_dir).expanduser() / "tokens"
    paths = [cache / f"{stem}.npy"] + ([cache / f"{stem}-roles.npy"] if prompted else [])
    rows = (lambda: origin.rows(split)) if prompted else None
    locate = (lambda k: rows()[k].where) if prompted else (lambda k: f"{name} ({split})")
    if all(path.is_file() for path in paths):
        try:
            arrays = [np.load(path, mmap_mode="r") for path in paths]
            return TokenStream(arrays[0], arrays[1] if prompted else None, locate)
        except (OSError, ValueError, EOFError):  # a damaged cache file of ours: tokenize again
            for path in paths:
                remove(path)
    arrays = _tokenize_rows(rows(), tokenizer) if prompted else [_tokenize_documents(origin, split, tokenizer, progress)]
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WriteError(f"cannot create the token cache {cache}: {cause(error)}; set data.cache_dir") from error
    for path, array in reversed(list(zip(paths, arrays))):  # the tokens file last: it marks a complete set
        write_atomically(path, lambda temporary, array=array: np.save(temporary, array))
    return TokenStream(arrays[0], arrays[1] if prompted else None, locate)


def load_blocks(
    name: str, split: str, tokenizer: Tokenizer, length: int, cache_dir, packing: Packing = Packing.pad, progress=None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(blocks (n, L), given (n, L) bool or None) of any source's split: `given` marks prompt positions, and is
    None for plain text (nothing is conditioned on)."""
    stream = token_stream(name, split, tokenizer, cache_dir, progress)
    if stream.roles is None:
        return blocks(stream.tokens, length, f"{name} ({split})"), None
    return cut_blocks(stream.tokens, stream.roles, length, packing, tokenizer.eos_id, stream.locate)


def blocks(stream: np.ndarray, length: int, name: str = "the data") -> np.ndarray:
    """Cut a plain token stream into (n, length) blocks, dropping the remainder."""
    count = len(stream) // length
    if count == 0:
        raise DataError(
            f"{name} has {len(stream)} tokens, fewer than one block of {length}; give more data or a shorter block length"
        )
    return stream[: count * length].reshape(count, length)


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


def _dtype(tokenizer: Tokenizer):
    return np.uint16 if tokenizer.vocab_size < 2**16 else np.uint32


def _tokenize_documents(origin: Source, split: str, tokenizer: Tokenizer, progress) -> np.ndarray:
    documents = origin.documents(split)
    if len(documents) == 0:
        raise DataError(f"{origin.name} ({split}) holds no documents")
    pieces, batch = [], 1000
    for start in range(0, len(documents), batch):
        rows = documents[start : start + batch]
        try:
            if "input_ids" in rows:
                ids = [list(row) if isinstance(row, list) else row for row in rows["input_ids"]]
                _check_ids(ids, tokenizer, start)
            else:
                _check_texts(rows["text"], start)
                texts = [origin.detokenize(text) for text in rows["text"]]
                ids = [document + [tokenizer.eos_id] for document in tokenizer.encode_batch(texts)]
        except DataError as error:
            raise DataError(f"{origin.name} ({split}): {error}") from None
        pieces.extend(np.asarray(document, dtype=_dtype(tokenizer)) for document in ids)
        if progress is not None:
            progress(min(start + batch, len(documents)), len(documents))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=_dtype(tokenizer))


def _tokenize_rows(rows: list[Row], tokenizer: Tokenizer, batch: int = 1000) -> list[np.ndarray]:
    """[tokens, roles]: each row's prompt tokens then its response tokens and EOS, all rows back to back."""
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
            tokens.append(np.asarray(ids, dtype=_dtype(tokenizer)))
            roles.append(role)
    return [np.concatenate(tokens), np.concatenate(roles)]


def _check_texts(texts: list, start: int) -> None:
    for offset, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(
                f"row {start + offset + 1} has a `text` of {str(text)[:40]!r}, not a string; fix or drop that row"
            )


def _check_ids(ids: list, tokenizer: Tokenizer, start: int) -> None:
    """Pre-tokenized rows must be lists of whole numbers within the vocabulary (row numbers count from 1)."""
    for offset, row in enumerate(ids):
        bad = (
            [row]
            if not isinstance(row, list)
            else [v for v in row if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < tokenizer.vocab_size]
        )
        if bad:
            raise DataError(
                f"row {start + offset + 1}: input_ids must be whole numbers in 0..{tokenizer.vocab_size - 1}, "
                f"found {str(bad[0])[:40]}; fix or drop that row"
            )


@dataclass(frozen=True)
class BlockOrder:
    """A deterministic, resumable order over blocks: epoch e is a permutation seeded by (seed, e).

    Position p (blocks consumed so far) maps to one block, so a run resumes at the exact block by
    knowing only how many it has consumed.
    """

    num_blocks: int
    seed: int

    def indices(self, start: int, count: int) -> np.ndarray:
        positions = np.arange(start, start + count)
        epochs, offsets = np.divmod(positions, self.num_blocks)
        out = np.empty(count, dtype=np.int64)
        for epoch in np.unique(epochs):
            permutation = np.random.default_rng([self.seed, int(epoch)]).permutation(self.num_blocks)
            chosen = epochs == epoch
            out[chosen] = permutation[offsets[chosen]]
        return out
