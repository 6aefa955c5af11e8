"""Print the GPU table of benchmarks/gpu.sh against the published code's H100 numbers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

PUBLISHED = {  # H100 80GB, torch 2.11, small size, random weights
    "forward_ms": 31.0,
    "sample_1024_s": 42.1,
    "sample_2048_s": 71.0,
    "sample_1024_nfe": 589.0,
    "train_tokens_per_s": 148_000,
    "train_peak_gb": 42.8,
}


def main(folder: Path) -> None:
    evaluation = json.loads((folder / "eval.json").read_text())
    sampling = json.loads((folder / "sample.json").read_text())
    trains = [
        json.loads((folder / name).read_text())
        for name in ("train.json", "train_compiled.json", "train_checkpointing.json", "train_sharded.json")
        if (folder / name).is_file()
    ]
    cached = {row["steps"]: row for row in sampling["rows"] if row["cache"] == "on"}
    rows = [
        (
            "forward, batch 16 x 1024",
            f"{evaluation['forward_ms']:.1f} ms",
            f"{PUBLISHED['forward_ms']} ms",
            PUBLISHED["forward_ms"] / evaluation["forward_ms"],
            "<= 12 ms (2.5x)",
        )
    ]
    for steps in (1024, 2048):
        if steps in cached:
            row = cached[steps]
            rows.append(
                (
                    f"sample {steps} steps, batch 16",
                    f"{row['seconds']:.1f} s",
                    f"{PUBLISHED[f'sample_{steps}_s']} s",
                    PUBLISHED[f"sample_{steps}_s"] / row["seconds"],
                    "<= 8 s (5x)" if steps == 1024 else "",
                )
            )
            error = 100 * (row["nfe"] / row["expected_nfe"] - 1)
            rows.append(
                (
                    f"  NFE/seq at {steps}",
                    f"{row['nfe']:.1f} (E-NFE {row['expected_nfe']:.1f}, {error:+.1f}%)",
                    "589" if steps == 1024 else "678",
                    None,
                    "E-NFE +- 2%",
                )
            )
    for train in trains:
        variant = [name for name, on in (("compiled", train.get("compile")), ("activation checkpointing",
                   train.get("activation_checkpointing")), ("sharded, 1 GPU", train.get("sharded"))) if on]
        label = "train step, batch 32 x 1024" + (f" ({', '.join(variant)})" if variant else "")
        rows.append(
            (
                label,
                f"{train['tokens_per_second'] / 1e3:.0f}k tokens/s",
                f"{PUBLISHED['train_tokens_per_s'] / 1e3:.0f}k tokens/s",
                train["tokens_per_second"] / PUBLISHED["train_tokens_per_s"],
                ">= 370k (2.5x)",
            )
        )
        rows.append(
            (
                "  peak memory",
                f"{train['peak_memory_gb']:.1f} GB (estimated {train.get('estimated_memory_gb') or 0:.1f})",
                f"{PUBLISHED['train_peak_gb']} GB",
                PUBLISHED["train_peak_gb"] / train["peak_memory_gb"],
                "<= 21 GB",
            )
        )
        if train.get("mfu"):
            rows.append(("  MFU", f"{100 * train['mfu']:.1f}% of {train['peak_tflops']:.0f} TFLOP/s", "~16%", None, ""))
    rows += _inference_rows(folder)
    sharded_run = "works (2 steps, resumed for a 3rd, final/ loads)" if (folder / "sharded-run.ok").is_file() else "FAILED"
    rows.append(("sharded (FSDP) run on CUDA, save/resume/export", sharded_run, "-", None, "works"))
    print(f"\n{evaluation['device_name']}, torch {evaluation['torch']}\n")
    print("| measure | radd | published | speedup | target |\n|---|---|---|---|---|")
    for name, ours, theirs, ratio, target in rows:
        print(f"| {name} | {ours} | {theirs} | {'' if ratio is None else f'{ratio:.2f}x'} | {target} |")


def _inference_rows(folder: Path) -> list[tuple]:
    """The key/value cache and compiled-inference rows, when gpu.sh produced them."""
    rows = []
    if (folder / "sample_kv.json").is_file():
        kv = json.loads((folder / "sample_kv.json").read_text())
        for row in kv["rows"]:
            label = f"tweedie by blocks of {kv['block_length']}, batch {kv['batch_size']}, kv cache {row['kv_cache']}"
            rows.append((label, f"{row['tokens_per_second']:,.0f} tokens/s ({row['full_calls']:.0f} of "
                         f"{row['calls']:.0f} calls full)", "-", row["speedup"], ">= 4x (dual)" if row["kv_cache"] == "dual" else ""))
    if (folder / "eval_compiled.json").is_file():
        compiled = json.loads((folder / "eval_compiled.json").read_text())
        if compiled.get("compiled_ms"):
            rows.append(("sampling call, batch 16 x 1024, compiled", f"{compiled['compiled_ms']:.1f} ms (eager "
                         f"{compiled['eager_ms']:.1f} ms)", "-", compiled["speedup"], ">= 1.3x"))
    return rows


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "bench-gpu"))
