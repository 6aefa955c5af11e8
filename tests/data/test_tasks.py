"""Built-in tasks: deterministic rows, held-out prompts never seen in training, and the exact-match metric of
`radd eval --task` (perfect for a model that knows the answers, zero for one that does not)."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from radd_cli.cli import app
from radd_cli.core.schedule import get_schedule
from radd_cli.data import tasks
from radd_cli.data.sources import source
from radd_cli.errors import ConfigError, DataError
from radd_cli.evaluation import tasks as task_scoring
from radd_cli.io.tokenizer import train_tokenizer
from radd_cli.sampling import SamplingConfig, Strategy
from tests.cli_helpers import assert_clean_error

runner = CliRunner()


@pytest.mark.parametrize("name", list(tasks.TASKS))
def test_rows_are_deterministic_right_and_held_out_prompts_are_new(name):
    train, validation, test = (tasks.examples(name, split) for split in ("train", "validation", "test"))
    assert (len(train), len(validation), len(test)) == (50_000, 200, 500)
    seen = {row.prompt for row in train}
    assert not seen & {row.prompt for row in validation + test}
    assert not {row.prompt for row in validation} & {row.prompt for row in test}
    tasks.examples.cache_clear()
    assert tasks.examples(name, "test") == test  # the same rows on every machine
    for row in test[:50]:
        assert row.prompt.startswith(f"{name}: ") and row.prompt.endswith(" =")
        numbers = [int(n) for n in row.prompt[len(name) + 1 : -1].replace("+", " ").split()]
        answer = [int(n) for n in row.response.split()]
        expected = {"sort": sorted(numbers), "reverse": numbers[::-1], "add": [sum(numbers)]}[name]
        assert answer == expected and row.response.startswith(" ")


def test_exact_match_ignores_only_whitespace():
    assert task_scoring.exact_match(" 1 2 3", "1 2  3 ") and not task_scoring.exact_match(" 1 2 3", " 1 2 3 4")
    assert not task_scoring.exact_match(" 12 3", " 1 23")
    report = task_scoring.score("sort", "test", [tasks.examples("sort", "test")[0].response, "wrong"])
    assert (report.prompts, report.correct, report.accuracy) == (2, 1, 0.5)
    assert report.standard_error == pytest.approx(0.5 / 2**0.5)
    perfect = task_scoring.score("sort", "test", [row.response for row in tasks.examples("sort", "test")])
    assert perfect.accuracy == 1 and perfect.standard_error == 0
    assert perfect.interval == (pytest.approx(500 / (500 + 1.959964**2)), 1.0)  # Wilson: never a zero-width interval
    with pytest.raises(DataError, match="no built-in task 'nope'; the tasks are task:sort"):
        tasks.task_name("task:nope")
    with pytest.raises(ConfigError, match="task:sort has no split 'dev'"):  # a setting: exit 2
        tasks.examples("sort", "dev")


@pytest.fixture(scope="module")
def sort_tokenizer():
    return train_tokenizer(itertools.islice(source("task:sort").texts("train"), 20_000), 300)


class KnowsTheAnswers(nn.Module):
    """Log-probs that put all mass on the reference answer (then EOS) after a known prompt: a perfect model,
    or, with `wrong`, one that always answers with the prompt's first number."""

    def __init__(self, tokenizer, length: int, wrong: bool = False):
        super().__init__()
        self.tokenizer, self.wrong = tokenizer, wrong
        self.vocab_size, self.mask_id = tokenizer.vocab_size, tokenizer.vocab_size
        self.answers = {tuple(tokenizer.encode(r.prompt)): r for r in tasks.examples("sort", "test")}
        self.config = type("Config", (), {"length": length})()
        self.anchor = nn.Parameter(torch.zeros(()))  # a parameter, so the model has a device

    def forward(self, tokens):
        out = torch.full((*tokens.shape, self.vocab_size), -30.0)
        for b, row in enumerate(tokens.tolist()):
            prompt = tuple(row[: row.index(self.mask_id)] if self.mask_id in row else row)
            known = self.answers.get(prompt)
            while known is None and prompt:  # positions already decoded after the prompt
                prompt = prompt[:-1]
                known = self.answers.get(prompt)
            if known is None:  # an all-mask row: the padding of a batch-invariant call, whose output is unused
                continue
            reply = " " + known.prompt.split()[1] if self.wrong else known.response
            answer = list(prompt) + self.tokenizer.encode(reply)
            answer += [self.tokenizer.eos_id] * (len(row) - len(answer))
            out[b, torch.arange(len(row)), torch.tensor(answer[: len(row)])] = 0.0
        return out


@pytest.mark.parametrize("wrong, accuracy", [(False, 1.0), (True, 0.0)])
def test_exact_match_of_a_model_that_knows_the_answers_and_of_one_that_does_not(sort_tokenizer, wrong, accuracy):
    model = KnowsTheAnswers(sort_tokenizer, length=16, wrong=wrong)
    config = SamplingConfig(method="tweedie", strategy=Strategy("top_k", top_k=1))
    report = task_scoring.evaluate_task(model, get_schedule("loglinear"), sort_tokenizer, "sort", config, limit=40)
    assert report.prompts == 40 and report.accuracy == accuracy
    prompt, response, reference = report.examples[0]
    assert prompt == tasks.examples("sort", "test")[0].prompt and (response == reference) == (not wrong)


def test_a_short_run_trains_and_radd_eval_reports_exact_match(tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        ["train", "--recipe", "sort", "--run-dir", str(run), f"data.cache_dir={tmp_path / 'cache'}"]
        + ["training.steps=20", "model.hidden_size=32", "model.n_blocks=1", "checkpoint.every=10"],
    )
    assert result.exit_code == 0, result.output
    assert "sort:" in result.output  # the closing sample answers a held-out prompt
    report = tmp_path / "report.json"
    result = runner.invoke(
        app, ["eval", "--model", str(run / "final"), "--task", "sort", "--limit", "30", "--json", str(report)]
    )
    assert result.exit_code == 0, result.output
    assert "exact match" in result.output and "sort:" in result.output
    saved = json.loads(report.read_text())
    assert saved["prompts"] == 30 and 0 <= saved["exact_match"] <= 1 and saved["task"] == "sort"
    assert saved["strategy"] == "top_k" and saved["top_k"] == 1  # greedy by default
    assert_clean_error(runner.invoke(app, ["eval", "--task", "sort"]), "--task needs --model", exit_code=2)
    bad = runner.invoke(app, ["eval", "--model", str(run / "nowhere"), "--task", "sort", "--split", "dev"])
    assert_clean_error(bad, "task:sort has no split 'dev'", exit_code=2)  # before the model: it does not exist
