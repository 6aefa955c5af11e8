"""Samplers (SPEC §5): diffusion (`tweedie`, `euler`) and any-order autoregressive (`ordered`).

The fast path rests on one fact: whether a masked position moves at a step does not depend on the
token it becomes. So each free position's unmasking step is drawn first, from its exact distribution,
and the network is called only at the steps where a row unmasks something, with the output
projection and the categorical draw only at the unmasking positions. A row's network output depends
only on its tokens, so this is the paper's cache: the steps skipped are exactly those whose output
would have been reused, and the number of evaluations per sequence is E-NFE (SPEC §5.3). Rows are
independent, so each advances through its own unmasking steps and every call holds every busy row.

Randomness comes from two float64 uniforms per position of each sample (when it unmasks, which
token), drawn before sampling from `generator` or from per-sample `seeds`, so the samples do not
depend on the batch size. Categorical draws invert the float64 CDF (no float32 Gumbel, §5.4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from radd_cli.errors import ConfigError
from radd_cli.masking import places, uniform
from radd_cli.schedule import Schedule
from radd_cli.scoring import log_probs_at, vocabulary

METHODS = ("tweedie", "euler", "ordered")
STRATEGIES = ("direct", "top_p", "top_k")
FINAL_TIME = 1e-5  # the time grid runs from 1 down to this


@dataclass(frozen=True)
class Strategy:
    """How the model's distribution becomes the one drawn from: temperature, then top-k or top-p."""

    name: str = "direct"
    top_p: float | None = None
    top_k: int | None = None
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.name!r}; choose one of {', '.join(STRATEGIES)}")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.name == "top_p" and (self.top_p is None or not 0 < self.top_p <= 1):
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.name == "top_k" and (self.top_k is None or self.top_k < 1):
            raise ConfigError(f"top_k must be at least 1, got {self.top_k}")
        if self.top_p is not None and self.name != "top_p":
            raise ConfigError(f"top_p={self.top_p} is given but the strategy is {self.name!r}; use strategy 'top_p'")
        if self.top_k is not None and self.name != "top_k":
            raise ConfigError(f"top_k={self.top_k} is given but the strategy is {self.name!r}; use strategy 'top_k'")

    def probabilities(self, log_probs: torch.Tensor) -> torch.Tensor:
        """Float64 probabilities (n, V) to draw from, given the model's log-probs (n, V)."""
        logits = log_probs.double() / self.temperature
        if self.name == "top_k" and self.top_k < logits.shape[-1]:
            kept = torch.zeros_like(logits, dtype=torch.bool)
            kept.scatter_(-1, logits.topk(self.top_k, dim=-1).indices, True)
            logits = logits.masked_fill(~kept, -torch.inf)
        probs = logits.softmax(dim=-1)
        if self.name == "top_p" and self.top_p < 1:
            sorted_probs, indices = probs.sort(dim=-1, descending=True)
            mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
            sorted_probs = sorted_probs.masked_fill(mass_before >= self.top_p, 0.0)  # keeps the top token
            probs = torch.zeros_like(probs).scatter_(-1, indices, sorted_probs)
            probs = probs / probs.sum(dim=-1, keepdim=True)
        return probs


