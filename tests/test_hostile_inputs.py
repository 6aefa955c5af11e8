"""Every command, driven with generated bad values for each numeric and path option, fails the same way:
exit 1 or 2, a short message and no traceback, and no file that existed before is changed."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from radd_cli.cli import app

runner = CliRunner()

# Bad values by kind of option. Each is wrong for every option of its kind.
COUNTS = ["0", "-3", "1.5", "abc", "", "nan"]  # whole numbers of at least 1
HUGE_COUNTS = [str(10**12)]  # numbers of samples, steps or tokens nobody can hold
SEEDS = ["-1", "1e23", str(2**64), "x"]
PROBABILITIES = ["0", "-0.1", "1.5", "nan", "inf", "p"]  # (0, 1]
POSITIVE_FLOATS = ["0", "-1", "nan", "inf", "warm"]


def option_cases(command: list[str], options: dict[str, list[str]]) -> list[tuple[list[str], str]]:
    return [([*command, option, value], f"{' '.join(command[:2])} {option}={value!r}") for option, values in options.items() for value in values]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_checkpoint):
    """A folder with a model, data, outputs that already exist and the odd files a hostile user brings."""
    root = tmp_path_factory.mktemp("hostile")
    shutil.copytree(tiny_checkpoint, root / "model")
    (root / "corpus.txt").write_text("\n\n".join(f"The cat sat on mat {i}." for i in range(60)))
    (root / "existing.jsonl").write_text('{"text": "keep me"}\n')
    (root / "existing.json").write_text("{}\n")
    (root / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (root / "huge_order.txt").write_text(str(10**30))
    (root / "folder").mkdir()
    (root / "empty").mkdir()
    (root / "user").mkdir()
    (root / "user" / "notes.txt").write_text("mine")
    os.mkfifo(root / "pipe.txt")
    (root / "bad_rows.jsonl").write_text('{"prompt": "The cat", "response": " sat."}\n{"prompt": "The dog"}\n')
    (root / "empty.jsonl").write_text("")
    (root / "binary.jsonl").write_bytes(bytes(range(256)) * 4)
    return root


def cases(root: Path) -> list[tuple[list[str], str]]:
    model = ["--model", str(root / "model")]
    bad_paths = {
        "--model": [str(root / "nowhere"), str(root / "corpus.txt"), str(root / "empty"), str(root / "binary.txt")],
        "--output": [str(root / "folder"), str(root / "nowhere" / "x.jsonl"), str(root / "x.csv")],
    }
    found = []
    for verb in ("sample", "infill"):
        base = [verb, *model] + (["--prefix", "The cat"] if verb == "infill" else [])
        found += option_cases(
            base,
            {
                "--num-samples": COUNTS + HUGE_COUNTS,
                "--batch-size": COUNTS,
                "--steps": COUNTS + HUGE_COUNTS,
                "--length": COUNTS + HUGE_COUNTS,
                "--seed": SEEDS,
                "--top-k": COUNTS,
                "--top-p": PROBABILITIES,
                "--temperature": POSITIVE_FLOATS,
                "--output": bad_paths["--output"],
                "--block-length": COUNTS + ["5"],  # 5 divides no length of the model (16)
                "--guidance": ["-1", "nan", "inf", "x"],
            },
        )
        found += option_cases([verb, "--prefix", "x"] if verb == "infill" else [verb], {"--model": bad_paths["--model"]})
        found += option_cases(
            [*base, "--method", "ordered"],
            {"--order": [str(root / "nowhere.txt"), str(root / "binary.txt"), str(root / "huge_order.txt"), str(root / "folder")]},
        )
    serve = ["serve", *model, "--port", "0"]  # every case fails before the server would start
    found += option_cases(
        serve,
        {
            "--port": ["-1", "65536", "x", ""],
            "--max-batch-size": COUNTS,
            "--max-queue": COUNTS,
            "--max-request-bytes": COUNTS,
            "--shutdown-timeout": ["-1", "nan", "inf", "x"],
            "--steps": COUNTS + HUGE_COUNTS,
            "--top-k": COUNTS,
            "--top-p": PROBABILITIES,
            "--temperature": POSITIVE_FLOATS,
            "--host": ["no-such-host.invalid", "256.0.0.1"],
        },
    )
    found += option_cases(["serve", "--port", "0"], {"--model": bad_paths["--model"]})
    found += option_cases(["sample", *model, "--method", "threshold"], {"--threshold": PROBABILITIES})
    found += option_cases(["sample", *model, "--method", "remdm"], {"--eta": ["-1", "nan", "inf", "x"]})
    found += option_cases(
        ["sample", *model],
        {
            "--prompt": ["The cat sat on the mat. " * 8, "\udcff"],
            "--prompts": [
                str(root / p)
                for p in ("nowhere.jsonl", "pipe.txt", "binary.txt", "folder", "empty.jsonl", "existing.jsonl", "x.csv")
            ],
        },
    )
    found += option_cases(["sample", *model, "--prompt", "The cat"], {"--length": COUNTS + HUGE_COUNTS + ["2"]})
    found += option_cases(["sample", *model, "--prompt", "The cat", "--chat"], {"--num-samples": ["1"]})
    found += option_cases(
        ["infill", *model],
        {"--template": ["[MASK:0]", "[MASK:10000000000]", "no spans here", "[MASK:x]", "bad \udcff [MASK:2]"], "--prefix": ["\udcff"]},
    )
    data = ["--model", str(root / "model"), "--dataset", str(root / "corpus.txt"), "--cache-dir", str(root / "cache")]
    found += option_cases(
        ["eval", *data],
        {
            "--mc-samples": COUNTS,
            "--batch-size": COUNTS,
            "--length": COUNTS + HUGE_COUNTS,
            "--target-se": POSITIVE_FLOATS,
            "--seed": SEEDS,
            "--gpus": ["0", "-3", "x"],
            "--json": [str(root / "folder"), str(root / "nowhere" / "r.json")],
        },
    )
    found += option_cases(
        ["eval", "--model", str(root / "model"), "--cache-dir", str(root / "cache")],
        {"--dataset": [str(root / "nowhere.txt"), str(root / "pipe.txt"), str(root / "binary.txt"), str(root / "empty")]},
    )
    found += option_cases(
        ["eval", "--judge", str(root / "empty")],
        {"--samples": [str(root / "folder"), str(root / "binary.txt"), str(root / "nowhere.jsonl"), str(root / "corpus.txt")]},
    )
    found += option_cases(["eval", "--samples", str(root / "existing.jsonl")], {"--judge": [str(root / "empty")]})
    found += option_cases(
        ["eval", *model, "--task", "sort"],
        {
            "--limit": COUNTS,
            "--top-k": COUNTS,
            "--steps": COUNTS,
            "--split": ["dev", "all"],
            "--json": [str(root / "folder")],
        },
    )
    found += option_cases(["eval", *model], {"--task": ["nope", "task:sort", ""]})
    found += option_cases(["eval", "--task", "sort"], {"--model": bad_paths["--model"]})
    found += [(["eval", "--task", "sort", *model, "--dataset", "builtin"], "eval --task with --dataset")]
    for verb, extra in (("sample", {"--steps": ["0", "a,b", "", "-1"], "--repeats": COUNTS}), ("eval", {"--batches": COUNTS})):
        found += option_cases(
            ["bench", verb, *model],
            {"--batch-size": COUNTS, "--length": COUNTS + HUGE_COUNTS, "--json": [str(root / "folder")], **extra},
        )
    found += option_cases(
        ["bench", "train", "--size", "tiny", "--length", "16", "--batch-size", "4"],
        {"--steps": COUNTS, "--warmup": ["-1", "x"], "--accumulation": ["0", "3"], "--batch-size": COUNTS},
    )
    train = ["train", f"tokenizer.name={root / 'model'}", f"data.train={root / 'corpus.txt'}", f"data.cache_dir={root / 'cache'}"]
    for override in (
        "training.lr=inf",
        "training.lr=-1",
        "training.batch_size=0",
        "training.batch_size=100000000",
        "model.length=0",
        "training.steps=abc",
        "training.ema=1.5",
        f"data.train={root / 'nowhere.txt'}",
        f"data.train={root / 'pipe.txt'}",
        f"data.train={root / 'binary.txt'}",
        f"data.train={root / 'bad_rows.jsonl'}",
        f"data.train={root / 'empty.jsonl'}",
        f"data.train={root / 'binary.jsonl'}",
        "data.train=task:nope",
        "data.packing=zip",
        f"training.init_from={root / 'nowhere'}",
        f"training.init_from={root / 'corpus.txt'}",
        f"training.init_from={root / 'model'}",
        f"training.init_from={root / 'empty'}",
    ):
        found.append(([*train, override, "--run-dir", str(root / "runs" / "r")], f"train {override}"))
    found += option_cases(train, {"--run-dir": [str(root / "user"), str(root / "corpus.txt")], "--recipe": [str(root / "nowhere.toml"), str(root / "binary.txt"), str(root / "folder")]})
    dry_run = [*train, "--dry-run"]
    found += option_cases(dry_run, {"--gpus": ["0", "-3", "x", "3"], "--recipe": [str(root / "nowhere.toml")]})
    for override in ("training.sharding=zero3", "training.activation_checkpointing=maybe", "training.batch_size=0"):
        found.append(([*dry_run, override], f"train --dry-run {override}"))
    found += option_cases(["recipes", "tiny"], {"--copy": ["/proc/radd-recipe.toml", str(root / "nowhere" / "r.toml"), str(root / "existing.json")]})
    found += [(["recipes", "nosuch"], "recipes nosuch")]
    found += option_cases(["convert", str(root / "model")], {"": [str(root / "corpus.txt"), str(root / "user")]})
    found += [(["convert", str(p), str(root / "out")], f"convert {p.name}") for p in (root / "nowhere", root / "corpus.txt", root / "empty")]
    return [(args if args[-2] != "" else [*args[:-2], args[-1]], name) for args, name in found]


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_fifo() and "cache" not in p.parts and "runs" not in p.parts
    }


def test_every_command_fails_cleanly_on_bad_values_and_changes_no_file(world, monkeypatch):
    monkeypatch.chdir(world)
    all_cases = cases(world)
    assert len(all_cases) >= 250
    before = snapshot(world)
    failures = []
    for args, name in all_cases:
        result = runner.invoke(app, args)
        lines = result.output.strip().splitlines()
        if (
            result.exit_code not in (1, 2)
            or not isinstance(result.exception, SystemExit)
            or "Traceback" in result.output
            or not lines
            or len(lines) > 3
            or not lines[-1].startswith("Error: ")
        ):
            failures.append(f"{name}: exit {result.exit_code}, {result.exception!r}, output {result.output[-300:]!r}")
    assert not failures, "\n".join(failures)
    assert snapshot(world) == before
