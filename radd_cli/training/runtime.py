"""The only module that touches accelerate and torch.distributed: devices, processes, precision.

One process on a CPU or a GPU, several GPUs of one machine (`radd train --gpus N`, launched through
`accelerate launch`), or several machines with the usual `accelerate launch` / `torchrun` command.
Everything else asks a `Runtime` (prepare, backward, no_sync, clip, save/load state, trackers) and
never reaches into accelerate itself. Sharded training (FSDP) lives in sharding.py, which only this
module imports.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from radd_cli.device import Precision, Work, autocast, resolve_precision, tune_for_speed
from radd_cli.errors import ConfigError, RaddError, setting
from radd_cli.validation import Choice


class Sharding(Choice):
    """How training spreads the model over processes (sharding.py implements fsdp)."""

    auto = "auto"  # fsdp when the launch asks for it (an accelerate config with FSDP), otherwise none
    none = "none"  # data parallel (DDP): every process holds the whole model, optimizer and EMA
    fsdp = "fsdp"  # parameters, gradients, optimizer state and EMA sharded over the processes (FSDP2)


_ACCELERATE_PRECISION = {Precision.fp32: "no", Precision.bf16: "bf16", Precision.fp16: "fp16"}


@dataclass
class Runtime:
    """One process's view of the run, over an accelerate Accelerator that nothing else touches.

    With `sharded`, the model and optimizer are sharded over the processes (sharding.py) instead of being
    wrapped by accelerate, and saved by every process; accelerate still keeps the processes, the random
    states, the trackers and the objects registered for checkpointing.
    """

    accelerator: object
    sharded: bool = False
    reshard_after_forward: bool = True
    _sharded_state: dict = field(default_factory=dict)  # model, optimizer and per-process objects to save
    trained_only: bool = False  # checkpoints hold only the weights that train (LoRA's adapters)

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
    def shard(self, model: torch.nn.Module, units) -> torch.nn.Module:
        """Shard `model` over the processes when the run is sharded, each of `units` (its blocks) gathered on
        its own; the model as it is otherwise. Build the optimizer and the EMA after this."""
        if not self.sharded:
            return model
        from radd_cli.training import sharding

        return sharding.shard(model, units, self.device, self.world_size, self.reshard_after_forward)

    def prepare(self, model, optimizer):
        """Wrap the model (DDP, autocast) and optimizer (loss scaling) for this launch; a sharded model and its
        optimizer are kept as they are (and saved by every process)."""
        if self.sharded:
            self._sharded_state.update(model=model, optimizer=optimizer)
            return model, optimizer
        return self.accelerator.prepare(model, optimizer)

    def training_autocast(self):
        """The forward's autocast when `prepare` did not add it (sharded models). Its weight-cast cache is off:
        it would keep a bf16 copy of every gathered block until the forward ends, even with activation
        checkpointing (which otherwise frees each block's copy after the block)."""
        if not self.sharded or self.precision == Precision.fp32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=False)

    def backward(self, loss: torch.Tensor) -> None:
        if self.sharded:
            loss.backward()
        else:
            self.accelerator.backward(loss)

    def no_sync(self, model, sync: bool):
        """Skip the gradient all-reduce (reduce-scatter) of this backward unless `sync` (the last micro-batch)."""
        if self.sharded:
            from radd_cli.training import sharding

            sharding.requires_sync(model, sync)
            return contextlib.nullcontext()
        return contextlib.nullcontext() if sync else self.accelerator.no_sync(model)

    def clip_grad_norm(self, parameters, max_norm: float) -> torch.Tensor:
        """Clip the (unscaled) gradient norm over all shards; returns the norm before clipping."""
        if self.sharded:
            return self.full(torch.nn.utils.clip_grad_norm_(list(parameters), max_norm))
        return self.accelerator.clip_grad_norm_(parameters, max_norm)

    def optimizer_step(self, optimizer) -> bool:
        """Step the optimizer; False when fp16 loss scaling found an overflow and skipped the update."""
        optimizer.step()
        return not (self.precision == Precision.fp16 and optimizer.step_was_skipped)

    def full(self, tensor: torch.Tensor) -> torch.Tensor:
        """The whole of a sharded tensor on every process (all processes must call this); others as they are."""
        if not self.sharded:
            return tensor
        from radd_cli.training import sharding

        return sharding.full(tensor)

    def register_for_checkpointing(self, *objects) -> None:
        """Objects with state_dict/load_state_dict saved and restored with the model and optimizer: by the main
        process, or by every process for objects whose `per_process` is true (an EMA of shards)."""
        for index, holder in enumerate(objects):
            if self.sharded and getattr(holder, "per_process", False):
                self._sharded_state[f"object{index}"] = holder
            else:
                self.accelerator.register_for_checkpointing(holder)

    def checkpoint_trained_only(self, model) -> None:
        """Checkpoints of the prepared `model` leave out its frozen parameters (all but LoRA's adapters): the run
        rebuilds them (from training.init_from) before it resumes. Loading stays strict: the file must hold
        exactly the rest."""
        self.trained_only = True
        if self.sharded:
            return  # sharding.save / load leave the frozen parameters out themselves
        inner = self.accelerator.unwrap_model(model)
        frozen = {name for name, parameter in inner.named_parameters() if not parameter.requires_grad}
        kept = set(inner.state_dict()) - frozen

        def keep_trained(models, weights, folder) -> None:
            weights[:] = [{key: value for key, value in w.items() if _plain(key) in kept} for w in weights]

        def load_trained(models, folder) -> None:
            from safetensors.torch import load_file

            loaded = self.accelerator.unwrap_model(models.pop(0))  # loaded here: accelerate would miss the frozen
            state = {_plain(key): value for key, value in load_file(os.path.join(folder, "model.safetensors")).items()}
            if set(state) != kept:
                raise KeyError(f"{folder} holds {len(state)} weights, not the {len(kept)} that this run trains")
            loaded.load_state_dict({**loaded.state_dict(), **state}, strict=True)

        self.accelerator.register_save_state_pre_hook(keep_trained)
        self.accelerator.register_load_state_pre_hook(load_trained)

    def save_state(self, folder: str) -> None:
        if self.sharded:
            from radd_cli.training import sharding

            state = dict(self._sharded_state)
            sharding.save(folder, state.pop("model"), state.pop("optimizer"), state, trained_only=self.trained_only)
        self.accelerator.save_state(folder)

    def load_state(self, folder: str) -> None:
        from radd_cli.training import sharding

        if sharding.holds_shards(folder) != self.sharded:
            raise ConfigError(
                f"{folder} was saved {'with' if sharding.holds_shards(folder) else 'without'} sharding; resume it "
                f"with training.sharding = '{'fsdp' if sharding.holds_shards(folder) else 'none'}' and a launch "
                f"that agrees (another {setting('run_dir')} starts a new run instead)"
            )
        # accelerate only logs a random-state file it cannot read: read it first, so that a damaged one makes
        # the checkpoint unreadable (the trainer falls back to an older one) instead of resuming without it
        torch.load(Path(folder) / f"random_states_{self.accelerator.process_index}.pkl", weights_only=False)
        if self.sharded:
            state = dict(self._sharded_state)
            sharding.load(folder, state.pop("model"), state.pop("optimizer"), state, trained_only=self.trained_only)
        self.accelerator.load_state(folder)

    def saved_shapes(self, folder: str) -> dict[str, tuple[int, ...]] | None:
        """The network's weight shapes in a sharded checkpoint; None for other checkpoints or unreadable ones."""
        from radd_cli.training import sharding

        return sharding.saved_shapes(folder) if sharding.holds_shards(folder) else None

    # trackers (tensorboard, wandb)
    def init_trackers(self, name: str, config: dict) -> None:
        self.accelerator.init_trackers(name, config=config)

    def log(self, values: dict, step: int) -> None:
        self.accelerator.log(values, step=step)

    def end_training(self) -> None:
        self.accelerator.end_training()


