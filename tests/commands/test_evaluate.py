"""`radd eval` through the CLI: perplexity on a local file, generative quality with a tiny judge, bad input."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from radd_cli.cli import app
from radd_cli.data import tokens
from radd_cli.evaluation.perplexity import evaluate_perplexity
from radd_cli.io.inference import load_for_inference
from tests.cli_helpers import assert_clean_error, run_two_processes
from tests.conftest import require

runner = CliRunner()
TEXT = " ".join(
    f"The {a} sat on the {b}. It was {c}."
    for a in ("cat", "dog", "fox", "owl")
    for b in ("mat", "rug", "log")
    for c in ("happy", "tired")
)


def run(*args):
    return runner.invoke(app, ["eval", *map(str, args)])


@pytest.mark.precision
@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16"])
def test_perplexity_of_a_local_file_matches_the_library(tmp_path, tiny_checkpoint, precision):
    """`radd eval --precision P` and `evaluate_perplexity(..., precision=P)` resolve P by the same rule."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    options = ("--precision", require(precision)) if precision != "auto" else ()
    result = run(
        "--model",
        tiny_checkpoint,
        "--dataset",
        corpus,
        "--mc-samples",
        8,
        "--batch-size",
        32,
        "--seed",
        5,
        "--cache-dir",
        tmp_path / "cache",
        "--json",
        tmp_path / "ppl.json",
        *options,
    )
    assert result.exit_code == 0, result.output
    assert "perplexity" in result.output and "95% interval" in result.output and "Monte-Carlo part" in result.output
    report = json.loads((tmp_path / "ppl.json").read_text())
    loaded = load_for_inference(str(tiny_checkpoint), "cpu", "fp32")  # the weights; the precision is the call's
    blocks, _ = tokens.load_blocks(str(corpus), "all", loaded.tokenizer, 16, tmp_path / "cache")
    kwargs = {"precision": precision} if precision != "auto" else {}  # the library's default is auto too
    direct = evaluate_perplexity(loaded.model, loaded.schedule, blocks, mc_samples=8, batch_size=32, seed=5, **kwargs)
    assert report["nll_per_token"] == direct.nll_per_token
    assert report["perplexity"] == pytest.approx(np.exp(direct.nll_per_token))
    assert report["num_blocks"] == len(blocks) and report["total_draws"] == 8 * len(blocks)
    assert report["split"] == "all" and report["loss"] == "lambda_DCE"
    low, high = report["perplexity_interval"]
    assert low < report["perplexity"] < high


def test_target_se_reports_the_draws_it_used(tmp_path, tiny_checkpoint):
    (tmp_path / "corpus.txt").write_text(TEXT)
    result = run(
        "--model",
        tiny_checkpoint,
        "--dataset",
        tmp_path / "corpus.txt",
        "--mc-samples",
        256,
        "--target-se",
        0.5,
        "--cache-dir",
        tmp_path / "cache",
        "--json",
        tmp_path / "r.json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["standard_error"] < 0.5 and report["draws_per_block"] < 256


@pytest.mark.parametrize(
    "content, message",
    [
        ("The cat.", "fewer than one block of 16"),
        ("", "holds no documents"),
        (bytes(range(256)) * 4, "is not UTF-8 text"),
    ],
)
def test_short_empty_and_binary_files_are_clear_errors(tmp_path, tiny_checkpoint, content, message):
    path = tmp_path / "data.txt"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = run("--model", tiny_checkpoint, "--dataset", path, "--cache-dir", tmp_path / "cache")
    assert_clean_error(result, message, 1)
    assert "nan" not in result.output.lower()


def test_bad_eval_options_are_refused_before_any_work(tmp_path, tiny_checkpoint):
    (tmp_path / "corpus.txt").write_text(TEXT)
    base = ["--model", tiny_checkpoint, "--dataset", tmp_path / "corpus.txt", "--cache-dir", tmp_path / "cache"]
    assert_clean_error(run(*base, "--length", -5), "Invalid value for '--length'", 2)
    assert_clean_error(run(*base, "--length", 0), "Invalid value for '--length'", 2)
    assert_clean_error(run(*base, "--json", tmp_path / "nowhere" / "r.json"), "does not exist", 2)
    (tmp_path / "rows.jsonl").write_text(json.dumps({"text": None}) + "\n")
    assert_clean_error(
        run("--model", tiny_checkpoint, "--dataset", tmp_path / "rows.jsonl", "--cache-dir", tmp_path / "cache"),
        "row 1 has a `text` of 'None', not a string",
        1,
    )
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.txt").write_text(TEXT)
    (tmp_path / "mixed" / "b.jsonl").write_text(json.dumps({"input_ids": [1, 2, 3]}) + "\n")
    assert_clean_error(
        run("--model", tiny_checkpoint, "--dataset", tmp_path / "mixed", "--cache-dir", tmp_path / "cache"),
        "mixes text files with pre-tokenized input_ids",
        1,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give --model and --dataset"),
        (["--samples", "s.jsonl"], "needs both --samples"),
        (["--model", "m", "--samples", "s.jsonl", "--judge", "j"], "not both"),
    ],
)
def test_missing_or_mixed_modes(args, message):
    assert_clean_error(run(*args), message, 2)


