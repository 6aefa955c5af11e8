"""The forward (masking) process and the draws of t, λ and k that the objectives use (docs/objectives.md).

Every function takes an optional `torch.Generator`; random numbers are drawn in float64 on the
generator's device (on the data's device when none is given) and then moved to the data's device.
An optional bool (B, L) `given` marks positions that are never masked (a prompt, docs/fine-tuning.md);
without it the draws are exactly those of plain text.
"""

from __future__ import annotations

import numpy as np
import torch


def seed_for(*parts: int) -> int:
    """A 32-bit seed derived from integers (run seed, step, process, …): independent streams, reproducible."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def uniform(shape, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Float64 uniforms in [0, 1) of `shape`, drawn on the generator's device, returned on `device`."""
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source, dtype=torch.float64).to(device)


def random_permutation(n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    source = generator.device if generator is not None else device
    return torch.randperm(n, generator=generator, device=source).to(device)


def stratified_uniform(batch_size: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """(u + j/B) mod 1 for j = 0..B−1 with one shared u: a low-variance batch of U(0, 1) draws.

    The strata are dealt to the rows in a random order, so no row (and no datum) is tied to a stratum:
    each row's value is marginally U(0, 1).
    """
    shared = uniform((1,), generator, device)
    strata = random_permutation(batch_size, generator, device).to(torch.float64)
    return torch.remainder(shared + strata / batch_size, 1.0)


def mask_with_probability(
    x0: torch.Tensor,
    probability: torch.Tensor,
    mask_id: int,
    generator: torch.Generator | None = None,
    given: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask each free token of row b independently with probability `probability[b]`.

    Returns (x_t, masked): the noised tokens (B, L) and the bool mask of masked positions (B, L).
    """
    masked = uniform(x0.shape, generator, x0.device) < probability[:, None]
    if given is not None:
        masked &= ~given
    return torch.where(masked, mask_id, x0), masked


def mask_exactly(
    x0: torch.Tensor,
    count: torch.Tensor,
    mask_id: int,
    generator: torch.Generator | None = None,
    given: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask exactly `count[b]` free positions of row b, chosen uniformly without replacement."""
    keys = uniform(x0.shape, generator, x0.device)  # (B, L) in [0, 1)
    if given is not None:
        keys = keys.masked_fill(given, 2.0)  # given positions rank after every free one
    ranks = keys.argsort(dim=1).argsort(dim=1)  # a random rank per position
    masked = ranks < count[:, None]
    return torch.where(masked, mask_id, x0), masked


def free_count(x0: torch.Tensor, given: torch.Tensor | None) -> torch.Tensor:
    """(B,) long: the positions of each row that may be masked (all of them without `given`)."""
    if given is None:
        return torch.full((x0.shape[0],), x0.shape[1], dtype=torch.long, device=x0.device)
    return (~given).sum(dim=1)


def places(order: torch.Tensor) -> torch.Tensor:
    """The inverse of a batch of orders (B, L): places[b, order[b, j]] = j."""
    batch, length = order.shape
    place = torch.empty_like(order)
    place.scatter_(1, order, torch.arange(length, device=order.device).expand(batch, length).contiguous())
    return place


def free_first(order: torch.Tensor, given: torch.Tensor) -> torch.Tensor:
    """The orders (B, L) with each row's free positions first, in their relative order, then the given ones."""
    rank = places(order) + order.shape[1] * given.long()  # (B, L): unique within a row
    return rank.argsort(dim=1)
