"""Timing and counting for `radd bench`, returned as dataclasses. Nothing here asserts a time.

- sampling: NFE per sequence measured vs E-NFE, wall time and tokens/s, with the cache on and off
  (and optionally the all-positions reference sampler), over a sweep of step counts;
- training: step time, tokens/s, peak memory, and on GPU the model-FLOPs utilisation against the
  device's measured bf16 matmul peak;
- evaluation: forward time per batch and tokens/s of the Monte-Carlo objective.
"""

from __future__ import annotations

import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from radd_cli.core.losses import LOSSES
from radd_cli.core.model import RADD, ModelConfig
from radd_cli.core.schedule import Schedule
from radd_cli.core.scoring import unwrap
from radd_cli.device import Precision, autocast
from radd_cli.io.tokenizer import KNOWN_VOCABULARIES
from radd_cli.sampling import SAMPLERS, expected_nfe, nfe_standard_deviation, sample, sample_all_positions
from radd_cli.training.learner import Learner
from radd_cli.training.recipe import Recipe
from radd_cli.training.runtime import Runtime
from radd_cli.validation import choices_of

Progress = Callable[[int, int], None]  # progress(done, total): runs finished out of all the benchmark makes

# Named sizes for random-weight benchmarks; small and medium are the published shapes (docs/model-files.md).
PUBLISHED = {"vocab_size": KNOWN_VOCABULARIES["gpt2"], "length": 1024}  # the published models' vocabulary and length
SIZES = {
    "tiny": {"hidden_size": 64, "n_heads": 4, "n_blocks": 2, "vocab_size": 2048, "length": 128},
    "small": {"hidden_size": 768, "n_heads": 12, "n_blocks": 12, **PUBLISHED},
    "medium": {"hidden_size": 1024, "n_heads": 16, "n_blocks": 24, **PUBLISHED},
    # the size of the README's CPU measurements (the published code side by side on 2 CPU cores)
    "cpu": {"hidden_size": 256, "n_heads": 4, "n_blocks": 4, "vocab_size": 2000, "length": 128},
}
Size = choices_of("Size", SIZES, __name__)


def size_config(size: str, attention: str = "sdpa", length: int | None = None) -> ModelConfig:
    """The ModelConfig of a named size (no dropout), at its own length unless `length` is given."""
    values = dict(SIZES[Size(size)])
    values["length"] = length or values["length"]
    return ModelConfig(**values, dropout=0.0, attention=attention)


