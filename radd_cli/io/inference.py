"""A model ready to sample or evaluate: network, noise schedule, tokenizer, device and precision."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from radd_cli.core.compiled import compile_for_inference, warm_up
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
    compile_note: str | None = None  # why compile was asked for and is not used (one line to show), or None

    def autocast(self):
        return autocast(self.device, self.precision)

    def warm_up(self, length: int, block_length: int | None = None) -> None:
        """With compile, make the compiling calls for sequences (windows) of `length` and blocks of
        `block_length` now, so that timed work after it runs compiled code; nothing otherwise."""
        with self.autocast():
            warm_up(self.model, min(length, self.model.config.length), block_length)

def load_for_inference(
    model_path: str, device: str = "auto", precision: str = "auto", work: Work = Work.sample, compile: bool = False
) -> LoadedModel:
    """Load any model folder or Hub id with its tokenizer and schedule, in eval mode on the device, in the
    precision `work` runs in (`auto`: device.AUTO_PRECISION); with `compile` its trunk compiled
    (core/compiled.py; the first calls compile, see LoadedModel.warm_up).

    The device and precision are checked before anything is read.
    """
    target = pick_device(device)
    resolved = resolve_precision(precision, target.type, work=work)
    bundle = load(model_path)
    network = bundle.model.to(target).eval()
    note = compile_for_inference(network, target) if compile else None
    return LoadedModel(network, bundle.schedule, bundle.tokenizer, target, resolved, note)
