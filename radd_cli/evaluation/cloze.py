"""Fill in the blanks of held-out text: a check a person reads at a glance (the end of `radd train`).

A fraction of the positions of each held-out block is masked, and the network fills every blank at once
with its most likely token, given all the others. Its share of blanks filled exactly is set beside a
baseline that ignores context: always the most frequent training token. The second number the run prints,
the validation bound in nats per token, gets the same baseline: the cross-entropy of the held-out tokens
under the training tokens' frequencies (the best model that ignores context, up to smoothing).
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


def perplexity(nats: float) -> float:
    return math.exp(min(nats, 700.0))
