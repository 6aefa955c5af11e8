"""Sharded training (FSDP2) on two CPU processes over gloo: the same run as data-parallel training, checkpoints
of shards that survive kill -9 in the middle of a save, and a final/ that loads like any other."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from radd_cli.io.pretrained import load
from tests.cli_helpers import TINY_RUN, run_two_processes

pytestmark = pytest.mark.slow  # each run starts two processes (about 10 s on 2 cores)

OVERRIDES = [
    *TINY_RUN,
    "training.steps=4",
    "training.warmup_steps=2",
    "training.lr=1e-3",
    "training.mixed_precision=fp32",
    "evaluation.batches=2",
    "evaluation.batch_size=8",
    "sampling.num_samples=2",
    "sampling.steps=8",
    "checkpoint.every=2",
    "logging.every=1",
]

# Trains in the run folder argv[1] with the overrides argv[2:]. With RADD_TEST_KILL_AT_SAVE=N the main process
# SIGKILLs itself while saving step N: every process has written its shards, the checkpoint is not yet renamed.
SCRIPT = """
import os, signal, sys
from radd_cli.training.recipe import load_recipe
from radd_cli.training.run_folder import RunFolder
from radd_cli.training.trainer import Trainer

kill_at = int(os.environ.get("RADD_TEST_KILL_AT_SAVE", "0"))
publish = RunFolder._publish

def publish_or_die(self, temporary, final, recipe, keep_last):
    if final.name == f"step_{kill_at}":
        os.kill(os.getpid(), signal.SIGKILL)
    publish(self, temporary, final, recipe, keep_last)

RunFolder._publish = publish_or_die
Trainer(load_recipe("tiny", sys.argv[2:]), sys.argv[1], show_progress=False).run()
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same 4-step run on two processes, data-parallel and sharded."""
    root = tmp_path_factory.mktemp("sharding")
    script = root / "train.py"
    script.write_text(SCRIPT)
    common = [*OVERRIDES, f"data.cache_dir={root / 'cache'}"]
    for offset, sharding in ((2000, "none"), (2100, "fsdp")):
        run_two_processes(str(script), str(root / sharding), *common, f"training.sharding={sharding}", port_offset=offset)
    return root


def metrics(run: Path, key: str) -> list[float]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [line[key] for line in lines if key in line]


def test_sharded_training_equals_data_parallel_training(runs):
    sharded, replicated = runs / "fsdp", runs / "none"
    assert len(metrics(sharded, "train/nats_per_token")) == 4
    assert metrics(sharded, "train/nats_per_token") == pytest.approx(metrics(replicated, "train/nats_per_token"), rel=1e-6)
    assert metrics(sharded, "valid/nats_per_token") == pytest.approx(metrics(replicated, "valid/nats_per_token"), rel=1e-6)
    ours, theirs = load_file(sharded / "final" / "model.safetensors"), load_file(replicated / "final" / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for key in ours:  # Adam divides by tiny second moments: last-bit differences of the reductions grow to ~1e-5
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-4, atol=5e-5, msg=key)
    assert ours["output_layer.linear.weight"].abs().sum() > 0  # the EMA moved away from the zero initialisation


def test_sharded_checkpoints_hold_each_process_shards_and_final_loads(runs):
    checkpoint = runs / "fsdp" / "checkpoints" / "step_4"
    assert sorted(p.name for p in (checkpoint / "sharded").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert not (checkpoint / "model.safetensors").exists()
    assert (checkpoint / "random_states_0.pkl").is_file() and (checkpoint / "random_states_1.pkl").is_file()
    model = load(runs / "fsdp" / "final", with_tokenizer=False).model
    saved = load_file(runs / "fsdp" / "final" / "model.safetensors")
    assert all(torch.equal(model.state_dict()[key], saved[key]) for key in saved)
    assert model.vocab_size == 300 and load(runs / "fsdp" / "final").tokenizer is not None


def test_kill_9_during_a_sharded_save_then_resume_equals_the_uninterrupted_run(runs, tmp_path):
    script, run = runs / "train.py", tmp_path / "killed"
    common = [*OVERRIDES, f"data.cache_dir={runs / 'cache'}", "training.sharding=fsdp"]
    killed = run_two_processes(
        str(script), str(run), *common, port_offset=2200, check=False, env={"RADD_TEST_KILL_AT_SAVE": "4"}
    )
    assert killed.returncode != 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [".tmp-step_4", "step_2"]  # never renamed
    run_two_processes(str(script), str(run), *common, port_offset=2300)
    assert "resumed from" in (run / "train.log").read_text() and "step_2 (step 2)" in (run / "train.log").read_text()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_2", "step_4"]
    resumed, straight = load_file(run / "final" / "model.safetensors"), load_file(runs / "fsdp" / "final" / "model.safetensors")
    assert all(torch.equal(resumed[key], straight[key]) for key in straight)


LORA = ["training.lora.rank=4", "training.lora.alpha=8"]


@pytest.fixture(scope="module")
def lora_runs(runs):
    """LoRA on two processes, data-parallel and sharded, from the seeded network (no init_from)."""
    pytest.importorskip("peft", reason="the lora extra: pip install 'radd[lora]'")
    common = [*OVERRIDES, f"data.cache_dir={runs / 'cache'}", *LORA]
    for offset, sharding in ((2400, "none"), (2500, "fsdp")):
        folder, setting = str(runs / f"lora-{sharding}"), f"training.sharding={sharding}"
        run_two_processes(str(runs / "train.py"), folder, *common, setting, port_offset=offset)
    return runs


def test_sharded_lora_equals_data_parallel_lora_and_checkpoints_the_adapters_alone(lora_runs):
    sharded, replicated = lora_runs / "lora-fsdp", lora_runs / "lora-none"
    losses = metrics(sharded, "train/nats_per_token")
    assert losses == pytest.approx(metrics(replicated, "train/nats_per_token"), rel=1e-6)
    ours = load_file(sharded / "final" / "model.safetensors")
    theirs = load_file(replicated / "final" / "model.safetensors")
    assert ours.keys() == theirs.keys() and not any("lora" in key for key in ours)  # merged into a plain model
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-4, atol=5e-5, msg=key)
    from torch.distributed.checkpoint import FileSystemReader

    saved = FileSystemReader(str(sharded / "checkpoints" / "step_4" / "sharded")).read_metadata().state_dict_metadata
    weights = [key for key in saved if key.startswith("model.") and key != "model.rotary_emb.inv_freq"]  # a buffer
    assert weights and all(".lora_A." in key or ".lora_B." in key for key in weights)
    assert set(load_file(replicated / "checkpoints" / "step_4" / "model.safetensors")) == {
        key.removeprefix("model.") for key in [*weights, "model.rotary_emb.inv_freq"]
    }


def test_a_killed_sharded_lora_run_resumes_to_the_same_weights(lora_runs, tmp_path):
    script, run = lora_runs / "train.py", tmp_path / "killed"
    common = [*OVERRIDES, f"data.cache_dir={lora_runs / 'cache'}", "training.sharding=fsdp", *LORA]
    killed = run_two_processes(
        str(script), str(run), *common, port_offset=2600, check=False, env={"RADD_TEST_KILL_AT_SAVE": "4"}
    )
    assert killed.returncode != 0
    run_two_processes(str(script), str(run), *common, port_offset=2700)
    assert "resumed from" in (run / "train.log").read_text()
    resumed = load_file(run / "final" / "model.safetensors")
    straight = load_file(lora_runs / "lora-fsdp" / "final" / "model.safetensors")
    assert all(torch.equal(resumed[key], straight[key]) for key in straight)
