"""The training loop over an explicit TrainState (SPEC §4, §7).

Every step's randomness (masking draws, dropout) is seeded from (seed, step, process), and the data
order from (seed, blocks consumed), so a resumed run reaches the same state as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from radd_cli import data as data_lib
from radd_cli.checkpoint import RunFolder
from radd_cli.errors import ConfigError, TrainingError
from radd_cli.losses import LOSSES
from radd_cli.masking import seed_for
from radd_cli.model import RADD, ModelConfig
from radd_cli.recipe import Recipe
from radd_cli.run_log import RunLogger
from radd_cli.runtime import Runtime, build_runtime, require_data_parallel
from radd_cli.sampling import sample
from radd_cli.schedule import schedule_from_config
from radd_cli.tokenizer import Tokenizer, load_tokenizer, train_tokenizer


class TrainingInterrupted(TrainingError):
    """SIGINT/SIGTERM: the run saved a checkpoint and stopped; the same command resumes it."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


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
    """Exponential moving average of the parameters, in the published format (SPEC §8)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay, self.num_updates = decay, 0
        self.names = [name for name, _ in model.named_parameters()]
        self.shadow_params = [p.detach().float().clone() for p in model.parameters()]

    @torch.no_grad()
    def update(self, parameters) -> None:
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))  # short warm-up
        torch._foreach_lerp_(self.shadow_params, [p.detach().float() for p in parameters], 1 - decay)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        for shadow, parameter in zip(self.shadow_params, model.parameters()):
            parameter.copy_(shadow)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow_params": self.shadow_params}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.num_updates = state["decay"], state["num_updates"]
        for shadow, saved in zip(self.shadow_params, state["shadow_params"]):
            shadow.copy_(saved)


@dataclass
class TrainResult:
    run_dir: Path
    final_dir: Path
    steps: int
    valid_loss: float | None  # nats per token, λ-DCE bound on the validation blocks, EMA weights
    tokens_per_second: float
    seconds: float
    skipped_nonfinite: int
    samples: list[str] = field(default_factory=list)


def learning_rate_factor(training, step: int) -> float:
    """Linear warm-up to lr, then constant, cosine or linear decay to min_lr_ratio·lr at the last step."""
    if training.warmup_steps and step < training.warmup_steps:
        return (step + 1) / training.warmup_steps
    if training.lr_schedule == "constant":
        return 1.0
    span = max(1, training.steps - training.warmup_steps)
    progress = min(1.0, (step - training.warmup_steps) / span)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if training.lr_schedule == "cosine" else 1 - progress
    return training.min_lr_ratio + (1 - training.min_lr_ratio) * shape


def prepare_tokenizer(recipe: Recipe, folder: RunFolder, runtime: Runtime) -> Tokenizer:
    """The recipe's tokenizer; `train` trains a BPE on the training data once per run folder.

    A tokenizer left by an earlier start of the run is reused only if it was trained for the same
    data and vocabulary size (a run with checkpoints cannot change those anyway).
    """
    if recipe.tokenizer.name != "train":
        return load_tokenizer(recipe.tokenizer.name)
    made_for = {
        "train": recipe.data.train,
        "train_split": recipe.data.train_split,
        "vocab_size": recipe.tokenizer.vocab_size,
    }
    stamp = folder.tokenizer / "trained_for.json"
    if runtime.is_main and not (stamp.is_file() and json.loads(stamp.read_text()) == made_for):
        documents = data_lib.load_documents(recipe.data.train, recipe.data.train_split)
        if "text" not in documents.column_names:
            raise ConfigError("tokenizer.name = 'train' needs text documents, not pre-tokenized input_ids")
        tokenizer = train_tokenizer((row["text"] for row in documents), recipe.tokenizer.vocab_size)
        tokenizer.save(folder.tokenizer)
        stamp.write_text(json.dumps(made_for) + "\n")
    runtime.barrier()
    return load_tokenizer(str(folder.tokenizer))


def prepare_data(recipe: Recipe, tokenizer: Tokenizer, runtime: Runtime) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation blocks; the main process tokenizes into the cache, the others read it."""
    data, length = recipe.data, recipe.model.length
    loaded = {}
    for turn in ("main", "others"):
        if (turn == "main") == runtime.is_main:
            loaded["train"] = data_lib.load_blocks(data.train, data.train_split, tokenizer, length, data.cache_dir)
            loaded["valid"] = data_lib.load_blocks(data.valid, data.valid_split, tokenizer, length, data.cache_dir)
        runtime.barrier()
    return loaded["train"], loaded["valid"]


def build_model(recipe: Recipe, vocab_size: int) -> RADD:
    section = recipe.model
    return RADD(
        ModelConfig(
            vocab_size=vocab_size,
            length=section.length,
            hidden_size=section.hidden_size,
            n_heads=section.n_heads,
            n_blocks=section.n_blocks,
            dropout=section.dropout,
            attention=section.attention,
        )
    )


