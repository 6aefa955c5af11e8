"""tweedie, euler, ordered and first_hitting draw from p for a model that knows p; with the cache, one call per
distinct unmasking step, as many as E-NFE says (docs/sampling.md)."""

import math

import pytest
import torch

from radd_cli.sampling import (
    expected_nfe,
    nfe_standard_deviation,
    sample,
)
from tests.oracle import chi_square, chi_square_limit
from tests.sampling.oracle_draws import DRAWS, LOGLINEAR, SUITE_DRAWS, assert_draws_from, counts_of, draws


class Uniform(torch.nn.Module):
    """Uniform predictions at any length, counting the rows it evaluates."""

    def __init__(self, vocab_size=5):
        super().__init__()
        self.vocab_size, self.mask_id, self.rows = vocab_size, vocab_size, 0

    def forward(self, tokens):
        self.rows += tokens.shape[0]
        return torch.full((*tokens.shape, self.vocab_size), -math.log(self.vocab_size))


@pytest.mark.parametrize("order", [None, torch.tensor([2, 0, 3, 1])], ids=["forward", "custom"])
def test_ordered_draws_from_p(oracle, order):
    result = sample(
        oracle,
        LOGLINEAR,
        num_samples=DRAWS,
        length=4,
        method="ordered",
        order=order,
        generator=torch.Generator().manual_seed(0),
    )
    assert_draws_from(oracle, result.tokens, oracle.probs, wrong=oracle.product_of_marginals())
    assert result.nfe == 4


def test_ordered_with_a_random_order_per_sample(oracle):
    generator = torch.Generator().manual_seed(1)
    orders = torch.stack([torch.randperm(4, generator=generator) for _ in range(DRAWS)])
    result = sample(oracle, LOGLINEAR, num_samples=DRAWS, length=4, method="ordered", order=orders, generator=generator)
    assert_draws_from(oracle, result.tokens, oracle.probs)


@pytest.mark.parametrize("method", ["tweedie", "euler"])
def test_diffusion_with_many_steps_draws_from_p(oracle, method):
    result = sample(
        oracle,
        LOGLINEAR,
        num_samples=DRAWS,
        length=4,
        steps=1000,
        method=method,
        generator=torch.Generator().manual_seed(2),
    )
    assert_draws_from(oracle, result.tokens, oracle.probs, wrong=oracle.product_of_marginals())


def test_one_step_draws_from_the_product_of_marginals(oracle):
    result = sample(oracle, LOGLINEAR, num_samples=DRAWS, length=4, steps=1, generator=torch.Generator().manual_seed(3))
    assert_draws_from(oracle, result.tokens, oracle.product_of_marginals(), wrong=oracle.probs)
    assert result.nfe == 1


def test_template_keeps_fixed_tokens_and_draws_from_the_conditional(oracle):
    template = torch.tensor([oracle.mask_id, 1, oracle.mask_id, 0])
    result = sample(
        oracle,
        LOGLINEAR,
        num_samples=DRAWS,
        length=4,
        steps=1000,
        template=template,
        generator=torch.Generator().manual_seed(4),
    )
    assert (result.tokens[:, [1, 3]] == torch.tensor([1, 0])).all()
    assert_draws_from(oracle, result.tokens, oracle.conditional(template))
    ordered = sample(
        oracle,
        LOGLINEAR,
        num_samples=DRAWS,
        length=4,
        method="ordered",
        template=template,
        generator=torch.Generator().manual_seed(5),
    )
    assert_draws_from(oracle, ordered.tokens, oracle.conditional(template))
    assert ordered.nfe == 2  # only the free positions cost a call


