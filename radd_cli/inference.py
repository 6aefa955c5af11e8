"""A model ready to sample or evaluate: network, noise schedule, tokenizer, device and precision."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from radd_cli.errors import CheckpointError
from radd_cli.model import RADD
from radd_cli.runtime import autocast, pick_device, resolve_precision
from radd_cli.schedule import Schedule, schedule_from_config
from radd_cli.tokenizer import Tokenizer, load_tokenizer


@dataclass
class LoadedModel:
    model: RADD
    schedule: Schedule
    tokenizer: Tokenizer
    device: torch.device
    precision: str  # "no" (fp32), "bf16" or "fp16": the trunk's autocast dtype

    def autocast(self):
        return autocast(self.device, self.precision)


def load_for_inference(model_path: str, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load any model folder or Hub id, its tokenizer and schedule, in eval mode on the device."""
    target = pick_device(device)
    precision = resolve_precision(dtype, target.type)
    model = RADD.from_pretrained(model_path).to(target).eval()
    tokenizer_source = model.extras.get("tokenizer")
    if not tokenizer_source:
        raise CheckpointError(f"{model_path} does not say which tokenizer it uses; add one with radd convert")
    tokenizer = load_tokenizer(tokenizer_source)
    if tokenizer.vocab_size != model.vocab_size:
        raise CheckpointError(
            f"{model_path}: the model has {model.vocab_size} tokens but its tokenizer {tokenizer_source} has "
            f"{tokenizer.vocab_size}; give the model folder the tokenizer it was trained with"
        )
    return LoadedModel(model, schedule_from_config(model.extras.get("noise")), tokenizer, target, precision)
