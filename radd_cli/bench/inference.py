"""Timing the two inference speed-ups for `radd bench sample --kv-cache` and `radd bench eval --compile`.

- the key/value cache: one block-decoding sampler with each cache mode side by side (the repeats go round
  the modes in turn, so a shared machine that slows down slows them all), network calls and full calls
  (refreshes) per sequence, wall time and tokens/s, and the speed-up over no cache;
- compiled inference: the network call that sampling makes, eager and compiled, interleaved the same way,
  after the compiled one has compiled (its time is reported apart).
Nothing here asserts a time.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass

import torch

from radd_cli.bench.timing import synchronize
from radd_cli.core.compiled import compile_for_inference, warm_up
from radd_cli.core.schedule import Schedule
from radd_cli.device import Precision, autocast
from radd_cli.sampling import sample


@dataclass
class KVRow:
    method: str
    steps: int | None
    block_length: int
    kv_cache: str
    calls: float  # network calls per sequence (NFE): full and block calls alike
    full_calls: float  # of which full calls per sequence (all of them without the cache)
    seconds: float  # median wall time of the batch
    tokens_per_second: float
    cpu_seconds: float  # median processor time of this process (robust to a shared machine's load when single-threaded)
    speedup: float | None = None  # over kv_cache none, same settings, by wall time
    cpu_speedup: float | None = None  # the same by processor time


def bench_kv_cache(
    model: torch.nn.Module,
    schedule: Schedule,
    *,
    method: str,
    steps_list: list[int | None],
    block_length: int,
    modes: list[str],
    batch_size: int,
    length: int,
    device: torch.device,
    precision: Precision,
    settings: dict | None = None,
    seed: int = 0,
    repeats: int = 1,
) -> list[KVRow]:
    """One batch of `method` at each step count (None for samplers without steps) and cache mode, timed
    `repeats` times interleaved across the modes (median kept)."""
    rows = []
    for steps in steps_list:
        found: dict[str, list[tuple[float, float, float, float]]] = {mode: [] for mode in modes}
        for _ in range(repeats):
            for mode in modes:
                extra = dict(settings or {}, **({"steps": steps} if steps is not None else {}))
                synchronize(device)
                started, processor = time.perf_counter(), time.process_time()
                with autocast(device, precision):
                    result = sample(
                        model, schedule, num_samples=batch_size, length=length, method=method, block_length=block_length,
                        kv_cache=mode, seeds=range(seed, seed + batch_size), batch_size=batch_size, device=device,
                        precision=precision, **extra,
                    )
                synchronize(device)
                full = result.refreshes / batch_size if result.refreshes is not None else result.nfe
                found[mode].append((result.nfe, full, time.perf_counter() - started, time.process_time() - processor))
        for mode in modes:
            calls, full, _, _ = found[mode][0]
            seconds = statistics.median(t for _, _, t, _ in found[mode])
            cpu = statistics.median(c for *_, c in found[mode])
            rows.append(KVRow(method, steps, block_length, mode, calls, full, seconds, batch_size * length / seconds, cpu))
        baseline = next((row for row in rows[-len(modes):] if row.kv_cache == "none"), None)
        for row in rows[-len(modes):]:
            row.speedup = baseline.seconds / row.seconds if baseline else None
            row.cpu_speedup = baseline.cpu_seconds / row.cpu_seconds if baseline else None
    return rows


@dataclass
class CompileRow:
    batch_size: int
    length: int
    positions: int  # positions per row whose log-probs each call returns (a sampler's share)
    eager_ms: float
    compiled_ms: float | None
    speedup: float | None
    compile_seconds: float | None  # the first (compiling) calls
    fallback: str | None = None  # why it could not compile here


def bench_compile(
    model: torch.nn.Module,
    *,
    batch_size: int,
    length: int,
    device: torch.device,
    precision: Precision,
    positions: int = 64,
    repeats: int = 5,
) -> CompileRow:
    """The sampling call `model(tokens, where=...)` with `positions` positions per row, eager and compiled
    (a copy of the same weights), interleaved over `repeats` rounds (median kept)."""
    compiled = copy.deepcopy(model)
    fallback = compile_for_inference(compiled, device)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.vocab_size + 1, (batch_size, length), generator=generator).to(device)
    where = torch.zeros(batch_size, length, dtype=torch.bool, device=device)
    where[:, :positions] = True
    with autocast(device, precision):
        started = time.perf_counter()
        warm_up(compiled, length)
        compile_seconds = time.perf_counter() - started if fallback is None else None
        times = {"eager": [], "compiled": []}
        networks = {"eager": model, "compiled": compiled} if fallback is None else {"eager": model}
        with torch.inference_mode():
            for name, network in networks.items():  # one untimed call each
                network(tokens, where=where)
            for _ in range(repeats):
                for name, network in networks.items():
                    synchronize(device)
                    begun = time.perf_counter()
                    network(tokens, where=where)
                    synchronize(device)
                    times[name].append(time.perf_counter() - begun)
    eager = 1e3 * statistics.median(times["eager"])
    fast = 1e3 * statistics.median(times["compiled"]) if times["compiled"] else None
    return CompileRow(batch_size, length, positions, eager, fast, eager / fast if fast else None, compile_seconds, fallback)
