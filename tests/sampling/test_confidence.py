"""confidence and threshold: which are exact, calls that follow the steps or adapt to the network, greedy."""

import math

import torch

from radd_cli.sampling import (
    sample,
)
from tests.oracle import chi_square, chi_square_limit
from tests.sampling.oracle_draws import LOGLINEAR, assert_draws_from, counts_of, draws


def test_confidence_by_the_drawn_tokens_probability_is_not_exact(oracle):
    """Choosing where to unmask by the proposal's own probability biases towards likely tokens."""
    counts = counts_of(oracle, draws(oracle, 12, method="confidence", steps=4).tokens)
    statistic, dof = chi_square(counts, oracle.probs)
    assert statistic > 10 * chi_square_limit(dof)


def test_confidence_follows_the_step_count_and_threshold_adapts(oracle):
    template = torch.tensor([oracle.mask_id, 1, oracle.mask_id, oracle.mask_id])
    for steps, calls in ((1, 1), (2, 2), (3, 3), (10, 3)):
        result = draws(oracle, 13, num_samples=50, method="confidence", steps=steps, template=template)
        assert (result.nfe_per_sample == calls).all() and (result.tokens[:, 1] == 1).all()
    everything_at_once = draws(oracle, 14, method="threshold", threshold=1e-9)
    assert (everything_at_once.nfe_per_sample == 1).all()  # the product of the marginals, in one call
    assert_draws_from(oracle, everything_at_once.tokens, oracle.product_of_marginals(), wrong=oracle.probs)
    middle = draws(oracle, 15, method="threshold", threshold=0.5)
    assert 1 < middle.nfe < 4 and middle.nfe_per_sample.max() <= 4


def test_greedy_proposals_are_the_most_likely_tokens(oracle):
    result = draws(oracle, 16, num_samples=20, method="confidence", steps=4, greedy=True, confidence="margin")
    assert (result.tokens == result.tokens[0]).all()  # no randomness left


def test_the_thresholds_calls_adapt_to_a_sure_network():
    class Sure(torch.nn.Module):
        """Certain of token 0 everywhere: a threshold sampler needs a single call."""

        vocab_size, mask_id = 4, 4

        def forward(self, tokens):
            log_p = torch.full((*tokens.shape, 4), -math.inf)
            log_p[..., 0] = 0.0
            return log_p

    result = sample(Sure(), LOGLINEAR, num_samples=3, length=16, method="threshold", threshold=0.9, seeds=range(3))
    assert (result.nfe_per_sample == 1).all() and (result.tokens == 0).all()
