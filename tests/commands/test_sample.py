"""`radd sample` through Typer's CliRunner on a tiny checkpoint."""

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from radd_cli.cli import app
from radd_cli.io.pretrained import load
from tests.cli_helpers import assert_clean_error
from tests.conftest import require

runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["sample", *map(str, args)])


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sample_prints_samples_and_a_summary_and_writes_jsonl(tmp_path, tiny_checkpoint):
    result = run("--model", tiny_checkpoint, "-n", 3, "--steps", 8, "--output", tmp_path / "s.jsonl")
    assert result.exit_code == 0, result.output
    assert result.output.count("sample ") >= 3 and "NFE per sequence" in result.output and "expected" in result.output
    assert "\x1b[" not in result.output  # plain when piped
    rows = read_jsonl(tmp_path / "s.jsonl")
    assert [row["seed"] for row in rows] == [0, 1, 2]
    for row in rows:
        assert set(row) >= {"index", "text", "token_ids", "seed", "nfe", "settings"}
        assert len(row["token_ids"]) == 16 and 1 <= row["nfe"] <= 8
        assert row["settings"]["steps"] == 8 and row["settings"]["method"] == "tweedie" and row["settings"]["cache"]
    assert run("--model", tiny_checkpoint, "-n", 2, "--output", tmp_path / "s.txt").exit_code == 0
    assert (tmp_path / "s.txt").read_text().strip()


def test_same_seed_same_samples_whatever_the_batch_size(tmp_path, tiny_checkpoint, inference_precision):
    def draw(name, *args):
        options = ["--precision", inference_precision, "--steps", 16, "--output", tmp_path / name]  # invariant: default
        assert run("--model", tiny_checkpoint, *args, *options).exit_code == 0
        return [row["token_ids"] for row in read_jsonl(tmp_path / name)]

    one, four = (draw(f"b{batch}.jsonl", "-n", 4, "--batch-size", batch, "--seed", 7) for batch in (1, 4))
    assert one == four
    assert draw("alone.jsonl", "-n", 1, "--seed", 9) == [one[2]]  # seed 7 + 2


@pytest.mark.precision
@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16"])
def test_the_command_draws_what_the_library_draws_in_each_precision(tmp_path, tiny_checkpoint, precision):
    """`radd sample --precision P` and `radd_cli.generate(..., precision=P)` resolve P by the same rule."""
    from radd_cli.device import Work, resolve_precision
    from radd_cli.io.inference import load_for_inference
    from radd_cli.sampling import SamplingConfig, generate

    options = ("--precision", require(precision)) if precision != "auto" else ()
    output = tmp_path / "s.jsonl"
    result = run("--model", tiny_checkpoint, "-n", 3, "--seed", 5, "--steps", 8, *options, "--output", output)
    assert result.exit_code == 0, result.output
    loaded = load_for_inference(str(tiny_checkpoint), "cpu", "fp32")  # the weights; the precision is generate's
    kwargs = {"precision": precision} if precision != "auto" else {}  # the library's default is auto too
    library = generate(loaded.model, loaded.schedule, SamplingConfig(steps=8), num_samples=3,
                       length=loaded.model.config.length, seeds=range(5, 8), **kwargs)
    rows = read_jsonl(output)
    assert [row["token_ids"] for row in rows] == library.tokens.tolist()
    assert {row["settings"]["precision"] for row in rows} == {resolve_precision(precision, "cpu", work=Work.sample)}


