"""Noise schedules: the total noise σ(t) and its rate σ'(t) for t in [0, 1] (docs/objectives.md).

A token is masked at time t with probability 1 − e^{−σ(t)}. Everything is computed in the dtype of
`t`; pass float64 times where precision matters (losses and samplers do).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import torch

from radd_cli.errors import ConfigError
from radd_cli.validation import choices_of, limits, validate


class Schedule:
    """σ(t) and σ'(t), plus the quantities derived from them."""

    name = ""

    def total(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def rate(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def mask_probability(self, t: torch.Tensor) -> torch.Tensor:
        """1 − e^{−σ(t)}: the chance that a token is masked at time t."""
        return -torch.expm1(-self.total(t))

    def expm1_total(self, t: torch.Tensor) -> torch.Tensor:
        """e^{σ(t)} − 1, accurate for small σ."""
        return torch.expm1(self.total(t))

    def to_config(self) -> dict:
        """What a model folder's `noise` section records: {"type": name, parameters...}."""
        return {"type": self.name, **asdict(self)}


@dataclass(frozen=True)
class LogLinear(Schedule):
    """σ(t) = −log(1 − (1 − eps)·t): the masked fraction (1 − eps)·t is linear in t."""

    eps: float = field(default=1e-3, metadata=limits(low=0.0, below=1.0))
    name = "loglinear"

    def __post_init__(self) -> None:
        validate(self)

    def total(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.log1p(-(1 - self.eps) * t)

    def rate(self, t: torch.Tensor) -> torch.Tensor:
        return (1 - self.eps) / (1 - (1 - self.eps) * t)


@dataclass(frozen=True)
class Geometric(Schedule):
    """σ(t) = σ_min^{1−t}·σ_max^{t}."""

    sigma_min: float = field(default=1e-4, metadata=limits(above=0.0))
    sigma_max: float = field(default=20.0, metadata=limits(above=0.0))
    name = "geometric"

    def __post_init__(self) -> None:
        validate(self)
        if not self.sigma_min < self.sigma_max:
            raise ConfigError(f"sigma_min ({self.sigma_min}) must be below sigma_max ({self.sigma_max})")

    def total(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min ** (1 - t) * self.sigma_max**t

    def rate(self, t: torch.Tensor) -> torch.Tensor:
        return self.total(t) * math.log(self.sigma_max / self.sigma_min)


SCHEDULES: dict[str, type[Schedule]] = {"loglinear": LogLinear, "geometric": Geometric}
ScheduleName = choices_of("ScheduleName", SCHEDULES, __name__)


def parameters(name: str) -> list[str]:
    """The parameters the schedule called `name` takes."""
    return [f.name for f in fields(SCHEDULES[ScheduleName(name)])]


def get_schedule(name: str = "loglinear", **params) -> Schedule:
    """The schedule called `name` with the given parameters; unknown names or parameters are errors."""
    if not isinstance(name, str) or name not in SCHEDULES:
        raise ConfigError(f"unknown noise schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    unknown = sorted(set(params) - set(parameters(name)))
    if unknown:
        raise ConfigError(
            f"noise schedule {name!r} takes {', '.join(parameters(name))}; got unknown {', '.join(unknown)}"
        )
    return SCHEDULES[name](**params)


def schedule_from_config(noise: dict | None) -> Schedule:
    """The schedule a `noise` section describes; parameters that belong to other schedules are ignored.

    The published configs list sigma_min and sigma_max even for `loglinear`, which does not use them.
    """
    noise = dict(noise or {"type": "loglinear"})
    name = noise.pop("type", "loglinear")
    if not isinstance(name, str) or name not in SCHEDULES:
        raise ConfigError(f"unknown noise schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    return get_schedule(name, **{key: value for key, value in noise.items() if key in parameters(name)})