def build_optimizer(model: torch.nn.Module, training, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        model.parameters(),
        lr=training.lr,
        betas=(training.beta1, training.beta2),
        eps=training.adam_eps,
        weight_decay=training.weight_decay,
        fused=device.type == "cuda",
    )


class StopSignals:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class Trainer:
    """Owns the objects of one run; `run()` trains to recipe.training.steps and exports final/."""

    def __init__(
        self,
        recipe: Recipe,
        run_dir: str | Path,
        *,
        show_progress: bool = True,
        on_step: Callable[[TrainState, np.ndarray], None] | None = None,
    ):
        self.recipe, self.folder, self.on_step = recipe, RunFolder(run_dir), on_step
        training = recipe.training
        self.runtime = build_runtime(
            training.mixed_precision, trackers=recipe.logging.trackers, project_dir=str(self.folder.path)
        )
        rt = self.runtime
        require_data_parallel(rt)
        if training.batch_size % (training.accumulation * rt.world_size):
            raise ConfigError(
                f"training.batch_size ({training.batch_size}) must be a multiple of training.accumulation × "
                f"processes ({training.accumulation} × {rt.world_size})"
            )
        self.micro_batch = training.batch_size // (training.accumulation * rt.world_size)
        if rt.is_main:
            self.folder.check_recipe(recipe)
            self.folder.remove_partial_saves()
            self.folder.write_recipe(recipe)
        rt.barrier()
        self.tokenizer = prepare_tokenizer(recipe, self.folder, rt)
        self.train_blocks, self.valid_blocks = prepare_data(recipe, self.tokenizer, rt)
        self.order = data_lib.BlockOrder(len(self.train_blocks), training.seed)
        self.schedule = schedule_from_config(recipe.noise.schedule_config())
        torch.manual_seed(training.seed)
        model = build_model(recipe, self.tokenizer.vocab_size).to(rt.device)
        self.eval_model = build_model(recipe, self.tokenizer.vocab_size).to(rt.device).eval()
        self.ema = EMA(model, training.ema)
        self.state = TrainState()
        optimizer = build_optimizer(model, training, rt.device)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(training, step))
        if training.compile:
            model = torch.compile(model)
        # The scheduler is stepped here once per optimizer step; accelerate's wrapper would step it once
        # per process (it assumes per-process batches, and batch_size here is global).
        self.model, self.optimizer = rt.accelerator.prepare(model, optimizer)
        self.scheduler = scheduler
        rt.accelerator.register_for_checkpointing(self.state, self.ema, self.scheduler)
        self.logger = RunLogger(self.folder, rt, recipe, show_progress=show_progress)

    def resume(self) -> bool:
        latest = self.folder.latest_checkpoint()
        if latest is None:
            return False
        self.runtime.accelerator.load_state(str(latest))
        self.logger.line(f"resumed from {latest} (step {self.state.step})")
        return True

    def run(self) -> TrainResult:
        """Train to recipe.training.steps, validating, sampling and checkpointing on the way."""
        recipe, rt, state = self.recipe, self.runtime, self.state
        self.resume()
        tokens_per_step = recipe.training.batch_size * recipe.model.length
        started, first_step = time.perf_counter(), state.step
        with StopSignals() as signals, self.logger.progress(state.step, recipe.training.steps) as progress:
            while state.step < recipe.training.steps:
                loss = self.step()
                elapsed = time.perf_counter() - started
                speed = (state.step - first_step) * tokens_per_step / max(elapsed, 1e-9)
                self.logger.after_step(state, loss / recipe.model.length, speed, self.scheduler.get_last_lr()[0])
                progress(state.step, loss / recipe.model.length, speed)
                if rt.any(signals.received is not None):
                    self.save()
                    self._interrupted(signals.received or signal.SIGTERM)
                self._periodic(state.step)
        seconds = time.perf_counter() - started
        valid_loss = self.validate()
        self.save()
        samples = self.snapshot(state.step) if rt.is_main else []
        final = self.export()
        speed = (state.step - first_step) * tokens_per_step / max(seconds, 1e-9)
        self.logger.finish(state, valid_loss, speed, seconds, final)
        return TrainResult(
            self.folder.path, final, state.step, valid_loss, speed, seconds, state.skipped_nonfinite, samples
        )

    def _periodic(self, step: int) -> None:
        recipe = self.recipe
        if step >= recipe.training.steps:
            return
        if recipe.evaluation.every and step % recipe.evaluation.every == 0:
            self.logger.metrics(step, {"valid/nats_per_token": self.validate()})
        if recipe.sampling.every and step % recipe.sampling.every == 0 and self.runtime.is_main:
            self.snapshot(step)
        if step % recipe.checkpoint.every == 0:
            self.save()

    def _interrupted(self, signum: int) -> None:
        name = signal.Signals(signum).name
        raise TrainingInterrupted(
            f"stopped by {name} after step {self.state.step}; the checkpoint is saved in "
            f"{self.folder.checkpoints}; run the same command to resume",
            signum,
        )

    def batch_indices(self) -> np.ndarray:
        """The global batch of this step: blocks [blocks_seen, blocks_seen + batch_size) of the order."""
        return self.order.indices(self.state.blocks_seen, self.recipe.training.batch_size)

    def step(self) -> float:
        """One optimizer step over the global batch (gradient accumulation inside); returns nats/sequence."""
        recipe, rt, state = self.recipe, self.runtime, self.state
        training = recipe.training
        indices = self.batch_indices()
        if self.on_step is not None:
            self.on_step(state, indices)
        torch.manual_seed(seed_for(training.seed, state.step, rt.rank, 1))  # dropout
        self.model.train()
        total = torch.zeros((), dtype=torch.float64, device=rt.device)
        for micro in range(training.accumulation):
            first = (micro * rt.world_size + rt.rank) * self.micro_batch
            x0 = torch.from_numpy(self.train_blocks[indices[first : first + self.micro_batch]].astype(np.int64))
            generator = torch.Generator(rt.device).manual_seed(seed_for(training.seed, state.step, rt.rank, micro, 2))
            sync = (
                contextlib.nullcontext() if micro == training.accumulation - 1 else rt.accelerator.no_sync(self.model)
            )
            with sync:
                loss = LOSSES[training.loss_type](
                    self.model, x0.to(rt.device), self.schedule, generator=generator
                ).mean()
                rt.accelerator.backward(loss / training.accumulation)
            total += loss.detach() / training.accumulation
        finite = bool(torch.isfinite(total))
        if training.grad_clip > 0:
            norm = rt.accelerator.clip_grad_norm_(self.model.parameters(), training.grad_clip)
            finite = finite and bool(torch.isfinite(norm))
        finite = not rt.any(not finite)  # every process takes the same decision
        if rt.precision == "fp16":
            # The loss scaler checks the gradients itself: it skips the update (and lowers the scale)
            # on overflow, and must see every step to keep its state consistent.
            self.optimizer.step()
            finite = not self.optimizer.step_was_skipped
        elif finite:
            self.optimizer.step()
        if finite:
            self.scheduler.step()
            self.ema.update(self.model.parameters())
            state.optimizer_steps += 1
            state.nonfinite_in_a_row = 0
        else:
            self._skip(total)
        self.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.blocks_seen += training.batch_size
        return float(rt.sum(total[None]).item() / rt.world_size)

    def _skip(self, total: torch.Tensor) -> None:
        state = self.state
        state.skipped_nonfinite += 1
        state.nonfinite_in_a_row += 1
        self.logger.line(f"step {state.step}: non-finite loss or gradient ({float(total)}); step skipped")
        if state.nonfinite_in_a_row >= self.recipe.training.max_nonfinite:
            raise TrainingError(
                f"{state.nonfinite_in_a_row} non-finite losses in a row at step {state.step}; stopped without "
                f"saving, the last good checkpoint in {self.folder.checkpoints} is intact (lower training.lr, "
                "or try training.mixed_precision = 'no')"
            )

    @torch.no_grad()
    def validate(self) -> float:
        """λ-DCE bound (nats/token) of the EMA weights on the first validation blocks, fixed draws."""
        recipe, rt = self.recipe, self.runtime
        section = recipe.evaluation
        count = min(len(self.valid_blocks), section.batches * section.batch_size)
        self.ema.copy_to(self.eval_model)
        totals = torch.zeros(2, dtype=torch.float64)
        for start in range(rt.rank * section.batch_size, count, rt.world_size * section.batch_size):
            x0 = torch.from_numpy(self.valid_blocks[start : min(start + section.batch_size, count)].astype(np.int64))
            generator = torch.Generator(rt.device).manual_seed(seed_for(recipe.training.seed, start, 3))
            with rt.autocast():
                nats = LOSSES[section.loss_type](self.eval_model, x0.to(rt.device), self.schedule, generator=generator)
            totals += torch.tensor([float(nats.sum()), len(x0)], dtype=torch.float64)
        totals = rt.sum(totals).cpu()
        return float(totals[0] / totals[1] / recipe.model.length)

    def snapshot(self, step: int) -> list[str]:
        """A few samples from the EMA weights, written to samples/step_N.txt."""
        section = self.recipe.sampling
        self.ema.copy_to(self.eval_model)
        with self.runtime.autocast():
            result = sample(
                self.eval_model,
                self.schedule,
                num_samples=section.num_samples,
                length=self.recipe.model.length,
                steps=section.steps,
                method=section.method,
                seeds=list(range(section.num_samples)),
            )
        texts = [self.tokenizer.decode(row.tolist()) for row in result.tokens]
        self.logger.samples(step, texts)
        return texts

    def save(self) -> Path:
        return self.folder.save(self.runtime, self.state.step, self.recipe.checkpoint.keep_last)

    def export(self) -> Path:
        """final/: the EMA weights, tokenizer and noise schedule in radd's layout."""
        self.ema.copy_to(self.eval_model)
        if self.runtime.is_main:
            self.folder.export_final(
                lambda directory: self.eval_model.save_pretrained(
                    directory, noise=self.recipe.noise.schedule_config(), tokenizer=self.tokenizer.hf
                )
            )
        self.runtime.barrier()
        return self.folder.final
