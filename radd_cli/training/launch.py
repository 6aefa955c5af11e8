"""How a training run is launched: as one process, as several through `accelerate launch` (`radd train --gpus N`),
or by a launcher the user ran (accelerate, torchrun) that this process finds in its environment.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from radd_cli.errors import ConfigError
from radd_cli.training.runtime import Sharding


def plans_to_shard(requested: str) -> bool:
    """Whether a run of this process's launch would be sharded, without starting one (`radd train --dry-run`)."""
    requested = Sharding(requested)
    asked = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    return requested == Sharding.fsdp or (requested == Sharding.auto and asked)


def launched_as_one_of_many() -> bool:
    """Whether this process was started by accelerate/torchrun as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def relaunch_on_gpus(num_gpus: int, argv: list[str]) -> int:
    """Run `radd ARGV` (without its --gpus) as `num_gpus` processes of one machine through `accelerate launch`."""
    if not torch.cuda.is_available() or torch.cuda.device_count() < num_gpus:
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise ConfigError(f"--gpus {num_gpus} asked for {num_gpus} GPUs, but torch sees {found}")
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
