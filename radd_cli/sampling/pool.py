"""The row pool: the one driver of the sampling engine, for offline generation and for the server.

A `Job` is the samples of one template, one seed each, drawn by one sampler — window by window when the
template is longer than the model (each next window keeps the end of the text so far as fixed context, and
draws from a seed derived from the sample's seed and the window's number). A `RowPool` holds the rows of every
job in flight: `admit` queues a job; `step` lets waiting rows join while there is room (`max_rows`), makes one
network call per sequence length over all running rows (`engine.advance`), and retires the rows that finished.
A sample's window that finishes hands its tokens back to the job, which queues the sample's next window or,
after its last one (or its first generated end-of-text with `stop_at_eos`), marks the sample done.

A row's tokens depend only on its seed and its job's settings, never on the rows beside it, so a sample is the
same whatever joins or leaves the pool. A group of rows whose call or update fails (non-finite outputs, an error
in its sampler) fails its jobs alone; every other row goes on.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Hashable

import torch
from torch import nn

from radd_cli.core.kv_cache import KVMode
from radd_cli.core.masking import seed_for
from radd_cli.core.schedule import Schedule
from radd_cli.core.scoring import unwrap, vocabulary
from radd_cli.errors import ConfigError, RaddError, setting
from radd_cli.sampling.config import SamplingConfig
from radd_cli.sampling.engine import (
    SAMPLERS,
    Rows,
    Sampler,
    SampleResult,
    SamplingError,
    advance,
    new_rows,
    template_tokens,
)
from radd_cli.sampling.kv_cache import KVCached

MAX_LENGTHS = 64  # model lengths one sequence may span; past it, each window sees a vanishing share of the text


def check_reach(length: int, window: int) -> None:
    """Refuse up front a sequence beyond the model's reach: more than MAX_LENGTHS windows' worth, which would
    run for hours (about 2·length / window windows of a full sampling run each)."""
    if length > MAX_LENGTHS * window:
        raise ConfigError(
            f"{length} tokens is {length / window:,.0f} times the model's length ({window}); radd writes at most "
            f"{MAX_LENGTHS} model lengths ({MAX_LENGTHS * window} tokens) window by window",
            field="length",
        )


def window_starts(length: int, window: int) -> list[int]:
    """Where each window begins: every half window, the last one aligned to the end (one window when it fits)."""
    if length <= window:
        return [0]
    stride = window - window // 2
    return [*range(0, length - window, stride), length - window]


def first_generated_eos(tokens: torch.Tensor, generated: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(N,) the position of each row's first end-of-text token among its generated positions, else the length."""
    hits = (tokens == eos_id) & generated  # (N, L)
    length = torch.full((tokens.shape[0],), tokens.shape[1], dtype=torch.long)
    return torch.where(hits.any(dim=1), hits.int().argmax(dim=1), length)


