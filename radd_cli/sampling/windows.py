"""Generation longer than the model's length, window by window, and trimming at the end of text.

A model trained at length W writes a longer sequence semi-autoregressively (as MDLM does): the first
window is sampled as usual; each next window keeps the last half of the text so far as fixed context
and samples the positions after it, until the requested length is covered (the last window is aligned
to the end). Fixed template tokens stay fixed in every window. Window w of sample i draws from its own
seed (derived from the sample's seed and w), so a sample never depends on its batch. With
`stop_at_eos`, a sample stops generating windows once one holds an end-of-text token it generated.
"""

from __future__ import annotations

import torch
from torch import nn

from radd_cli.core.masking import seed_for
from radd_cli.sampling.engine import Sampler, SampleResult, run


def window_starts(length: int, window: int) -> list[int]:
    """Where each window begins: every half window, the last one aligned to the end."""
    stride = window - window // 2
    starts = list(range(0, length - window, stride))
    return [*starts, length - window]


def run_windows(
    model: nn.Module,
    sampler: Sampler,
    template: torch.Tensor,
    seeds,
    *,
    eos_id: int | None,
    batch_size: int,
    device: torch.device,
    progress=None,
) -> SampleResult:
    """`template` (L,), or one row per sample (N, L), is longer than `sampler.length`, the window; returns
    (N, L) tokens."""
    window, length = sampler.length, template.shape[-1]
    tokens = template.expand(len(seeds), -1).clone()  # (N, L)
    generated = tokens == sampler.mask_id  # (N, L): the positions the samples fill
    nfe = torch.zeros(len(seeds), dtype=torch.long)
    active = torch.ones(len(seeds), dtype=torch.bool)
    starts = window_starts(length, window)
    for number, start in enumerate(starts):
        piece = tokens[:, start : start + window]  # (N, W) view: context, fixed tokens and masks
        todo = active & (piece == sampler.mask_id).any(dim=1)
        if todo.any():
            rows = todo.nonzero().squeeze(1).tolist()
            window_seeds = [seeds[i] if number == 0 else seed_for(seeds[i], number) for i in rows]
            result = run(model, sampler, piece[rows], window_seeds, batch_size=batch_size, device=device)
            tokens[rows, start : start + window] = result.tokens
            nfe[rows] += result.nfe_per_sample
        if eos_id is not None:
            active &= ~((tokens == eos_id) & generated).any(dim=1)
        if progress is not None:
            progress(len(seeds) * (number + 1) / len(starts), len(seeds))
    return SampleResult(tokens, nfe)


def trim_at_eos(result: SampleResult, generated: torch.Tensor, eos_id: int) -> SampleResult:
    """Each sample kept up to (not including) the first end-of-text token it generated."""
    hits = (result.tokens == eos_id) & generated  # (N, L)
    length = result.tokens.shape[1]
    first = torch.where(hits.any(dim=1), hits.int().argmax(dim=1), torch.full_like(result.nfe_per_sample, length))
    return SampleResult(result.tokens, result.nfe_per_sample, first, result.refreshes)
