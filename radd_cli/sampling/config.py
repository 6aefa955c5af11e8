"""SamplingConfig: every sampling setting in one object, built once (by the CLI, a recipe or a caller)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from radd_cli.core.kv_cache import KVMode
from radd_cli.errors import ConfigError, Problem, setting
from radd_cli.sampling.engine import SAMPLERS
from radd_cli.sampling.strategy import Strategy
from radd_cli.validation import Choice, about, field_label, limits, validate

MAX_STEPS = 1_000_000  # the step tables cost memory in proportion; far past any change in the samples
# Guidance draws from (1 + w)·log p(·|given) − w·log p(·), in float64: a weight near 1e308 / |log p|
# overflows it to inf − inf = NaN (radd 0.2 failed every request in flight on one). Weights in use are
# 0.5–10; a weight of 1000 already draws almost surely the token of the largest p(·|given) / p(·).
MAX_GUIDANCE = 1000.0


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


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample (docs/sampling.md, docs/sampling-suite.md): every setting, with its default and help, in one
    place. The command line's options (`radd sample`, `radd infill`, `radd serve`), the recipes' `sampling`
    section and the server's request fields are all made from these fields.

    Settings that only some samplers use (those listed in a sampler's `settings`) are refused for the others when
    they differ from their defaults; a sampler's `required` settings must be given.
    """

    method: str = field(default="tweedie", metadata=about("The sampler; ordered unmasks one position per call."))
    steps: int | None = field(
        default=None, metadata=limits(low=1, high=MAX_STEPS, help="Diffusion steps (default: one per position).")
    )
    strategy: Strategy = Strategy()
    order: str | torch.Tensor = field(
        default="forward",
        compare=False,
        metadata=about(
            "For ordered: forward, backward, random, or a file of positions (whitespace-separated or a JSON "
            "list); in code also the positions, (L,) or one row per sample (N, L)."
        ),
    )
    cache: bool = field(
        default=True,
        metadata=about("Call the network only on rows whose tokens changed (exact); off: every row at every step."),
    )
    block_length: int | None = field(
        default=None,
        metadata=limits(low=1, help="Fill blocks of this many positions left to right (semi-autoregressive)."),
    )
    confidence: Confidence = field(
        default=Confidence.probability, metadata=about("confidence, threshold: how sure the network is of a proposal.")
    )
    greedy: bool = field(
        default=False, metadata=about("confidence, threshold: propose the most likely token instead of a draw.")
    )
    threshold: float | None = field(
        default=None,
        metadata=limits(above=0.0, high=1.0, help="threshold: unmask every position at least this confident."),
    )
    remasking: Remasking = field(default=Remasking.cap, metadata=about("remdm: the remasking schedule."))
    eta: float = field(  # σ = η·σ_max is a probability
        default=0.02, metadata=limits(low=0.0, high=1.0, help="remdm: the remasking strength η (at most 1).")
    )
    guidance: float = field(
        default=0.0,
        metadata=limits(
            low=0.0, high=MAX_GUIDANCE, help="Classifier-free guidance weight w for conditional generation (0: none)."
        ),
    )
    kv_cache: KVMode = field(
        default=KVMode.none,
        metadata=about(
            "With block_length: compute only the current block against keys and values kept from the block's "
            "first call, of the prefix (prefix) or of prefix and suffix (dual); an approximation."
        ),
    )
    kv_refresh: int = field(
        default=0, metadata=limits(low=0, help="With kv_cache: also refresh after this many block calls (0: never).")
    )
    stop_at_eos: bool = field(default=False, metadata=about("Trim each sample at its first end-of-text token."))
    batch_invariant: bool = field(
        default=True,
        metadata=about(
            "Run every network call at fixed shapes, so a sample's tokens do not depend on its batch (its size, "
            "the other rows, its place); off: faster at small batches."
        ),
    )

    def __post_init__(self) -> None:
        validate(self)
        if self.method not in SAMPLERS:
            raise ConfigError(f"{self.method!r} is not one of {', '.join(map(repr, SAMPLERS))}", field="method")
        object.__setattr__(self, "order", _order_spec(self.order))
        sampler, problems = SAMPLERS[self.method], []
        for name in sorted(sampler_specific() - sampler.settings, key=FIELD_ORDER.index):
            if differs_from_default(self, name):
                takers = [n for n, s in SAMPLERS.items() if name in s.settings]
                problems.append(Problem(name, f"applies to {', '.join(takers)}, not to {self.method}"))
        problems += [
            Problem(name, f"the {self.method} sampler needs it") for name in sampler.required if getattr(self, name) is None
        ]
        problems += _kv_cache_problems(self)
        if problems:
            raise ConfigError(problems)

    def to_dict(self) -> dict:
        """The settings as JSON-ready values, for output files."""
        values = {name: getattr(self, name) for name in FIELD_ORDER if name != "strategy"}
        values["order"] = self.order if isinstance(self.order, str) else "custom"
        return {**values, **self.strategy.to_dict()}


