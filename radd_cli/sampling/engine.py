"""The lockstep engine every sampler runs on: rows advance independently, one network call at a time.

A sampler says, for each row, which positions the next network call scores (`query`) and what to do
with the log-probabilities that come back (`update`). `advance` puts the queries of all running rows
into one call and counts what each row costs (its NFE); the row pool (pool.py) retires finished rows and
refills the batch with new ones, so a batch never waits for its slowest row. Each row draws its randomness from its own
generator, seeded from the sample's seed, so a sample does not depend on the rows it ran beside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from radd_cli.core.schedule import Schedule
from radd_cli.device import available_memory
from radd_cli.errors import ConfigError, NonFiniteError, RaddError
from radd_cli.sampling import invariance

SEED_LIMIT = 2**64  # torch generators take seeds in [0, 2^64)


@dataclass
class Rows:
    """The rows being sampled: tensors with a leading row dimension, so rows can join and leave."""

    tokens: torch.Tensor  # (B, L) long: current tokens, mask_id where still masked
    free: torch.Tensor  # (B, L) bool: the positions the sampler fills (a template's free positions)
    nfe: torch.Tensor  # (B,) long: network evaluations this row has cost (2 per call with guidance)
    calls: torch.Tensor  # (B,) long: network calls this row has been part of (the samplers' step counter)
    index: list[int]  # which sample each row is
    generators: list[torch.Generator]  # each row's own random stream, on the CPU
    state: dict[str, torch.Tensor] = field(default_factory=dict)  # the sampler's per-row tensors, (B, ...)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def select(self, keep: torch.Tensor) -> Rows:
        """The rows where the bool (B,) `keep` is true."""
        flags = keep.tolist()
        return Rows(
            self.tokens[keep],
            self.free[keep],
            self.nfe[keep],
            self.calls[keep],
            [i for i, kept in zip(self.index, flags) if kept],
            [g for g, kept in zip(self.generators, flags) if kept],
            {name: value[keep] for name, value in self.state.items()},
        )

    @staticmethod
    def concat(parts: list[Rows]) -> Rows:
        parts = [part for part in parts if len(part)]
        if len(parts) == 1:
            return parts[0]
        return Rows(
            torch.cat([p.tokens for p in parts]),
            torch.cat([p.free for p in parts]),
            torch.cat([p.nfe for p in parts]),
            torch.cat([p.calls for p in parts]),
            [i for p in parts for i in p.index],
            [g for p in parts for g in p.generators],
            {name: torch.cat([p.state[name] for p in parts]) for name in parts[0].state},
        )

    def uniforms(self, *shape: int) -> torch.Tensor:
        """Float64 uniforms (B, *shape): the next draws of each row's own generator, on the rows' device."""
        drawn = [torch.rand(shape, generator=g, dtype=torch.float64) for g in self.generators]
        return torch.stack(drawn).to(self.tokens.device)


@dataclass
class Query:
    """The inputs of one network call for a sampler's rows."""

    rows: torch.Tensor  # (q,) long: which row of the Rows each input belongs to (its NFE goes up by one)
    tokens: torch.Tensor  # (q, L)
    where: torch.Tensor  # (q, L) bool: the positions whose log-probs are wanted

    @classmethod
    def every_row(cls, rows: Rows, where: torch.Tensor) -> Query:
        return cls(torch.arange(len(rows), device=rows.tokens.device), rows.tokens, where)


class Sampler:
    """One sampling method. Subclass it, set `name`, and decorate the class with `@register`."""

    name: ClassVar[str] = ""
    settings: ClassVar[frozenset[str]] = frozenset()  # the SamplingConfig fields it takes (others must keep their defaults)
    required: ClassVar[frozenset[str]] = frozenset()  # of those, the ones that must be given
    remasks: ClassVar[bool] = False  # whether a decoded position can change again (streaming waits for the end)

    def __init__(self, config, schedule: Schedule, vocab_size: int, mask_id: int, length: int):
        self.config, self.schedule = config, schedule
        self.vocab_size, self.mask_id, self.length = vocab_size, mask_id, length
        self.steps = config.steps if config.steps is not None else length

    def start(self, rows: Rows) -> None:
        """Fill `rows.state` for rows that were just created (their generators are fresh)."""

    def query(self, rows: Rows) -> Query:
        raise NotImplementedError

    def update(self, rows: Rows, query: Query, log_probs: torch.Tensor) -> None:
        """Act on the float32 log-probs (n, V) of the query's positions (row-major)."""
        raise NotImplementedError

    def finished(self, rows: Rows) -> torch.Tensor:
        """(B,) bool: rows that need no more network calls."""
        raise NotImplementedError

    def expected_nfe(self, free: int) -> float | None:
        """Expected network calls for a sequence with `free` positions to fill, when known in advance."""
        return None

    def expected_evaluations(self, free: int) -> float | None:
        """Expected network evaluations (what `Rows.nfe` counts): the calls, each two with guidance."""
        calls = self.expected_nfe(free)
        return None if calls is None else calls * (2 if self.config.guidance else 1)


