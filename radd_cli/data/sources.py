"""Datasets → documents → token blocks of length L (docs/evaluation.md), cached, and a resumable block order.

Sources:
- a `datasets` name from DATASETS (openwebtext, wikitext103, wikitext2, ptb, lambada, lm1b), with the
  dataset's detokenizer applied to each document;
- `builtin`: the Python documentation inside every CPython (`pydoc_data.topics`), no download needed;
- `markov`: a synthetic language from a known sparse Markov chain (radd_cli/markov.py), generated here;
- a local `.txt` file (one document per paragraph, i.e. per blank-line-separated block), `.jsonl`/`.json`
  file (one document per row, field `text`; or pre-tokenized rows with `input_ids`, used as they
  are), or a folder of such files.
Sources without splits of their own (builtin, local) are split by document: every 20th document
(in file order) is `validation`, the rest `train`; `all` is everything.

Each document is tokenized, followed by EOS, all are concatenated and cut into blocks of L tokens,
dropping the remainder. The token stream is cached on disk once per (source, split, tokenizer), so a
second run does not re-tokenize, and any block length can be cut from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from radd_cli.data import markov
from radd_cli.data.detokenize import get_detokenizer
from radd_cli.errors import ConfigError, DataError
from radd_cli.files import WriteError, cause, remove, write_atomically
from radd_cli.io.tokenizer import Tokenizer, load_tokenizer

BUILTIN = "builtin"
DEFAULT_CACHE = "~/.cache/radd"  # where token streams are cached (data.cache_dir, radd eval --cache-dir)
LOCAL_SPLITS = ("train", "validation", "all")
LOCAL_SUFFIXES = (".txt", ".jsonl", ".json")
VALIDATION_EVERY = 20  # one document in 20 is held out of `train` for local and built-in sources


PARQUET_EXPORT = "refs/convert/parquet"  # the Hub's Parquet copy of a dataset that still has a loading script


@dataclass(frozen=True)
class HubDataset:
    path: str
    config: str | None
    column: str
    splits: dict[str, str]  # radd's split name → the dataset's split expression


DATASETS = {
    "openwebtext": HubDataset(
        "Skylion007/openwebtext", None, "text", {"train": "train[:-100000]", "validation": "train[-100000:]"}
    ),
    "wikitext103": HubDataset(
        "Salesforce/wikitext",
        "wikitext-103-raw-v1",
        "text",
        {"train": "train", "validation": "validation", "test": "test"},
    ),
    "wikitext2": HubDataset(
        "Salesforce/wikitext",
        "wikitext-2-raw-v1",
        "text",
        {"train": "train", "validation": "validation", "test": "test"},
    ),
    "ptb": HubDataset(
        "ptb_text_only", "penn_treebank", "sentence", {"train": "train", "validation": "validation", "test": "test"}
    ),
    "lambada": HubDataset("EleutherAI/lambada_openai", "default", "text", {"test": "test"}),
    "lm1b": HubDataset("lm1b", None, "text", {"train": "train", "test": "test"}),
}


def tokenizer_for(name_or_path: str) -> Tokenizer:
    """The tokenizer a recipe names: a built-in language's (`markov`), or any that transformers loads."""
    if str(name_or_path) == markov.NAME:
        return markov.tokenizer()
    return load_tokenizer(name_or_path)


def load_documents(source: str, split: str):
    """A `datasets.Dataset` with a `text` column (or `input_ids` for pre-tokenized local files)."""
    check_split(source, split)
    if source in DATASETS:
        return _hub_documents(source, split)
    if source == markov.NAME:
        return _markov_documents(split)
    dataset = _builtin_documents() if source == BUILTIN else _local_documents(Path(source).expanduser())
    if split == "all":
        return dataset
    held_out = [i for i in range(len(dataset)) if i % VALIDATION_EVERY == 0]
    kept = held_out if split == "validation" else [i for i in range(len(dataset)) if i % VALIDATION_EVERY]
    if not kept:
        raise DataError(
            f"{source} has {len(dataset)} document(s), too few to hold one in {VALIDATION_EVERY} out for validation; "
            "use split 'all' (data.train_split = 'all') and give separate validation data"
        )
    return dataset.select(kept)


