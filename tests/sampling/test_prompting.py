"""Generation from a prompt: the prompt's tokens stay as given, the response is read up to EOS (and stop
strings); `radd sample --prompt/--prompts` shows and writes prompt and response apart."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from radd_cli.cli import app
from radd_cli.errors import ConfigError
from radd_cli.io.pretrained import load
from radd_cli.sampling import SamplingConfig, prompting
from tests.cli_helpers import assert_clean_error

runner = CliRunner()


def test_trimming_at_stop_strings():
    assert prompting.trim_at_stop("a cat. Q: more", ["Q:", "."]) == ("a cat", True)
    assert prompting.trim_at_stop("a cat", ["\n", ""]) == ("a cat", False)


def test_a_prompt_is_a_fixed_prefix_and_must_leave_room():
    template = prompting.prompt_template([4, 5], 5, mask_id=9)
    assert template.tolist() == [4, 5, 9, 9, 9]
    with pytest.raises(ConfigError, match="the prompt is 5 tokens, leaving no room for a response in 5 positions"):
        prompting.prompt_template([1, 2, 3, 4, 5], 5, mask_id=9)


def test_responses_keep_their_prompt_and_stop_at_eos(tiny_checkpoint):
    bundle = load(tiny_checkpoint)
    config = SamplingConfig(method="tweedie", steps=8)
    prompts = ["The cat", "The dog sat on the"]
    responses = prompting.respond(
        bundle.model.eval(), bundle.schedule, bundle.tokenizer, config, prompts, length=16, num_samples=3, seed=4
    )
    assert [r.prompt for r in responses] == [p for p in prompts for _ in range(3)]
    assert [r.seed for r in responses] == list(range(4, 10))
    for response in responses:
        assert response.prompt_ids == bundle.tokenizer.encode(response.prompt)
        assert bundle.tokenizer.eos_id not in response.token_ids
        assert len(response.prompt_ids) + len(response.token_ids) <= 16
        assert response.text == bundle.tokenizer.decode(response.token_ids)
        assert response.finish_reason == (
            "stop" if len(response.prompt_ids) + len(response.token_ids) < 16 else "length"
        )
    again = prompting.respond(
        bundle.model.eval(), bundle.schedule, bundle.tokenizer, config, prompts[1:], length=16, num_samples=3, seed=7
    )
    assert [r.token_ids for r in again] == [r.token_ids for r in responses[3:]]  # seed + i, whatever the batch


def test_sample_with_prompts_keeps_each_prompt_and_writes_its_response(tmp_path, tiny_checkpoint):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "The dog"}\n\n{"prompt": "The owl sat"}\n')
    output = tmp_path / "out.jsonl"
    result = runner.invoke(
        app,
        ["sample", "--model", str(tiny_checkpoint), "--prompt", "The cat", "--prompts", str(prompts), "-n", "2"]
        + ["--steps", "8", "--output", str(output)],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["prompt"] for row in rows] == ["The cat", "The cat", "The dog", "The dog", "The owl sat"] + [
        "The owl sat"
    ]
    assert [row["seed"] for row in rows] == list(range(6))
    for row in rows:
        assert row["text"] == row["prompt"] + row["response"] and row["prompt"] in result.output
        assert row["finish_reason"] in ("stop", "length")
    eos = load(tiny_checkpoint).tokenizer.eos_id
    assert all(eos not in row["token_ids"] for row in rows)


@pytest.mark.parametrize(
    "args, message, code",
    [
        (["--prompt", "The cat sat on the mat. " * 5], "the prompt is", 2),
        (["--prompt", "The cat", "--chat"], "--chat: the tokenizer", 2),
        (["--prompts", "nowhere.jsonl"], "--prompts nowhere.jsonl: no such file", 1),
        (["--prompts", "prompts.csv"], "give a .jsonl file", 1),
        (["--prompts", "bad.jsonl"], 'bad.jsonl line 2 has no "prompt" string', 1),
        (["--prompts", "empty.txt"], "holds no prompts", 1),
    ],
)
def test_bad_prompts_are_one_line_errors(tmp_path, tiny_checkpoint, monkeypatch, args, message, code):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    (tmp_path / "empty.txt").write_text("\n")
    result = runner.invoke(app, ["sample", "--model", str(tiny_checkpoint), *args])
    assert_clean_error(result, message, exit_code=code)


def test_per_sample_templates_of_the_oracle_condition_each_row(oracle):
    """The prompt of each row is conditioned on: left-to-right greedy decoding of the oracle is its mode."""
    from radd_cli.core.schedule import get_schedule
    from radd_cli.sampling import Strategy, generate

    templates = torch.tensor([[0, 3, 3, 3], [2, 1, 3, 3]])
    config = SamplingConfig(method="ordered", strategy=Strategy("top_k", top_k=1))
    result = generate(
        oracle, get_schedule("loglinear"), config, num_samples=2, length=4, template=templates, seeds=[0, 1]
    )
    for row, template in zip(result.tokens, templates):
        expected = template.clone()
        for position in range(4):  # greedy, left to right, from the exact conditionals
            if expected[position] == oracle.mask_id:
                expected[position] = oracle(expected[None])[0, position].argmax()
        assert torch.equal(row, expected)
