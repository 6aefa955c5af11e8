"""Infilling templates for `radd infill`: which positions are fixed text and which are generated.

A template is literal text with free spans: fixed positions hold their tokens from the start and are
never masked; only free ones are sampled (docs/sampling.md). Two ways to write one:

- `--prefix TEXT` and/or `--suffix TEXT` with `--length L`: the prefix tokens open the sequence, the
  suffix tokens close it, and the L − len(prefix) − len(suffix) positions between are free.
- `--template "The [MASK:12] sat on the [MASK:3]."`: `[MASK:n]` is a span of n free token positions;
  any number of spans, anywhere (start, end, side by side). A literal bracket is doubled: `[[` is a
  literal `[` and `]]` a literal `]`, so `[[[MASK:2]]]` reads "[", two free tokens, "]". Any other
  bracket is an error, as is `[MASK]` without a count. Character positions in errors count from 1.

Each fixed piece of text is tokenized on its own, so a fixed token never merges with a generated
one; whitespace is kept exactly as written (with a GPT-2-style tokenizer, "The " ends in a lone
space token, so "The[MASK:3]" lets the span choose its own leading space instead).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Sequence

import torch

from radd_cli.errors import ConfigError, setting
from radd_cli.io.tokenizer import Tokenizer

MAX_SPAN = 1 << 20  # tokens in one [MASK:n] span; a model's length bounds the whole template anyway
_BRACKET_HINT = "write [[ for a literal '[' and ]] for a literal ']'"
_INTEGER = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class Segment:
    """One piece of a template: fixed `text`, or (when `text` is None) a span of `free` tokens."""

    text: str | None
    free: int = 0

    def __post_init__(self) -> None:
        if (self.text is None) == (self.free == 0) or self.free < 0:
            raise ValueError(f"a segment is either text with free=0 or text=None with free >= 1, not {self!r}")

    @property
    def is_free(self) -> bool:
        return self.text is None


@dataclass
class Infill:
    """A template in token space, ready for the sampler's `template=` argument."""

    tokens: torch.Tensor  # (L,) long: token ids at fixed positions, mask_id at free ones
    free: torch.Tensor  # (L,) bool: True where the sampler draws a token

    @property
    def length(self) -> int:
        return self.tokens.shape[0]

    @property
    def num_free(self) -> int:
        return int(self.free.sum())

    def render(self, tokens: torch.Tensor | Sequence[int], tokenizer: Tokenizer) -> list[tuple[str, bool]]:
        """A finished sequence drawn from this template (possibly cut short), as (text, generated?) pieces."""
        return render_spans(tokens, self.free[: len(tokens)], tokenizer)


def check_text(text: str | None, name: str) -> None:
    """Refuse text that is not valid Unicode (bytes that were not UTF-8 on the command line); `name` is its setting."""
    if text is None:
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ConfigError(
            f"holds bytes that are not UTF-8 text (at character {error.start + 1}); give UTF-8 text", field=name
        ) from None


def parse_template(text: str) -> list[Segment]:
    """The segments of a `--template` string, in order; adjacent text (literal brackets included) is one."""
    check_text(text, "template")
    segments: list[Segment] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("[[", i) or text.startswith("]]", i):
            literal.append(text[i])
            i += 2
        elif text[i] == "]":
            raise ConfigError(f"the template has an unmatched ']' at character {i + 1}; {_BRACKET_HINT}")
        elif text[i] == "[":
            end = text.find("]", i)
            if end < 0 or "[" in text[i + 1 : end]:
                raise ConfigError(f"the template has an unclosed '[' at character {i + 1}; {_BRACKET_HINT}")
            if literal:
                segments.append(Segment("".join(literal)))
                literal = []
            segments.append(Segment(None, _span_count(text[i + 1 : end], i + 1)))
            i = end + 1
        else:
            literal.append(text[i])
            i += 1
    if literal:
        segments.append(Segment("".join(literal)))
    if not any(segment.is_free for segment in segments):
        raise ConfigError("the template has no free position; add [MASK:n] where n tokens should be generated")
    return segments


