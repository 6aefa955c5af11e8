"""bf16 autocast against float32 on this CPU: matmul, forward, training step and sampling NFE.

    python benchmarks/cpu_bf16.py [--repeats 5] [--sample-steps 1024]

radd uses bf16 on the CPU (`--precision auto`) only where the CPU has native bf16 (AVX-512 BF16 or AMX);
this script measures both precisions on any CPU (emulated bf16 where it has none) so the choice can be
checked. Repeats are interleaved (fp32, bf16, fp32, ...) and the medians compared, so a shared machine
slowing down affects both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

import radd_cli.device as runtime
from radd_cli.bench import timing as benchmark
from radd_cli.core.model import RADD
from radd_cli.core.schedule import get_schedule
from radd_cli.device import Precision, autocast

CPU = torch.device("cpu")
PRECISIONS = (Precision.fp32, Precision.bf16)


def interleaved(calls: dict, repeats: int) -> dict:
    """Median seconds of each call, timed in turn `repeats` times after one warm-up each."""
    for call in calls.values():
        call()
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def matmul(repeats: int) -> dict:
    a = {p: torch.randn(2048, 2048, dtype=torch.float32 if p == Precision.fp32 else torch.bfloat16) for p in PRECISIONS}
    seconds = interleaved({p: (lambda p=p: a[p] @ a[p]) for p in PRECISIONS}, repeats)
    return {p: 2 * 2048**3 / s / 1e9 for p, s in seconds.items()}  # GFLOP/s


def forward(repeats: int) -> dict:
    model = benchmark.random_model("cpu").eval()
    tokens = torch.randint(0, model.vocab_size, (16, 128), generator=torch.Generator().manual_seed(0))

    def call(precision):
        with torch.no_grad(), autocast(CPU, precision):
            model(tokens)

    return interleaved({p: (lambda p=p: call(p)) for p in PRECISIONS}, repeats)


STEP = """
import json, sys, time
import numpy as np
import radd_cli.device as device
from radd_cli.training.learner import Learner
from radd_cli.training.runtime import build_runtime
from radd_cli.core.model import ModelShape
from radd_cli.training.recipe import Recipe, TrainingSection

precision, steps = sys.argv[1], int(sys.argv[2])
device.cpu_has_native_bf16 = lambda: True
shape = ModelShape(hidden_size=128, n_heads=4, n_blocks=3, length=64, dropout=0.0)
training = TrainingSection(batch_size=32, warmup_steps=0, mixed_precision=precision)
learner = Learner(Recipe(model=shape, training=training), build_runtime(precision, cpu=True), 2048)
blocks = np.random.default_rng(0).integers(0, 2048, (32, 64))
learner.step(blocks)
started = time.perf_counter()
for _ in range(steps):
    learner.step(blocks)
print(json.dumps((time.perf_counter() - started) / steps))
"""


def training_step(repeats: int, steps: int = 10) -> dict:
    """`radd train`'s step at the quick start's (tiny recipe's) shape: d 128, 3 blocks, 32 × 64, V 2048. One
    process per measurement (accelerate sets the precision once per process), alternating precisions."""
    times = {p: [] for p in PRECISIONS}
    for _ in range(repeats):
        for precision in PRECISIONS:
            done = subprocess.run(
                [sys.executable, "-c", STEP, str(precision), str(steps)], capture_output=True, text=True, check=True
            )
            times[precision].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {precision: statistics.median(values) for precision, values in times.items()}


def sampling(steps: int) -> dict:
    model = benchmark.random_model("cpu").eval()
    found = {}
    for precision in PRECISIONS:
        (row,) = [
            r
            for r in benchmark.bench_sample(
                model, get_schedule("loglinear"), steps_list=[steps], batch_size=16, length=128, device=CPU,
                precision=precision, repeats=1,
            )
            if r.cache == "on"
        ]
        found[precision] = row
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sample-steps", type=int, default=1024)
    args = parser.parse_args()
    native = runtime.cpu_has_native_bf16()
    runtime.cpu_has_native_bf16 = lambda: True  # measure bf16 here even where radd would not pick it
    print(f"CPU: {benchmark.environment(CPU, Precision.fp32, RADD(benchmark.size_config('tiny')))['device_name']}, "
          f"{torch.get_num_threads()} threads, native bf16: {native}, torch {torch.__version__}\n")
    print("| measure | fp32 | bf16 | bf16 speed-up |\n|---|---|---|---|")
    flops = matmul(args.repeats)
    print(f"| matmul 2048², GFLOP/s | {flops[Precision.fp32]:.0f} | {flops[Precision.bf16]:.0f} | "
          f"{flops[Precision.bf16] / flops[Precision.fp32]:.2f}x |", flush=True)
    for name, seconds in (("forward, d 256 × 4 blocks, V 2000, 16 × 128, ms", forward(args.repeats)),
                          ("training step, tiny recipe shape, 32 × 64, ms", training_step(args.repeats))):
        print(f"| {name} | {1e3 * seconds[Precision.fp32]:.1f} | {1e3 * seconds[Precision.bf16]:.1f} | "
              f"{seconds[Precision.fp32] / seconds[Precision.bf16]:.2f}x |", flush=True)
    rows = sampling(args.sample_steps)
    for precision, row in rows.items():
        print(f"| sampling {args.sample_steps} steps ({precision}): NFE/seq {row.nfe:.1f}, E-NFE "
              f"{row.expected_nfe:.1f} ± {row.expected_nfe_se:.1f}, {row.seconds:.1f} s | | | |")


if __name__ == "__main__":
    main()
