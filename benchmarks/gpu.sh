#!/usr/bin/env bash
# The GPU table of `radd bench` against the published code's numbers, in one run.
# Sized for an H100 80GB (about 7 minutes); on another card the targets still print but the
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
# The key/value cache: tweedie by blocks of 128 over 1024 tokens, batch 8, without it, prefix and dual (target: dual >= 4x).
radd bench sample --size small --batch-size 8 --precision bf16 --steps 256 --block-length 128 --kv-cache none,prefix,dual \
    --repeats 1 --json "$out/sample_kv.json" || echo "the key/value cache benchmark failed"
# Compiled inference (CUDA graphs): the sampling call at batch 16 x 1024, eager against compiled.
radd bench eval --size small --batch-size 16 --precision bf16 --batches 20 --compile --json "$out/eval_compiled.json" \
    || echo "the compiled sampling call failed; the table shows no compiled row"
# Training step, batch 32 x 1024, lambda-DCE (published: 148k tokens/s, 42.8 GB), eager and compiled.
radd bench train --size small --batch-size 32 --precision bf16 --steps 10 --warmup 3 --json "$out/train.json"
radd bench train --size small --batch-size 32 --precision bf16 --steps 10 --warmup 5 --compile --json "$out/train_compiled.json" \
    || echo "the compiled training step failed; the table shows the eager one"
# The same step with activation checkpointing (the way to <= 21 GB), and sharded (FSDP) on this one GPU.
radd bench train --size small --batch-size 32 --precision bf16 --steps 10 --warmup 3 --activation-checkpointing \
    --json "$out/train_checkpointing.json"
radd bench train --size small --batch-size 32 --precision bf16 --steps 5 --warmup 2 --sharding fsdp \
    --json "$out/train_sharded.json" || echo "the sharded training step failed"

# A sharded run end to end on CUDA: two steps with a checkpoint each, then resumed for a third; final/ must load.
sharded_run=(--recipe tiny model.hidden_size=256 model.n_heads=4 model.n_blocks=4 training.batch_size=16
    training.sharding=fsdp training.mixed_precision=bf16 checkpoint.every=1 evaluation.batches=1 sampling.steps=16
    "data.cache_dir=$out/cache" --run-dir "$out/sharded-run")
rm -rf "$out/sharded-run"
{ radd train "${sharded_run[@]}" training.steps=2 && radd train "${sharded_run[@]}" training.steps=3 \
    && python -c "import sys; import radd_cli; radd_cli.load(sys.argv[1]); print('final/ loads')" \
        "$out/sharded-run/final"; } > "$out/sharded-run.log" 2>&1 \
    && echo ok > "$out/sharded-run.ok" || { echo "the sharded run failed:"; tail -20 "$out/sharded-run.log"; }

python benchmarks/compare_gpu.py "$out"
