"""Infilling templates: parsing [MASK:n] spans, their token layout, and rendering finished text."""

import re

import pytest
import torch

from radd_cli.errors import ConfigError
from radd_cli.io.tokenizer import train_tokenizer
from radd_cli.sampling.templates import (
    Infill,
    Segment,
    build_template,
    parse_template,
    prefix_suffix_template,
    render_spans,
)

SENTENCES = [
    "The cat sat on the mat.",
    "The dog sat on the rug.",
    "A bird flew over the house.",
    "Once upon a time there was a king.",
    "The end of the story was happy.",
    "She read the book in the garden.",
    "He walked to the station in the rain.",
    "They ate bread and cheese for lunch.",
] * 4


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(SENTENCES, vocab_size=300)


def text(value: str) -> Segment:
    return Segment(value)


def span(n: int) -> Segment:
    return Segment(None, n)


# parsing


def test_parse_several_spans():
    assert parse_template("The [MASK:12] sat on the [MASK:3].") == [
        text("The "),
        span(12),
        text(" sat on the "),
        span(3),
        text("."),
    ]


def test_parse_spans_at_start_and_end():
    assert parse_template("[MASK:4] middle [MASK:1]") == [span(4), text(" middle "), span(1)]
    assert parse_template("[MASK:7]") == [span(7)]


def test_parse_adjacent_spans_stay_separate():
    assert parse_template("x[MASK:2][MASK:3]y") == [text("x"), span(2), span(3), text("y")]


def test_parse_literal_brackets():
    assert parse_template("a [[b]] [MASK:2] c]]") == [text("a [b] "), span(2), text(" c]")]
    assert parse_template("[[[MASK:1]]]") == [text("["), span(1), text("]")]
    assert parse_template("[[MASK:1]] [MASK:1]") == [text("[MASK:1] "), span(1)]


def test_parse_count_may_have_spaces():
    assert parse_template("[MASK: 5 ]") == [span(5)]


@pytest.mark.parametrize(
    "template, message",
    [
        ("a ] [MASK:2]", r"unmatched '\]' at character 3; write \[\[ for a literal '\['"),
        ("[MASK:2]]", r"unmatched '\]' at character 9"),
        ("ab [MASK:2", r"unclosed '\[' at character 4; write \[\[ for a literal '\['"),
        ("ab [x [MASK:2]", r"unclosed '\[' at character 4"),
        ("ab [FOO] [MASK:2]", r"unknown bracket expression \[FOO\] at character 4 .* write \[\[ for a literal"),
        ("[] [MASK:2]", r"unknown bracket expression \[\] at character 1"),
        ("x [mask:2]", r"unknown bracket expression \[mask:2\] at character 3"),
        ("The [MASK] sat", r"\[MASK\] at character 5 of the template needs a count: write \[MASK:n\]"),
        ("a [MASK:0]", r"\[MASK:0\] at character 3 .* use a count of 1 or more"),
        ("a [MASK:-2]", r"\[MASK:-2\] at character 3 .* use a count of 1 or more"),
        ("a [MASK:two]", r"\[MASK:two\] at character 3 .* must be a whole number of tokens"),
        ("a [MASK:1.5]", r"\[MASK:1.5\] .* must be a whole number"),
        ("a [MASK:]", r"\[MASK:\] .* must be a whole number"),
        ("no spans here", r"the template has no free position; add \[MASK:n\]"),
        ("only [[literal]] brackets", r"the template has no free position; add \[MASK:n\]"),
        ("", r"the template has no free position"),
    ],
)
def test_parse_errors(template, message):
    with pytest.raises(ConfigError, match=message):
        parse_template(template)


def test_segment_is_text_or_span():
    for bad in [("a", 2), (None, 0), (None, -1)]:
        with pytest.raises(ValueError, match="a segment is either text"):
            Segment(*bad)


# building


def test_build_template_layout(tokenizer):
    infill = build_template(parse_template("The [MASK:12] sat on the [MASK:3]."), tokenizer)
    the, middle, dot = (tokenizer.encode(piece) for piece in ("The ", " sat on the ", "."))
    m = tokenizer.mask_id
    expected = the + [m] * 12 + middle + [m] * 3 + dot
    assert infill.tokens.dtype == torch.long and infill.free.dtype == torch.bool
    assert infill.tokens.tolist() == expected
    assert infill.free.tolist() == [token == m for token in expected]
    assert infill.length == len(expected) and infill.num_free == 15


def test_build_template_pieces_do_not_merge(tokenizer):
    infill = build_template([text("The ca"), span(1), text("t sat")], tokenizer)
    fixed = infill.tokens[~infill.free].tolist()
    assert fixed == tokenizer.encode("The ca") + tokenizer.encode("t sat")
    assert fixed != tokenizer.encode("The cat sat")  # the whole string would tokenize differently


