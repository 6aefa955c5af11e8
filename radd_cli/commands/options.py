"""Option types shared by several commands: one definition and one help text each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="radd export folder, published-layout folder, training run, or Hub id.")
]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
DtypeOption = Annotated[
    str,
    typer.Option("--dtype", help="Trunk precision: auto (bf16 on GPUs that support it, fp32 on CPU), bf16, fp16, no."),
]
JsonOption = Annotated[Optional[Path], typer.Option("--json", help="Also write the results to this JSON file.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Random seed; sample i uses seed + i, whatever the batch.")]

# Sampling (radd sample, radd infill)
NumSamplesOption = Annotated[int, typer.Option("--num-samples", "-n", help="How many sequences to draw.")]
BatchSizeOption = Annotated[int, typer.Option("--batch-size", help="Sequences per network call.")]
StepsOption = Annotated[Optional[int], typer.Option("--steps", help="Diffusion steps (default: the length).")]
MethodOption = Annotated[str, typer.Option("--method", help="tweedie, euler, or ordered (one position per call).")]
OrderOption = Annotated[
    str, typer.Option("--order", help="For --method ordered: forward, backward, random, or a file of positions.")
]
StrategyOption = Annotated[
    Optional[str],
    typer.Option("--strategy", help="direct, top_p or top_k (default: from --top-p/--top-k, else direct)."),
]
TopPOption = Annotated[
    Optional[float], typer.Option("--top-p", help="Nucleus sampling: keep the top tokens of this mass.")
]
TopKOption = Annotated[Optional[int], typer.Option("--top-k", help="Keep only the k most likely tokens.")]
TemperatureOption = Annotated[float, typer.Option("--temperature", help="Divide the log-probabilities by this.")]
NoCacheOption = Annotated[
    bool, typer.Option("--no-cache", help="Call the network on every row at every step (the uncached baseline).")
]
OutputOption = Annotated[
    Optional[Path],
    typer.Option("--output", "-o", help="Write the samples to a .txt or .jsonl (text, ids, seed, NFE, settings)."),
]


def check_writable(path: Path | None, option: str) -> None:
    """Refuse an output path whose folder does not exist, before any work is done."""
    from radd_cli.errors import ConfigError

    if path is not None and not path.parent.is_dir():
        raise ConfigError(f"{option} {path}: the folder {path.parent} does not exist")
    if path is not None and path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file name")


def check_length(length: int | None) -> None:
    from radd_cli.errors import ConfigError

    if length is not None and length < 1:
        raise ConfigError(f"--length must be at least 1, got {length}")