@dataclass(eq=False)
class Job:
    """The samples of one template: `template` (n, L) holds fixed ids and the mask id where tokens are drawn.

    `sampler` is sized for one window (the model's length, or L when shorter). With `eos_id` (stop_at_eos), a
    sample stops after the window in which it generated an end-of-text token and is trimmed there. `key`: jobs with
    equal keys share the sampler of whichever came first (same settings, same window length).
    """

    sampler: Sampler
    template: torch.Tensor
    seeds: list[int]
    eos_id: int | None = None
    key: Hashable | None = None
    owner: object = None  # whoever asked (the server's request)
    watch: bool = False  # keep `tokens` up to date after every call, not only when a window finishes (streaming)
    tokens: torch.Tensor = field(init=False)  # (n, L): the samples as drawn so far
    nfe: torch.Tensor = field(init=False)  # (n,) network evaluations each sample has cost
    error: RaddError | None = None  # why the job failed

    def __post_init__(self) -> None:
        self.tokens = self.template.clone()
        self.nfe = torch.zeros(len(self.seeds), dtype=torch.long)
        self.starts = window_starts(self.template.shape[1], self.sampler.length)
        self.window = [-1] * len(self.seeds)  # the window each sample is in (or has last finished)
        self.done = [False] * len(self.seeds)
        self.stopped = [False] * len(self.seeds)  # stopped at a generated end-of-text token
        self.key = self.key if self.key is not None else object()

    @property
    def finished(self) -> bool:
        return self.error is not None or all(self.done)

    def next_window(self, sample: int) -> int | None:
        """The sample's next window that still has a position to draw, or None when the sample is complete."""
        if self.stopped[sample]:
            return None
        for number in range(self.window[sample] + 1, len(self.starts)):
            if (self.piece(sample, number) == self.sampler.mask_id).any():
                return number
        return None

    def piece(self, sample: int, number: int) -> torch.Tensor:
        """(W,) the sample's tokens in window `number`: context, fixed tokens and masks."""
        start = self.starts[number]
        return self.tokens[sample, start : start + self.sampler.length]

    def seed(self, sample: int, number: int) -> int:
        return self.seeds[sample] if number == 0 else seed_for(self.seeds[sample], number)

    def window_done(self, sample: int, tokens: torch.Tensor, nfe: int) -> None:
        """A row finished the sample's current window: keep its tokens and cost; stop at an end-of-text token."""
        start = self.starts[self.window[sample]]
        self.tokens[sample, start : start + self.sampler.length] = tokens
        self.nfe[sample] += nfe
        if self.eos_id is not None:
            generated = self.template[sample] == self.sampler.mask_id
            self.stopped[sample] = bool(((self.tokens[sample] == self.eos_id) & generated).any())

    def result(self) -> SampleResult:
        if self.error is not None:
            raise self.error
        if self.eos_id is None:
            return SampleResult(self.tokens, self.nfe)
        lengths = first_generated_eos(self.tokens, self.template == self.sampler.mask_id, self.eos_id)
        return SampleResult(self.tokens, self.nfe, lengths)


def make_sampler(model: nn.Module, schedule: Schedule, config: SamplingConfig, length: int) -> Sampler:
    """The configured sampler for windows of `length`; with `kv_cache`, its calls go through the key/value cache."""
    vocab_size, mask_id = vocabulary(model)
    sampler = SAMPLERS[config.method](config, schedule, vocab_size, mask_id, length)
    return KVCached(sampler) if config.kv_cache != KVMode.none else sampler


def model_length(model: nn.Module) -> int | None:
    """The sequence length the network was trained at (RADD's config.length, or a `length` attribute)."""
    inner = unwrap(model)
    config = getattr(inner, "config", None)
    return getattr(config, "length", None) or getattr(inner, "length", None)


def make_job(
    model: nn.Module,
    schedule: Schedule,
    config: SamplingConfig,
    *,
    length: int,
    seeds: list[int],
    template: torch.Tensor | None = None,
    eos_id: int | None = None,
    key: Hashable | None = None,
    owner: object = None,
    watch: bool = False,
) -> Job:
    """The job that draws one sample per seed of `length` tokens from `template` ((L,), or (n, L): one per sample;
    all masks when None) as `config` says, window by window beyond the model's length."""
    vocab_size, mask_id = vocabulary(model)
    start = template_tokens(template, length, mask_id, vocab_size, rows=len(seeds))
    if config.guidance and bool((start == mask_id).all()):
        raise ConfigError("needs given tokens to guide by: a template, a prefix or suffix, or a prompt", field="guidance")
    if config.stop_at_eos and eos_id is None:
        raise ConfigError(f"needs the end-of-text token id ({setting('eos_id')})", field="stop_at_eos")
    window = model_length(model) or length
    check_reach(length, window)
    sampler = make_sampler(model, schedule, config, min(length, window))
    rows = start if start.dim() == 2 else start.expand(len(seeds), -1)  # (n, L)
    return Job(sampler, rows, list(seeds), eos_id if config.stop_at_eos else None, key, owner, watch)


