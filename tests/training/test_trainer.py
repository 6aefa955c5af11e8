"""radd train: end to end on the built-in corpus, exact resume after SIGTERM or kill -9, non-finite
losses, two gloo processes in sync, and a known Markov chain learned to its entropy rate."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from radd_cli.cli import app
from radd_cli.core.losses import LOSSES
from radd_cli.errors import ConfigError, RaddError, TrainingError
from radd_cli.io.pretrained import load
from radd_cli.training.optim import learning_rate_factor
from radd_cli.training.recipe import load_recipe
from radd_cli.training.trainer import Trainer, TrainingInterrupted
from tests.cli_helpers import TINY_RUN, run_two_processes
from tests.conftest import require

runner = CliRunner()
SMALL = [
    *TINY_RUN,
    "training.steps=6",
    "training.warmup_steps=2",
    "training.lr=1e-3",
    "evaluation.every=0",
    "evaluation.batches=2",
    "evaluation.batch_size=8",
    "sampling.every=0",
    "sampling.num_samples=2",
    "sampling.steps=8",
    "checkpoint.every=2",
    "logging.every=1",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("token-cache")  # shared: the built-in corpus is tokenized once


def overrides(cache_dir, *extra) -> list[str]:
    return [*SMALL, f"data.cache_dir={cache_dir}", *extra]


def train_in_process(run_dir, cache_dir, *extra, on_step=None):
    trainer = Trainer(load_recipe("tiny", overrides(cache_dir, *extra)), run_dir, on_step=on_step)
    return trainer, trainer.run()


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def assert_same(left: dict, right: dict) -> None:
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), key


def test_tiny_recipe_trains_end_to_end_and_its_final_model_loads(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["train", "--recipe", "tiny", *overrides(cache_dir), "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "A sample from" in result.output
    # the screen ends with held-out checks against baselines that ignore context, and a real passage beside
    # its tokens shuffled
    assert "held-out passages the model never trained on" in result.output
    assert "a model that ignores context: half at best" in result.output
    assert "the training tokens' frequencies alone" in result.output
    assert "the most frequent token every time" in result.output
    last = result.output.strip().splitlines()[-2:]
    assert last[0].strip().startswith("real ") and last[1].strip().startswith("shuffled ")
    assert "held-out text: the real passage preferred" in (run_dir / "train.log").read_text()
    model = load(run_dir / "final", with_tokenizer=False).model
    assert model.vocab_size == 300 and model.config.length == 16
    assert (run_dir / "final" / "tokenizer.json").is_file()
    assert load(run_dir / "final").tokenizer_source == str(run_dir / "final")
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step_4", "step_6"] or sorted(
        p.name for p in (run_dir / "checkpoints").iterdir()
    ) == ["step_4", "step_6"]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "train/nats_per_token" in m] == [1, 2, 3, 4, 5, 6]
    assert "valid/nats_per_token" in metrics[-1] and math.isfinite(metrics[-1]["valid/nats_per_token"])
    assert (run_dir / "samples" / "step_6.txt").read_text().strip()
    assert json.loads((run_dir / "recipe.json").read_text())["training"]["steps"] == 6


@pytest.mark.precision
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_interrupted_then_resumed_run_equals_an_uninterrupted_one(tmp_path, cache_dir, precision):
    """Bit for bit, in each precision radd trains in on a CPU."""
    pinned = f"training.mixed_precision={require(precision)}"
    seen_straight, seen_resumed = [], []
    straight, _ = train_in_process(
        tmp_path / "straight", cache_dir, pinned,
        on_step=lambda state, idx: seen_straight.append((state.step, idx.tolist())),
    )

    def interrupt_at_3(state, indices):
        seen_resumed.append((state.step, indices.tolist()))
        if state.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM after step 4") as caught:
        train_in_process(tmp_path / "resumed", cache_dir, pinned, on_step=interrupt_at_3)
    assert caught.value.exit_code == 128 + signal.SIGTERM
    assert (tmp_path / "resumed" / "checkpoints" / "step_4").is_dir()
    resumed, result = train_in_process(
        tmp_path / "resumed", cache_dir, pinned,
        on_step=lambda state, idx: seen_resumed.append((state.step, idx.tolist())),
    )
    assert seen_resumed == seen_straight  # the same batches, in the same order, each seen once
    assert resumed.state.step == straight.state.step == 6 and result.steps == 6
    assert_same(weights(tmp_path / "resumed" / "final"), weights(tmp_path / "straight" / "final"))
    assert_same(
        weights(tmp_path / "resumed" / "checkpoints" / "step_6"),
        weights(tmp_path / "straight" / "checkpoints" / "step_6"),
    )


@pytest.mark.precision
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_two_identical_runs_reach_the_same_weights(tmp_path, cache_dir, precision):
    """At a size where the CPU's kernels run on several threads (width 128, 32 × 64 tokens per step)."""
    extra = ["model.hidden_size=128", "model.length=64", "training.batch_size=32", "model.dropout=0.0"]
    extra.append(f"training.mixed_precision={require(precision)}")
    for name in ("first", "second"):
        train_in_process(tmp_path / name, cache_dir, *extra, "training.steps=4")
    for folder in ("final", "checkpoints/step_4"):
        assert_same(weights(tmp_path / "first" / folder), weights(tmp_path / "second" / folder))