SAMPLERS: dict[str, type[Sampler]] = {}


def register(cls: type[Sampler]) -> type[Sampler]:
    """Class decorator: make `cls` available as `--method cls.name`."""
    SAMPLERS[cls.name] = cls
    return cls


@dataclass
class SampleResult:
    tokens: torch.Tensor  # (N, L) int64, on the CPU
    nfe_per_sample: torch.Tensor  # (N,) network evaluations of each sequence
    lengths: torch.Tensor | None = None  # (N,) tokens kept when trimmed at the first end-of-text
    refreshes: int | None = None  # with a key/value cache: how many of the network calls were full ones (all samples)

    @property
    def nfe(self) -> float:
        """Mean network evaluations per sequence."""
        return float(self.nfe_per_sample.double().mean())

    def sequences(self) -> list[list[int]]:
        """Each sample's token ids, trimmed when `lengths` says so."""
        if self.lengths is None:
            return self.tokens.tolist()
        return [row[:n] for row, n in zip(self.tokens.tolist(), self.lengths.tolist())]


def advance(model: nn.Module, groups: list[tuple[Sampler, Rows]]) -> dict[int, RaddError]:
    """One network call for every row of every (sampler, rows) group (all of one length); returns the groups whose
    outputs or update failed, by position, with why — those groups' rows are left as they were, the others advanced.

    With classifier-free guidance (config.guidance = w > 0) each query row goes in twice, as it is and
    with its given (template) positions masked, and the two are combined as (1 + w)·log p(·|given) −
    w·log p(·|nothing given), renormalised: two network evaluations, counted as such.
    """
    queries = [sampler.query(rows) for sampler, rows in groups]
    inputs = [
        _with_unconditional(query, rows, sampler.mask_id) if sampler.config.guidance else query
        for (sampler, rows), query in zip(groups, queries)
    ]
    if sum(len(query.rows) for query in inputs) == 0:
        return {}
    log_probs = _network_calls(model, groups, inputs)
    failures = {}
    for number, ((sampler, rows), query, sent, part) in enumerate(zip(groups, queries, inputs, log_probs)):
        try:
            _update(sampler, rows, query, part)
        except Exception as error:  # noqa: BLE001 — this group fails alone; the caller reports or raises it
            failures[number] = error if isinstance(error, RaddError) else SamplingError(error)
            continue
        rows.calls.index_add_(0, query.rows, torch.ones_like(query.rows))
        rows.nfe.index_add_(0, sent.rows, torch.ones_like(sent.rows))
    return failures


def _update(sampler: Sampler, rows: Rows, query: Query, log_probs: torch.Tensor) -> None:
    if not _finite(log_probs):
        raise NonFiniteError(
            "the model produced NaN or infinite log-probabilities; its weights are broken (check the "
            "checkpoint, or retrain from an earlier one)"
        )
    if sampler.config.guidance:
        log_probs = _guided(log_probs, sampler.config.guidance)
        if not _finite(log_probs):
            raise NonFiniteError(
                f"guidance: a weight of {sampler.config.guidance:g} makes the guided log-probabilities non-finite; "
                "use a smaller weight"
            )
    sampler.update(rows, query, log_probs)


def _finite(log_probs: torch.Tensor) -> bool:
    """Log-probs may be −inf (a token the model rules out), never NaN or +inf, and never −inf everywhere."""
    return not log_probs.numel() or bool(torch.isfinite(log_probs.max(dim=-1).values).all())


class SamplingError(RaddError):
    """A sampler failed on its rows (a bug, or settings the math cannot take); the original error is the cause."""

    def __init__(self, error: Exception):
        super().__init__(f"sampling failed ({type(error).__name__}: {error})")
        self.__cause__ = error


def _network_calls(model: nn.Module, groups: list[tuple[Sampler, Rows]], inputs: list[Query]) -> list[torch.Tensor]:
    """Each group's log-probs (n, V): groups whose sampler keeps a key/value cache make their own calls
    (sampling/kv_cache.py); the others share one call, at fixed shapes when any of them is batch-invariant."""
    found: dict[int, torch.Tensor] = {}
    shared = []
    log_probs_at = invariance.scorer(any(sampler.config.batch_invariant for sampler, _ in groups))
    for number, ((sampler, rows), query) in enumerate(zip(groups, inputs)):
        if hasattr(sampler, "cached_log_probs"):
            found[number] = sampler.cached_log_probs(model, rows, query)
        else:
            shared.append(number)
    if len(shared) == 1:
        query = inputs[shared[0]]
        found[shared[0]] = log_probs_at(model, query.tokens, query.where)  # (n, V)
    elif shared:
        tokens = torch.cat([inputs[i].tokens for i in shared])
        where = torch.cat([inputs[i].where for i in shared])
        parts = log_probs_at(model, tokens, where).split([int(inputs[i].where.sum()) for i in shared])
        found.update(zip(shared, parts))
    return [found[number] for number in range(len(groups))]


