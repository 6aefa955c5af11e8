"""`radd infill`: fixed tokens never change (token-level equality), spans are marked, bad input is refused."""

import json

import pytest
from typer.testing import CliRunner

from radd_cli.cli import app
from radd_cli.io.tokenizer import load_tokenizer
from tests.cli_helpers import assert_clean_error

runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["infill", *map(str, args)])


def rows_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_prefix_and_suffix_tokens_are_kept(tmp_path, tiny_checkpoint):
    tokenizer = load_tokenizer(str(tiny_checkpoint))
    prefix, suffix = tokenizer.encode("The cat"), tokenizer.encode(" It was happy.")
    result = run(
        "--model",
        tiny_checkpoint,
        "--prefix",
        "The cat",
        "--suffix",
        " It was happy.",
        "--length",
        14,
        "-n",
        5,
        "--steps",
        10,
        "--output",
        tmp_path / "i.jsonl",
    )
    assert result.exit_code == 0, result.output
    for row in rows_of(tmp_path / "i.jsonl"):
        ids = row["token_ids"]
        assert len(ids) == 14 and ids[: len(prefix)] == prefix and ids[14 - len(suffix) :] == suffix
        assert [span["generated"] for span in row["spans"]] == [False, True, False]
        assert "".join(span["text"] for span in row["spans"]) == tokenizer.decode(ids)
    only_prefix = run("--model", tiny_checkpoint, "--prefix", "The dog", "-n", 2, "--output", tmp_path / "p.jsonl")
    assert only_prefix.exit_code == 0
    assert all(row["token_ids"][:2] == tokenizer.encode("The dog") for row in rows_of(tmp_path / "p.jsonl"))


def test_multi_span_template_keeps_every_fixed_token(tmp_path, tiny_checkpoint):
    tokenizer = load_tokenizer(str(tiny_checkpoint))
    result = run(
        "--model",
        tiny_checkpoint,
        "--template",
        "The [MASK:2] sat on [MASK:3]. [[ok]]",
        "-n",
        4,
        "--method",
        "ordered",
        "--output",
        tmp_path / "t.jsonl",
    )
    assert result.exit_code == 0, result.output
    pieces = [
        tokenizer.encode("The "),
        [None] * 2,
        tokenizer.encode(" sat on "),
        [None] * 3,
        tokenizer.encode(". [ok]"),
    ]
    expected = [token for piece in pieces for token in piece]
    for row in rows_of(tmp_path / "t.jsonl"):
        assert len(row["token_ids"]) == len(expected) and row["nfe"] == 5
        assert all(e is None or e == t for e, t in zip(expected, row["token_ids"]))
        assert [s["generated"] for s in row["spans"]] == [False, True, False, True, False]


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--prefix", "The cat sat on the mat.", "--suffix", "It was happy.", "--length", 8],
            "--length: prefix (9 tokens) + suffix (4 tokens) = 13 tokens leave no free position in 8",
        ),
        (["--template", "no free position here"], "no free position"),
        (["--template", "The [MASK] sat"], "[MASK:n]"),
        (["--template", "a [MASK:2]", "--prefix", "b"], "not both"),
        (["--template", "a [MASK:2000000]"], "longer than any model"),
        (["--length", 8], "--prefix"),
    ],
)
def test_bad_templates_are_one_line_errors(tiny_checkpoint, args, message):
    assert_clean_error(run("--model", tiny_checkpoint, *args), message)


def test_a_template_longer_than_the_model_is_filled_window_by_window(tmp_path, tiny_checkpoint):
    result = run("--model", tiny_checkpoint, "--template", "The [MASK:30] sat. [MASK:4] end", "-n", 2, "--output", tmp_path / "w.jsonl")
    assert result.exit_code == 0, result.output
    for row in (json.loads(line) for line in (tmp_path / "w.jsonl").read_text().splitlines()):
        fixed = [span["text"] for span in row["spans"] if not span["generated"]]
        assert fixed[0] == "The " and fixed[-1] == " end" and len(row["token_ids"]) > 16


def test_expected_nfe_counts_the_two_evaluations_of_a_guided_call(tiny_checkpoint):
    def expected(*extra) -> float:
        result = run("--model", tiny_checkpoint, "--prefix", "The cat", "--steps", 8, *extra)
        assert result.exit_code == 0, result.output
        [line] = [line for line in result.output.splitlines() if "NFE per sequence" in line]
        return float(line.split(",")[1].split()[0])

    assert expected("--guidance", "2") == pytest.approx(2 * expected(), abs=0.051)  # printed to one decimal


def test_a_template_beyond_the_model_s_reach_is_refused_up_front(tiny_checkpoint):
    result = run("--model", tiny_checkpoint, "--template", "The [MASK:1000000] end")  # ran for hours
    assert_clean_error(result, "radd writes at most 64 model lengths (1024 tokens) window by window", 2)
