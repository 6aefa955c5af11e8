"""The run folder of `radd train`: who owns it, its lock, its checkpoints and its final model.

    runs/<name>/
      .radd-run               marks the folder as radd's (written when radd claims an empty folder)
      .lock                   held (flock) by the process training in the folder; names it
      recipe.json             the resolved recipe, written once the run is set up
      tokenizer/              a tokenizer trained for this run (tokenizer.name = "train")
      checkpoints/step_N/     model, optimizer, scheduler, RNG states, EMA, TrainState and the recipe
      final/                  EMA weights + tokenizer in radd's layout: radd_cli.load("runs/<name>/final")
      train.log, metrics.jsonl, samples/
      replaced-<time>/        what `--restart` moved aside (never deleted by radd)

docs/guarantees.md states the promises: radd never writes into a folder it did not make (unless it is
empty), never deletes what it did not write, writes checkpoints and final/ beside their target and
renames them into place, and resumes from the newest checkpoint that loads, keeping unreadable ones aside.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

from radd_cli.errors import CheckpointError, ConfigError, RaddError, setting
from radd_cli.files import WRITE_ERRORS, WriteError, cause, recover_folder, remove, replace_folder, write_text
from radd_cli.training.recipe import Recipe

# Keys a resumed run may change: they do not alter what has been computed so far.
RESUMABLE_CHANGES = (
    "name",
    "description",
    "training.steps",
    "training.max_nonfinite",
    "training.activation_checkpointing",
    "training.lora.final",
    "evaluation.",
    "sampling.",
    "checkpoint.",
    "logging.",
)
MARKER = ".radd-run"
RECIPE = "recipe.json"
RUN_ENTRIES = ("recipe.json", "tokenizer", "checkpoints", "final", "samples", "train.log", "metrics.jsonl")


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.recipe_file = self.path / RECIPE
        self.final = self.path / "final"
        self.tokenizer = self.path / "tokenizer"
        self.samples = self.path / "samples"
        self.log_file = self.path / "train.log"
        self.metrics_file = self.path / "metrics.jsonl"
        self.lock_file = self.path / ".lock"
        self._lock = None
        self.claimed: str | None = None  # "made" or "found empty": this process made the folder a run folder

    # ownership and the lock
    def is_radd_run(self) -> bool:
        """The marker radd writes when it claims a folder, or (a run from before the marker) a recipe.json
        beside radd's checkpoints/ or final/: a recipe.json alone may be anybody's file."""
        if (self.path / MARKER).is_file():
            return True
        return self.recipe_file.is_file() and (self.checkpoints.is_dir() or (self.final / "config.json").is_file())

    def claim(self) -> None:
        """Make sure the folder is radd's: a new or empty folder becomes one; anything else is refused."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"{self.path} is a file; give a folder for the run", field="run_dir")
        if self.is_radd_run():
            return
        if self.path.is_dir() and any(self.path.iterdir()):
            raise ConfigError(
                f"{self.path} is not empty and is not a radd run folder; radd never writes into a "
                "folder it did not make: give a new or empty folder",
                field="run_dir",
            )
        existed = self.path.is_dir()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            write_text(self.path / MARKER, "a radd train run folder\n")  # whole or not at all
        except (OSError, WriteError) as error:
            if not existed:
                _remove_if_empty(self.path)
            raise WriteError(f"cannot create the run folder {self.path}: {cause(error)}") from error
        self.claimed = "found empty" if existed else "made"

    def abandon(self) -> None:
        """After a failed start in a folder this process claimed (new or empty) and still holds the lock of:
        remove what the attempt wrote there (the marker, the lock file, a tokenizer it trained), and the
        folder itself if the attempt made it. Everything in it is the attempt's own."""
        if self.claimed is None or self._lock is None:
            return
        for entry in self.path.iterdir():
            remove(entry)
        if self.claimed == "made":
            _remove_if_empty(self.path)

    def lock(self) -> None:
        """Become the folder's only writer, or fail at once naming the process that is.

        The lock is an flock on `.lock`: the operating system drops it when its process ends, however
        it ends (kill -9, power loss), so a stale `.lock` file never blocks the next run.
        """
        import fcntl

        try:
            handle = open(self.lock_file, "a+")
        except OSError as error:
            raise WriteError(f"cannot write {self.lock_file}: {cause(error)}") from error
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RaddError(
                f"{self.path} is in use by {holder}; wait for it to finish or stop it (one radd train per run folder)"
            ) from None
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        try:  # the lock is held whether or not its note fits on the disk
            handle.seek(0)
            handle.truncate()
            handle.write(f"radd train, pid {os.getpid()}, started {started}: {' '.join(sys.argv)}\n")
            handle.flush()
        except OSError:
            handle.truncate(0)
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None

    # what the folder holds
    def complete_checkpoints(self) -> list[tuple[int, Path]]:
        if not self.checkpoints.is_dir():
            return []
        found = []
        for entry in self.checkpoints.iterdir():
            match = re.fullmatch(r"step_(\d+)", entry.name)
            if match and entry.is_dir():
                found.append((int(match.group(1)), entry))
        return sorted(found)

    def latest_checkpoint(self) -> Path | None:
        found = self.complete_checkpoints()
        return found[-1][1] if found else None

    def tidy(self) -> None:
        """Remove what an interrupted save left behind (radd's own temporaries) and finish a half-done swap."""
        for entry in self.checkpoints.glob(".tmp-*") if self.checkpoints.is_dir() else []:
            remove(entry)
        recover_folder(self.final)

    def check_continuation(self, recipe: Recipe, restart: bool) -> None:
        """Refuse to continue a run with a different recipe, or to retrain a finished run silently."""
        if restart:
            self.move_aside()
            return
        if self.recipe_file.is_file():
            changed = recipe_changes(_read_recipe(self.recipe_file), recipe)
            if changed:
                raise ConfigError(
                    f"{self.path} holds a run with a different recipe ({'; '.join(changed[:4])}); give "
                    f"another {setting('run_dir')} to start a new run, pass {setting('restart')} to train this one "
                    "again from scratch, or change only training.steps and the evaluation, sampling, checkpoint and logging sections to resume"
                )
        if self.final.exists() and not self.complete_checkpoints():
            raise ConfigError(
                f"{self.path} holds a finished run (final/) and no checkpoint to continue from; pass {setting('restart')} "
                f"to train it again from scratch (its files are moved aside, not deleted), or another "
                f"{setting('run_dir')} for a new run"
            )

    def move_aside(self) -> Path | None:
        """Move this run's files into replaced-<time>/ (for --restart): nothing is deleted."""
        present = [self.path / name for name in RUN_ENTRIES if (self.path / name).exists()]
        if not present:
            return None
        aside = self.path / time.strftime("replaced-%Y%m%d-%H%M%S")
        aside.mkdir()
        for entry in present:
            os.replace(entry, aside / entry.name)
        return aside

    def write_recipe(self, recipe: Recipe) -> None:
        write_text(self.recipe_file, json.dumps(recipe.to_dict(), indent=2) + "\n")

    def check_checkpoint_recipe(self, checkpoint: Path, recipe: Recipe) -> None:
        """A checkpoint records the recipe it was trained with; resuming it with another is refused
        (ConfigError), and one whose record is damaged is unreadable (CheckpointError). Checkpoints from
        before they kept their recipe have none: their network's shapes are checked instead."""
        saved = checkpoint / RECIPE
        if not saved.is_file():
            return
        changed = recipe_changes(_read_recipe(saved), recipe)
        if changed:
            raise ConfigError(
                f"{checkpoint} was trained with a different recipe ({'; '.join(changed[:4])}); give another "
                f"{setting('run_dir')} to start a new run, or pass {setting('restart')} to train this one again from "
                "scratch"
            )

    def set_aside(self, checkpoint: Path, reason: str) -> Path:
        """Keep an unreadable checkpoint out of the way (checkpoints/unreadable-step_N), never deleting it."""
        target = checkpoint.with_name(f"unreadable-{checkpoint.name}")
        suffix = 1
        while target.exists():
            suffix += 1
            target = checkpoint.with_name(f"unreadable-{checkpoint.name}-{suffix}")
        os.replace(checkpoint, target)
        (target / "WHY.txt").write_text(f"radd could not load this checkpoint: {reason}\n")
        return target

    # writing
    def save(self, runtime, step: int, keep_last: int, recipe: Recipe) -> Path:
        """Save model, optimizer, scheduler, RNG, registered objects and the recipe (all processes take part).

        Written to checkpoints/.tmp-step_N and renamed when complete: a crash, kill -9 or full disk during
        a save leaves the previous checkpoints as they were.
        """
        temporary, final = self.checkpoints / f".tmp-step_{step}", self.checkpoints / f"step_{step}"
        failure = None
        if runtime.is_main:
            remove(temporary)
            failure = _attempt(lambda: temporary.mkdir(parents=True))
        runtime.barrier()
        failure = failure or _attempt(lambda: runtime.save_state(str(temporary)))
        written = not runtime.any(failure is not None)  # every process has finished writing its part
        if runtime.is_main and written:
            failure = _attempt(lambda: self._publish(temporary, final, recipe, keep_last))
        if runtime.any(failure is not None):
            if runtime.is_main:
                remove(temporary)
            raise WriteError(
                f"cannot save the checkpoint of step {step} in {self.checkpoints}: {failure or 'failed on another process'}; "
                "the earlier checkpoints are intact"
            )
        return final

    def _publish(self, temporary: Path, final: Path, recipe: Recipe, keep_last: int) -> None:
        (temporary / RECIPE).write_text(json.dumps(recipe.to_dict(), indent=2) + "\n")
        if final.exists():
            os.replace(final, self.checkpoints / f".tmp-superseded-{final.name}")
            remove(self.checkpoints / f".tmp-superseded-{final.name}")
        os.replace(temporary, final)
        for _, old in self.complete_checkpoints()[:-keep_last]:
            remove(old)

    def export_final(self, write) -> Path:
        """Build final/ beside itself with write(folder), then swap it in."""
        return replace_folder(self.final, write)

    def keep_metrics_up_to(self, step: int) -> None:
        """Drop metric lines past `step` (left by a run that died after its last checkpoint) before resuming."""
        if not self.metrics_file.is_file():
            return
        lines = self.metrics_file.read_text().splitlines(keepends=True)
        kept = [line for line in lines if _step_of(line) is None or _step_of(line) <= step]
        if len(kept) != len(lines):
            write_text(self.metrics_file, "".join(kept))


def recipe_changes(saved: dict, recipe: Recipe) -> list[str]:
    """`key: old → new` for every key that differs and that a resumed run may not change."""
    saved = _flatten(saved)
    wanted = _flatten(json.loads(json.dumps(recipe.to_dict())))  # tuples → lists, choices → strings, as saved
    return [
        f"{key}: {saved.get(key)!r} → {wanted.get(key)!r}"
        for key in sorted(set(saved) | set(wanted))
        if saved.get(key) != wanted.get(key) and not key.startswith(RESUMABLE_CHANGES)
    ]


def _read_recipe(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} cannot be read ({cause(error)}); it records the run's recipe") from error
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} should hold the run's recipe as a JSON object")
    return value


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _step_of(line: str) -> int | None:
    try:
        step = json.loads(line).get("step")
    except (json.JSONDecodeError, AttributeError):
        return None
    return step if isinstance(step, int) else None


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty, or already gone
        pass


def _attempt(action) -> str | None:
    """Run `action`; the cause of a failed write as text, or None when it worked."""
    try:
        action()
    except WRITE_ERRORS + (RuntimeError,) as error:  # torch reports a full disk as a RuntimeError
        return cause(error)
    return None
