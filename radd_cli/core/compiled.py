"""Compiled inference: the network's trunk under torch.compile, compiled once per sequence or block length.

`compile_for_inference(model)` replaces, on that one model, the three trunk calls that sampling and
evaluation make — `trunk` (a full call), `trunk_keeping_kv` (a full call that keeps keys and values) and
`block_trunk` (a block against them) — with compiled versions; the log-softmax head, which runs only at
the positions asked for (a data-dependent count), stays eager. The sequence and block lengths are fixed
by the caller and the batch dimension is marked dynamic, so a batch that shrinks as rows finish does not
compile again. On CUDA the compiled calls are also captured in CUDA graphs ("reduce-overhead").
`warm_up` makes the first (compiling) calls, so that timings that follow measure the compiled code.

Where torch.compile cannot run here (no C++ compiler for the CPU backend, a Python that TorchDynamo does not
support), the model stays eager and the reason comes back as one line for the caller to show.
"""

from __future__ import annotations

import shutil

import torch

# The trunk calls, with the batch dimension of each tensor argument (kept keys and values are layer-major).
TRUNK_CALLS = {"trunk": (0,), "trunk_keeping_kv": (0,), "block_trunk": (0, 0, 1, 1)}


def compile_unavailable(device: torch.device) -> str | None:
    """Why torch.compile cannot run on `device` in this process, or None when it can."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile does not support this Python version"
    if device.type == "cpu" and not any(shutil.which(name) for name in ("g++", "c++", "clang++")):
        return "torch.compile on the CPU needs a C++ compiler (g++ or clang++), and none is on the PATH"
    return None


def compile_for_inference(model: torch.nn.Module, device: torch.device, backend: str = "inductor") -> str | None:
    """Compile `model`'s trunk calls in place (it must be a RADD network in eval mode). Returns None, or the
    one-line reason why it stays eager. (`backend`: TorchDynamo's; the tests trace with "eager".)"""
    reason = compile_unavailable(device) if backend == "inductor" else None
    if reason is not None:
        return f"compile is not used: {reason}"
    mode = "reduce-overhead" if device.type == "cuda" and backend == "inductor" else None
    for name, batch_dims in TRUNK_CALLS.items():
        compiled = torch.compile(getattr(model, name), backend=backend, mode=mode)
        setattr(model, name, _BatchDynamic(compiled, batch_dims))
    return None


def is_compiled(model: torch.nn.Module) -> bool:
    return isinstance(getattr(model, "trunk", None), _BatchDynamic)


class _BatchDynamic:
    """A compiled call whose tensor arguments have their batch dimension (`batch_dims`, in order) marked dynamic."""

    def __init__(self, compiled, batch_dims: tuple[int, ...]):
        self.compiled, self.batch_dims = compiled, batch_dims

    def __call__(self, *args):
        for value, dim in zip(args, self.batch_dims):
            torch._dynamo.maybe_mark_dynamic(value, dim)
        return self.compiled(*args)


def warm_up(model: torch.nn.Module, length: int, block_length: int | None = None, batch: int = 2) -> None:
    """Make the compiling calls of a compiled `model` — full calls of `length`, and block calls of
    `block_length` when given — in the caller's precision (autocast), so that later calls are compiled ones."""
    if not is_compiled(model):
        return
    device = next(model.parameters()).device
    with torch.inference_mode():  # as the samplers call (TorchDynamo guards on it)
        tokens = torch.full((batch, length), model.mask_id, dtype=torch.long, device=device)
        model.trunk(tokens)
        if block_length is None:
            return
        _, keys, values = model.trunk_keeping_kv(tokens)
        positions = torch.arange(block_length, device=device).expand(batch, -1).contiguous()
        for prefix in (False, True):
            model.block_trunk(tokens[:, :block_length], positions, keys, values, prefix)
