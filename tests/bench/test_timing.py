"""`radd bench` on the CPU with --size tiny: tables, JSON schema, NFE against E-NFE (counts, never times)."""

import json
import sys

import pytest
from typer.testing import CliRunner

from radd_cli.bench import timing as benchmark
from radd_cli.cli import app
from radd_cli.core.model import RADD, ModelConfig
from radd_cli.core.schedule import get_schedule

runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["bench", *map(str, args)])


def test_bench_sample_table_and_json(tmp_path):
    result = run(
        "sample",
        "--size",
        "tiny",
        "--steps",
        "8,32",
        "--batch-size",
        4,
        "--length",
        16,
        "--reference",
        "--device",
        "cpu",
        "--json",
        tmp_path / "s.json",
    )
    assert result.exit_code == 0, result.output
    assert "the cache saves" in result.output and "faster than the all-positions sampler" in result.output
    report = json.loads((tmp_path / "s.json").read_text())
    assert {"device", "torch", "precision", "attention", "model", "batch_size", "length", "rows", "speedups"} <= set(
        report
    )
    assert [(row["steps"], row["cache"]) for row in report["rows"]] == [
        (8, "on"),
        (8, "off"),
        (8, "all-positions"),
        (32, "on"),
        (32, "off"),
        (32, "all-positions"),
    ]
    for row in report["rows"]:
        assert set(row) == {
            "steps",
            "cache",
            "nfe",
            "expected_nfe",
            "expected_nfe_se",
            "seconds",
            "tokens_per_second",
            "peak_memory_gb",
        }
        assert row["seconds"] > 0 and row["nfe"] <= row["steps"]
        if row["cache"] != "on":
            assert row["nfe"] == row["steps"]
    assert [gain["steps"] for gain in report["speedups"]] == [8, 32]
    assert report["speedups"][1]["nfe_ratio"] > 1


def test_measured_nfe_is_within_a_statistical_bound_of_e_nfe():
    model = RADD(ModelConfig(vocab_size=16, length=32, hidden_size=32, n_heads=4, n_blocks=1, dropout=0.0)).eval()
    schedule = get_schedule("loglinear")
    rows = benchmark.bench_sample(
        model,
        schedule,
        steps_list=[128],
        batch_size=128,
        length=32,
        device=model.vocab_embed.embedding.device,
        precision="fp32",
        repeats=1,
    )
    cached = rows[0]
    assert cached.cache == "on" and abs(cached.nfe - cached.expected_nfe) < 4 * cached.expected_nfe_se
    assert rows[1].nfe == 128


