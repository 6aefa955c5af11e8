"""The scheduler alone: rows that join a running batch, leave it, or are cancelled give what they give offline."""

from __future__ import annotations

import asyncio

import torch

from radd_cli.core.schedule import get_schedule
from radd_cli.sampling import SamplingConfig, generate
from radd_cli.sampling.pool import Job, make_job
from radd_cli.serve.metrics import Metrics
from radd_cli.serve.scheduler import Failure, Scheduler, Ticket, Update

SCHEDULE = get_schedule("loglinear")


def job(model, config: SamplingConfig, template: torch.Tensor, seeds: list[int]) -> Job:
    key = (template.shape[0], config, str(config.order))
    length = template.shape[0]
    return make_job(model, SCHEDULE, config, length=length, seeds=seeds, template=template, key=key, owner=range(len(seeds)))


async def finished_rows(ticket: Ticket, count: int) -> dict[int, torch.Tensor]:
    done = {}
    while len(done) < count:
        update = await ticket.updates.get()
        assert isinstance(update, Update), update
        if update.finished:
            done |= {choice: tokens for choice, tokens in zip(update.choices, update.tokens)}
    return done


def test_requests_that_join_and_leave_a_running_batch_give_their_offline_samples(tiny_model):
    mask = tiny_model.mask_id
    long = torch.tensor([3, mask, mask, 5, mask, mask, mask, mask])  # (8,)
    short = torch.tensor([mask, 7, mask, mask, mask, mask])  # (6,): a separate network call
    slow, quick = SamplingConfig(steps=64, cache=False), SamplingConfig(method="ordered")
    metrics = Metrics()

    async def serve() -> list[dict[int, torch.Tensor]]:
        scheduler = Scheduler(tiny_model, max_rows=5, max_queue=4, metrics=metrics)
        scheduler.start()
        first = Ticket([job(tiny_model, slow, long, [0, 1])], progress=True)
        assert scheduler.submit(first)
        await first.updates.get()  # the first call has happened: the others join a running batch
        second = Ticket([job(tiny_model, quick, long, [7, 8])], progress=False)
        third = Ticket([job(tiny_model, quick, short, [4])], progress=False)
        cancelled = Ticket([job(tiny_model, slow, long, [9, 10, 11])], progress=False)  # waits: no room
        for ticket in (second, third, cancelled):
            assert scheduler.submit(ticket)
        scheduler.cancel(cancelled)
        results = await asyncio.gather(finished_rows(first, 2), finished_rows(second, 2), finished_rows(third, 1))
        scheduler.stop()
        return results

    first, second, third = asyncio.run(serve())
    offline = [
        generate(tiny_model, SCHEDULE, slow, num_samples=2, length=8, template=long, seeds=[0, 1]).tokens,
        generate(tiny_model, SCHEDULE, quick, num_samples=2, length=8, template=long, seeds=[7, 8]).tokens,
        generate(tiny_model, SCHEDULE, quick, num_samples=1, length=6, template=short, seeds=[4]).tokens,
    ]
    for served, expected in zip((first, second, third), offline):
        assert torch.equal(torch.stack([served[i] for i in range(len(served))]), expected)
    assert metrics.cancelled_rows._value.get() == 3 and metrics.rows_in_flight._value.get() == 0


def test_a_full_queue_refuses_and_stopping_fails_what_runs_and_what_waits(tiny_model):
    template = torch.full((8,), tiny_model.mask_id)
    endless = SamplingConfig(steps=10**5, cache=False)

    async def serve():
        scheduler = Scheduler(tiny_model, max_rows=1, max_queue=1, metrics=Metrics())
        running, refused, waiting = (
            Ticket([job(tiny_model, endless, template, [i])], progress=False) for i in range(3)
        )
        assert scheduler.submit(running) and not scheduler.submit(refused)  # the queue holds one
        scheduler.start()
        while scheduler.queue_depth:  # `running` joins the batch
            await asyncio.sleep(0.01)
        assert scheduler.submit(waiting)  # no room in the batch: it waits
        scheduler.stop()
        return [await asyncio.wait_for(ticket.updates.get(), 30) for ticket in (running, waiting)]

    for failure in asyncio.run(serve()):
        assert isinstance(failure, Failure) and failure.status == 503 and "shutting down" in failure.message