def test_kill_9_at_any_moment_leaves_a_resumable_run(tmp_path, cache_dir):
    extra = ["training.steps=30", "checkpoint.every=1", "checkpoint.keep_last=2"]
    command = [
        sys.executable,
        "-m",
        "radd_cli",
        "train",
        "--recipe",
        "tiny",
        *overrides(cache_dir, *extra),
        "--run-dir",
        str(tmp_path / "killed"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "killed" / "checkpoints" / "step_5").exists() and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGSTOP)  # frozen mid-run, holding the run folder
    busy = subprocess.run(command, capture_output=True, text=True, timeout=120)  # the same command meanwhile
    process.kill()  # SIGKILL: no handler runs, possibly in the middle of a save
    process.wait()
    assert busy.returncode == 1 and f"is in use by radd train, pid {process.pid}" in busy.stderr, busy.stderr
    assert len(busy.stderr.strip().splitlines()) == 1, busy.stderr
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)  # the stale lock does not block
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "resumed from" in (tmp_path / "killed" / "train.log").read_text()
    train_in_process(tmp_path / "straight", cache_dir, *extra)
    assert_same(weights(tmp_path / "killed" / "final"), weights(tmp_path / "straight" / "final"))


def test_partial_saves_are_ignored_and_removed(tmp_path, cache_dir):
    train_in_process(tmp_path / "run", cache_dir, "training.steps=2")
    partial = tmp_path / "run" / "checkpoints" / ".tmp-step_4"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half a file")
    trainer, result = train_in_process(tmp_path / "run", cache_dir, "training.steps=4")
    assert result.steps == 4 and not partial.exists()
    assert "resumed from" in (tmp_path / "run" / "train.log").read_text()


def test_a_changed_recipe_is_refused_but_more_steps_resume(tmp_path, cache_dir):
    train_in_process(tmp_path / "run", cache_dir, "training.steps=2")
    with pytest.raises(ConfigError, match="different recipe \\(training.lr: 0.001 → 0.002\\).*another run_dir"):
        train_in_process(tmp_path / "run", cache_dir, "training.steps=2", "training.lr=2e-3")
    _, result = train_in_process(tmp_path / "run", cache_dir, "training.steps=3")
    assert result.steps == 3


def test_non_finite_losses_are_skipped_then_stop_the_run(tmp_path, cache_dir, monkeypatch):
    real = LOSSES["lambda_DCE"]
    bad_steps = {3}

    def sometimes_nan(model, x0, schedule, *, generator=None):
        loss = real(model, x0, schedule, generator=generator)
        return loss * float("nan") if sometimes_nan.step in bad_steps else loss

    def track(state, indices):
        sometimes_nan.step = state.step

    monkeypatch.setitem(LOSSES, "lambda_DCE", sometimes_nan)
    trainer, result = train_in_process(tmp_path / "run", cache_dir, on_step=track)
    assert result.skipped_nonfinite == 1 and trainer.state.optimizer_steps == 5 and result.steps == 6
    assert "non-finite" in (tmp_path / "run" / "train.log").read_text()

    bad_steps.update(range(6, 100))
    with pytest.raises(TrainingError, match="3 non-finite losses in a row at step 8.*intact"):
        train_in_process(tmp_path / "run", cache_dir, "training.steps=20", "training.max_nonfinite=3", on_step=track)
    latest = sorted((tmp_path / "run" / "checkpoints").iterdir())[-1]
    assert all(torch.isfinite(t).all() for t in weights(latest).values())