def _with_unconditional(query: Query, rows: Rows, mask_id: int) -> Query:
    """The query followed by its unconditional twin: the same rows with every given position masked."""
    given = ~rows.free[query.rows]  # (q, L)
    unconditional = query.tokens.masked_fill(given, mask_id)
    return Query(query.rows.repeat(2), torch.cat([query.tokens, unconditional]), query.where.repeat(2, 1))


def _guided(log_probs: torch.Tensor, weight: float) -> torch.Tensor:
    """(1 + w)·conditional − w·unconditional log-probs, renormalised (the first half is conditional)."""
    conditional, unconditional = log_probs.double().chunk(2)
    return ((1 + weight) * conditional - weight * unconditional).log_softmax(dim=-1).float()


def new_rows(templates: torch.Tensor, seeds: list[int], index: list[int], mask_id: int, device) -> Rows:
    """Rows that start from their templates (one (L,) row of `templates` per seed)."""
    tokens = templates.to(device).clone()  # (B, L), each row its own copy
    return Rows(
        tokens,
        tokens == mask_id,
        torch.zeros(len(seeds), dtype=torch.long, device=device),
        torch.zeros(len(seeds), dtype=torch.long, device=device),
        list(index),
        [torch.Generator().manual_seed(int(seed)) for seed in seeds],
    )


def resolve_seeds(seeds, num_samples: int, generator: torch.Generator | None):
    """One seed per sample: the given ones (checked), or drawn from `generator` (or torch's global one)."""
    if seeds is None:
        source = generator.device if generator is not None else "cpu"
        return torch.randint(0, 2**62, (num_samples,), generator=generator, device=source).tolist()
    if not isinstance(seeds, range):
        seeds = list(seeds)
    if len(seeds) != num_samples:
        raise ConfigError(f"{len(seeds)} for {num_samples} samples; give one seed per sample", field="seeds")
    ends = [seeds[0], seeds[-1]] if isinstance(seeds, range) else seeds
    bad = [seed for seed in ends if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT]
    if bad:
        raise ConfigError(f"must be whole numbers in 0..2^64-1, got {bad[0]!r}", field="seeds")
    return seeds


def check_results_fit(num_samples: int, length: int, bytes_per_token: int = 8) -> None:
    """Refuse to sample more tokens than the memory that holds the results can take."""
    needed, free = num_samples * length * bytes_per_token, available_memory(torch.device("cpu"))
    if free is not None and needed > free:
        raise ConfigError(
            f"{num_samples} samples × {length} tokens need about {needed / 1e9:.1f} GB to hold, but "
            f"{free / 1e9:.1f} GB is free; draw them in parts (a different seed each)"
        )


def block_ids(length: int, block_length: int | None) -> torch.Tensor:
    """(L,) the block each position belongs to (all 0 without blocks); the block length must divide L."""
    if block_length is None:
        return torch.zeros(length, dtype=torch.long)
    if length % block_length:
        raise ConfigError(f"{block_length} must divide the sequence length {length}", field="block_length")
    return torch.arange(length) // block_length


def split_evenly(total: int, parts: int) -> list[int]:
    """`total` split into `parts` whole shares, the remainder going to the first ones."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def template_tokens(template, length: int, mask_id: int, vocab_size: int, rows: int | None = None) -> torch.Tensor:
    """The starting tokens: the template (fixed ids, mask_id at free positions) or all masks, (L,); with
    `rows`, a template may also give each of that many samples its own row, (rows, L)."""
    if template is None:
        return torch.full((length,), mask_id, dtype=torch.long)
    template = torch.as_tensor(template).cpu()
    if template.is_floating_point() or template.dtype == torch.bool:
        raise ConfigError("template ids must be whole numbers")
    template = template.long()
    if template.shape != (length,) and (rows is None or template.shape != (rows, length)):
        per_sample = f", or ({rows}, {length}) for one per sample" if rows is not None else ""
        raise ConfigError(
            f"the template has shape {tuple(template.shape)}; it must be ({length},), one id per position{per_sample}"
        )
    if ((template < 0) | (template > vocab_size)).any():
        raise ConfigError(f"template ids must be in 0..{vocab_size - 1}, or {mask_id} for a free position")
    if not (template == mask_id).any(dim=-1).all():
        raise ConfigError("the template has no free position: nothing to sample")
    return template


def model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
