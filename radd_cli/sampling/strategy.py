"""How a predicted distribution becomes the one drawn from, and the float64 categorical draw."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from radd_cli.errors import ConfigError, setting
from radd_cli.validation import Choice, about, limits, validate


class StrategyName(Choice):
    direct = "direct"  # the full distribution
    top_p = "top_p"  # nucleus: the most likely tokens that hold top_p of the mass
    top_k = "top_k"  # the k most likely tokens


@dataclass(frozen=True)
class Strategy:
    """Temperature, then top-k or top-p, applied to the model's log-probabilities."""

    name: StrategyName = field(
        default=StrategyName.direct,
        metadata=about("How tokens are drawn (default: from top_p or top_k when given, else direct).", label="strategy"),
    )
    top_p: float | None = field(
        default=None, metadata=limits(above=0.0, high=1.0, help="Nucleus sampling: keep the top tokens of this mass.")
    )
    top_k: int | None = field(default=None, metadata=limits(low=1, help="Keep only the k most likely tokens."))
    temperature: float = field(default=1.0, metadata=limits(above=0.0, help="Divide the log-probabilities by this."))

    def __post_init__(self) -> None:
        validate(self)
        if self.name == StrategyName.top_p and self.top_p is None:
            raise ConfigError("strategy top_p needs a value in (0, 1]", field="top_p")
        if self.name == StrategyName.top_k and self.top_k is None:
            raise ConfigError("strategy top_k needs a value of at least 1", field="top_k")
        for name in (StrategyName.top_p, StrategyName.top_k):
            if getattr(self, name.value) is not None and self.name != name:
                raise ConfigError(
                    f"{getattr(self, name.value)} is given but the strategy is {self.name}; use strategy {name}",
                    field=name.value,
                )

    @classmethod
    def from_options(
        cls, name: str | None, top_p: float | None, top_k: int | None, temperature: float = 1.0
    ) -> Strategy:
        """The strategy that flat settings describe (the command line's, a request's); without a name, top_p or
        top_k picks it."""
        if name is None:
            if top_p is not None and top_k is not None:
                raise ConfigError(f"give {setting('top_p')} or {setting('top_k')}, not both")
            name = StrategyName.top_p if top_p is not None else StrategyName.top_k if top_k is not None else "direct"
        return cls(name, top_p, top_k, temperature)

    def probabilities(self, log_probs: torch.Tensor) -> torch.Tensor:
        """Probabilities (n, V) to draw from, given the model's log-probs (n, V), in float32 like them.

        The largest log-prob is subtracted before dividing by the temperature, so a tiny temperature
        gives the argmax instead of overflowing. Masses are summed in float64 (here and in the draw).
        """
        logits = log_probs.float()
        if self.temperature != 1:  # divided in float64: a temperature below float32's range stays nonzero
            shifted = logits.double() - logits.max(dim=-1, keepdim=True).values.double()
            logits = (shifted / self.temperature).float()
        if self.name == StrategyName.top_k and self.top_k < logits.shape[-1]:
            kept = torch.zeros_like(logits, dtype=torch.bool)
            kept.scatter_(-1, logits.topk(self.top_k, dim=-1).indices, True)
            logits = logits.masked_fill(~kept, -torch.inf)
        probs = logits.softmax(dim=-1)
        if self.name == StrategyName.top_p and self.top_p < 1:
            sorted_probs, indices = probs.sort(dim=-1, descending=True)
            mass_before = sorted_probs.cumsum(dim=-1, dtype=torch.float64) - sorted_probs
            sorted_probs = sorted_probs.masked_fill(mass_before >= self.top_p, 0.0)  # keeps the top token
            probs = torch.zeros_like(probs).scatter_(-1, indices, sorted_probs)
            probs = probs / probs.sum(dim=-1, keepdim=True, dtype=torch.float64).float()
        return probs

    def to_dict(self) -> dict:
        return {"strategy": self.name, "top_p": self.top_p, "top_k": self.top_k, "temperature": self.temperature}


CHUNK = 64  # vocabulary entries per chunk of the two-level draw


def draw_categorical(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Invert the float64 CDF of each row of `probs` (n, K) at the uniforms `u` (n,) in [0, 1).

    Two levels, so that a large vocabulary costs one float64 pass over chunk totals instead of a float64
    copy and cumsum of every entry: find the chunk of CHUNK entries the uniform falls in, then the entry
    within it. A token of probability 0 is never drawn.
    """
    n, k = probs.shape
    if k <= 4 * CHUNK:
        return _invert(probs.double(), u.double() * probs.sum(dim=-1, dtype=torch.float64))
    whole = k - k % CHUNK
    totals = probs[:, :whole].reshape(n, whole // CHUNK, CHUNK).sum(dim=-1, dtype=torch.float64)  # (n, chunks)
    if whole < k:
        totals = torch.cat([totals, probs[:, whole:].sum(dim=-1, keepdim=True, dtype=torch.float64)], dim=1)
    before = F.pad(totals.cumsum(dim=-1)[:, :-1], (1, 0))  # (n, chunks): the mass before each chunk, as _invert sums it
    target = u.double() * totals.sum(dim=-1)  # (n,)
    chunk = _invert(totals, target)  # (n,)
    columns = chunk[:, None] * CHUNK + torch.arange(CHUNK, device=probs.device)  # (n, CHUNK)
    inside = probs.gather(1, columns.clamp(max=k - 1)).double().masked_fill(columns >= k, 0.0)
    return chunk * CHUNK + _invert(inside, target - before.gather(1, chunk[:, None]).squeeze(1))


def _invert(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(n,) the first index whose float64 cumulative mass exceeds `target` (n,), never one of mass 0."""
    cdf = probs.cumsum(dim=-1)  # (n, K)
    positive = probs > 0
    last = probs.shape[-1] - 1 - positive.flip(-1).int().argmax(dim=-1, keepdim=True)  # the last index of mass > 0
    cdf = cdf.masked_fill(torch.arange(probs.shape[-1], device=probs.device) >= last, torch.inf)  # rounding lands there
    drawn = torch.searchsorted(cdf, target[:, None], right=True)
    # An index of mass 0 between positive ones has the cdf of the one before it, so `right=True` skips it.
    return drawn.squeeze(-1)
