"""Exact samplers draw from p for a model that knows p (docs/sampling.md); the cache's NFE matches E-NFE."""

import math

import pytest
import torch

from radd_cli.core.schedule import get_schedule
from radd_cli.errors import ConfigError
from radd_cli.sampling import (
    Strategy,
    draw_categorical,
    expected_nfe,
    nfe_standard_deviation,
    sample,
    sample_all_positions,
)
from tests.oracle import chi_square, chi_square_limit, expected_total_variation, total_variation

LOGLINEAR = get_schedule("loglinear")
DRAWS = 20000


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
    result = sample(
        oracle, LOGLINEAR, num_samples=DRAWS, length=4, method="ordered", order=orders, generator=generator
    )
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
        oracle, LOGLINEAR, num_samples=len(templates), template=templates, seeds=range(len(templates)), batch_size=64, **settings
    )
    assert torch.equal(result.tokens[0::2, :1], first[None, :1].expand(DRAWS, 1))
    assert_draws_from(oracle, result.tokens[0::2], oracle.conditional(first), wrong=oracle.conditional(second))
    assert_draws_from(oracle, result.tokens[1::2], oracle.conditional(second), wrong=oracle.conditional(first))
    alone = sample(oracle, LOGLINEAR, num_samples=1, template=second, seeds=[7], **settings)
    assert torch.equal(alone.tokens[0], result.tokens[7])  # sample 7 used seed 7 and the second template


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


class Uniform(torch.nn.Module):
    """Uniform predictions at any length, counting the rows it evaluates."""

    def __init__(self, vocab_size=5):
        super().__init__()
        self.vocab_size, self.mask_id, self.rows = vocab_size, vocab_size, 0

    def forward(self, tokens):
        self.rows += tokens.shape[0]
        return torch.full((*tokens.shape, self.vocab_size), -math.log(self.vocab_size))


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


def test_e_nfe_reproduces_the_papers_numbers():
    for steps, value in [(512, 442.8), (1024, 647.5), (2048, 806.0), (4096, 906.1)]:
        assert expected_nfe(LOGLINEAR, steps, 1024) == pytest.approx(value, abs=0.1)