def test_bench_train_and_eval_on_cpu(tmp_path, monkeypatch):
    from radd_cli.training.learner import Learner

    steps_taken = []
    real_step = Learner.step

    def counted(self, blocks):  # bench train must time radd train's own step, not a copy of it
        result = real_step(self, blocks)
        steps_taken.append((blocks.shape, self.state.optimizer_steps, self.ema.num_updates))
        return result

    monkeypatch.setattr(Learner, "step", counted)
    result = run(
        "train",
        "--size",
        "tiny",
        "--batch-size",
        4,
        "--accumulation",
        2,
        "--length",
        16,
        "--timed-steps",
        2,
        "--warmup",
        1,
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--json",
        tmp_path / "t.json",
    )
    assert result.exit_code == 0, result.output
    assert steps_taken == [((4, 16), 1, 1), ((4, 16), 2, 2), ((4, 16), 3, 3)]  # warm-up + timed, EMA updated
    report = json.loads((tmp_path / "t.json").read_text())
    assert report["tokens_per_second"] > 0 and report["step_seconds"] > 0 and report["peak_memory_gb"] > 0
    assert report["mfu"] is None and report["flops_per_token"] > 0 and report["device"] == "cpu"
    assert report["accumulation"] == 2 and report["precision"] == "fp32" and report["length"] == 16
    assert 0 < report["estimated_memory_gb"] < 1 and not report["activation_checkpointing"] and not report["sharded"]
    result = run(
        "eval",
        "--size",
        "tiny",
        "--batch-size",
        4,
        "--length",
        16,
        "--batches",
        2,
        "--device",
        "cpu",
        "--json",
        tmp_path / "e.json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["forward_ms"] > 0 and report["tokens_per_second"] > 0


def test_bench_on_a_checkpoint(tiny_checkpoint):
    result = run("eval", "--model", tiny_checkpoint, "--batches", 1, "--batch-size", 2)
    assert result.exit_code == 0 and str(tiny_checkpoint) in result.output.replace("\n", "")


def test_flops_count_matches_the_published_shape():
    small = ModelConfig(vocab_size=50257, length=1024, hidden_size=768, n_heads=12, n_blocks=12)
    per_token = benchmark.training_flops_per_token(small)
    assert 6 * 85e6 < per_token < 6 * 85e6 + 6 * 50257 * 768  # trunk ≈ 85M parameters, plus half the head


@pytest.mark.parametrize(
    "args, message",
    [
        (["sample", "--size", "huge"], "'huge' is not one of 'tiny', 'small', 'medium'"),
        (["train", "--sharding", "zero3"], "'zero3' is not one of 'auto', 'none', 'fsdp'"),
        (["train", "--model", "somewhere", "--sharding", "fsdp"], "--sharding times random weights"),
        (["sample", "--steps", "a,b"], "give step counts separated by commas"),
        (["sample", "--steps", "0"], "every step count must be at least 1"),
        (["sample", "--batch-size", "0"], "Invalid value for '--batch-size'"),
        (["train", "--timed-steps", "0"], "Invalid value for '--timed-steps'"),
        (["train", "--loss", "foo"], "'foo' is not one of 'lambda_DCE', 't_DCE', 't_DSE', 'k_DCE'"),
        (["train", "--loss", "ar_forward"], "is not one of"),
        (["train", "--attention", "xformers"], "'xformers' is not one of 'sdpa', 'flash'"),
        (["eval", "--loss", "bogus"], "'bogus' is not one of 'lambda_DCE'"),
        (["eval", "--batch-size", "-1"], "Invalid value for '--batch-size'"),
        (["eval", "--precision", "fp8"], "'fp8' is not one of 'auto', 'fp32', 'bf16', 'fp16'"),
        (["eval", "--dtype", "fp16", "--device", "cpu"], "needs a GPU"),
        (["eval", "--json", "nowhere/b.json"], "the folder nowhere does not exist"),
        (["sample", "--length", "0"], "Invalid value for '--length'"),
        (["sample", "--model", "nowhere", "--length", "100000"], "no such folder"),
    ],
)
def test_bad_bench_options(args, message):
    result = run(*args)
    assert result.exit_code in (1, 2) and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_plot_needs_matplotlib_or_writes_a_png(tmp_path, monkeypatch):
    arguments = [
        "sample",
        "--size",
        "tiny",
        "--steps",
        "4",
        "--batch-size",
        2,
        "--length",
        8,
        "--plot",
        tmp_path / "p.png",
    ]
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = run(*arguments)
    assert result.exit_code == 2 and "pip install 'radd[plot]'" in result.output
    monkeypatch.delitem(sys.modules, "matplotlib")
    pytest.importorskip("matplotlib")
    assert run(*arguments).exit_code == 0 and (tmp_path / "p.png").stat().st_size > 0


def test_every_benchmark_reports_its_progress_to_the_end(tiny_model):
    """The progress bars of radd bench (with the time left) follow the runs each benchmark makes."""
    import torch

    seen = {}
    schedule, cpu = get_schedule("loglinear"), torch.device("cpu")
    common = dict(batch_size=2, length=8, device=cpu, precision="fp32")
    benchmark.bench_eval(
        tiny_model, schedule, batches=2, loss="lambda_DCE", progress=lambda *d: seen.update(eval=d), **common
    )
    benchmark.bench_sample(
        tiny_model, schedule, steps_list=[2, 4], repeats=1, progress=lambda *d: seen.update(sample=d), **common
    )
    benchmark.bench_methods(
        tiny_model, schedule, methods=["tweedie"], steps_list=[2], repeats=1,
        progress=lambda *d: seen.update(methods=d), **common,
    )
    assert seen == {"eval": (6, 6), "sample": (5, 5), "methods": (2, 2)}  # 2 × (1 + 2); 1 + 2 × 2 modes; 2 rounds
