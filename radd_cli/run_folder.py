"""The run folder: resolved recipe, training checkpoints written atomically, the final export, and the
lock that makes its training process the folder's only writer.

    runs/<name>/
      .lock                   held (flock) by the process training in the folder; names it
      recipe.json             the resolved recipe this run was started with
      tokenizer/              a tokenizer trained for this run (tokenizer.name = "train")
      checkpoints/step_N/     model, optimizer, scheduler, RNG states, EMA and TrainState (accelerate)
      final/                  EMA weights + tokenizer in radd's layout: RADD.from_pretrained(runs/<name>/final)
      train.log, metrics.jsonl, samples/

A checkpoint is written to `checkpoints/.tmp-step_N` and renamed to `step_N` only when complete, so
a crash or `kill -9` during a save leaves the previous checkpoints intact; leftovers are removed at
the next start. Resuming takes the newest `step_N`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from radd_cli.errors import ConfigError, RaddError
from radd_cli.recipe import Recipe

# Keys a resumed run may change: they do not alter what has been computed so far.
RESUMABLE_CHANGES = (
    "name",
    "description",
    "training.steps",
    "training.max_nonfinite",
    "evaluation.",
    "sampling.",
    "checkpoint.",
    "logging.",
)


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.recipe_file = self.path / "recipe.json"
        self.final = self.path / "final"
        self.tokenizer = self.path / "tokenizer"
        self.samples = self.path / "samples"
        self.log_file = self.path / "train.log"
        self.metrics_file = self.path / "metrics.jsonl"
        self.lock_file = self.path / ".lock"
        self._lock = None

    def lock(self) -> None:
        """Become the folder's only writer, or fail at once naming the process that is.

        The lock is an flock on `.lock`: the operating system drops it when its process ends, however
        it ends (kill -9, power loss), so a stale `.lock` file never blocks the next run.
        """
        import fcntl

        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.lock_file, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RaddError(
                f"{self.path} is in use by {holder}; wait for it to finish or stop it (one radd train per run folder)"
            ) from None
        handle.seek(0)
        handle.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(f"radd train, pid {os.getpid()}, started {started}: {' '.join(sys.argv)}\n")
        handle.flush()
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None

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

    def remove_partial_saves(self) -> None:
        for entry in self.checkpoints.glob(".tmp-*") if self.checkpoints.is_dir() else []:
            shutil.rmtree(entry, ignore_errors=True)
        shutil.rmtree(self.path / ".tmp-final", ignore_errors=True)

    def check_recipe(self, recipe: Recipe) -> None:
        """Refuse to resume a run that was started with a recipe that differs in what matters."""
        if not self.recipe_file.is_file():
            return
        saved = _flatten(json.loads(self.recipe_file.read_text()))
        wanted = _flatten(json.loads(json.dumps(recipe.to_dict())))  # tuples → lists, as saved
        changed = [
            f"{key}: {saved.get(key)!r} → {wanted.get(key)!r}"
            for key in sorted(set(saved) | set(wanted))
            if saved.get(key) != wanted.get(key) and not key.startswith(RESUMABLE_CHANGES)
        ]
        if changed and self.latest_checkpoint() is not None:
            raise ConfigError(
                f"{self.path} holds a run with a different recipe ({'; '.join(changed[:4])}); "
                "pass --run-dir to start a new run, or change only training.steps and the evaluation, "
                "sampling, checkpoint and logging sections to resume"
            )

    def write_recipe(self, recipe: Recipe) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.recipe_file, json.dumps(recipe.to_dict(), indent=2) + "\n")

    def save(self, runtime, step: int, keep_last: int) -> Path:
        """Save model, optimizer, scheduler, RNG and registered objects (all processes take part)."""
        temporary, final = self.checkpoints / f".tmp-step_{step}", self.checkpoints / f"step_{step}"
        if runtime.is_main:
            shutil.rmtree(temporary, ignore_errors=True)
            temporary.mkdir(parents=True)
        runtime.barrier()
        runtime.save_state(str(temporary))
        runtime.barrier()
        if runtime.is_main:
            if final.exists():
                shutil.rmtree(final)
            os.replace(temporary, final)
            for _, old in self.complete_checkpoints()[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        runtime.barrier()
        return final

    def export_final(self, write) -> Path:
        """Call write(folder) on a temporary folder, then put it in place of final/."""
        temporary = self.path / ".tmp-final"
        shutil.rmtree(temporary, ignore_errors=True)
        write(temporary)
        if self.final.exists():
            shutil.rmtree(self.final)
        os.replace(temporary, self.final)
        return self.final


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _atomic_write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
