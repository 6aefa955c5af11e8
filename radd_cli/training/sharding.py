"""Sharded training (FSDP2): parameters, gradients, optimizer state and the weight EMA split over processes.

Imported only by runtime.py, which reads the launch's accelerate config; the two are the only modules that
touch torch.distributed. Each transformer block, then the whole network, goes through torch's `fully_shard`:
a process keeps 1/N of every parameter (a DTensor's local shard) and gathers a block's full weights just
before computing it. The optimizer and the EMA are elementwise, so each process updates the shards it owns.
The trunk still runs under autocast (float32 master weights, norms and log-softmax), exactly as without
sharding.

Checkpoints hold the shards as written by torch.distributed.checkpoint: every process writes its own file
into `sharded/` of the checkpoint folder (on a file system all machines see), and a checkpoint loads into
any number of processes. Export gathers the full EMA weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

FOLDER = "sharded"  # inside a checkpoint folder


def shard(model: torch.nn.Module, units, device: torch.device, world_size: int, reshard: bool) -> torch.nn.Module:
    """Shard `model` in place over all processes: each of `units` (the blocks) is gathered on its own."""
    if not dist.is_initialized():  # one process, launched plainly: a process group of one
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.HashStore(), rank=0, world_size=1)
    mesh = init_device_mesh(device.type, (world_size,))
    for unit in units:
        fully_shard(unit, mesh=mesh, reshard_after_forward=reshard)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard)
    return model


def is_sharded(tensor: torch.Tensor) -> bool:
    return isinstance(tensor, DTensor)


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor on every process (a collective: every process must call it)."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def requires_sync(model: torch.nn.Module, sync: bool) -> None:
    """Reduce-scatter gradients in this backward (the last micro-batch) or accumulate them unreduced."""
    model.set_requires_gradient_sync(sync)


def _state(model, optimizer, objects: dict, options: StateDictOptions) -> dict:
    model_state, optimizer_state = get_state_dict(model, optimizer, options=options)
    return {"model": model_state, "optimizer": optimizer_state, **{name: o.state_dict() for name, o in objects.items()}}


def save(folder: str | Path, model, optimizer, objects: dict, *, trained_only: bool = False) -> None:
    """Every process writes its shards of the model, the optimizer and `objects` (name → state_dict holder);
    with `trained_only`, of the parameters that train alone (LoRA's adapters)."""
    options = StateDictOptions(ignore_frozen_params=trained_only)
    dcp.save(_state(model, optimizer, objects, options), checkpoint_id=str(Path(folder) / FOLDER))


def load(folder: str | Path, model, optimizer, objects: dict, *, trained_only: bool = False) -> None:
    """Read a checkpoint written by `save` (by any number of processes) into this process's shards."""
    state = _state(model, optimizer, objects, StateDictOptions(ignore_frozen_params=trained_only))
    dcp.load(state, checkpoint_id=str(Path(folder) / FOLDER))
    # the frozen parameters stay as the run rebuilt them; the load itself is strict
    model_state = {**get_model_state_dict(model), **state["model"]} if trained_only else state["model"]
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=state["optimizer"])
    for name, holder in objects.items():
        holder.load_state_dict(state[name])


def holds_shards(folder: str | Path) -> bool:
    return (Path(folder) / FOLDER / ".metadata").is_file()


def saved_shapes(folder: str | Path) -> dict[str, tuple[int, ...]] | None:
    """The full shape of every network weight in a sharded checkpoint; None when its metadata is unreadable."""
    from torch.distributed.checkpoint import FileSystemReader

    try:
        metadata = FileSystemReader(str(Path(folder) / FOLDER)).read_metadata()
    except (OSError, RuntimeError, EOFError, ValueError):
        return None
    return {
        key[len("model.") :]: tuple(entry.size)
        for key, entry in metadata.state_dict_metadata.items()
        if key.startswith("model.") and hasattr(entry, "size")
    }
