"""What radd bench's commands share: output checks before anything is measured, the JSON they write, the progress
bar over timed runs, and the comma-separated lists they parse."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from radd_cli.commands.bench_plots import pyplot
from radd_cli.commands.options import check_writable
from radd_cli.console import err, progress_bar
from radd_cli.core.kv_cache import KVMode
from radd_cli.errors import ConfigError
from radd_cli.files import write_text


def check_outputs(json_path: Path | None, force: bool, plot: Path | None = None) -> None:
    """Refuse bad --json / --plot paths, and --plot without matplotlib, before anything is measured."""
    check_writable(json_path, "--json", force)
    check_writable(plot, "--plot", force)
    if plot is not None:
        pyplot()


def write_json(path: Path | None, payload: dict) -> None:
    if path is not None:
        write_text(path, json.dumps(payload, indent=2) + "\n")
        err.print(f"wrote {path}")


@contextlib.contextmanager
def timing_bar():
    """A progress bar with the time left over the runs a benchmark makes; yields its progress(done, total)."""
    with progress_bar(transient=True) as bar:
        task = bar.add_task("timing", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def kv_modes(text: str) -> list[str]:
    wanted = [name.strip() for name in text.split(",") if name.strip()]
    if not wanted or any(name not in KVMode.names() for name in wanted):
        raise ConfigError(f"--kv-cache {text!r}: give modes among {', '.join(KVMode.names())}, comma-separated")
    return ["none", *[name for name in wanted if name != "none"]]  # the baseline first
