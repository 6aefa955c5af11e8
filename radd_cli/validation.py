"""Named choices and checked settings, defined once and used by the CLI, the recipes and the library.

- `Choice` is a str Enum. A member equals its value (`Method.tweedie == "tweedie"`) and prints as it,
  so it travels through JSON and f-strings unchanged; Typer lists the members in `--help` and rejects
  anything else at parse time, before any model or dataset is touched.
- `limits(...)` records a field's allowed range in its dataclass metadata, and `about(...)` its help text.
  `validate(instance)`, called from a settings dataclass's `__post_init__`, turns strings into choices,
  whole numbers into floats and tables into nested settings where the field asks for them, checks every type
  and range, and raises one ConfigError that lists every problem with its field. Each edge names the field its
  own way (`--lr`, `training.lr`, the request's `lr`; radd_cli/errors.py).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing

from radd_cli.errors import ConfigError, Problem


class Choice(str, enum.Enum):
    """A closed set of names; subclass it (or call it with a list of names) next to what implements them."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def names(cls) -> list[str]:
        return [member.value for member in cls]


def choices_of(name: str, values, module: str) -> type[Choice]:
    """A Choice called `name` whose members are `values` (the keys of a registry, say), in their order.

    Assign it to `name` in `module` (pass `__name__`) so that it pickles like a class defined there.
    """
    return Choice(name, {value: value for value in values}, module=module)


def limits(*, low=None, high=None, above=None, below=None, help: str | None = None) -> dict:
    """Field metadata: the value must be >= low, <= high, > above and < below (each when given); `help` says
    what the setting does (the command line's help text)."""
    return {"low": low, "high": high, "above": above, "below": below, "help": help}


def about(help: str, **more) -> dict:
    """Field metadata for a setting with no range: what it does, and any other metadata an edge reads."""
    return {"help": help, **more}


def field_label(field: dataclasses.Field) -> str:
    """The name a setting goes by in errors and at the edges: the field's `label` metadata, or its own name."""
    return field.metadata.get("label", field.name)


def validate(instance) -> None:
    """Coerce and check every field of a (frozen) dataclass instance; raise one ConfigError listing all problems."""
    problems = field_problems(instance)
    if problems:
        raise ConfigError(problems)


def field_problems(instance) -> list[Problem]:
    """Coerce every field of a (frozen) dataclass instance in place; the problems found."""
    problems: list[Problem] = []
    hints = typing.get_type_hints(type(instance))
    for field in dataclasses.fields(instance):
        value, label = getattr(instance, field.name), field_label(field)
        ok, coerced = _coerce(value, hints[field.name], label, problems)
        if ok:
            object.__setattr__(instance, field.name, coerced)
            _check_range(coerced, field.metadata, label, problems)
    return problems


def _coerce(value, kind, name: str, problems: list[Problem]) -> tuple[bool, object]:
    """(is it acceptable, the value converted to `kind`); a refusal is appended to `problems`."""
    options = _union_members(kind)
    if options is not None:  # X | None, or a union the caller checks itself
        if value is None and type(None) in options:
            return True, None
        concrete = [option for option in options if option is not type(None)]
        if len(concrete) != 1:
            return True, value
        kind = concrete[0]
    if typing.get_origin(kind) is tuple:
        (item_kind, _) = typing.get_args(kind)
        if not isinstance(value, (list, tuple)):
            problems.append(Problem(name, f"expected a list, got {shown(value)}"))
            return False, value
        items = [_coerce(item, item_kind, name, problems) for item in value]
        return all(ok for ok, _ in items), tuple(item for _, item in items)
    if isinstance(kind, type) and issubclass(kind, Choice):
        try:
            return True, kind(value)
        except ValueError:
            problems.append(Problem(name, f"{shown(value)} is not one of {', '.join(map(repr, kind.names()))}"))
            return False, value
    if dataclasses.is_dataclass(kind) and isinstance(value, dict):  # a table of nested settings
        try:
            return True, kind(**value)
        except TypeError as error:
            problems.append(Problem(name, f"{error}".split(") ", 1)[-1]))
            return False, value
        except ConfigError as error:
            problems.extend(problem.within(name) for problem in error.problems)
            return False, value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(kind, type) and (not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool))):
        problems.append(Problem(name, f"expected {kind.__name__}, got {type(value).__name__} {shown(value)}"))
        return False, value
    if kind is float and not math.isfinite(value):
        problems.append(Problem(name, f"must be a finite number, got {value}"))
        return False, value
    return True, value


def shown(value) -> str:
    """A value as a message quotes it back: its repr, cut short (a request may hold a megabyte in one field)."""
    return shortened(repr(value))


def shortened(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(text)} characters)"


def _union_members(kind) -> tuple | None:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return typing.get_args(kind)
    return None


def _check_range(value, checks, name: str, problems: list[Problem]) -> None:
    if not checks or not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if checks.get("low") is not None and value < checks["low"]:
        problems.append(Problem(name, f"must be at least {checks['low']}, got {value}"))
    elif checks.get("high") is not None and value > checks["high"]:
        problems.append(Problem(name, f"must be at most {checks['high']}, got {value}"))
    elif checks.get("above") is not None and not value > checks["above"]:
        problems.append(Problem(name, f"must be greater than {checks['above']}, got {value}"))
    elif checks.get("below") is not None and not value < checks["below"]:
        problems.append(Problem(name, f"must be less than {checks['below']}, got {value}"))