def test_build_template_adjacent_and_edge_spans(tokenizer):
    infill = build_template(parse_template("[MASK:2]on[MASK:1][MASK:3]"), tokenizer)
    on = tokenizer.encode("on")
    m = tokenizer.mask_id
    assert infill.tokens.tolist() == [m, m] + on + [m] * 4
    assert infill.free.tolist() == [True, True] + [False] * len(on) + [True] * 4


def test_build_template_needs_a_free_span(tokenizer):
    with pytest.raises(ConfigError, match=r"no free position; add \[MASK:n\]"):
        build_template([text("just text")], tokenizer)


def test_prefix_suffix_layout(tokenizer):
    prefix, suffix = "Once upon a time", " The end."
    head, tail = tokenizer.encode(prefix), tokenizer.encode(suffix)
    infill = prefix_suffix_template(prefix, suffix, 20, tokenizer)
    free_count = 20 - len(head) - len(tail)
    assert infill.length == 20 and infill.num_free == free_count
    assert infill.tokens[: len(head)].tolist() == head
    assert infill.tokens[20 - len(tail) :].tolist() == tail
    assert infill.free.tolist() == [False] * len(head) + [True] * free_count + [False] * len(tail)
    assert (infill.tokens[infill.free] == tokenizer.mask_id).all()


def test_prefix_only_and_suffix_only(tokenizer):
    head = tokenizer.encode("The cat")
    only_prefix = prefix_suffix_template("The cat", None, 6, tokenizer)
    assert only_prefix.tokens.tolist() == head + [tokenizer.mask_id] * (6 - len(head))
    tail = tokenizer.encode(" sat.")
    only_suffix = prefix_suffix_template("", " sat.", 6, tokenizer)
    assert only_suffix.tokens.tolist() == [tokenizer.mask_id] * (6 - len(tail)) + tail


def test_prefix_suffix_errors(tokenizer):
    head, tail = len(tokenizer.encode("Once upon a time")), len(tokenizer.encode(" The end."))
    for length in (head + tail, head + tail - 1):
        message = (
            f"length: prefix ({head} tokens) + suffix ({tail} tokens) = {head + tail} tokens leave no free "
            f"position in {length}; raise it or shorten them"
        )
        with pytest.raises(ConfigError, match=re.escape(message)):
            prefix_suffix_template("Once upon a time", " The end.", length, tokenizer)
    with pytest.raises(ConfigError, match=r"length: is 0; it must be between 1 and 1048576 tokens"):
        prefix_suffix_template("The", None, 0, tokenizer)
    for prefix, suffix in [(None, None), ("", "")]:
        with pytest.raises(ConfigError, match=r"give prefix and/or suffix .* or template"):
            prefix_suffix_template(prefix, suffix, 10, tokenizer)


def test_render_spans_round_trips_fixed_text(tokenizer):
    infill = build_template(parse_template("[MASK:2]The [MASK:3] sat on the [MASK:2]."), tokenizer)
    drawn = infill.tokens.clone()
    generated = tokenizer.encode(" bird flew dog")[:7]
    assert len(generated) == 7
    drawn[infill.free] = torch.tensor(generated)
    pieces = render_spans(drawn, infill.free, tokenizer)
    assert [flag for _, flag in pieces] == [True, False, True, False, True, False]
    assert [piece for piece, flag in pieces if not flag] == ["The ", " sat on the ", "."]
    assert [piece for piece, flag in pieces if flag] == [
        tokenizer.decode(generated[:2]),
        tokenizer.decode(generated[2:5]),
        tokenizer.decode(generated[5:]),
    ]
    assert "".join(piece for piece, _ in pieces) == tokenizer.decode(drawn.tolist())
    assert infill.render(drawn, tokenizer) == pieces


def test_render_spans_shows_masked_positions(tokenizer):
    infill = prefix_suffix_template("The cat", None, len(tokenizer.encode("The cat")) + 2, tokenizer)
    assert render_spans(infill.tokens, infill.free, tokenizer) == [("The cat", False), ("[MASK][MASK]", True)]
    assert render_spans([1, 2], [True, True], tokenizer) == [(tokenizer.decode([1, 2]), True)]
    with pytest.raises(ValueError, match="3 tokens but 2 free flags"):
        render_spans([1, 2, 3], [True, False], tokenizer)


def test_infill_is_a_plain_container():
    infill = Infill(torch.tensor([5, 9, 9]), torch.tensor([False, True, True]))
    assert infill.length == 3 and infill.num_free == 2
