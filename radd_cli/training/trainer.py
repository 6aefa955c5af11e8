"""The training loop: data, the run folder, logging and checkpoints around the Learner's step.

The data order comes from (seed, blocks consumed) and every step's randomness from (seed, step,
process), so a resumed run reaches the same state as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from radd_cli.core.masking import seed_for
from radd_cli.data import sources, tokens
from radd_cli.errors import CheckpointError, TrainingError, setting
from radd_cli.evaluation import cloze
from radd_cli.evaluation.cloze import ClozeReport, ShuffleReport
from radd_cli.evaluation.perplexity import evaluate_perplexity
from radd_cli.files import WRITE_ERRORS, cause, replace_folder
from radd_cli.io.pretrained import save
from radd_cli.io.tokenizer import Tokenizer, load_tokenizer, train_tokenizer
from radd_cli.sampling import generate
from radd_cli.sampling.prompting import respond
from radd_cli.training import lora as lora_lib
from radd_cli.training.learner import Learner, TrainState
from radd_cli.training.lora import LoraFinal
from radd_cli.training.recipe import Recipe
from radd_cli.training.run_folder import RunFolder
from radd_cli.training.run_log import RunLogger, check_trackers
from radd_cli.training.runtime import Runtime, build_runtime

# What loading a damaged checkpoint raises: truncated or empty files, missing ones, garbage in a pickle.
UNREADABLE = WRITE_ERRORS + (RuntimeError, EOFError, ValueError, KeyError, pickle.UnpicklingError)


class TrainingInterrupted(TrainingError):
    """SIGINT/SIGTERM: the run saved a checkpoint and stopped; the same command resumes it."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


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
    first_look: FirstLook | None = None  # plain text: the validation bound and the blanks against baselines


@dataclass
class FirstLook:
    """What a person can judge at the end of a run on plain text: held-out numbers beside baselines that
    ignore context (evaluation/cloze.py)."""

    valid_nats: float  # the bound of the EMA weights, nats per token
    unigram_nats: float  # the training tokens' frequencies on the same held-out tokens
    cloze: ClozeReport
    shuffled: ShuffleReport


def prepare_tokenizer(recipe: Recipe, folder: RunFolder, runtime: Runtime) -> Tokenizer:
    """The recipe's tokenizer; `train` trains a BPE on the training data once per run folder.

    A tokenizer left by an earlier start of the run is reused only if it was trained for the same
    data and vocabulary size (a run with checkpoints cannot change those anyway).
    """
    if recipe.tokenizer.name != "train":
        return tokens.tokenizer_for(recipe.tokenizer.name)
    made_for = {
        "train": recipe.data.train,
        "train_split": recipe.data.train_split,
        "vocab_size": recipe.tokenizer.vocab_size,
    }

    def train_once() -> None:
        stamp = folder.tokenizer / "trained_for.json"
        if stamp.is_file() and json.loads(stamp.read_text()) == made_for:
            return
        texts = sources.source(recipe.data.train).texts(recipe.data.train_split)
        tokenizer = train_tokenizer(texts, recipe.tokenizer.vocab_size)

        def write(directory: Path) -> None:
            tokenizer.save(directory)
            (directory / "trained_for.json").write_text(json.dumps(made_for) + "\n")

        replace_folder(folder.tokenizer, write)

    runtime.main_first(train_once, others=False)
    return load_tokenizer(str(folder.tokenizer))


def prepare_data(recipe: Recipe, tokenizer: Tokenizer, runtime: Runtime):
    """(blocks, given) for training and for validation; `given` marks prompts (None for plain text).
    The main process tokenizes into the cache, the others read it."""
    data, length = recipe.data, recipe.model.length
    return runtime.main_first(
        lambda: tuple(
            tokens.load_blocks(source, split, tokenizer, length, data.cache_dir, data.packing)
            for source, split in ((data.train, data.train_split), (data.valid, data.valid_split))
        )
    )


