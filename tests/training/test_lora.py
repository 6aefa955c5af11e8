"""LoRA fine-tuning (training.lora): only the adapters train and are checkpointed, a resumed run equals one that
ran through, final/ holds the merged model (or the adapters alone, which radd and peft both read), and the recipe
keys are checked before any work."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from radd_cli.core.scoring import unwrap
from radd_cli.errors import ConfigError
from radd_cli.io.pretrained import load
from radd_cli.training import lora as lora_lib
from radd_cli.training.recipe import load_recipe
from radd_cli.training.trainer import Trainer
from tests.io.test_finetune import recipe_for

pytest.importorskip("peft", reason="the lora extra: pip install 'radd[lora]'")

LORA = ["training.lora.rank=4", "training.lora.alpha=8", "training.lr_schedule=constant", "training.lr=1e-2"]


def lora_recipe(checkpoint, cache, *extra):
    return recipe_for(checkpoint, cache, f"training.init_from={checkpoint}", *LORA, *extra)


@pytest.fixture(scope="module")
def through(tmp_path_factory, tiny_checkpoint):
    """A LoRA run of 6 steps from the tiny checkpoint, its Trainer kept."""
    root = tmp_path_factory.mktemp("lora")
    trainer = Trainer(lora_recipe(tiny_checkpoint, root / "cache", "training.steps=6"), root / "through")
    trainer.run()
    return root, trainer


def test_only_the_adapters_train_and_are_checkpointed(through, tiny_checkpoint):
    root, trainer = through
    base = load(tiny_checkpoint).model.state_dict()
    model = unwrap(trainer.learner.model)
    trained = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trained and all(".lora_A." in name or ".lora_B." in name for name in trained)
    for name, value in lora_lib.base_state_dict(model).items():  # the frozen network is the one it started from
        assert torch.equal(value, base[name]), name
    assert sum(len(state) for state in trainer.learner.optimizer.state.values()) == 3 * len(trained)  # step, m, v
    saved = load_file(root / "through" / "checkpoints" / "step_6" / "model.safetensors")
    assert set(saved) == trained | {"rotary_emb.inv_freq"}  # and the buffer of rotary angles
    assert all(not torch.equal(saved[name], torch.zeros_like(saved[name])) for name in trained)  # B moved from 0


def test_every_adapter_is_on_the_networks_path(tiny_model):
    """Each adapter changes the log-probs: none sits on a layer that the forward pass reads past (the output
    layer's projection, computed from its weight in RADD.logits, took no adapter before)."""
    from radd_cli.training.recipe import LoraSection

    lora = LoraSection(rank=2, alpha=2.0, targets=tuple(lora_lib.LoraTarget))
    model = lora_lib.add_adapters(tiny_model, lora)
    adapters = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert {name.split(".lora_")[0] for name in adapters} == {
        *(f"blocks.{i}.{t}" for i in range(2) for t in lora_lib.LINEAR_SHAPES),
        "output_layer.linear",
    }
    with torch.no_grad():  # B = 0 would leave A without a gradient
        for name, parameter in adapters.items():
            if ".lora_B." in name:
                parameter.normal_(generator=torch.Generator().manual_seed(0))
    tokens = torch.randint(0, model.vocab_size + 1, (3, model.config.length), generator=torch.Generator().manual_seed(1))
    model(tokens).exp().mul(torch.linspace(-1, 1, model.vocab_size)).sum().backward()
    assert [name for name, p in adapters.items() if p.grad is None or not p.grad.abs().sum()] == []


def test_a_resumed_lora_run_equals_one_that_ran_through(through, tiny_checkpoint):
    root, _ = through
    Trainer(lora_recipe(tiny_checkpoint, root / "cache", "training.steps=4"), root / "stopped").run()
    Trainer(lora_recipe(tiny_checkpoint, root / "cache", "training.steps=6"), root / "stopped").run()
    ours = load_file(root / "stopped" / "final" / "model.safetensors")
    theirs = load_file(root / "through" / "final" / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


def test_final_holds_the_merged_model_by_default(through):
    root, trainer = through
    merged = load(root / "through" / "final").model.eval()
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, merged.vocab_size + 1, (4, merged.config.length), generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(merged(tokens), trainer.learner.ema_model()(tokens), rtol=0, atol=1e-5)
    assert "with LoRA adapters of rank 4" in (root / "through" / "train.log").read_text()


def test_the_adapter_alone_on_request_loads_in_radd_and_in_peft(through, tiny_checkpoint):
    from peft import PeftModel

    root, _ = through
    Trainer(
        lora_recipe(tiny_checkpoint, root / "cache", "training.steps=6", "training.lora.final=adapter"), root / "alone"
    ).run()
    final = root / "alone" / "final"
    assert {path.name for path in final.iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}
    from_adapter = load(final)  # the base it names, with the adapters merged in
    merged = load(root / "through" / "final").model  # the same run, merged by the trainer
    for key, value in merged.state_dict().items():
        torch.testing.assert_close(from_adapter.model.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)
    assert "LoRA rank 4" in from_adapter.source
    wrapped = PeftModel.from_pretrained(load(tiny_checkpoint).model, str(final)).eval()
    tokens = torch.randint(0, merged.vocab_size, (2, merged.config.length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(wrapped(tokens), merged.eval()(tokens), rtol=0, atol=1e-5)


def test_layers_trained_in_full_beside_the_adapters_train_and_travel_with_them(through, tiny_checkpoint):
    """training.lora.full: the embedding and the norms train (and are checkpointed, averaged and exported) with
    the adapters; final/ merged and the adapter folder (peft's modules_to_save) read back as the same model."""
    from peft import PeftModel

    root, _ = through
    full = ["training.steps=6", "training.lora.full=['embedding', 'norms']"]
    trainer = Trainer(lora_recipe(tiny_checkpoint, root / "cache", *full), root / "full")
    trainer.run()
    model, base = unwrap(trainer.learner.model), load(tiny_checkpoint).model.state_dict()
    trained = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    in_full = {name for name in trained if ".lora_" not in name}
    assert in_full == {"vocab_embed.embedding"} | {
        f"{module}.{p}" for module in ("blocks.0.norm1", "blocks.0.norm2", "blocks.1.norm1", "blocks.1.norm2",
                                       "output_layer.norm_final") for p in ("weight", "bias")
    }
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == lora_lib.trained_parameter_count(
        model.config, trainer.recipe.training.lora
    )
    saved = load_file(root / "full" / "checkpoints" / "step_6" / "model.safetensors")
    assert set(saved) == trained | {"rotary_emb.inv_freq"}
    merged = load(root / "full" / "final").model.eval()
    assert not torch.equal(merged.state_dict()["vocab_embed.embedding"], base["vocab_embed.embedding"])
    Trainer(lora_recipe(tiny_checkpoint, root / "cache", *full, "training.lora.final=adapter"), root / "full-alone").run()
    alone = root / "full-alone" / "final"
    for key, value in merged.state_dict().items():
        torch.testing.assert_close(load(alone).model.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)
    wrapped = PeftModel.from_pretrained(load(tiny_checkpoint).model, str(alone)).eval()
    tokens = torch.randint(0, merged.vocab_size, (2, merged.config.length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(wrapped(tokens), merged(tokens), rtol=0, atol=1e-5)


def test_lora_settings_are_checked_with_the_recipe(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="lora.final: 'adapter' needs training.init_from"):
        load_recipe("sort", ["training.lora.rank=8", "training.lora.final=adapter"])
    with pytest.raises(ConfigError, match="3 problems") as caught:
        load_recipe("sort", ["training.lora.rank=-1", "training.lora.targets=['output_layer']", "training.lora.r=2"])
    assert [problem.field for problem in caught.value.problems] == [
        "training.lora.r",
        "training.lora.rank",
        "training.lora.targets",
    ]
    monkeypatch.setitem(__import__("sys").modules, "peft", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=r"pip install 'radd\[lora\]'"):
        load_recipe("sort", ["training.lora.rank=8"])
    assert not load_recipe("sort").training.lora.enabled  # without LoRA, peft is not needed


def test_the_adapters_are_a_fraction_of_the_network():
    from radd_cli.core.model import ModelConfig
    from radd_cli.training.memory import parameter_count, training_memory

    config = ModelConfig.of(load_recipe("sort").model, 300)
    adapters = lora_lib.adapter_parameter_count(config, 8, tuple(lora_lib.LoraTarget))
    assert adapters == 2 * 8 * (4 + 2 + 5 + 5) * 64 + 8 * (64 + 301)  # 2 blocks and the output layer, r (in + out) each
    full, lora = training_memory(config, 64), training_memory(config, 64, trained=adapters)
    assert lora.trained == adapters and full.trained == parameter_count(config)
    assert lora.optimizer == 2 * 4 * adapters and lora.gradients == 4 * adapters
    assert lora.weights == full.weights + 4 * adapters and lora.activations == full.activations
