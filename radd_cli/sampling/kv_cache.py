"""Block decoding with a key/value cache (SamplingConfig.kv_cache = prefix | dual).

A sampler that fills blocks left to right (`block_length`) changes only its current block between calls.
Wrapped in `KVCached`, each of its rows keeps the keys and values of its last full call and the block it
was made in. A row's next call is

- a *refresh* — an ordinary full call that also keeps the keys and values (core/kv_cache.py) — when the
  row has none yet, when its current block is not the one they were made in, or after `kv_refresh` block
  calls (when that is above 0);
- otherwise a *block call*: only the block's positions go through the network, attending to their own
  fresh keys and values and to the kept ones of the rest (`dual`) or of the positions before the block
  (`prefix`).

Either way it is one network evaluation of the row, and the sampler sees log-probs at the positions it
asked for, so NFE means what it always does; refreshes (full calls) and block calls are also counted apart.
With `batch_invariant`, both kinds of call run at fixed shapes as the engine's other calls do
(sampling/invariance.py): groups of `rows_per_call` rows, the last filled up by repeating its last row
(whose results are dropped), and the output layer on fixed tiles.
The kept entries are keyed by each row's own generator, so rows may join and leave a batch (the row pool,
the server's groups) and keep theirs; a row the wrapper has not seen gets a refresh.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from radd_cli.core.kv_cache import KVStore
from radd_cli.core.scoring import unwrap
from radd_cli.errors import ConfigError, RaddError
from radd_cli.sampling import invariance


@dataclass
class RowStore:
    """One row's kept keys and values (layers, L, H, hd), the block they were made in, and block calls since."""

    keys: torch.Tensor
    values: torch.Tensor
    block: int
    age: int = 0


