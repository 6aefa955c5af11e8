"""What `radd sample` and `radd infill` share: the SamplingConfig from the options, sampling with a
progress bar, the summary, and the output files."""

from __future__ import annotations

import functools
import inspect
import json
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from rich.markup import escape
from rich.table import Table

from radd_cli.commands.loading import load_model
from radd_cli.commands.options import (
    BatchSizeOption,
    CompileOption,
    DeviceOption,
    ForceOption,
    ModelOption,
    NumSamplesOption,
    OutputOption,
    PrecisionOption,
    SeedOption,
    check_writable,
    setting_options,
)
from radd_cli.console import err, out, progress_bar
from radd_cli.core.kv_cache import KVMode
from radd_cli.device import Precision, Work
from radd_cli.errors import ConfigError
from radd_cli.files import write_text
from radd_cli.io.inference import LoadedModel
from radd_cli.sampling import Method, SampleResult, SamplingConfig, check_results_fit, generate, make_sampler
from radd_cli.sampling.config import from_settings

BYTES_PER_PRINTED_TOKEN = 64  # the token tensor, the token ids and text of each record, and the output file

# The options `radd sample`, `radd infill` and `radd serve` share, made from SamplingConfig's fields. A command
# decorated with `generation_command` receives them as one SamplingConfig (`config`) and the others as `draw`.
SAMPLING_OPTIONS = setting_options(SamplingConfig, choices={"method": Method})
DRAW_OPTIONS = {
    "model": (ModelOption, ...),
    "num_samples": (NumSamplesOption, 4),
    "batch_size": (BatchSizeOption, 16),
    "seed": (SeedOption, 0),
    "device": (DeviceOption, "auto"),
    "precision": (PrecisionOption, Precision.auto),
    "compile": (CompileOption, False),
    "output": (OutputOption, None),
    "force": (ForceOption, False),
}


@dataclass(frozen=True)
class DrawOptions:
    """The shared options that are not sampling settings: which model, how many samples, where they go."""

    model: str
    num_samples: int
    batch_size: int
    seed: int
    device: str
    precision: Precision
    compile: bool
    output: Path | None
    force: bool  # replace an --output file that exists

    def load(self) -> LoadedModel:
        return load_model(self.model, self.device, self.precision, Work.sample, self.compile)

    def request(self, length: int) -> Request:
        return Request(self.num_samples, self.batch_size, length, self.seed)


def generation_command(command: Callable) -> Callable:
    """Give `command(config, draw, **own)` the shared options; `config` and `draw` are built (and checked,
    with --output) before the command runs, so a bad setting fails before any model is loaded."""

    def build(kwargs: dict) -> dict:
        draw = DrawOptions(**{name: kwargs.pop(name) for name in DRAW_OPTIONS})
        check_output(draw.output, draw.force)
        return {"draw": draw}

    return _with_options(command, {**DRAW_OPTIONS, **SAMPLING_OPTIONS}, build, "draw")


def sampling_command(extra: dict, *, into: str) -> Callable[[Callable], Callable]:
    """Give `command(config, <into>, **own)` the sampling options of `radd sample`, built into one SamplingConfig,
    and the `extra` options (setting_options of another settings dataclass) as one dict called `into`."""

    def decorate(command: Callable) -> Callable:
        return _with_options(
            command, {**extra, **SAMPLING_OPTIONS}, lambda kwargs: {into: {n: kwargs.pop(n) for n in extra}}, into
        )

    return decorate


def _with_options(command: Callable, shared: dict, build: Callable[[dict], dict], built: str) -> Callable:
    """`command` with the `shared` options added to its signature; the sampling ones arrive as `config`,
    the rest as the argument called `built`, which `build` makes of them."""
    own = [p for name, p in inspect.signature(command).parameters.items() if name not in ("config", built)]
    hints = {name: hint for name, hint in typing.get_type_hints(command, include_extras=True).items()}
    injected = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
        for name, (kind, default) in shared.items()
    ]

    @functools.wraps(command)
    def wrapper(**kwargs):
        sampling = {name: kwargs.pop(name) for name in SAMPLING_OPTIONS}
        built = build(kwargs)
        return command(config=sampling_config(**sampling), **built, **kwargs)

    keyword_own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints[p.name]) for p in own]
    parameters = sorted([*keyword_own, *injected], key=lambda p: p.name != "model")  # --model first in --help
    wrapper.__signature__ = inspect.Signature(parameters)
    wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}
    return wrapper


@dataclass(frozen=True)
class Request:
    """What to draw, besides how: how many sequences, of what length, in batches of what, from which seed."""

    num_samples: int
    batch_size: int
    length: int
    seed: int

    @property
    def seeds(self) -> range:
        return range(self.seed, self.seed + self.num_samples)


def sampling_config(**settings) -> SamplingConfig:
    """The one SamplingConfig the sampling options describe; every problem is found before any loading."""
    return from_settings(settings)


def draw(
    loaded: LoadedModel, config: SamplingConfig, request: Request, template: torch.Tensor | None = None
) -> tuple[SampleResult, float]:
    """Sample with a progress bar; returns (result, seconds)."""
    check_results_fit(request.num_samples, request.length, BYTES_PER_PRINTED_TOKEN)
    blocks = config.block_length if config.kv_cache != KVMode.none else None
    loaded.warm_up(request.length, blocks)  # compiling (with --compile) is not sampling time
    with progress_bar(transient=True) as bar:
        task = bar.add_task("sampling", total=request.num_samples)
        started = time.perf_counter()
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
            eos_id=loaded.tokenizer.eos_id,
            progress=lambda done, total: bar.update(task, completed=done),
            precision=loaded.precision,
        )
        if loaded.device.type == "cuda":
            torch.cuda.synchronize()
        return result, time.perf_counter() - started


def print_summary(
    loaded: LoadedModel, config: SamplingConfig, request: Request, result: SampleResult, seconds: float, free: int
) -> None:
    """NFE per sequence measured vs expected, time and tokens/s, on stderr."""
    window = loaded.model.config.length
    sampler = make_sampler(loaded.model, loaded.schedule, config, min(request.length, window))
    expected = sampler.expected_evaluations(free) if request.length <= window else None  # windows: not known in advance
    table = Table(show_header=False, box=None)
    table.add_row(
        "samples", f"{request.num_samples} × {request.length} tokens ({config.method}, {sampler.steps} steps)"
    )
    nfe = f"{result.nfe:.1f} measured" + (f", {expected:.1f} expected" if expected is not None else "")
    if result.refreshes is not None:
        nfe += f", of which {result.refreshes / request.num_samples:.1f} full calls (kv cache {config.kv_cache})"
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
    for i, ids in enumerate(result.sequences()):
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


def check_output(path: Path | None, force: bool) -> None:
    """Refuse a bad --output before any work is done."""
    if path is not None and path.suffix not in (".txt", ".jsonl"):
        raise ConfigError(f"--output {path}: use a .txt or .jsonl file")
    check_writable(path, "--output", force)


def write_output(path: Path, rows: list[dict]) -> None:
    if path.suffix == ".jsonl":
        write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
    else:
        write_text(path, "\n\n".join(row["text"] for row in rows) + "\n")
    err.print(f"wrote {len(rows)} samples to {path}")
