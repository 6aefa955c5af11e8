"""What `radd sample` and `radd infill` share: settings, the progress bar, the summary and the output files."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.markup import escape
from rich.table import Table

from radd_cli.commands.options import check_writable
from radd_cli.console import err, out, progress_bar
from radd_cli.errors import ConfigError
from radd_cli.inference import LoadedModel
from radd_cli.sampling import SampleResult, expected_nfe, sample


@dataclass(frozen=True)
class GenerationSettings:
    num_samples: int
    batch_size: int
    length: int
    steps: int
    method: str
    order: str
    strategy: str
    top_p: float | None
    top_k: int | None
    temperature: float
    cache: bool
    seed: int

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.num_samples)]


def settings_from_options(
    loaded: LoadedModel,
    *,
    num_samples,
    batch_size,
    length,
    steps,
    method,
    order,
    strategy,
    top_p,
    top_k,
    temperature,
    no_cache,
    seed,
) -> GenerationSettings:
    length = length if length is not None else loaded.model.config.length
    problems = []
    if length < 1:
        problems.append(f"--length must be at least 1, got {length}")
    if num_samples < 1:
        problems.append(f"--num-samples must be at least 1, got {num_samples}")
    if batch_size < 1:
        problems.append(f"--batch-size must be at least 1, got {batch_size}")
    if length > loaded.model.config.length:
        problems.append(f"--length {length} is longer than the model's training length {loaded.model.config.length}")
    if strategy is None:
        if top_p is not None and top_k is not None:
            problems.append("give --top-p or --top-k, not both")
        strategy = "top_p" if top_p is not None else "top_k" if top_k is not None else "direct"
    if problems:
        raise ConfigError(problems)
    return GenerationSettings(
        num_samples,
        batch_size,
        length,
        steps if steps is not None else length,
        method,
        order,
        strategy,
        top_p,
        top_k,
        temperature,
        not no_cache,
        seed,
    )


def positions_order(settings: GenerationSettings) -> torch.Tensor | None:
    """The `order` tensor for the ordered sampler: (L,) or one random permutation per sample (N, L)."""
    if settings.method != "ordered" or settings.order == "forward":
        return None
    length = settings.length
    if settings.order == "backward":
        return torch.arange(length - 1, -1, -1)
    if settings.order == "random":
        return torch.stack(
            [
                torch.randperm(length, generator=torch.Generator().manual_seed(seed + 1_000_003))
                for seed in settings.seeds
            ]
        )
    path = Path(settings.order)
    if not path.is_file():
        raise ConfigError(f"--order {settings.order!r} is not forward, backward, random, or a file of positions")
    try:
        values = json.loads(path.read_text()) if path.suffix == ".json" else [int(v) for v in path.read_text().split()]
    except (ValueError, json.JSONDecodeError):
        values = None
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"--order {path}: expected whole-number positions, whitespace-separated or as a JSON list")
    return torch.tensor(values, dtype=torch.long)


def generate(loaded: LoadedModel, settings: GenerationSettings, template: torch.Tensor | None = None):
    """Sample with a progress bar; returns (result, seconds)."""
    with progress_bar(transient=True) as bar:
        task = bar.add_task("sampling", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        started = time.perf_counter()
        with loaded.autocast():
            result = sample(
                loaded.model,
                loaded.schedule,
                num_samples=settings.num_samples,
                length=settings.length,
                steps=settings.steps,
                method=settings.method,
                strategy=settings.strategy,
                top_p=settings.top_p,
                top_k=settings.top_k,
                temperature=settings.temperature,
                cache=settings.cache,
                template=template,
                order=positions_order(settings),
                seeds=settings.seeds,
                batch_size=settings.batch_size,
                device=loaded.device,
                progress=advance,
            )
        if loaded.device.type == "cuda":
            torch.cuda.synchronize()
        return result, time.perf_counter() - started


def print_summary(
    loaded: LoadedModel, settings: GenerationSettings, result: SampleResult, seconds: float, free_positions: int
) -> None:
    """Samples, NFE per sequence measured vs expected, time and tokens/s, on stderr."""
    expected = (
        free_positions
        if settings.method == "ordered"
        else expected_nfe(loaded.schedule, settings.steps, free_positions, settings.method)
        if settings.cache
        else settings.steps
    )
    table = Table(show_header=False, box=None)
    table.add_row(
        "samples",
        f"{settings.num_samples} × {settings.length} tokens ({settings.method}, "
        f"{settings.steps if settings.method != 'ordered' else settings.length} steps)",
    )
    table.add_row(
        "NFE per sequence",
        f"{result.nfe:.1f} measured, {expected:.1f} expected" + ("" if settings.cache else " (cache off)"),
    )
    table.add_row(
        "time",
        f"{seconds:.2f} s, {settings.num_samples * settings.length / seconds:,.0f} tokens/s "
        f"on {loaded.device} ({'fp32' if loaded.precision == 'no' else loaded.precision})",
    )
    err.print(table)


def records(
    loaded: LoadedModel, settings: GenerationSettings, result: SampleResult, model: str, extra: list[dict] | None = None
) -> list[dict]:
    """One JSON-ready record per sample: text, token ids, seed, NFE and the settings."""
    shared = {"model": model, **asdict(settings), "device": str(loaded.device), "precision": loaded.precision}
    rows = []
    for i, tokens in enumerate(result.tokens):
        ids = tokens.tolist()
        row = {
            "index": i,
            "text": loaded.tokenizer.decode(ids),
            "token_ids": ids,
            "seed": settings.seeds[i],
            "nfe": int(result.nfe_per_sample[i]),
            "settings": shared,
        }
        rows.append(row | (extra[i] if extra else {}))
    return rows


def report(
    loaded: LoadedModel,
    settings: GenerationSettings,
    result: SampleResult,
    seconds: float,
    model: str,
    output: Path | None,
    *,
    free_positions: int,
    pieces: list[list[tuple[str, bool]]] | None = None,
    extra: list[dict] | None = None,
) -> None:
    """Print each sample (generated `pieces` highlighted when given), the summary, and write --output."""
    rows = records(loaded, settings, result, model, extra)
    for i, row in enumerate(rows):
        out.rule(f"sample {row['index']} (seed {row['seed']})", style="dim")
        if pieces is None:
            out.print(row["text"], markup=False, highlight=False)
        else:
            out.print(
                "".join(f"[bold green]{escape(t)}[/]" if new else escape(t) for t, new in pieces[i]), highlight=False
            )
    print_summary(loaded, settings, result, seconds, free_positions)
    if output is not None:
        write_output(output, rows)


def check_output(path: Path | None) -> None:
    """Refuse a bad --output before any work is done."""
    if path is not None and path.suffix not in (".txt", ".jsonl"):
        raise ConfigError(f"--output {path}: use a .txt or .jsonl file")
    check_writable(path, "--output")


def write_output(path: Path, rows: list[dict]) -> None:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        path.write_text("\n\n".join(row["text"] for row in rows) + "\n")
    err.print(f"wrote {len(rows)} samples to {path}")
