"""The errors radd raises on purpose.

Every message is one line that says what was wrong and how to fix it; the CLI prints it and exits
non-zero without a traceback (set RADD_DEBUG=1 to see one).

Errors speak settings by their field names, never by the way an edge spells them: a problem carries the
field it is about, and a message names other settings with `setting("name")` (or `setting("name", value)`
for "set it to this"). Each edge renders them in its own words — the command line as `--steps` (`--no-ema`),
the recipe loader as `sampling.steps`, the server as the request field — through `render`; `str(error)` uses
the field names themselves (`ema=False`).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Callable, Iterable

_SETTING = re.compile(r"⟦([\w.]+)(?:=([^⟧]*))?⟧")


def setting(name: str, value=None) -> str:
    """A setting named inside a message (set to `value`, when given), for each edge to render in its own words."""
    return f"⟦{name}⟧" if value is None else f"⟦{name}={value}⟧"


def plain_name(field: str, value: str | None = None) -> str:
    """How the library names a setting: `steps`, `ema=False`."""
    return field if value is None else f"{field}={value}"


Renderer = Callable[..., str]  # (field, value=None) -> how an edge names the setting


@dataclass(frozen=True)
class Problem:
    """One thing wrong: the setting it is about (None when it is about no one setting) and what to do."""

    field: str | None
    message: str

    def render(self, name: Renderer = plain_name) -> str:
        text = _SETTING.sub(lambda match: name(match.group(1), match.group(2)), self.message)
        return f"{name(self.field)}: {text}" if self.field else text

    def __str__(self) -> str:
        return self.render()

    def within(self, prefix: str) -> Problem:
        """The problem as part of a larger setting: `steps` → `sampling.steps` (fields and named settings)."""
        message = _SETTING.sub(lambda match: setting(f"{prefix}.{match.group(1)}", match.group(2)), self.message)
        return Problem(f"{prefix}.{self.field}" if self.field else None, message)


class RaddError(Exception):
    """A problem the user can fix: bad input, a missing file, an unreachable resource."""

    exit_code = 1

    def __init__(self, message: str | Problem | Iterable[Problem | str], *, field: str | None = None):
        if isinstance(message, (str, Problem)):
            message = [message]
        self.problems = [p if isinstance(p, Problem) else Problem(field, p) for p in message]
        super().__init__(self.render())

    def render(self, name: Renderer = plain_name) -> str:
        """The one-line message, each setting named by `name(field)` (or `name(field, value)`)."""
        if len(self.problems) == 1:
            return self.problems[0].render(name)
        return f"{len(self.problems)} problems: " + "; ".join(p.render(name) for p in self.problems)

    def within(self, prefix: str) -> RaddError:
        """The same error with every field under `prefix` (a recipe section, a nested setting)."""
        error = copy.copy(self)
        error.problems = [problem.within(prefix) for problem in self.problems]
        error.args = (error.render(),)
        return error

    def __str__(self) -> str:
        return self.render()


class ConfigError(RaddError):
    """A recipe, an override or an option value is invalid."""

    exit_code = 2


class CheckpointError(RaddError):
    """A model or checkpoint folder is missing, incomplete, or does not match the network."""


class DataError(RaddError):
    """A dataset or tokenizer cannot be read, or holds too little to use."""


class NonFiniteError(RaddError):
    """The model produced NaN or infinite values: its weights are broken."""


class TrainingError(RaddError):
    """Training cannot go on (for example, too many non-finite losses in a row)."""
