"""Draws from the exact oracle (tests/oracle.py) and the test that they follow a known distribution."""

import torch

from radd_cli.core.schedule import get_schedule
from radd_cli.sampling import sample
from tests.oracle import chi_square, chi_square_limit, expected_total_variation, total_variation

LOGLINEAR = get_schedule("loglinear")
DRAWS = 20000  # samples per distribution test of an exact sampler
SUITE_DRAWS = 6000  # the same for the samplers after the paper (several settings each)


def counts_of(oracle, tokens):
    return torch.bincount(oracle.index_of(tokens), minlength=len(oracle.probs))


def assert_draws_from(oracle, tokens, probs, wrong=None):
    """Pearson's χ² test at level 1e-4, and the total-variation distance against its noise level."""
    counts = counts_of(oracle, tokens)
    statistic, dof = chi_square(counts, probs)
    assert statistic < chi_square_limit(dof)
    assert total_variation(counts, probs) < 2.5 * expected_total_variation(probs, len(tokens))
    if wrong is not None:  # the same test tells p from a plausible wrong answer
        statistic, dof = chi_square(counts, wrong)
        assert statistic > 10 * chi_square_limit(dof)


def draws(oracle, seed, num_samples=SUITE_DRAWS, **settings):
    return sample(
        oracle, LOGLINEAR, num_samples=num_samples, length=4, generator=torch.Generator().manual_seed(seed), **settings
    )
