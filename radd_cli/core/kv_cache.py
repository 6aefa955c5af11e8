"""Keys and values kept from a full call, and calls that compute only a block of positions against them.

Block decoding changes one block of positions at a time. A *full call* runs the whole sequence and keeps
every layer's keys and values (`KVStore`; keys after the rotation of their own position, so they stay
valid wherever the queries are). A *block call* then computes only the block's positions: at every layer
their queries attend to their own fresh keys and values and to the stored ones of the rest —

- `dual`: of every other position (prefix and suffix);
- `prefix`: of the positions before the block only (the suffix is not attended at all).

A block call writes the block's fresh keys and values into the store, in place (no copy of the store is
made): the store then holds, for the block's positions, what the block call computed, which the next block
call over the same block overwrites before reading. With a store fresh from the same tokens, a dual block
call equals the full call at the block's positions (up to float rounding). Once block positions change, the
stored entries of the other positions are stale from the second layer on: they were computed while the
block held its old tokens (docs/sampling.md says what this approximates).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from radd_cli.validation import Choice


class KVMode(Choice):
    """What a block call attends to besides the block itself (`none`: no cache, every call is full)."""

    none = "none"
    prefix = "prefix"
    dual = "dual"


@dataclass
class KVStore:
    """Every layer's keys and values of a full call over (B, L) tokens."""

    keys: torch.Tensor  # (layers, B, L, H, hd), rotated by their own positions: the memory layout attention reads
    values: torch.Tensor  # (layers, B, L, H, hd)


def full_hidden(model, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hidden states (B, L, d) after the last block of a RADD network, and the keys and values
    (layers, B, L, H, hd) of every layer (a KVStore's fields)."""
    x = model.vocab_embed(tokens)  # (B, L, d)
    cos, sin = model.rotary_emb(tokens.shape[1], tokens.device)  # (L, hd)
    keys, values = [], []
    for block in model.blocks:
        q, k, v = block.qkv(x, cos, sin)  # each (B, H, L, hd)
        keys.append(k.transpose(1, 2))  # (B, L, H, hd)
        values.append(v.transpose(1, 2))
        x = block.mix(x, block.attend(q, k, v))
    return x, torch.stack(keys), torch.stack(values)


def block_hidden(
    model, tokens: torch.Tensor, positions: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, prefix: bool
) -> torch.Tensor:
    """Hidden states (B, n, d) of the block: `tokens` (B, n) at `positions` (B, n) (each row its own),
    attending to their own fresh keys and values and to the stored (layers, B, L, H, hd) ones — all of
    them (dual), or with `prefix` only those before the block's end. The block's fresh keys and values are
    written into `keys` and `values` at its positions (in place)."""
    x = model.vocab_embed(tokens)  # (B, n, d)
    cos, sin = model.rotary_emb.at(positions[:, None, :])  # (B, 1, n, hd): each row's own positions
    length = keys.shape[2]  # (layers, B, L, H, hd)
    visible = None
    if prefix:  # the keys before each row's block end
        ends = positions.max(dim=1, keepdim=True).values + 1  # (B, 1)
        visible = (torch.arange(length, device=tokens.device) < ends)[:, None, None, :]  # (B, 1, 1, L)
    for layer, block in enumerate(model.blocks):
        q, k, v = block.qkv(x, cos, sin)  # each (B, H, n, hd)
        seen_keys = _write_block(keys[layer], k, positions)  # (B, H, L, hd), L-major in memory
        seen_values = _write_block(values[layer], v, positions)
        x = block.mix(x, block.attend(q.to(seen_keys.dtype), seen_keys, seen_values, visible))
    return x


def _write_block(stored: torch.Tensor, fresh: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Write the block's fresh (B, H, n, hd) entries into the stored (B, L, H, hd) ones at its positions (in
    place: an indexed write of the block only), and return the stored ones as (B, H, L, hd)."""
    rows = torch.arange(stored.shape[0], device=stored.device)[:, None]  # (B, 1)
    stored[rows, positions] = fresh.transpose(1, 2).to(stored.dtype)  # (B, n, H, hd) at (row, position)
    return stored.transpose(1, 2)
