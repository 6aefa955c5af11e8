"""Option types shared by several commands: one definition and one help text each.

Choices are the library's own Choice enums, so `--help` lists the allowed values and Typer refuses
anything else at parse time, before a model, tokenizer or dataset is touched.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Annotated, Optional

import typer

from radd_cli.device import Precision
from radd_cli.errors import ConfigError
from radd_cli.sampling import MAX_STEPS, Method
from radd_cli.validation import field_label

SEED_HELP = "Random seed: sample (or draw) i uses seed + i, so results do not depend on --batch-size."
MAX_SEED = 2**63 - 1

ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="radd export folder, published-layout folder, training run, or Hub id.")
]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
PrecisionOption = Annotated[
    Precision,
    typer.Option(
        "--precision",
        "--dtype",
        help="Trunk precision; auto: what this command runs in on this device (docs/guarantees.md, Precision).",
    ),
]
CompileOption = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="torch.compile the network for inference: it compiles once (minutes on a CPU), then runs faster; "
        "without a compiler it says so and runs as usual.",
    ),
]
JsonOption = Annotated[Optional[Path], typer.Option("--json", help="Also write the results to this JSON file.")]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace the output files named here if they exist.")]
SeedOption = Annotated[int, typer.Option("--seed", min=0, max=MAX_SEED, help=SEED_HELP)]
BatchSizeOption = Annotated[int, typer.Option("--batch-size", min=1, help="Sequences per network call.")]

NumSamplesOption = Annotated[int, typer.Option("--num-samples", "-n", min=1, help="How many sequences to draw.")]
StepsOption = Annotated[
    Optional[int],
    typer.Option("--steps", min=1, max=MAX_STEPS, help="Diffusion steps (default: the length)."),
]
MethodOption = Annotated[Method, typer.Option("--method", help="The sampler; ordered unmasks one position per call.")]


def setting_options(
    cls, *, choices: dict[str, type] | None = None, only: tuple[str, ...] | None = None
) -> dict[str, tuple[object, object]]:
    """Typer options made from a settings dataclass (its fields in `only`, when given): `--field-name` per field,
    with the field's type, default, help and whole-number range; a nested settings dataclass (SamplingConfig's
    Strategy) gives one option per field of its own. `choices` types a plain-string field by a Choice (the
    registry's names, say). Returns {parameter name: (annotated type, default)}; the name is the field's label."""
    hints, options = typing.get_type_hints(cls), {}
    for field in dataclasses.fields(cls):
        if only is not None and field.name not in only:
            continue
        kind = (choices or {}).get(field.name, hints[field.name])
        if dataclasses.is_dataclass(kind):
            options.update(setting_options(kind))
            continue
        name, default = field_label(field), field.default
        if name == "strategy":  # from top_p / top_k when not given (Strategy.from_options)
            kind, default = Optional[kind], None
        options[name] = (Annotated[_option_type(kind), _option(name, kind, default, field.metadata)], default)
    return options


def _option_type(kind):
    """What Typer parses a field of type `kind` as: plain values for unions with a tensor (positions in code)."""
    members = [member for member in typing.get_args(kind) if member is not type(None)]
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and len(members) > 1:
        return members[0]
    return kind


def _option(name: str, kind, default, metadata) -> typer.models.OptionInfo:
    flag = "--" + name.replace("_", "-")
    if kind is bool:
        flag = f"{flag}/--no-{flag[2:]}" if default else flag  # a setting on by default is turned off with --no-…
    whole = int in (kind, *typing.get_args(kind))
    ranges = {"min": metadata.get("low"), "max": metadata.get("high")} if whole else {}
    return typer.Option(flag, help=metadata.get("help"), **{key: value for key, value in ranges.items() if value is not None})


OutputOption = Annotated[
    Optional[Path],
    typer.Option("--output", "-o", help="Write the samples to a .txt or .jsonl (text, ids, seed, NFE, settings)."),
]


def check_writable(path: Path | None, option: str, force: bool) -> None:
    """Refuse an output path before any work is done: one in a folder that does not exist, a folder, or
    (without --force) a file that exists: radd never replaces a file of yours unasked (docs/guarantees.md)."""
    if path is None:
        return
    if not path.parent.is_dir():
        raise ConfigError(f"{option} {path}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file name")
    if (path.exists() or path.is_symlink()) and not force:
        raise ConfigError(f"{option} {path} exists; pass --force to replace it, or give a new file name")
