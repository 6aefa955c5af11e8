"""A model that knows the exact conditionals of a known distribution p over all V^L sequences.

With it, every objective must be an unbiased estimate of −log p(x) and every exact sampler must draw
from p (docs/objectives.md, docs/sampling.md). V and L are small enough to enumerate (V = 3, L = 4: 81 sequences).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn


class ExactConditionals(nn.Module):
    """p(x0^i = v | visible tokens of x_t) at every position, computed by enumeration."""

    def __init__(self, vocab_size: int = 3, length: int = 4, seed: int = 0):
        super().__init__()
        self.vocab_size, self.mask_id, self.length = vocab_size, vocab_size, length
        # p ~ Dirichlet(1, …, 1): normalised exponential weights from a seeded generator
        u = torch.rand(vocab_size**length, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        weights = -u.log()
        self.register_buffer("probs", weights / weights.sum())  # (N,)
        sequences = torch.tensor(list(itertools.product(range(vocab_size), repeat=length)))  # (N, L)
        self.register_buffer("sequences", sequences)
        self.register_buffer("one_hot", nn.functional.one_hot(sequences, vocab_size).double())  # (N, L, V)
        self.calls = 0  # rows evaluated, for NFE checks

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.calls += tokens.shape[0]
        visible = tokens != self.mask_id  # (B, L)
        agrees = (self.sequences[None] == tokens[:, None]) | ~visible[:, None]  # (B, N, L)
        weights = agrees.all(-1).double() * self.probs  # (B, N)
        marginals = torch.einsum("bn,nlv->blv", weights, self.one_hot)  # (B, L, V)
        return (marginals / marginals.sum(-1, keepdim=True)).log().float()

    def index_of(self, tokens: torch.Tensor) -> torch.Tensor:
        """The enumeration index of each sequence (B, L) → (B,)."""
        powers = self.vocab_size ** torch.arange(self.length - 1, -1, -1, device=tokens.device)
        return (tokens * powers).sum(-1)

    def neg_log_prob(self, tokens: torch.Tensor) -> torch.Tensor:
        return -self.probs[self.index_of(tokens)].log()

    def entropy(self) -> float:
        return float(-(self.probs * self.probs.log()).sum())

    def conditional(self, template: torch.Tensor) -> torch.Tensor:
        """p restricted to the sequences that agree with a template's fixed tokens, renormalised (N,)."""
        fixed = template != self.mask_id
        agrees = ((self.sequences == template) | ~fixed).all(-1)
        restricted = self.probs * agrees
        return restricted / restricted.sum()

    def product_of_marginals(self) -> torch.Tensor:
        """The distribution over sequences whose positions are independent with p's marginals (N,)."""
        marginals = torch.einsum("n,nlv->lv", self.probs, self.one_hot)  # (L, V)
        picked = marginals[torch.arange(self.length), self.sequences]  # (N, L)
        return picked.prod(-1)


def total_variation(counts: torch.Tensor, probs: torch.Tensor) -> float:
    empirical = counts.double() / counts.sum()
    return float(0.5 * (empirical - probs).abs().sum())


def expected_total_variation(probs: torch.Tensor, num_draws: int) -> float:
    """E[TV] between p and the empirical distribution of n draws, for large n: Σ_i sqrt(p_i(1−p_i)/(2πn))."""
    return float(torch.sqrt(probs * (1 - probs) / (2 * math.pi * num_draws)).sum())


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Pearson's statistic and degrees of freedom; outcomes expected fewer than 5 times are pooled."""
    n = counts.sum().double()
    expected = probs.double() * n
    large = expected >= 5
    observed = torch.cat([counts.double()[large], counts.double()[~large].sum()[None]])
    expected = torch.cat([expected[large], expected[~large].sum()[None]])
    keep = expected > 0
    statistic = float(((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    return statistic, int(keep.sum()) - 1


def chi_square_limit(dof: int, z: float = 3.72) -> float:
    """The upper 1e-4 quantile of χ²(dof) (Wilson–Hilferty): a correct sampler fails once in 10,000 runs."""
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3
