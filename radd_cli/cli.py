"""The `radd` command: registers the verbs and turns known errors into one clean line."""

from __future__ import annotations

import functools
import os
from typing import Annotated, Callable

import typer
from rich.markup import escape

from radd_cli import __version__
from radd_cli.commands import bench, convert, evaluate, infill, recipes, sample, train
from radd_cli.console import err
from radd_cli.errors import RaddError

DEBUG_VARIABLE = "RADD_DEBUG"

app = typer.Typer(
    name="radd",
    help="Train, sample, infill, evaluate and benchmark RADD masked-diffusion language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def clean_errors(command: Callable) -> Callable:
    """Print a RaddError as one line and exit with its code; RADD_DEBUG=1 shows the traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except RaddError as error:
            if os.environ.get(DEBUG_VARIABLE):
                raise
            err.print(f"[bold red]Error:[/] {escape(str(error))}", highlight=False)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            err.print("Interrupted.")
            raise typer.Exit(130) from None

    return wrapper


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"radd {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """radd: reparameterized absorbing discrete diffusion language models."""


app.command("train")(clean_errors(train.train))
app.command("sample")(clean_errors(sample.sample))
app.command("infill")(clean_errors(infill.infill))
app.command("eval")(clean_errors(evaluate.evaluate))
app.command("recipes")(clean_errors(recipes.recipes))
app.command("convert")(clean_errors(convert.convert))

bench_app = typer.Typer(help="Measure sampling, training and evaluation speed.", no_args_is_help=True)
bench_app.command("sample")(clean_errors(bench.bench_sample))
bench_app.command("train")(clean_errors(bench.bench_train))
bench_app.command("eval")(clean_errors(bench.bench_eval))
app.add_typer(bench_app, name="bench")


def main() -> None:
    app()
