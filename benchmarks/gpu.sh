#!/usr/bin/env bash
# The GPU table of `radd bench` against the published code's numbers, in one run.
# Sized for an H100 80GB (about 5 minutes); on another card the targets still print but the
# published numbers were measured on an H100.
#
#   bash benchmarks/gpu.sh [OUT_DIR]        (default OUT_DIR: bench-gpu)
#
# Needs torch with CUDA, accelerate, transformers, typer, rich and safetensors; runs from a source
# tree (PYTHONPATH) or an installed radd.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-gpu}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
radd() { python -m radd_cli "$@"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"

# Forward at batch 16 x 1024 (published: 31.0 ms).
radd bench eval --size small --batch-size 16 --precision bf16 --batches 20 --json "$out/eval.json"
# Sampling 1024 and 2048 steps at batch 16, cache on and off (published: 42.1 s and 71.0 s, cache on).
radd bench sample --size small --batch-size 16 --steps 1024,2048 --precision bf16 --repeats 1 --json "$out/sample.json"
# Training step, batch 32 x 1024, lambda-DCE (published: 148k tokens/s, 42.8 GB), eager and compiled.
radd bench train --size small --batch-size 32 --precision bf16 --steps 10 --warmup 3 --json "$out/train.json"
radd bench train --size small --batch-size 32 --precision bf16 --steps 10 --warmup 5 --compile --json "$out/train_compiled.json" \
    || echo "the compiled training step failed; the table shows the eager one"

python benchmarks/compare_gpu.py "$out"
