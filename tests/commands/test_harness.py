"""`radd harness`: lm-evaluation-harness on a radd model from radd's own command line, on local task YAMLs
(nothing downloaded): lm-eval's table on the screen, its results as JSON, radd's own likelihoods inside."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from radd_cli.cli import app
from tests.cli_helpers import assert_clean_error

pytest.importorskip("lm_eval", reason="the lmeval extra: pip install 'radd[lmeval]'")

from tests.evaluation.test_lmeval import multiple_choice_rows, requests, write_tasks  # noqa: E402

runner = CliRunner()


def test_a_local_task_runs_end_to_end_with_radds_likelihoods(tmp_path, tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    rows = multiple_choice_rows(8)
    folder = write_tasks(tmp_path, rows)
    output = tmp_path / "results.json"
    args = ["harness", "radd_test_mc,radd_test_rolling", "--model", str(tiny_checkpoint), "--include-path", str(folder)]
    result = runner.invoke(app, [*args, "--limit", "8", "--batch-size", "8", "--output-path", str(output)])
    assert result.exit_code == 0, result.output
    assert "radd_test_mc" in result.output and "|acc" in result.output and "bits_per_byte" in result.output
    results = json.loads(output.read_text())["results"]
    accuracy = results["radd_test_mc"]["acc,none"]
    assert f"{accuracy:.4f}" in result.output  # the table shows what the JSON holds

    from radd_cli.evaluation.lmeval import RaddLM

    lm = RaddLM(pretrained=str(tiny_checkpoint), device="cpu", batch_size=8)
    right = 0
    for row in rows:  # the accuracy radd's own exact likelihoods give: the most likely choice is the answer
        scores = lm.loglikelihood(requests("loglikelihood", *[(row["prompt"], choice) for choice in row["choices"]]))
        right += max(range(len(scores)), key=lambda i: scores[i][0]) == row["answer"]
    assert accuracy == pytest.approx(right / len(rows))


def test_problems_are_one_line_errors(tmp_path, tiny_checkpoint, monkeypatch):
    model = ["--model", str(tiny_checkpoint)]
    assert_clean_error(runner.invoke(app, ["harness", " , ", *model]), "give at least one task", 2)
    assert_clean_error(
        runner.invoke(app, ["harness", "x", *model, "--include-path", str(tmp_path / "no")]), "is not a folder", 2
    )
    assert_clean_error(
        runner.invoke(app, ["harness", "x", *model, "--output-path", str(tmp_path / "no" / "r.json")]),
        "does not exist",
        2,
    )
    monkeypatch.setitem(sys.modules, "lm_eval.utils", None)  # as if the extra were not installed
    result = runner.invoke(app, ["harness", "x", *model])
    assert_clean_error(result, "pip install 'radd[lmeval]'", 1)
