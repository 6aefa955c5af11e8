"""Built-in instruction tasks: prompt/response pairs the project generates, to fine-tune on and to score by
exact match (docs/fine-tuning.md).

`task:NAME` is a data source like `builtin`: a training split and two held-out splits (`validation`,
`test`) whose prompts never occur in the training split, all drawn deterministically from a fixed seed,
so every machine sees the same rows. `radd eval --task NAME` scores a model on them
(radd_cli.evaluation.tasks).
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from radd_cli.errors import ConfigError, DataError
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
        raise ConfigError(f"{PREFIX}{name} has no split {split!r}; it has {', '.join(SPLITS)}", field="split")
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
