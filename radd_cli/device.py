"""The device and the precision a process computes in: what training, sampling, evaluation and serving share.

`pick_device` turns `auto`/`cpu`/`cuda:N` into a device, `resolve_precision` turns `auto` into the precision
that work runs in on that device (`AUTO_PRECISION`, the one rule; docs/guarantees.md), `autocast` applies
it to the network's trunk.
"""

from __future__ import annotations

import functools
import os

import torch

from radd_cli.errors import ConfigError
from radd_cli.validation import Choice


class Precision(Choice):
    """The trunk's compute precision. Norms, log-softmax and master weights always stay in float32."""

    auto = "auto"  # what AUTO_PRECISION picks for the work and the device
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Work(Choice):
    """What the network is run for; `auto` picks the precision by it (AUTO_PRECISION)."""

    train = "train"  # radd train, radd bench train, radd_cli.Trainer
    sample = "sample"  # radd sample, radd infill, radd_cli.generate / sample, the prompts of a task
    eval = "eval"  # radd eval, the lm-eval adapter, radd_cli.evaluate_perplexity
    serve = "serve"  # radd serve: the same as sample, so that served samples equal offline ones


class Hardware(Choice):
    """The kinds of device whose precision `auto` tells apart."""

    cpu = "cpu"  # a CPU without native bf16 (bf16 is emulated there, several times slower than fp32)
    cpu_bf16 = "cpu_bf16"  # a CPU with AVX-512 BF16 or AMX (or RADD_NATIVE_BF16=1)
    gpu = "gpu"  # a GPU with bf16 (Ampere or later)
    gpu_fp16 = "gpu_fp16"  # an older GPU: fp16 with loss scaling


_F, _B, _H = Precision.fp32, Precision.bf16, Precision.fp16
# The one rule for `auto`, from the measurements in README's "Measured" (the bf16 report and the training
# comparison): on CPUs with native bf16, inference runs in bf16 (the forward is about twice as fast and the
# NLL within 0.5% of fp32) while training stays in fp32 (bf16's step was no faster there, and the sort recipe
# trained in bf16 answered fewer held-out prompts exactly).
AUTO_PRECISION: dict[Work, dict[Hardware, Precision]] = {
    Work.train: {Hardware.cpu: _F, Hardware.cpu_bf16: _F, Hardware.gpu: _B, Hardware.gpu_fp16: _H},
    Work.sample: {Hardware.cpu: _F, Hardware.cpu_bf16: _B, Hardware.gpu: _B, Hardware.gpu_fp16: _H},
    Work.eval: {Hardware.cpu: _F, Hardware.cpu_bf16: _B, Hardware.gpu: _B, Hardware.gpu_fp16: _H},
    Work.serve: {Hardware.cpu: _F, Hardware.cpu_bf16: _B, Hardware.gpu: _B, Hardware.gpu_fp16: _H},
}


NATIVE_BF16_VARIABLE = "RADD_NATIVE_BF16"  # 1 or 0: behave as if this CPU had (or lacked) native bf16


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX-512 BF16 or AMX), where oneDNN's bf16 matmuls run about
    twice as fast as float32; without either, bf16 is emulated and several times slower than float32.

    RADD_NATIVE_BF16=1 or 0 overrides what the CPU reports, so every machine can take either path (the
    tests run both ways)."""
    forced = os.environ.get(NATIVE_BF16_VARIABLE, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        raise ConfigError(f"{NATIVE_BF16_VARIABLE}={forced!r}: set it to 1 or 0, or leave it unset to ask the CPU")
    return _cpu_reports_native_bf16()


@functools.cache
def _cpu_reports_native_bf16() -> bool:
    try:
        capability = torch._C._cpu._get_cpu_capability()  # cpuinfo's view, on every platform
        return bool(capability.get("avx512_bf16") or capability.get("amx_bf16"))
    except (AttributeError, RuntimeError):
        pass
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def hardware(device_type: str) -> Hardware:
    """The kind of device `auto` decides for: a CPU with or without native bf16, a GPU with or without bf16."""
    if device_type == "cuda":
        return Hardware.gpu if torch.cuda.is_bf16_supported() else Hardware.gpu_fp16
    return Hardware.cpu_bf16 if cpu_has_native_bf16() else Hardware.cpu


def resolve_precision(requested: str, device_type: str, *, work: Work) -> Precision:
    """The precision `work` runs in on a device of this type (never `auto`): AUTO_PRECISION for `auto`."""
    requested = Precision(requested)
    if device_type != "cuda":
        if requested == Precision.fp16:
            raise ConfigError("fp16 needs a GPU; use auto, bf16 or fp32 on the CPU", field="precision")
        if requested == Precision.bf16 and not cpu_has_native_bf16():
            raise ConfigError(
                "bf16 needs a GPU or a CPU with native bf16 (AVX-512 BF16 or AMX), where it is faster than fp32; "
                f"this CPU emulates it, slower than fp32: use auto or fp32 (or {NATIVE_BF16_VARIABLE}=1 to run it "
                "emulated anyway)",
                field="precision",
            )
    if requested == Precision.auto:
        return AUTO_PRECISION[Work(work)][hardware(device_type)]
    return requested


def pick_device(requested: str | None = None) -> torch.device:
    """`auto`/None → the first GPU when there is one, else the CPU; or exactly what was asked."""
    if requested in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ConfigError(f"{requested!r} is not a device (try cpu, cuda, cuda:1)", field="device") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{requested} asks for a GPU, but torch sees none; use cpu", field="device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{requested}: torch sees {torch.cuda.device_count()} GPU(s)", field="device")
    elif device.type != "cpu":
        raise ConfigError(f"{requested}: radd runs on cpu or cuda devices", field="device")
    return device


def autocast(device: torch.device, precision: Precision):
    """Autocast for the network's trunk (norms and log-softmax stay float32 inside the model). fp32 turns
    autocast off, also inside a caller's: the precision asked for is the one computed in."""
    if precision == Precision.fp32:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == Precision.bf16 else torch.float16)


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
