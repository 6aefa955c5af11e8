"""Samplers that draw every random choice before the first call: `tweedie`, `euler` and `ordered`.

Whether a masked position moves at a step does not depend on the token it becomes, so each free
position's unmasking step is drawn first, from its exact distribution, together with the uniform that
will pick its token. With the cache, a row is then called only at the steps where it unmasks
something: its k-th call unmasks the positions of its k-th distinct step (docs/sampling.md explains
why this is exactly the paper's cache, with E-NFE calls per sequence).
"""

from __future__ import annotations

import torch

from radd_cli.errors import ConfigError
from radd_cli.masking import places
from radd_cli.sampling.config import OrderName
from radd_cli.sampling.engine import Query, Rows, Sampler, register
from radd_cli.sampling.nfe import expected_nfe, unmask_step_distribution
from radd_cli.sampling.strategy import draw_categorical


class Planned(Sampler):
    """Each free position gets the call at which it unmasks (`plan`) and the uniform that picks its token."""

    def start(self, rows: Rows) -> None:
        u = rows.uniforms(2, self.length)  # (B, 2, L): when each position unmasks, which token it takes
        when = self.unmasking_steps(rows, u[:, 0]).masked_fill(~rows.free, -1)  # (B, L), -1 at fixed ones
        plan = when if self.calls_every_step else distinct_step_index(when)
        rows.state["plan"] = plan
        rows.state["last_call"] = torch.full_like(rows.nfe, self.steps - 1) if self.calls_every_step else plan.max(1).values
        rows.state["u_token"] = u[:, 1]

    @property
    def calls_every_step(self) -> bool:
        """Without the cache every row is called at every step, whether or not it unmasks anything."""
        return False

    def unmasking_steps(self, rows: Rows, u_when: torch.Tensor) -> torch.Tensor:
        """(B, L) long: the step (or place in the order) at which each position unmasks."""
        raise NotImplementedError

    def query(self, rows: Rows) -> Query:
        return Query.every_row(rows, rows.state["plan"] == rows.nfe[:, None])

    def update(self, rows: Rows, query: Query, log_probs: torch.Tensor) -> None:
        where = query.where  # every row is queried, so `where` lines up with the rows
        rows.tokens[where] = draw_categorical(self.config.strategy.probabilities(log_probs), rows.state["u_token"][where])

    def finished(self, rows: Rows) -> torch.Tensor:
        return rows.nfe > rows.state["last_call"]


class Diffusion(Planned):
    """The diffusion samplers: at step k every masked position moves with probability r_k."""

    def __init__(self, *args):
        super().__init__(*args)
        cdf = torch.cumsum(unmask_step_distribution(self.schedule, self.steps, self.name), dim=0)
        cdf[-1] = 1.0
        self.cdf = cdf

    @property
    def calls_every_step(self) -> bool:
        return not self.config.cache

    def unmasking_steps(self, rows: Rows, u_when: torch.Tensor) -> torch.Tensor:
        cdf = self.cdf.to(u_when.device)
        return torch.searchsorted(cdf, u_when.contiguous(), right=True).clamp_(max=self.steps - 1)

    def expected_nfe(self, free: int) -> float:
        return expected_nfe(self.schedule, self.steps, free, self.name) if self.config.cache else float(self.steps)


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
    takes_order = True

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


def check_orders(order: torch.Tensor, index: list[int], length: int) -> torch.Tensor:
    """The rows of a given order (L,) or (N, L) that belong to samples `index`, checked to be permutations."""
    if order.dim() == 1:
        order = order.expand(max(index) + 1, -1)
    if order.shape[1] != length or order.shape[0] <= max(index):
        raise ConfigError(
            f"the order has shape {tuple(order.shape)}; it must be ({length},) or (num_samples, {length})"
        )
    picked = order[index].cpu()
    if not torch.equal(picked.sort(dim=1).values, torch.arange(length).expand_as(picked)):
        raise ConfigError(f"the order must be a permutation of the positions 0..{length - 1}")
    return picked.contiguous()


def distinct_step_index(when: torch.Tensor) -> torch.Tensor:
    """For each free position, the rank of its step among its row's distinct steps; fixed positions −1."""
    fixed = when < 0
    ordered, order = when.masked_fill(fixed, torch.iinfo(when.dtype).max).sort(dim=1)  # fixed ones last
    new_step = torch.ones_like(ordered, dtype=torch.bool)
    new_step[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    rank = torch.empty_like(when).scatter_(1, order, new_step.long().cumsum(dim=1) - 1)
    return rank.masked_fill(fixed, -1)
