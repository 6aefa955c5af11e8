"""LoRA adapter folders, as peft writes them (docs/model-files.md): `adapter_config.json` (rank, alpha, targets
and `base_model_name_or_path`, the model the adapters apply to) and `adapter_model.safetensors` (the A and B
matrices under `base_model.model.<module>.lora_A.weight`, ...). `radd train` writes one as final/ when a LoRA
run asks for the adapter alone (`training.lora.final = "adapter"`); radd reads it back as its base with the
adapters merged in, without needing peft.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from radd_cli.errors import CheckpointError
from radd_cli.files import write_atomically, write_text

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."  # peft's names of a model's modules inside its wrapper
A, B = ".lora_A.weight", ".lora_B.weight"


def is_adapter_folder(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file() and not (folder / "config.json").is_file()


def merge(base: dict[str, torch.Tensor], adapter: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """The base weights with every adapter added in: W + scaling · B A (computed in float32), and any layer
    trained in full beside the adapters (peft's modules_to_save, under the base's names) in place of the base's."""
    merged = dict(base)
    for key, value in adapter.items():
        if not key.endswith((A, B)):
            if key not in base or base[key].shape != value.shape:
                raise CheckpointError(f"the adapter folder's {key} has no weight of its shape in the base model")
            merged[key] = value.to(base[key].dtype)
        if not key.endswith(A):
            continue
        module = key[: -len(A)]
        weight = base.get(f"{module}.weight")
        if weight is None or f"{module}{B}" not in adapter:
            raise CheckpointError(f"the adapter for {module} has no matching weight in the base model, or no B matrix")
        delta = adapter[f"{module}{B}"].float() @ adapter[key].float()  # (out, r) @ (r, in)
        if delta.shape != weight.shape:
            raise CheckpointError(
                f"the adapter for {module} is {tuple(delta.shape)}, the base weight {tuple(weight.shape)}"
            )
        merged[f"{module}.weight"] = (weight.float() + scaling * delta).to(weight.dtype)
    return merged


def write(directory: str | Path, config: dict, weights: dict[str, torch.Tensor]) -> None:
    """peft's two files: the LoraConfig as JSON, and the weights under peft's names."""
    directory = Path(directory)
    tensors = {PREFIX + key: value.detach().to("cpu").contiguous() for key, value in weights.items()}
    write_atomically(directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    config = {key: sorted(value) if isinstance(value, (set, frozenset)) else value for key, value in config.items()}
    write_text(directory / CONFIG_FILE, json.dumps(config, indent=2) + "\n")


def read(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(adapter_config.json, the adapters' weights under their module names) of an adapter folder."""
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
        weights = load_file(folder / WEIGHTS_FILE)
    except (OSError, ValueError, SafetensorError) as error:
        raise CheckpointError(f"{folder} is an adapter folder that cannot be read ({error})") from None
    if config.get("peft_type") != "LORA" or not config.get("r") or not config.get("base_model_name_or_path"):
        raise CheckpointError(
            f"{folder / CONFIG_FILE}: expected a LoRA adapter (peft_type LORA, r) that names its base model "
            "(base_model_name_or_path)"
        )
    return config, {key.removeprefix(PREFIX): value for key, value in weights.items()}


def scaling(config: dict) -> float:
    """The factor of B A: alpha / r (alpha / √r for rank-stabilised LoRA)."""
    rank = config["r"]
    return config.get("lora_alpha", 8) / (rank**0.5 if config.get("use_rslora") else rank)