def test_each_sample_may_have_its_own_template(oracle):
    """Prompts of different lengths in one batch: each row draws from its own conditional, as if alone."""
    first = torch.tensor([1, oracle.mask_id, oracle.mask_id, oracle.mask_id])  # a prefix of one token
    second = torch.tensor([0, 2, oracle.mask_id, oracle.mask_id])  # a prefix of two
    templates = torch.stack([first, second]).repeat(DRAWS, 1)  # (2·DRAWS, 4), interleaved
    settings = dict(length=4, method="ordered", order="random")  # exact: one position per call
    result = sample(
        oracle,
        LOGLINEAR,
        num_samples=len(templates),
        template=templates,
        seeds=range(len(templates)),
        batch_size=64,
        **settings,
    )
    assert torch.equal(result.tokens[0::2, :1], first[None, :1].expand(DRAWS, 1))
    assert_draws_from(oracle, result.tokens[0::2], oracle.conditional(first), wrong=oracle.conditional(second))
    assert_draws_from(oracle, result.tokens[1::2], oracle.conditional(second), wrong=oracle.conditional(first))
    alone = sample(oracle, LOGLINEAR, num_samples=1, template=second, seeds=[7], **settings)
    assert torch.equal(alone.tokens[0], result.tokens[7])  # sample 7 used seed 7 and the second template


def test_cached_evaluations_per_sequence_match_e_nfe():
    model, steps, length, count = Uniform(), 64, 32, 4000
    result = sample(
        model,
        LOGLINEAR,
        num_samples=count,
        length=length,
        steps=steps,
        batch_size=500,
        generator=torch.Generator().manual_seed(8),
        batch_invariant=False,  # the rows that pad a batch-invariant call are nobody's evaluations
    )
    measured = result.nfe_per_sample.double()
    standard_error = nfe_standard_deviation(LOGLINEAR, steps, length) / math.sqrt(count)
    assert measured.std() == pytest.approx(nfe_standard_deviation(LOGLINEAR, steps, length), rel=0.1)
    expected = expected_nfe(LOGLINEAR, steps, length)
    assert abs(expected - steps * (1 - (1 - 1 / steps) ** length)) < 0.01  # the paper's Eq. 3.4
    assert abs(measured.mean() - expected) < 4 * standard_error
    assert model.rows == measured.sum()  # NFE counts real network calls, row by row
    uncached = sample(
        Uniform(),
        LOGLINEAR,
        num_samples=50,
        length=length,
        steps=steps,
        cache=False,
        generator=torch.Generator().manual_seed(9),
    )
    assert uncached.nfe == steps


def test_the_first_hitting_sampler_matches_the_published_algorithm(oracle):
    """Zheng et al.'s first-hitting sampler, written out: draw the next time, unmask one uniformly chosen
    masked position with a draw from the network. Both samplers must draw the same distribution."""
    generator = torch.Generator().manual_seed(17)
    x = torch.full((SUITE_DRAWS, 4), oracle.mask_id)
    t = torch.ones(SUITE_DRAWS, dtype=torch.float64)
    for remaining in range(4, 0, -1):
        t = t * torch.rand(SUITE_DRAWS, generator=generator, dtype=torch.float64) ** (1 / remaining)  # τ = t·u^{1/n}
        masked = (x == oracle.mask_id).double()
        chosen = torch.multinomial(masked, 1, generator=generator).squeeze(1)  # uniformly among the masked
        probs = oracle(x)[torch.arange(SUITE_DRAWS), chosen].double().exp()
        x[torch.arange(SUITE_DRAWS), chosen] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    assert (t > 0).all() and (t < 1).all()
    published = counts_of(oracle, x)
    ours = counts_of(oracle, draws(oracle, 18, method="first_hitting").tokens)
    table = torch.stack([published, ours]).double()
    seen = table.sum(0) > 0
    expected = table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / table.sum()
    statistic = float(((table - expected)[:, seen] ** 2 / expected[:, seen]).sum())
    assert statistic < chi_square_limit(int(seen.sum()) - 1)
    assert chi_square(published, oracle.probs)[0] < chi_square_limit(chi_square(published, oracle.probs)[1])
