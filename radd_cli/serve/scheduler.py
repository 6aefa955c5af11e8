"""Continuous batching for the server: one thread owns the model and drives the row pool.

A request arrives as a `Ticket` holding `Job`s (radd_cli/sampling/pool.py), one per template, each sample a
choice of the request (`job.owner` is the range of choice indices its samples answer). The scheduler admits
whole tickets in arrival order while their rows fit in `max_rows`, then steps the same `RowPool` that offline
generation uses: rows join at the next network call and leave the moment they finish, so every choice gives
exactly the tokens it would give alone. Updates go back to the request's event loop; a job that fails (its rows'
outputs were not finite, its sampler raised) fails its own request only; rows of a request that is cancelled
(client gone, stop string found, shutdown) are removed before the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from radd_cli.sampling.pool import Job, RowPool

log = logging.getLogger("radd.serve")
SHUTTING_DOWN = "the server is shutting down; retry against another server"


@dataclass
class Update:
    """Choices of a request after a network call: all that finished, and (when asked) the others."""

    choices: list[int]
    tokens: torch.Tensor  # (k, L) long, on the CPU
    nfe: torch.Tensor  # (k,) network calls each choice has cost so far
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
        self.rows = sum(len(job.seeds) for job in jobs)
        self.progress = progress  # an Update for unfinished choices after every call, not only for finished ones
        for job in jobs:
            job.watch = progress
        self.loop = asyncio.get_running_loop()
        self.updates: asyncio.Queue[Update | Failure] = asyncio.Queue()

    def post(self, message: Update | Failure) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop has closed: nobody is waiting any more
            self.loop.call_soon_threadsafe(self.updates.put_nowait, message)


class Scheduler:
    """The thread that batches every request's rows into network calls (see the module's docstring)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        max_rows: int,
        max_queue: int,
        metrics,
        autocast: Callable = contextlib.nullcontext,
        device: torch.device | str = "cpu",
    ):
        self.max_rows, self.max_queue = max_rows, max_queue
        self.metrics, self.autocast = metrics, autocast
        self.pool = RowPool(model, max_rows=max_rows, device=device)  # only the scheduler thread touches it
        self._tickets: dict[Job, Ticket] = {}  # the admitted jobs' requests
        self._cond = threading.Condition()
        self._waiting: deque[Ticket] = deque()  # guarded by _cond, like _cancels and _stopping
        self._cancels: list[tuple[Ticket, frozenset[int] | None]] = []
        self._stopping = False
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
                except Exception:  # a bug outside any one request: fail what runs, keep serving
                    log.exception("the scheduler failed; the requests in flight are cancelled")
                    self._fail_all(Failure(500, "internal error in the scheduler; see the server log"))
        self._fail_all(Failure(503, SHUTTING_DOWN))

    def _next_turn(self) -> bool:
        """Wait for work; apply cancellations and admit waiting requests. False once stopping."""
        with self._cond:
            while not (self._stopping or self._waiting or self._tickets or self._cancels):
                self._cond.wait()
            if self._stopping:
                for ticket in self._waiting:
                    ticket.post(Failure(503, SHUTTING_DOWN))
                self._waiting.clear()
                return False
            cancels, self._cancels = self._cancels, []
            for ticket, choices in cancels:
                self._remove(ticket, choices)
            room = self.max_rows - self.pool.running - self.pool.waiting
            while self._waiting and (self._waiting[0].rows <= room or not self._tickets):
                ticket = self._waiting.popleft()
                room -= ticket.rows
                for job in ticket.jobs:
                    self._tickets[job] = ticket
                    self.pool.admit(job)
            self.metrics.queue_depth.set(len(self._waiting))
        return True

    def _step(self) -> None:
        """One network call per sequence length; finished choices, progress and failures to their requests."""
        calls = self.pool.network_calls
        with self.autocast():
            updates = self.pool.step()
        self.metrics.network_calls.inc(self.pool.network_calls - calls)
        for update in updates:
            ticket = self._tickets.get(update.job)
            if ticket is None:
                continue  # its request failed or went away in this step
            job = update.job
            if job.error is not None:
                log.warning("a request failed: %s", job.error)
                self._remove(ticket, None)
                ticket.post(Failure(500, str(job.error)))
                continue
            if update.finished:
                generated = job.template[update.samples] == job.sampler.mask_id
                self.metrics.generated(int(generated.sum()))
            if update.finished or ticket.progress:
                choices = [job.owner[sample] for sample in update.samples]
                ticket.post(Update(choices, job.tokens[update.samples], job.nfe[update.samples], update.finished))
            if all(job.done):
                del self._tickets[job]
        self.metrics.rows_in_flight.set(self.pool.running)

    def _remove(self, ticket: Ticket, choices: frozenset[int] | None) -> None:
        """Drop the ticket's rows (those of `choices` when given) from the pool."""
        for job in ticket.jobs:
            if job not in self._tickets:
                continue
            samples = None if choices is None else frozenset(s for s, c in enumerate(job.owner) if c in choices)
            decoded_before = int((job.tokens != job.template).sum())
            dropped = self.pool.cancel(job, samples)
            self.metrics.cancelled_rows.inc(dropped)
            self.metrics.generated(int((job.tokens != job.template).sum()) - decoded_before)
            if all(job.done):
                del self._tickets[job]
        self.metrics.rows_in_flight.set(self.pool.running)

    def _fail_all(self, failure: Failure) -> None:
        for ticket in {ticket for ticket in self._tickets.values()}:
            self._remove(ticket, None)
            ticket.post(failure)
