"""`radd convert SRC DST`: rewrite a published model or training run in this project's layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from radd_cli.console import out
from radd_cli.errors import RaddError
from radd_cli.files import replace_folder
from radd_cli.io.pretrained import load, save


def convert(
    source: Annotated[str, typer.Argument(help="A published-layout folder, a Hub repo id, or a training-run folder.")],
    destination: Annotated[Path, typer.Argument(help="Folder to write config.json + model.safetensors to.")],
    ema: Annotated[
        bool, typer.Option("--ema/--no-ema", help="Training runs: use the EMA weights (--no-ema: the raw ones).")
    ] = True,
    force: Annotated[bool, typer.Option("--force", help="Write into DST even if it is not empty.")] = False,
) -> None:
    """Convert a published RADD model (or a training run of the published code) to radd's layout."""
    if destination.exists() and not destination.is_dir():
        raise RaddError(f"{destination} is a file; give a folder to write the model to")
    if destination.is_dir() and any(destination.iterdir()) and not force:
        raise RaddError(f"{destination} is not empty; pass --force to write into it anyway")
    bundle = load(source, ema=ema, with_tokenizer=False)

    def write(folder: Path) -> None:
        save(bundle.model, folder, noise=bundle.noise, tokenizer=bundle.tokenizer_source)

    if destination.is_dir() and any(destination.iterdir()):
        write(destination)  # --force: each file replaced atomically, the folder's other files left alone
    else:
        replace_folder(destination, write)  # built beside DST and renamed: never half-written
    config = bundle.model.config
    parameters = sum(p.numel() for p in bundle.model.parameters())
    out.print(
        f"Converted {bundle.source} → {destination}\n"
        f"  {parameters / 1e6:.1f}M parameters: d={config.hidden_size}, heads={config.n_heads}, "
        f"blocks={config.n_blocks}, V={config.vocab_size}, L={config.length}; "
        f"noise {bundle.noise.get('type')}; tokenizer {bundle.tokenizer_source}",
        highlight=False,
    )
