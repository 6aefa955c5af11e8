"""`radd train --dry-run`: what a recipe needs per process before anything is launched.

Parameters, tokens per step and the estimated memory per device (radd_cli/memory.py) for the recipe, the
number of processes and the sharding, with and without activation checkpointing. Nothing is written.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from rich.table import Table

from radd_cli.console import out
from radd_cli.core.model import ModelConfig
from radd_cli.data.tokens import tokenizer_for
from radd_cli.device import AUTO_PRECISION, Hardware, Precision, Work, available_memory, resolve_precision
from radd_cli.io.tokenizer import KNOWN_VOCABULARIES
from radd_cli.training.launch import plans_to_shard
from radd_cli.training.learner import micro_batch_size
from radd_cli.training.lora import trained_parameter_count
from radd_cli.training.memory import Layout, gigabytes, training_memory
from radd_cli.training.recipe import Recipe


def vocabulary_size(recipe: Recipe) -> int:
    """The recipe's vocabulary: a trained BPE's size, a well-known tokenizer's, or the loaded tokenizer's."""
    name = recipe.tokenizer.name
    if name == "train":
        return recipe.tokenizer.vocab_size
    if name in KNOWN_VOCABULARIES and not Path(name).exists():
        return KNOWN_VOCABULARIES[name]
    return tokenizer_for(name).vocab_size


def planned_layout(recipe: Recipe, processes: int, gpus: bool) -> Layout:
    """The layout the run would have: on `processes` GPUs when `gpus` (bf16 GPUs when auto), else on this machine."""
    requested = recipe.training.mixed_precision
    if gpus and not torch.cuda.is_available():  # planning for GPUs from a machine without one
        precision = AUTO_PRECISION[Work.train][Hardware.gpu] if requested == Precision.auto else Precision(requested)
    else:
        precision = resolve_precision(requested, "cuda" if gpus else "cpu", work=Work.train)
    sharded = plans_to_shard(recipe.training.sharding)
    return Layout(processes, sharded, precision, recipe.training.activation_checkpointing)


def print_plan(recipe: Recipe, processes: int, gpus: bool) -> None:
    training, length = recipe.training, recipe.model.length
    layout = planned_layout(recipe, processes, gpus)
    micro_batch = micro_batch_size(training, processes)
    config = ModelConfig.of(recipe.model, vocabulary_size(recipe))
    lora = training.lora
    trained = trained_parameter_count(config, lora) if lora.enabled else None
    both = [
        training_memory(config, micro_batch, replace(layout, activation_checkpointing=on), trained=trained)
        for on in (False, True)
    ]
    where = f"{processes} {'GPU' if gpus else 'CPU'} process{'es' * (processes > 1)}"
    sharding = f"sharded (FSDP) over {processes}" if layout.sharded else "not sharded"
    out.print(f"radd train --dry-run: recipe {recipe.name} on {where}, {layout.precision}, {sharding}", highlight=False)
    out.print(f"parameters: {both[0].parameters / 1e6:,.1f} M", highlight=False)
    if lora.enabled:
        share = both[0].trained / both[0].parameters
        full = f" and the {' and '.join(map(str, lora.full))} in full" if lora.full else ""
        out.print(
            f"trained: {both[0].trained / 1e6:,.3f} M ({share:.1%}), LoRA adapters of rank {lora.rank}{full}: only "
            "they have gradients, optimizer state and an EMA",
            highlight=False,
        )
    out.print(
        f"tokens per step: {training.batch_size * length:,} ({training.batch_size} sequences × {length}; "
        f"per process {training.accumulation} × micro-batches of {micro_batch})",
        highlight=False,
    )
    recipe_uses = {on: " (recipe)" if on == layout.activation_checkpointing else "" for on in (False, True)}
    table = Table(title="estimated memory per process")
    table.add_column("")
    table.add_column(f"without checkpointing{recipe_uses[False]}", justify="right")
    table.add_column(f"with checkpointing{recipe_uses[True]}", justify="right")
    gradients = "gradients (+ DDP buckets)" if processes > 1 and not layout.sharded else "gradients"
    rows = [("weights (float32)", "weights"), (gradients, "gradients"), ("optimizer (AdamW)", "optimizer")]
    rows += [("EMA + evaluation copy", "ema")]
    rows += [("FSDP set-up and gathering", "gathered")] if layout.sharded else []
    rows += [("activations", "activations"), ("total", "total")]
    for label, name in rows:
        table.add_row(label, *(gigabytes(getattr(estimate, name)) for estimate in both))
    out.print(table)
    if gpus and not torch.cuda.is_available():
        return
    free, total = available_memory(torch.device("cuda" if gpus else "cpu")), both[layout.activation_checkpointing].total
    if free is not None:
        verdict = "fits" if total <= free else "does NOT fit"
        out.print(f"the recipe {verdict} in the {gigabytes(free)} free on this machine's {'GPU' if gpus else 'memory'}")
