"""Continuous batching on the lockstep engine: one thread owns the model and makes every network call.

A request arrives as a `Ticket` holding `Job`s: rows already started by their sampler (`Sampler.start`,
every random choice drawn from each row's own generator), one job per template. The scheduler admits
whole tickets in arrival order while the rows in flight stay within `max_rows`, and puts rows with the
same settings and length into one group, exactly as `engine.run` refills its batch — so a row that joins
a running batch gives the tokens it would give alone. Each turn makes one network call per sequence
length (`engine.advance` over every group of that length); rows of different lengths are never padded
into one call. Finished rows leave at once and their tokens go back to the request's event loop; rows of
a request that is cancelled (client gone, stop string found, shutdown) are removed before the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Callable, Hashable

import torch
from torch import nn

from radd_cli.errors import RaddError
from radd_cli.sampling.engine import Rows, Sampler, advance

log = logging.getLogger("radd.serve")


@dataclass
class Job:
    """Rows of one request that share a template and settings, started by their sampler."""

    sampler: Sampler
    rows: Rows  # rows.index: each row's choice index within its request
    key: Hashable  # jobs with equal keys (same settings, same length) share a group


@dataclass
class Update:
    """Rows of a request after a network call: all that finished, and (when asked) the others."""

    choices: list[int]
    tokens: torch.Tensor  # (k, L) long, on the CPU
    nfe: torch.Tensor  # (k,) network calls each row has cost so far
    finished: bool


@dataclass
class Failure:
    """The request cannot be completed: an HTTP status and a message for the client."""

    status: int
    message: str


class Ticket:
    """One request's place in the scheduler; updates go back to the event loop that made it."""

    def __init__(self, jobs: list[Job], *, progress: bool):
        self.jobs = jobs
        self.rows = sum(len(job.rows) for job in jobs)
        self.progress = progress  # an Update for unfinished rows after every call, not only for finished ones
        self.loop = asyncio.get_running_loop()
        self.updates: asyncio.Queue[Update | Failure] = asyncio.Queue()

    def post(self, message: Update | Failure) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop has closed: nobody is waiting any more
            self.loop.call_soon_threadsafe(self.updates.put_nowait, message)


@dataclass
class Group:
    sampler: Sampler
    rows: Rows  # rows.index: the scheduler's row ids


