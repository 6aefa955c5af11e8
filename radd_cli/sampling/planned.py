"""Samplers that draw every random choice before the first call: `tweedie`, `euler` and `ordered`.

Whether a masked position moves at a step does not depend on the token it becomes, so each free
position's unmasking step is drawn first, from its exact distribution, together with the uniform that
will pick its token. With the cache, a row is then called only at the steps where it unmasks
something: its k-th call unmasks the positions of its k-th distinct step (docs/sampling.md explains
why this is exactly the paper's cache, with E-NFE calls per sequence).
"""

from __future__ import annotations

import torch

from radd_cli.core.masking import places
from radd_cli.errors import ConfigError, setting
from radd_cli.sampling.config import OrderName
from radd_cli.sampling.engine import Query, Rows, Sampler, block_ids, register, split_evenly
from radd_cli.sampling.nfe import expected_nfe, unmask_step_distribution
from radd_cli.sampling.strategy import draw_categorical


class Planned(Sampler):
    """Each free position gets the call at which it unmasks (`plan`) and the uniform that picks its token."""

    def start(self, rows: Rows) -> None:
        u = rows.uniforms(2, self.length)  # (B, 2, L): when each position unmasks, which token it takes
        when = self.unmasking_steps(rows, u[:, 0]).masked_fill(~rows.free, -1)  # (B, L), -1 at fixed ones
        plan = when if self.calls_every_step else distinct_step_index(when)
        rows.state["plan"] = plan
        rows.state["last_call"] = torch.full_like(rows.calls, self.steps - 1) if self.calls_every_step else plan.max(1).values
        rows.state["u_token"] = u[:, 1]

    @property
    def calls_every_step(self) -> bool:
        """Without the cache every row is called at every step, whether or not it unmasks anything."""
        return False

    def unmasking_steps(self, rows: Rows, u_when: torch.Tensor) -> torch.Tensor:
        """(B, L) long: the step (or place in the order) at which each position unmasks."""
        raise NotImplementedError

    def query(self, rows: Rows) -> Query:
        return Query.every_row(rows, rows.state["plan"] == rows.calls[:, None])

    def update(self, rows: Rows, query: Query, log_probs: torch.Tensor) -> None:
        where = query.where  # every row is queried, so `where` lines up with the rows
        rows.tokens[where] = draw_categorical(self.config.strategy.probabilities(log_probs), rows.state["u_token"][where])

    def finished(self, rows: Rows) -> torch.Tensor:
        return rows.calls > rows.state["last_call"]


class Diffusion(Planned):
    """The diffusion samplers: at step k every masked position moves with probability r_k.

    With `block_length`, blocks are filled left to right, each with its share of the steps (the
    remainder going to the first blocks): block j's steps all come after block j − 1's.
    """

    settings = frozenset({"steps", "cache", "block_length", "kv_cache", "kv_refresh"})

    def __init__(self, *args):
        super().__init__(*args)
        self.blocks = block_ids(self.length, self.config.block_length)  # (L,)
        self.shares = split_evenly(self.steps, int(self.blocks.max()) + 1)  # steps of each block
        if min(self.shares) < 1:
            raise ConfigError(
                f"{self.steps} is fewer than the {len(self.shares)} blocks of {setting('block_length')} "
                f"{self.config.block_length}; give at least one step per block",
                field="steps",
            )
        self.offsets = torch.tensor([0, *self.shares[:-1]]).cumsum(0)  # first step of each block
        self.cdfs = {share: self._cdf(share) for share in set(self.shares)}

    def _cdf(self, steps: int) -> torch.Tensor:
        cdf = torch.cumsum(unmask_step_distribution(self.schedule, steps, self.name), dim=0)
        cdf[-1] = 1.0
        return cdf

    @property
    def calls_every_step(self) -> bool:
        return not self.config.cache

    def unmasking_steps(self, rows: Rows, u_when: torch.Tensor) -> torch.Tensor:
        when = torch.empty_like(u_when, dtype=torch.long)  # (B, L)
        share_of_position = torch.tensor(self.shares)[self.blocks]  # (L,)
        for share, cdf in self.cdfs.items():
            chosen = (share_of_position == share).to(u_when.device)
            steps = torch.searchsorted(cdf.to(u_when.device), u_when[:, chosen].contiguous(), right=True)
            when[:, chosen] = steps.clamp_(max=share - 1)
        return when + self.offsets[self.blocks].to(u_when.device)

    def expected_nfe(self, free: int) -> float:
        """Per block, from its share of the steps and of the free positions (spread evenly over the blocks)."""
        if not self.config.cache:
            return float(self.steps)
        per_block = split_evenly(free, len(self.shares))
        return sum(expected_nfe(self.schedule, s, f, self.name) for s, f in zip(self.shares, per_block) if f)


