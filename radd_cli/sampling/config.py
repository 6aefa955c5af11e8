"""SamplingConfig: every sampling setting in one object, built once (by the CLI, a recipe or a caller)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from radd_cli.errors import ConfigError
from radd_cli.sampling.engine import SAMPLERS
from radd_cli.sampling.strategy import Strategy
from radd_cli.validation import Choice, limits, validate

MAX_STEPS = 1_000_000  # the step tables cost memory in proportion; far past any change in the samples


class OrderName(Choice):
    """The orders `ordered` knows by name; a file of positions (or the positions themselves) also works."""

    forward = "forward"
    backward = "backward"
    random = "random"  # drawn for each sample from its own seed


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample (docs/sampling.md).

    - `method`: a registered sampler (`radd_cli.sampling.SAMPLERS`: tweedie, euler, ordered, ...);
    - `steps`: diffusion steps (default: one per position of the sequence);
    - `strategy`: temperature and top-p / top-k;
    - `order`: for samplers that take one: forward, backward, random, a file of positions
      (whitespace-separated, or a JSON list), or the positions as a sequence or tensor ((L,) or (N, L));
    - `cache`: call the network only on rows whose tokens changed (exact); False is the uncached baseline.
    """

    method: str = "tweedie"
    steps: int | None = field(default=None, metadata=limits(low=1, high=MAX_STEPS))
    strategy: Strategy = Strategy()
    order: str | torch.Tensor = field(default="forward", compare=False)
    cache: bool = True

    def __post_init__(self) -> None:
        validate(self)
        if self.method not in SAMPLERS:
            raise ConfigError(f"method: unknown sampler {self.method!r}; choose one of {', '.join(SAMPLERS)}")
        object.__setattr__(self, "order", _order_spec(self.order))
        if not (isinstance(self.order, str) and self.order == OrderName.forward) and not SAMPLERS[self.method].takes_order:
            raise ConfigError(
                f"--order applies to samplers that take an order ({', '.join(n for n, s in SAMPLERS.items() if s.takes_order)}), "
                f"not to {self.method}"
            )

    def to_dict(self) -> dict:
        """The settings as JSON-ready values, for output files."""
        order = self.order if isinstance(self.order, str) else "custom"
        return {"method": self.method, "steps": self.steps, **self.strategy.to_dict(), "order": order, "cache": self.cache}


def _order_spec(order) -> OrderName | torch.Tensor:
    """A known order name, or the positions as a long tensor (read from a file when given a path)."""
    if isinstance(order, str):
        if order in OrderName.names():
            return OrderName(order)
        return _read_order_file(Path(order))
    if isinstance(order, Path):
        return _read_order_file(order)
    positions = torch.as_tensor(order)
    if positions.is_floating_point() or positions.dtype == torch.bool or positions.dim() not in (1, 2):
        raise ConfigError("order: give the positions as whole numbers, (L,) or one row per sample (N, L)")
    return positions.long()


def _read_order_file(path: Path) -> torch.Tensor:
    if not path.is_file():
        raise ConfigError(f"--order {str(path)!r} is not {', '.join(OrderName.names())}, or a file of positions")
    try:
        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else [int(v) for v in text.split()]
    except (ValueError, UnicodeDecodeError, OSError):
        values = None
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"--order {path}: expected whole-number positions, whitespace-separated or as a JSON list")
    if any(not 0 <= v < 2**31 for v in values):
        raise ConfigError(f"--order {path}: positions must be between 0 and the length - 1")
    return torch.tensor(values, dtype=torch.long)
