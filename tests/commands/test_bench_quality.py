"""`radd bench quality` and the sweep behind it: rows, exact scores on the Markov language, JSON schema."""

import json

import pytest
import torch
from typer.testing import CliRunner

from radd_cli.cli import app
from radd_cli.core.model import RADD, ModelConfig
from radd_cli.data import markov
from radd_cli.evaluation import sampler_sweep
from radd_cli.io.pretrained import save
from tests.conftest import randomized

runner = CliRunner()


@pytest.fixture(scope="module")
def markov_model(tmp_path_factory):
    """A tiny random model that speaks the Markov language's tokenizer (length 16)."""
    folder = tmp_path_factory.mktemp("markov-model")
    config = ModelConfig(vocab_size=markov.SYMBOLS + 1, length=16, hidden_size=32, n_heads=4, n_blocks=1, dropout=0.0)
    torch.manual_seed(0)
    save(randomized(RADD(config), seed=2), folder, tokenizer=markov.tokenizer().hf)
    return folder


def test_bench_quality_scores_every_setting_exactly_and_writes_its_json(tmp_path, markov_model):
    result = runner.invoke(
        app,
        [
            "bench", "quality", "--model", str(markov_model), "--num-samples", "6", "--batch-size", "4",
            "--methods", "tweedie,threshold,first_hitting", "--windows", "3", "--device", "cpu", "--kv-cache", "none,dual",
            "--json", str(tmp_path / "q.json"),
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "the language itself" in result.output and "matching tweedie" in result.output
    report = json.loads((tmp_path / "q.json").read_text())
    assert report["task"] == "markov" and report["samples"] == 6 and report["length"] == 16
    wanted = [(m, s) for m, s in sampler_sweep.SWEEP if m in ("tweedie", "threshold", "first_hitting")]
    fitting = [(m, s) for m, s in wanted if 16 % s.get("block_length", 1) == 0]  # blocks of 32 do not fit 16
    with_cache = [(m, s | {"kv_cache": "dual"}) for m, s in fitting if "block_length" in s]
    assert sorted(str((row["method"], row["settings"])) for row in report["rows"]) == sorted(
        str(row) for row in [*fitting, *with_cache]
    )
    assert report["kv_cache"] == ["none", "dual"] and any(row["full_calls_per_sequence"] for row in report["rows"])
    for row in report["rows"]:
        assert {"calls_per_sequence", "seconds", "entropy", "nll_per_token", "nll_se", "forbidden_rate", "pareto"} <= set(row)
        assert row["calls_per_sequence"] >= 1 and 0 <= row["forbidden_rate"] <= 1 and row["nll_per_token"] > 0
    assert any(row["pareto"] for row in report["rows"])
    assert report["reference"]["forbidden_rate"] == 0.0 and report["entropy_rate"] > 0
    assert report["windows"]["length"] == 48 and 0 <= report["windows"]["forbidden_rate_at_seams"] <= 1


def test_on_a_text_model_the_measures_are_judge_free(tmp_path, tiny_checkpoint):
    result = runner.invoke(
        app, ["bench", "quality", "--model", str(tiny_checkpoint), "--samples", "3", "--only", "confidence", "--json", str(tmp_path / "t.json")]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "t.json").read_text())
    assert report["task"] == "text" and report["reference"] is None
    assert all(row["nll_per_token"] is None and set(row["distinct"]) == {"1", "2", "3", "4"} for row in report["rows"])


def test_a_random_sampler_on_the_chain_makes_forbidden_transitions_and_pareto_is_honest():
    uniform = [[int(t) for t in torch.randint(1, markov.SYMBOLS + 1, (64,), generator=torch.Generator().manual_seed(i))] for i in range(30)]
    row = sampler_sweep.measure("uniform", {}, uniform, 1.0, 0.0, exact=True)
    assert row.forbidden_rate > 0.5  # most symbols drawn at random misspell a word or start a wrong one
    perfect = sampler_sweep.reference_row(30, 64)
    costly = sampler_sweep.measure("costly", {}, [[int(s) + 1 for s in r] for r in markov.chain().sample(30, 64, 1)], 9.0, 0.0, exact=True)
    rows = [row, costly]
    sampler_sweep.mark_pareto(rows)
    assert row.pareto and costly.pareto  # cheap but bad, good but costly: neither beats the other
    assert perfect.forbidden_rate == 0 and not sampler_sweep.matches(row, costly)


def test_bad_bench_quality_options(markov_model):
    for args, message in (
        (["--methods", "nonsense"], "give samplers among"),
        (["--samples", "1"], "Invalid value for '--samples'"),
        (["--windows", "-1"], "Invalid value for '--windows'"),
        (["--kv-cache", "none,triple"], "give modes among none, prefix, dual"),
    ):
        result = runner.invoke(app, ["bench", "quality", "--model", str(markov_model), *args])
        assert result.exit_code == 2 and message in result.output, result.output