def _plain(key: str) -> str:
    """A weight's name without the `module.` (DDP) and `_orig_mod.` (torch.compile) of wrappers."""
    return re.sub(r"^(module\.|_orig_mod\.)+", "", key)


def build_runtime(
    precision: str = "auto",
    *,
    cpu: bool | None = None,
    trackers: tuple[str, ...] = (),
    project_dir: str | None = None,
    sharding: str = "none",
) -> Runtime:
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    cpu = (not torch.cuda.is_available()) if cpu is None else cpu
    resolved = resolve_precision(precision, "cpu" if cpu else "cuda", work=Work.train)
    _forget_other_precision(_ACCELERATE_PRECISION[resolved])
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=_ACCELERATE_PRECISION[resolved],
        log_with=[str(tracker) for tracker in trackers] or None,
        project_config=ProjectConfiguration(project_dir=project_dir, logging_dir=project_dir) if project_dir else None,
    )
    tune_for_speed(accelerator.device)
    sharded = resolve_sharding(Sharding(sharding), accelerator, resolved)
    if not sharded:
        return Runtime(accelerator)
    return Runtime(accelerator, sharded=True, reshard_after_forward=reshard_after_forward(accelerator))


def _forget_other_precision(mixed_precision: str) -> None:
    """accelerate keeps one state per process and refuses a second Accelerator in another precision; a
    process that is not part of a launch (a notebook or a test that trains twice) starts afresh instead."""
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    alone = int(os.environ.get("WORLD_SIZE", "1")) == 1
    if state and alone and state.get("_mixed_precision") != mixed_precision:
        AcceleratorState._reset_state()


