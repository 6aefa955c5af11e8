"""`radd train --dry-run`: parameters, tokens per step and memory per process, with nothing written."""

from __future__ import annotations

from typer.testing import CliRunner

from radd_cli.cli import app
from tests.cli_helpers import assert_clean_error

runner = CliRunner()


def test_a_dry_run_prints_the_plan_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    result = runner.invoke(app, ["train", "--dry-run", "training.activation_checkpointing=true"])
    assert result.exit_code == 0, result.output
    assert "recipe tiny on 1 CPU process" in result.output and "not sharded" in result.output
    assert "tokens per step: 2,048 (32 sequences × 64" in result.output
    assert "with checkpointing (recipe)" in result.output and "estimated memory per process" in result.output
    assert "the recipe fits in the" in result.output
    assert list(tmp_path.iterdir()) == []  # no run folder, no token cache, no tokenizer


def test_a_dry_run_of_the_large_recipe_on_eight_gpus_is_sharded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "--recipe", "large", "--dry-run", "--gpus", "8"])
    assert result.exit_code == 0, result.output
    assert "8 GPU processes" in result.output and "sharded (FSDP) over 8" in result.output
    assert "parameters: 1,011.5 M" in result.output and "tokens per step: 524,288" in result.output
    assert "FSDP set-up and gathering" in result.output and list(tmp_path.iterdir()) == []


def test_a_dry_run_checks_the_batch_against_the_processes():
    result = runner.invoke(app, ["train", "--dry-run", "--gpus", "3"])
    assert_clean_error(result, "must be a multiple of training.accumulation × processes (1 × 3)", 2)


def test_a_dry_run_with_lora_counts_the_adapters_alone_as_trained(tmp_path, monkeypatch):
    import pytest

    pytest.importorskip("peft", reason="the lora extra: pip install 'radd[lora]'")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "--recipe", "large", "--dry-run", "--gpus", "8", "training.lora.rank=16"])
    assert result.exit_code == 0, result.output
    # 16 blocks × 16 × (4 + 2 + 5 + 5) × 2048 adapter weights, and 16 × (2048 + V + 1) of the output layer's,
    # beside the 1,011.5 M of the network
    assert "parameters: 1,020.7 M" in result.output and "trained: 9.226 M (0.9%)" in result.output
    full = runner.invoke(app, ["train", "--recipe", "large", "--dry-run", "--gpus", "8"])

    def totals(output: str) -> list[float]:
        [line] = [line for line in output.splitlines() if "total" in line]
        return [float(word) for word in line.split() if word.replace(".", "").isdigit()]

    assert all(ours < theirs for ours, theirs in zip(totals(result.output), totals(full.output)))  # less to hold
    assert list(tmp_path.iterdir()) == []