def test_a_finished_run_is_only_trained_again_with_restart_and_nothing_is_lost(tmp_path, cache_dir):
    train_in_process(tmp_path / "run", cache_dir, "training.steps=1")
    shutil.rmtree(tmp_path / "run" / "checkpoints")  # a finished run whose checkpoints are gone
    final = weights(tmp_path / "run" / "final")
    with pytest.raises(ConfigError, match="holds a finished run \\(final/\\) and no checkpoint.*pass restart"):
        train_in_process(tmp_path / "run", cache_dir, "training.steps=1")
    with pytest.raises(ConfigError, match="different recipe \\(tokenizer.vocab_size: 300 → 320\\)"):
        train_in_process(tmp_path / "run", cache_dir, "training.steps=1", "tokenizer.vocab_size=320")
    assert_same(weights(tmp_path / "run" / "final"), final)  # untouched by the refusals
    trainer = Trainer(
        load_recipe("tiny", overrides(cache_dir, "training.steps=1", "tokenizer.vocab_size=320")),
        tmp_path / "run",
        restart=True,
    )
    result = trainer.run()
    assert load(result.final_dir, with_tokenizer=False).model.vocab_size == 320  # the tokenizer was trained again
    [aside] = (tmp_path / "run").glob("replaced-*")
    assert_same(weights(aside / "final"), final) and (aside / "recipe.json").is_file()


def test_a_folder_radd_did_not_make_is_refused_and_left_alone(tmp_path, cache_dir):
    user = tmp_path / "user" / "final"
    user.mkdir(parents=True)
    (user / "important.txt").write_text("x")
    for folder in (tmp_path / "user", tmp_path / "user" / "final"):
        with pytest.raises(ConfigError, match="is not empty and is not a radd run folder"):
            train_in_process(folder, cache_dir, "training.steps=1")
    assert (user / "important.txt").read_text() == "x" and sorted(p.name for p in user.iterdir()) == ["important.txt"]
    (tmp_path / "empty").mkdir()
    assert train_in_process(tmp_path / "empty", cache_dir, "training.steps=1")[1].steps == 1


def test_a_single_text_file_is_split_by_paragraph(tmp_path, cache_dir):
    corpus = tmp_path / "notes.txt"
    corpus.write_text("\n\n".join(f"Paragraph {i}: the cat sat on the mat and looked at the dog." for i in range(60)))
    _, result = train_in_process(
        tmp_path / "run", cache_dir, f"data.train={corpus}", f"data.valid={corpus}", "training.steps=2"
    )
    assert result.steps == 2 and math.isfinite(result.valid_loss)


SYNC_SCRIPT = """
import sys, torch
from radd_cli.training.recipe import load_recipe
from radd_cli.training.trainer import Trainer
trainer = Trainer(load_recipe("tiny", sys.argv[2:]), sys.argv[1])
trainer.run()
torch.save({"params": [p.detach().cpu() for p in trainer.learner.model.parameters()],
            "lr": trainer.learner.lr, "optimizer_steps": trainer.state.optimizer_steps},
           f"{sys.argv[1]}/params_rank{trainer.runtime.rank}.pt")
"""


