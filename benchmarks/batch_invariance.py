"""What `batch_invariant` costs: sampling tokens/s with and without it, fp32 and bf16, batch 1, 4 and 16.

    python benchmarks/batch_invariance.py [--size tiny] [--steps 64] [--repeats 3] [--threads 2] [--rows 4 --tile 16]

A random model of a named size (`radd bench sample --size`) samples one batch of `batch` sequences with
`radd_cli.generate`, exactly as `radd sample -n B --batch-size B --steps S` does, in every combination; the
repeats are interleaved over all combinations and the median kept, so a shared machine slowing down
affects them alike. It also checks what the setting promises: with it, sample i's tokens are the same
at every batch size (and they are printed as `identical`). bf16 runs emulated on CPUs without native
bf16 (much slower there; radd's `auto` does not pick it on such CPUs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

import radd_cli.device as device
from radd_cli.bench import timing as benchmark
from radd_cli.core.model import RADD
from radd_cli.core.schedule import get_schedule
from radd_cli.device import Precision
from radd_cli.sampling import SamplingConfig, generate, invariance

CPU = torch.device("cpu")
BATCHES = (1, 4, 16)
PRECISIONS = (Precision.fp32, Precision.bf16)


def random_weights(model: RADD, seed: int = 0) -> RADD:
    """Every parameter random (the published init's zero output layer would make every draw uniform)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rows", type=int, default=invariance.ROWS, help="try another row count per call")
    parser.add_argument("--tile", type=int, default=invariance.TILE, help="try another tile of positions")
    parser.add_argument("--json", default=None, help="also write the table here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    invariance.ROWS, invariance.TILE = args.rows, args.tile
    native = device.cpu_has_native_bf16()
    device.cpu_has_native_bf16 = lambda: True  # measure bf16 here even where radd would not pick it
    model = random_weights(RADD(benchmark.size_config(args.size)))
    schedule, length = get_schedule("loglinear"), model.config.length

    def draw(batch: int, precision: Precision, invariant: bool) -> torch.Tensor:
        config = SamplingConfig(steps=args.steps, batch_invariant=invariant)
        return generate(model, schedule, config, num_samples=batch, length=length, seeds=range(batch),
                        batch_size=batch, device=CPU, precision=precision).tokens

    runs = [(b, p, i) for p in PRECISIONS for b in BATCHES for i in (False, True)]
    times: dict[tuple, list[float]] = {run: [] for run in runs}
    tokens: dict[tuple, torch.Tensor] = {}
    for repeat in range(args.repeats + 1):  # the first round warms up and is dropped
        for run in runs:
            started = time.perf_counter()
            tokens[run] = draw(*run)
            if repeat:
                times[run].append(time.perf_counter() - started)
    print(f"{args.size} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, length {length}), "
          f"{args.steps} steps, {args.threads} threads, ROWS={invariance.ROWS}, TILE={invariance.TILE}, "
          f"native bf16: {native}, load average {os.getloadavg()[0]:.1f}")
    print("| precision | batch | tokens/s without | tokens/s with | with / without | sample 0 at every batch |")
    print("|---|---|---|---|---|---|")
    rows = []
    for precision in PRECISIONS:
        first = {b: tokens[(b, precision, True)][0] for b in BATCHES}
        identical = all(torch.equal(first[b], first[1]) for b in BATCHES)
        for batch in BATCHES:
            rate = {i: batch * length / statistics.median(times[(batch, precision, i)]) for i in (False, True)}
            rows.append({"precision": str(precision), "batch": batch, "without": rate[False], "with": rate[True]})
            print(f"| {precision} | {batch} | {rate[False]:,.0f} | {rate[True]:,.0f} | "
                  f"{rate[True] / rate[False]:.2f}× | {'identical' if identical else 'DIFFERENT'} |", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"size": args.size, "steps": args.steps, "rows_per_call": invariance.ROWS,
                       "tile": invariance.TILE, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
