"""`radd recipes [NAME] [--copy DEST]`: list the shipped recipes, show one, or copy it out to edit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from radd_cli.commands.options import ForceOption, check_writable
from radd_cli.console import out
from radd_cli.files import write_text
from radd_cli.training.recipe import recipe_text, shipped_recipes


def recipes(
    name: Annotated[Optional[str], typer.Argument(help="A shipped recipe to print (or to copy with --copy).")] = None,
    copy: Annotated[Optional[Path], typer.Option("--copy", help="Write the recipe to this file to edit it.")] = None,
    force: ForceOption = False,
) -> None:
    """List the shipped recipes; with NAME print one; with --copy write it out to edit."""
    if name is None:
        table = Table("recipe", "description")
        for recipe_name, description in shipped_recipes().items():
            table.add_row(recipe_name, description)
        out.print(table)
        out.print("Train one with `radd train --recipe NAME`; copy one out with `radd recipes NAME --copy FILE`.")
        return
    _, text = recipe_text(name)
    if copy is None:
        out.print(text, markup=False, highlight=False)
        return
    if copy.is_dir():
        copy = copy / f"{name}.toml"
    check_writable(copy, "--copy", force)
    write_text(copy, text)
    out.print(f"Wrote {copy}; train with `radd train --recipe {copy}`.")