def test_two_gloo_processes_stay_in_sync(tmp_path, cache_dir):
    script = tmp_path / "train_script.py"
    script.write_text(SYNC_SCRIPT)
    run_dir = tmp_path / "ddp"
    run_two_processes(str(script), str(run_dir), *overrides(cache_dir, "training.steps=4"))
    rank0, rank1 = (torch.load(run_dir / f"params_rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(a, b) for a, b in zip(rank0["params"], rank1["params"]))
    exported = load(run_dir / "final", with_tokenizer=False).model  # EMA weights moved away from the zero-initialised head
    assert rank0["params"][-2].abs().sum() > 0 and exported.output_layer.linear.weight.abs().sum() > 0
    # one scheduler step per optimizer step, as with one process (batch_size is the global batch)
    recipe = load_recipe("tiny", overrides(cache_dir, "training.steps=4"))
    expected = recipe.training.lr * learning_rate_factor(recipe.training, 4)
    assert rank0["optimizer_steps"] == rank1["optimizer_steps"] == 4
    assert rank0["lr"] == rank1["lr"] == pytest.approx(expected)


def markov_corpus(path: Path, count: int, length: int, transition: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    stationary = np.full(len(transition), 1 / len(transition))  # doubly stochastic: uniform
    symbols = "abc"
    with open(path, "w") as handle:
        for _ in range(count):
            state = rng.choice(len(transition), p=stationary)
            chain = [state]
            for _ in range(length - 1):
                state = rng.choice(len(transition), p=transition[state])
                chain.append(state)
            handle.write(json.dumps({"text": " ".join(symbols[s] for s in chain)}) + "\n")


def word_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"<|endoftext|>": 0, "a": 1, "b": 2, "c": 3}, unk_token="<|endoftext|>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    raw.decoder = decoders.WordPiece()  # joins words with spaces
    PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>").save_pretrained(str(folder))


def test_a_known_markov_chain_is_learned_to_its_entropy_rate(tmp_path):
    transition = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    length = 16  # 15 symbols + EOS per document: documents and blocks line up
    corpus = tmp_path / "chain.jsonl"
    markov_corpus(corpus, 3000, length - 1, transition, seed=0)
    word_tokenizer(tmp_path / "tokenizer")
    rate = -(transition[0] * np.log(transition[0])).sum()
    known = (math.log(3) + (length - 2) * rate) / length  # nats per token; EOS is certain
    recipe = load_recipe(
        "tiny",
        [
            f"data.train={corpus}",
            f"data.valid={corpus}",
            f"tokenizer.name={tmp_path / 'tokenizer'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "model.hidden_size=64",
            "model.n_heads=4",
            "model.n_blocks=2",
            f"model.length={length}",
            "model.dropout=0.0",
            "training.batch_size=64",
            "training.steps=400",
            "training.lr=3e-3",
            "training.warmup_steps=20",
            "training.ema=0.99",
            "evaluation.every=0",
            "evaluation.batches=16",
            "evaluation.batch_size=64",
            "evaluation.loss_type=ar_forward",  # exact: a Monte-Carlo bound of 150 blocks is ±0.04 here
            "sampling.every=0",
            "checkpoint.every=1000",
            "logging.every=100",
        ],
    )
    result = Trainer(recipe, tmp_path / "run", show_progress=False).run()
    # The validation documents' own NLL under the chain (150 documents: about 2% off the rate's expectation).
    held_out = [json.loads(line)["text"].split() for i, line in enumerate(corpus.read_text().splitlines()) if i % 20 == 0]
    states = [["abc".index(word) for word in document] for document in held_out]
    exact = sum(math.log(3) - sum(math.log(transition[a, b]) for a, b in zip(s, s[1:])) for s in states)
    exact /= len(states) * length
    # A context-free model cannot beat (15 · log 3) / 16 = 1.03 nats/token; the chain's rate gives 0.63.
    print(f"Markov chain: validation {result.valid_loss:.4f} nats/token (exact), the documents' own {exact:.4f}")
    assert abs(exact - known) < 0.05 * known and abs(result.valid_loss - exact) < 0.03 * exact, (result.valid_loss, exact)


def test_a_corrupt_newest_checkpoint_falls_back_to_the_last_good_one(tmp_path, cache_dir):
    extra = ["checkpoint.every=2", "checkpoint.keep_last=3"]
    train_in_process(tmp_path / "run", cache_dir, "training.steps=6", *extra)
    step_6, step_4 = tmp_path / "run" / "checkpoints" / "step_6", tmp_path / "run" / "checkpoints" / "step_4"
    data = (step_6 / "model.safetensors").read_bytes()
    (step_6 / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated
    (step_4 / "custom_checkpoint_0.pkl").write_bytes(b"")  # empty
    _, result = train_in_process(tmp_path / "run", cache_dir, "training.steps=8", *extra)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "skipped step_6, which does not load" in log and "skipped step_4" in log and "resumed from" in log
    for name in ("unreadable-step_6", "unreadable-step_4"):  # kept aside with the reason, never deleted
        assert (tmp_path / "run" / "checkpoints" / name / "WHY.txt").is_file()
    assert len((tmp_path / "run" / "checkpoints" / "unreadable-step_6" / "model.safetensors").read_bytes()) == len(
        data
    ) // 2
    train_in_process(tmp_path / "straight", cache_dir, "training.steps=8", *extra)
    assert result.steps == 8
    assert_same(weights(tmp_path / "run" / "final"), weights(tmp_path / "straight" / "final"))


def test_when_no_checkpoint_loads_the_error_is_one_line(tmp_path, cache_dir, monkeypatch):
    train_in_process(tmp_path / "run", cache_dir, "training.steps=2")
    for checkpoint in (tmp_path / "run" / "checkpoints").iterdir():
        for file in checkpoint.iterdir():
            file.unlink()  # empty step_N folders
    command = ["train", *overrides(cache_dir, "training.steps=4"), "--run-dir", str(tmp_path / "run")]
    result = runner.invoke(app, command)
    *notices, error = result.output.strip().splitlines()
    assert result.exit_code == 1 and error.startswith("Error: no checkpoint in") and "--restart" in error
    assert [line.split(",")[0] for line in notices] == ["skipped step_2"], result.output
    monkeypatch.setenv("RADD_DEBUG", "1")  # the real error shows, not "Aborted." (step_2 is set aside by now)
    assert "holds a finished run (final/) and no checkpoint" in str(runner.invoke(app, command).exception)


def test_a_failed_resume_does_not_rewrite_the_recipe(tmp_path, cache_dir):
    train_in_process(tmp_path / "run", cache_dir, "training.steps=2")
    (tmp_path / "run" / "recipe.json").unlink()
    with pytest.raises(ConfigError, match="step_2 was trained with a different recipe \\(model.n_blocks: 2 → 1\\)"):
        train_in_process(tmp_path / "run", cache_dir, "training.steps=3", "model.n_blocks=1")
    for checkpoint in (tmp_path / "run" / "checkpoints").iterdir():
        (checkpoint / "recipe.json").unlink()  # checkpoints written before checkpoints kept their recipe
    with pytest.raises(ConfigError, match="holds a network of another shape.*pass restart"):
        train_in_process(tmp_path / "run", cache_dir, "training.steps=3", "model.n_blocks=1")
    assert not (tmp_path / "run" / "recipe.json").exists()  # nothing was written by the failed attempts
    _, result = train_in_process(tmp_path / "run", cache_dir, "training.steps=3")  # the original command resumes
    assert result.steps == 3 and json.loads((tmp_path / "run" / "recipe.json").read_text())["training"]["steps"] == 3


def test_any_damaged_file_of_the_newest_checkpoint_falls_back_to_an_older_one(tmp_path, cache_dir):
    """Not only the weights: accelerate only logs random states it cannot read, and a damaged recipe record
    stopped the resume; both now make their checkpoint unreadable, and the run resumes from the one before."""
    extra = ["checkpoint.every=2", "checkpoint.keep_last=3"]
    train_in_process(tmp_path / "run", cache_dir, "training.steps=6", *extra)
    checkpoints = tmp_path / "run" / "checkpoints"
    (checkpoints / "step_6" / "random_states_0.pkl").write_bytes(b"\x80\x04garbage")
    (checkpoints / "step_4" / "recipe.json").write_text('{"model": {"hidden_size"')  # cut short
    _, result = train_in_process(tmp_path / "run", cache_dir, "training.steps=8", *extra)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "skipped step_6, which does not load" in log and "skipped step_4, which does not load" in log, log
    assert f"resumed from {checkpoints / 'step_2'}" in log, log
    assert "recipe.json cannot be read" in (checkpoints / "unreadable-step_4" / "WHY.txt").read_text()
    train_in_process(tmp_path / "straight", cache_dir, "training.steps=8", *extra)
    assert result.steps == 8
    assert_same(weights(tmp_path / "run" / "final"), weights(tmp_path / "straight" / "final"))


def test_a_failed_start_in_a_new_folder_leaves_no_folder_behind(tmp_path, cache_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RaddError):
        train_in_process(tmp_path / "run", cache_dir, f"training.init_from={tmp_path / 'empty'}")
    assert not (tmp_path / "run").exists()


def test_a_missing_tracker_package_stops_training_before_it_starts(tmp_path, cache_dir, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match="logging.trackers: wandb is not installed"):
        train_in_process(tmp_path / "run", cache_dir, 'logging.trackers=["wandb"]')
    assert not (tmp_path / "run").exists()
