"""The likelihood of a continuation given a context, for scoring answers (docs/fine-tuning.md).

A sequence of the model's length L holds the context's tokens (given), the continuation's tokens (free)
and, after them, masks that stay masked (given as the mask id: the positions are marginalised out, as
in generation from a prompt). A RADD network is an any-order autoregressive model, so

    log p(continuation | context) = Σ_j log p(c_j | context, c_<j)        (left to right, exact)

costs one network call per continuation token, all requests batched together; `monte_carlo` instead
averages draws of the λ-DCE objective on the free positions: unbiased for the same number, cheaper for
long continuations.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from radd_cli.core import masking
from radd_cli.core.losses import LOSSES
from radd_cli.core.masking import seed_for
from radd_cli.core.schedule import Schedule
from radd_cli.core.scoring import log_probs_at, vocabulary
from radd_cli.validation import Choice


class Likelihood(Choice):
    """How log p(continuation | context) is computed."""

    exact = "exact"  # any-order autoregressive: one network call per continuation token
    monte_carlo = "monte_carlo"  # the mean of mc_samples λ-DCE draws


def layout(
    context: Sequence[int], continuation: Sequence[int], length: int, mask_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens (L,), given (L,) bool): the context then the continuation, masks after them; the context is
    cut from the left when both do not fit (the continuation must fit: at most L − 1 tokens)."""
    if not 1 <= len(continuation) < length:
        raise ValueError(f"a continuation of {len(continuation)} tokens does not fit a model of length {length}")
    context = list(context)[max(0, len(context) + len(continuation) - length) :]
    tokens = torch.full((length,), mask_id, dtype=torch.long)
    tokens[: len(context) + len(continuation)] = torch.as_tensor(list(context) + list(continuation), dtype=torch.long)
    given = torch.ones(length, dtype=torch.bool)
    given[len(context) : len(context) + len(continuation)] = False
    return tokens, given


@torch.no_grad()
def exact(model: nn.Module, tokens: torch.Tensor, given: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(free | given) left to right (float64 (B,)), and whether every free token was the most likely
    one at its turn ((B,) bool), for rows (B, L) from `layout`: as many calls as the longest continuation."""
    _, mask_id = vocabulary(model)
    free = ~given  # (B, L)
    order = masking.free_first(torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens), given)
    place = masking.places(order)  # (B, L): the turn of each free position
    total = torch.zeros(len(tokens), dtype=torch.float64, device=tokens.device)
    greedy = torch.ones(len(tokens), dtype=torch.bool, device=tokens.device)
    for j in range(int(free.sum(dim=1).max())):
        active = free.sum(dim=1) > j  # rows whose continuation has a j-th token
        x_t = torch.where((place >= j) & free, mask_id, tokens)[active]
        where = ((place == j) & free)[active]  # one position per active row
        log_p = log_probs_at(model, x_t, where).double()  # (n, V)
        target = tokens[active][where]
        total[active] += log_p.gather(-1, target[:, None]).squeeze(-1)
        greedy[active] &= log_p.argmax(-1) == target
    return total, greedy


@torch.no_grad()
def monte_carlo(
    model: nn.Module, schedule: Schedule, tokens: torch.Tensor, given: torch.Tensor, draws: int, seed: int = 0
) -> torch.Tensor:
    """Unbiased estimates of log p(free | given), float64 (B,): the mean of `draws` λ-DCE draws per row."""
    total = torch.zeros(len(tokens), dtype=torch.float64, device=tokens.device)
    for draw in range(draws):
        generator = torch.Generator(tokens.device).manual_seed(seed_for(seed, draw, 4))
        total -= LOSSES["lambda_DCE"](model, tokens, schedule, generator=generator, given=given)
    return total / draws


def rolling_windows(tokens: Sequence[int], length: int, prefix: int) -> list[tuple[list[int], list[int]]]:
    """(context, continuation) pairs that score every token of `tokens` once, each with as much context as
    fits in `length` positions (the first is conditioned on the `prefix` token, e.g. EOS)."""
    tokens = list(tokens)
    pairs, start, step = [], 0, length - 1
    while start < len(tokens):
        piece = tokens[start : start + step]
        before = ([prefix] + tokens)[: start + 1]
        context = before[max(0, len(before) - (length - len(piece))) :]
        pairs.append((context, piece))
        start += len(piece)
    return pairs


def batches(count: int, size: int):
    """Index ranges of `count` items in batches of `size`."""
    return (np.arange(start, min(start + size, count)) for start in range(0, count, size))