def check_split(source: str, split: str) -> None:
    """A ConfigError (a setting, exit 2) when `source` has no such split; checked before anything is loaded."""
    if source in DATASETS:
        known, kind = DATASETS[source].splits, f"dataset {source}"
    elif source == markov.NAME:
        known, kind = markov.SPLITS, markov.NAME
    else:
        known, kind = LOCAL_SPLITS, source
    if split not in known:
        raise ConfigError(f"split: {kind} has no split {split!r}; it has {', '.join(known)}")


def _hub_documents(name: str, split: str):
    import datasets

    spec = DATASETS[name]
    try:
        try:
            dataset = datasets.load_dataset(spec.path, spec.config, split=spec.splits[split])
        except RuntimeError as error:  # datasets >= 4 no longer runs loading scripts: take the Parquet copy
            if "scripts are no longer supported" not in str(error):
                raise
            dataset = datasets.load_dataset(spec.path, spec.config, split=spec.splits[split], revision=PARQUET_EXPORT)
    except (OSError, ValueError, RuntimeError, datasets.exceptions.DatasetNotFoundError) as error:
        raise DataError(
            f"cannot load dataset {name} ({spec.path}) ({str(error).strip().splitlines()[0]}). Offline, save it "
            f"where the Hub is reachable (datasets.load_dataset('{spec.path}', {spec.config!r}, split='{spec.splits[split]}')"
            ".to_json('FILE.jsonl')) and pass FILE.jsonl as the data source instead"
        ) from error
    if spec.column != "text":
        dataset = dataset.rename_column(spec.column, "text")
    return dataset.select_columns(["text"])


def _markov_documents(split: str):
    import datasets

    return datasets.Dataset.from_dict({"text": markov.documents(split)})


def _builtin_documents():
    import pydoc_data.topics

    import datasets

    topics = pydoc_data.topics.topics
    return datasets.Dataset.from_dict({"text": [topics[name] for name in sorted(topics)]})


def local_files(path: Path) -> list[Path]:
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (and not a known dataset: {', '.join(DATASETS)}, {BUILTIN})")
    files = sorted(p for p in path.rglob("*") if p.suffix in LOCAL_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path} holds no {', '.join(LOCAL_SUFFIXES)} files")
    irregular = [f for f in files if not f.is_file()]  # a FIFO or a device would block or never end
    if irregular:
        raise DataError(f"{irregular[0]} is not a regular file; give files (or folders of files) as data")
    unknown = [f for f in files if f.suffix not in LOCAL_SUFFIXES]
    if unknown:
        raise DataError(f"{unknown[0]}: unknown file type; give .txt (a document) or .jsonl (a `text` field per row)")
    return files


def _local_documents(path: Path):
    import datasets

    files = local_files(path)
    for file in files:
        if file.suffix == ".txt":
            _check_utf8(file)
    files = [f for f in files if _holds_text(f)]
    if not files:
        raise DataError(f"{path} holds no documents: its files are empty or hold only blank lines")
    texts = [f for f in files if f.suffix == ".txt"]
    rows = [f for f in files if f.suffix != ".txt"]
    parts = []
    try:
        with _quiet_datasets():  # local files load in a blink: no progress bars
            if texts:
                parts.append(
                    datasets.load_dataset(
                        "text", data_files=[str(f) for f in texts], sample_by="paragraph", split="train"
                    )
                )
            if rows:
                parts.append(datasets.load_dataset("json", data_files=[str(f) for f in rows], split="train"))
    except (OSError, ValueError, datasets.exceptions.DatasetGenerationError) as error:
        raise DataError(
            f"{path} cannot be read as text or JSON lines ({str(error).strip().splitlines()[0]})"
        ) from error
    if len(parts) > 1 and "input_ids" in parts[1].column_names:
        raise DataError(f"{path} mixes text files with pre-tokenized input_ids rows; keep them in separate folders")
    dataset = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    for column in ("input_ids", "text"):
        if column in dataset.column_names:
            return dataset.select_columns([column])
    raise DataError(
        f"{path}: JSON rows need a `text` (or pre-tokenized `input_ids`) field; found {dataset.column_names}"
    )


