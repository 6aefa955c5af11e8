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

import torch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from radd_cli.core.losses import Loss, TrainingLoss
from radd_cli.core.model import ModelShape
from radd_cli.core.schedule import Schedule, ScheduleName, get_schedule, parameters
from radd_cli.data.tokens import DEFAULT_CACHE, Packing
from radd_cli.device import Precision
from radd_cli.errors import ConfigError, Problem, setting
from radd_cli.sampling import SamplingConfig
from radd_cli.training.lora import LoraFinal, LoraFull, LoraTarget, require_peft
from radd_cli.training.optim import LRSchedule
from radd_cli.training.run_log import Tracker
from radd_cli.training.runtime import Sharding
from radd_cli.validation import limits, validate

SHIPPED = "radd_cli.recipes"  # the top-level recipes/ folder, as installed


class Section:
    """A recipe section: its fields are validated (types, choices, ranges) when it is built."""

    def __post_init__(self) -> None:
        validate(self)
        self.check()

    def check(self) -> None:
        """Checks that involve several fields of the section."""


@dataclass(frozen=True)
class NoiseSection(Section):
    type: ScheduleName = ScheduleName.loglinear
    eps: float = 1e-3
    sigma_min: float = 1e-4
    sigma_max: float = 20.0

    def check(self) -> None:
        self.schedule()

    def schedule(self) -> Schedule:
        return get_schedule(self.type, **{name: getattr(self, name) for name in parameters(self.type)})


@dataclass(frozen=True)
class DataSection(Section):
    train: str = "builtin"
    train_split: str = "train"
    valid: str = "builtin"
    valid_split: str = "validation"
    cache_dir: str = DEFAULT_CACHE
    packing: Packing = Packing.pad  # prompt/response rows: one per block padded with EOS, or back to back


@dataclass(frozen=True)
class TokenizerSection(Section):
    name: str = "gpt2"
    vocab_size: int = field(default=4096, metadata=limits(low=260))


@dataclass(frozen=True)
class LoraSection(Section):
    """`training.lora`: low-rank adapters instead of training every weight (lora.py); rank 0 = off."""

    rank: int = field(default=0, metadata=limits(low=0))
    alpha: float = field(default=16.0, metadata=limits(above=0.0))
    dropout: float = field(default=0.0, metadata=limits(low=0.0, below=1.0))
    targets: tuple[LoraTarget, ...] = tuple(LoraTarget)
    full: tuple[LoraFull, ...] = ()  # layers trained in full beside the adapters (peft's modules_to_save)
    final: LoraFinal = LoraFinal.merged

    def check(self) -> None:
        if self.rank and not self.targets:
            raise ConfigError("give at least one layer to adapt (or rank = 0 to train every weight)", field="targets")
        if self.rank:
            require_peft()

    @property
    def enabled(self) -> bool:
        return self.rank > 0


@dataclass(frozen=True)
class TrainingSection(Section):
    loss_type: TrainingLoss = TrainingLoss.lambda_DCE
    batch_size: int = field(default=512, metadata=limits(low=1))
    accumulation: int = field(default=1, metadata=limits(low=1))
    steps: int = field(default=400_000, metadata=limits(low=1))
    lr: float = field(default=3e-4, metadata=limits(above=0.0))
    warmup_steps: int = field(default=2500, metadata=limits(low=0))
    lr_schedule: LRSchedule = LRSchedule.constant
    min_lr_ratio: float = field(default=0.1, metadata=limits(low=0.0, high=1.0))
    grad_clip: float = field(default=1.0, metadata=limits(low=0.0))
    weight_decay: float = field(default=0.0, metadata=limits(low=0.0))
    beta1: float = field(default=0.9, metadata=limits(low=0.0, below=1.0))
    beta2: float = field(default=0.999, metadata=limits(low=0.0, below=1.0))
    adam_eps: float = field(default=1e-8, metadata=limits(above=0.0))
    ema: float = field(default=0.9999, metadata=limits(low=0.0, below=1.0))
    seed: int = field(default=42, metadata=limits(low=0, below=2**63))
    mixed_precision: Precision = Precision.auto
    sharding: Sharding = Sharding.auto
    activation_checkpointing: bool = False
    compile: bool = False
    max_nonfinite: int = field(default=10, metadata=limits(low=1))
    init_from: str = ""  # a model to fine-tune (any that radd loads, or a run's checkpoints/step_N); "" = scratch
    lora: LoraSection = LoraSection()

    def check(self) -> None:
        problems = []
        if self.batch_size % self.accumulation:
            problems.append(
                Problem(
                    "batch_size",
                    f"{self.batch_size} must be a multiple of {setting('accumulation')} ({self.accumulation})",
                )
            )
        if self.lora.enabled and self.lora.final == LoraFinal.adapter and not self.init_from:
            problems.append(Problem("lora.final", f"'adapter' needs {setting('init_from')}, the model the adapters apply to"))
        if problems:
            raise ConfigError(problems)


