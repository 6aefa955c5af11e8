"""Nothing half-written: atomic files and folders, and one-line errors on a real full or read-only disk."""

import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from radd_cli.cli import app
from radd_cli.files import WriteError, recover_folder, replace_folder, temporary_sibling, write_atomically, write_text

runner = CliRunner()


@pytest.fixture
def disk(tmp_path):
    """A real tmpfs of 64 KiB (skipped where this process cannot mount one); `fill()` uses up its space."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> None:
    """Write zeros until the file system says it is full."""
    handle = open(folder / "filler", "wb", buffering=0)
    try:
        while True:
            handle.write(b"\0" * 4096)
    except OSError:
        pass
    finally:
        handle.close()


def read_only(folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")

    def half_then_fail(temporary: Path) -> None:
        temporary.write_text("new but cut")
        raise OSError(28, "No space left on device")

    with pytest.raises(WriteError, match=f"cannot write {target}: No space left on device; nothing was changed"):
        write_atomically(target, half_then_fail)
    assert files(tmp_path) == {"out.json": b"old"}
    write_text(target, "new")
    assert files(tmp_path) == {"out.json": b"new"} and temporary_sibling(target).suffix == ".json"


def test_a_folder_is_swapped_in_whole_and_a_half_done_swap_is_undone(tmp_path):
    final = tmp_path / "final"
    replace_folder(final, lambda folder: (folder / "a.txt").write_text("1"))
    with pytest.raises(WriteError):
        replace_folder(final, lambda folder: (_ for _ in ()).throw(OSError(30, "Read-only file system")))
    assert files(tmp_path) == {"final/a.txt": b"1"}
    os.replace(final, temporary_sibling(final, "old"))  # as if killed between the two renames of a swap
    recover_folder(final)
    assert files(tmp_path) == {"final/a.txt": b"1"}


def test_sample_output_on_a_full_disk_keeps_the_old_file(disk, tiny_checkpoint):
    (disk / "x.jsonl").write_text("old\n")
    fill(disk)
    command = ["sample", "--model", str(tiny_checkpoint), "-n", 20, "--output", str(disk / "x.jsonl"), "--force"]
    result = runner.invoke(app, command)  # --force: replacing the file is asked for, and the disk is full
    assert result.exit_code == 1 and f"cannot write {disk / 'x.jsonl'}: No space left on device" in result.output
    assert "Traceback" not in result.output and result.output.count("Error:") == 1
    assert (disk / "x.jsonl").read_text() == "old\n" and sorted(p.name for p in disk.iterdir()) == ["filler", "x.jsonl"]


@pytest.mark.parametrize("kind", ["full", "read-only"])
def test_json_plot_recipes_and_convert_fail_in_one_line_and_write_nothing(disk, tiny_checkpoint, kind):
    (disk / "eval.json").write_text("{}")
    fill(disk) if kind == "full" else read_only(disk)
    before = files(disk)
    cause = "No space left on device" if kind == "full" else "Read-only file system"
    commands = [
        ["bench", "eval", "--model", str(tiny_checkpoint), "--batches", "1", "--json", str(disk / "eval.json"), "--force"],
        ["recipes", "tiny", "--copy", str(disk / "tiny.toml")],
        ["convert", str(tiny_checkpoint), str(disk / "converted")],
    ]
    for command in commands:
        result = runner.invoke(app, command)
        assert result.exit_code == 1 and cause in result.output, (command, result.output)
        assert "Traceback" not in result.output and result.output.strip().splitlines()[-1].startswith("Error:")
        assert files(disk) == before, command  # the old file intact, nothing half-written beside it


def test_a_run_on_a_full_disk_stops_in_one_line_with_its_checkpoints_intact(tmp_path, disk, tiny_checkpoint):
    subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
    command = [
        "train",
        f"tokenizer.name={tiny_checkpoint}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "model.hidden_size=32",
        "model.n_blocks=1",
        "model.length=16",
        "training.batch_size=4",
        "training.steps=2",
        "checkpoint.every=1",
        "evaluation.batches=1",
        "sampling.num_samples=1",
        "--run-dir",
        str(disk / "run"),
    ]
    assert runner.invoke(app, command).exit_code == 0
    saved = files(disk / "run" / "checkpoints")
    fill(disk)
    result = runner.invoke(app, [*command[:-2], "training.steps=6", *command[-2:]])
    assert result.exit_code == 1 and "No space left on device" in result.output, result.output
    assert "Traceback" not in result.output
    assert files(disk / "run" / "checkpoints") == saved  # nothing half-written, nothing lost
    assert not list((disk / "run" / "checkpoints").glob(".tmp-*"))


def test_the_token_cache_on_a_full_disk_is_a_one_line_error(disk, tiny_checkpoint):
    fill(disk)
    result = runner.invoke(
        app, ["eval", "--model", str(tiny_checkpoint), "--dataset", "builtin", "--cache-dir", str(disk / "cache")]
    )
    assert result.exit_code == 1 and "No space left on device" in result.output and "cache" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
