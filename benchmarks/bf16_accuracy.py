"""How far bf16 inference is from fp32: zero-shot NLL, NFE against E-NFE, and the exact-oracle χ².

    python benchmarks/bf16_accuracy.py [--model runs/tiny/final --model runs/markov/final] [--mc-samples 16]

For each model, `radd_cli.evaluate_perplexity` on its validation split in fp32 and in bf16 with the same
seed (so the same masks: the difference is the precision's alone), the relative NLL difference against
the 0.5% target, and the time of each; then `radd_cli.generate` in bf16 with the cache, whose NFE per
sequence must fall within E-NFE ± 2 standard errors. Last, the exact-oracle samplers of
benchmarks/oracle_report.py in bf16 (the oracle computes in float64, which autocast leaves alone: its χ²
equals fp32's, and checks that the samplers' own float64 draws do not follow the autocast). bf16 runs
emulated on CPUs without native bf16 (slowly).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

import radd_cli.device as device
from radd_cli.core.schedule import get_schedule
from radd_cli.data import sources
from radd_cli.device import Precision
from radd_cli.evaluation.perplexity import evaluate_perplexity
from radd_cli.io.inference import load_for_inference
from radd_cli.sampling import SamplingConfig, expected_nfe, generate, nfe_standard_deviation, sample

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/oracle.py: run from anywhere
from tests.oracle import ExactConditionals, chi_square, chi_square_limit  # noqa: E402

PRECISIONS = (Precision.fp32, Precision.bf16)
TARGET = 0.005  # NLL within 0.5% of fp32


def nll(path: str, split: str, mc_samples: int, blocks_limit: int | None) -> None:
    loaded = load_for_inference(path, "cpu", "fp32")
    data = loaded_validation(path, loaded, split)[:blocks_limit]
    found = {}
    for precision in PRECISIONS:
        started = time.perf_counter()
        report = evaluate_perplexity(loaded.model, loaded.schedule, data, mc_samples=mc_samples, batch_size=32,
                                     seed=0, precision=precision)
        found[precision] = (report, time.perf_counter() - started)
    (low, t32), (high, t16) = found[Precision.fp32], found[Precision.bf16]
    difference = high.nll_per_token - low.nll_per_token
    print(f"| {path} | {len(data)} × {data.shape[1]} | {low.nll_per_token:.4f} ± {low.standard_error:.4f} | "
          f"{high.nll_per_token:.4f} | {difference:+.4f} ({100 * difference / low.nll_per_token:+.3f}%) | "
          f"{'yes' if abs(difference) <= TARGET * low.nll_per_token else 'NO'} | {t32 / t16:.2f}× |", flush=True)


def loaded_validation(path: str, loaded, split: str):
    """The validation blocks of the data the model was trained on (its run folder's recipe.json)."""
    recipe = Path(path).parent / "recipe.json"
    if not recipe.is_file():
        raise SystemExit(f"{path}: give a run's final/ folder (its recipe.json says which data to score)")
    data = json.loads(recipe.read_text())["data"]
    return sources.load_blocks(data["valid"], split, loaded.tokenizer, loaded.model.config.length,
                               Path(data["cache_dir"]).expanduser())


def nfe(path: str, samples: int, steps: int) -> None:
    loaded = load_for_inference(path, "cpu", "bf16")
    length = loaded.model.config.length
    result = generate(loaded.model, loaded.schedule, SamplingConfig(steps=steps), num_samples=samples, length=length,
                      seeds=range(samples), batch_size=64, precision=Precision.bf16)
    mean = expected_nfe(loaded.schedule, steps, length)
    error = nfe_standard_deviation(loaded.schedule, steps, length) / math.sqrt(samples)
    inside = abs(result.nfe - mean) <= 2 * error
    print(f"| {path} | {samples} × {length}, {steps} steps | {result.nfe:.2f} | {mean:.2f} ± {error:.2f} | "
          f"{'yes' if inside else 'NO'} |", flush=True)


def oracle_chi_square(draws: int) -> None:
    oracle, schedule = ExactConditionals(vocab_size=3, length=4, seed=0), get_schedule("loglinear")
    cases = (("ordered, forward", dict(method="ordered")), ("tweedie, 1000 steps", dict(steps=1000)))
    for label, kwargs in cases:
        row = []
        for precision in PRECISIONS:
            result = sample(oracle, schedule, num_samples=draws, length=4, generator=torch.Generator().manual_seed(1),
                            precision=precision, **kwargs)
            counts = torch.bincount(oracle.index_of(result.tokens), minlength=len(oracle.probs))
            statistic, dof = chi_square(counts, oracle.probs)
            row.append(statistic)
        print(f"| {label} | {draws} | {row[0]:.1f} | {row[1]:.1f} | {chi_square_limit(dof):.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", default=[], help="a run's final/ folder (repeatable)")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--mc-samples", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=None, help="evaluate only the first this many blocks")
    parser.add_argument("--samples", type=int, default=256, help="sequences for the NFE check")
    parser.add_argument("--steps", type=int, default=256, help="sampling steps for the NFE check")
    parser.add_argument("--draws", type=int, default=20000, help="draws for the oracle χ²")
    args = parser.parse_args()
    native = device.cpu_has_native_bf16()
    device.cpu_has_native_bf16 = lambda: True  # measure bf16 also where radd would not pick it
    print(f"native bf16: {native}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}\n")
    if args.model:
        print("| model | blocks | NLL fp32 (nats/token) | NLL bf16 | bf16 − fp32 | within 0.5% | bf16 speed-up |")
        print("|---|---|---|---|---|---|---|")
        for path in args.model:
            nll(path, args.split, args.mc_samples, args.blocks)
        print("\n| model (bf16) | samples | NFE per sequence | E-NFE ± standard error | within 2 standard errors |")
        print("|---|---|---|---|---|")
        for path in args.model:
            nfe(path, args.samples, args.steps)
        print()
    print("| exact oracle (V 3, L 4) | draws | χ² fp32 | χ² bf16 | limit (level 1e-4) |")
    print("|---|---|---|---|---|")
    oracle_chi_square(args.draws)


if __name__ == "__main__":
    main()
