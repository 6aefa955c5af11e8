"""A model ready to sample or evaluate: network, noise schedule, tokenizer, device and precision."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from radd_cli.core.model import RADD
from radd_cli.core.schedule import Schedule
from radd_cli.device import Precision, Work, autocast, pick_device, resolve_precision
from radd_cli.io.pretrained import load
from radd_cli.io.tokenizer import Tokenizer


@dataclass
class LoadedModel:
    model: RADD
    schedule: Schedule
    tokenizer: Tokenizer
    device: torch.device
    precision: Precision  # the trunk's autocast precision

    def autocast(self):
        return autocast(self.device, self.precision)


def load_for_inference(
    model_path: str, device: str = "auto", precision: str = "auto", work: Work = Work.sample
) -> LoadedModel:
    """Load any model folder or Hub id with its tokenizer and schedule, in eval mode on the device, in the
    precision `work` runs in (`auto`: device.AUTO_PRECISION).

    The device and precision are checked before anything is read.
    """
    target = pick_device(device)
    resolved = resolve_precision(precision, target.type, work=work)
    bundle = load(model_path)
    return LoadedModel(bundle.model.to(target).eval(), bundle.schedule, bundle.tokenizer, target, resolved)
