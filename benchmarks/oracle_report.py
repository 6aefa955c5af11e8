"""The exact-oracle numbers behind the tests, printed: objective means vs −log p(x), sampler distances
vs their noise level, NFE vs E-NFE. Run from the repository root: python benchmarks/oracle_report.py"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from radd_cli.core.losses import LOSSES, TRAINING_LOSSES
from radd_cli.core.schedule import get_schedule
from radd_cli.sampling import expected_nfe, nfe_standard_deviation, sample

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/oracle.py: run from anywhere
from tests.oracle import (  # noqa: E402
    ExactConditionals,
    chi_square,
    chi_square_limit,
    expected_total_variation,
    total_variation,
)

DRAWS = 20000


def objectives(oracle: ExactConditionals) -> None:
    picked = torch.tensor([0, 17, 40, 58, 80])
    x = oracle.sequences[picked]
    print(f"objectives (10,000 draws per x) vs -log p(x) = {[round(v, 3) for v in oracle.neg_log_prob(x).tolist()]}")
    for schedule_name in ("loglinear", "geometric"):
        for name in [*TRAINING_LOSSES, "ar_forward", "ar_backward", "ar_random"]:
            repeats = 1 if name.startswith("ar_") else 2000
            generator = torch.Generator().manual_seed(0)
            draws = torch.cat(
                [
                    LOSSES[name](oracle, x.repeat(repeats, 1), get_schedule(schedule_name), generator=generator)
                    for _ in range(5 if repeats > 1 else 1)
                ]
            ).view(-1, len(picked))
            error = draws.mean(0) - oracle.neg_log_prob(x)
            if repeats == 1:
                print(f"  {schedule_name:9s} {name:10s} max |mean - target| = {error.abs().max():.2e} (exact)")
            else:
                z = error / (draws.std(0) / math.sqrt(draws.shape[0]))
                print(f"  {schedule_name:9s} {name:10s} z-scores {[round(v, 2) for v in z.tolist()]}")


def samplers(oracle: ExactConditionals) -> None:
    schedule = get_schedule("loglinear")
    template = torch.tensor([oracle.mask_id, 1, oracle.mask_id, 0])
    cases = [
        ("ordered, forward", dict(method="ordered"), oracle.probs),
        ("ordered, order 2 0 3 1", dict(method="ordered", order=torch.tensor([2, 0, 3, 1])), oracle.probs),
        ("tweedie, 1000 steps", dict(steps=1000), oracle.probs),
        ("euler, 1000 steps", dict(method="euler", steps=1000), oracle.probs),
        ("tweedie, 1 step vs marginals", dict(steps=1), oracle.product_of_marginals()),
        ("template, tweedie 1000", dict(steps=1000, template=template), oracle.conditional(template)),
    ]
    print(f"samplers ({DRAWS} draws): total variation vs its noise level E[TV], chi-square vs its 1e-4 limit")
    for label, kwargs, target in cases:
        result = sample(
            oracle, schedule, num_samples=DRAWS, length=4, generator=torch.Generator().manual_seed(1), **kwargs
        )
        counts = torch.bincount(oracle.index_of(result.tokens), minlength=len(target))
        statistic, dof = chi_square(counts, target)
        print(
            f"  {label:30s} TV {total_variation(counts, target):.4f} (noise {expected_total_variation(target, DRAWS):.4f})"
            f"  chi2 {statistic:.1f} < {chi_square_limit(dof):.1f}"
        )


def nfe() -> None:
    schedule = get_schedule("loglinear")

    class Uniform(torch.nn.Module):
        vocab_size, mask_id = 5, 5

        def forward(self, tokens):
            return torch.full((*tokens.shape, 5), -math.log(5))

    print("NFE per sequence with the cache (4000 sequences) vs E-NFE ± standard error")
    for steps, length in ((64, 32), (256, 128), (1024, 128)):
        result = sample(
            Uniform(),
            schedule,
            num_samples=4000,
            length=length,
            steps=steps,
            batch_size=500,
            generator=torch.Generator().manual_seed(2),
        )
        spread = nfe_standard_deviation(schedule, steps, length) / math.sqrt(4000)
        print(
            f"  steps {steps:5d}, length {length:4d}: {result.nfe:.2f} vs {expected_nfe(schedule, steps, length):.2f} ± {spread:.2f}"
        )


if __name__ == "__main__":
    model = ExactConditionals(vocab_size=3, length=4, seed=0)
    objectives(model)
    samplers(model)
    nfe()
