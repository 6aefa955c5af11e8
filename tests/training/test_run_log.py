"""The run's log: train.log lines, metrics.jsonl rows averaged over the logging interval, samples/ snapshots."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from radd_cli.files import WriteError
from radd_cli.training.recipe import load_recipe
from radd_cli.training.run_folder import RunFolder
from radd_cli.training.run_log import RunLogger, append


class MainProcess:
    is_main = True


def logger(tmp_path, every=2) -> tuple[RunLogger, RunFolder]:
    folder = RunFolder(tmp_path / "run")
    folder.claim()
    recipe = load_recipe("tiny", [f"logging.every={every}"])
    return RunLogger(folder, MainProcess(), recipe, show_progress=False), folder


def test_metrics_average_the_losses_of_each_logging_interval(tmp_path):
    log, folder = logger(tmp_path, every=2)
    for step, loss in enumerate([4.0, 2.0, 1.0, 3.0], start=1):
        log.after_step(SimpleNamespace(step=step, skipped_nonfinite=0), loss, 100.0, 1e-3)
    rows = [json.loads(line) for line in folder.metrics_file.read_text().splitlines()]
    assert [(row["step"], row["train/nats_per_token"]) for row in rows] == [(2, 3.0), (4, 2.0)]
    assert rows[0]["lr"] == 1e-3 and rows[0]["tokens_per_second"] == 100.0
    assert "step 4: train/nats_per_token 2" in folder.log_file.read_text()


def test_samples_are_written_per_step_and_previewed_in_the_log(tmp_path):
    log, folder = logger(tmp_path)
    log.samples(7, ["first sample\nwith two lines", "second"])
    written = (folder.samples / "step_7.txt").read_text()
    assert written.startswith("first sample\nwith two lines") and "second" in written
    assert "step 7: sample: first sample with two lines" in folder.log_file.read_text()


def test_a_log_that_cannot_be_written_is_a_one_line_error(tmp_path):
    with pytest.raises(WriteError, match="cannot write"):
        append(tmp_path / "no-such-folder" / "train.log", "line\n")
