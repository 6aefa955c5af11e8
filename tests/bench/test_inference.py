"""`radd bench sample --kv-cache` and `radd bench eval --compile` on the CPU with --size tiny (counts, never times)."""

import json

from typer.testing import CliRunner

from radd_cli.cli import app
from radd_cli.core import compiled

runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["bench", *map(str, args)])


def test_bench_sample_with_the_key_value_cache_counts_full_calls_apart(tmp_path):
    result = run(
        "sample", "--size", "tiny", "--length", 32, "--batch-size", 3, "--steps", 16, "--block-length", 8,
        "--kv-cache", "dual,prefix", "--repeats", 1, "--device", "cpu", "--json", tmp_path / "kv.json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "kv.json").read_text())
    rows = {row["kv_cache"]: row for row in report["rows"]}
    assert list(rows) == ["none", "dual", "prefix"] and report["block_length"] == 8  # the baseline first
    assert rows["none"]["full_calls"] == rows["none"]["calls"] and rows["none"]["speedup"] == 1.0
    assert rows["dual"]["calls"] == rows["none"]["calls"] and rows["dual"]["full_calls"] == 4  # one per block
    assert all(row["tokens_per_second"] > 0 for row in rows.values()) and report["batch_invariant"]
    plain = run(
        "sample", "--size", "tiny", "--length", 32, "--batch-size", 3, "--steps", 16, "--block-length", 8,
        "--kv-cache", "dual", "--repeats", 1, "--device", "cpu", "--no-batch-invariant", "--json", tmp_path / "plain.json",
    )
    assert plain.exit_code == 0, plain.output
    report = json.loads((tmp_path / "plain.json").read_text())
    assert report["batch_invariant"] is False and [row["calls"] for row in report["rows"]] == [rows["none"]["calls"]] * 2


def test_bad_bench_cache_options_are_one_line_errors():
    for args, message in (
        (["--kv-cache", "both"], "give modes among none, prefix, dual"),
        (["--kv-cache", "dual", "--method", "ordered"], "does not decode by blocks"),
    ):
        result = run("sample", "--size", "tiny", *args)
        assert result.exit_code != 0 and message in result.output, result.output


def test_bench_eval_compile_says_why_it_cannot_compile(monkeypatch, tmp_path):
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)
    result = run("eval", "--size", "tiny", "--batch-size", 2, "--batches", 1, "--compile", "--device", "cpu",
                 "--json", tmp_path / "c.json")
    assert result.exit_code == 0, result.output
    assert "compile is not used: torch.compile on the CPU needs a C++ compiler" in result.output
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["eager_ms"] > 0 and report["compiled_ms"] is None and report["fallback"]
