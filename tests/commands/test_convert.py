"""`radd convert`: published layouts and training runs in, this project's layout out."""

import json

import pytest
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

from radd_cli.cli import app
from radd_cli.core.model import RADD
from radd_cli.io.pretrained import load, parameter_order
from tests.cli_helpers import assert_clean_error
from tests.conftest import TINY, randomized
from tests.io.test_pretrained import published_config

runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["convert", *map(str, args)])


@pytest.fixture
def training_run(tmp_path, tiny_model):
    """A run folder of the published code: hydra config + checkpoint whose EMA differs from the model."""
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(published_config(TINY)))
    (run_dir / "checkpoints-meta").mkdir()
    state = tiny_model.state_dict()
    ema_model = randomized(RADD(TINY), seed=1)
    shadow = [ema_model.state_dict()[name].clone() for name in parameter_order(state)]
    checkpoint = {
        "model": {f"module.{k}": v for k, v in state.items()},  # saved from a DDP-wrapped model
        "ema": {"decay": 0.9999, "num_updates": 10, "shadow_params": shadow},
        "optimizer": {"state": {}, "param_groups": []},
        "step": 10,
    }
    torch.save(checkpoint, run_dir / "checkpoints-meta" / "checkpoint.pth")
    return run_dir, tiny_model, ema_model


def assert_same_weights(folder, model):
    loaded = load(folder, with_tokenizer=False).model
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_training_run_converts_with_ema_weights_by_default(tmp_path, training_run):
    run_dir, model, ema_model = training_run
    result = run(run_dir, tmp_path / "ema")
    assert result.exit_code == 0, result.output
    assert "EMA weights, step 10" in result.output
    assert_same_weights(tmp_path / "ema", ema_model)
    assert run(run_dir, tmp_path / "raw", "--no-ema").exit_code == 0
    assert_same_weights(tmp_path / "raw", model)


def test_published_folder_converts_and_keeps_its_noise_and_tokenizer(tmp_path, tiny_model):
    source = tmp_path / "published"
    source.mkdir()
    (source / "config.json").write_text(json.dumps(published_config(TINY)))
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, source / "model.safetensors")
    assert run(source, tmp_path / "out").exit_code == 0
    assert_same_weights(tmp_path / "out", tiny_model)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["noise"]["type"] == "loglinear" and config["tokenizer"] == "gpt2"
    assert config["model"]["vocab_size"] == TINY.vocab_size and config["radd_format"] == 1


def test_non_empty_destination_needs_force(tmp_path, training_run):
    run_dir, _, ema_model = training_run
    destination = tmp_path / "taken"
    destination.mkdir()
    (destination / "notes.txt").write_text("keep me")
    assert_clean_error(run(run_dir, destination), "is not empty; pass --force")
    assert run(run_dir, destination, "--force").exit_code == 0
    assert_same_weights(destination, ema_model)
    assert (destination / "notes.txt").read_text() == "keep me"


def test_bad_sources_are_one_line_errors(tmp_path, training_run):
    run_dir, _, _ = training_run
    assert_clean_error(run(tmp_path / "missing", tmp_path / "a"), "no such folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_clean_error(run(empty, tmp_path / "b"), "is not a model folder")
    (empty / "config.json").write_text('{"layers": 3}')
    assert_clean_error(run(empty, tmp_path / "c"), "unknown layout")

    checkpoint_path = run_dir / "checkpoints-meta" / "checkpoint.pth"
    checkpoint = torch.load(checkpoint_path)
    checkpoint["ema"]["shadow_params"] = checkpoint["ema"]["shadow_params"][:-1]
    torch.save(checkpoint, checkpoint_path)
    assert_clean_error(run(run_dir, tmp_path / "d"), "EMA tensors for")
    del checkpoint["ema"]
    torch.save(checkpoint, checkpoint_path)
    assert_clean_error(run(run_dir, tmp_path / "e"), "set --no-ema to use the raw ones")
    checkpoint["model"]["module.vocab_embed.embedding"] = torch.zeros(3, 3)
    torch.save(checkpoint, checkpoint_path)
    assert_clean_error(run(run_dir, tmp_path / "f", "--no-ema"), "shape mismatches")
    del checkpoint["model"]["module.blocks.0.norm1.bias"]
    torch.save(checkpoint, checkpoint_path)
    assert_clean_error(run(run_dir, tmp_path / "f", "--no-ema"), "missing keys blocks.0.norm1.bias")
    checkpoint_path.write_bytes(b"not a pickle")
    assert_clean_error(run(run_dir, tmp_path / "g"), "cannot be read as a torch checkpoint")
    checkpoint_path.unlink()
    assert_clean_error(run(run_dir, tmp_path / "h"), "without checkpoints-meta/checkpoint.pth")
    (run_dir / ".hydra" / "config.yaml").write_text("model: [unclosed")
    assert_clean_error(run(run_dir, tmp_path / "i"), "is not valid YAML")
    assert not (tmp_path / "f").exists() or not any((tmp_path / "f").iterdir())


def test_a_model_goes_to_the_transformers_layout_and_back(tmp_path, tiny_checkpoint):
    result = run(tiny_checkpoint, tmp_path / "hf", "--to", "transformers")
    assert result.exit_code == 0, result.output
    assert "(transformers layout)" in result.output and "trust_remote_code=True" in result.output
    written = {path.name for path in (tmp_path / "hf").iterdir()}
    expected = {"config.json", "model.safetensors", "configuration_radd.py", "modeling_radd.py", "tokenizer.json"}
    assert expected <= written
    assert run(tmp_path / "hf", tmp_path / "back").exit_code == 0  # and back to radd's layout
    original = load(tiny_checkpoint).model
    assert_same_weights(tmp_path / "back", original)
    assert_same_weights(tmp_path / "hf", original)
    assert_clean_error(run(tiny_checkpoint, tmp_path / "hf", "--to", "transformers"), "is not empty; pass --force")
    assert_clean_error(run(tiny_checkpoint, tmp_path / "x", "--to", "onnx"), "'onnx' is not one of", exit_code=2)