FIELD_ORDER = [f.name for f in fields(SamplingConfig)]
DEFAULTS = {f.name: f.default for f in fields(SamplingConfig)}
STRATEGY_SETTINGS = tuple(field_label(f) for f in fields(Strategy))  # strategy, top_p, top_k, temperature
FLAT_SETTINGS = tuple(name for name in FIELD_ORDER if name != "strategy") + STRATEGY_SETTINGS


def from_settings(given: dict, base: SamplingConfig | None = None) -> SamplingConfig:
    """`base` (the defaults when None) with the flat settings `given` on top — the command line's options, a
    request's fields (FLAT_SETTINGS: every field, the strategy's spelt out). `top_p`, `top_k` or `strategy` make a
    new strategy (`temperature` alone keeps base's); a new `method` drops base's settings that it does not take."""
    unknown = sorted(set(given) - set(FLAT_SETTINGS))
    if unknown:
        raise ConfigError(f"unknown sampling setting {unknown[0]!r}; the settings are {', '.join(FLAT_SETTINGS)}")
    base = base if base is not None else SamplingConfig()
    values = {name: getattr(base, name) for name in FIELD_ORDER if name != "strategy"}
    method = given.get("method")
    if isinstance(method, str) and method in SAMPLERS:  # base's settings for another sampler do not carry over
        for name in sampler_specific() - SAMPLERS[method].settings:
            values[name] = DEFAULTS[name]
    values.update({name: value for name, value in given.items() if name not in STRATEGY_SETTINGS})
    old = base.strategy
    temperature = given.get("temperature", old.temperature)
    if any(given.get(name) is not None for name in ("strategy", "top_p", "top_k")):
        strategy = Strategy.from_options(given.get("strategy"), given.get("top_p"), given.get("top_k"), temperature)
    else:
        strategy = Strategy(old.name, old.top_p, old.top_k, temperature)
    return SamplingConfig(**values, strategy=strategy)


def sampler_specific() -> set[str]:
    """The settings that only some samplers take (each sampler lists its own in `settings`)."""
    return set().union(*(sampler.settings for sampler in SAMPLERS.values()))


def differs_from_default(config: SamplingConfig, name: str) -> bool:
    value = getattr(config, name)
    if name == "order":  # positions are never the default
        return not (isinstance(value, str) and value == DEFAULTS[name])
    return value != DEFAULTS[name]


def _kv_cache_problems(config: SamplingConfig) -> list[Problem]:
    if config.kv_cache == KVMode.none:
        if config.kv_refresh:
            return [Problem("kv_refresh", f"applies with {setting('kv_cache')} prefix or dual")]
        return []
    if config.block_length is None:
        return [
            Problem(
                "kv_cache",
                f"{config.kv_cache} needs {setting('block_length')}: the cache keeps the rest of the sequence while a "
                "block is decoded",
            )
        ]
    if config.guidance:
        return [Problem("kv_cache", f"does not combine with {setting('guidance')} (the unguided rows would need their own cache)")]
    return []


def _order_spec(order) -> OrderName | torch.Tensor:
    """A known order name, or the positions as a long tensor (read from a file when given a path)."""
    if isinstance(order, str):
        if order in OrderName.names():
            return OrderName(order)
        return _read_order_file(Path(order))
    if isinstance(order, Path):
        return _read_order_file(order)
    try:
        positions = torch.as_tensor(order)
    except (TypeError, ValueError, OverflowError, RuntimeError):  # ragged rows, numbers past int64
        positions = None
    if positions is None or positions.is_floating_point() or positions.dtype == torch.bool or positions.dim() not in (1, 2):
        raise ConfigError(
            "give the positions as whole numbers from 0 to the length - 1, (L,) or one row per sample (N, L)",
            field="order",
        )
    return positions.long()


def _read_order_file(path: Path) -> torch.Tensor:
    if not path.is_file():
        raise ConfigError(f"{str(path)!r} is not {', '.join(OrderName.names())}, or a file of positions", field="order")
    try:
        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else [int(v) for v in text.split()]
    except (ValueError, UnicodeDecodeError, OSError):
        values = None
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"{path}: expected whole-number positions, whitespace-separated or as a JSON list", field="order")
    if any(not 0 <= v < 2**31 for v in values):
        raise ConfigError(f"{path}: positions must be between 0 and the length - 1", field="order")
    return torch.tensor(values, dtype=torch.long)