class Scheduler:
    """The thread that batches every request's rows into network calls (see the module's docstring)."""

    def __init__(
        self, model: nn.Module, *, max_rows: int, max_queue: int, metrics, autocast: Callable = contextlib.nullcontext
    ):
        self.model, self.max_rows, self.max_queue = model, max_rows, max_queue
        self.metrics, self.autocast = metrics, autocast
        self._cond = threading.Condition()
        self._waiting: deque[Ticket] = deque()  # guarded by _cond, like _cancels and _stopping
        self._cancels: list[tuple[Ticket, frozenset[int] | None]] = []
        self._stopping = False
        self._groups: dict[Hashable, Group] = {}  # only the scheduler thread touches these two
        self._owners: dict[int, tuple[Ticket, int]] = {}  # row id → (ticket, choice index)
        self._ids = itertools.count()
        self._thread = threading.Thread(target=self._run, name="radd-scheduler", daemon=True)

    # Called from the event loop.

    def start(self) -> None:
        self._thread.start()

    def stop(self, wait: bool = True) -> None:
        """Stop after the current call; requests still running or waiting get a 503."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if wait and self._thread.is_alive():
            self._thread.join()

    def submit(self, ticket: Ticket) -> bool:
        """Queue a request; False when the queue is full."""
        with self._cond:
            if self._stopping or len(self._waiting) >= self.max_queue:
                return False
            self._waiting.append(ticket)
            self.metrics.queue_depth.set(len(self._waiting))
            self._cond.notify_all()
        return True

    def cancel(self, ticket: Ticket, choices: frozenset[int] | None = None) -> None:
        """Remove a request's rows (only `choices` when given) from the queue or the batch."""
        with self._cond:
            if choices is None and ticket in self._waiting:
                self._waiting.remove(ticket)
                self.metrics.queue_depth.set(len(self._waiting))
                self.metrics.cancelled_rows.inc(ticket.rows)
            else:
                self._cancels.append((ticket, choices))
            self._cond.notify_all()

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    # The scheduler thread.

    def _run(self) -> None:
        with torch.inference_mode():
            while self._next_turn():
                try:
                    self._step()
                except Exception:  # a bug here must not leave every client waiting: fail what runs, go on
                    log.exception("the scheduler failed; the requests in flight are cancelled")
                    self._fail(list(self._groups), Failure(500, "internal error in the scheduler; see the server log"))
        self._fail(list(self._groups), Failure(503, "the server is shutting down; retry against another server"))

    def _next_turn(self) -> bool:
        """Wait for work; apply cancellations and admit waiting requests. False once stopping."""
        with self._cond:
            while not (self._stopping or self._waiting or self._groups or self._cancels):
                self._cond.wait()
            if self._stopping:
                for ticket in self._waiting:
                    ticket.post(Failure(503, "the server is shutting down; retry against another server"))
                self._waiting.clear()
                return False
            cancels, self._cancels = self._cancels, []
            for ticket, choices in cancels:
                self._remove(ticket, choices)
            room = self.max_rows - len(self._owners)
            while self._waiting and (self._waiting[0].rows <= room or not self._owners):
                ticket = self._waiting.popleft()
                room -= ticket.rows
                for job in ticket.jobs:
                    self._join(ticket, job)
                ticket.jobs = []
            self.metrics.queue_depth.set(len(self._waiting))
            self.metrics.rows_in_flight.set(len(self._owners))
        return True

    def _join(self, ticket: Ticket, job: Job) -> None:
        ids = [next(self._ids) for _ in job.rows.index]
        self._owners.update({row: (ticket, choice) for row, choice in zip(ids, job.rows.index)})
        job.rows.index = ids
        group = self._groups.get(job.key)
        rows = job.rows if group is None else Rows.concat([group.rows, job.rows])
        self._groups[job.key] = Group(job.sampler if group is None else group.sampler, rows)

    def _step(self) -> None:
        """One network call for each sequence length in the batch; retire what finished."""
        by_length: dict[int, list[Hashable]] = defaultdict(list)
        for key, group in self._groups.items():
            by_length[group.rows.tokens.shape[1]].append(key)
        for keys in by_length.values():
            try:
                with self.autocast():
                    advance(self.model, [(self._groups[key].sampler, self._groups[key].rows) for key in keys])
            except RaddError as error:  # e.g. non-finite outputs: these requests fail, the server goes on
                self._fail(keys, Failure(500, str(error)))
                continue
            self.metrics.network_calls.inc()
            for key in keys:
                self._retire(key)
        self.metrics.rows_in_flight.set(len(self._owners))

    def _retire(self, key: Hashable) -> None:
        group = self._groups[key]
        finished = group.sampler.finished(group.rows)  # (B,) bool
        if finished.any():
            leaving = group.rows.select(finished)
            self._send(leaving, finished=True)
            self.metrics.generated(int(leaving.free.sum()))
            for row in leaving.index:
                del self._owners[row]
            group.rows = group.rows.select(~finished)
        if len(group.rows) == 0:
            del self._groups[key]
        else:
            self._send(group.rows, finished=False)

    def _send(self, rows: Rows, *, finished: bool) -> None:
        owners = [self._owners[row] for row in rows.index]
        positions: dict[Ticket, list[int]] = defaultdict(list)
        for position, (ticket, _) in enumerate(owners):
            if finished or ticket.progress:
                positions[ticket].append(position)
        if not positions:
            return
        tokens, nfe = rows.tokens.cpu(), rows.nfe.cpu()
        for ticket, where in positions.items():
            ticket.post(Update([owners[p][1] for p in where], tokens[where], nfe[where], finished))

    def _remove(self, ticket: Ticket, choices: frozenset[int] | None) -> None:
        """Drop the ticket's rows (those of `choices` when given) from every group."""
        for key in list(self._groups):
            group = self._groups[key]
            drop = [
                self._owners[row][0] is ticket and (choices is None or self._owners[row][1] in choices)
                for row in group.rows.index
            ]
            if not any(drop):
                continue
            dropped = group.rows.select(torch.tensor(drop, device=group.rows.tokens.device))
            decoded = dropped.free & (dropped.tokens != group.sampler.mask_id)
            self.metrics.cancelled_rows.inc(len(dropped))
            self.metrics.generated(int(decoded.sum()))
            for row in dropped.index:
                del self._owners[row]
            group.rows = group.rows.select(~torch.tensor(drop, device=group.rows.tokens.device))
            if len(group.rows) == 0:
                del self._groups[key]

    def _fail(self, keys: list[Hashable], failure: Failure) -> None:
        """Fail every request with rows in these groups, and remove all their rows."""
        tickets = {self._owners[row][0] for key in keys for row in self._groups[key].rows.index}
        for ticket in tickets:
            self._remove(ticket, None)
            ticket.post(failure)