def test_methods_orders_strategies_and_no_cache(tmp_path, tiny_checkpoint):
    (tmp_path / "order.txt").write_text(" ".join(map(str, reversed(range(16)))))
    for extra in (
        ["--method", "ordered"],
        ["--method", "ordered", "--order", "backward"],
        ["--method", "ordered", "--order", "random"],
        ["--method", "ordered", "--order", tmp_path / "order.txt"],
        ["--method", "euler", "--top-k", 5, "--steps", 8],
        ["--top-p", 0.9, "--temperature", 0.7, "--steps", 8],
    ):
        result = run("--model", tiny_checkpoint, "-n", 2, *extra, "--output", tmp_path / "o.jsonl", "--force")
        assert result.exit_code == 0, (extra, result.output)
        if "ordered" in extra:
            assert all(row["nfe"] == 16 for row in read_jsonl(tmp_path / "o.jsonl"))
    result = run("--model", tiny_checkpoint, "-n", 2, "--steps", 8, "--no-cache", "--output", tmp_path / "n.jsonl")
    assert result.exit_code == 0 and all(row["nfe"] == 8 for row in read_jsonl(tmp_path / "n.jsonl"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--top-p", 0], "--top-p: must be greater than 0"),
        (["--top-p", 1.5], "--top-p: must be at most 1"),
        (["--top-k", 0], "Invalid value for '--top-k'"),
        (["--steps", 0], "Invalid value for '--steps'"),
        (["--top-p", 0.5, "--top-k", 3], "give --top-p or --top-k, not both"),
        (["--strategy", "top_p"], "--top-p: strategy top_p needs a value"),
        (["--strategy", "greedy"], "'greedy' is not one of 'direct', 'top_p', 'top_k'"),
        (["--method", "ancestral"], "'ancestral' is not one of 'tweedie', 'euler', 'ordered'"),
        (["--order", "backward"], "--order: applies to ordered, not to tweedie"),
        (["--precision", "fp8"], "'fp8' is not one of"),
        (["--method", "ordered", "--order", "sideways"], "is not forward, backward, random"),
        (["--method", "ordered", "--steps", 8], "--steps: applies to"),
        (["--method", "threshold"], "--threshold: the threshold sampler needs it"),
        (["--method", "threshold", "--threshold", 0], "--threshold: must be greater than 0"),
        (["--method", "threshold", "--threshold", 1.5], "--threshold: must be at most 1"),
        (["--method", "remdm", "--eta", -1], "--eta: must be at least 0"),
        (["--block-length", 5], "--block-length: 5 must divide the sequence length 16"),
        (["--guidance", 1], "--guidance: needs given tokens"),
        (["--confidence", "vibes"], "'vibes' is not one of 'probability', 'margin', 'entropy'"),
        (["--method", "remdm", "--remasking", "always"], "'always' is not one of 'cap', 'rescale', 'conf', 'loop'"),
        (["--greedy"], "--greedy: applies to confidence, threshold, not to tweedie"),
        (["--kv-cache", "dual"], "--kv-cache: dual needs --block-length"),
        (["--kv-cache", "triple"], "'triple' is not one of 'none', 'prefix', 'dual'"),
        (["--output", "samples.csv"], "use a .txt or .jsonl file"),
        (["--device", "cuda:0"], "--device: cuda:0 asks for a GPU"),
        (["--dtype", "fp16"], "--precision: fp16 needs a GPU"),
        (["--length", 0], "Invalid value for '--length'"),
        (["--output", "nowhere/s.jsonl"], "the folder nowhere does not exist"),
    ],
)
def test_bad_options_are_one_line_errors(tiny_checkpoint, args, message):
    assert_clean_error(run("--model", tiny_checkpoint, *args), message)


@pytest.mark.parametrize("content", ['["a", "b"]', "[[0, 1], [2]]", "[0.5, 1]"])
def test_bad_order_files(tmp_path, tiny_checkpoint, content):
    (tmp_path / "order.json").write_text(content)
    assert_clean_error(
        run("--model", tiny_checkpoint, "--method", "ordered", "--order", tmp_path / "order.json"),
        "expected whole-number positions",
    )


def test_missing_model_and_mismatched_tokenizer(tmp_path, tiny_checkpoint):
    assert_clean_error(run("--model", tmp_path / "nowhere"), "no such folder", 1)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    model = load(broken, with_tokenizer=False).model
    config = json.loads((broken / "config.json").read_text())
    config["model"]["vocab_size"] = 299
    (broken / "config.json").write_text(json.dumps(config))
    state = {k: (v[1:] if v.shape[0] == 301 else v) for k, v in model.state_dict().items()}
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, broken / "model.safetensors")
    assert_clean_error(run("--model", broken), "the model has 299 tokens but its tokenizer", 1)


