"""Across samplers: the ones that are exact draw from p (cross-cutting, on the exact oracle)."""

import pytest

from tests.sampling.oracle_draws import assert_draws_from, draws


@pytest.mark.parametrize(
    "settings",
    [
        dict(method="confidence", steps=4, confidence="margin"),
        dict(method="confidence", steps=4, confidence="entropy"),
        dict(method="threshold", threshold=1.0, confidence="margin"),
        dict(method="first_hitting"),
        dict(method="tweedie", steps=400, block_length=2),
        dict(method="remdm", steps=60, eta=0.0),
    ],
    ids=["confidence-margin", "confidence-entropy", "threshold-1", "first-hitting", "blocks", "remdm-eta-0"],
)
def test_samplers_that_are_exact_draw_from_p(oracle, settings):
    """One token per call in an order that depends only on the visible tokens is exact; so is σ ≡ 0."""
    result = draws(oracle, 11, **settings)
    assert_draws_from(oracle, result.tokens, oracle.probs, wrong=oracle.product_of_marginals())
