"""The `radd` root: help, version, one-line usage errors, and bad choices refused before any work."""

import pytest
from typer.testing import CliRunner

from radd_cli import __version__
from radd_cli.cli import app

runner = CliRunner()
NOWHERE = "no/such/model"  # loading it would fail with exit code 1 ("no such folder")


def test_help_and_version():
    result = runner.invoke(app, [])
    assert result.exit_code == 0 and "Commands" in result.output and "sample" in result.output
    assert runner.invoke(app, ["--version"]).output.strip() == f"radd {__version__}"
    help_text = runner.invoke(app, ["sample", "--help"], env={"COLUMNS": "200"}).output
    for allowed in ("tweedie|euler|ordered", "direct|top_p|top_k", "auto|fp32|bf16|fp16"):
        assert allowed in help_text, help_text


@pytest.mark.parametrize(
    "args, allowed",
    [
        (["sample", "--model", NOWHERE, "--method", "foo"], "'tweedie', 'euler', 'ordered'"),
        (["sample", "--model", NOWHERE, "--strategy", "greedy"], "'direct', 'top_p', 'top_k'"),
        (["sample", "--model", NOWHERE, "--precision", "fp8"], "'auto', 'fp32', 'bf16', 'fp16'"),
        (["infill", "--model", NOWHERE, "--prefix", "a", "--method", "foo"], "'tweedie', 'euler', 'ordered'"),
        (["infill", "--model", NOWHERE, "--prefix", "a", "--dtype", "half"], "'auto', 'fp32', 'bf16', 'fp16'"),
        (["eval", "--model", NOWHERE, "--dataset", "ptb", "--loss", "mse"], "'lambda_DCE', 't_DCE', 't_DSE', 'k_DCE'"),
        (["bench", "sample", "--model", NOWHERE, "--size", "huge"], "'tiny', 'small', 'medium'"),
        (["bench", "train", "--model", NOWHERE, "--loss", "ar_forward"], "'lambda_DCE', 't_DCE', 't_DSE', 'k_DCE'"),
        (["bench", "train", "--model", NOWHERE, "--attention", "xformers"], "'sdpa', 'flash'"),
        (["bench", "eval", "--model", NOWHERE, "--loss", "bogus"], "'ar_forward', 'ar_backward', 'ar_random'"),
    ],
)
def test_every_bad_choice_exits_2_with_the_allowed_values_before_loading_anything(args, allowed):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert allowed in result.output and "is not one of" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


@pytest.mark.parametrize(
    "override, allowed",
    [
        ("training.loss_type=mse", "'lambda_DCE', 't_DCE', 't_DSE', 'k_DCE'"),
        ("sampling.method=foo", "'tweedie', 'euler', 'ordered'"),
        ("training.mixed_precision=fp8", "'auto', 'fp32', 'bf16', 'fp16'"),
        ("noise.type=cosine", "'loglinear', 'geometric'"),
        ("training.lr_schedule=step", "'constant', 'cosine', 'linear'"),
        ("model.attention=xformers", "'sdpa', 'flash'"),
        ('logging.trackers=["mlflow"]', "'tensorboard', 'wandb'"),
    ],
)
def test_bad_recipe_choices_exit_2_before_the_run_folder_exists(tmp_path, override, allowed):
    result = runner.invoke(app, ["train", override, "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2 and allowed in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_usage_errors_are_one_line(tmp_path):
    for args in (["sample"], ["sample", "--model", NOWHERE, "--steps", "0"], ["bench", "sample", "--batch-size", "0"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
        assert result.output.startswith("Error: radd ") and "--help" in result.output


def test_the_debug_variable_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("RADD_DEBUG", "1")
    result = runner.invoke(app, ["sample", "--model", NOWHERE])
    assert result.exit_code != 0 and "no such folder" in str(result.exception)
