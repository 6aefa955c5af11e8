"""Where training and evaluation data come from. Each kind of source is a type; `source(name)` is the one place
that tells them apart (docs/evaluation.md, docs/fine-tuning.md):

- `HubSource`: a `datasets` name of DATASETS (openwebtext, wikitext103, wikitext2, ptb, lambada, lm1b), with its
  own splits and its detokenizer;
- `BuiltinSource`: `builtin`, the Python documentation inside every CPython (`pydoc_data.topics`), no download;
- `MarkovSource`: `markov`, the synthetic language with a known likelihood (markov.py), generated here;
- `TaskSource`: `task:NAME`, a built-in task's prompt/response rows (tasks.py);
- `LocalSource`: a local `.txt` file (one document per paragraph), `.jsonl`/`.json` file (a `text` field per row,
  pre-tokenized `input_ids`, or prompt/response rows — {"prompt", "response"} or {"messages": [...]}), or a
  folder of such files.

A source gives documents (a `datasets.Dataset` with a `text` or `input_ids` column) or, when it is `prompted`,
prompt/response rows. Sources without splits of their own (builtin, local) hold every 20th document or row out as
`validation` (`held_out`: one rule for both), the rest is `train`, and `all` is everything. tokens.py turns any
source's split into one cached token stream and cuts it into blocks.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from radd_cli.data import markov, tasks
from radd_cli.data.detokenize import get_detokenizer
from radd_cli.data.instructions import Row, file_rows, first_row_is_prompted
from radd_cli.errors import ConfigError, DataError

BUILTIN = "builtin"
LOCAL_SPLITS = ("train", "validation", "all")
LOCAL_SUFFIXES = (".txt", ".jsonl", ".json")
VALIDATION_EVERY = 20  # one document (or row) in 20 is held out of `train` for local and built-in sources

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


class Source:
    """A named place documents (or prompt/response rows, when `prompted`) come from, with its splits."""

    name: str
    splits: tuple[str, ...]
    prompted = False

    def check_split(self, split: str) -> None:
        """A setting (exit 2) when there is no such split; checked before anything is loaded."""
        if split not in self.splits:
            raise ConfigError(f"{self.name} has no split {split!r}; it has {', '.join(self.splits)}", field="split")

    @property
    def scored_split(self) -> str:
        """The split a published number is reported on: test where there is one, else validation, else all."""
        return next(split for split in ("test", "validation", "all") if split in self.splits)

    def identity(self) -> list:
        """What a cache of this source's tokens depends on."""
        return [self.name]

    def documents(self, split: str):
        """A `datasets.Dataset` with a `text` (or `input_ids`) column."""
        raise DataError(f"{self.name} holds prompt/response rows, not documents")

    def rows(self, split: str) -> list[Row]:
        raise DataError(f"{self.name} holds documents, not prompt/response rows")

    def detokenize(self, text: str) -> str:
        return text

    def texts(self, split: str) -> Iterable[str]:
        """The text a tokenizer is trained on: each document, or each row's prompt and response apart."""
        if self.prompted:
            for row in self.rows(split):
                yield from row.texts()
            return
        documents = self.documents(split)
        if "text" not in documents.column_names:
            raise ConfigError("needs text documents to train on, not pre-tokenized input_ids", field="tokenizer.name")
        for document in documents:
            yield document["text"]


@dataclass(frozen=True)
class HubSource(Source):
    name: str
    spec: HubDataset

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.spec.splits)

    def documents(self, split: str):
        self.check_split(split)
        return _hub_documents(self.name, self.spec, split)

    def detokenize(self, text: str) -> str:
        return get_detokenizer(self.name)(text)


class BuiltinSource(Source):
    name, splits = BUILTIN, LOCAL_SPLITS

    def identity(self) -> list:
        return [BUILTIN, sys.version]

    def documents(self, split: str):
        import pydoc_data.topics

        import datasets

        self.check_split(split)
        topics = pydoc_data.topics.topics
        dataset = datasets.Dataset.from_dict({"text": [topics[name] for name in sorted(topics)]})
        return dataset.select(held_out(range(len(dataset)), split, self.name))


class MarkovSource(Source):
    name, splits = markov.NAME, tuple(markov.SPLITS)

    def identity(self) -> list:
        return [markov.NAME, markov.SEED, markov.DOCUMENT]

    def documents(self, split: str):
        import datasets

        self.check_split(split)
        return datasets.Dataset.from_dict({"text": markov.documents(split)})


@dataclass(frozen=True)
class TaskSource(Source):
    task: str
    prompted = True
    splits = tuple(tasks.SPLITS)

    @property
    def name(self) -> str:
        return tasks.PREFIX + self.task

    def identity(self) -> list:
        return [self.task, tasks.SPLITS]

    def rows(self, split: str) -> list[Row]:
        self.check_split(split)
        examples = tasks.examples(self.task, split)
        return [Row(f"{self.name} ({split}) row {i + 1}", e.prompt, e.response) for i, e in enumerate(examples)]


@dataclass(frozen=True)
class LocalSource(Source):
    path: Path
    splits = LOCAL_SPLITS
    scored_split = "all"  # the user's own text, given to be scored whole

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def prompted(self) -> bool:
        """JSON lines whose first row has `prompt` or `messages`."""
        return first_row_is_prompted([f for f in local_files(self.path) if f.suffix in (".jsonl", ".json")])

    def identity(self) -> list:
        """Each file's path, size and modification time."""
        return [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in local_files(self.path)]

    def documents(self, split: str):
        self.check_split(split)
        dataset = _local_documents(self.path)
        return dataset.select(held_out(range(len(dataset)), split, self.name))

    def rows(self, split: str) -> list[Row]:
        self.check_split(split)
        rows = [row for file in local_files(self.path) for row in file_rows(file)]
        if not rows:
            raise DataError(f"{self.name} holds no rows: its files are empty; give JSON lines with prompt and response")
        return held_out(rows, split, self.name)


def source(name: str) -> Source:
    """The source a name means: a built-in task, a Hub dataset, the built-in text or language, or a local path."""
    if tasks.is_task(name):
        return TaskSource(tasks.task_name(name))
    if name in DATASETS:
        return HubSource(name, DATASETS[name])
    if name == BUILTIN:
        return BuiltinSource()
    if name == markov.NAME:
        return MarkovSource()
    return LocalSource(Path(name).expanduser())


def held_out(items, split: str, name: str) -> list:
    """The one hold-out rule of sources without splits: every 20th item (from the first) is `validation`, the rest
    `train`, and `all` is everything."""
    items = list(items)
    if split == "all":
        return items
    kept = [item for i, item in enumerate(items) if (i % VALIDATION_EVERY == 0) == (split == "validation")]
    if not kept:
        raise DataError(
            f"{name} has {len(items)} document(s) or row(s), too few to hold one in {VALIDATION_EVERY} out for "
            "validation; use split 'all' (data.train_split = 'all') and give separate validation data"
        )
    return kept


def _hub_documents(name: str, spec: HubDataset, split: str):
    import datasets

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