def launch_asks_for(accelerator, kind: str) -> bool:
    """Whether the launch's accelerate config asks for `kind` (FSDP, DEEPSPEED or MEGATRON_LM), also where
    accelerate itself does not act on it (it applies FSDP to multi-GPU launches only)."""
    if str(accelerator.distributed_type).rsplit(".", 1)[-1] == kind:
        return True
    return os.environ.get(f"ACCELERATE_USE_{kind}", "false").lower() == "true"


def reshard_after_forward(accelerator) -> bool:
    """The launch's FSDP setting, when it has one: free gathered weights after each block's forward (the
    default, FULL_SHARD) or keep them until the backward (SHARD_GRAD_OP: less communication, more memory)."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    if not launch_asks_for(accelerator, "FSDP"):
        return True
    plugin = getattr(accelerator.state, "fsdp_plugin", None) or FullyShardedDataParallelPlugin()
    if type(plugin.cpu_offload).__name__ == "CPUOffloadPolicy" or getattr(plugin.cpu_offload, "offload_params", 0):
        raise ConfigError(
            "the accelerate config asks FSDP to offload parameters to the CPU, which radd train does not do; "
            "set fsdp_offload_params: false (or use training.activation_checkpointing to save memory)"
        )
    setting = plugin.reshard_after_forward
    if isinstance(setting, bool):
        return setting
    name = str(getattr(setting, "name", setting)).upper()  # FSDP1's sharding strategies
    if name == "NO_SHARD":
        raise ConfigError("the accelerate config asks FSDP for NO_SHARD, which is data parallel: launch without FSDP")
    return name not in ("SHARD_GRAD_OP", "_HYBRID_SHARD_ZERO2")


def resolve_sharding(requested: Sharding, accelerator, precision: Precision) -> bool:
    """Whether to shard: the recipe's choice and the launch's accelerate config must agree."""
    for kind in ("DEEPSPEED", "MEGATRON_LM"):
        if launch_asks_for(accelerator, kind):
            raise ConfigError(
                f"radd train shards with FSDP, not {kind}: launch with an accelerate config that uses FSDP "
                "(distributed_type: FSDP), or plainly with training.sharding = 'fsdp'"
            )
    launch_fsdp = launch_asks_for(accelerator, "FSDP")
    if requested == Sharding.none and launch_fsdp:
        raise ConfigError(
            "the launch's accelerate config asks for FSDP but training.sharding = 'none'; set it to 'auto' or "
            "'fsdp', or launch without the FSDP config"
        )
    sharded = requested == Sharding.fsdp or (requested == Sharding.auto and launch_fsdp)
    if sharded and precision == Precision.fp16:
        raise ConfigError("sharded training runs in bf16 or fp32, not fp16: set training.mixed_precision = 'bf16'")
    return sharded