def base_name(init_from: str) -> str:
    """How an adapter folder names its base: a local folder by its absolute path, a Hub id as it is."""
    path = Path(init_from).expanduser()
    return str(path.resolve()) if path.exists() else init_from


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
        restart: bool = False,
        show_progress: bool = True,
        on_step: Callable[[TrainState, np.ndarray], None] | None = None,
    ):
        """Set the run up: claim and lock the folder, check it may be continued with `recipe` (or, with
        `restart`, move its old files aside), then tokenizer, data and Learner. Nothing of the run's own
        metadata is written before the run starts."""
        check_trackers(recipe.logging.trackers)
        self.recipe, self.folder, self.on_step = recipe, RunFolder(run_dir), on_step
        training = recipe.training
        self.runtime = rt = build_runtime(
            training.mixed_precision,
            trackers=recipe.logging.trackers,
            project_dir=str(self.folder.path),
            sharding=training.sharding,
        )
        try:
            rt.main_first(lambda: (self.folder.claim(), self.folder.lock()), others=False)
            rt.main_first(lambda: (self.folder.tidy(), self.folder.check_continuation(recipe, restart)), others=False)
            self.tokenizer = prepare_tokenizer(recipe, self.folder, rt)
            self.learner = Learner(recipe, rt, self.tokenizer.vocab_size)  # refuses what cannot fit in memory
            # fine-tuning: the model the weights came from (a resumed run has its own; LoRA's base is read always)
            self.started_from = self.learner.started_from
            if training.init_from and not training.lora.enabled and not self.folder.complete_checkpoints():
                self.started_from = self.learner.start_from(training.init_from)
            (self.train_blocks, self.train_given), (self.valid_blocks, self.valid_given) = prepare_data(
                recipe, self.tokenizer, rt
            )
            self.order = tokens.BlockOrder(len(self.train_blocks), training.seed)
            self.logger = RunLogger(self.folder, rt, recipe, show_progress=show_progress)
        except BaseException:
            if rt.is_main:
                self.folder.abandon()  # a failed start in a folder it made leaves nothing behind
            self.folder.unlock()
            raise

    @property
    def state(self) -> TrainState:
        return self.learner.state

    def resume(self) -> bool:
        """Continue from the newest checkpoint that loads; unreadable ones are kept aside, never deleted."""
        found = self.folder.complete_checkpoints()
        for _, checkpoint in reversed(found):
            problem = self._load(checkpoint)
            if not self.runtime.any(problem is not None):
                self.logger.line(f"resumed from {checkpoint} (step {self.state.step})")
                return True
            if self.runtime.is_main:
                aside = self.folder.set_aside(checkpoint, problem or "unreadable on another process")
                self.logger.line(f"skipped {checkpoint.name}, which does not load ({problem}); kept as {aside.name}")
            self.runtime.barrier()
        if found:
            raise CheckpointError(
                f"no checkpoint in {self.folder.checkpoints} loads (they are kept as unreadable-step_N); "
                f"pass {setting('restart')} to train again from scratch"
            )
        return False

    def _load(self, checkpoint: Path) -> str | None:
        """Load a checkpoint into the run; what went wrong when it does not load, or None. Any damaged
        file (its recipe record, random states, optimizer, ...) makes it unreadable; another run's is refused."""
        try:
            self.folder.check_checkpoint_recipe(checkpoint, self.recipe)
        except CheckpointError as error:
            return str(error)
        self.learner.check_weights(checkpoint)
        try:
            self.runtime.load_state(str(checkpoint))
        except UNREADABLE as error:
            return cause(error)
        return None

    def run(self) -> TrainResult:
        """Train to recipe.training.steps, validating, sampling and checkpointing on the way."""
        try:
            return self._run()
        finally:
            self.folder.unlock()

    def _run(self) -> TrainResult:
        recipe, rt, state = self.recipe, self.runtime, self.state
        lora = recipe.training.lora
        if not self.resume() and (self.started_from or lora.enabled):
            adapters = f" with LoRA adapters of rank {lora.rank}" if lora.enabled else ""
            self.logger.line(f"fine-tuning {self.started_from or 'the initialised network'}{adapters}")
        if rt.is_main:  # the run is set up: now its metadata may be written
            self.folder.write_recipe(recipe)
            self.folder.keep_metrics_up_to(state.step)
        tokens_per_step = recipe.training.batch_size * recipe.model.length
        started, first_step = time.perf_counter(), state.step
        with StopSignals() as signals, self.logger.progress(state.step, recipe.training.steps) as progress:
            while state.step < recipe.training.steps:
                loss = self.step()
                elapsed = time.perf_counter() - started
                speed = (state.step - first_step) * tokens_per_step / max(elapsed, 1e-9)
                self.logger.after_step(state, loss / recipe.model.length, speed, self.learner.lr)
                progress(state.step, loss / recipe.model.length, speed)
                if rt.any(signals.received is not None):
                    self.save()
                    self._interrupted(signals.received or signal.SIGTERM)
                self._periodic(state.step)
        seconds = time.perf_counter() - started
        valid_loss = self.validate()
        self.save()
        samples = self.snapshot(state.step)
        final = self.export()
        speed = (state.step - first_step) * tokens_per_step / max(seconds, 1e-9)
        self.logger.finish(state, valid_loss, speed, seconds, final)
        look = self.first_look(valid_loss) if self.valid_given is None else None
        return TrainResult(
            self.folder.path, final, state.step, valid_loss, speed, seconds, state.skipped_nonfinite, samples, look
        )

    def _periodic(self, step: int) -> None:
        recipe = self.recipe
        if step >= recipe.training.steps:
            return
        if recipe.evaluation.every and step % recipe.evaluation.every == 0:
            self.logger.metrics(step, {"valid/nats_per_token": self.validate()})
        if recipe.sampling.every and step % recipe.sampling.every == 0:
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
        """One optimizer step over the next global batch; returns its mean loss in nats per sequence."""
        indices = self.batch_indices()
        if self.on_step is not None:
            self.on_step(self.state, indices)
        given = None if self.train_given is None else self.train_given[indices]
        result = self.learner.step(self.train_blocks[indices], given)
        if not result.applied:
            self._skipped(result.loss)
        return result.loss

    def _skipped(self, loss: float) -> None:
        state = self.state
        self.logger.line(f"step {state.step - 1}: non-finite loss or gradient ({loss}); step skipped")
        if state.nonfinite_in_a_row >= self.recipe.training.max_nonfinite:
            latest = self.folder.latest_checkpoint()
            kept = f"the last good checkpoint, {latest}, is intact" if latest else "no checkpoint had been saved yet"
            raise TrainingError(
                f"{state.nonfinite_in_a_row} non-finite losses in a row at step {state.step - 1}; stopped without "
                f"saving ({kept}); lower training.lr, or try training.mixed_precision = 'fp32'"
            )

    @torch.no_grad()
    def validate(self) -> float:
        """The evaluation objective's bound (nats/token) of the EMA weights on the first validation blocks, by the
        estimator `radd eval` uses (one draw per block, the blocks shared out over the processes)."""
        section, rt = self.recipe.evaluation, self.runtime
        count = min(len(self.valid_blocks), section.batches * section.batch_size)
        report = evaluate_perplexity(
            self.learner.ema_model(),
            self.learner.schedule,
            self.valid_blocks[:count],
            given=None if self.valid_given is None else self.valid_given[:count],
            loss=section.loss_type,
            mc_samples=1 if count > 1 else 2,  # a single block needs two draws for an error bar
            batch_size=section.batch_size,
            seed=seed_for(self.recipe.training.seed, 3),
            device=rt.device,
            precision=rt.precision,
            rank=rt.rank,
            world_size=rt.world_size,
            all_reduce=rt.sum if rt.world_size > 1 else None,
        )
        return report.nll_per_token

    def snapshot(self, step: int) -> list[str]:
        """A few samples from the EMA weights, written to samples/step_N.txt by the main process (every process
        takes part in gathering the weights); for prompt/response rows (one per block), the answers to the first
        validation prompts."""
        section, length = self.recipe.sampling, self.recipe.model.length
        model, schedule = self.learner.ema_model(), self.learner.schedule
        if not self.runtime.is_main:
            return []
        precision = self.runtime.precision  # samples in the precision the run trains in
        if self.valid_given is not None and self.recipe.data.packing == tokens.Packing.pad:
            rows = zip(self.valid_blocks[: section.num_samples], self.valid_given)
            ids = [block[: int(given.sum())].tolist() for block, given in rows]
            prompts = [self.tokenizer.decode(prompt) for prompt in ids]
            config = section.config()
            answers = respond(
                model, schedule, self.tokenizer, config, prompts, prompt_ids=ids, length=length, precision=precision
            )
            texts = [answer.prompt + answer.text for answer in answers]
        else:
            count = section.num_samples
            result = generate(
                model, schedule, section.config(), num_samples=count, length=length, seeds=range(count),
                precision=precision,
            )
            texts = [self.tokenizer.decode(row.tolist()) for row in result.tokens]
        self.logger.samples(step, texts)
        return texts

    def first_look(self, valid_nats: float, blocks: int = 64) -> FirstLook | None:
        """The held-out numbers of the end of a run (plain text): the validation bound beside the unigram
        baseline, and `blocks` held-out blocks with blanks filled (every process takes part; main returns)."""
        model = self.learner.ema_model()
        if not self.runtime.is_main:
            return None
        sample = self.train_blocks[: max(1, (1 << 20) // self.recipe.model.length)]  # enough for the frequencies
        counts = cloze.token_counts(sample, self.tokenizer.vocab_size)
        held_out = self.valid_blocks[:blocks]
        seed, device = self.recipe.training.seed, self.runtime.device
        with self.runtime.autocast():
            report = cloze.cloze(model, held_out, counts, seed=seed, device=device)
            shuffled = cloze.real_or_shuffled(model, held_out, seed=seed, device=device)
        section = self.recipe.evaluation  # the blocks the bound was computed on
        scored = self.valid_blocks[: section.batches * section.batch_size]
        look = FirstLook(valid_nats, cloze.unigram_nats(counts, scored), report, shuffled)
        self.logger.line(
            f"held-out text: the real passage preferred to its tokens shuffled in {shuffled.preferred} of "
            f"{shuffled.passages}; {report.accuracy:.1%} of {report.blanks} blanks filled exactly against "
            f"{report.baseline_accuracy:.1%} for the most frequent token; bound {valid_nats:.3f} nats/token against "
            f"{look.unigram_nats:.3f} for the training tokens' frequencies",
            console=False,
        )
        return look

    def save(self) -> Path:
        return self.folder.save(self.runtime, self.state.step, self.recipe.checkpoint.keep_last, self.recipe)

    def export(self) -> Path:
        """final/: the EMA weights, tokenizer and noise schedule in radd's layout; a LoRA run's adapters merged
        in, or (training.lora.final = "adapter") the adapters alone, as peft writes them."""
        model = self.learner.ema_model()
        if self.runtime.is_main:
            self.folder.export_final(lambda directory: self._write_final(model, directory))
        self.runtime.barrier()
        return self.folder.final

    def _write_final(self, model, directory: Path) -> None:
        lora = self.recipe.training.lora
        if lora.enabled and lora.final == LoraFinal.adapter:
            lora_lib.write_adapter(model, directory, lora, base=base_name(self.recipe.training.init_from))
            return
        plain = lora_lib.merged_model(model, lora) if lora.enabled else model
        save(plain, directory, noise=self.learner.schedule.to_config(), tokenizer=self.tokenizer.hf)