def draw_categorical(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Invert the float64 CDF of each row of `probs` (n, K) at the uniforms `u` (n,) in [0, 1)."""
    cdf = probs.double().cumsum(dim=-1)  # (n, K)
    target = u.double() * cdf[:, -1]
    return torch.searchsorted(cdf, target[:, None], right=True).squeeze(-1).clamp_(max=probs.shape[-1] - 1)


def time_grid(steps: int) -> torch.Tensor:
    return torch.linspace(1.0, FINAL_TIME, steps + 1, dtype=torch.float64)


def move_probabilities(schedule: Schedule, steps: int, method: str) -> torch.Tensor:
    """r_k (steps,): the chance that a still-masked position moves at step k (SPEC §5.1)."""
    t = time_grid(steps)
    now, then = t[:-1], t[1:]
    masked_now = schedule.mask_probability(now)
    if method == "tweedie":
        r = (masked_now - schedule.mask_probability(then)) / masked_now
    elif method == "euler":
        r = (now - then) * schedule.rate(now) * torch.exp(-schedule.total(now)) / masked_now
    else:
        raise ConfigError(f"{method!r} is not a diffusion method; choose tweedie or euler")
    r = r.clamp(0.0, 1.0)
    r[-1] = 1.0  # the last step unmasks everything left
    return r


def unmask_step_distribution(schedule: Schedule, steps: int, method: str) -> torch.Tensor:
    """P(a position first moves at step k) (steps,), float64; it sums to one."""
    r = move_probabilities(schedule, steps, method)
    survival_before = torch.cat([torch.ones(1, dtype=r.dtype), torch.cumprod(1 - r, dim=0)[:-1]])
    return survival_before * r


def expected_nfe(schedule: Schedule, steps: int, length: int, method: str = "tweedie") -> float:
    """E[network evaluations per sequence] with the cache: Σ_k 1 − (1 − q_k)^length.

    For `loglinear` this is the paper's n·(1 − (1 − 1/n)^l) up to the final time 1e-5 (SPEC §5.3).
    """
    if method == "ordered":
        return float(length)
    q = unmask_step_distribution(schedule, steps, method)
    return float((1 - (1 - q) ** length).sum())


def nfe_standard_deviation(schedule: Schedule, steps: int, length: int, method: str = "tweedie") -> float:
    """Standard deviation of the evaluations per sequence with the cache (0 for `ordered`).

    NFE = Σ_k I_k with I_k = 1 when some position unmasks at step k; with a_k = (1 − q_k)^l and
    b_jk = (1 − q_j − q_k)^l, Var = Σ_k a_k(1 − a_k) + Σ_{j≠k} (b_jk − a_j·a_k).
    """
    if method == "ordered":
        return 0.0
    q = unmask_step_distribution(schedule, steps, method)
    empty = (1 - q) ** length  # a_k
    both_empty = (1 - q[:, None] - q[None, :]).clamp(min=0) ** length  # b_jk
    covariance = both_empty - empty[:, None] * empty[None, :]
    covariance.fill_diagonal_(0.0)
    return float((empty * (1 - empty)).sum() + covariance.sum()) ** 0.5


@dataclass
class SampleResult:
    tokens: torch.Tensor  # (N, L) int64, on the CPU
    nfe_per_sample: torch.Tensor  # (N,) network evaluations of each sequence

    @property
    def nfe(self) -> float:
        """Mean network evaluations per sequence."""
        return float(self.nfe_per_sample.double().mean())


def sample(
    model: nn.Module,
    schedule: Schedule,
    *,
    num_samples: int,
    length: int,
    steps: int,
    method: str = "tweedie",
    strategy: str = "direct",
    top_p: float | None = None,
    top_k: int | None = None,
    temperature: float = 1.0,
    cache: bool = True,
    template: torch.Tensor | None = None,
    order: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    seeds: list[int] | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SampleResult:
    """Draw `num_samples` sequences of `length` tokens.

    `template` (L,) holds token ids at fixed positions and mask_id at free ones; only free positions are
    sampled. `order` (L,) or (N, L) is a permutation of positions for `ordered` (default: left to
    right). `seeds` gives each sample its own seed (reproducible alone, whatever the batch);
    otherwise `generator` (or torch's global one) is used. `cache=False` calls the network on every
    row at every step, the baseline that `radd bench` compares with. `progress(done, total)` is
    called after each network call.
    """
    rule = Strategy(strategy, top_p, top_k, temperature)
    vocab_size, mask_id = vocabulary(model)
    _check_sizes(num_samples, length, steps, method, seeds, batch_size)
    start = _template_tokens(template, length, mask_id, vocab_size)
    u_when, u_token = _sample_uniforms(num_samples, length, generator, seeds)
    when = _unmasking_steps(schedule, steps, method, order, u_when).masked_fill(start != mask_id, -1)
    # With the cache, a row is only evaluated at the steps where it unmasks something, and rows are
    # independent: so every row advances through its own sequence of such steps, all rows in lockstep
    # (its k-th network call unmasks the positions of its k-th distinct step). Each row computes exactly
    # what it would step by step, but every network call holds every row that still has work.
    use_all_steps = not cache and method != "ordered"
    calls = when if use_all_steps else _distinct_step_index(when)
    batch_size = batch_size or num_samples
    batches = [slice(i, min(i + batch_size, num_samples)) for i in range(0, num_samples, batch_size)]
    rounds = [steps if use_all_steps else int(calls[b].max()) + 1 for b in batches]
    total, done = sum(rounds), 0
    device = torch.device(device) if device is not None else _model_device(model)
    tokens, nfe = [], []
    with torch.inference_mode():
        for rows, count in zip(batches, rounds):
            x = start.to(device).repeat(rows.stop - rows.start, 1)
            counts = torch.zeros(x.shape[0], dtype=torch.long, device=device)
            batch_calls, batch_u = calls[rows].to(device), u_token[rows].to(device)
            for call in range(count):
                _unmask(model, rule, x, counts, batch_calls == call, batch_u, use_all_steps)
                done += 1
                if progress is not None:
                    progress(done, total)
            tokens.append(x.cpu())
            nfe.append(counts.cpu())
    return SampleResult(torch.cat(tokens), torch.cat(nfe))


def _unmasking_steps(schedule, steps: int, method: str, order, u_when: torch.Tensor) -> torch.Tensor:
    """(N, L): the step at which each position unmasks (diffusion), or its place in the order (ordered)."""
    num_samples, length = u_when.shape
    if method == "ordered":
        return _order_places(order, num_samples, length)
    cdf = torch.cumsum(unmask_step_distribution(schedule, steps, method), dim=0)
    cdf[-1] = 1.0
    return torch.searchsorted(cdf, u_when, right=True).clamp_(max=steps - 1)


def _distinct_step_index(when: torch.Tensor) -> torch.Tensor:
    """For each free position, the rank of its step among its row's distinct steps; fixed positions −1."""
    fixed = when < 0
    ordered, order = when.masked_fill(fixed, torch.iinfo(when.dtype).max).sort(dim=1)  # fixed ones last
    new_step = torch.ones_like(ordered, dtype=torch.bool)
    new_step[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    rank = torch.empty_like(when).scatter_(1, order, new_step.long().cumsum(dim=1) - 1)
    return rank.masked_fill(fixed, -1)


def _unmask(model, rule, x, counts, moving, u_token, evaluate_all: bool) -> None:
    """One network call: draw tokens at the `moving` positions (B, L) of x, in place."""
    rows = torch.ones_like(counts, dtype=torch.bool) if evaluate_all else moving.any(dim=-1)  # (B,) to evaluate
    if not rows.any():
        return
    if rows.all():  # no gather needed
        log_p = log_probs_at(model, x, moving)  # (n, V) at the moving positions only
    else:
        log_p = log_probs_at(model, x[rows], moving[rows])
    x[moving] = draw_categorical(rule.probabilities(log_p), u_token[moving])
    counts[rows] += 1


def _sample_uniforms(num_samples: int, length: int, generator, seeds) -> tuple[torch.Tensor, torch.Tensor]:
    """Two float64 uniforms (N, L) per position: when it unmasks, and which token it takes."""
    if seeds is None:
        u = uniform((num_samples, 2, length), generator, "cpu")  # drawn on the generator's device
    else:
        u = torch.stack([uniform((2, length), torch.Generator().manual_seed(int(seed))) for seed in seeds])
    return u[:, 0].contiguous(), u[:, 1].contiguous()


def _template_tokens(template, length: int, mask_id: int, vocab_size: int) -> torch.Tensor:
    if template is None:
        return torch.full((length,), mask_id, dtype=torch.long)
    template = torch.as_tensor(template, dtype=torch.long).cpu()
    if template.shape != (length,):
        raise ConfigError(
            f"the template has shape {tuple(template.shape)}; it must be ({length},), one id per position"
        )
    if ((template < 0) | (template > vocab_size)).any():
        raise ConfigError(f"template ids must be in 0..{vocab_size - 1}, or {mask_id} for a free position")
    if not (template == mask_id).any():
        raise ConfigError("the template has no free position: nothing to sample")
    return template


def _order_places(order, num_samples: int, length: int) -> torch.Tensor:
    if order is None:
        order = torch.arange(length)
    order = torch.as_tensor(order, dtype=torch.long).cpu()
    if order.dim() == 1:
        order = order.expand(num_samples, -1)
    if order.shape != (num_samples, length):
        raise ConfigError(
            f"the order has shape {tuple(order.shape)}; it must be ({length},) or ({num_samples}, {length})"
        )
    if not torch.equal(order.sort(dim=1).values, torch.arange(length).expand(num_samples, -1)):
        raise ConfigError(f"the order must be a permutation of the positions 0..{length - 1}")
    return places(order.contiguous())


def _check_sizes(num_samples, length, steps, method, seeds, batch_size) -> None:
    problems = []
    if method not in METHODS:
        problems.append(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    for name, value in (("num_samples", num_samples), ("length", length), ("steps", steps)):
        if value < 1:
            problems.append(f"{name} must be at least 1, got {value}")
    if batch_size is not None and batch_size < 1:
        problems.append(f"batch_size must be at least 1, got {batch_size}")
    if seeds is not None and len(seeds) != num_samples:
        problems.append(f"{len(seeds)} seeds for {num_samples} samples; give one seed per sample")
    if problems:
        raise ConfigError(problems)


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def sample_all_positions(
    model: nn.Module,
    schedule: Schedule,
    *,
    num_samples: int,
    length: int,
    steps: int,
    method: str = "tweedie",
    strategy: Strategy = Strategy(),
    template: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> SampleResult:
    """The straightforward diffusion sampler, as the published code does it (a reference, not fast).

    At every step: call the network on the whole batch; at every masked position draw from the
    (V + 1)-way categorical "become v with probability r_k·p_v, stay masked with 1 − r_k".
    """
    vocab_size, mask_id = vocabulary(model)
    _check_sizes(num_samples, length, steps, method, None, None)
    device = _model_device(model)
    r = move_probabilities(schedule, steps, method).to(device)
    x = _template_tokens(template, length, mask_id, vocab_size).to(device).repeat(num_samples, 1)
    with torch.inference_mode():
        for k in range(steps):
            masked = x == mask_id
            if not masked.any():
                continue
            probs = strategy.probabilities(model(x)[masked])  # (n, V)
            choices = torch.cat([probs * r[k], (1 - r[k]).expand(probs.shape[0], 1)], dim=-1)  # (n, V + 1)
            drawn = draw_categorical(choices, uniform(probs.shape[0], generator, x.device))
            x[masked] = torch.where(drawn < vocab_size, drawn, mask_id)
    return SampleResult(x.cpu(), torch.full((num_samples,), steps))
