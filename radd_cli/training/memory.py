"""How much memory a training step needs, estimated before any of it is allocated.

The estimate counts, per process: the weights, the gradients, AdamW's two moments and the float32 EMA of
the weights that train (all, or LoRA's adapters) with the evaluation copy it is gathered into, and the
activations autograd keeps for the backward pass of one micro-batch. Sharding divides the first four by the number of processes and adds the full
weights of the blocks being gathered; bf16 shrinks the activations; activation checkpointing keeps only
each block's input plus one block's activations during its backward. A recipe whose estimate is larger
than the memory the device has free is refused before training starts; `radd train --dry-run` prints it.
benchmarks/memory_check.py measures it against the peak resident memory on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from radd_cli.core.model import HEAD_CHUNK, ModelConfig
from radd_cli.device import Precision

FLOAT32 = 4
# Bytes per token and block, in units of the width d, that a training step holds at its peak: what autograd
# keeps (the norms' inputs and outputs, q/k/v, rotated q and k, the attention output, the MLP's 4d layer
# before and after GELU, the residual stream) plus the gradients being formed. Under bf16 autocast the matmul
# inputs and outputs are kept in bf16 while the norms and the residual stream stay float32. Measured on the
# CPU (torch 2.13, d 128-512, 4 blocks, 16 × 128 tokens; benchmarks/memory_check.py): the estimates are
# within 15% of the peak resident memory, within 6% at d 512, in fp32 and bf16, with and without checkpointing.
ACTIVATION_BYTES = {Precision.fp32: 30 * FLOAT32, Precision.bf16: 72, Precision.fp16: 72}
# With activation checkpointing a block's activations exist only while it is recomputed for its backward
# (one block's worth), and each block keeps its input: measured (d 128-512, 2-8 blocks) at 0.35 of a block's
# activations per block, more than the input alone (the allocator does not reuse every recomputed buffer).
KEPT_PER_CHECKPOINTED_BLOCK = 0.35
OVERHEAD = 50 * 10**6  # what the framework itself holds while training (allocator caches, workspaces)


@dataclass(frozen=True)
class Layout:
    """How a run spreads its memory: over how many processes, sharded or not, in which precision."""

    processes: int = 1
    sharded: bool = False
    precision: Precision = Precision.fp32
    activation_checkpointing: bool = False


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    weights: int  # bytes, per process
    gradients: int
    optimizer: int
    ema: int  # this process's share of the EMA, and the evaluation copy it is gathered into
    activations: int  # one micro-batch, with the framework's own overhead
    gathered: int = 0  # sharded: the whole network as built before sharding, and the blocks being gathered
    trained: int = 0  # parameters that get gradients and optimizer state (all, or LoRA's adapters)

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.ema + self.activations + self.gathered


def block_parameter_count(config: ModelConfig) -> int:
    d = config.hidden_size
    return 3 * d * d + d * d + (d * 4 * d + 4 * d) + (4 * d * d + d) + 4 * d  # qkv, out, mlp, two norms


def parameter_count(config: ModelConfig) -> int:
    d, v = config.hidden_size, config.vocab_size + 1
    return v * d + config.n_blocks * block_parameter_count(config) + 2 * d + (d * v + v)  # embedding, blocks, head


def activation_memory(config: ModelConfig, micro_batch: int, layout: Layout, masked_fraction: float = 0.5) -> int:
    """Bytes autograd holds for one micro-batch at the peak of a step (without the framework's overhead)."""
    tokens = micro_batch * config.length
    one_block = ACTIVATION_BYTES[layout.precision] * config.hidden_size * tokens
    if layout.activation_checkpointing:  # every block's input, and one block recomputed in its backward
        trunk = int((1 + KEPT_PER_CHECKPOINTED_BLOCK * config.n_blocks) * one_block)
    else:
        trunk = config.n_blocks * one_block
    if layout.precision != Precision.fp32 and not layout.activation_checkpointing:
        trunk += config.n_blocks * block_parameter_count(config) * 2  # autocast's bf16 weight copies, kept for backward
    embeddings = 2 * config.hidden_size * tokens * FLOAT32  # the embedding output and the final norm's input
    scored = min(HEAD_CHUNK, int(masked_fraction * tokens) + 1)
    head = 3 * scored * config.vocab_size * FLOAT32  # logits, their softmax and gradient, one chunk at a time
    return trunk + embeddings + head


def training_memory(
    config: ModelConfig, micro_batch: int, layout: Layout = Layout(), trained: int | None = None
) -> MemoryEstimate:
    """Bytes per process to train `config` on micro-batches of `micro_batch` sequences.

    `trained` parameters (LoRA's adapters, beside the frozen network) get gradients, AdamW's moments and an
    EMA; None: every parameter trains. The activations are the same: the backward still runs through every
    block.
    """
    count = parameter_count(config) + (trained or 0)
    trained = count if trained is None else trained
    share = layout.processes if layout.sharded else 1
    sharded = -(-count * FLOAT32 // share)  # float32, this process's share
    sharded_trained = -(-trained * FLOAT32 // share)
    gathered = 0
    if layout.sharded:  # every process builds the whole network, then keeps its shards; the root's weights
        # (embedding, head) and two blocks are gathered at a time, with their gradients before reduce-scatter
        root = count - config.n_blocks * block_parameter_count(config)
        gathered = count * FLOAT32 + 2 * (root + 2 * block_parameter_count(config)) * FLOAT32
    buckets = trained * FLOAT32 if layout.processes > 1 and not layout.sharded else 0  # DDP's gradient buckets
    return MemoryEstimate(
        parameters=count,
        weights=sharded,
        gradients=sharded_trained + buckets,
        optimizer=2 * sharded_trained,
        ema=sharded_trained + count * FLOAT32,
        activations=activation_memory(config, micro_batch, layout) + OVERHEAD,
        gathered=gathered,
        trained=trained,
    )


def gigabytes(count: int) -> str:
    return f"{count / 1e9:.2f} GB"