@pytest.fixture
def judge(tmp_path):
    """A tiny random GPT-2 judge with a word-level tokenizer, saved like a Hub model."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator([TEXT], trainer=trainers.WordLevelTrainer(special_tokens=["[UNK]", "<|endoftext|>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>", unk_token="[UNK]")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=len(tokenizer), n_positions=32))
    folder = tmp_path / "judge"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_generative_quality_reports_perplexity_with_entropy(tmp_path, tiny_checkpoint, judge):
    assert (
        runner.invoke(
            app,
            ["sample", "--model", str(tiny_checkpoint), "-n", 3, "--steps", 8, "--output", str(tmp_path / "s.jsonl")],
        ).exit_code
        == 0
    )
    result = run("--samples", tmp_path / "s.jsonl", "--judge", judge, "--json", tmp_path / "g.json")
    assert result.exit_code == 0, result.output
    assert "generative perplexity" in result.output and "unigram entropy" in result.output
    report = json.loads((tmp_path / "g.json").read_text())
    assert len(report["perplexity"]) == len(report["entropy"]) == 3 and set(report["distinct"]) == {"1", "2", "3", "4"}
    ids = [json.loads(line)["token_ids"] for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    from radd_cli.evaluation.sample_quality import unigram_entropy

    assert report["entropy"] == pytest.approx([unigram_entropy(row) for row in ids])  # the sampler's own tokens


def test_bad_samples_and_judges_are_clear_errors(tmp_path, judge):
    assert_clean_error(run("--samples", tmp_path / "missing.jsonl", "--judge", judge), "no such file", 1)
    (tmp_path / "bad.jsonl").write_text("not json\n")
    assert_clean_error(run("--samples", tmp_path / "bad.jsonl", "--judge", judge), "line 1 is not JSON", 1)
    (tmp_path / "ok.jsonl").write_text(json.dumps({"text": "the cat"}) + "\n")
    assert_clean_error(run("--samples", tmp_path / "ok.jsonl", "--judge", tmp_path / "no-judge"), "no-judge", 1)


def test_two_processes_share_the_blocks_and_count_each_once(tmp_path, tiny_checkpoint):

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    common = [
        "eval",
        "--model",
        str(tiny_checkpoint),
        "--dataset",
        str(corpus),
        "--loss",
        "ar_forward",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--device",
        "cpu",
    ]
    single = runner.invoke(app, [*common, "--json", str(tmp_path / "one.json")])
    assert single.exit_code == 0, single.output
    run_two_processes("-m", "radd_cli", *common, "--json", str(tmp_path / "two.json"), port_offset=1000)
    one, two = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    assert two["num_blocks"] == one["num_blocks"] and two["total_draws"] == one["total_draws"] == one["num_blocks"]
    assert two["nll_per_token"] == pytest.approx(one["nll_per_token"], abs=1e-6)  # exact objective: same value
