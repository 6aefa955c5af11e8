"""Writing files and folders so that nothing is ever half-written (docs/guarantees.md).

Every file radd writes goes to a temporary name in the same folder and is renamed over the target only
when complete; a folder is built beside its target and swapped in. When writing fails (a full disk, a
read-only file system, a missing permission) the temporary is removed, the old file or folder is left
as it was, and the error is one line that names the path and the cause.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Callable

from radd_cli.errors import RaddError

# What a failed write raises besides OSError: safetensors and torch report disk errors their own way.
WRITE_ERRORS: tuple[type[BaseException], ...] = (OSError,)
try:
    from safetensors import SafetensorError

    WRITE_ERRORS += (SafetensorError,)
except ImportError:  # pragma: no cover - safetensors is a dependency
    pass


class WriteError(RaddError):
    """A file or folder could not be written; nothing was left half-written."""


def temporary_sibling(path: Path, kind: str = "tmp") -> Path:
    """A hidden name beside `path`, unique to this process, that keeps its suffix (savefig and np.save look at it)."""
    return path.with_name(f".{path.stem}.{kind}-{os.getpid()}{path.suffix}")


def cause(error: BaseException) -> str:
    """The reason a write failed, in a few words: `No space left on device`, `Read-only file system`, ..."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__


def write_atomically(path: str | Path, write: Callable[[Path], None], *, errors=WRITE_ERRORS) -> Path:
    """Call `write(temporary)`, then rename the temporary file to `path`.

    On failure the temporary is removed, an existing `path` is untouched, and a WriteError names both.
    """
    path = Path(path)
    temporary = temporary_sibling(path)
    try:
        write(temporary)
        os.replace(temporary, path)
    except errors as error:
        remove(temporary)
        raise WriteError(f"cannot write {path}: {cause(error)}; nothing was changed there") from error
    return path


def write_text(path: str | Path, text: str) -> Path:
    return write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def replace_folder(path: str | Path, build: Callable[[Path], None], *, errors=WRITE_ERRORS) -> Path:
    """Build a folder beside `path` with `build(temporary)`, then swap it in place of `path`.

    The old folder is renamed aside first and removed only once the new one is in place; `recover_folder`
    puts it back if the process died between the two renames.
    """
    path = Path(path)
    temporary, previous = temporary_sibling(path, "new"), temporary_sibling(path, "old")
    try:
        remove(temporary)
        temporary.mkdir(parents=True)
        build(temporary)
        if path.exists():
            os.replace(path, previous)
        os.replace(temporary, path)
    except errors as error:
        remove(temporary)
        if previous.exists() and not path.exists():
            os.replace(previous, path)
        raise WriteError(f"cannot write {path}: {cause(error)}; nothing was changed there") from error
    remove(previous)
    return path


def recover_folder(path: str | Path) -> None:
    """Undo a swap that a killed process left half done: the old folder comes back if the new one is missing."""
    path = Path(path)
    for previous in path.parent.glob(f".{path.stem}.old-*{path.suffix}"):
        if path.exists():
            remove(previous)
        else:
            os.replace(previous, path)


def remove(path: Path) -> None:
    """Remove, as far as possible, a file or folder that radd itself created (a temporary or a superseded
    copy); on a read-only disk there is nothing to remove, so failing to is not an error."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()
