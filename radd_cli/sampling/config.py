"""SamplingConfig: every sampling setting in one object, built once (by the CLI, a recipe or a caller)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from radd_cli.core.kv_cache import KVMode
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


class Confidence(Choice):
    """How sure the network is of the token it proposes at a position (confidence-ordered samplers)."""

    probability = "probability"  # the proposed token's probability
    margin = "margin"  # top-1 minus top-2 probability
    entropy = "entropy"  # minus the entropy of the distribution


class Remasking(Choice):
    """ReMDM's schedules for returning decoded tokens to the mask (docs/sampling-suite.md)."""

    cap = "cap"  # σ_t = min(η, σ_max)
    rescale = "rescale"  # σ_t = η·σ_max
    conf = "conf"  # σ_max shared out by low confidence of the decoded tokens
    loop = "loop"  # ordinary steps, then a phase at fixed α that remasks with σ = η, then ordinary again


# Sampler-specific settings: their defaults, and the option that sets each on the command line.
SAMPLER_SETTINGS = {
    "steps": (None, "--steps"),
    "order": (OrderName.forward, "--order"),
    "cache": (True, "--no-cache"),
    "block_length": (None, "--block-length"),
    "confidence": (Confidence.probability, "--confidence"),
    "greedy": (False, "--greedy"),
    "threshold": (None, "--threshold"),
    "remasking": (Remasking.cap, "--remasking"),
    "eta": (0.02, "--eta"),
    "kv_cache": (KVMode.none, "--kv-cache"),
    "kv_refresh": (0, "--kv-refresh"),
}


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample (docs/sampling.md, docs/sampling-suite.md).

    - `method`: a registered sampler (`radd_cli.sampling.SAMPLERS`: tweedie, euler, ordered, confidence, ...);
    - `steps`: diffusion steps (default: one per position of the sequence);
    - `strategy`: temperature and top-p / top-k;
    - `order`: for samplers that take one: forward, backward, random, a file of positions
      (whitespace-separated, or a JSON list), or the positions as a sequence or tensor ((L,) or (N, L));
    - `cache`: call the network only on rows whose tokens changed (exact); False is the uncached baseline;
    - `block_length`: fill blocks of this many positions left to right, each with its share of the steps;
    - `confidence`, `greedy`: what ranks positions in the confidence-ordered samplers, and whether they
      propose the most likely token (greedy) or a draw;
    - `threshold`: unmask every position at least this confident (threshold decoding);
    - `remasking`, `eta`: ReMDM's remasking schedule and strength;
    - `kv_cache`, `kv_refresh`: with `block_length`, compute only the current block against the keys and
      values of the rest kept from the block's first call (`prefix`: the positions before the block;
      `dual`: before and after it), refreshed by a full call when a block starts and, with `kv_refresh` k > 0,
      after every k block calls (sampling/kv_cache.py; an approximation, docs/sampling.md);
    - `guidance`: classifier-free guidance weight w (0: none) for conditional generation;
    - `stop_at_eos`: trim each sample at its first end-of-text token.
    Settings that a method does not use are refused when they differ from their defaults.
    """

    method: str = "tweedie"
    steps: int | None = field(default=None, metadata=limits(low=1, high=MAX_STEPS))
    strategy: Strategy = Strategy()
    order: str | torch.Tensor = field(default="forward", compare=False)
    cache: bool = True
    block_length: int | None = field(default=None, metadata=limits(low=1))
    confidence: Confidence = Confidence.probability
    greedy: bool = False
    threshold: float | None = field(default=None, metadata=limits(above=0.0, high=1.0))
    remasking: Remasking = Remasking.cap
    eta: float = field(default=0.02, metadata=limits(low=0.0))
    kv_cache: KVMode = KVMode.none
    kv_refresh: int = field(default=0, metadata=limits(low=0))
    guidance: float = field(default=0.0, metadata=limits(low=0.0))
    stop_at_eos: bool = False

    def __post_init__(self) -> None:
        validate(self)
        if self.method not in SAMPLERS:
            raise ConfigError(f"method: unknown sampler {self.method!r}; choose one of {', '.join(SAMPLERS)}")
        object.__setattr__(self, "order", _order_spec(self.order))
        sampler = SAMPLERS[self.method]
        for name, (default, option) in SAMPLER_SETTINGS.items():
            value = getattr(self, name)
            changed = not (isinstance(value, str) and value == default) if name == "order" else value != default
            if changed and name not in sampler.settings:
                takers = [n for n, s in SAMPLERS.items() if name in s.settings]
                raise ConfigError(f"{option} applies to {', '.join(takers)}, not to {self.method}")
        for name in sampler.required:
            if getattr(self, name) is None:
                raise ConfigError(f"--method {self.method} needs {SAMPLER_SETTINGS[name][1]}")
        _check_kv_cache(self)

    def to_dict(self) -> dict:
        """The settings as JSON-ready values, for output files."""
        order = self.order if isinstance(self.order, str) else "custom"
        values = {name: getattr(self, name) for name in SAMPLER_SETTINGS if name != "order"}
        return {
            "method": self.method,
            **values,
            **self.strategy.to_dict(),
            "order": order,
            "guidance": self.guidance,
            "stop_at_eos": self.stop_at_eos,
        }


def _check_kv_cache(config: SamplingConfig) -> None:
    if config.kv_cache == KVMode.none:
        if config.kv_refresh:
            raise ConfigError("kv_refresh applies with kv_cache = prefix or dual")
        return
    if config.block_length is None:
        raise ConfigError(
            f"kv_cache = {config.kv_cache} needs block_length: the cache keeps the rest of the sequence while a "
            "block is decoded"
        )
    if config.guidance:
        raise ConfigError("kv_cache does not combine with guidance (the unconditional rows would need their own cache)")


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
