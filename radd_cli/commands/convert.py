"""`radd convert SRC DST [--to radd|transformers]`: rewrite any model radd reads in radd's layout, or as a
folder that Hugging Face transformers loads (`AutoModelForMaskedLM.from_pretrained(DST, trust_remote_code=True)`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from radd_cli.console import out, progress_bar
from radd_cli.errors import RaddError
from radd_cli.files import replace_folder
from radd_cli.io import transformers as hf_layout
from radd_cli.io.pretrained import load, save
from radd_cli.validation import Choice


class Layout(Choice):
    """The layouts radd writes (docs/model-files.md)."""

    radd = "radd"  # config.json + model.safetensors (+ tokenizer): what radd itself reads fastest
    transformers = "transformers"  # + configuration_radd.py / modeling_radd.py: transformers loads it without radd


def convert(
    source: Annotated[
        str, typer.Argument(help="Any model radd reads: a model folder (any layout), a Hub repo id, a training run.")
    ],
    destination: Annotated[Path, typer.Argument(help="Folder to write the model to.")],
    to: Annotated[Layout, typer.Option("--to", help="The layout to write.")] = Layout.radd,
    ema: Annotated[
        bool, typer.Option("--ema/--no-ema", help="Training runs: use the EMA weights (--no-ema: the raw ones).")
    ] = True,
    force: Annotated[bool, typer.Option("--force", help="Write into DST even if it is not empty.")] = False,
) -> None:
    """Convert a model to radd's layout, or (--to transformers) to a folder transformers loads without radd."""
    if destination.exists() and not destination.is_dir():
        raise RaddError(f"{destination} is a file; give a folder to write the model to")
    if destination.is_dir() and any(destination.iterdir()) and not force:
        raise RaddError(f"{destination} is not empty; pass --force to write into it anyway")
    with progress_bar(transient=True) as bar:
        task = bar.add_task(f"reading {source}", total=2)
        bundle = load(source, ema=ema, with_tokenizer=to == Layout.transformers)
        bar.update(task, advance=1, description=f"writing {destination}")

        def write(folder: Path) -> None:
            if to == Layout.transformers:
                hf_layout.export(bundle.model, folder, noise=bundle.noise, hf_tokenizer=bundle.tokenizer.hf)
            else:
                save(bundle.model, folder, noise=bundle.noise, tokenizer=bundle.tokenizer_source)

        if destination.is_dir() and any(destination.iterdir()):
            write(destination)  # --force: each file replaced atomically, the folder's other files left alone
        else:
            replace_folder(destination, write)  # built beside DST and renamed: never half-written
        bar.update(task, advance=1)
    config = bundle.model.config
    parameters = sum(p.numel() for p in bundle.model.parameters())
    out.print(
        f"Converted {bundle.source} → {destination} ({to} layout)\n"
        f"  {parameters / 1e6:.1f}M parameters: d={config.hidden_size}, heads={config.n_heads}, "
        f"blocks={config.n_blocks}, V={config.vocab_size}, L={config.length}; "
        f"noise {bundle.noise.get('type')}; tokenizer {bundle.tokenizer_source}",
        highlight=False,
    )
    if to == Layout.transformers:
        out.print(
            f"  load it with transformers.AutoModelForMaskedLM.from_pretrained({str(destination)!r}, "
            "trust_remote_code=True)",
            highlight=False,
        )
