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
    BlockLengthOption,
    CompileOption,
    ConfidenceOption,
    DeviceOption,
    EtaOption,
    GreedyOption,
    GuidanceOption,
    KVCacheOption,
    KVRefreshOption,
    MethodOption,
    ModelOption,
    NoCacheOption,
    NumSamplesOption,
    OrderOption,
    OutputOption,
    PrecisionOption,
    RemaskingOption,
    SeedOption,
    StepsOption,
    StopAtEosOption,
    StrategyOption,
    TemperatureOption,
    ThresholdOption,
    TopKOption,
    TopPOption,
    check_writable,
)
from radd_cli.console import err, out, progress_bar
from radd_cli.core.kv_cache import KVMode
from radd_cli.device import Precision
from radd_cli.errors import ConfigError
from radd_cli.files import write_text
from radd_cli.io.inference import LoadedModel
from radd_cli.sampling import (
    Confidence,
    Method,
    Remasking,
    SampleResult,
    SamplingConfig,
    Strategy,
    check_results_fit,
    generate,
    make_sampler,
)

BYTES_PER_PRINTED_TOKEN = 64  # the token tensor, the token ids and text of each record, and the output file

# The options `radd sample` and `radd infill` share: (type, default). A command decorated with
# `generation_command` receives the sampling ones as one SamplingConfig (`config`) and the rest as `draw`.
SAMPLING_OPTIONS = {
    "steps": (StepsOption, None),
    "method": (MethodOption, Method.tweedie),
    "order": (OrderOption, "forward"),
    "strategy": (StrategyOption, None),
    "top_p": (TopPOption, None),
    "top_k": (TopKOption, None),
    "temperature": (TemperatureOption, 1.0),
    "no_cache": (NoCacheOption, False),
    "block_length": (BlockLengthOption, None),
    "confidence": (ConfidenceOption, Confidence.probability),
    "greedy": (GreedyOption, False),
    "threshold": (ThresholdOption, None),
    "remasking": (RemaskingOption, Remasking.cap),
    "eta": (EtaOption, 0.02),
    "kv_cache": (KVCacheOption, KVMode.none),
    "kv_refresh": (KVRefreshOption, 0),
    "guidance": (GuidanceOption, 0.0),
    "stop_at_eos": (StopAtEosOption, False),
}
DRAW_OPTIONS = {
    "model": (ModelOption, ...),
    "num_samples": (NumSamplesOption, 4),
    "batch_size": (BatchSizeOption, 16),
    "seed": (SeedOption, 0),
    "device": (DeviceOption, "auto"),
    "precision": (PrecisionOption, Precision.auto),
    "compile": (CompileOption, False),
    "output": (OutputOption, None),
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

    def load(self) -> LoadedModel:
        return load_model(self.model, self.device, self.precision, self.compile)

    def request(self, length: int) -> Request:
        return Request(self.num_samples, self.batch_size, length, self.seed)


def generation_command(command: Callable) -> Callable:
    """Give `command(config, draw, **own)` the shared options; `config` and `draw` are built (and checked,
    with --output) before the command runs, so a bad setting fails before any model is loaded."""

    def build(kwargs: dict) -> dict:
        draw = DrawOptions(**{name: kwargs.pop(name) for name in DRAW_OPTIONS})
        check_output(draw.output)
        return {"draw": draw}

    return _with_options(command, {**DRAW_OPTIONS, **SAMPLING_OPTIONS}, build)


def sampling_command(command: Callable) -> Callable:
    """Give `command(config, **own)` the sampling options of `radd sample`, built into one SamplingConfig."""
    return _with_options(command, SAMPLING_OPTIONS, lambda kwargs: {})


def _with_options(command: Callable, shared: dict, build: Callable[[dict], dict]) -> Callable:
    """`command` with the `shared` options added to its signature; the sampling ones arrive as `config`,
    the rest as whatever `build` makes of them."""
    own = [p for name, p in inspect.signature(command).parameters.items() if name not in ("config", "draw")]
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


def sampling_config(*, strategy, top_p, top_k, temperature, no_cache, **settings) -> SamplingConfig:
    """The one SamplingConfig the sampling options describe; every problem is found before any loading."""
    return SamplingConfig(
        strategy=Strategy.from_options(strategy, top_p, top_k, temperature), cache=not no_cache, **settings
    )


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
                eos_id=loaded.tokenizer.eos_id,
                progress=lambda done, total: bar.update(task, completed=done),
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
    expected = sampler.expected_nfe(free) if request.length <= window else None  # windows: not known in advance
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


def check_output(path: Path | None) -> None:
    """Refuse a bad --output before any work is done."""
    if path is not None and path.suffix not in (".txt", ".jsonl"):
        raise ConfigError(f"--output {path}: use a .txt or .jsonl file")
    check_writable(path, "--output")


def write_output(path: Path, rows: list[dict]) -> None:
    if path.suffix == ".jsonl":
        write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
    else:
        write_text(path, "\n\n".join(row["text"] for row in rows) + "\n")
    err.print(f"wrote {len(rows)} samples to {path}")
