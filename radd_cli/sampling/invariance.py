"""Batch-invariant network calls: a row's log-probabilities do not depend on the other rows of the call.

Matrix kernels pick their blocking, and with it the order in which they add up a dot product, by the
shape of the call. On this project's CPUs a row scored alone (a 1-row output layer is a matrix-vector
product) differs in the last bits from the same row scored beside 7 others, and GPU kernels change their
reduction split with the batch size (He and Thinking Machines Lab, "Defeating nondeterminism in LLM
inference", 2025; vLLM's and SGLang's batch-invariant modes swap in kernels whose reduction order is fixed).
A last-bit difference is enough to flip a draw now and then, so a sample could depend on what else was in
the batch: how many rows, which ones, and where its own row sat.

radd cannot swap torch's kernels, so it fixes the shapes instead: with `SamplingConfig.batch_invariant`,
the network is called on exactly `ROWS` rows at a time (`GPU_ROWS` on a GPU; the last call of a turn is
padded with masked rows that ask for nothing), and RADD's output layer runs on tiles of exactly `TILE`
positions (`RADD.head_tile`; the last tile padded with zeros). A model that cannot score selected
positions gives all of them for its fixed rows, and the asked-for ones are picked out. Each call still
goes through the model's forward, so wrappers (torch.compile, DDP) see it.

Every kernel then sees the same shapes whatever the batch, rows and positions never mix within a kernel
(attention is per row, norms and softmax per position), and a row's log-probabilities are the same bits
in any batch, at any place in it. Rows of different lengths already go into separate calls. The cost is
the padding: `benchmarks/batch_invariance.py` measures it (README, "Measured").
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from radd_cli.core.scoring import SelectiveScorer, log_probs_at, unwrap

ROWS = 2  # rows per network call on the CPU: of 1, 2 and 4, the least slowdown at its worst (README, "Measured")
GPU_ROWS = 32  # on a GPU, where few rows leave it idle; not measured in this project (no GPU in its CI)
TILE = 16  # positions per call of RADD's output layer


def scorer(invariant: bool):
    """`log_probs_at(model, tokens, where)` as the engine calls it: at fixed shapes when `invariant`."""
    return fixed_shape_log_probs if invariant else log_probs_at


def fixed_shape_log_probs(model: nn.Module, tokens: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """Float32 log-probs (N, V) at the N true positions of the bool (B, L) `where`, row-major, computed
    with every kernel at the same shapes whatever B and the other rows are."""
    inner, rows = unwrap(model), rows_per_call(tokens.device)
    tokens, where = pad_rows(tokens, where, inner.mask_id, rows)
    if isinstance(inner, SelectiveScorer) and hasattr(inner, "head_tile"):  # RADD: only the asked-for positions
        with tiled_head(inner):
            return torch.cat([model(part, where=asked) for part, asked in zip(tokens.split(rows), where.split(rows))])
    return torch.cat([model(part) for part in tokens.split(rows)])[where].float()  # (N, V) of every (B, L, V)


def rows_per_call(device: torch.device) -> int:
    return GPU_ROWS if device.type == "cuda" else ROWS


def pad_rows(tokens: torch.Tensor, where: torch.Tensor, mask_id: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) tokens and `where` padded to a multiple of `rows` rows: all-mask rows that ask for nothing."""
    missing = -len(tokens) % rows
    if not missing:
        return tokens, where
    length = tokens.shape[1]
    filler = torch.full((missing, length), mask_id, dtype=tokens.dtype, device=tokens.device)
    unasked = torch.zeros(missing, length, dtype=torch.bool, device=where.device)
    return torch.cat([tokens, filler]), torch.cat([where, unasked])


@contextlib.contextmanager
def tiled_head(model: nn.Module):
    """RADD's output layer on tiles of TILE positions for the duration (then as it was)."""
    before, model.head_tile = model.head_tile, TILE
    try:
        yield
    finally:
        model.head_tile = before
