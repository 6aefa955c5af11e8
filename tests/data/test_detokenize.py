"""Detokenizers: hand-written input -> expected output for each dataset's rules."""

from __future__ import annotations

import pytest

from radd_cli.data import detokenize
from radd_cli.data.detokenize import get_detokenizer, identity, lambada, lm1b, ptb, wikitext


@pytest.mark.parametrize(
    "text, expected",
    [
        ("the company 's shares rose", "the company's shares rose"),
        ("they do n't know", "they don't know"),
        ("the bosses ' ideas", "the bosses' ideas"),
        ("one \n two", "one\ntwo"),
        ("buy \\/ sell", "buy / sell"),
        ("prices fell N N N % today", "prices fell 1 1 1 % today"),  # every N in a run, not every other one
        ("it cost $ N a share", "it cost $1 a share"),
        ("ranked # N in sales", "ranked #1 in sales"),
        ("a <unk> said", "a ? said"),
        ("Nancy and N", "Nancy and N"),  # only a lone N between spaces is a number
    ],
)
def test_ptb(text, expected):
    assert ptb(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("the well @-@ known 1 @,@ 000 @.@ 5 km", "the well-known 1,000.5 km"),
        ('He said , " it is ( very ) good " . Then', 'He said, "it is (very) good". Then'),
        ("x ; y : z ! w ? v", "x; y: z! w? v"),
        ("[ 1 ] and { x }", "[1] and {x}"),
        ('" a " and " b "', '"a" and "b"'),
        ("' hello '", "'hello'"),
        (" = = = Early life = = = \n", " === Early life ===\n"),
        (" = = Career = = \n", " == Career ==\n"),
        ("it was 5 \N{DEGREE SIGN} C", "it was 5\N{DEGREE SIGN}C"),
        ("Line one \n Line two", "Line one\nLine two"),
        ("the players ' union", "the players' union"),
        ("John 's car", "John's car"),
        ("a N b", "a 1 b"),
        ("a N N b", "a 1 N b"),  # one literal pass, as in the published rules (unlike PTB)
    ],
)
def test_wikitext(text, expected):
    assert wikitext(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("See http : / / example.com / page for more .", "See http://example.com/page for more."),
        ("at https : / / a.org now", "at https://a.org now"),
        ('He said " it is fine " , then left .', 'He said "it is fine", then left.'),
        ("Is it ? Yes !", "Is it? Yes!"),
        ("Really ?", "Really?"),
        ("Stop ! Now", "Stop! Now"),
        ("Mr . Smith went home . He slept .", "Mr . Smith went home. He slept."),
        ("I 'm here ( at home ) [ now ] .", "I'm here (at home) [now] ."),
        ("It cost $ 5 or \N{POUND SIGN} 3 ; ok : fine", "It cost $5 or \N{POUND SIGN}3; ok: fine"),
        ("the ' big one ' won", "the 'big one' won"),
    ],
)
def test_lm1b(text, expected):
    assert lm1b(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("  \N{LEFT DOUBLE QUOTATION MARK}Hello,\N{RIGHT DOUBLE QUOTATION MARK} she said.  ", '\n"Hello," she said.'),
        ("plain text\n", "\nplain text"),
        ('it \'s "fine"', '\nit \'s "fine"'),  # only the quotes and the ends change
    ],
)
def test_lambada(text, expected):
    assert lambada(text) == expected


@pytest.mark.parametrize(
    "name, function",
    [
        ("ptb", ptb),
        ("wikitext2", wikitext),
        ("wikitext103", wikitext),
        ("WikiText103", wikitext),
        ("lm1b", lm1b),
        ("lambada", lambada),
        ("openwebtext", identity),
        ("my_local_corpus.txt", identity),
        ("", identity),
    ],
)
def test_get_detokenizer(name, function):
    assert get_detokenizer(name) is function


def test_identity_keeps_pre_tokenized_text():
    text = "do n't ( x ) N \n "
    assert identity(text) == text
    assert get_detokenizer("unknown")(text) == text


def test_registry_names():
    assert sorted(detokenize.DETOKENIZERS) == ["lambada", "lm1b", "openwebtext", "ptb", "wikitext103", "wikitext2"]
