"""Training recipes: TOML → frozen dataclasses, validated at the edge, every problem reported at once.

A recipe is a TOML file with the sections below; every key has a default, so a recipe lists only what
it changes. Overrides use the published code's style, `section.key=value`, with TOML values
(`training.lr=1e-4`, `data.train=notes.txt`, `logging.trackers=["tensorboard"]`); a value that is not
valid TOML is taken as a string.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from radd_cli.errors import ConfigError

SHIPPED = "radd_cli.recipes"


def _check(*, low=None, high=None, choices=None, above=None):
    return {"low": low, "high": high, "choices": choices, "above": above}


@dataclass(frozen=True)
class ModelSection:
    hidden_size: int = field(default=768, metadata=_check(low=1))
    n_heads: int = field(default=12, metadata=_check(low=1))
    n_blocks: int = field(default=12, metadata=_check(low=1))
    length: int = field(default=1024, metadata=_check(low=1))
    dropout: float = field(default=0.1, metadata=_check(low=0.0, high=0.99))
    attention: str = field(default="sdpa", metadata=_check(choices=("sdpa", "flash")))


@dataclass(frozen=True)
class NoiseSection:
    type: str = field(default="loglinear", metadata=_check(choices=("loglinear", "geometric")))
    eps: float = field(default=1e-3, metadata=_check(low=0.0, high=0.5))
    sigma_min: float = field(default=1e-4, metadata=_check(above=0.0))
    sigma_max: float = field(default=20.0, metadata=_check(above=0.0))

    def schedule_config(self) -> dict:
        if self.type == "loglinear":
            return {"type": "loglinear", "eps": self.eps}
        return {"type": "geometric", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


@dataclass(frozen=True)
class DataSection:
    train: str = "builtin"
    train_split: str = "train"
    valid: str = "builtin"
    valid_split: str = "validation"
    cache_dir: str = "~/.cache/radd"


@dataclass(frozen=True)
class TokenizerSection:
    name: str = "gpt2"
    vocab_size: int = field(default=4096, metadata=_check(low=260))


@dataclass(frozen=True)
class TrainingSection:
    loss_type: str = field(default="lambda_DCE", metadata=_check(choices=("lambda_DCE", "t_DCE", "t_DSE", "k_DCE")))
    batch_size: int = field(default=512, metadata=_check(low=1))
    accumulation: int = field(default=1, metadata=_check(low=1))
    steps: int = field(default=400_000, metadata=_check(low=1))
    lr: float = field(default=3e-4, metadata=_check(above=0.0))
    warmup_steps: int = field(default=2500, metadata=_check(low=0))
    lr_schedule: str = field(default="constant", metadata=_check(choices=("constant", "cosine", "linear")))
    min_lr_ratio: float = field(default=0.1, metadata=_check(low=0.0, high=1.0))
    grad_clip: float = field(default=1.0, metadata=_check(low=0.0))
    weight_decay: float = field(default=0.0, metadata=_check(low=0.0))
    beta1: float = field(default=0.9, metadata=_check(low=0.0, high=0.999999))
    beta2: float = field(default=0.999, metadata=_check(low=0.0, high=0.999999))
    adam_eps: float = field(default=1e-8, metadata=_check(above=0.0))
    ema: float = field(default=0.9999, metadata=_check(low=0.0, high=0.999999))
    seed: int = field(default=42, metadata=_check(low=0))
    mixed_precision: str = field(default="auto", metadata=_check(choices=("auto", "no", "bf16", "fp16")))
    compile: bool = False
    max_nonfinite: int = field(default=10, metadata=_check(low=1))


@dataclass(frozen=True)
class EvaluationSection:
    every: int = field(default=5000, metadata=_check(low=0))
    batches: int = field(default=8, metadata=_check(low=1))
    batch_size: int = field(default=16, metadata=_check(low=1))
    loss_type: str = field(default="lambda_DCE", metadata=_check(choices=("lambda_DCE", "t_DCE", "t_DSE", "k_DCE")))


@dataclass(frozen=True)
class SamplingSection:
    every: int = field(default=10000, metadata=_check(low=0))
    num_samples: int = field(default=4, metadata=_check(low=1))
    steps: int = field(default=256, metadata=_check(low=1))
    method: str = field(default="tweedie", metadata=_check(choices=("tweedie", "euler", "ordered")))


@dataclass(frozen=True)
class CheckpointSection:
    every: int = field(default=5000, metadata=_check(low=1))
    keep_last: int = field(default=2, metadata=_check(low=1))


@dataclass(frozen=True)
class LoggingSection:
    every: int = field(default=50, metadata=_check(low=1))
    trackers: tuple[str, ...] = field(default=(), metadata=_check(choices=("tensorboard", "wandb")))


@dataclass(frozen=True)
class Recipe:
    name: str = "recipe"
    description: str = ""
    model: ModelSection = ModelSection()
    noise: NoiseSection = NoiseSection()
    data: DataSection = DataSection()
    tokenizer: TokenizerSection = TokenizerSection()
    training: TrainingSection = TrainingSection()
    evaluation: EvaluationSection = EvaluationSection()
    sampling: SamplingSection = SamplingSection()
    checkpoint: CheckpointSection = CheckpointSection()
    logging: LoggingSection = LoggingSection()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def shipped_recipes() -> dict[str, str]:
    """Names of the shipped recipes → their description."""
    found = {}
    for entry in sorted(resources.files(SHIPPED).iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            found[entry.name[: -len(".toml")]] = tomllib.loads(entry.read_text()).get("description", "")
    return found


def recipe_text(name_or_path: str) -> tuple[str, str]:
    """(name, TOML text) of a shipped recipe name or a path to a TOML file."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.stem, path.read_text()
    shipped = resources.files(SHIPPED) / f"{name_or_path}.toml"
    if not name_or_path.endswith(".toml") and shipped.is_file():
        return name_or_path, shipped.read_text()
    raise ConfigError(
        f"no recipe {name_or_path!r}: not a file, and not a shipped recipe ({', '.join(shipped_recipes())}); "
        "`radd recipes` lists them"
    )


