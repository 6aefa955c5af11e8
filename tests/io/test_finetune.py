"""training.init_from: a run starts from any model radd loads (radd's layout, the published layouts, a Hub id,
a run's final/ or checkpoints/step_N), with a fresh optimizer; other shapes are a one-line error; a
fine-tuning run resumes from its own checkpoints."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from radd_cli.cli import app
from radd_cli.core.model import RADD
from radd_cli.core.scoring import unwrap
from radd_cli.errors import CheckpointError, ConfigError
from radd_cli.io.pretrained import load, parameter_order
from radd_cli.training.recipe import load_recipe
from radd_cli.training.trainer import Trainer
from tests.cli_helpers import assert_clean_error
from tests.conftest import randomized
from tests.io.test_pretrained import published_config

runner = CliRunner()


def recipe_for(checkpoint, cache, *extra):
    """The shape of the tiny checkpoint (d 32, 4 heads, 2 blocks, its own tokenizer of 300 tokens), on
    prompt/response rows written beside the token cache."""
    data = cache.parent / "sft.jsonl"
    if not data.exists():
        animals, things = ("cat", "dog", "fox", "owl"), ("mat", "rug", "log", "box")
        rows = [{"prompt": f"The {a} sat on the", "response": f" {t}."} for a in animals for t in things]
        data.write_text("".join(json.dumps(row) + "\n" for row in rows * 3))
    return load_recipe(
        "tiny",
        [
            "model.hidden_size=32",
            "model.n_heads=4",
            "model.n_blocks=2",
            "model.length=16",
            f"tokenizer.name={checkpoint}",
            f"data.train={data}",
            f"data.valid={data}",
            f"data.cache_dir={cache}",
            "training.batch_size=8",
            "training.steps=4",
            "training.warmup_steps=1",
            "evaluation.batches=1",
            "evaluation.batch_size=8",
            "sampling.num_samples=1",
            "sampling.steps=4",
            "checkpoint.every=2",
            *extra,
        ],
    )


def starting_weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return unwrap(trainer.learner.model).state_dict()


def assert_weights(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(actual[key], value.to(actual[key].dtype)), key


@pytest.fixture
def source_model(tiny_checkpoint):
    return load(tiny_checkpoint, with_tokenizer=False).model


def published_folder(tmp_path, model) -> str:
    folder = tmp_path / "published"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(published_config(model.config)))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    return str(folder)


def published_run(tmp_path, model) -> tuple[str, dict]:
    """A training run of the published code whose EMA weights differ from its raw ones."""
    folder = tmp_path / "published-run"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(published_config(model.config)))
    (folder / "checkpoints-meta").mkdir()
    state = model.state_dict()
    ema = randomized(RADD(model.config), seed=5).state_dict()
    checkpoint = {
        "model": {f"module.{k}": v for k, v in state.items()},
        "ema": {"decay": 0.999, "num_updates": 3, "shadow_params": [ema[n] for n in parameter_order(state)]},
        "step": 3,
    }
    torch.save(checkpoint, folder / "checkpoints-meta" / "checkpoint.pth")
    return str(folder), ema


def hub_cache(tmp_path, model, monkeypatch) -> str:
    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--someone--radd-tiny" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    shutil.copy(published_folder(tmp_path, model) + "/config.json", snapshot / "config.json")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, snapshot / "model.safetensors")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return "someone/radd-tiny"


@pytest.mark.parametrize("layout", ["radd", "published", "published_run", "hub"])
def test_a_run_starts_from_the_weights_of_every_layout(tmp_path, tiny_checkpoint, source_model, layout, monkeypatch):
    expected = source_model.state_dict()
    if layout == "radd":
        source = str(tiny_checkpoint)
    elif layout == "published":
        source = published_folder(tmp_path, source_model)
    elif layout == "published_run":
        source, expected = published_run(tmp_path, source_model)  # the EMA weights, as for sampling
    else:
        source = hub_cache(tmp_path, source_model, monkeypatch)
    trainer = Trainer(recipe_for(tiny_checkpoint, tmp_path / "cache", f"training.init_from={source}"), tmp_path / "run")
    try:
        assert_weights(starting_weights(trainer), expected)
        ema = dict(zip([n for n, _ in trainer.learner.model.named_parameters()], trainer.learner.ema.shadow_params))
        assert all(torch.equal(ema[n], expected[n]) for n in ema)  # the EMA starts there too
        assert trainer.learner.state.optimizer_steps == 0 and not trainer.learner.optimizer.state  # fresh
    finally:
        trainer.folder.unlock()


def test_a_run_starts_from_a_radd_run_and_its_checkpoint_and_resumes_itself(tmp_path, tiny_checkpoint):
    cache = tmp_path / "cache"
    base = Trainer(recipe_for(tiny_checkpoint, cache), tmp_path / "base")
    base.run()
    final = load_file(tmp_path / "base" / "final" / "model.safetensors")
    step_ema = final  # the last checkpoint (step 4) holds the EMA weights final/ was exported from
    for source, expected in (
        (tmp_path / "base" / "final", final),
        (tmp_path / "base" / "checkpoints" / "step_4", step_ema),
    ):
        trainer = Trainer(recipe_for(tiny_checkpoint, cache, f"training.init_from={source}"), tmp_path / "probe")
        assert_weights(starting_weights(trainer), expected)
        trainer.folder.unlock()
        shutil.rmtree(tmp_path / "probe")

    # a fine-tuning run stopped after step 4 and resumed to step 6 reaches the weights of one that ran through,
    # also when the model it started from is gone by then (the checkpoint wins)
    source = shutil.copytree(tmp_path / "base" / "final", tmp_path / "start")
    tune = ["training.steps=6", "training.lr_schedule=constant", f"training.init_from={source}"]
    Trainer(recipe_for(tiny_checkpoint, cache, *tune), tmp_path / "through").run()
    Trainer(recipe_for(tiny_checkpoint, cache, *tune[1:], "training.steps=4"), tmp_path / "stopped").run()
    shutil.rmtree(source)
    Trainer(recipe_for(tiny_checkpoint, cache, *tune), tmp_path / "stopped").run()
    assert_weights(
        load_file(tmp_path / "stopped" / "final" / "model.safetensors"),
        load_file(tmp_path / "through" / "final" / "model.safetensors"),
    )
    assert "fine-tuning" in (tmp_path / "through" / "train.log").read_text()


def test_other_shapes_are_an_error_naming_the_keys_to_change(tmp_path, tiny_checkpoint):
    recipe = recipe_for(
        tiny_checkpoint, tmp_path / "cache", f"training.init_from={tiny_checkpoint}", "model.n_blocks=3"
    )
    with pytest.raises(
        ConfigError,
        match=f"training.init_from {tiny_checkpoint} is a network with .*n_blocks 2.*set model.n_blocks=2 to fine-tune",
    ):
        Trainer(recipe, tmp_path / "run")
    result = runner.invoke(
        app,
        [
            "train",
            f"tokenizer.name={tiny_checkpoint}",
            "data.train=task:sort",
            f"data.cache_dir={tmp_path / 'cache'}",
            "model.hidden_size=64",
            f"training.init_from={tiny_checkpoint}",
            "--run-dir",
            str(tmp_path / "cli"),
        ],
    )
    assert_clean_error(result, "set model.hidden_size=32 model.n_blocks=2 to fine-tune it", exit_code=2)
    assert not (tmp_path / "cli" / "checkpoints").exists()


def test_a_different_vocabulary_points_at_the_tokenizer_to_use(tmp_path, tiny_checkpoint):
    recipe = load_recipe(
        "sort",
        [
            f"data.cache_dir={tmp_path / 'cache'}",
            "model.hidden_size=32",
            "model.n_blocks=2",
            f"training.init_from={tiny_checkpoint}",
        ],
    )
    with pytest.raises(
        ConfigError, match=f"vocab_size 300;.*vocab_size 2\\d\\d: set tokenizer.name={tiny_checkpoint} to"
    ):
        Trainer(recipe, tmp_path / "run")
    with pytest.raises(CheckpointError, match="training.init_from: .*nowhere: no such folder"):
        Trainer(
            load_recipe("sort", [f"data.cache_dir={tmp_path / 'cache'}", f"training.init_from={tmp_path / 'nowhere'}"]),
            tmp_path / "r2",
        )
