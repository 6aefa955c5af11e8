"""The all-positions sampler (the published code's way) and the fast one agree in distribution."""

import torch

from radd_cli.sampling import (
    sample,
    sample_all_positions,
)
from tests.oracle import chi_square, chi_square_limit
from tests.sampling.oracle_draws import DRAWS, LOGLINEAR, counts_of


def test_fast_path_agrees_in_distribution_with_the_all_positions_sampler(oracle):
    # With 6 steps several tokens often unmask together, so neither is exact: both must still agree.
    fast = sample(oracle, LOGLINEAR, num_samples=DRAWS, length=4, steps=6, generator=torch.Generator().manual_seed(6))
    slow = sample_all_positions(
        oracle, LOGLINEAR, num_samples=DRAWS, length=4, steps=6, generator=torch.Generator().manual_seed(7)
    )
    fast_counts, slow_counts = counts_of(oracle, fast.tokens), counts_of(oracle, slow.tokens)
    table = torch.stack([fast_counts, slow_counts]).double()  # a 2 × 81 contingency table
    seen = table.sum(0) > 0
    expected = table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / table.sum()
    statistic = float(((table - expected)[:, seen] ** 2 / expected[:, seen]).sum())
    assert statistic < chi_square_limit(int(seen.sum()) - 1)
    statistic, dof = chi_square(slow_counts, oracle.probs)
    assert statistic > 10 * chi_square_limit(dof)  # 6 steps really is inexact here
