"""ReMDM: tokens return to the mask, every call is counted, every schedule finishes."""

import pytest
import torch

from radd_cli.sampling import (
    sample,
)
from tests.sampling.oracle_draws import LOGLINEAR, draws


class Recording(torch.nn.Module):
    """Wraps a model and keeps every input it is called with."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.vocab_size, self.mask_id = inner, inner.vocab_size, inner.mask_id
        self.length = getattr(inner, "length", None)
        self.inputs = []

    def forward(self, tokens):
        self.inputs.append(tokens.clone())
        return self.inner(tokens)


def test_remasking_returns_tokens_to_the_mask_and_counts_every_call(oracle):
    model = Recording(oracle)
    settings = dict(method="remdm", eta=0.5, batch_invariant=False)  # one call per step, not one per 2 rows
    result = sample(model, LOGLINEAR, num_samples=40, length=4, steps=30, seeds=range(40), **settings)
    assert (result.nfe_per_sample == 30).all() and len(model.inputs) == 30
    remasked = sum(
        int(((before != oracle.mask_id) & (after == oracle.mask_id)).sum())
        for before, after in zip(model.inputs, model.inputs[1:])
    )
    assert remasked > 0 and (result.tokens != oracle.mask_id).all()
    plain = sample(oracle, LOGLINEAR, num_samples=40, length=4, steps=30, method="remdm", eta=0.0, seeds=range(40))
    assert not torch.equal(plain.tokens, result.tokens)


@pytest.mark.parametrize("remasking", ["cap", "rescale", "conf", "loop"])
def test_every_remasking_schedule_finishes_every_position(oracle, remasking):
    result = draws(oracle, 19, num_samples=200, method="remdm", steps=40, remasking=remasking, eta=0.1)
    assert (result.tokens != oracle.mask_id).all() and (result.nfe_per_sample == 40).all()