def random_model(size: str, attention: str = "sdpa") -> RADD:
    """A named size with the published initialisation (random embeddings, zero output layer), no dropout."""
    return RADD(size_config(size, attention))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device) -> float:
    """Peak GPU memory allocated since the last reset; on the CPU, the process's peak resident size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    scale = 1 if sys.platform == "darwin" else 1 << 10  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


class Ticks:
    """Counts the finished runs of a benchmark for `progress(done, total)` (a progress bar), when given one."""

    def __init__(self, total: int, progress: Progress | None):
        self.done, self.total, self.progress = 0, total, progress

    def __call__(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def seconds_per_call(call, *, repeats: int, warmup: int, device: torch.device, tick=lambda: None) -> float:
    """Mean wall time of `call()` over `repeats` runs after `warmup` untimed ones; peak memory is reset first.
    `tick()` follows every run."""
    for _ in range(warmup):
        call()
        tick()
    synchronize(device)
    reset_peak_memory(device)
    started = time.perf_counter()
    for _ in range(repeats):
        call()
        tick()
    synchronize(device)
    return (time.perf_counter() - started) / repeats


def environment(device: torch.device, precision: Precision, model: RADD) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "precision": str(precision),
        "attention": str(model.config.attention),
        "threads": torch.get_num_threads(),
        "model": {
            "hidden_size": model.config.hidden_size,
            "n_heads": model.config.n_heads,
            "n_blocks": model.config.n_blocks,
            "vocab_size": model.vocab_size,
            "parameters": sum(p.numel() for p in model.parameters()),
        },
    }


@dataclass
class SampleRow:
    steps: int
    cache: str  # "on", "off", or "all-positions" (the published-style reference)
    nfe: float  # network evaluations per sequence, measured
    expected_nfe: float
    expected_nfe_se: float  # standard error of the batch mean around E-NFE (0 without the cache)
    seconds: float
    tokens_per_second: float
    peak_memory_gb: float


def bench_sample(
    model: RADD,
    schedule: Schedule,
    *,
    steps_list: list[int],
    batch_size: int,
    length: int,
    device: torch.device,
    precision: str,
    reference: bool = False,
    seed: int = 0,
    repeats: int = 3,
    progress: Progress | None = None,
) -> list[SampleRow]:
    """One batch per setting, timed `repeats` times (median kept) after one untimed warm-up.

    The repeats go round all settings of a step count in turn, so a machine that speeds up or slows
    down (shared CPUs do) affects the cached and uncached timings alike.
    """
    rows = []
    modes = ("on", "off") + (("all-positions",) if reference else ())
    tick = Ticks(1 + len(steps_list) * repeats * len(modes), progress)
    _time_sampling(model, schedule, min(steps_list), "on", batch_size, length, device, precision, seed)  # warm-up
    tick()
    for steps in steps_list:
        timings = {mode: [] for mode in modes}
        peaks = {}
        for _ in range(repeats):
            for mode in modes:
                reset_peak_memory(device)
                timings[mode].append(
                    _time_sampling(model, schedule, steps, mode, batch_size, length, device, precision, seed)
                )
                peaks[mode] = peak_memory_gb(device)
                tick()
        for mode in modes:
            nfe, seconds = timings[mode][0][0], statistics.median(t for _, t in timings[mode])
            expected = expected_nfe(schedule, steps, length) if mode == "on" else float(steps)
            spread = nfe_standard_deviation(schedule, steps, length) / batch_size**0.5 if mode == "on" else 0.0
            rows.append(
                SampleRow(steps, mode, nfe, expected, spread, seconds, batch_size * length / seconds, peaks[mode])
            )
    return rows


def _time_sampling(model, schedule, steps, mode, batch_size, length, device, precision, seed) -> tuple[float, float]:
    """(NFE per sequence, seconds) of one batch; the same seed gives the same work every time."""
    generator = torch.Generator().manual_seed(seed)
    synchronize(device)
    started = time.perf_counter()
    with autocast(device, precision):
        if mode == "all-positions":
            result = sample_all_positions(
                model, schedule, num_samples=batch_size, length=length, steps=steps, generator=generator
            )
        else:
            result = sample(
                model,
                schedule,
                num_samples=batch_size,
                length=length,
                steps=steps,
                cache=mode == "on",
                generator=generator,
                device=device,
                precision=precision,
            )
    synchronize(device)
    return result.nfe, time.perf_counter() - started


# Settings each sampler is timed with by `radd bench sample --methods` (steps come from --steps).
METHOD_SETTINGS = {"threshold": {"threshold": 0.9}, "remdm": {"eta": 0.02}}


@dataclass
class MethodRow:
    method: str
    steps: int | None
    calls: int  # network calls the batch took
    seconds: float
    ms_per_call: float
    ratio_to_tweedie: float | None = None  # per-call time over cached tweedie's at the same steps and batch


class _CountingCalls(torch.nn.Module):
    """Counts the network calls a sampler makes (each may hold several rows)."""

    def __init__(self, module):
        super().__init__()
        self.module, self.calls = module, 0  # `module`: scoring.unwrap sees through it, as through DDP

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.module(*args, **kwargs)


def bench_methods(
    model: RADD,
    schedule: Schedule,
    *,
    methods: list[str],
    steps_list: list[int],
    batch_size: int,
    length: int,
    device: torch.device,
    precision: str,
    seed: int = 0,
    repeats: int = 3,
    progress: Progress | None = None,
) -> list[MethodRow]:
    """Time per network call of each sampler on one batch, repeats interleaved across methods (median kept)."""
    counted = _CountingCalls(model)
    rows = []
    tick = Ticks(len(steps_list) * (repeats + 1) * len(methods), progress)
    for steps in steps_list:
        timings: dict[str, list[tuple[int, float]]] = {method: [] for method in methods}
        for _ in range(repeats + 1):  # the first round warms up and is dropped
            for method in methods:
                settings = {**METHOD_SETTINGS.get(method, {})}
                if "steps" in SAMPLERS[method].settings:
                    settings["steps"] = steps
                counted.calls = 0
                synchronize(device)
                started = time.perf_counter()
                with autocast(device, precision):
                    sample(counted, schedule, num_samples=batch_size, length=length, method=method,
                           seeds=range(seed, seed + batch_size), device=device, precision=precision, **settings)
                synchronize(device)
                timings[method].append((counted.calls, time.perf_counter() - started))
                tick()
        for method in methods:
            calls = timings[method][1][0]
            seconds = statistics.median(t for _, t in timings[method][1:])
            rows.append(MethodRow(method, steps if "steps" in SAMPLERS[method].settings else None, calls, seconds,
                                  1e3 * seconds / max(1, calls)))
        tweedie = next((r for r in rows[-len(methods):] if r.method == "tweedie"), None)
        for row in rows[-len(methods):]:
            row.ratio_to_tweedie = row.ms_per_call / tweedie.ms_per_call if tweedie else None
    return rows


def speedups(rows: list[SampleRow]) -> list[dict]:
    """Per step count: the cache's NFE ratio and wall-time ratio (and vs the reference when present)."""
    found = []
    for steps in sorted({row.steps for row in rows}):
        by_mode = {row.cache: row for row in rows if row.steps == steps}
        on, off = by_mode["on"], by_mode["off"]
        entry = {"steps": steps, "nfe_ratio": off.nfe / on.nfe, "wall_ratio": off.seconds / on.seconds}
        entry["wall_share_of_nfe_ratio"] = entry["wall_ratio"] / entry["nfe_ratio"]
        if "all-positions" in by_mode:
            entry["vs_all_positions"] = by_mode["all-positions"].seconds / on.seconds
        found.append(entry)
    return found


