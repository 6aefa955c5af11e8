"""The engine's network call: guidance costs two evaluations a step and weight 0 is no guidance."""

import pytest
import torch

from radd_cli.errors import ConfigError
from radd_cli.sampling import (
    sample,
)
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
