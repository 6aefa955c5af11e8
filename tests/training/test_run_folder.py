"""The run folder: one writer at a time (a lock the OS drops when its process dies), and the recipe check."""

import os
import subprocess
import sys

import pytest

from radd_cli.errors import ConfigError, RaddError
from radd_cli.training.recipe import load_recipe
from radd_cli.training.run_folder import RunFolder
from tests.test_files import disk, fill  # noqa: F401, F811  (a real tmpfs to fill)

HOLD_LOCK = """
import sys, time
from radd_cli.training.run_folder import RunFolder
folder = RunFolder(sys.argv[1])
folder.claim()
folder.lock()
print("locked", flush=True)
time.sleep(120)
"""


def test_a_busy_folder_is_refused_naming_the_process_that_holds_it(tmp_path):
    first = RunFolder(tmp_path / "run")
    first.claim()
    first.lock()
    with pytest.raises(RaddError, match=f"run is in use by radd train, pid {os.getpid()}, started .*one radd train"):
        RunFolder(tmp_path / "run").lock()
    first.unlock()
    second = RunFolder(tmp_path / "run")
    second.lock()  # free again
    second.unlock()


def test_a_lock_left_by_a_killed_process_does_not_block_the_next_run(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RaddError, match=f"pid {holder.pid}"):
            RunFolder(folder).lock()
    finally:
        holder.kill()  # SIGKILL: no cleanup runs
        holder.wait(timeout=30)
    assert f"pid {holder.pid}" in (folder / ".lock").read_text()  # the stale file is still there...
    again = RunFolder(folder)
    again.lock()  # ...and does not block
    assert f"pid {os.getpid()}" in (folder / ".lock").read_text()
    again.unlock()


def test_partial_saves_are_found_and_removed_and_checkpoints_sorted(tmp_path):
    folder = RunFolder(tmp_path / "run")
    for name in ("step_10", "step_2", ".tmp-step_12", "notes"):
        (folder.checkpoints / name).mkdir(parents=True)
    assert [step for step, _ in folder.complete_checkpoints()] == [2, 10]
    assert folder.latest_checkpoint().name == "step_10"
    folder.tidy()
    assert sorted(p.name for p in folder.checkpoints.iterdir()) == ["notes", "step_10", "step_2"]


def test_a_run_refuses_a_different_recipe_but_takes_more_steps(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.claim()
    folder.write_recipe(load_recipe("tiny"))
    folder.check_continuation(load_recipe("tiny", ["training.steps=5000", "logging.every=3"]), restart=False)
    with pytest.raises(ConfigError, match="different recipe \\(model.n_blocks: 3 → 4\\)"):
        folder.check_continuation(load_recipe("tiny", ["model.n_blocks=4"]), restart=False)
    (folder.checkpoints / "step_5").mkdir(parents=True)
    (folder.checkpoints / "step_5" / "recipe.json").write_text(folder.recipe_file.read_text())
    with pytest.raises(ConfigError, match="step_5 was trained with a different recipe \\(training.lr"):
        folder.check_checkpoint_recipe(folder.checkpoints / "step_5", load_recipe("tiny", ["training.lr=1"]))


def test_only_empty_or_radd_folders_are_claimed(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="is not empty and is not a radd run folder"):
        RunFolder(tmp_path / "mine").claim()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        RunFolder(tmp_path / "file").claim()
    RunFolder(tmp_path / "new" / "run").claim()
    assert (tmp_path / "new" / "run" / ".radd-run").is_file()
    RunFolder(tmp_path / "new" / "run").claim()  # radd's own: claimed again


def test_restart_moves_the_run_aside_and_metrics_are_cut_back_to_the_resumed_step(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.claim()
    folder.write_recipe(load_recipe("tiny"))
    folder.metrics_file.write_text("".join(f'{{"step": {step}, "loss": 1}}\n' for step in range(1, 8)))
    folder.keep_metrics_up_to(4)
    assert [line[:11] for line in folder.metrics_file.read_text().splitlines()] == [f'{{"step": {s},' for s in (1, 2, 3, 4)]
    folder.check_continuation(load_recipe("tiny", ["model.n_blocks=1"]), restart=True)
    [aside] = folder.path.glob("replaced-*")
    assert sorted(p.name for p in aside.iterdir()) == ["metrics.jsonl", "recipe.json"]
    assert not folder.recipe_file.exists() and (folder.path / ".radd-run").is_file()


def test_a_recipe_json_alone_does_not_make_a_folder_radd_s(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "recipe.json").write_text('{"training": {"steps": 1}}')  # a user's file of that name
    assert not RunFolder(mine).is_radd_run()
    with pytest.raises(ConfigError, match="is not empty and is not a radd run folder"):
        RunFolder(mine).claim()
    assert [p.name for p in mine.iterdir()] == ["recipe.json"]
    (mine / "checkpoints").mkdir()  # a run from before the marker: recipe.json beside radd's checkpoints
    assert RunFolder(mine).is_radd_run()


def test_a_failed_start_in_a_folder_it_made_leaves_nothing_behind(tmp_path):
    folder = RunFolder(tmp_path / "new" / "run")
    folder.claim()
    folder.lock()
    (tmp_path / "new" / "run" / "tokenizer").mkdir()  # what the attempt wrote before it failed
    folder.abandon()
    folder.unlock()
    assert not (tmp_path / "new" / "run").exists() and (tmp_path / "new").is_dir()
    (tmp_path / "yours").mkdir()  # an empty folder of the user's: emptied again, kept
    given = RunFolder(tmp_path / "yours")
    given.claim()
    given.lock()
    given.abandon()
    given.unlock()
    assert (tmp_path / "yours").is_dir() and not any((tmp_path / "yours").iterdir())
    RunFolder(tmp_path / "run").claim()
    theirs = RunFolder(tmp_path / "run")  # claimed by another process: never taken back by this one
    theirs.claim()
    theirs.lock()
    theirs.abandon()
    theirs.unlock()
    assert (tmp_path / "run" / ".radd-run").is_file()


def test_a_full_disk_leaves_no_run_folder_or_marker(disk):  # noqa: F811  (the fixture imported above)
    from radd_cli.files import WriteError

    fill(disk)
    with pytest.raises(WriteError, match="cannot create the run folder"):
        RunFolder(disk / "run").claim()
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]
