"""Model folders: radd's layout round trip, the published layout (folder, Hub cache), and clear errors
for files that are missing, mistyped or do not match the network."""

import json

import pytest
import torch
from safetensors.torch import save_file

from radd_cli.core.model import ModelConfig
from radd_cli.errors import CheckpointError
from radd_cli.io.pretrained import load, save
from tests.conftest import TINY


def test_the_attention_backend_is_a_load_time_choice_not_part_of_the_files(tmp_path, tiny_model):
    save(tiny_model, tmp_path / "model")
    assert "attention" not in json.loads((tmp_path / "model" / "config.json").read_text())["model"]
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    config["model"]["attention"] = "flash"  # written by an older version: ignored on load
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    assert load(tmp_path / "model", with_tokenizer=False).model.config.attention == "sdpa"


def test_save_and_load_round_trip_exactly(tmp_path, tiny_model):
    save(tiny_model, tmp_path / "model", noise={"type": "geometric", "sigma_min": 1e-4, "sigma_max": 20.0})
    bundle = load(tmp_path / "model", with_tokenizer=False)
    loaded = bundle.model
    assert loaded.config == tiny_model.config
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert bundle.noise["type"] == "geometric" and bundle.schedule.name == "geometric"


def published_config(config: ModelConfig) -> dict:
    """A config.json in the published layout: the whole training config tree."""
    return {
        "ngpus": 8,
        "tokens": config.vocab_size,
        "training": {"batch_size": 512, "n_iters": 400001, "ema": 0.9999, "loss_type": "t_DCE"},
        "data": {"train": "openwebtext", "valid": "wikitext103", "cache_dir": "data"},
        "noise": {"type": "loglinear", "sigma_min": 1e-4, "sigma_max": 20},
        "sampling": {"predictor": "analytic", "steps": 128},
        "model": {
            "name": "small",
            "type": "ddit",
            "hidden_size": config.hidden_size,
            "cond_dim": 128,
            "length": config.length,
            "n_blocks": config.n_blocks,
            "n_heads": config.n_heads,
            "scale_by_sigma": False,
            "dropout": 0.1,
            "dtype": "float16",
            "use_checkpoint": False,
        },
        "optim": {"lr": 3e-4, "warmup": 2500, "grad_clip": 1.0},
    }


@pytest.mark.parametrize("weights_file", ["model.safetensors", "pytorch_model.bin"])
def test_published_layout_loads_with_identical_outputs(tmp_path, tiny_model, weights_file):
    (tmp_path / "config.json").write_text(json.dumps(published_config(TINY)))
    state = tiny_model.state_dict()
    if weights_file.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / weights_file)
    else:
        torch.save(state, tmp_path / weights_file)
    bundle = load(tmp_path, with_tokenizer=False)
    loaded = bundle.model.eval()
    tokens = torch.randint(0, TINY.vocab_size + 1, (2, TINY.length))
    assert torch.equal(loaded(tokens), tiny_model(tokens))
    assert bundle.tokenizer_source == "gpt2" and bundle.noise["type"] == "loglinear"


def test_published_weights_with_a_wrong_shape_are_a_one_line_error(tmp_path, tiny_model):
    config = published_config(TINY)
    config["model"]["hidden_size"] = 64
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="shape mismatches.*vocab_embed.embedding \\(17, 32\\) vs \\(17, 64\\)"):
        load(tmp_path, with_tokenizer=False).model


def test_hub_repo_id_is_read_from_the_hub_cache(tmp_path, tiny_model, monkeypatch):
    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--someone--radd-tiny" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    (snapshot / "config.json").write_text(json.dumps(published_config(TINY)))
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, snapshot / "model.safetensors")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    loaded = load("someone/radd-tiny", with_tokenizer=False).model
    assert torch.equal(loaded.vocab_embed.embedding, tiny_model.vocab_embed.embedding)
    with pytest.raises(CheckpointError, match="cannot get someone/missing from the Hugging Face Hub.*--local-dir"):
        load("someone/missing", with_tokenizer=False).model


def test_bad_model_paths_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such folder"):
        load(tmp_path / "nowhere", with_tokenizer=False).model
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        load(tmp_path / "file.txt", with_tokenizer=False).model
    with pytest.raises(CheckpointError, match="not a model folder"):
        load(tmp_path, with_tokenizer=False).model
    (tmp_path / "config.json").write_text('{"hello": 1}')
    with pytest.raises(CheckpointError, match="unknown layout"):
        load(tmp_path, with_tokenizer=False).model
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot be read as JSON"):
        load(tmp_path, with_tokenizer=False).model
    (tmp_path / "config.json").write_text(json.dumps(published_config(TINY)))
    with pytest.raises(CheckpointError, match="no weights"):
        load(tmp_path, with_tokenizer=False).model
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load(tmp_path, with_tokenizer=False).model


@pytest.mark.parametrize(
    "change, message",
    [
        ({"vocab_size": "2048"}, "vocab_size: expected int, got str '2048'"),
        ({"n_heads": 4.0}, "n_heads: expected int, got float 4.0"),
        ({"length": None}, "length: expected int"),
        ({"hidden_size": 0}, "hidden_size: must be at least 1"),
    ],
)
def test_mistyped_model_configs_are_one_line_errors(tmp_path, tiny_model, change, message):
    save(tiny_model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model"].update(change)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        load(tmp_path, with_tokenizer=False)


def test_a_config_without_length_or_with_a_bad_noise_section_is_refused(tmp_path, tiny_model):
    save(tiny_model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["model"]["length"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="the model config lacks length"):
        load(tmp_path, with_tokenizer=False)
    save(tiny_model, tmp_path, noise={"type": "loglinear", "eps": "small"})
    with pytest.raises(CheckpointError, match="the noise config is invalid.*eps: expected float"):
        load(tmp_path, with_tokenizer=False)
    save(tiny_model, tmp_path, noise={"type": ["loglinear"]})
    with pytest.raises(CheckpointError, match="unknown noise schedule"):
        load(tmp_path, with_tokenizer=False)


def test_load_returns_the_tokenizer_and_checks_it_matches(tiny_checkpoint):
    bundle = load(tiny_checkpoint)
    assert bundle.tokenizer.vocab_size == bundle.model.vocab_size == 300
    assert bundle.tokenizer_source == str(tiny_checkpoint) and bundle.source == str(tiny_checkpoint)
    assert bundle.schedule.to_config() == {"type": "loglinear", "eps": 1e-3}