@dataclass
class TrainBench:
    batch_size: int
    length: int
    loss: str
    step_seconds: float
    tokens_per_second: float
    peak_memory_gb: float
    flops_per_token: float
    achieved_tflops: float
    peak_tflops: float | None = None  # measured bf16 matmul peak of the device
    mfu: float | None = None
    estimated_memory_gb: float | None = None  # what radd train's memory check expects (radd_cli/memory.py)


def training_flops_per_token(config: ModelConfig, masked_fraction: float = 0.5) -> float:
    """Forward + backward FLOPs per token: 6 × trunk parameters, attention, and the output layer at masked positions."""
    d, n = config.hidden_size, config.n_blocks
    trunk = 12 * d * d * n  # qkv, out, and the 4x MLP, per token
    attention = 2 * 2 * config.length * d * n  # scores and weighted sum, per token
    head = d * config.vocab_size * masked_fraction
    return 6 * (trunk + head) + 3 * attention


def bench_train(
    recipe: Recipe,
    runtime: Runtime,
    vocab_size: int,
    *,
    steps: int,
    warmup: int,
    weights: dict[str, torch.Tensor] | None = None,
    progress: Progress | None = None,
) -> tuple[TrainBench, RADD]:
    """Time `radd train`'s own optimizer step (the Learner: accelerate, accumulation, clipping, the
    configured precision, the EMA) on random token blocks of the recipe's shape."""
    learner = Learner(recipe, runtime, vocab_size)
    if weights is not None:
        unwrap(learner.model).load_state_dict(weights)
    training, length = recipe.training, recipe.model.length
    blocks = np.random.default_rng(0).integers(0, vocab_size, (training.batch_size, length))
    tick = Ticks(warmup + steps, progress)
    seconds = seconds_per_call(
        lambda: learner.step(blocks), repeats=steps, warmup=warmup, device=runtime.device, tick=tick
    )
    flops = training_flops_per_token(unwrap(learner.model).config)
    tokens_per_second = training.batch_size * length / seconds
    result = TrainBench(
        training.batch_size,
        length,
        str(training.loss_type),
        seconds,
        tokens_per_second,
        peak_memory_gb(runtime.device),
        flops,
        flops * tokens_per_second / 1e12,
        estimated_memory_gb=learner.memory_estimate.total / 1e9,
    )
    return result, unwrap(learner.model)


def matmul_peak_tflops(device: torch.device, size: int = 8192, repeats: int = 20) -> float:
    """The device's bf16 dense matmul throughput, measured (the denominator of MFU)."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    return 2 * size**3 / seconds_per_call(lambda: a @ b, repeats=repeats, warmup=3, device=device) / 1e12


@dataclass
class EvalBench:
    batch_size: int
    length: int
    loss: str
    forward_ms: float  # one network call on the whole batch
    tokens_per_second: float  # of the Monte-Carlo objective (one draw per sequence)
    peak_memory_gb: float


def bench_eval(
    model: RADD,
    schedule: Schedule,
    *,
    batch_size: int,
    length: int,
    batches: int,
    loss: str,
    device: torch.device,
    precision: str,
    progress: Progress | None = None,
) -> EvalBench:
    model = model.to(device).eval()
    x0 = torch.randint(0, model.vocab_size, (batch_size, length), generator=torch.Generator().manual_seed(0)).to(device)
    tick = Ticks(2 * (batches + 1), progress)
    with torch.no_grad(), autocast(device, precision):
        forward = seconds_per_call(lambda: model(x0), repeats=batches, warmup=1, device=device, tick=tick)
        objective = seconds_per_call(
            lambda: LOSSES[loss](model, x0, schedule), repeats=batches, warmup=1, device=device, tick=tick
        )
    return EvalBench(batch_size, length, loss, forward * 1e3, batch_size * length / objective, peak_memory_gb(device))
