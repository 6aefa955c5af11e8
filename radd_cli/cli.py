"""The `radd` command: registers the verbs and turns every known error into one clean line."""

from __future__ import annotations

import functools
import os
import sys
from typing import Annotated, Callable

import typer
from rich.markup import escape
from typer.core import TyperGroup

try:  # recent Typer ships its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover - Typer on top of click
    from click import get_current_context
    from click.exceptions import ClickException, NoArgsIsHelpError

from radd_cli import __version__
from radd_cli.commands import bench, bench_quality, convert, evaluate, harness, infill, recipes, sample, serve, train
from radd_cli.console import err
from radd_cli.errors import RaddError, Renderer, plain_name

DEBUG_VARIABLE = "RADD_DEBUG"


class OneLineErrors(TyperGroup):
    """A usage error (unknown option, a value outside its choices or range) is one line and exit code 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError:  # the help has been printed
            code = 0
        except ClickException as error:
            if not standalone_mode:
                raise
            command = error.ctx.command_path if getattr(error, "ctx", None) else "radd"
            message = " ".join(error.format_message().replace("Value error, ", "").split())
            err.print(f"[bold red]Error:[/] {escape(command)}: {escape(message)} (see {escape(command)} --help)", highlight=False)
            code = error.exit_code
        except typer.Abort:
            if not standalone_mode:
                raise
            err.print("Aborted.")
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="radd",
    cls=OneLineErrors,
    help="Train, sample, infill, evaluate and benchmark RADD masked-diffusion language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def flag_names(command) -> Renderer:
    """How a command names a setting in its errors: by its option (`--steps`, `--steps 64`, `--no-ema` for
    ema=False), or by the field itself where it has no option of that name (a recipe key, say)."""
    options = {param.name: param for param in command.params if getattr(param, "opts", None)}

    def name(field: str, value: str | None = None) -> str:
        option = options.get(field)
        if option is None:
            return plain_name(field, value)
        flag = next((opt for opt in option.opts if opt.startswith("--")), option.opts[0])
        if getattr(option, "is_flag", False):
            negative = getattr(option, "secondary_opts", None)
            return negative[0] if negative and value == "False" else flag
        return flag if value is None else f"{flag} {value}"

    return name


def clean_errors(command: Callable) -> Callable:
    """Print a RaddError as one line, its settings named by this command's options, and exit with its code;
    RADD_DEBUG=1 shows the traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except RaddError as error:
            if os.environ.get(DEBUG_VARIABLE):
                raise
            message = error.render(flag_names(get_current_context().command))
            err.print(f"[bold red]Error:[/] {escape(message)}", highlight=False)
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
app.command("harness")(clean_errors(harness.harness))
app.command("recipes")(clean_errors(recipes.recipes))
app.command("convert")(clean_errors(convert.convert))
app.command("serve")(clean_errors(serve.serve))

bench_app = typer.Typer(
    help="Measure sampling, training and evaluation speed, and sample quality against cost.", no_args_is_help=True
)
bench_app.command("sample")(clean_errors(bench.bench_sample))
bench_app.command("train")(clean_errors(bench.bench_train))
bench_app.command("eval")(clean_errors(bench.bench_eval))
bench_app.command("quality")(clean_errors(bench_quality.bench_quality))
app.add_typer(bench_app, name="bench")


def main() -> None:
    app()
