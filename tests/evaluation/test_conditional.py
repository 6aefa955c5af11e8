"""log p(continuation | context) with the positions after them marginalised: exact (left to right) and
Monte-Carlo (unbiased), checked against enumeration on the exact oracle."""

from __future__ import annotations

import pytest
import torch

from radd_cli.core.schedule import get_schedule
from radd_cli.evaluation import conditional

# (context, continuation) over the oracle's V = 3, L = 4; positions after them are marginalised out
PAIRS = [([0], [1, 2]), ([2, 1], [0]), ([1], [1]), ([], [2, 0, 1]), ([0, 0, 2], [1])]


def enumerated(oracle, context, continuation) -> float:
    """log p(continuation | context) by summing the oracle's p over every completion."""
    prefix = torch.tensor(context + continuation)
    matches = lambda ids: (oracle.sequences[:, : len(ids)] == ids).all(-1)  # noqa: E731
    joint = oracle.probs[matches(prefix)].sum()
    given = oracle.probs[matches(torch.tensor(context, dtype=torch.long))].sum() if context else 1.0
    return float(torch.log(joint / given))


def laid_out(oracle):
    laid = [conditional.layout(c, x, oracle.length, oracle.mask_id) for c, x in PAIRS]
    return torch.stack([t for t, _ in laid]), torch.stack([g for _, g in laid])


def test_layout_puts_the_context_then_the_continuation_then_masks():
    tokens, given = conditional.layout([7, 8, 9], [4, 5], length=6, mask_id=10)
    assert tokens.tolist() == [7, 8, 9, 4, 5, 10] and given.tolist() == [True, True, True, False, False, True]
    tokens, given = conditional.layout([7, 8, 9], [4, 5], length=4, mask_id=10)  # the context is cut from the left
    assert tokens.tolist() == [8, 9, 4, 5] and given.tolist() == [True, True, False, False]
    with pytest.raises(ValueError, match="does not fit"):
        conditional.layout([1], [1, 2, 3, 4], length=4, mask_id=10)


def test_the_exact_path_equals_enumeration_and_knows_the_greedy_answers(oracle):
    tokens, given = laid_out(oracle)
    log_p, greedy = conditional.exact(oracle, tokens, given)
    expected = torch.tensor([enumerated(oracle, c, x) for c, x in PAIRS], dtype=torch.float64)
    assert torch.allclose(log_p, expected, atol=1e-5)
    for row, (context, continuation) in enumerate(PAIRS):  # greedy: each token the argmax at its turn
        x = torch.tensor(context + [oracle.mask_id] * (oracle.length - len(context)))
        best = []
        for position in range(len(context), len(context) + len(continuation)):
            x[position] = oracle(x[None])[0, position].argmax()
            best.append(int(x[position]))
        assert bool(greedy[row]) == (best == continuation)


def test_the_monte_carlo_path_is_unbiased(oracle):
    tokens, given = laid_out(oracle)
    draws = torch.stack(
        [conditional.monte_carlo(oracle, get_schedule("loglinear"), tokens, given, 1, seed=s) for s in range(3000)]
    )
    mean, error = draws.mean(0), draws.std(0) / draws.shape[0] ** 0.5
    expected = torch.tensor([enumerated(oracle, c, x) for c, x in PAIRS], dtype=torch.float64)
    assert ((mean - expected).abs() / error.clamp(min=1e-12)).max() < 4
    assert error.max() < 0.1


def test_rolling_windows_score_every_token_once_with_the_most_context():
    windows = conditional.rolling_windows(list(range(10)), length=4, prefix=99)
    assert [c for _, c in windows] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert [x for x, _ in windows] == [[99], [2], [5], [6, 7, 8]]
    assert all(len(x) + len(c) <= 4 for x, c in windows)
