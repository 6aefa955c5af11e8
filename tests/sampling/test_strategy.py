"""Temperature, top-k and top-p, and the float64 categorical draw."""

import pytest
import torch

from radd_cli.sampling import (
    Strategy,
    draw_categorical,
)


def test_strategies_on_hand_made_distributions():
    log_p = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert torch.allclose(Strategy().probabilities(log_p), log_p.exp())
    assert torch.allclose(Strategy("top_k", top_k=2).probabilities(log_p), torch.tensor([[0.625, 0.375, 0, 0]]))
    assert torch.allclose(Strategy("top_p", top_p=0.5).probabilities(log_p), torch.tensor([[1.0, 0, 0, 0]]))
    assert torch.allclose(Strategy("top_p", top_p=0.7).probabilities(log_p), torch.tensor([[0.625, 0.375, 0, 0]]))
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


@pytest.mark.parametrize("vocab", [3, 2048])
def test_a_draw_for_no_rows_is_empty(vocab):
    """A step where no position unmasks (cache off) asks for zero draws; the two-level draw must not fail."""
    assert draw_categorical(torch.rand(0, vocab), torch.rand(0)).shape == (0,)
