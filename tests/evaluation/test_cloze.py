"""Fill in the blanks of held-out text, and the baselines that ignore context."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from radd_cli.evaluation import cloze


class KnowsTheAnswer(torch.nn.Module):
    """Puts all its mass on `token` at every position (the right answer for a block of that token)."""

    vocab_size, mask_id = 16, 16

    def __init__(self, token: int):
        super().__init__()
        self.token = token

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        log_probs = torch.full((*tokens.shape, self.vocab_size), -30.0)
        log_probs[..., self.token] = 0.0
        return log_probs


def test_every_blank_is_scored_against_the_network_and_the_most_frequent_token():
    blocks = np.full((5, 8), 3)
    blocks[:, ::2] = 7  # half 7s, half 3s
    counts = cloze.token_counts(blocks, 16)
    assert counts[3] == counts[7] == 20 and counts.sum() == 40
    report = cloze.cloze(KnowsTheAnswer(7), blocks, counts, fraction=0.5, batch_size=2)
    answers = blocks[0, [blank.position for blank in report.example_blanks]]
    assert [blank.answer for blank in report.example_blanks] == answers.tolist()
    assert report.example == blocks[0].tolist() and report.blanks >= 5  # at least one blank per block
    assert all(blank.guess == 7 and blank.right == (blank.answer == 7) for blank in report.example_blanks)
    every = cloze.cloze(KnowsTheAnswer(7), blocks, counts, fraction=1.0)
    assert every.blanks == 40 and every.accuracy == 0.5  # right on the 7s, wrong on the 3s
    assert every.baseline_accuracy == 0.5  # argmax of a tie: token 3, right on the 3s


def test_the_network_guesses_its_most_likely_token_given_the_rest(tiny_model):
    blocks = np.random.default_rng(0).integers(0, 16, (3, 8))
    report = cloze.cloze(tiny_model, blocks, cloze.token_counts(blocks, 16), fraction=0.3, seed=1)
    tokens = torch.tensor(blocks[0])
    hidden = torch.zeros(8, dtype=torch.bool)
    hidden[[blank.position for blank in report.example_blanks]] = True
    with torch.no_grad():
        expected = tiny_model(tokens.masked_fill(hidden, 16)[None])[0, hidden].argmax(-1)
    assert [blank.guess for blank in report.example_blanks] == expected.tolist()
    again = cloze.cloze(tiny_model, blocks, cloze.token_counts(blocks, 16), fraction=0.3, seed=1)
    assert (again.blanks, again.right) == (report.blanks, report.right)  # seeded


def test_the_unigram_baseline_is_the_cross_entropy_of_the_training_frequencies():
    uniform = np.full(4, 10)
    assert cloze.unigram_nats(uniform, np.array([[0, 1, 2, 3]])) == pytest.approx(math.log(4))
    skewed = np.array([97, 1, 1, 1])  # smoothed: 98/104, 2/104, ...
    assert cloze.unigram_nats(skewed, np.array([[0, 1]])) == pytest.approx(
        -(math.log(98 / 104) + math.log(2 / 104)) / 2
    )
    assert cloze.perplexity(math.log(4)) == pytest.approx(4)


class CountsOn(torch.nn.Module):
    """Knows that every token is its left neighbour + 1 (mod V): sure of it when that neighbour is visible,
    uniform otherwise. It reads context, and nothing else."""

    vocab_size, mask_id = 16, 16

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        log_probs = torch.full((*tokens.shape, self.vocab_size), -math.log(self.vocab_size))
        left = torch.cat((torch.full_like(tokens[:, :1], self.mask_id), tokens[:, :-1]), dim=1)  # (B, L)
        seen = left != self.mask_id
        sure = torch.full((self.vocab_size,), -30.0)
        for row, column in seen.nonzero().tolist():
            log_probs[row, column] = sure
            log_probs[row, column, (left[row, column] + 1) % self.vocab_size] = 0.0
        return log_probs


class IgnoresContext(torch.nn.Module):
    """The same distribution (not uniform) at every position, whatever the tokens around it."""

    vocab_size, mask_id = 16, 16

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.linspace(0, 3, self.vocab_size).log_softmax(-1).expand(*tokens.shape, -1)


def test_pseudo_likelihood_predicts_every_token_once():
    blocks = torch.arange(24).reshape(3, 8) % 16
    scored = cloze.pseudo_nats(IgnoresContext(), blocks, 3, torch.Generator().manual_seed(0))
    expected = -torch.linspace(0, 3, 16).log_softmax(-1)[blocks].double().mean(-1)  # each token once
    torch.testing.assert_close(scored, expected)


def test_a_model_that_reads_context_prefers_the_real_text_and_one_that_does_not_cannot():
    starts = np.random.default_rng(0).integers(0, 16, 20)
    blocks = (starts[:, None] + np.arange(12)) % 16  # counting up: what CountsOn knows
    knows = cloze.real_or_shuffled(CountsOn(), blocks, groups=4, seed=0)
    assert knows.passages == 20 and knows.preferred == 20 and knows.real_nats < knows.shuffled_nats
    assert sorted(knows.example) == sorted(knows.example_shuffled) and knows.example == blocks[0].tolist()
    blind = cloze.real_or_shuffled(IgnoresContext(), blocks, groups=4, seed=0)
    assert blind.preferred == 0 and blind.real_nats == pytest.approx(blind.shuffled_nats)  # the same tokens: ties
