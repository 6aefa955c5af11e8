"""`--gpus N` on one machine: run the same radd command again as N processes through `accelerate launch`."""

from __future__ import annotations

import subprocess
import sys

import torch

from radd_cli.errors import ConfigError


def relaunch_on_gpus(num_gpus: int, argv: list[str]) -> int:
    """Run `radd ARGV` (without its --gpus) as `num_gpus` processes of one machine through `accelerate launch`."""
    if not torch.cuda.is_available() or torch.cuda.device_count() < num_gpus:
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise ConfigError(f"asks for {num_gpus} GPUs, but torch sees {found}", field="gpus")
    return subprocess.call(gpu_launch_command(num_gpus, argv))


def gpu_launch_command(num_gpus: int, argv: list[str]) -> list[str]:
    kept, skip_value = [], False
    for arg in argv:
        if skip_value:
            skip_value = False
        elif arg == "--gpus":
            skip_value = True
        elif not arg.startswith("--gpus="):
            kept.append(arg)
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(num_gpus),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",  # radd sets both itself, from the recipe
        "-m",
        "radd_cli",
        *kept,
    ]