def load_recipe(name_or_path: str, overrides: list[str] = ()) -> Recipe:
    """Read, override and validate a recipe; every problem is reported in one ConfigError."""
    name, text = recipe_text(name_or_path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"recipe {name_or_path} is not valid TOML: {error}") from error
    raw.setdefault("name", name)
    problems = []
    for override in overrides:
        _apply_override(raw, override, problems)
    recipe = _build(Recipe, raw, "", problems)
    problems += _cross_checks(recipe) if recipe is not None else []
    if problems:
        raise ConfigError(problems)
    return recipe


def recipe_from_dict(raw: dict) -> Recipe:
    problems: list[str] = []
    recipe = _build(Recipe, raw, "", problems)
    if problems:
        raise ConfigError(problems)
    return recipe


def _apply_override(raw: dict, override: str, problems: list[str]) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        problems.append(f"override {override!r} must look like section.key=value")
        return
    try:
        value = tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        value = text  # a bare word or a path: a string
    *sections, leaf = key.strip().split(".")
    target = raw
    for section in sections:
        target = target.setdefault(section, {})
        if not isinstance(target, dict):
            problems.append(f"override {key}: {section} is not a section")
            return
    target[leaf] = value


def _build(cls, raw, prefix: str, problems: list[str]):
    """Instantiate dataclass `cls` from `raw`, appending every problem (with its key path) to `problems`."""
    if not isinstance(raw, dict):
        problems.append(f"{prefix.rstrip('.')}: expected a section (a TOML table), got {raw!r}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            problems.append(f"{prefix}{key}: unknown key (known: {', '.join(fields)})")
    values = {}
    for name, spec in fields.items():
        if name not in raw:
            continue
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = _build(kind, raw[name], f"{prefix}{name}.", problems)
        else:
            values[name] = _coerce(raw[name], kind, spec.metadata, f"{prefix}{name}", problems)
    if any(value is None for value in values.values()):
        return None
    return cls(**values)


def _coerce(value, kind, checks, path: str, problems: list[str]):
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            problems.append(f"{path}: expected a list of strings, got {value!r}")
            return None
        for item in value:
            _check_value(item, checks, path, problems)
        return tuple(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        problems.append(f"{path}: expected {kind.__name__}, got {type(value).__name__} {value!r}")
        return None
    if not _check_value(value, checks, path, problems):
        return None
    return value


def _check_value(value, checks, path: str, problems: list[str]) -> bool:
    if checks.get("choices") and value not in checks["choices"]:
        problems.append(f"{path}: {value!r} is not one of {', '.join(map(repr, checks['choices']))}")
        return False
    if checks.get("low") is not None and value < checks["low"]:
        problems.append(f"{path}: must be at least {checks['low']}, got {value}")
        return False
    if checks.get("high") is not None and value > checks["high"]:
        problems.append(f"{path}: must be at most {checks['high']}, got {value}")
        return False
    if checks.get("above") is not None and not value > checks["above"]:
        problems.append(f"{path}: must be greater than {checks['above']}, got {value}")
        return False
    return True


def _cross_checks(recipe: Recipe) -> list[str]:
    problems = []
    model, training, noise = recipe.model, recipe.training, recipe.noise
    if model.hidden_size % model.n_heads or (model.hidden_size // model.n_heads) % 2:
        problems.append(
            f"model.hidden_size ({model.hidden_size}) must be a multiple of model.n_heads ({model.n_heads}) "
            "with an even quotient (rotary embeddings)"
        )
    if training.batch_size % training.accumulation:
        problems.append(
            f"training.batch_size ({training.batch_size}) must be a multiple of training.accumulation "
            f"({training.accumulation})"
        )
    if noise.type == "geometric" and not noise.sigma_min < noise.sigma_max:
        problems.append(f"noise.sigma_min ({noise.sigma_min}) must be below noise.sigma_max ({noise.sigma_max})")
    return problems
