"""The RADD network: tokens in, log-probabilities over the real vocabulary out.

A bidirectional transformer with rotary positions and no time input (docs/model-files.md lists its
weights). Parameter names, shapes, order and initialisation follow the published checkpoints so that
they load with strict key matching. Norms and the final log-softmax always run in float32; the rest
follows the caller's autocast. Reading and writing model folders is pretrained.py's job.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from radd_cli.core.kv_cache import KVMode, KVStore, block_hidden, full_hidden
from radd_cli.core.scoring import SelectiveScorer
from radd_cli.errors import ConfigError, Problem, setting
from radd_cli.validation import Choice, field_problems, limits

HEAD_CHUNK = 4096  # positions per chunk of the output projection when scoring targets


class Attention(Choice):
    """How attention is computed: PyTorch's SDPA (flash and cuDNN kernels on GPUs) or the flash-attn package."""

    sdpa = "sdpa"
    flash = "flash"


@dataclass(frozen=True, kw_only=True)
class ModelShape:
    """The network's hyperparameters that do not depend on the tokenizer (a recipe's `model` section)."""

    length: int = field(default=1024, metadata=limits(low=1))
    hidden_size: int = field(default=768, metadata=limits(low=1))
    n_heads: int = field(default=12, metadata=limits(low=1))
    n_blocks: int = field(default=12, metadata=limits(low=1))
    dropout: float = field(default=0.1, metadata=limits(low=0.0, high=0.99))
    attention: Attention = Attention.sdpa  # how this process computes attention, not part of the weights

    def __post_init__(self) -> None:
        problems = field_problems(self)
        if not any(p.field in ("hidden_size", "n_heads") for p in problems) and (
            self.hidden_size % self.n_heads or (self.hidden_size // self.n_heads) % 2
        ):
            problems.append(
                Problem(
                    "hidden_size",
                    f"{self.hidden_size} must be a multiple of {setting('n_heads')} ({self.n_heads}) with an even "
                    "quotient (rotary embeddings)",
                )
            )
        if problems:
            raise ConfigError(problems)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.n_heads


@dataclass(frozen=True, kw_only=True)
class ModelConfig(ModelShape):
    """Shape of a RADD network. `vocab_size` counts real tokens; the mask token is id `vocab_size`."""

    vocab_size: int = field(metadata=limits(low=1))

    @classmethod
    def of(cls, shape: ModelShape, vocab_size: int) -> ModelConfig:
        return cls(vocab_size=vocab_size, **shape_values(shape))


def shape_values(shape: ModelShape) -> dict:
    """The ModelShape fields of `shape` (a ModelShape or a ModelConfig) as keyword arguments."""
    return {f.name: getattr(shape, f.name) for f in fields(ModelShape)}


class LayerNorm(nn.Module):
    """Layer norm in float32 without affine, then × weight + bias (both initialised to ones)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = F.layer_norm(x.float(), x.shape[-1:])
        return x * self.weight + self.bias


class Embedding(nn.Module):
    """Token lookup with a (V + 1, d) table; the extra row is the mask token."""

    def __init__(self, num_tokens: int, dim: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(num_tokens, dim))
        nn.init.kaiming_uniform_(self.embedding, a=math.sqrt(5))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # F.embedding, not self.embedding[tokens]: indexing's backward adds the rows of repeated tokens (the
        # mask token above all) with atomic adds over threads on the CPU, so two identical runs would differ
        return F.embedding(tokens, self.embedding)


class Rotary(nn.Module):
    """Rotary position angles; `inv_freq` is a (persistent) buffer of the published state dict."""

    def __init__(self, head_dim: int, base: float = 10_000.0):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim))

    def forward(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin (L, hd) of positions 0 … L − 1."""
        return self.at(torch.arange(length, device=device))

    def at(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin (..., hd) of the given positions (...)."""
        freqs = positions.to(self.inv_freq.dtype)[..., None] * self.inv_freq  # (..., hd/2)
        angles = torch.cat((freqs, freqs), dim=-1)  # (..., hd)
        return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, L, hd) queries or keys by the (L, hd) — or per row (B, 1, L, hd) — angles, in x's dtype."""
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)


def _cuda_attention_backends() -> list:
    from torch.nn.attention import SDPBackend

    # cuDNN attention measured 1.7x faster than flash on an H100 (0.127 vs 0.212 ms for 16 × 12 heads ×
    # 1024 × 64 in bf16); fall back in this order.
    return [
        SDPBackend.CUDNN_ATTENTION,
        SDPBackend.FLASH_ATTENTION,
        SDPBackend.EFFICIENT_ATTENTION,
        SDPBackend.MATH,
    ]


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: Attention, visible: torch.Tensor | None = None
) -> torch.Tensor:
    """Non-causal attention of (B, H, n, hd) queries over (B, H, L, hd) keys and values, returning (B, H, n, hd).

    `visible` (B, 1, 1, L) bool, when given, hides the keys where it is false (SDPA then, whatever the backend).
    """
    if backend == Attention.flash and visible is None:
        # flash-attn wants (B, L, H, hd)
        return _flash_attn_func()(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    if q.is_cuda:
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel(_cuda_attention_backends(), set_priority=True):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=visible)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=visible)


