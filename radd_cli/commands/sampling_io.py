"""What `radd sample` and `radd infill` share: the SamplingConfig from the options, sampling with a
progress bar, the summary, and the output files."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.markup import escape
from rich.table import Table

from radd_cli.commands.options import check_writable
from radd_cli.console import err, out, progress_bar
from radd_cli.errors import ConfigError
from radd_cli.inference import LoadedModel
from radd_cli.sampling import SampleResult, SamplingConfig, Strategy, generate, make_sampler


@dataclass(frozen=True)
class Request:
    """What to draw, besides how: how many sequences, of what length, in batches of what, from which seed."""

    num_samples: int
    batch_size: int
    length: int
    seed: int

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.num_samples)]


def sampling_config(*, method, steps, order, strategy, top_p, top_k, temperature, no_cache) -> SamplingConfig:
    """The one SamplingConfig the sampling options describe; every problem is found before any loading."""
    return SamplingConfig(
        method=method,
        steps=steps,
        strategy=Strategy.from_options(strategy, top_p, top_k, temperature),
        order=order,
        cache=not no_cache,
    )


def check_length(loaded: LoadedModel, length: int) -> None:
    if length > loaded.model.config.length:
        raise ConfigError(f"--length {length} is longer than the model's training length {loaded.model.config.length}")


def draw(
    loaded: LoadedModel, config: SamplingConfig, request: Request, template: torch.Tensor | None = None
) -> tuple[SampleResult, float]:
    """Sample with a progress bar; returns (result, seconds)."""
    with progress_bar(transient=True) as bar:
        task = bar.add_task("sampling", total=request.num_samples)
        started = time.perf_counter()
        with loaded.autocast():
            result = generate(
                loaded.model,
                loaded.schedule,
                config,
                num_samples=request.num_samples,
                length=request.length,
                template=template,
                seeds=request.seeds,
                batch_size=request.batch_size,
                device=loaded.device,
                progress=lambda done, total: bar.update(task, completed=done),
            )
        if loaded.device.type == "cuda":
            torch.cuda.synchronize()
        return result, time.perf_counter() - started


def print_summary(
    loaded: LoadedModel, config: SamplingConfig, request: Request, result: SampleResult, seconds: float, free: int
) -> None:
    """NFE per sequence measured vs expected, time and tokens/s, on stderr."""
    sampler = make_sampler(loaded.model, loaded.schedule, config, request.length)
    expected = sampler.expected_nfe(free)
    table = Table(show_header=False, box=None)
    table.add_row(
        "samples", f"{request.num_samples} × {request.length} tokens ({config.method}, {sampler.steps} steps)"
    )
    nfe = f"{result.nfe:.1f} measured" + (f", {expected:.1f} expected" if expected is not None else "")
    table.add_row("NFE per sequence", nfe + ("" if config.cache else " (cache off)"))
    table.add_row(
        "time",
        f"{seconds:.2f} s, {request.num_samples * request.length / seconds:,.0f} tokens/s "
        f"on {loaded.device} ({loaded.precision})",
    )
    err.print(table)


def records(
    loaded: LoadedModel,
    config: SamplingConfig,
    request: Request,
    result: SampleResult,
    model: str,
    extra: list[dict] | None = None,
) -> list[dict]:
    """One JSON-ready record per sample: text, token ids, seed, NFE and the settings."""
    shared = {
        "model": model,
        "num_samples": request.num_samples,
        "batch_size": request.batch_size,
        "length": request.length,
        "seed": request.seed,
        **config.to_dict(),
        "device": str(loaded.device),
        "precision": str(loaded.precision),
    }
    rows = []
    for i, tokens in enumerate(result.tokens):
        ids = tokens.tolist()
        row = {
            "index": i,
            "text": loaded.tokenizer.decode(ids),
            "token_ids": ids,
            "seed": request.seeds[i],
            "nfe": int(result.nfe_per_sample[i]),
            "settings": shared,
        }
        rows.append(row | (extra[i] if extra else {}))
    return rows


def report(
    loaded: LoadedModel,
    config: SamplingConfig,
    request: Request,
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
    rows = records(loaded, config, request, result, model, extra)
    for i, row in enumerate(rows):
        out.rule(f"sample {row['index']} (seed {row['seed']})", style="dim")
        if pieces is None:
            out.print(row["text"], markup=False, highlight=False)
        else:
            out.print(
                "".join(f"[bold green]{escape(t)}[/]" if new else escape(t) for t, new in pieces[i]), highlight=False
            )
    print_summary(loaded, config, request, result, seconds, free_positions)
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
