"""LoRA fine-tuning through peft (`pip install 'radd[lora]'`; docs/fine-tuning.md).

With `training.lora.rank = r > 0` every layer named in `training.lora.targets` (the blocks' linear layers
and the output layer's projection to the vocabulary) gets a rank-r adapter, W x + (alpha / r) · B A x, with
A (r, in) and B (out, r) initialised as peft does (B = 0, so training starts at the base model). The layers
named in `training.lora.full` (the embedding, the norms) train in full beside them, as peft's
modules_to_save. Everything else is frozen: only what trains gets gradients, optimizer state and an EMA, and
only it is checkpointed. The base is `training.init_from` (read again on resume), or the seeded
initialisation when there is none.

The output layer's adapter matters: a base's projection to the vocabulary fits its own tasks, and with it
frozen LoRA (and even full training of every weight of the blocks) stalled at twice full fine-tuning's loss
on `sort` (docs/fine-tuning.md). RADD.logits adds that adapter to the projection's weight (projection_weight).
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
OUTPUT = "output"  # the output layer's projection to the vocabulary (d inputs, V + 1 outputs)
MODULES = {**{name: name for name in LINEAR_SHAPES}, OUTPUT: "output_layer.linear"}  # target -> peft's module name
LoraTarget = choices_of("LoraTarget", MODULES, __name__)
FULL_MODULES = {  # what may train in full beside the adapters -> the modules it is (peft's modules_to_save)
    "embedding": ("vocab_embed",),
    "norms": ("norm1", "norm2", "norm_final"),
}
LoraFull = choices_of("LoraFull", FULL_MODULES, __name__)


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
    """Parameters of the adapters: r · (inputs + outputs) for every target of every block, and of the output layer."""
    d = config.hidden_size
    blocks = [LINEAR_SHAPES[t] for t in targets if t in LINEAR_SHAPES]
    count = config.n_blocks * sum(rank * (fan_in + fan_out) * d for fan_in, fan_out in blocks)
    return count + (rank * (d + config.vocab_size + 1) if OUTPUT in targets else 0)


def trained_parameter_count(config: ModelConfig, lora) -> int:
    """Parameters a LoRA run trains: its adapters and the layers it trains in full (`training.lora.full`)."""
    d = config.hidden_size
    full = {"embedding": (config.vocab_size + 1) * d, "norms": (2 * config.n_blocks + 1) * 2 * d}
    return adapter_parameter_count(config, lora.rank, lora.targets) + sum(full[str(f)] for f in lora.full)


def target_modules(lora) -> list[str]:
    return [MODULES[t] for t in lora.targets]


def full_modules(lora) -> list[str]:
    return [module for name in lora.full for module in FULL_MODULES[name]]


def add_adapters(model: RADD, lora) -> RADD:
    """Put adapters on `model` in place (the `training.lora` section `lora`); only they, and the layers named in
    `lora.full`, stay trainable."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=target_modules(lora)
    )
    model = inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    for parameter in full_parameters(model, lora).values():
        parameter.requires_grad_(True)
    return model


def full_parameters(model: torch.nn.Module, lora) -> dict[str, torch.nn.Parameter]:
    """The parameters of the layers that train in full (`lora.full`), by name."""
    modules = tuple(full_modules(lora))
    return {
        name: parameter
        for name, parameter in model.named_parameters()
        if modules and name.rpartition(".")[0].split(".")[-1] in modules
    }


def adapter_state_dict(model: torch.nn.Module, lora=None) -> dict[str, torch.Tensor]:
    """The adapters' weights under peft's file names (`blocks.0.attn_qkv.lora_A.weight`, ...), and those of the
    layers trained in full (`vocab_embed.embedding`, peft's modules_to_save) when `lora` names any."""
    from peft import get_peft_model_state_dict

    weights = get_peft_model_state_dict(model, adapter_name=ADAPTER)
    if lora is not None:
        weights.update({name: parameter.detach() for name, parameter in full_parameters(model, lora).items()})
    return weights


def base_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The frozen weights under radd's names (peft's `.base_layer` left out, the adapters dropped)."""
    return {
        key.replace(".base_layer.", "."): value
        for key, value in model.state_dict().items()
        if ".lora_A." not in key and ".lora_B." not in key
    }


def merged_model(model: RADD, lora) -> RADD:
    """A plain RADD whose weights are the base plus the adapters (what final/ holds by default)."""
    weights = adapters.merge(base_state_dict(model), adapter_state_dict(model, lora), lora.alpha / lora.rank)
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
        target_modules=target_modules(lora),
        modules_to_save=full_modules(lora) or None,
        base_model_name_or_path=base,
        inference_mode=True,
    )
    adapters.write(directory, config.to_dict(), adapter_state_dict(model, lora))