class Block(nn.Module):
    """Pre-norm transformer block; attribute names match the published `blocks.{i}` keys."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        dim = config.hidden_size
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        self.backend = config.attention
        self.norm1 = LayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.norm2 = LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x, cos, sin)
        return self.mix(x, self.attend(q, k, v))

    def attend(self, q, k, v, visible: torch.Tensor | None = None) -> torch.Tensor:
        return attention(q, k, v, self.backend, visible)

    def qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Queries, keys and values (B, H, n, hd) of the (B, n, d) input; queries and keys rotated."""
        batch, length, dim = x.shape
        qkv = self.attn_qkv(self.norm1(x)).view(batch, length, 3, self.n_heads, dim // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(dim=0)  # each (B, H, n, hd)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

    def mix(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The rest of the block after attention: x (B, n, d) and the attended (B, H, n, hd) → (B, n, d)."""
        batch, length, dim = x.shape
        attended = attended.transpose(1, 2).reshape(batch, length, dim)
        x = x + F.dropout(self.attn_out(attended), p=self.dropout, training=self.training)
        return x + F.dropout(self.mlp(self.norm2(x)), p=self.dropout, training=self.training)


class OutputLayer(nn.Module):
    """Final norm and the projection to V + 1 logits, initialised to zero (uniform predictions)."""

    def __init__(self, dim: int, num_tokens: int):
        super().__init__()
        self.norm_final = LayerNorm(dim)
        self.linear = nn.Linear(dim, num_tokens)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)


def projection_weight(linear: nn.Module) -> torch.Tensor:
    """The output projection's (V + 1, d) weight; with adapters (peft's LoRA layer, training.lora), W + the active
    adapters' scale · B A: one differentiable product per call, not an adapter branch on every scored position
    (whose shapes change with every batch: on the CPU that grew the process by 270 MiB over 1,200 steps of
    `sort`). The adapters' dropout does not apply here."""
    if not hasattr(linear, "get_delta_weight") or linear.merged or linear.disable_adapters:
        return linear.weight
    active = [name for name in linear.active_adapters if name in linear.lora_A]
    return linear.weight + sum(linear.get_delta_weight(name) for name in active)


class RADD(SelectiveScorer):
    """c_θ(x_t): log p(x0^i = v | visible tokens of x_t) at every position i, for the V real tokens."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.attention == Attention.flash:
            _flash_attn_func()  # missing flash-attn fails here, not at the first call
        self.config = config
        self.vocab_size = config.vocab_size
        self.mask_id = config.vocab_size
        self.vocab_embed = Embedding(config.vocab_size + 1, config.hidden_size)
        self.rotary_emb = Rotary(config.head_dim)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_blocks))
        self.output_layer = OutputLayer(config.hidden_size, config.vocab_size + 1)
        self.chunk_size = HEAD_CHUNK
        # Positions per call of the output layer in `log_probs_at` outside training (None: all at once); a fixed
        # tile makes every call the same shape, as batch-invariant sampling needs (sampling/invariance.py).
        self.head_tile: int | None = None
        # Training keeps only each block's input and recomputes the block in the backward pass (less memory,
        # about a third more compute); the results are the same. Set by the trainer (training.activation_checkpointing).
        self.activation_checkpointing = False

    def trunk(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, L, d) after the last block, before the final norm."""
        x = self.vocab_embed(tokens)  # (B, L, d)
        cos, sin = self.rotary_emb(tokens.shape[1], tokens.device)
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, cos, sin, use_reentrant=False) if recompute else block(x, cos, sin)
        return x

    def trunk_keeping_kv(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`trunk`, and every layer's keys and values (layers, B, L, H, hd) (core/kv_cache.py)."""
        return full_hidden(self, tokens)

    def block_trunk(self, tokens, positions, keys, values, prefix: bool) -> torch.Tensor:
        """Hidden states (B, n, d) of a block against stored keys and values (core/kv_cache.block_hidden)."""
        return block_hidden(self, tokens, positions, keys, values, prefix)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits (..., V) of the real tokens; the mask column of the projection is never computed."""
        linear = self.output_layer.linear
        normed = self.output_layer.norm_final(hidden)
        weight = projection_weight(linear)
        return F.linear(normed, weight[: self.vocab_size], linear.bias[: self.vocab_size])

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 log-probs (..., V) over the real tokens from hidden states (..., d)."""
        return self.logits(hidden).float().log_softmax(dim=-1)

    def forward(
        self, tokens: torch.Tensor, where: torch.Tensor | None = None, targets: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The three ways to call the network, picked by the arguments (see the methods below).

        Everything goes through forward so that DDP, FSDP and torch.compile wrappers see the call.
        """
        if where is None:
            return self.log_probs(tokens)
        if targets is None:
            return self.log_probs_at(tokens, where)
        return self.target_log_probs(tokens, where, targets)

    def log_probs(self, tokens: torch.Tensor) -> torch.Tensor:
        """Int64 tokens (B, L), mask = V → float32 log-probs (B, L, V) at every position."""
        return self.head(self.trunk(tokens))

    def log_probs_at(self, tokens: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        """Log-probs (N, V) at the N true positions of the bool (B, L) `where`, row-major.

        Only those positions go through the output projection, in float32 outside training: they feed
        the float64 draws of the samplers and the NLL sums of evaluation.
        """
        return self._project(self._selected_hidden(tokens, where))

    def _project(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output layer over (N, d) hidden states (on tiles of `head_tile` positions when set): (N, V)."""
        with self._head_precision(hidden):
            if self.head_tile is None or self.training:
                return self.head(hidden)
            return self._head_in_tiles(hidden, self.head_tile)

    def _head_in_tiles(self, hidden: torch.Tensor, tile: int) -> torch.Tensor:
        """`head` over (N, d) hidden states, `tile` positions per call (zeros pad the last one): (N, V)."""
        count = len(hidden)
        missing = -count % tile
        if missing:
            hidden = torch.cat([hidden, hidden.new_zeros(missing, hidden.shape[1])])  # (N + missing, d)
        return torch.cat([self.head(part) for part in hidden.split(tile)])[:count]

    def target_log_probs(self, tokens: torch.Tensor, where: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(targets) (N,) at the true positions of `where`, for `targets` (N,) in row-major order.

        Computed in chunks of positions whose (chunk, V) logits are recomputed in the backward pass
        instead of stored, so the (B, L, V) output never exists.
        """
        hidden = self._selected_hidden(tokens, where)
        with self._head_precision(hidden):
            return self._target_log_probs(hidden, targets)

    def log_probs_keeping_kv(self, tokens: torch.Tensor, where: torch.Tensor) -> tuple[torch.Tensor, KVStore]:
        """`log_probs_at` (N, V), and every layer's keys and values for block calls (core/kv_cache.py)."""
        hidden, keys, values = self.trunk_keeping_kv(tokens)
        return self._project(hidden[where].float()), KVStore(keys, values)

    def block_log_probs_at(
        self, tokens: torch.Tensor, positions: torch.Tensor, store: KVStore, mode: KVMode, where: torch.Tensor
    ) -> torch.Tensor:
        """Log-probs (N, V) at the true entries of `where` (B, n) among a block's `tokens` (B, n) at `positions`
        (B, n), computed against the keys and values of `store` (core/kv_cache.py)."""
        hidden = self.block_trunk(tokens, positions, store.keys, store.values, mode == KVMode.prefix)[where].float()
        return self._project(hidden)

    def _selected_hidden(self, tokens: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        hidden = self.trunk(tokens)[where]  # (N, d)
        return hidden if self.training else hidden.float()

    def _head_precision(self, hidden: torch.Tensor):
        """Training follows the caller's autocast; sampling and evaluation project in float32."""
        return contextlib.nullcontext() if self.training else torch.autocast(hidden.device.type, enabled=False)

    def _target_log_probs(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if len(hidden) <= self.chunk_size:  # one chunk: nothing to gain from recomputation
            return self._chunk_target_log_probs(hidden, targets)
        pieces = [
            checkpoint(self._chunk_target_log_probs, h, t, use_reentrant=False)
            if torch.is_grad_enabled()
            else self._chunk_target_log_probs(h, t)
            for h, t in zip(hidden.split(self.chunk_size), targets.split(self.chunk_size))
        ]
        return torch.cat(pieces)

    def _chunk_target_log_probs(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return -F.cross_entropy(self.logits(hidden).float(), targets, reduction="none")  # fused log-softmax + pick


def _flash_attn_func():
    """flash-attn's kernel. Imported inside `try` so that transformers, which reads the imports of the
    modeling_radd.py written from this file (radd_cli/io/transformers.py), does not require the package."""
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        raise ConfigError(
            "model.attention = 'flash' needs flash-attn, which is not installed: "
            "pip install 'radd[flash]' on a CUDA machine, or use attention = 'sdpa'"
        ) from None
    return flash_attn_func
