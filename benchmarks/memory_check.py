"""The training-memory estimate (radd_cli/memory.py, `radd train --dry-run`) against measured peak memory.

Each setting trains two steps of `radd train`'s own Learner in a fresh process and reports the peak resident
memory the training added (peak RSS minus the RSS before the model was built), next to the estimate.

    python benchmarks/memory_check.py                      # a sweep of widths, fp32 and bf16, with and without checkpointing
    python benchmarks/memory_check.py --width 128 --blocks 2 --length 64 --batch 32 --checkpointing --json

bf16 rows run on any CPU (emulated where the CPU has no native bf16: slow, but the memory is the same).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MEASURE = """
import json, resource, sys, time
import numpy as np
import torch
import radd_cli.device as runtime
from radd_cli.training.learner import Learner, layout
from radd_cli.training.memory import training_memory
from radd_cli.core.model import ModelConfig, ModelShape
from radd_cli.training.recipe import Recipe, TrainingSection

width, blocks, vocab, length, batch, precision, checkpointing, sharding = json.loads(sys.argv[1])
runtime.cpu_has_native_bf16 = lambda: True  # bf16 autocast runs (emulated) on any CPU: memory is what counts here
torch.set_num_threads(1)

def rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()

shape = ModelShape(hidden_size=width, n_heads=4, n_blocks=blocks, length=length, dropout=0.0)
training = TrainingSection(batch_size=batch, warmup_steps=0, mixed_precision=precision,
                           activation_checkpointing=checkpointing, sharding=sharding)
recipe = Recipe(model=shape, training=training)
rt = runtime.build_runtime(precision, cpu=True, sharding=sharding)
before = rss()
learner = Learner(recipe, rt, vocab)
data = np.random.default_rng(0).integers(0, vocab, (batch, length))
for _ in range(2):
    learner.step(data)
def high_water_mark() -> int:  # this process's own peak: ru_maxrss would include its parent's RSS at fork
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmHWM:"))

peak = high_water_mark() - before
estimate = training_memory(ModelConfig.of(shape, vocab), learner.micro_batch, layout(training, rt))
time.sleep(rt.rank)  # one line at a time
print(json.dumps({"measured": peak, "estimate": estimate.total}), flush=True)
"""


def measure(
    width: int,
    blocks: int,
    vocab: int,
    length: int,
    batch: int,
    precision: str,
    checkpointing: bool,
    processes: int = 1,
    sharding: str = "none",
) -> dict:
    """Peak bytes a training process added (the largest over `processes` gloo processes), measured in fresh
    interpreters, and the estimate. `batch` is the global batch."""
    settings = json.dumps([width, blocks, vocab, length, batch, precision, checkpointing, sharding])
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", "29613"]
        script = Path(tempfile.mkdtemp()) / "measure.py"
        script.write_text(MEASURE)
        program = [str(script), settings]
    else:
        program = ["-c", MEASURE, settings]
    done = subprocess.run(
        [*launcher, *program],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": "/usr/bin:/bin"},
    )
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return max(rows, key=lambda row: row["measured"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, nargs="*", default=[128, 256, 512])
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--precision", nargs="*", default=["fp32", "bf16"])
    parser.add_argument("--checkpointing", action="store_true", help="Only with activation checkpointing.")
    parser.add_argument("--processes", type=int, default=1, help="gloo processes (torchrun); --batch is global.")
    parser.add_argument("--sharding", default="none", help="none or fsdp")
    parser.add_argument("--json", action="store_true", help="Print the rows as JSON lines.")
    args = parser.parse_args()
    modes = [True] if args.checkpointing else [False, True]
    print("| width | precision | checkpointing | measured MB | estimate MB | estimate / measured |\n|---|---|---|---|---|---|")
    for width in args.width:
        for precision in args.precision:
            for checkpointing in modes:
                row = measure(
                    width,
                    args.blocks,
                    args.vocab,
                    args.length,
                    args.batch,
                    precision,
                    checkpointing,
                    args.processes,
                    args.sharding,
                )
                if args.json:
                    print(json.dumps({"width": width, "precision": precision, "checkpointing": checkpointing, **row}))
                    continue
                print(
                    f"| {width} | {precision} | {checkpointing} | {row['measured'] / 1e6:.0f} | "
                    f"{row['estimate'] / 1e6:.0f} | {row['estimate'] / row['measured']:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
