"""The engine's network call: guidance costs two evaluations a step and weight 0 is no guidance."""

import pytest
import torch

from radd_cli.errors import ConfigError
from radd_cli.sampling import (
    sample,
)
from radd_cli.sampling.config import MAX_GUIDANCE
from tests.sampling.oracle_draws import LOGLINEAR


def test_guidance_with_weight_zero_is_no_guidance_and_costs_two_calls_a_step(tiny_model):
    template = torch.full((8,), tiny_model.mask_id)
    template[:3] = torch.tensor([1, 2, 3])
    common = dict(num_samples=5, length=8, steps=8, template=template, seeds=range(5))
    plain = sample(tiny_model, LOGLINEAR, **common)
    unguided = sample(tiny_model, LOGLINEAR, guidance=0.0, **common)
    assert torch.equal(plain.tokens, unguided.tokens)
    guided = sample(tiny_model, LOGLINEAR, guidance=1.5, **common)
    assert torch.equal(guided.nfe_per_sample, 2 * plain.nfe_per_sample)
    assert (guided.tokens[:, :3] == torch.tensor([1, 2, 3])).all()
    with pytest.raises(ConfigError, match="guidance: needs given tokens"):
        sample(tiny_model, LOGLINEAR, num_samples=2, length=8, guidance=1.0)


@pytest.mark.parametrize("method", ["tweedie", "euler", "ordered", "first_hitting", "confidence", "remdm"])
def test_the_largest_guidance_weight_gives_finite_draws_with_every_sampler(tiny_model, method):
    """The bound on guidance is where the math still holds: the guided log-probs stay finite."""
    template = torch.tensor([3, 5] + [tiny_model.config.vocab_size] * 6)  # given tokens to guide by
    result = sample(
        tiny_model, LOGLINEAR, num_samples=3, length=8, template=template, method=method, guidance=MAX_GUIDANCE,
        seeds=range(3),
    )
    assert (result.tokens[:, :2] == template[:2]).all() and (result.tokens < tiny_model.config.vocab_size).all()