class KVCached:
    """A block-decoding sampler whose network calls go through the key/value cache; everything else is the
    wrapped sampler's (`query`, `update`, `finished`, its settings and counts)."""

    def __init__(self, sampler):
        self.inner = sampler
        self.stores: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # row generator → RowStore
        self._batches: dict[tuple[int, ...], tuple[list, KVStore]] = {}  # rows called together → (rows, their store)
        self._previous: dict[tuple[int, ...], tuple[list, KVStore]] = {}  # those of the call before
        self.refreshes = 0  # full calls made, summed over rows
        self.block_calls = 0  # block calls made, summed over rows

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def start(self, rows) -> None:
        self.inner.start(rows)

    def query(self, rows):
        return self.inner.query(rows)

    def update(self, rows, query, log_probs: torch.Tensor) -> None:
        self.inner.update(rows, query, log_probs)

    def finished(self, rows) -> torch.Tensor:
        return self.inner.finished(rows)

    def cached_log_probs(self, model: nn.Module, rows, query) -> torch.Tensor:
        """Log-probs (n, V) at the query's positions, row-major: refreshes for the rows that need one, block
        calls for the others."""
        network = unwrap(model)
        if not hasattr(network, "block_log_probs_at"):
            raise ConfigError("kv_cache needs a radd network (one with block calls); use kv_cache = none")
        generators = [rows.generators[i] for i in query.rows.tolist()]
        blocks = self._current_blocks(rows, query)  # (q,)
        refresh = torch.tensor([self._needs_refresh(g, int(b)) for g, b in zip(generators, blocks.tolist())])
        counts = query.where.sum(dim=1)  # (q,) positions asked for per row
        owner = torch.repeat_interleave(refresh.to(counts.device), counts)  # (n,) whether each position's row refreshes
        out, self._previous, self._batches = None, self._batches, {}  # kept on: the stores this call uses
        for refreshing, part in ((True, refresh), (False, ~refresh)):
            chosen = part.nonzero().squeeze(1).tolist()
            if not chosen:
                continue
            call = self._refresh if refreshing else self._block_call
            with invariance.tiled_head(network) if self.inner.config.batch_invariant else contextlib.nullcontext():
                found = torch.cat(
                    [call(network, query, generators, blocks, rows, real) for rows, real in self._calls(chosen, query)]
                )
            if out is None:
                out = found.new_empty(int(counts.sum()), found.shape[-1])
            out[owner == refreshing] = found
        return out

    def _current_blocks(self, rows, query) -> torch.Tensor:
        """(q,) each query row's block: that of the first position it asks for, else of its first masked free
        position (a step that unmasks nothing), else the last."""
        ids = self.inner.blocks.to(query.where.device)  # (L,)
        masked = rows.free[query.rows] & (query.tokens == self.inner.mask_id)  # (q, L)
        first_asked = _first_true(query.where)
        first_masked = _first_true(masked)
        position = torch.where(first_asked >= 0, first_asked, first_masked)
        return torch.where(position >= 0, ids[position.clamp(min=0)], ids[-1]).cpu()

    def _calls(self, chosen: list[int], query) -> list[tuple[list[int], int]]:
        """The query rows of each network call and how many of them are real: all in one call, or with
        batch_invariant groups of exactly `rows_per_call`, the last filled up with copies of its last row."""
        if not self.inner.config.batch_invariant:
            return [(chosen, len(chosen))]
        size = invariance.rows_per_call(query.tokens.device)
        groups = [chosen[start : start + size] for start in range(0, len(chosen), size)]
        return [(group + group[-1:] * (size - len(group)), len(group)) for group in groups]

    def _needs_refresh(self, generator: torch.Generator, block: int) -> bool:
        store = self.stores.get(generator)
        every = self.inner.config.kv_refresh
        return store is None or store.block != block or (every > 0 and store.age >= every)

    def _refresh(self, network, query, generators, blocks, chosen: list[int], real: int) -> torch.Tensor:
        """Full calls of the `chosen` query rows, keeping their keys and values; the log-probs of the first `real`."""
        log_probs, store = network.log_probs_keeping_kv(query.tokens[chosen], query.where[chosen])
        for j, i in enumerate(chosen[:real]):
            self.stores[generators[i]] = RowStore(store.keys[:, j], store.values[:, j], int(blocks[i]))
        rows = [generators[i] for i in chosen]
        self._batches[tuple(map(id, rows))] = (rows, store)
        self.refreshes += real
        return log_probs[: int(query.where[chosen[:real]].sum())]

    def _batched(self, rows: list[torch.Generator]) -> KVStore:
        """The (layers, b, L, H, hd) store of these rows: the one made or used for the same rows in the same order
        (as while a batch decodes its blocks), else stacked from the rows' own."""
        key = tuple(map(id, rows))
        if key in self._previous:  # the rows themselves are held with the store, so their ids are not reused
            self._batches[key] = self._previous[key]
            return self._batches[key][1]
        stores = [self.stores[g] for g in rows]
        batch = KVStore(torch.stack([s.keys for s in stores], dim=1), torch.stack([s.values for s in stores], dim=1))
        self._batches[key] = (rows, batch)
        return batch

    def _block_call(self, network, query, generators, blocks, chosen: list[int], real: int) -> torch.Tensor:
        """Block calls of the `chosen` query rows against their kept keys and values; the log-probs of the first
        `real`."""
        width = self.inner.config.block_length
        device = query.tokens.device
        starts = blocks[chosen].to(device) * width  # (b,)
        positions = starts[:, None] + torch.arange(width, device=device)  # (b, width)
        tokens, where = query.tokens[chosen].gather(1, positions), query.where[chosen].gather(1, positions)
        if int(where.sum()) != int(query.where[chosen].sum()):
            raise RaddError("a block-decoding sampler asked for positions outside its current block (a bug)")
        kept = self._batched([generators[i] for i in chosen])
        for i in chosen[:real]:
            self.stores[generators[i]].age += 1
        self.block_calls += real
        log_probs = network.block_log_probs_at(tokens, positions, kept, self.inner.config.kv_cache, where)
        return log_probs[: int(where[:real].sum())]


def _first_true(mask: torch.Tensor) -> torch.Tensor:
    """(B,) the index of the first true entry of each row of (B, L) `mask`, or −1."""
    first = mask.int().argmax(dim=1)
    return torch.where(mask.any(dim=1), first, torch.full_like(first, -1))
