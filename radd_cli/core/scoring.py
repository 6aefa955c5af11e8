"""How objectives and samplers ask any model for log-probabilities.

A model is any `nn.Module` with `vocab_size` and `mask_id` that maps int64 tokens (B, L) to float32
log-probs (B, L, V). A `SelectiveScorer` (RADD is one) also takes `where` and `targets` and then
computes the output projection only where it is needed. The call always goes through the module
(or its DDP / FSDP / compile wrapper) itself, so that the wrapper sees it.
"""

from __future__ import annotations

import torch
from torch import nn


class SelectiveScorer(nn.Module):
    """A network whose forward is `(tokens, where=None, targets=None)`:

    - `forward(tokens)`: log-probs (B, L, V) at every position;
    - `forward(tokens, where=where)`: log-probs (N, V) at the N true positions of the bool (B, L) `where`;
    - `forward(tokens, where=where, targets=targets)`: log p(targets) (N,) at those positions.
    """


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP/FSDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def vocabulary(model: nn.Module) -> tuple[int, int]:
    """(vocab_size, mask_id) of a possibly wrapped model."""
    inner = unwrap(model)
    return inner.vocab_size, inner.mask_id


def log_probs_at(model: nn.Module, tokens: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """Float32 log-probs (N, V) at the N positions where the bool (B, L) `where` is true, row-major."""
    if isinstance(unwrap(model), SelectiveScorer):
        return model(tokens, where=where)
    return model(tokens)[where].float()


def target_log_probs(
    model: nn.Module, tokens: torch.Tensor, where: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """log p(targets) (N,) at the positions where `where` is true; `targets` is (N,), row-major."""
    if isinstance(unwrap(model), SelectiveScorer):
        return model(tokens, where=where, targets=targets)
    return log_probs_at(model, tokens, where).gather(-1, targets[:, None]).squeeze(-1)
