"""Checks of held-out text a person reads at a glance (the end of `radd train`), each beside a baseline that
ignores context.

- Fill in the blanks: a fraction of the positions of each held-out block is masked, and the network fills
  every blank at once with its most likely token, given all the others; its share of blanks filled exactly
  is set beside always guessing the most frequent training token.
- Real or shuffled: each held-out block against the same tokens in a shuffled order, scored by the
  network's pseudo-likelihood (every position predicted once, from the rest of its block with a few others
  masked). A model that ignores context gives both the same score (the same tokens), so it prefers the real
  text half the time at best; one that reads context prefers it almost always.
- The validation bound in nats per token gets the cross-entropy of the held-out tokens under the training
  tokens' frequencies (the best model that ignores context, up to smoothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from radd_cli.core.scoring import log_probs_at, vocabulary


@dataclass
class Blank:
    position: int
    answer: int  # the held-out token
    guess: int  # the network's most likely token

    @property
    def right(self) -> bool:
        return self.answer == self.guess


@dataclass
class ClozeReport:
    fraction: float  # of each block's positions masked
    blanks: int
    right: int  # blanks filled exactly by the network
    baseline_right: int  # by the most frequent training token
    example: list[int] = field(default_factory=list)  # the first block's tokens
    example_blanks: list[Blank] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.right / max(1, self.blanks)

    @property
    def baseline_accuracy(self) -> float:
        return self.baseline_right / max(1, self.blanks)


def token_counts(blocks: np.ndarray, vocab_size: int) -> np.ndarray:
    """How often each token occurs in `blocks` (N, L): (V,) int64."""
    return np.bincount(np.asarray(blocks, dtype=np.int64).ravel(), minlength=vocab_size)[:vocab_size]


def unigram_nats(train_counts: np.ndarray, held_out: np.ndarray) -> float:
    """Nats per token of `held_out` (N, L) under the training frequencies, add-one smoothed: the best a model
    that ignores context does, give or take the smoothing."""
    probabilities = (train_counts + 1.0) / (train_counts.sum() + len(train_counts))
    return float(-np.log(probabilities[np.asarray(held_out, dtype=np.int64).ravel()]).mean())


@torch.no_grad()
def cloze(
    model: torch.nn.Module,
    blocks: np.ndarray,
    train_counts: np.ndarray,
    *,
    fraction: float = 0.15,
    seed: int = 0,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> ClozeReport:
    """Mask `fraction` of the positions of every block of `blocks` (N, L) (at least one; seeded) and fill them
    with the network's most likely tokens, one call per batch."""
    _, mask_id = vocabulary(model)
    generator = torch.Generator().manual_seed(seed)
    baseline = int(np.argmax(train_counts))
    report = ClozeReport(fraction, 0, 0, 0)
    for start in range(0, len(blocks), batch_size):
        x0 = torch.from_numpy(np.asarray(blocks[start : start + batch_size], dtype=np.int64))  # (B, L)
        hidden = torch.rand(x0.shape, generator=generator) < fraction  # (B, L)
        hidden[torch.arange(len(x0)), torch.randint(0, x0.shape[1], (len(x0),), generator=generator)] = True
        tokens = x0.masked_fill(hidden, mask_id)
        guesses = log_probs_at(model, tokens.to(device), hidden.to(device)).argmax(-1).cpu()  # (N,)
        answers = x0[hidden]  # (N,), row-major like the guesses
        report.blanks += len(answers)
        report.right += int((guesses == answers).sum())
        report.baseline_right += int((answers == baseline).sum())
        if start == 0:
            first = int(hidden[0].sum())
            positions = hidden[0].nonzero().flatten().tolist()
            report.example = x0[0].tolist()
            report.example_blanks = [
                Blank(p, int(a), int(g)) for p, a, g in zip(positions, answers[:first], guesses[:first])
            ]
    return report


@dataclass
class ShuffleReport:
    passages: int
    preferred: int  # passages whose real order the network scores higher than the shuffled one
    real_nats: float  # pseudo-likelihood, nats per token, mean over passages
    shuffled_nats: float
    example: list[int] = field(default_factory=list)  # the first passage's tokens, real order
    example_shuffled: list[int] = field(default_factory=list)
    example_nats: tuple[float, float] = (0.0, 0.0)  # its pseudo-likelihood, real and shuffled


@torch.no_grad()
def pseudo_nats(
    model: torch.nn.Module, blocks: torch.Tensor, groups: int, generator: torch.Generator
) -> torch.Tensor:
    """−log p of every token given the rest of its block (B, L) → (B,) nats per token: the positions are split
    at random into `groups` sets, each masked in turn, so that every token is predicted once."""
    _, mask_id = vocabulary(model)
    length = blocks.shape[1]
    group_of = torch.randperm(length, generator=generator) % groups  # (L,)
    total = torch.zeros(len(blocks), dtype=torch.float64)
    for group in range(groups):
        hidden = (group_of == group).expand_as(blocks)  # (B, L)
        log_probs = log_probs_at(model, blocks.masked_fill(hidden, mask_id), hidden)  # (N, V), row-major
        picked = log_probs.gather(-1, blocks[hidden][:, None].to(log_probs.device)).squeeze(-1).double().cpu()
        total -= picked.view(len(blocks), -1).sum(-1)
    return total / length


@torch.no_grad()
def real_or_shuffled(
    model: torch.nn.Module, blocks: np.ndarray, *, groups: int = 7, seed: int = 0, device: torch.device | str = "cpu"
) -> ShuffleReport:
    """Each block of `blocks` (N, L) against its tokens in a seeded random order, by pseudo-likelihood."""
    generator = torch.Generator().manual_seed(seed)
    real = torch.from_numpy(np.asarray(blocks, dtype=np.int64))  # (N, L)
    order = torch.stack([torch.randperm(real.shape[1], generator=generator) for _ in range(len(real))])
    shuffled = real.gather(1, order)  # (N, L): the same tokens
    partition_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    scores = [
        pseudo_nats(model, tokens.to(device), groups, torch.Generator().manual_seed(partition_seed))
        for tokens in (real, shuffled)
    ]
    return ShuffleReport(
        len(real),
        int((scores[0] < scores[1]).sum()),
        float(scores[0].mean()),
        float(scores[1].mean()),
        real[0].tolist(),
        shuffled[0].tolist(),
        (float(scores[0][0]), float(scores[1][0])),
    )


def perplexity(nats: float) -> float:
    return math.exp(min(nats, 700.0))
