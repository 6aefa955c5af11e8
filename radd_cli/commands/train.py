"""`radd train --recipe NAME|FILE [section.key=value ...]`: train from a TOML recipe."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.markup import escape

from radd_cli.commands.relaunch import relaunch_on_gpus
from radd_cli.commands.train_plan import print_plan
from radd_cli.console import out
from radd_cli.evaluation.cloze import perplexity
from radd_cli.training.launch import launched_as_one_of_many
from radd_cli.training.recipe import load_recipe
from radd_cli.training.run_log import check_trackers


def train(
    overrides: Annotated[
        Optional[list[str]], typer.Argument(help="Recipe overrides, e.g. training.lr=1e-4 model.n_blocks=6.")
    ] = None,
    recipe: Annotated[
        str, typer.Option("--recipe", "-r", help="A shipped recipe name (`radd recipes`) or a TOML file.")
    ] = "tiny",
    run_dir: Annotated[
        Optional[Path],
        typer.Option("--run-dir", help="Run folder (default runs/<recipe name>); re-running resumes it."),
    ] = None,
    gpus: Annotated[
        int,
        typer.Option(
            "--gpus", min=1, help="GPUs of this machine to train on (one process each); with --dry-run, on all machines."
        ),
    ] = 1,
    restart: Annotated[
        bool,
        typer.Option(
            "--restart", help="Train the run folder's run again from scratch; its old files are moved aside, not deleted."
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print parameters, tokens per step and the estimated memory per process, and stop (writes nothing).",
        ),
    ] = False,
) -> None:
    """Train a RADD model. Re-running the same command resumes from the last complete checkpoint."""
    from radd_cli.training.trainer import Trainer

    loaded = load_recipe(recipe, overrides or [])  # validate everything before any work
    check_trackers(loaded.logging.trackers)
    if dry_run:
        processes = int(os.environ.get("WORLD_SIZE", gpus)) if launched_as_one_of_many() else gpus
        print_plan(loaded, processes, gpus=torch.cuda.is_available() or processes > 1)
        return
    if gpus > 1 and not launched_as_one_of_many():
        raise typer.Exit(relaunch_on_gpus(gpus, sys.argv[1:]))
    folder = run_dir or Path("runs") / loaded.name
    trainer = Trainer(loaded, folder, restart=restart)
    result = trainer.run()
    if result.samples:
        out.print(f"\nA sample from {result.final_dir}:\n", highlight=False)
        out.print(result.samples[0], markup=False, highlight=False)
    if result.first_look is not None:
        print_first_look(result.first_look, trainer.tokenizer)


def print_first_look(look, tokenizer) -> None:
    """The end of the screen: held-out checks beside what a model that ignores context gets, and one passage
    against its shuffled tokens."""
    report, shuffled = look.cloze, look.shuffled
    real, mixed = shuffled.example_nats
    out.print(f"\n[bold]On {shuffled.passages} held-out passages the model never trained on:[/]")
    lines = [
        f"  real or shuffled  the real passage is the more likely one in {shuffled.preferred} of {shuffled.passages} "
        f"against its tokens shuffled ({shuffled.real_nats:.2f} against {shuffled.shuffled_nats:.2f} nats per token); "
        "a model that ignores context: half at best",
        f"  fill the blanks   {report.accuracy:.1%} of {report.blanks:,} hidden tokens filled exactly "
        f"({report.fraction:.0%} hidden); the most frequent token every time: {report.baseline_accuracy:.1%}",
        f"  nats per token    {look.valid_nats:.2f} (perplexity ≤ {perplexity(look.valid_nats):,.0f}); the training "
        f"tokens' frequencies alone: {look.unigram_nats:.2f} (perplexity {perplexity(look.unigram_nats):,.0f})",
    ]
    for line in lines:
        out.print(line, highlight=False)
    verdict = "the real one" if real < mixed else "the shuffled one"
    out.print(
        f"\nThe first passage and its tokens shuffled; the model finds {verdict} more likely "
        f"({real:.2f} against {mixed:.2f} nats per token):\n",
        highlight=False,
    )
    out.print(f"  [green]real[/]      {escape(one_line(tokenizer.decode(shuffled.example)))}", highlight=False)
    out.print(f"  [red]shuffled[/]  {escape(one_line(tokenizer.decode(shuffled.example_shuffled)))}", highlight=False)


def one_line(text: str, limit: int = 200) -> str:
    """`text` on one line (runs of whitespace as one space), cut at `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
