"""`radd eval --task NAME --model M`: exact match on a built-in task's held-out prompts (docs/fine-tuning.md)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from rich.markup import escape
from rich.table import Table

from radd_cli.console import out, progress_bar
from radd_cli.data import tasks
from radd_cli.device import Work
from radd_cli.evaluation import tasks as task_scoring
from radd_cli.files import write_text
from radd_cli.io.inference import load_for_inference
from radd_cli.sampling import SamplingConfig


def evaluate_task(
    model: str,
    task: str,
    split: str,
    limit: int | None,
    config: SamplingConfig,
    batch_size: int,
    seed: int,
    json_path: Path | None,
    device: str,
    precision: str,
) -> None:
    tasks.examples(task, split)  # a bad split fails before the model is loaded
    loaded = load_for_inference(model, device, precision, Work.eval)
    total = len(tasks.examples(task, split)[:limit])
    with progress_bar(transient=True) as bar:
        progress = bar.add_task(f"answering {total} prompts", total=total)
        report = task_scoring.evaluate_task(
            loaded.model,
            loaded.schedule,
            loaded.tokenizer,
            task,
            config,
            split=split,
            limit=limit,
            batch_size=batch_size,
            seed=seed,
            device=loaded.device,
            progress=lambda done, _: bar.update(progress, completed=done),
            precision=loaded.precision,
        )
    low, high = report.interval
    table = Table(title=f"{model} on task {task} ({split})", show_header=False)
    table.add_row(
        "exact match", f"{report.accuracy:.1%} ± {report.standard_error:.1%} (95% interval {low:.1%} – {high:.1%})"
    )
    table.add_row("prompts", f"{report.correct} of {report.prompts} answered exactly")
    greedy = config.strategy.top_k == 1
    table.add_row("decoding", f"{config.method}, " + ("greedy" if greedy else f"top_k {config.strategy.top_k}"))
    for prompt, response, reference in report.examples:
        mark = "[green]✓[/]" if task_scoring.exact_match(response, reference) else f"[red]✗[/] (expected {escape(reference)})"
        table.add_row(escape(prompt), f"{escape(response)}  {mark}")
    out.print(table)
    if json_path is not None:
        settings = {"model": model, **config.to_dict(), "seed": seed, "torch": torch.__version__}
        write_text(json_path, json.dumps(settings | report.to_dict(), indent=2, ensure_ascii=False) + "\n")
