"""The only module that touches accelerate and torch.distributed: devices, processes, precision.

One process on a CPU or a GPU, several GPUs of one machine (`radd train --gpus N`, launched through
`accelerate launch`), or several machines with the usual `accelerate launch` / `torchrun` command.
Everything else asks a `Runtime` (prepare, backward, no_sync, clip, save/load state, trackers) and
never reaches into accelerate itself.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass

import torch

from radd_cli.errors import ConfigError, RaddError
from radd_cli.validation import Choice


class Precision(Choice):
    """The trunk's compute precision. Norms, log-softmax and master weights always stay in float32."""

    auto = "auto"  # bf16 on GPUs that support it, fp16 (with loss scaling) on older GPUs, fp32 on the CPU
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


def resolve_precision(requested: str, device_type: str) -> Precision:
    """The precision to run in on a device of this type (never `auto`)."""
    requested = Precision(requested)
    if device_type != "cuda":
        if requested in (Precision.bf16, Precision.fp16):
            raise ConfigError(f"precision {requested} needs a GPU; use auto or fp32 on the CPU")
        return Precision.fp32
    if requested == Precision.auto:
        return Precision.bf16 if torch.cuda.is_bf16_supported() else Precision.fp16
    return requested


def pick_device(requested: str | None = None) -> torch.device:
    """`auto`/None → the first GPU when there is one, else the CPU; or exactly what was asked."""
    if requested in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ConfigError(f"--device {requested!r} is not a device (try cpu, cuda, cuda:1)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {requested} asked for a GPU, but torch sees none; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {requested}: torch sees {torch.cuda.device_count()} GPU(s)")
    elif device.type != "cpu":
        raise ConfigError(f"--device {requested}: radd runs on cpu or cuda devices")
    return device


def autocast(device: torch.device, precision: Precision):
    """Autocast for the network's trunk (norms and log-softmax stay float32 inside the model)."""
    if precision == Precision.fp32 or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if precision == Precision.bf16 else torch.float16)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a new allocation on `device` (the GPU's free memory, or the system's available RAM
    within any cgroup limit); None when it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    found = []
    try:
        with open("/proc/meminfo") as handle:
            found += [int(line.split()[1]) << 10 for line in handle if line.startswith("MemAvailable:")]
    except OSError:
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as limit, open("/sys/fs/cgroup/memory.current") as used:
            found.append(int(limit.read()) - int(used.read()))
    except (OSError, ValueError):  # no cgroup v2 limit ("max") or no such files
        pass
    return min(found) if found else None


def tune_for_speed(device: torch.device) -> None:
    """TF32 matmuls on GPUs (the trunk runs in bf16 anyway); nothing on the CPU."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


_ACCELERATE_PRECISION = {Precision.fp32: "no", Precision.bf16: "bf16", Precision.fp16: "fp16"}


@dataclass
class Runtime:
    """One process's view of the run, over an accelerate Accelerator that nothing else touches."""

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
    def precision(self) -> Precision:
        return {value: key for key, value in _ACCELERATE_PRECISION.items()}[self.accelerator.mixed_precision]

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

    def main_first(self, action, *, others: bool = True):
        """Run `action()` on the main process, then (when `others`) on the rest, returning its result.

        A RaddError on any process stops every process: the failing one raises its own error, the others
        one that points at it, so no process waits forever at the next barrier.
        """
        result = None
        for turn in ("main", "others") if others else ("main",):
            error = None
            if (turn == "main") == self.is_main:
                try:
                    result = action()
                except RaddError as raised:
                    error = raised
            if self.any(error is not None):
                raise error if error is not None else RaddError("another process of this run failed (see its error)")
        return result

    # training
    def prepare(self, *objects):
        """Wrap the model (DDP) and optimizer (loss scaling) for this launch."""
        return self.accelerator.prepare(*objects)

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def no_sync(self, model, sync: bool):
        """Skip the gradient all-reduce of this backward unless `sync` (the last micro-batch)."""
        return contextlib.nullcontext() if sync else self.accelerator.no_sync(model)

    def clip_grad_norm(self, parameters, max_norm: float) -> torch.Tensor:
        """Clip the (unscaled) gradient norm; returns the norm before clipping."""
        return self.accelerator.clip_grad_norm_(parameters, max_norm)

    def optimizer_step(self, optimizer) -> bool:
        """Step the optimizer; False when fp16 loss scaling found an overflow and skipped the update."""
        optimizer.step()
        return not (self.precision == Precision.fp16 and optimizer.step_was_skipped)

    def register_for_checkpointing(self, *objects) -> None:
        """Objects with state_dict/load_state_dict saved and restored with the model and optimizer."""
        self.accelerator.register_for_checkpointing(*objects)

    def save_state(self, folder: str) -> None:
        self.accelerator.save_state(folder)

    def load_state(self, folder: str) -> None:
        self.accelerator.load_state(folder)

    def require_data_parallel(self) -> None:
        """Training keeps full parameters on every process (for the EMA and clipping): DDP, not sharding."""
        kind = str(self.accelerator.distributed_type).rsplit(".", 1)[-1]
        if kind in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):
            raise ConfigError(
                f"radd train runs data-parallel (DDP) only; this launch asked for {kind}, whose sharded parameters "
                "the weight EMA cannot follow. Launch without the FSDP/DeepSpeed accelerate config"
            )

    # trackers (tensorboard, wandb)
    def init_trackers(self, name: str, config: dict) -> None:
        self.accelerator.init_trackers(name, config=config)

    def log(self, values: dict, step: int) -> None:
        self.accelerator.log(values, step=step)

    def end_training(self) -> None:
        self.accelerator.end_training()


def build_runtime(
    precision: str = "auto",
    *,
    cpu: bool | None = None,
    trackers: tuple[str, ...] = (),
    project_dir: str | None = None,
) -> Runtime:
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    cpu = (not torch.cuda.is_available()) if cpu is None else cpu
    resolved = resolve_precision(precision, "cpu" if cpu else "cuda")
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=_ACCELERATE_PRECISION[resolved],
        log_with=[str(tracker) for tracker in trackers] or None,
        project_config=ProjectConfiguration(project_dir=project_dir, logging_dir=project_dir) if project_dir else None,
    )
    tune_for_speed(accelerator.device)
    return Runtime(accelerator)


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
