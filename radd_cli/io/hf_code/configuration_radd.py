"""The configuration of a RADD masked-diffusion language model for Hugging Face transformers.

Written into a model folder by `radd convert SRC DST --to transformers` (radd's docs/model-files.md); not
imported by radd itself. `vocab_size` counts every token id the model reads, the mask token included:
the mask is the last id, `mask_token_id = vocab_size - 1`, and the logits have `vocab_size` columns.
"""

from transformers import PretrainedConfig


class RaddConfig(PretrainedConfig):
    model_type = "radd"

    def __init__(
        self,
        vocab_size: int = 50258,
        mask_token_id: int | None = None,
        length: int = 1024,
        hidden_size: int = 768,
        n_heads: int = 12,
        n_blocks: int = 12,
        dropout: float = 0.1,
        attention: str = "sdpa",
        noise: dict | None = None,
        **kwargs,
    ):
        self.vocab_size = vocab_size  # token ids, the mask included (the width of the logits)
        self.mask_token_id = vocab_size - 1 if mask_token_id is None else mask_token_id
        if self.mask_token_id != vocab_size - 1:
            raise ValueError(f"mask_token_id must be the last id, vocab_size - 1 = {vocab_size - 1}")
        self.length = length  # the block length the model was trained on (positions are rotary)
        self.hidden_size = hidden_size
        self.n_heads = n_heads
        self.n_blocks = n_blocks
        self.dropout = dropout
        self.attention = attention  # "sdpa" (PyTorch) or "flash" (the flash-attn package)
        self.noise = noise or {"type": "loglinear"}  # radd's noise schedule, for samplers
        super().__init__(**kwargs)