@dataclass(frozen=True)
class EvaluationSection(Section):
    every: int = field(default=5000, metadata=limits(low=0))
    batches: int = field(default=8, metadata=limits(low=1))
    batch_size: int = field(default=16, metadata=limits(low=1))
    loss_type: Loss = Loss.lambda_DCE  # any objective radd eval takes; ar_forward is exact (L calls a block)


@dataclass(frozen=True)
class SamplingSection(SamplingConfig):
    """Samples written during training, drawn with any sampling setting (every SamplingConfig field is a key)."""

    every: int = field(default=10000, metadata=limits(low=0))
    num_samples: int = field(default=4, metadata=limits(low=1))

    def config(self) -> SamplingConfig:
        return SamplingConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SamplingConfig)})


@dataclass(frozen=True)
class CheckpointSection(Section):
    every: int = field(default=5000, metadata=limits(low=1))
    keep_last: int = field(default=2, metadata=limits(low=1))


@dataclass(frozen=True)
class LoggingSection(Section):
    every: int = field(default=50, metadata=limits(low=1))
    trackers: tuple[Tracker, ...] = ()


@dataclass(frozen=True)
class Recipe:
    name: str = "recipe"
    description: str = ""
    model: ModelShape = ModelShape()
    noise: NoiseSection = NoiseSection()
    data: DataSection = DataSection()
    tokenizer: TokenizerSection = TokenizerSection()
    training: TrainingSection = TrainingSection()
    evaluation: EvaluationSection = EvaluationSection()
    sampling: SamplingSection = SamplingSection()
    checkpoint: CheckpointSection = CheckpointSection()
    logging: LoggingSection = LoggingSection()

    def to_dict(self) -> dict:
        """The recipe as JSON-ready values (positions given as an order become a list)."""
        return dataclasses.asdict(self, dict_factory=lambda items: {k: _plain(v) for k, v in items})


def _plain(value):
    return value.tolist() if isinstance(value, torch.Tensor) else value


def shipped_folder():
    """Where the shipped recipes are: installed with the package, or the recipes/ folder of a source tree."""
    try:
        return resources.files(SHIPPED)
    except ModuleNotFoundError:  # a source checkout or an editable install: the top-level folder itself
        return Path(__file__).resolve().parents[2] / "recipes"


def shipped_recipes() -> dict[str, str]:
    """Names of the shipped recipes → their description."""
    found = {}
    for entry in sorted(shipped_folder().iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            found[entry.name[: -len(".toml")]] = tomllib.loads(entry.read_text()).get("description", "")
    return found


def recipe_text(name_or_path: str) -> tuple[str, str]:
    """(name, TOML text) of a shipped recipe name or a path to a TOML file."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        try:
            return path.stem, path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"recipe {path} cannot be read as TOML text ({error})") from None
    shipped = shipped_folder() / f"{name_or_path}.toml"
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
    recipe = _build(raw, problems)
    if problems:
        raise ConfigError(problems)
    return recipe


def _apply_override(raw: dict, override: str, problems: list[Problem]) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        problems.append(Problem(None, f"override {override!r} must look like section.key=value"))
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
            problems.append(Problem(key, f"{section} is not a section"))
            return
    target[leaf] = value


def _build(raw: dict, problems: list[Problem]) -> Recipe | None:
    """The Recipe `raw` describes; every problem (with its key path) is appended to `problems`."""
    sections = {f.name: f for f in dataclasses.fields(Recipe)}
    hints = typing.get_type_hints(Recipe)
    values = {}
    for key, value in raw.items():
        if key not in sections:
            problems.append(Problem(key, f"unknown key (known: {', '.join(sections)})"))
        elif not dataclasses.is_dataclass(hints[key]):
            if isinstance(value, str):
                values[key] = value
            else:
                problems.append(Problem(key, f"expected str, got {type(value).__name__} {value!r}"))
        else:
            values[key] = _build_section(hints[key], value, key, problems)
    if any(value is None for value in values.values()):
        return None
    return Recipe(**values)


def _build_section(cls, raw, name: str, problems: list[Problem]):
    """The section `cls` from its table `raw`, sub-sections (training.lora) included; None when it has problems."""
    if not isinstance(raw, dict):
        problems.append(Problem(name, f"expected a section (a TOML table), got {raw!r}"))
        return None
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = [key for key in raw if key not in known]
    problems.extend(Problem(f"{name}.{key}", f"unknown key (known: {', '.join(known)})") for key in unknown)
    hints = typing.get_type_hints(cls)
    values, failed = {}, False
    for key, value in raw.items():
        if key in known and dataclasses.is_dataclass(hints[key]):
            value = _build_section(hints[key], value, f"{name}.{key}", problems)
            failed = failed or value is None
        if key in known and value is not None:
            values[key] = value
    try:
        section = cls(**values)
    except ConfigError as error:
        problems.extend(problem.within(name) for problem in error.problems)
        return None
    return None if failed else section