def test_samples_do_not_depend_on_the_batch_size(tiny_model):
    kwargs = dict(num_samples=6, length=8, steps=16, seeds=[11, 12, 13, 14, 15, 16])
    one = sample(tiny_model, LOGLINEAR, batch_size=1, **kwargs)
    all_at_once = sample(tiny_model, LOGLINEAR, batch_size=6, **kwargs)
    assert torch.equal(one.tokens, all_at_once.tokens) and torch.equal(one.nfe_per_sample, all_at_once.nfe_per_sample)
    alone = sample(tiny_model, LOGLINEAR, num_samples=1, length=8, steps=16, seeds=[13])
    assert torch.equal(alone.tokens[0], one.tokens[2])
    again = sample(tiny_model, LOGLINEAR, num_samples=6, length=8, steps=16, generator=torch.Generator().manual_seed(0))
    twice = sample(
        tiny_model,
        LOGLINEAR,
        num_samples=6,
        length=8,
        steps=16,
        batch_size=4,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(again.tokens, twice.tokens)


def test_strategies_on_hand_made_distributions():
    log_p = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert torch.allclose(Strategy().probabilities(log_p), log_p.exp())
    assert torch.allclose(
        Strategy("top_k", top_k=2).probabilities(log_p), torch.tensor([[0.625, 0.375, 0, 0]])
    )
    assert torch.allclose(Strategy("top_p", top_p=0.5).probabilities(log_p), torch.tensor([[1.0, 0, 0, 0]]))
    assert torch.allclose(
        Strategy("top_p", top_p=0.7).probabilities(log_p), torch.tensor([[0.625, 0.375, 0, 0]])
    )
    assert torch.allclose(Strategy("top_p", top_p=1.0).probabilities(log_p), log_p.exp())
    cooled = Strategy(temperature=0.5).probabilities(log_p)
    squared = log_p.exp() ** 2
    assert torch.allclose(cooled, squared / squared.sum())
    both = Strategy("top_k", top_k=1, temperature=3.0).probabilities(log_p)
    assert both.tolist() == [[1.0, 0.0, 0.0, 0.0]]


def test_categorical_draws_invert_the_float64_cdf():
    probs = torch.tensor([[0.25, 0.0, 0.75], [1e-300, 1.0, 0.0]], dtype=torch.float64)
    assert draw_categorical(probs, torch.tensor([0.2499, 0.0])).tolist() == [0, 0]
    assert draw_categorical(probs, torch.tensor([0.25, 0.5])).tolist() == [2, 1]
    assert draw_categorical(probs, torch.tensor([0.9999999, 0.9999999])).tolist() == [2, 1]


@pytest.mark.parametrize("vocab", [3, 257, 2048, 50257])
def test_the_two_level_draw_equals_inverting_the_whole_float64_cdf(vocab):
    generator = torch.Generator().manual_seed(vocab)
    probs = torch.rand(300, vocab, generator=generator) ** 8
    probs[:, ::3] = 0.0  # tokens of mass 0 at the start of rows and chunks
    probs = probs / probs.sum(dim=-1, keepdim=True)
    u = torch.rand(300, generator=generator, dtype=torch.float64)
    whole = probs.double().cumsum(dim=-1)
    expected = torch.searchsorted(whole, (u * whole[:, -1])[:, None], right=True).squeeze(-1)
    assert torch.equal(draw_categorical(probs, u), expected)
    for edge in (0.0, 1 - 2**-53):
        drawn = draw_categorical(probs, torch.full((300,), edge, dtype=torch.float64))
        assert (probs.gather(1, drawn[:, None]) > 0).all()



@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(strategy="top_p", top_p=0.0), "top_p: must be greater than 0"),
        (dict(strategy="top_p", top_p=1.5), "top_p: must be at most 1"),
        (dict(strategy="top_p"), "strategy top_p needs a top_p value"),
        (dict(strategy="top_k", top_k=0), "top_k: must be at least 1"),
        (dict(top_k=3), "use strategy top_k"),
        (dict(temperature=0.0), "temperature: must be greater than 0"),
        (dict(temperature=float("nan")), "temperature: must be a finite number"),
        (dict(strategy="nucleus"), "name: 'nucleus' is not one of 'direct', 'top_p', 'top_k'"),
        (dict(steps=0), "steps: must be at least 1"),
        (dict(steps=10**9), "steps: must be at most 1000000"),
        (dict(method="ancestral"), "unknown sampler 'ancestral'"),
        (dict(order="backward"), "--order applies to ordered, not to tweedie"),
        (dict(num_samples=0), "num_samples must be at least 1"),
        (dict(seeds=[1, 2, -1]), "seeds must be whole numbers in 0..2\\^64-1, got -1"),
        (dict(seeds=[1, 2, 2**64]), "seeds must be whole numbers"),
        (dict(template=torch.tensor([1, 2, 0, 1])), "no free position"),
        (dict(template=torch.tensor([3, 3])), "must be \\(4,\\)"),
        (dict(template=torch.full((2, 4), 3)), "must be \\(4,\\), one id per position, or \\(3, 4\\)"),
        (dict(template=torch.tensor([[3, 3, 3, 3], [3, 3, 3, 3], [1, 2, 0, 1]])), "no free position"),
        (dict(method="ordered", steps=None, order=torch.tensor([0, 0, 1, 2])), "permutation"),
        (dict(seeds=[1, 2]), "2 seeds for 3 samples"),
    ],
)
def test_bad_sampler_arguments_are_config_errors(oracle, kwargs, message):
    arguments = dict(num_samples=3, length=4, steps=4) | kwargs
    with pytest.raises(ConfigError, match=message):
        sample(oracle, LOGLINEAR, **arguments)

@pytest.mark.parametrize("vocab", [3, 2048])
def test_a_draw_for_no_rows_is_empty(vocab):
    """A step where no position unmasks (cache off) asks for zero draws; the two-level draw must not fail."""
    assert draw_categorical(torch.rand(0, vocab), torch.rand(0)).shape == (0,)
