"""The only module that touches accelerate and torch.distributed: devices, processes, precision, seeds.

One process on a CPU or a GPU, several GPUs of one machine (`radd train --gpus N`, launched through
`accelerate launch`), or several machines with the usual `accelerate launch` / `torchrun` command
(FSDP or DeepSpeed through an accelerate config file). On the CPU everything runs in float32.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass

import torch

from radd_cli.errors import ConfigError

PRECISIONS = ("auto", "no", "bf16", "fp16")


def resolve_precision(requested: str, device_type: str) -> str:
    """`auto` → bf16 on GPUs that support it, fp16 (with loss scaling) on older GPUs, no (fp32) on the CPU."""
    if requested not in PRECISIONS:
        raise ConfigError(f"mixed precision {requested!r} is not one of {', '.join(PRECISIONS)}")
    if device_type != "cuda":
        if requested in ("bf16", "fp16"):
            raise ConfigError(f"mixed precision {requested} needs a GPU; use 'auto' or 'no' on the CPU")
        return "no"
    if requested == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return requested


def pick_device(requested: str | None = None) -> torch.device:
    """`auto`/None → the first GPU when there is one, else the CPU; or exactly what was asked."""
    if requested in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as error:
        raise ConfigError(f"--device {requested!r} is not a device (try cpu, cuda, cuda:1)") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {requested} asked for a GPU, but torch sees none; use --device cpu")
    return device


def autocast(device: torch.device, precision: str):
    """Autocast for the network's trunk (norms and log-softmax stay float32 inside the model)."""
    if precision == "no" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def tune_for_speed(device: torch.device) -> None:
    """TF32 matmuls on GPUs (the trunk runs in bf16 anyway); nothing on the CPU."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


@dataclass
class Runtime:
    """One process's view of the run, over an accelerate Accelerator."""

    accelerator: object

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world_size(self) -> int:
        return self.accelerator.num_processes

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def precision(self) -> str:
        return self.accelerator.mixed_precision

    def autocast(self):
        return autocast(self.device, self.precision)

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over processes (a copy on one process)."""
        values = values.to(self.device)
        return self.accelerator.reduce(values.clone(), reduction="sum") if self.world_size > 1 else values

    def any(self, flag: bool) -> bool:
        """True on every process when the flag is true on any."""
        return bool(self.sum(torch.tensor([float(flag)])).item() > 0)


def build_runtime(
    mixed_precision: str = "auto",
    *,
    cpu: bool | None = None,
    trackers: tuple[str, ...] = (),
    project_dir: str | None = None,
) -> Runtime:
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    cpu = (not torch.cuda.is_available()) if cpu is None else cpu
    precision = resolve_precision(mixed_precision, "cpu" if cpu else "cuda")
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=precision,
        log_with=list(trackers) or None,
        project_config=ProjectConfiguration(project_dir=project_dir, logging_dir=project_dir) if project_dir else None,
    )
    tune_for_speed(accelerator.device)
    return Runtime(accelerator)


def require_data_parallel(runtime: Runtime) -> None:
    """Training keeps full parameters on every process (for the EMA and clipping): DDP, not sharding."""
    kind = str(runtime.accelerator.distributed_type).rsplit(".", 1)[-1]
    if kind in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):
        raise ConfigError(
            f"radd train runs data-parallel (DDP) only; this launch asked for {kind}, whose sharded parameters "
            "the weight EMA cannot follow. Launch without the FSDP/DeepSpeed accelerate config"
        )


def seed_everything(seed: int) -> None:
    from accelerate.utils import set_seed

    set_seed(seed)


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
