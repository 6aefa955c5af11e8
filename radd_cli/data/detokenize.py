"""Dataset-specific detokenizers for the zero-shot perplexity protocol (docs/evaluation.md).

PTB, WikiText, LM1B and LAMBADA ship pre-tokenized text ("do n't", "3 @.@ 5", "( a b )"). The
published protocol undoes that before GPT-2 tokenization, so each dataset gets the same rules the
SEDD/RADD evaluation used; changing a rule changes the token stream and the reported perplexity.

Each rule set is an ordered table of (pattern, replacement) pairs applied by `_rewrite`: a plain
string pattern is replaced literally (every non-overlapping occurrence, left to right), a compiled
regex is substituted. Order matters: later rules see the output of earlier ones.
"""

from __future__ import annotations

import re
from typing import Callable

Rule = tuple[str | re.Pattern[str], str]


def _rewrite(text: str, rules: list[Rule]) -> str:
    """Apply `rules` to `text` in order."""
    for pattern, replacement in rules:
        if isinstance(pattern, re.Pattern):
            text = pattern.sub(replacement, text)
        else:
            text = text.replace(pattern, replacement)
    return text


def _strip_inside(open_char: str, close_char: str) -> Rule:
    """A rule that drops the whitespace just inside one `open ... close` pair: "( a b )" -> "(a b)"."""
    opening, closing = re.escape(open_char), re.escape(close_char)
    pattern = re.compile(f"{opening}\\s*([^{closing}]*?)\\s*{closing}")
    return pattern, f"{open_char}\\1{close_char}"


def _spaced_pair(open_char: str, close_char: str, inner: str) -> Rule:
    """A rule for exactly one space inside a pair around a non-empty run of `inner`: "[ x y ]" -> "[x y]"."""
    opening, closing = re.escape(open_char), re.escape(close_char)
    pattern = re.compile(f"{opening} ({inner}+) {closing}")
    return pattern, f"{open_char}\\1{close_char}"


_PTB_RULES: list[Rule] = [
    (" 's", "'s"),
    ("s ' ", "s' "),
    (" n't", "n't"),
    (" \n ", "\n"),
    ("\\/", "/"),
    # " N " (a masked number) -> " 1 " for every N with a space on both sides, runs included:
    # what repeating the literal replacement until none is left gives, in one pass.
    (re.compile(r"(?<= )N(?= )"), "1"),
    ("$ 1", "$1"),
    ("# 1", "#1"),
    ("<unk>", "?"),
]

_WIKITEXT_RULES: list[Rule] = [
    ("s '", "s'"),
    # number separators: "1 @,@ 000 @.@ 5" -> "1,000.5", "well @-@ known" -> "well-known"
    (" @-@ ", "-"),
    (" @,@ ", ","),
    (" @.@ ", "."),
    (" : ", ": "),
    (" ; ", "; "),
    (" . ", ". "),
    (" ! ", "! "),
    (" ? ", "? "),
    (" , ", ", "),
    _strip_inside("(", ")"),
    _strip_inside("[", "]"),
    _strip_inside("{", "}"),
    _strip_inside('"', '"'),
    _strip_inside("'", "'"),
    # section headings: "= = Career = =" -> "== Career =="; longest run first
    ("= = = =", "===="),
    ("= = =", "==="),
    ("= =", "=="),
    (" \N{DEGREE SIGN} ", "\N{DEGREE SIGN}"),
    (" \n", "\n"),
    ("\n ", "\n"),
    (" N ", " 1 "),
    (" 's", "'s"),
]

_LM1B_RULES: list[Rule] = [
    ("http : / / ", "http://"),
    ("https : / / ", "https://"),
    (re.compile(r" '(\w+)"), r"'\1"),
    (re.compile(r" (\w+) \. "), r" \1. "),
    (re.compile(r" (\w+) \.$"), r" \1."),
    (" ? ", "? "),
    (re.compile(r" \?$"), "?"),
    (" ! ", "! "),
    (re.compile(r" !$"), "!"),
    (" , ", ", "),
    (" : ", ": "),
    (" ; ", "; "),
    (" / ", "/"),
    _spaced_pair('"', '"', '[^"]'),
    _spaced_pair("'", "'", "[^']"),
    _spaced_pair("(", ")", r"[^()]"),
    _spaced_pair("[", "]", r"[^\[\]]"),
    ("$ ", "$"),
    ("\N{POUND SIGN} ", "\N{POUND SIGN}"),
]

_LAMBADA_RULES: list[Rule] = [
    ("\N{LEFT DOUBLE QUOTATION MARK}", '"'),
    ("\N{RIGHT DOUBLE QUOTATION MARK}", '"'),
]


def identity(text: str) -> str:
    """The text unchanged: for sources that were never pre-tokenized (OpenWebText, local files)."""
    return text


def ptb(text: str) -> str:
    """Undo Penn Treebank tokenization: split clitics ("do n't", "John 's"), escaped slashes ("\\/"),
    spaced currency ("$ 1"), and map the placeholders " N " (a number) to " 1 " and "<unk>" to "?"."""
    return _rewrite(text, _PTB_RULES)


def wikitext(text: str) -> str:
    """Undo WikiText (2 and 103) tokenization: "@-@"/"@,@"/"@.@" number separators, spaces before
    punctuation and inside brackets and quotes, spaced heading marks ("= = x = ="), spaced degree
    signs, spaces around newlines, " N " placeholders and split possessives."""
    return _rewrite(text, _WIKITEXT_RULES)


def lm1b(text: str) -> str:
    """Undo One Billion Word tokenization: spaced URLs ("http : / / "), split clitics (" 's"),
    spaces before sentence punctuation (also at the end of the line), spaces inside quotes and
    brackets, and after currency signs."""
    return _rewrite(text, _LM1B_RULES)


def lambada(text: str) -> str:
    """Normalise LAMBADA: curly double quotes become straight ones; the passage is stripped and
    starts with a newline, as in the published evaluation."""
    return "\n" + _rewrite(text, _LAMBADA_RULES).strip()


DETOKENIZERS: dict[str, Callable[[str], str]] = {
    "ptb": ptb,
    "wikitext2": wikitext,
    "wikitext103": wikitext,
    "lm1b": lm1b,
    "lambada": lambada,
    "openwebtext": identity,
}


def get_detokenizer(name: str) -> Callable[[str], str]:
    """The detokenizer for dataset `name` (case-insensitive); `identity` for any other source."""
    return DETOKENIZERS.get(name.lower(), identity)
