"""`radd bench sample|train|eval`: measured speed, so every speed claim is a number anyone can re-run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from radd_cli.bench import inference as bench_inference
from radd_cli.bench import timing as benchmark
from radd_cli.bench.models import bench_model
from radd_cli.bench.timing import Size
from radd_cli.commands.bench_common import check_outputs, kv_modes, timing_bar, write_json
from radd_cli.commands.bench_plots import plot_sample
from radd_cli.commands.options import (
    BatchSizeOption,
    DeviceOption,
    ForceOption,
    JsonOption,
    PrecisionOption,
    SeedOption,
)
from radd_cli.console import err, out
from radd_cli.core.losses import Loss, TrainingLoss
from radd_cli.core.model import Attention, ModelShape, shape_values
from radd_cli.device import Precision, Work, pick_device, resolve_precision
from radd_cli.errors import ConfigError
from radd_cli.io.pretrained import load
from radd_cli.sampling import SAMPLERS, Method
from radd_cli.training.recipe import Recipe, TrainingSection
from radd_cli.training.runtime import Sharding, build_runtime

ModelChoice = Annotated[Optional[str], typer.Option("--model", "-m", help="A model folder or Hub id (else --size).")]
SizeChoice = Annotated[Size, typer.Option("--size", help="Random weights of a named size.")]
LengthOption = Annotated[
    Optional[int], typer.Option("--length", min=1, help="Sequence length (default: the model's).")
]


def _steps_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--steps {text!r}: give step counts separated by commas, e.g. 64,256") from None
    if not values or min(values) < 1:
        raise ConfigError(f"--steps {text!r}: every step count must be at least 1")
    return values


def _methods_list(text: str) -> list[str]:
    wanted = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in SAMPLERS]
    if not wanted or unknown:
        raise ConfigError(f"--methods {text!r}: give samplers among {', '.join(SAMPLERS)}, comma-separated")
    return ["tweedie", *[name for name in wanted if name != "tweedie"]]


def _bench_methods(network, schedule, methods, steps, batch_size, length, target, precision, label, seed, repeats, json_path):
    with timing_bar() as progress:
        rows = benchmark.bench_methods(
            network, schedule, methods=methods, steps_list=steps, batch_size=batch_size, length=length,
            device=target, precision=precision, seed=seed, repeats=repeats, progress=progress,
        )
    table = Table(title=f"radd bench sample --methods: {label}, batch {batch_size} × {length} on {target}")
    for column in ("sampler", "steps", "calls", "seconds", "ms/call", "× tweedie"):
        table.add_column(column, justify="left" if column == "sampler" else "right")
    for row in rows:
        table.add_row(row.method, str(row.steps or "-"), str(row.calls), f"{row.seconds:.3f}", f"{row.ms_per_call:.2f}",
                      f"{row.ratio_to_tweedie:.2f}")
    out.print(table)
    payload = {"benchmark": "sample-methods", "model": label, "batch_size": batch_size, "length": length,
               "repeats": repeats, **benchmark.environment(target, precision, network), "rows": [vars(r) for r in rows]}
    write_json(json_path, payload)


def _bench_kv(network, schedule, method, steps, block_length, modes, batch_size, length, target, precision, label, seed,
              repeats, json_path, batch_invariant):
    takes_steps = "steps" in SAMPLERS[method].settings
    if "kv_cache" not in SAMPLERS[method].settings:
        raise ConfigError(f"--kv-cache: --method {method} does not decode by blocks")
    rows = bench_inference.bench_kv_cache(
        network, schedule, method=str(method), steps_list=steps if takes_steps else [None], block_length=block_length,
        modes=modes, batch_size=batch_size, length=length, device=target, precision=precision,
        settings={**benchmark.METHOD_SETTINGS.get(str(method), {}), "batch_invariant": batch_invariant},
        seed=seed, repeats=repeats,
    )
    shapes = "fixed shapes" if batch_invariant else "the batch's own shapes"
    table = Table(title=f"radd bench sample --kv-cache: {label}, {method} by blocks of {block_length}, "
                        f"batch {batch_size} × {length} on {target}, {shapes}")
    for column in ("steps", "kv cache", "calls/seq", "full calls/seq", "seconds", "tokens/s", "× none", "CPU s", "× none (CPU)"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(str(row.steps or "-"), row.kv_cache, f"{row.calls:.1f}", f"{row.full_calls:.1f}",
                      f"{row.seconds:.2f}", f"{row.tokens_per_second:,.1f}", f"{row.speedup:.2f}",
                      f"{row.cpu_seconds:.2f}", f"{row.cpu_speedup:.2f}")
    out.print(table)
    payload = {"benchmark": "sample-kv-cache", "model": label, "method": str(method), "block_length": block_length,
               "batch_size": batch_size, "length": length, "repeats": repeats, "batch_invariant": batch_invariant,
               **benchmark.environment(target, precision, network), "rows": [vars(r) for r in rows]}
    write_json(json_path, payload)


def bench_sample(
    model: ModelChoice = None,
    size: SizeChoice = Size.tiny,
    steps: Annotated[str, typer.Option("--steps", help="Step counts to sweep, comma-separated.")] = "64,256,1024",
    batch_size: BatchSizeOption = 16,
    length: LengthOption = None,
    reference: Annotated[
        bool,
        typer.Option("--reference", help="Also time the all-positions-every-step sampler (the published code's way)."),
    ] = False,
    seed: SeedOption = 0,
    repeats: Annotated[
        int, typer.Option("--repeats", min=1, help="Time each setting this often; report the median.")
    ] = 3,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.auto,
    json_path: JsonOption = None,
    force: ForceOption = False,
    plot: Annotated[
        Optional[Path], typer.Option("--plot", help="Write NFE and time against steps to this PNG.")
    ] = None,
    methods: Annotated[
        Optional[str],
        typer.Option("--methods", help="Instead: time per network call of these samplers (comma-separated) against tweedie's."),
    ] = None,
    kv_cache: Annotated[
        Optional[str],
        typer.Option("--kv-cache", help="Instead: time --method by blocks of --block-length with these key/value cache "
                     "modes side by side (comma-separated, e.g. none,dual)."),
    ] = None,
    block_length: Annotated[
        int, typer.Option("--block-length", min=1, help="With --kv-cache: positions per block.")
    ] = 32,
    method: Annotated[Method, typer.Option("--method", help="With --kv-cache: the block sampler to time.")] = Method.tweedie,
    batch_invariant: Annotated[
        bool,
        typer.Option("--batch-invariant/--no-batch-invariant", help="With --kv-cache: calls at fixed shapes (the default)."),
    ] = True,
) -> None:
    """Sampling with the cache on and off: NFE measured vs E-NFE, time, tokens/s, speedups; or, with
    --methods, each sampler's time per network call against cached tweedie's at the same batch; or, with
    --kv-cache, a block sampler with and without the key/value cache."""
    step_counts = _steps_list(steps)
    chosen = _methods_list(methods) if methods is not None else None
    modes = kv_modes(kv_cache) if kv_cache is not None else None
    check_outputs(json_path, force, plot)
    network, schedule, target, precision, label, length = bench_model(model, size, length, device, precision, Work.sample)
    if modes is not None:
        return _bench_kv(network, schedule, method, step_counts, block_length, modes, batch_size, length, target,
                         precision, label, seed, repeats, json_path, batch_invariant)
    if chosen is not None:
        return _bench_methods(network, schedule, chosen, step_counts, batch_size, length, target, precision, label, seed, repeats, json_path)
    with timing_bar() as progress:
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
            progress=progress,
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
    write_json(json_path, payload)
    if plot is not None:
        plot_sample(rows, plot)


def bench_train(
    model: ModelChoice = None,
    size: SizeChoice = Size.tiny,
    batch_size: BatchSizeOption = 32,
    accumulation: Annotated[int, typer.Option("--accumulation", min=1, help="Micro-batches per step.")] = 1,
    length: LengthOption = None,
    timed_steps: Annotated[int, typer.Option("--timed-steps", min=1, help="Optimizer steps to time.")] = 10,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed steps first (compilation, caches).")] = 3,
    loss: Annotated[TrainingLoss, typer.Option("--loss", help="Training objective.")] = TrainingLoss.lambda_DCE,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    attention: Annotated[Attention, typer.Option("--attention", help="Attention kernel.")] = Attention.sdpa,
    activation_checkpointing: Annotated[
        bool, typer.Option("--activation-checkpointing", help="Recompute each block in the backward pass.")
    ] = False,
    sharding: Annotated[
        Sharding, typer.Option("--sharding", help="fsdp: shard over the processes (random weights only).")
    ] = Sharding.none,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.auto,
    json_path: JsonOption = None,
    force: ForceOption = False,
) -> None:
    """`radd train`'s own step (objective, backward, clip, AdamW, EMA through accelerate): time, tokens/s,
    peak memory against the estimate, MFU on GPU."""
    check_outputs(json_path, force)
    if sharding != Sharding.none and model is not None:
        raise ConfigError("--sharding times random weights of a --size; leave out --model")
    training = TrainingSection(
        loss_type=loss, batch_size=batch_size, accumulation=accumulation, warmup_steps=0, mixed_precision=precision,
        compile=compile, activation_checkpointing=activation_checkpointing, sharding=sharding,
    )
    target = pick_device(device)
    resolve_precision(precision, target.type, work=Work.train)
    if model is not None:
        bundle = load(model, attention=attention, with_tokenizer=False)
        config, weights, label = bundle.model.config, bundle.model.state_dict(), model
    else:
        config, weights, label = benchmark.size_config(size, attention, length), None, f"{size} (random weights)"
    if length is not None and model is not None and length > config.length:
        raise ConfigError(f"--length {length} is longer than the model's length {config.length}")
    shape = shape_values(config) | {"length": length or config.length, "dropout": 0.0}
    recipe = Recipe(model=ModelShape(**shape), training=training)
    runtime = build_runtime(precision, cpu=target.type == "cpu", sharding=sharding)
    with timing_bar() as progress:
        result, network = benchmark.bench_train(
            recipe, runtime, config.vocab_size, steps=timed_steps, warmup=warmup, weights=weights, progress=progress
        )
    if runtime.device.type == "cuda":
        result.peak_tflops = benchmark.matmul_peak_tflops(runtime.device)
        result.mfu = result.achieved_tflops / result.peak_tflops
    table = Table(
        title=f"radd bench train: {label}, batch {batch_size} × {recipe.model.length}, {loss}, on {runtime.device}",
        show_header=False,
    )
    table.add_row("step", f"{result.step_seconds * 1e3:.1f} ms")
    table.add_row("throughput", f"{result.tokens_per_second:,.0f} tokens/s")
    table.add_row(
        "peak memory",
        f"{result.peak_memory_gb:.2f} GB" + (" (process RSS)" if runtime.device.type == "cpu" else "")
        + f", estimated {result.estimated_memory_gb:.2f} GB",
    )
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
    write_json(
        json_path,
        {
            "benchmark": "train",
            "model": label,
            "compile": compile,
            "accumulation": accumulation,
            "activation_checkpointing": activation_checkpointing,
            "sharded": runtime.sharded,
            **benchmark.environment(runtime.device, runtime.precision, network),
            **vars(result),
        },
    )


def bench_eval(
    model: ModelChoice = None,
    size: SizeChoice = Size.tiny,
    batch_size: BatchSizeOption = 16,
    length: LengthOption = None,
    batches: Annotated[int, typer.Option("--batches", min=1, help="Timed batches.")] = 10,
    loss: Annotated[Loss, typer.Option("--loss", help="Objective to time.")] = Loss.lambda_DCE,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.auto,
    json_path: JsonOption = None,
    force: ForceOption = False,
    compile: Annotated[
        bool, typer.Option("--compile", help="Instead: the sampling call eager and compiled, side by side.")
    ] = False,
) -> None:
    """Forward time per batch and tokens/s of the Monte-Carlo objective; or, with --compile, the network call
    that sampling makes, eager against compiled."""
    check_outputs(json_path, force)
    network, schedule, target, precision, label, length = bench_model(model, size, length, device, precision, Work.eval)
    if compile:
        return _bench_compile(network, batch_size, length, batches, target, precision, label, json_path)
    with timing_bar() as progress:
        result = benchmark.bench_eval(
            network,
            schedule,
            batch_size=batch_size,
            length=length,
            batches=batches,
            loss=loss,
            device=target,
            precision=precision,
            progress=progress,
        )
    table = Table(title=f"radd bench eval: {label}, batch {batch_size} × {length} on {target}", show_header=False)
    table.add_row("forward", f"{result.forward_ms:.2f} ms per batch")
    table.add_row(f"{loss}", f"{result.tokens_per_second:,.0f} tokens/s")
    table.add_row("peak memory", f"{result.peak_memory_gb:.2f} GB")
    out.print(table)
    write_json(
        json_path,
        {"benchmark": "eval", "model": label, **benchmark.environment(target, precision, network), **vars(result)},
    )


def _bench_compile(network, batch_size, length, batches, target, precision, label, json_path) -> None:
    row = bench_inference.bench_compile(
        network, batch_size=batch_size, length=length, device=target, precision=precision, repeats=batches
    )
    if row.fallback:
        err.print(row.fallback, markup=False, highlight=False)
    table = Table(title=f"radd bench eval --compile: {label}, batch {batch_size} × {length} on {target}", show_header=False)
    table.add_row("sampling call", f"log-probs at {row.positions} positions of each row")
    table.add_row("eager", f"{row.eager_ms:.1f} ms")
    if row.compiled_ms is not None:
        table.add_row("compiled", f"{row.compiled_ms:.1f} ms ({row.speedup:.2f}×), after {row.compile_seconds:.0f} s compiling")
    out.print(table)
    write_json(
        json_path,
        {"benchmark": "eval-compile", "model": label, **benchmark.environment(target, precision, network), **vars(row)},
    )
