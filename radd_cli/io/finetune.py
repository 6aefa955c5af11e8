"""Where fine-tuning starts (docs/fine-tuning.md): `training.init_from` names a model whose weights a new
run starts from, with a fresh optimizer and learning-rate schedule.

Anything `radd_cli.io.pretrained.load` reads works — radd's layout (a run's final/), the published layout, a
Hub id, a training run of the published code — and so does a checkpoint of `radd train`
(runs/NAME/checkpoints/step_N: its EMA weights, the ones final/ would hold). The network must have the
recipe's shape (the block length may differ: positions are rotary); otherwise the error names the recipe
keys to change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from radd_cli.core.model import RADD
from radd_cli.errors import CheckpointError, ConfigError
from radd_cli.io import pretrained

SHAPE_KEYS = ("hidden_size", "n_heads", "n_blocks")  # what must agree (n_heads: same shapes, other function)


@dataclass
class Start:
    """The weights to start from and what the files say about them."""

    state_dict: dict[str, torch.Tensor]
    model: dict  # vocab_size, hidden_size, n_heads, n_blocks, ... as the files give them
    tokenizer: str | None  # where its tokenizer is, to suggest when the vocabularies differ
    source: str


def read_start(source: str) -> Start:
    """The weights of any model radd loads, or of a `radd train` checkpoint folder (EMA weights)."""
    folder = Path(source).expanduser()
    if (folder / pretrained.WEIGHTS_FILE).is_file() and (folder / "recipe.json").is_file():
        return _read_checkpoint(folder)
    files = pretrained.read(source)
    return Start(files.state_dict, files.model, files.tokenizer, files.source)


def _read_checkpoint(folder: Path) -> Start:
    try:
        recipe = json.loads((folder / "recipe.json").read_text())
        weights = load_file(folder / pretrained.WEIGHTS_FILE)
    except (OSError, ValueError, SafetensorError) as error:
        raise CheckpointError(
            f"training.init_from {folder} cannot be read ({error}); give another checkpoint"
        ) from None
    for pickled in sorted(folder.glob("custom_checkpoint_*.pkl")):  # the EMA is one of the registered objects
        state = torch.load(pickled, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "shadow_params" in state:
            weights = pretrained.apply_ema(weights, state, pickled)
    model = dict(recipe.get("model") or {})
    if "vocab_embed.embedding" in weights:
        model["vocab_size"] = weights["vocab_embed.embedding"].shape[0] - 1
    tokenizer = recipe.get("tokenizer", {}).get("name")
    trained = folder.parents[1] / "tokenizer"
    return Start(weights, model, str(trained) if tokenizer == "train" and trained.is_dir() else tokenizer, str(folder))


def shape_problems(start: Start, model: RADD) -> list[str]:
    """The recipe settings that would make `model` take `start`'s weights (empty when it already does)."""
    fixes = [
        f"model.{key}={start.model[key]}"
        for key in SHAPE_KEYS
        if key in start.model and start.model[key] != getattr(model.config, key)
    ]
    vocab = start.model.get("vocab_size")
    if vocab is not None and vocab != model.vocab_size:
        fixes.append(f"tokenizer.name={start.tokenizer}" if start.tokenizer else f"a tokenizer of {vocab} tokens")
    return fixes


def load_into(model: RADD, source: str) -> str:
    """Copy `source`'s weights into `model` (in place); returns what was read, for the log."""
    try:
        start = read_start(source)
    except CheckpointError as error:
        raise CheckpointError(f"training.init_from: {error}") from None
    fixes = shape_problems(start, model)
    if fixes:
        theirs = ", ".join(f"{key} {start.model[key]}" for key in (*SHAPE_KEYS, "vocab_size") if key in start.model)
        ours = ", ".join(f"{key} {getattr(model.config, key)}" for key in (*SHAPE_KEYS, "vocab_size"))
        raise ConfigError(
            f"training.init_from {source} is a network with {theirs}; the recipe's has {ours}: set "
            f"{' '.join(fixes)} to fine-tune it"
        )
    try:
        pretrained.load_state_dict_strict(model, start.state_dict, start.source)
    except CheckpointError as error:
        raise ConfigError(f"training.init_from: {error}") from None
    return start.source
