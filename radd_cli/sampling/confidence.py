"""Confidence-ordered samplers: each call proposes a token at every masked position of the current block,
scores how sure the network is, and keeps the most confident proposals.

- `confidence` (MaskGIT; LLaDA's low-confidence remasking; Dream's maskgit_plus / topk_margin /
  entropy): each call unmasks the k most confident positions, k splitting the free positions of a block
  evenly over its share of the steps (the remainder to the first steps).
- `threshold` (Fast-dLLM's parallel decoding): each call unmasks every position whose confidence is at
  least τ, and at least the single most confident one, so the number of calls adapts to the network.

The proposal is a draw under the strategy (from each row's own generator) or, with `greedy`, the most
likely token. Confidence is the proposal's probability, the top-1 − top-2 margin, or e^{−entropy}
(all in [0, 1], 1 meaning certain).
With `margin` or `entropy` and one token per call, the order depends only on the visible tokens, so
sampling is exact (any-order autoregressive in an adaptive order); docs/sampling-suite.md says more.
"""

from __future__ import annotations

import torch

from radd_cli.errors import ConfigError, setting
from radd_cli.sampling.config import Confidence
from radd_cli.sampling.engine import Query, Rows, Sampler, block_ids, register, split_evenly
from radd_cli.sampling.strategy import draw_categorical


class ConfidenceOrdered(Sampler):
    """What the confidence samplers share: the current block, proposals, and their confidences."""

    settings = frozenset({"block_length", "confidence", "greedy", "kv_cache", "kv_refresh"})

    def __init__(self, *args):
        super().__init__(*args)
        self.blocks = block_ids(self.length, self.config.block_length)  # (L,)

    def query(self, rows: Rows) -> Query:
        masked = rows.free & (rows.tokens == self.mask_id)  # (B, L)
        blocks = self.blocks.to(masked.device).expand_as(masked)
        current = blocks.masked_fill(~masked, torch.iinfo(torch.long).max).min(dim=1, keepdim=True).values  # (B, 1)
        return Query.every_row(rows, masked & (blocks == current))

    def update(self, rows: Rows, query: Query, log_probs: torch.Tensor) -> None:
        probs = self.config.strategy.probabilities(log_probs)  # (n, V)
        if self.config.greedy:
            proposal = probs.argmax(dim=-1)
        else:
            proposal = draw_categorical(probs, rows.uniforms(self.length)[query.where])
        score = torch.full(query.where.shape, -torch.inf, dtype=torch.float64, device=probs.device)  # (B, L)
        score[query.where] = self.confidence(probs, proposal).double()
        chosen = self.choose(rows, score) & query.where
        proposals = torch.zeros_like(rows.tokens)
        proposals[query.where] = proposal
        rows.tokens[chosen] = proposals[chosen]

    def confidence(self, probs: torch.Tensor, proposal: torch.Tensor) -> torch.Tensor:
        """(n,) how sure the network is at each position, by the configured measure."""
        kind = self.config.confidence
        if kind == Confidence.probability:
            return probs.gather(-1, proposal[:, None]).squeeze(-1)
        if kind == Confidence.margin:
            top = probs.topk(min(2, probs.shape[-1]), dim=-1).values
            return top[:, 0] - (top[:, 1] if top.shape[-1] > 1 else 0.0)
        entropy = -(probs * probs.clamp(min=1e-38).log()).sum(dim=-1, dtype=torch.float64)
        return (-entropy).exp()  # 1 when certain

    def choose(self, rows: Rows, score: torch.Tensor) -> torch.Tensor:
        """(B, L) bool: the positions to unmask, given each position's confidence (−inf where not asked)."""
        raise NotImplementedError

    def finished(self, rows: Rows) -> torch.Tensor:
        return ~(rows.free & (rows.tokens == self.mask_id)).any(dim=1)


def ranks(score: torch.Tensor) -> torch.Tensor:
    """(B, L) each position's rank by descending score within its row (ties: the leftmost first)."""
    order = score.argsort(dim=1, descending=True, stable=True)
    return torch.empty_like(order).scatter_(1, order, torch.arange(score.shape[1], device=score.device).expand_as(order))


@register
class TopConfidence(ConfidenceOrdered):
    """Unmask the k most confident positions per call; k follows the step count."""

    name = "confidence"
    settings = ConfidenceOrdered.settings | {"steps"}

    def __init__(self, *args):
        super().__init__(*args)
        self.shares = split_evenly(self.steps, int(self.blocks.max()) + 1)  # steps of each block
        if min(self.shares) < 1:
            raise ConfigError(
                f"{self.steps} is fewer than the {len(self.shares)} blocks of {setting('block_length')} "
                f"{self.config.block_length}; give at least one step per block",
                field="steps",
            )

    def start(self, rows: Rows) -> None:
        """Each row's plan: how many positions each of its calls unmasks (calls that would unmask none are dropped)."""
        plans = []
        for free in rows.free.cpu():
            plan = []
            for block, share in enumerate(self.shares):
                plan += [k for k in split_evenly(int(free[self.blocks == block].sum()), share) if k]
            plans.append(plan)
        width = min(self.steps, self.length)  # the most calls any row can plan: rows started later concatenate
        counts = torch.zeros(len(rows), width + 1, dtype=torch.long)
        for row, plan in enumerate(plans):
            counts[row, : len(plan)] = torch.tensor(plan, dtype=torch.long)
        rows.state["unmask_counts"] = counts.to(rows.tokens.device)  # (B, calls + 1)

    def choose(self, rows: Rows, score: torch.Tensor) -> torch.Tensor:
        count = rows.state["unmask_counts"].gather(1, rows.calls.clamp(max=rows.state["unmask_counts"].shape[1] - 1)[:, None])
        return ranks(score) < count

    def expected_nfe(self, free: int) -> float:
        return float(sum(min(share, f) for share, f in zip(self.shares, split_evenly(free, len(self.shares)))))


@register
class Threshold(ConfidenceOrdered):
    """Unmask every position at least τ-confident, and at least the most confident one, per call."""

    name = "threshold"
    settings = ConfidenceOrdered.settings | {"threshold"}
    required = frozenset({"threshold"})

    def choose(self, rows: Rows, score: torch.Tensor) -> torch.Tensor:
        return (score >= self.config.threshold) | (ranks(score) == 0)
