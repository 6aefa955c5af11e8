"""The diffusion samplers' time grid, move probabilities, and the expected number of network calls.

docs/sampling.md derives these: with the cache a sequence costs one network call per distinct step
at which one of its positions unmasks, so E-NFE = Σ_k 1 − (1 − q_k)^l for q_k = P(first move at k).
"""

from __future__ import annotations

import torch

from radd_cli.core.schedule import Schedule
from radd_cli.errors import ConfigError

FINAL_TIME = 1e-5  # the time grid runs from 1 down to this
DIFFUSION_METHODS = ("tweedie", "euler")


def time_grid(steps: int) -> torch.Tensor:
    return torch.linspace(1.0, FINAL_TIME, steps + 1, dtype=torch.float64)


def move_probabilities(schedule: Schedule, steps: int, method: str) -> torch.Tensor:
    """r_k (steps,): the chance that a still-masked position moves at step k; the last step moves all."""
    t = time_grid(steps)
    now, then = t[:-1], t[1:]
    masked_now = schedule.mask_probability(now)
    if method == "tweedie":
        r = (masked_now - schedule.mask_probability(then)) / masked_now
    elif method == "euler":
        r = (now - then) * schedule.rate(now) * torch.exp(-schedule.total(now)) / masked_now
    else:
        raise ConfigError(f"{method!r} is not a diffusion method; choose one of {', '.join(DIFFUSION_METHODS)}")
    r = r.clamp(0.0, 1.0)
    r[-1] = 1.0
    return r


def unmask_step_distribution(schedule: Schedule, steps: int, method: str) -> torch.Tensor:
    """P(a position first moves at step k) (steps,), float64; it sums to one."""
    r = move_probabilities(schedule, steps, method)
    survival_before = torch.cat([torch.ones(1, dtype=r.dtype), torch.cumprod(1 - r, dim=0)[:-1]])
    return survival_before * r


def expected_nfe(schedule: Schedule, steps: int, length: int, method: str = "tweedie") -> float:
    """E[network evaluations per sequence] with the cache: Σ_k 1 − (1 − q_k)^length.

    For `loglinear` this is the paper's n·(1 − (1 − 1/n)^l), up to the final time 1e-5. `ordered`
    costs one call per position.
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
