"""Built-in instruction tasks: prompt/response pairs the project generates, to fine-tune on and to score by
exact match (docs/fine-tuning.md).

`task:NAME` is a data source like `builtin`: a training split and two held-out splits (`validation`,
`test`) whose prompts never occur in the training split, all drawn deterministically from a fixed seed,
so every machine sees the same rows. `radd eval --task NAME` generates a response to each held-out prompt
and reports the share that match the reference exactly (whitespace-normalised), with its standard error.
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from radd_cli.errors import DataError
from radd_cli.validation import choices_of


PREFIX = "task:"  # a data source `task:sort` is the built-in task `sort`
SEED = 20240613
SPLITS = {"train": 50_000, "validation": 200, "test": 500}  # rows per split


@dataclass(frozen=True)
class Example:
    prompt: str
    response: str  # what the model should answer; a leading space keeps its tokens those of the prompt


class Task:
    """A family of prompt/response pairs. Subclass it, set `name` and `description`, and `@register` it."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def example(self, rng: np.random.Generator) -> Example:
        raise NotImplementedError


TASKS: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls
    return cls


def _digits(rng: np.random.Generator, distinct: bool) -> list[int]:
    """2 to 6 digits, all different when `distinct`."""
    count = int(rng.integers(2, 7))
    return rng.choice(10, size=count, replace=not distinct).tolist()


def _spaced(values) -> str:
    return "".join(f" {value}" for value in values)


@register
class Sort(Task):
    name = "sort"
    description = "sort 2 to 6 different digits: 'sort: 8 3 5 =' → ' 3 5 8'"

    def example(self, rng: np.random.Generator) -> Example:
        values = _digits(rng, distinct=True)
        return Example(f"sort:{_spaced(values)} =", _spaced(sorted(values)))


@register
class Reverse(Task):
    name = "reverse"
    description = "reverse 2 to 6 digits: 'reverse: 8 3 3 5 =' → ' 5 3 3 8'"

    def example(self, rng: np.random.Generator) -> Example:
        values = _digits(rng, distinct=False)
        return Example(f"reverse:{_spaced(values)} =", _spaced(values[::-1]))


@register
class Add(Task):
    name = "add"
    description = "add two numbers below 1000: 'add: 123 + 45 =' → ' 168' (harder: carries)"

    def example(self, rng: np.random.Generator) -> Example:
        a, b = rng.integers(0, 1000, size=2).tolist()
        return Example(f"add: {a} + {b} =", f" {a + b}")


TaskName = choices_of("TaskName", TASKS, __name__)


def is_task(source: str) -> bool:
    return source.startswith(PREFIX)


def task_name(source: str) -> str:
    """The task a source `task:NAME` names; an unknown one is a DataError listing the known ones."""
    name = source[len(PREFIX) :] if is_task(source) else source
    if name not in TASKS:
        raise DataError(f"no built-in task {name!r}; the tasks are {', '.join(PREFIX + n for n in TASKS)}")
    return name


@functools.lru_cache(maxsize=16)
def examples(name: str, split: str) -> tuple[Example, ...]:
    """The rows of a task's split; a held-out split never repeats a prompt of the training split."""
    if split not in SPLITS:
        raise DataError(f"{PREFIX}{name} has no split {split!r}; it has {', '.join(SPLITS)}")
    seen: set[str] = set()
    for part in SPLITS:  # train, then validation, then test: each excludes the prompts before it
        rows = _draw(task_name(name), part, SPLITS[part], seen if part != "train" else set())
        if part == split:
            return rows
        seen |= {row.prompt for row in rows}
    raise AssertionError("unreachable")


def _draw(name: str, split: str, count: int, exclude: set[str]) -> tuple[Example, ...]:
    rng = np.random.default_rng([SEED, zlib.crc32(name.encode()), list(SPLITS).index(split)])
    task, rows = TASKS[name](), []
    while len(rows) < count:
        row = task.example(rng)
        if row.prompt not in exclude:
            rows.append(row)
    return tuple(rows)


def exact_match(response: str, reference: str) -> bool:
    """Whether a response is the reference, up to whitespace."""
    return response.split() == reference.split()


@dataclass(frozen=True)
class ExactMatchReport:
    task: str
    split: str
    prompts: int
    correct: int
    examples: tuple[tuple[str, str, str], ...]  # (prompt, response, reference) of the first few

    @property
    def accuracy(self) -> float:
        return self.correct / self.prompts

    @property
    def standard_error(self) -> float:
        """Of the accuracy, as a binomial proportion."""
        return math.sqrt(self.accuracy * (1 - self.accuracy) / self.prompts)

    @property
    def interval(self) -> tuple[float, float]:
        """The 95% Wilson score interval of the accuracy: sound at 0% and 100%, where ± 1.96 SE is not."""
        z, n, p = 1.959964, self.prompts, self.accuracy
        centre, scale = p + z * z / (2 * n), 1 + z * z / n
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return max(0.0, (centre - half) / scale), min(1.0, (centre + half) / scale)

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "split": self.split,
            "prompts": self.prompts,
            "correct": self.correct,
            "exact_match": self.accuracy,
            "standard_error": self.standard_error,
            "interval": self.interval,
            "examples": [{"prompt": p, "response": r, "reference": ref} for p, r, ref in self.examples],
        }


def score(name: str, split: str, responses: list[str], shown: int = 5) -> ExactMatchReport:
    """Exact match of `responses` against the first len(responses) rows of the split."""
    rows = examples(name, split)[: len(responses)]
    correct = sum(exact_match(response, row.response) for response, row in zip(responses, rows))
    shown_rows = tuple((row.prompt, response, row.response) for response, row in list(zip(responses, rows))[:shown])
    return ExactMatchReport(name, split, len(rows), correct, shown_rows)


def evaluate_task(
    model,
    schedule,
    tokenizer,
    name: str,
    config,
    *,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    device=None,
    progress=None,
) -> ExactMatchReport:
    """Answer the split's first `limit` prompts (all by default) with `config` and score them by exact match."""
    from radd_cli.prompting import respond

    rows = examples(name, split)[:limit]
    responses = respond(
        model,
        schedule,
        tokenizer,
        config,
        [row.prompt for row in rows],
        length=model.config.length,
        seed=seed,
        batch_size=batch_size,
        device=device,
        progress=progress,
    )
    return score(name, split, [response.text for response in responses])