@contextlib.contextmanager
def _quiet_datasets():
    from datasets.utils import disable_progress_bars, enable_progress_bars, is_progress_bar_enabled

    was_enabled = is_progress_bar_enabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            enable_progress_bars()


def _holds_text(file: Path) -> bool:
    """Whether the file has anything but whitespace (and a byte-order mark), read only as far as needed."""
    with open(file, "rb") as handle:
        while chunk := handle.read(1 << 16):
            if chunk.removeprefix(b"\xef\xbb\xbf").strip():
                return True
    return False


def _check_utf8(file: Path) -> None:
    with open(file, "rb") as handle:
        head = handle.read(1 << 16)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 4:  # not just a character cut at the end of the chunk
            raise DataError(f"{file} is not UTF-8 text (byte {error.start}); convert it or give a text file") from None


def token_stream(source: str, split: str, tokenizer: Tokenizer, cache_dir: str | Path, progress=None) -> np.ndarray:
    """All documents of (source, split), tokenized, EOS after each, as one array; cached on disk."""
    cache = Path(cache_dir).expanduser() / "tokens"
    key = hashlib.sha256(json.dumps([source_identity(source), split, tokenizer.fingerprint()]).encode()).hexdigest()
    path = cache / f"{Path(source).name or 'data'}-{split}-{key[:16]}.npy"
    if path.is_file():
        try:
            return np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError):  # a damaged cache file of ours: tokenize again
            remove(path)
    documents = load_documents(source, split)
    if len(documents) == 0:
        raise DataError(f"{source} ({split}) holds no documents")
    try:
        stream = _tokenize(documents, tokenizer, get_detokenizer(source), progress)
    except DataError as error:
        raise DataError(f"{source} ({split}): {error}") from None
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WriteError(f"cannot create the token cache {cache}: {cause(error)}; set data.cache_dir") from error
    write_atomically(path, lambda temporary: np.save(temporary, stream))
    return stream


def _tokenize(documents, tokenizer: Tokenizer, detokenize: Callable[[str], str], progress) -> np.ndarray:
    dtype = np.uint16 if tokenizer.vocab_size < 2**16 else np.uint32
    pieces, batch = [], 1000
    for start in range(0, len(documents), batch):
        rows = documents[start : start + batch]
        if "input_ids" in rows:
            ids = [list(row) if isinstance(row, list) else row for row in rows["input_ids"]]
            _check_ids(ids, tokenizer, start)
        else:
            _check_texts(rows["text"], start)
            ids = [doc + [tokenizer.eos_id] for doc in tokenizer.encode_batch([detokenize(t) for t in rows["text"]])]
        pieces.extend(np.asarray(doc, dtype=dtype) for doc in ids)
        if progress is not None:
            progress(min(start + batch, len(documents)), len(documents))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)


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


def source_identity(source: str):
    """What the cache key depends on: the name, or each file's path, size and modification time."""
    if source in DATASETS:
        return source
    if source == BUILTIN:
        return [BUILTIN, sys.version]
    if source == markov.NAME:
        return [markov.NAME, markov.SEED, markov.DOCUMENT]
    files = local_files(Path(source).expanduser())
    return [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def blocks(stream: np.ndarray, length: int, source: str = "the data") -> np.ndarray:
    """Cut the token stream into (n, length) blocks, dropping the remainder."""
    count = len(stream) // length
    if count == 0:
        raise DataError(
            f"{source} has {len(stream)} tokens, fewer than one block of {length}; give more data or a shorter block length"
        )
    return stream[: count * length].reshape(count, length)


def load_blocks(source: str, split: str, tokenizer: Tokenizer, length: int, cache_dir, progress=None) -> np.ndarray:
    return blocks(token_stream(source, split, tokenizer, cache_dir, progress), length, f"{source} ({split})")


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
