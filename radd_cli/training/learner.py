"""One optimizer step of RADD training, the code `radd train` runs and `radd bench train` times.

A `Learner` owns the network, the optimizer, the learning-rate schedule and the weight EMA, all set up
through the runtime (DDP, loss scaling, mixed precision). `step(blocks)` takes the global batch of one
step, gives each process its share in micro-batches (gradient accumulation), and applies the
objective, backward, clipping, the optimizer and the EMA. Every step's randomness (masking draws,
dropout) is seeded from (seed, step, process), so a resumed run reaches the same state.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from radd_cli.core.losses import LOSSES
from radd_cli.core.masking import seed_for
from radd_cli.core.model import RADD, ModelConfig
from radd_cli.core.scoring import unwrap
from radd_cli.device import Precision, available_memory
from radd_cli.errors import ConfigError, setting
from radd_cli.io import finetune
from radd_cli.io.pretrained import WEIGHTS_FILE, safetensors_shapes
from radd_cli.training import lora as lora_lib
from radd_cli.training.memory import Layout, MemoryEstimate, gigabytes, training_memory
from radd_cli.training.optim import build_optimizer, build_scheduler, trained_parameters
from radd_cli.training.recipe import Recipe
from radd_cli.training.runtime import Runtime


@dataclass
class TrainState:
    step: int = 0  # batches processed, skipped ones included
    blocks_seen: int = 0  # the data position: blocks consumed from the BlockOrder
    optimizer_steps: int = 0
    skipped_nonfinite: int = 0
    nonfinite_in_a_row: int = 0

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


class EMA:
    """Exponential moving average of the parameters that train (all, or LoRA's adapters), in the published format
    (docs/model-files.md).

    Of a sharded model it keeps the average of this process's shards (`per_process`): the update is
    elementwise, so no process needs the rest until the weights are exported or evaluated.
    """

    def __init__(self, model: torch.nn.Module, decay: float, *, per_process: bool = False):
        self.decay, self.num_updates, self.per_process = decay, 0, per_process
        self.shadow_params = [p.detach().float().clone() for p in trained_parameters(model)]

    @torch.no_grad()
    def update(self, parameters) -> None:
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))  # short warm-up
        torch._foreach_lerp_(self.shadow_params, [p.detach().float() for p in parameters], 1 - decay)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module, gather=lambda shadow: shadow) -> None:
        """Copy the averages into `model`'s full parameters that train (`gather` makes a shard whole)."""
        for shadow, parameter in zip(self.shadow_params, trained_parameters(model)):
            parameter.copy_(gather(shadow))

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow_params": self.shadow_params}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.num_updates = state["decay"], state["num_updates"]
        for shadow, saved in zip(self.shadow_params, state["shadow_params"]):
            shadow.copy_(saved)


@dataclass
class StepResult:
    loss: float  # mean objective over the global batch, nats per sequence
    applied: bool  # False when the loss or gradient was not finite and the update was skipped


class Learner:
    """The network, optimizer, schedule and EMA of a run, and its optimizer step."""

    def __init__(self, recipe: Recipe, runtime: Runtime, vocab_size: int):
        training = recipe.training
        self.recipe, self.runtime, self.training = recipe, runtime, training
        self.micro_batch = micro_batch_size(training, runtime.world_size)
        self.schedule = recipe.noise.schedule()
        self.objective = LOSSES[training.loss_type]
        config = ModelConfig.of(recipe.model, vocab_size)
        lora = training.lora
        trained = lora_lib.trained_parameter_count(config, lora) if lora.enabled else None
        self.memory_estimate = training_memory(config, self.micro_batch, layout(training, runtime), trained=trained)
        check_fits(self.memory_estimate, available_memory(runtime.device), self.micro_batch)
        torch.manual_seed(training.seed)
        model = RADD(config).to(runtime.device)
        model.activation_checkpointing = training.activation_checkpointing
        self.eval_model = RADD(config).to(runtime.device).eval()  # holds the (gathered) EMA weights for evaluation
        self.started_from = self._add_adapters(model) if lora.enabled else None
        model = runtime.shard(model, model.blocks)  # the optimizer and EMA follow its shards when sharded
        self.ema = EMA(model, training.ema, per_process=runtime.sharded)
        self.state = TrainState()
        optimizer = build_optimizer(model, training, runtime.device)
        # Stepped here once per optimizer step: accelerate's wrapper would step it once per process
        # (it assumes per-process batches, and batch_size is global).
        self.scheduler = build_scheduler(optimizer, training)
        if training.compile:
            model = torch.compile(model)
        self.model, self.optimizer = runtime.prepare(model, optimizer)
        if lora.enabled:
            runtime.checkpoint_trained_only(self.model)  # the base is read again on resume, not saved
        runtime.register_for_checkpointing(self.state, self.ema, self.scheduler)

    def _add_adapters(self, model: RADD) -> str | None:
        """LoRA: the base weights (training.init_from, read at every start, resumes included, or the seeded
        initialisation), then adapters on the network and on its evaluation copy. Returns what was read."""
        source = finetune.load_into(model, self.training.init_from) if self.training.init_from else None
        self.eval_model.load_state_dict(model.state_dict())
        lora_lib.add_adapters(model, self.training.lora)
        lora_lib.add_adapters(self.eval_model, self.training.lora)
        return source

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def step(self, blocks: np.ndarray, given: np.ndarray | None = None) -> StepResult:
        """One optimizer step over the global batch `blocks` (batch_size, L) of token ids.

        `given` (batch_size, L) bool marks prompt positions: never masked, never scored (fine-tuning).
        """
        rt, state, training = self.runtime, self.state, self.training
        torch.manual_seed(seed_for(training.seed, state.step, rt.rank, 1))  # dropout
        self.model.train()
        total = torch.zeros((), dtype=torch.float64, device=rt.device)
        for micro in range(training.accumulation):
            first = (micro * rt.world_size + rt.rank) * self.micro_batch
            x0 = torch.as_tensor(np.asarray(blocks[first : first + self.micro_batch]).astype(np.int64)).to(rt.device)
            generator = torch.Generator(rt.device).manual_seed(seed_for(training.seed, state.step, rt.rank, micro, 2))
            condition = {}  # plain text calls the objective exactly as before
            if given is not None:
                condition["given"] = torch.as_tensor(given[first : first + self.micro_batch]).to(rt.device)
            with rt.no_sync(self.model, sync=micro == training.accumulation - 1):
                with rt.training_autocast():  # prepare() added autocast to an unsharded model
                    loss = self.objective(self.model, x0, self.schedule, generator=generator, **condition).mean()
                rt.backward(loss / training.accumulation)
            total += loss.detach() / training.accumulation
        finite = bool(torch.isfinite(total))
        if training.grad_clip > 0:
            norm = rt.clip_grad_norm(self.model.parameters(), training.grad_clip)
            finite = finite and bool(torch.isfinite(norm))
        finite = not rt.any(not finite)  # every process takes the same decision
        if finite or rt.precision == Precision.fp16:  # the loss scaler must see every step to keep its state
            finite = rt.optimizer_step(self.optimizer)
        if finite:
            self.scheduler.step()
            self.ema.update(trained_parameters(self.model))
            state.optimizer_steps += 1
            state.nonfinite_in_a_row = 0
        else:
            state.skipped_nonfinite += 1
            state.nonfinite_in_a_row += 1
        self.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.blocks_seen += training.batch_size
        return StepResult(float(rt.sum(total[None]).item() / rt.world_size), finite)

    @torch.no_grad()
    def start_from(self, source: str) -> str:
        """Fine-tuning: the network and its EMA start from `source`'s weights; optimizer and schedule stay fresh."""
        read = finetune.load_into(unwrap(self.model), source)
        for shadow, parameter in zip(self.ema.shadow_params, trained_parameters(self.model)):
            shadow.copy_(parameter.detach().float())
        return read

    def check_weights(self, checkpoint: Path) -> None:
        """Refuse a checkpoint whose network has other shapes than this run's (it had another recipe).

        A checkpoint whose weights cannot be read at all is not refused here: loading it fails and the
        trainer falls back to an older one.
        """
        shapes = self.runtime.saved_shapes(str(checkpoint)) or safetensors_shapes(checkpoint / WEIGHTS_FILE)
        if shapes is None:
            return
        model = unwrap(self.model)
        frozen = {name for name, parameter in model.named_parameters() if not parameter.requires_grad}  # LoRA's base
        expected = {key: tuple(value.shape) for key, value in model.state_dict().items() if key not in frozen}
        differ = [
            f"{key} {shapes.get(key)} vs {expected.get(key)}"
            for key in sorted(set(expected) | set(shapes))
            if shapes.get(key) != expected.get(key)
        ]
        if differ:
            raise ConfigError(
                f"{checkpoint} holds a network of another shape ({', '.join(differ[:2])}); it was trained with a "
                f"different recipe: give another {setting('run_dir')} to start a new run, or pass {setting('restart')} "
                "to train this one again"
            )

    def ema_model(self) -> RADD:
        """The evaluation copy of the network, holding the current EMA weights. Every process must call this
        (a sharded EMA is gathered)."""
        self.ema.copy_to(self.eval_model, self.runtime.full)
        return self.eval_model


def micro_batch_size(training, processes: int) -> int:
    """Sequences per process and micro-batch: the global batch over accumulation steps and processes."""
    if training.batch_size % (training.accumulation * processes):
        raise ConfigError(
            f"training.batch_size ({training.batch_size}) must be a multiple of training.accumulation × "
            f"processes ({training.accumulation} × {processes})"
        )
    return training.batch_size // (training.accumulation * processes)


def layout(training, runtime: Runtime) -> Layout:
    """How this run lays out its memory: processes, sharding, precision, activation checkpointing."""
    return Layout(runtime.world_size, runtime.sharded, runtime.precision, training.activation_checkpointing)


def check_fits(estimate: MemoryEstimate, available: int | None, micro_batch: int) -> None:
    """Refuse a run whose estimated memory is more than the device has free, before allocating any of it."""
    if available is not None and estimate.total > available:
        raise ConfigError(
            f"training needs about {gigabytes(estimate.total)} per process ({gigabytes(estimate.activations)} of "
            f"it for micro-batches of {micro_batch} sequences), but {gigabytes(available)} is free; lower "
            "training.batch_size, raise training.accumulation, set training.activation_checkpointing = true, or "
            "shard over more processes (training.sharding = 'fsdp'); `radd train --dry-run` shows the estimate"
        )