def _span_count(body: str, position: int) -> int:
    """n from the inside `body` of a `[MASK:n]` that starts at 1-based character `position`."""
    name, colon, count = body.partition(":")
    if name != "MASK":
        raise ConfigError(
            f"unknown bracket expression [{body}] at character {position} of the template; free spans are "
            f"written [MASK:n], and {_BRACKET_HINT}"
        )
    if not colon:
        raise ConfigError(
            f"[MASK] at character {position} of the template needs a count: write [MASK:n] for n free tokens"
        )
    if not _INTEGER.fullmatch(count.strip()):
        raise ConfigError(
            f"[MASK:{count}] at character {position} of the template: the count must be a whole number "
            f"of tokens, e.g. [MASK:8]"
        )
    n = int(count)
    if n > MAX_SPAN:
        raise ConfigError(
            f"[MASK:{count}] at character {position} of the template is longer than any model ({MAX_SPAN} tokens at most)"
        )
    if n < 1:
        raise ConfigError(
            f"[MASK:{count}] at character {position} of the template has no free token; use a count of 1 or more"
        )
    return n


def build_template(segments: Sequence[Segment], tokenizer: Tokenizer) -> Infill:
    """Token ids of `segments`: each text piece encoded on its own, mask_id for each free position."""
    ids: list[int] = []
    free: list[bool] = []
    for segment in segments:
        piece = [tokenizer.mask_id] * segment.free if segment.is_free else tokenizer.encode(segment.text)
        ids.extend(piece)
        free.extend([segment.is_free] * len(piece))
    if not any(free):
        raise ConfigError("the template has no free position; add [MASK:n] where n tokens should be generated")
    return Infill(torch.tensor(ids, dtype=torch.long), torch.tensor(free, dtype=torch.bool))  # (L,), (L,)


def prefix_suffix_template(prefix: str | None, suffix: str | None, length: int, tokenizer: Tokenizer) -> Infill:
    """`length` positions: the prefix's tokens first, the suffix's last, free positions between.

    An empty string counts as not given. Text is kept as written: a suffix that should follow the
    generated words after a space must start with one.
    """
    check_text(prefix, "prefix")
    check_text(suffix, "suffix")
    if not prefix and not suffix:
        raise ConfigError(
            f"infilling needs fixed text: give {setting('prefix')} and/or {setting('suffix')} (with "
            f"{setting('length')}), or {setting('template')}; for unconditional text use `radd sample`"
        )
    if not 1 <= length <= MAX_SPAN:
        raise ConfigError(f"is {length}; it must be between 1 and {MAX_SPAN} tokens", field="length")
    head = tokenizer.encode(prefix) if prefix else []
    tail = tokenizer.encode(suffix) if suffix else []
    fixed = len(head) + len(tail)
    if fixed >= length:
        raise ConfigError(
            f"prefix ({len(head)} tokens) + suffix ({len(tail)} tokens) = {fixed} tokens leave no free position "
            f"in {length}; raise it or shorten them",
            field="length",
        )
    segments = [Segment(prefix)] if head else []
    segments.append(Segment(None, length - fixed))
    segments += [Segment(suffix)] if tail else []
    return build_template(segments, tokenizer)


def render_spans(
    tokens: torch.Tensor | Sequence[int], free: torch.Tensor | Sequence[bool], tokenizer: Tokenizer
) -> list[tuple[str, bool]]:
    """The text of a finished sequence as consecutive (text, generated?) pieces, for display.

    Each maximal run of fixed or of free positions is decoded on its own, so a fixed piece reads
    exactly as given (a multi-byte character split across a run boundary may show as U+FFFD).
    Positions still masked decode as [MASK].
    """
    ids = torch.as_tensor(tokens).tolist()  # (L,)
    flags = torch.as_tensor(free, dtype=torch.bool).tolist()  # (L,)
    if len(ids) != len(flags):
        raise ValueError(f"{len(ids)} tokens but {len(flags)} free flags; they must describe the same positions")
    pieces = []
    for generated, run in itertools.groupby(zip(flags, ids), key=lambda pair: pair[0]):
        pieces.append((tokenizer.decode([token for _, token in run]), generated))
    return pieces