def test_a_model_with_nan_weights_is_an_error_not_samples(tmp_path, tiny_checkpoint):
    from radd_cli.io.pretrained import load, save

    broken = tmp_path / "nan-model"
    bundle = load(tiny_checkpoint)
    with torch.no_grad():
        bundle.model.blocks[0].mlp[0].weight.fill_(float("nan"))
    save(bundle.model, broken, noise=bundle.noise, tokenizer=bundle.tokenizer_source)
    result = run("--model", broken, "-n", 2, "--output", tmp_path / "s.jsonl")
    assert_clean_error(result, "the model produced NaN or infinite log-probabilities", 1)
    assert not (tmp_path / "s.jsonl").exists()
    from radd_cli.cli import app as root

    evaluated = runner.invoke(root, ["eval", "--model", str(broken), "--dataset", "builtin", "--mc-samples", "2"])
    assert_clean_error(evaluated, "the model produced NaN or infinite losses", 1)


def test_a_vanishing_temperature_is_the_most_likely_token(tmp_path, tiny_checkpoint):
    for name, extra in (("cold", ["--temperature", "1e-320"]), ("greedy", ["--top-k", "1"])):
        result = run("--model", tiny_checkpoint, "-n", 3, "--steps", 4, *extra, "--output", tmp_path / f"{name}.jsonl")
        assert result.exit_code == 0, result.output
    cold, greedy = read_jsonl(tmp_path / "cold.jsonl"), read_jsonl(tmp_path / "greedy.jsonl")
    assert [r["token_ids"] for r in cold] == [r["token_ids"] for r in greedy]


def test_the_sampler_suite_from_the_command_line(tmp_path, tiny_checkpoint):
    for extra in (
        ["--method", "confidence", "--steps", 4, "--confidence", "margin", "--block-length", 8],
        ["--method", "threshold", "--threshold", 0.3, "--greedy"],
        ["--method", "remdm", "--steps", 6, "--remasking", "loop", "--eta", 0.1],
        ["--method", "first_hitting"],
        ["--length", 40, "--steps", 4],  # past the model's length (16): window by window
        ["--stop-at-eos", "--steps", 4],
        ["--method", "threshold", "--threshold", 0.5, "--block-length", 4, "--kv-cache", "dual", "--kv-refresh", 2],
    ):
        result = run("--model", tiny_checkpoint, "-n", 2, *extra, "--output", tmp_path / "o.jsonl", "--force")
        assert result.exit_code == 0, (extra, result.output)
        rows = read_jsonl(tmp_path / "o.jsonl")
        assert len(rows) == 2 and all(row["nfe"] >= 1 for row in rows)
        if "--length" in extra:
            assert all(len(row["token_ids"]) == 40 for row in rows)
        if "--stop-at-eos" in extra:
            assert all(len(row["token_ids"]) <= 16 and row["settings"]["stop_at_eos"] for row in rows)
        if "--kv-cache" in extra:
            assert "full calls (kv cache dual)" in result.output and rows[0]["settings"]["kv_cache"] == "dual"


def test_prompts_from_a_file_with_a_byte_order_mark(tmp_path, tiny_checkpoint):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(b"\xef\xbb\xbf" + json.dumps({"prompt": "The cat"}).encode() + b"\n")
    result = run("--model", tiny_checkpoint, "--prompts", prompts, "-n", 1, "--output", tmp_path / "a.jsonl")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "a.jsonl").read_text())["prompt"] == "The cat"


def test_a_prompt_too_long_for_the_model_is_told_to_shrink_not_to_raise_the_length(tiny_checkpoint):
    long = "The cat sat on the mat. " * 3  # 29 tokens; the model holds 16
    assert_clean_error(
        run("--model", tiny_checkpoint, "--prompt", long), "shorten it to at most 15 tokens: the model holds 16", 2
    )
    result = run("--model", tiny_checkpoint, "--prompt", "The cat sat on the mat.", "--length", 8)
    assert_clean_error(result, "raise length to at least 10 (the model holds 16)", 2)
