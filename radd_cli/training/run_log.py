"""What a training run reports: a rich progress bar, train.log, metrics.jsonl, sample files, and
accelerate trackers (tensorboard, wandb) when the recipe asks. Only the main process writes."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import time
from pathlib import Path

from rich.markup import escape
from rich.progress import TextColumn

from radd_cli.console import err, progress_bar
from radd_cli.errors import ConfigError
from radd_cli.files import WriteError, cause, write_text
from radd_cli.validation import Choice


class Tracker(Choice):
    """Experiment trackers that accelerate logs to (each needs its own package installed)."""

    tensorboard = "tensorboard"
    wandb = "wandb"


TRACKER_PACKAGES = {Tracker.tensorboard: ("tensorboard", "tensorboardX"), Tracker.wandb: ("wandb",)}  # any one of


def check_trackers(trackers) -> None:
    """Refuse, before any work, a tracker whose package is missing: accelerate would train on without it."""
    for tracker in trackers:
        packages = TRACKER_PACKAGES[Tracker(tracker)]
        if not any(importlib.util.find_spec(package) for package in packages):
            raise ConfigError(
                f"logging.trackers: {tracker} is not installed (pip install {packages[0]}); install it or remove "
                f"{tracker} from logging.trackers"
            )


class RunLogger:
    def __init__(self, folder, runtime, recipe, show_progress: bool = True):
        self.folder, self.runtime, self.recipe = folder, runtime, recipe
        self.show_progress = show_progress
        self.every = recipe.logging.every
        self._window: list[float] = []
        self._trackers = bool(recipe.logging.trackers)
        if self._trackers:
            flat = {
                f"{section}.{key}": value
                for section, values in recipe.to_dict().items()
                if isinstance(values, dict)
                for key, value in values.items()
            }
            runtime.init_trackers(recipe.name, {k: str(v) for k, v in flat.items()})

    @property
    def active(self) -> bool:
        return self.runtime.is_main

    def line(self, text: str, console: bool = True) -> None:
        """Append to train.log; also print it (above the progress bar) unless console=False."""
        if not self.active:
            return
        append(self.folder.log_file, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
        if console:
            err.print(escape(text), highlight=False)

    def metrics(self, step: int, values: dict, console: bool = True) -> None:
        if self.active:
            append(self.folder.metrics_file, json.dumps({"step": step, **values}) + "\n")
            if self._trackers:
                self.runtime.log(values, step)
            self.line(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()), console)

    def after_step(self, state, loss_per_token: float, tokens_per_second: float, lr: float) -> None:
        self._window.append(loss_per_token)
        if state.step % self.every == 0:
            mean = sum(self._window) / len(self._window)
            self._window = []
            self.metrics(
                state.step,
                {
                    "train/nats_per_token": mean,
                    "lr": lr,
                    "tokens_per_second": tokens_per_second,
                    "skipped_nonfinite": state.skipped_nonfinite,
                },
                console=False,
            )

    def samples(self, step: int, texts: list[str]) -> None:
        separator = "\n" + "=" * 40 + "\n"
        try:
            self.folder.samples.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise WriteError(f"cannot write {self.folder.samples}: {cause(error)}") from error
        write_text(self.folder.samples / f"step_{step}.txt", separator.join(texts) + "\n")
        preview = " ".join(texts[0].split())[:160] if texts else ""
        self.line(f"step {step}: sample: {preview}")

    @contextlib.contextmanager
    def progress(self, start: int, total: int):
        """Yields update(step, nats_per_token, tokens_per_second); a live bar on the main process."""
        if not (self.active and self.show_progress):
            yield lambda *args: None
            return
        with progress_bar(TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} tok/s")) as bar:
            task = bar.add_task("train", total=total, completed=start, loss="-", speed="-")

            def update(step: int, loss: float, speed: float) -> None:
                bar.update(task, completed=step, loss=f"{loss:.3f}", speed=f"{speed:,.0f}")

            yield update

    def finish(self, state, valid_loss: float, tokens_per_second: float, seconds: float, final: Path) -> None:
        self.metrics(state.step, {"valid/nats_per_token": valid_loss})
        self.line(
            f"done: {state.step} steps in {seconds:.1f}s, {tokens_per_second:,.0f} tokens/s, "
            f"validation {valid_loss:.4f} nats/token, {state.skipped_nonfinite} skipped steps; model in {final}"
        )
        if self._trackers:
            self.runtime.end_training()


def append(path: Path, text: str) -> None:
    """Append a line to a log; a full or read-only disk is a one-line error, not a traceback."""
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as error:
        raise WriteError(f"cannot write {path}: {cause(error)}") from error
