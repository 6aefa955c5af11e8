"""LoRA fine-tuning through peft (`pip install 'radd[lora]'`; docs/fine-tuning.md).

With `training.lora.rank = r > 0` every linear layer of the blocks named in `training.lora.targets` gets a
rank-r adapter, W x + (alpha / r) · B A x, with A (r, in) and B (out, r) initialised as peft does (B = 0, so
training starts at the base model). Everything else is frozen: only the adapters get gradients, optimizer
state and an EMA, and only they are checkpointed. The base is `training.init_from` (read again on resume),
or the seeded initialisation when there is none.

The output layer takes no adapter: the network projects to the vocabulary with its weight directly
(RADD.logits), past the module's forward, where peft puts the adapter.
"""

from __future__ import annotations

import torch

from radd_cli.core.model import RADD, ModelConfig
from radd_cli.errors import ConfigError
from radd_cli.io import adapters
from radd_cli.validation import Choice, choices_of

ADAPTER = "default"  # peft's name of the one adapter
LINEAR_SHAPES = {  # a block's linear layers: (inputs, outputs) in units of the width d
    "attn_qkv": (1, 3),
    "attn_out": (1, 1),
    "mlp.0": (1, 4),
    "mlp.2": (4, 1),
}
LoraTarget = choices_of("LoraTarget", LINEAR_SHAPES, __name__)


class LoraFinal(Choice):
    """What final/ of a LoRA run holds."""

    merged = "merged"  # the base with the adapters added in: a plain model, in radd's layout
    adapter = "adapter"  # the adapters alone, as peft writes them (adapter_config.json, adapter_model.safetensors)


def require_peft() -> None:
    try:
        import peft  # noqa: F401
    except ImportError:
        raise ConfigError("training.lora needs the peft package: pip install 'radd[lora]'") from None


def adapter_parameter_count(config: ModelConfig, rank: int, targets) -> int:
    """Parameters of the adapters: r · (inputs + outputs) for every target of every block."""
    d = config.hidden_size
    per_block = sum(rank * (fan_in + fan_out) * d for fan_in, fan_out in (LINEAR_SHAPES[t] for t in targets))
    return config.n_blocks * per_block


def add_adapters(model: RADD, lora) -> RADD:
    """Put adapters on `model` in place (the `training.lora` section `lora`); only they stay trainable."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=[str(t) for t in lora.targets]
    )
    return inject_adapter_in_model(config, model, adapter_name=ADAPTER)


def adapter_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' weights under peft's file names (`blocks.0.attn_qkv.lora_A.weight`, ...)."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model, adapter_name=ADAPTER)


def base_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The frozen weights under radd's names (peft's `.base_layer` left out, the adapters dropped)."""
    return {
        key.replace(".base_layer.", "."): value
        for key, value in model.state_dict().items()
        if ".lora_A." not in key and ".lora_B." not in key
    }


def merged_model(model: RADD, lora) -> RADD:
    """A plain RADD whose weights are the base plus the adapters (what final/ holds by default)."""
    weights = adapters.merge(base_state_dict(model), adapter_state_dict(model), lora.alpha / lora.rank)
    plain = RADD(model.config).to(next(model.parameters()).device)
    plain.load_state_dict(weights, strict=True)
    return plain.eval()


def write_adapter(model: RADD, directory, lora, base: str) -> None:
    """final/ as the adapters alone: peft's adapter_config.json and adapter_model.safetensors, naming `base`."""
    from peft import LoraConfig

    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=[str(t) for t in lora.targets],
        base_model_name_or_path=base,
        inference_mode=True,
    )
    adapters.write(directory, config.to_dict(), adapter_state_dict(model))