@register
class Tweedie(Diffusion):
    """r_k = (e^{−σ(t_{k+1})} − e^{−σ(t_k)}) / (1 − e^{−σ(t_k)}): the exact reverse step (tau-leaping free)."""

    name = "tweedie"


@register
class Euler(Diffusion):
    """r_k = (t_k − t_{k+1})·σ'(t_k)·e^{−σ(t_k)} / (1 − e^{−σ(t_k)}): the first-order step."""

    name = "euler"


@register
class Ordered(Planned):
    """Any-order autoregressive: one free position per call, in the order given (SamplingConfig.order)."""

    name = "ordered"
    settings = frozenset({"order"})

    def unmasking_steps(self, rows: Rows, u_when: torch.Tensor) -> torch.Tensor:
        return places(self.orders(rows)).to(u_when.device)

    def orders(self, rows: Rows) -> torch.Tensor:
        """(B, L): each row's order of positions."""
        order, length = self.config.order, self.length
        if order == OrderName.forward:
            return torch.arange(length).expand(len(rows), -1).contiguous()
        if order == OrderName.backward:
            return torch.arange(length - 1, -1, -1).expand(len(rows), -1).contiguous()
        if order == OrderName.random:
            return torch.stack([torch.randperm(length, generator=g) for g in rows.generators])
        return check_orders(order, rows.index, length)

    def expected_nfe(self, free: int) -> float:
        return float(free)


@register
class FirstHitting(Planned):
    """The first-hitting sampler of Zheng et al. (2024): with n positions still masked at time t, the next
    unmasking happens at τ = t·u^{1/n} (linear α), at one of them chosen uniformly, drawn from the network.

    A time-free network ignores the times, so this draws exactly what any-order autoregressive sampling in
    a uniformly random order draws: one network call per free position.
    """

    name = "first_hitting"

    def unmasking_steps(self, rows: Rows, u_when: torch.Tensor) -> torch.Tensor:
        place = torch.full_like(u_when, -1, dtype=torch.long).cpu()  # (B, L)
        for row, (free, uniforms) in enumerate(zip(rows.free.cpu(), u_when.cpu())):
            masked = free.nonzero().squeeze(1).tolist()
            for event in range(len(masked)):  # the event's time t·u^{1/n} is not needed: the network has no t
                chosen = masked.pop(min(int(uniforms[event] * len(masked)), len(masked) - 1))
                place[row, chosen] = event
        return place.to(u_when.device)

    def expected_nfe(self, free: int) -> float:
        return float(free)


def check_orders(order: torch.Tensor, index: list[int], length: int) -> torch.Tensor:
    """The rows of a given order (L,) or (N, L) that belong to samples `index`, checked to be permutations."""
    if order.dim() == 1:
        order = order.expand(max(index) + 1, -1)
    if order.shape[1] != length or order.shape[0] <= max(index):
        raise ConfigError(f"has shape {tuple(order.shape)}; it must be ({length},) or (num_samples, {length})", field="order")
    picked = order[index].cpu()
    if not torch.equal(picked.sort(dim=1).values, torch.arange(length).expand_as(picked)):
        raise ConfigError(f"must be a permutation of the positions 0..{length - 1}", field="order")
    return picked.contiguous()


def distinct_step_index(when: torch.Tensor) -> torch.Tensor:
    """For each free position, the rank of its step among its row's distinct steps; fixed positions −1."""
    fixed = when < 0
    ordered, order = when.masked_fill(fixed, torch.iinfo(when.dtype).max).sort(dim=1)  # fixed ones last
    new_step = torch.ones_like(ordered, dtype=torch.bool)
    new_step[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    rank = torch.empty_like(when).scatter_(1, order, new_step.long().cumsum(dim=1) - 1)
    return rank.masked_fill(fixed, -1)