@dataclass
class Update:
    """What a step did to a job: these samples advanced, and (when `finished`) are complete."""

    job: Job
    samples: list[int]
    finished: bool


@dataclass
class _Group:
    sampler: Sampler
    rows: Rows  # rows.index: the pool's row ids


class RowPool:
    """Rows of many jobs, batched into network calls (see the module's docstring)."""

    def __init__(self, model: nn.Module, *, max_rows: int, device: torch.device | str = "cpu"):
        self.model, self.max_rows, self.device = model, max_rows, torch.device(device)
        self._waiting: deque[tuple[Job, int]] = deque()  # (job, sample) whose next window waits for room
        self._groups: dict[Hashable, _Group] = {}
        self._owners: dict[int, tuple[Job, int]] = {}  # row id → (job, sample)
        self._ids = itertools.count()
        self.network_calls = 0

    @property
    def running(self) -> int:
        """Rows in flight."""
        return len(self._owners)

    @property
    def waiting(self) -> int:
        """Sample windows waiting for room."""
        return len(self._waiting)

    def admit(self, job: Job) -> None:
        """Queue every sample of `job` (its first window); rows join at the next steps, oldest first."""
        for sample in range(len(job.seeds)):
            self._queue_next(job, sample, front=False)

    def cancel(self, job: Job, samples: frozenset[int] | None = None) -> int:
        """Remove the job's rows (only `samples` when given), running or waiting; returns how many ran."""
        chosen = (lambda s: True) if samples is None else samples.__contains__
        self._waiting = deque((j, s) for j, s in self._waiting if j is not job or not chosen(s))
        dropped = self._drop(lambda owner: owner[0] is job and chosen(owner[1]))
        for sample in range(len(job.seeds)):
            if chosen(sample):
                job.done[sample] = True
        return dropped

    def step(self) -> list[Update]:
        """Admit what fits, make one network call per sequence length, retire finished rows."""
        self._admit_waiting()
        updates: list[Update] = []
        by_length: dict[int, list[Hashable]] = {}
        for key, group in self._groups.items():
            by_length.setdefault(group.rows.tokens.shape[1], []).append(key)
        for keys in by_length.values():
            failures = self._advance(keys)
            for key in keys:
                if key in failures:
                    updates += self._fail(key, failures[key])
                elif key in self._groups:
                    updates += self._retire(key)
        return updates

    def progress(self, job: Job) -> float:
        """The job's samples done, each unfinished one counted by its share of windows and of positions drawn."""
        windows = len(job.starts)
        share = {sample: max(number, 0) / windows for sample, number in enumerate(job.window)}
        for group in self._groups.values():
            masked = (group.rows.tokens == group.sampler.mask_id) & group.rows.free  # (B, L)
            drawn = 1 - masked.sum(dim=1).double() / group.rows.free.sum(dim=1).clamp(min=1)  # (B,)
            for row, fraction in zip(group.rows.index, drawn.tolist()):
                owner, sample = self._owners[row]
                if owner is job:
                    share[sample] += fraction / windows
        return sum(1.0 if done else share[sample] for sample, done in enumerate(job.done))

    # internals

    def _queue_next(self, job: Job, sample: int, *, front: bool) -> bool:
        """Queue the sample's next window; False when the sample is complete."""
        number = job.next_window(sample)
        if number is None:
            job.done[sample] = True
            return False
        job.window[sample] = number
        (self._waiting.appendleft if front else self._waiting.append)((job, sample))
        return True

    def _admit_waiting(self) -> None:
        joining: dict[Hashable, list[tuple[Job, int]]] = {}
        while self._waiting and len(self._owners) + sum(map(len, joining.values())) < self.max_rows:
            job, sample = self._waiting.popleft()
            joining.setdefault((job.key, job.sampler.length), []).append((job, sample))
        for (key, _), members in joining.items():
            job = members[0][0]
            ids = [next(self._ids) for _ in members]
            pieces = torch.stack([j.piece(s, j.window[s]) for j, s in members])  # (k, W)
            seeds = [j.seed(s, j.window[s]) for j, s in members]
            rows = new_rows(pieces, seeds, ids, job.sampler.mask_id, self.device)
            job.sampler.start(rows)
            self._owners.update(zip(ids, members))
            group = self._groups.get(key)
            self._groups[key] = _Group(job.sampler, rows) if group is None else _Group(group.sampler, Rows.concat([group.rows, rows]))

    def _advance(self, keys: list[Hashable]) -> dict[Hashable, RaddError]:
        """One network call for these groups; the groups that failed, with why. When the shared call itself fails,
        each group is tried on its own, so that one group's failure is its own."""
        groups = [(self._groups[key].sampler, self._groups[key].rows) for key in keys]
        try:
            failed = advance(self.model, groups)
            self.network_calls += 1
            return {keys[i]: error for i, error in failed.items()}
        except Exception as error:  # noqa: BLE001 — the call itself failed: find whose rows made it fail
            if len(keys) == 1:
                return {keys[0]: error if isinstance(error, RaddError) else SamplingError(error)}
        failures = {}
        for key in keys:
            failures |= self._advance([key])
        return failures

    def _retire(self, key: Hashable) -> list[Update]:
        group = self._groups[key]
        finished = group.sampler.finished(group.rows)  # (B,) bool
        advanced: dict[Job, list[int]] = {}
        for row in group.rows.index:
            job, sample = self._owners[row]
            advanced.setdefault(job, []).append(sample)
        complete: dict[Job, list[int]] = {}
        if finished.any():
            leaving = group.rows.select(finished)
            for row, tokens, nfe in zip(leaving.index, leaving.tokens.cpu(), leaving.nfe.cpu().tolist()):
                job, sample = self._owners.pop(row)
                job.window_done(sample, tokens, nfe)
                if not self._queue_next(job, sample, front=True):
                    complete.setdefault(job, []).append(sample)
            group.rows = group.rows.select(~finished)
        if len(group.rows) == 0:
            del self._groups[key]
        else:
            self._write_back(group.rows, watched_only=True)
        updates = [Update(job, samples, True) for job, samples in complete.items()]
        for job, samples in advanced.items():
            still = [s for s in samples if s not in complete.get(job, ())]
            if still:
                updates.append(Update(job, still, False))
        return updates

    def _write_back(self, rows: Rows, *, watched_only: bool) -> None:
        """Running rows' tokens into their jobs (of jobs that watch, or all), so a job shows its samples as they stand."""
        owners = [self._owners[row] for row in rows.index]
        if watched_only and not any(job.watch for job, _ in owners):
            return
        for (job, sample), tokens in zip(owners, rows.tokens.cpu()):
            if watched_only and not job.watch:
                continue
            start = job.starts[job.window[sample]]
            job.tokens[sample, start : start + job.sampler.length] = tokens

    def _fail(self, key: Hashable, error: RaddError) -> list[Update]:
        jobs = {self._owners[row][0] for row in self._groups[key].rows.index}
        for job in jobs:
            job.error = error
            self.cancel(job)
        return [Update(job, list(range(len(job.seeds))), True) for job in jobs]

    def _drop(self, chosen) -> int:
        """Remove running rows whose (job, sample) is chosen; how many."""
        dropped = 0
        for key in list(self._groups):
            group = self._groups[key]
            keep = torch.tensor([not chosen(self._owners[row]) for row in group.rows.index], dtype=torch.bool)
            if bool(keep.all()):
                continue
            leaving = group.rows.select(~keep.to(group.rows.tokens.device))
            self._write_back(leaving, watched_only=False)  # the job keeps what its cancelled rows had drawn
            for row in leaving.index:
                del self._owners[row]
                dropped += 1
            group.rows = group.rows.select(keep.to(group.rows.tokens.device))
            if len(group.rows) == 0:
                del self._groups[key]
        return dropped
