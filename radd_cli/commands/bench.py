"""`radd bench sample|train|eval`: measured speed, so every speed claim is a number anyone can re-run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from radd_cli import benchmark
from radd_cli.commands.options import (
    BatchSizeOption,
    DeviceOption,
    DtypeOption,
    JsonOption,
    check_length,
    check_writable,
)
from radd_cli.console import err, out
from radd_cli.errors import ConfigError
from radd_cli.inference import load_for_inference
from radd_cli.runtime import pick_device, resolve_precision
from radd_cli.schedule import get_schedule

ModelChoice = Annotated[Optional[str], typer.Option("--model", "-m", help="A model folder or Hub id (else --size).")]
SizeChoice = Annotated[str, typer.Option("--size", help="Random weights of a named size: tiny, small or medium.")]
LengthOption = Annotated[Optional[int], typer.Option("--length", help="Sequence length (default: the model's).")]


def _model(model: str | None, size: str, device: str, dtype: str, attention: str = "sdpa"):
    """(model, schedule, device, precision, label) from a checkpoint or a named size."""
    if model is not None:
        loaded = load_for_inference(model, device, dtype)
        return loaded.model, loaded.schedule, loaded.device, loaded.precision, model
    if size not in benchmark.SIZES:
        raise ConfigError(f"--size {size!r} is not one of {', '.join(benchmark.SIZES)}")
    target = pick_device(device)
    precision = resolve_precision(dtype, target.type)
    built = benchmark.random_model(size, attention).to(target).eval()
    return built, get_schedule("loglinear"), target, precision, f"{size} (random weights)"


def _steps_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--steps {text!r}: give step counts separated by commas, e.g. 64,256") from None
    if not values or min(values) < 1:
        raise ConfigError(f"--steps {text!r}: every step count must be at least 1")
    return values


def _check_outputs(length: int | None, json_path: Path | None, plot: Path | None = None) -> None:
    check_length(length)
    check_writable(json_path, "--json")
    check_writable(plot, "--plot")


def _write_json(path: Path | None, payload: dict) -> None:
    if path is not None:
        path.write_text(json.dumps(payload, indent=2) + "\n")
        err.print(f"wrote {path}")


def bench_sample(
    model: ModelChoice = None,
    size: SizeChoice = "tiny",
    steps: Annotated[str, typer.Option("--steps", help="Step counts to sweep, comma-separated.")] = "64,256,1024",
    batch_size: BatchSizeOption = 16,
    length: LengthOption = None,
    reference: Annotated[
        bool,
        typer.Option("--reference", help="Also time the all-positions-every-step sampler (the published code's way)."),
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    repeats: Annotated[int, typer.Option("--repeats", help="Time each setting this often; report the median.")] = 3,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    json_path: JsonOption = None,
    plot: Annotated[
        Optional[Path], typer.Option("--plot", help="Write NFE and time against steps to this PNG.")
    ] = None,
) -> None:
    """Sampling with the cache on and off: NFE measured vs E-NFE, time, tokens/s, speedups."""
    step_counts = _steps_list(steps)
    if repeats < 1:
        raise ConfigError("--repeats must be at least 1")
    _check_outputs(length, json_path, plot)
    network, schedule, target, precision, label = _model(model, size, device, dtype)
    length = length if length is not None else network.config.length
    rows = benchmark.bench_sample(
        network,
        schedule,
        steps_list=step_counts,
        batch_size=batch_size,
        length=length,
        device=target,
        precision=precision,
        reference=reference,
        seed=seed,
        repeats=repeats,
    )
    table = Table(title=f"radd bench sample: {label}, batch {batch_size} × {length} on {target}")
    for column in ("steps", "cache", "NFE/seq", "E-NFE", "seconds", "tokens/s", "peak GB"):
        table.add_column(column, justify="right")
    for row in rows:
        expected = f"{row.expected_nfe:.1f}" + (f" ± {row.expected_nfe_se:.1f}" if row.expected_nfe_se else "")
        table.add_row(
            str(row.steps),
            row.cache,
            f"{row.nfe:.1f}",
            expected,
            f"{row.seconds:.3f}",
            f"{row.tokens_per_second:,.0f}",
            f"{row.peak_memory_gb:.2f}",
        )
    out.print(table)
    gains = benchmark.speedups(rows)
    for gain in gains:
        line = (
            f"{gain['steps']} steps: the cache saves {gain['nfe_ratio']:.2f}× evaluations and "
            f"{gain['wall_ratio']:.2f}× time ({100 * gain['wall_share_of_nfe_ratio']:.0f}% of the NFE ratio)"
        )
        if "vs_all_positions" in gain:
            line += f"; {gain['vs_all_positions']:.2f}× faster than the all-positions sampler"
        out.print(line)
    payload = {
        "benchmark": "sample",
        "model": label,
        "batch_size": batch_size,
        "length": length,
        "seed": seed,
        "repeats": repeats,
        **benchmark.environment(target, precision, network),
        "rows": [vars(r) for r in rows],
        "speedups": gains,
    }
    _write_json(json_path, payload)
    if plot is not None:
        _plot(rows, plot)


def _plot(rows, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'radd[plot]'") from None
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in sorted({row.cache for row in rows}):
        chosen = [row for row in rows if row.cache == mode]
        steps = [row.steps for row in chosen]
        left.plot(steps, [row.nfe for row in chosen], marker="o", label=f"cache {mode}")
        right.plot(steps, [row.seconds for row in chosen], marker="o", label=f"cache {mode}")
    chosen = [row for row in rows if row.cache == "on"]
    left.plot([r.steps for r in chosen], [r.expected_nfe for r in chosen], "k--", label="E-NFE")
    for axis, name in ((left, "network evaluations per sequence"), (right, "seconds per batch")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("sampling steps")
        axis.set_ylabel(name)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    err.print(f"wrote {path}")


def bench_train(
    model: ModelChoice = None,
    size: SizeChoice = "tiny",
    batch_size: BatchSizeOption = 32,
    length: LengthOption = None,
    steps: Annotated[int, typer.Option("--steps", help="Timed optimizer steps.")] = 10,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed steps first (compilation, caches).")] = 3,
    loss: Annotated[str, typer.Option("--loss", help="Training objective.")] = "lambda_DCE",
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    attention: Annotated[str, typer.Option("--attention", help="sdpa or flash (random-weight sizes).")] = "sdpa",
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    json_path: JsonOption = None,
) -> None:
    """One training step (objective, backward, clip, fused AdamW): time, tokens/s, peak memory, MFU on GPU."""
    if steps < 1 or warmup < 0:
        raise ConfigError("--steps must be at least 1 and --warmup at least 0")
    _check_outputs(length, json_path)
    network, schedule, target, precision, label = _model(model, size, device, dtype, attention)
    length = length if length is not None else network.config.length
    result = benchmark.bench_train(
        network,
        schedule,
        batch_size=batch_size,
        length=length,
        steps=steps,
        warmup=warmup,
        loss=loss,
        device=target,
        precision=precision,
        compile=compile,
    )
    if target.type == "cuda":
        result.peak_tflops = benchmark.matmul_peak_tflops(target)
        result.mfu = result.achieved_tflops / result.peak_tflops
    table = Table(
        title=f"radd bench train: {label}, batch {batch_size} × {length}, {loss}, on {target}", show_header=False
    )
    table.add_row("step", f"{result.step_seconds * 1e3:.1f} ms")
    table.add_row("throughput", f"{result.tokens_per_second:,.0f} tokens/s")
    table.add_row("peak memory", f"{result.peak_memory_gb:.2f} GB" + (" (process RSS)" if target.type == "cpu" else ""))
    table.add_row(
        "model FLOPs",
        f"{result.achieved_tflops:.2f} TFLOP/s"
        + (
            f" = {100 * result.mfu:.1f}% of the measured bf16 peak {result.peak_tflops:.0f} TFLOP/s"
            if result.mfu
            else ""
        ),
    )
    out.print(table)
    _write_json(
        json_path,
        {
            "benchmark": "train",
            "model": label,
            "compile": compile,
            **benchmark.environment(target, precision, network),
            **vars(result),
        },
    )


def bench_eval(
    model: ModelChoice = None,
    size: SizeChoice = "tiny",
    batch_size: BatchSizeOption = 16,
    length: LengthOption = None,
    batches: Annotated[int, typer.Option("--batches", help="Timed batches.")] = 10,
    loss: Annotated[str, typer.Option("--loss", help="Objective to time.")] = "lambda_DCE",
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    json_path: JsonOption = None,
) -> None:
    """Forward time per batch and tokens/s of the Monte-Carlo objective."""
    if batches < 1:
        raise ConfigError("--batches must be at least 1")
    _check_outputs(length, json_path)
    network, schedule, target, precision, label = _model(model, size, device, dtype)
    length = length if length is not None else network.config.length
    result = benchmark.bench_eval(
        network,
        schedule,
        batch_size=batch_size,
        length=length,
        batches=batches,
        loss=loss,
        device=target,
        precision=precision,
    )
    table = Table(title=f"radd bench eval: {label}, batch {batch_size} × {length} on {target}", show_header=False)
    table.add_row("forward", f"{result.forward_ms:.2f} ms per batch")
    table.add_row(f"{loss}", f"{result.tokens_per_second:,.0f} tokens/s")
    table.add_row("peak memory", f"{result.peak_memory_gb:.2f} GB")
    out.print(table)
    _write_json(
        json_path,
        {"benchmark": "eval", "model": label, **benchmark.environment(target, precision, network), **vars(result)},
    )
