"""Loading a model for a command: `load_for_inference`, and the one-line note when --compile cannot be used."""

from __future__ import annotations

from radd_cli.console import err
from radd_cli.device import Work
from radd_cli.io.inference import LoadedModel, load_for_inference


def load_model(model: str, device: str, precision: str, work: Work, compile: bool = False) -> LoadedModel:
    loaded = load_for_inference(model, device, precision, work, compile=compile)
    if loaded.compile_note:
        err.print(loaded.compile_note, markup=False, highlight=False)
    return loaded
