"""Checks shared by the CLI tests."""


def assert_clean_error(result, message: str, exit_code: int | None = None) -> None:
    """A one-line error with `message`, a non-zero exit, and no exception escaping the command."""
    assert result.exit_code != 0 if exit_code is None else result.exit_code == exit_code, result.output
    assert message in result.output, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not a traceback
    assert len(result.output.strip().splitlines()) == 1, result.output


def run_two_processes(*program: str, port_offset: int = 0, check: bool = True, env: dict | None = None):
    """Run `program` (a script path or `-m module`, with its arguments) as 2 gloo processes via torchrun.

    With `check` the run must succeed; the finished process is returned either way."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    port = 29500 + port_offset + os.getpid() % 1000
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    finished = subprocess.run(
        [*command, *program],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), **(env or {})},
    )
    assert finished.returncode == 0 or not check, finished.stderr[-3000:]
    return finished


# A model small enough for two-process training tests: recipe overrides shared by the trainer and sharding tests.
TINY_RUN = [
    "model.hidden_size=32",
    "model.n_heads=4",
    "model.n_blocks=2",
    "model.length=16",
    "model.dropout=0.1",
    "tokenizer.vocab_size=300",
    "training.batch_size=8",
]
