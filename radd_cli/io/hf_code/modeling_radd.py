"""A RADD masked-diffusion language model for Hugging Face transformers.

Written into a model folder by `radd convert SRC DST --to transformers` (radd's docs/model-files.md); not
imported by radd itself. The network in the middle of this file is radd's own source, copied verbatim when
the folder was written. Load it with

    model = AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True)   # or AutoModel
    logits = model(input_ids).logits   # (B, L, vocab_size): the mask token's column is -inf

Masked positions hold `config.mask_token_id`; `logits.log_softmax(-1)` at a masked position is the model's
distribution of the token there given every unmasked token. The model takes no time input and no
attention mask: it attends to every position (pad with EOS, as radd does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from .configuration_radd import RaddConfig

# <radd network>


def network_config(config: RaddConfig) -> ModelConfig:  # noqa: F821 (ModelConfig, RADD: radd's network above)
    """radd's ModelConfig of a RaddConfig: radd counts the real tokens, the mask is the id after them."""
    return ModelConfig(  # noqa: F821
        vocab_size=config.vocab_size - 1,
        length=config.length,
        hidden_size=config.hidden_size,
        n_heads=config.n_heads,
        n_blocks=config.n_blocks,
        dropout=config.dropout,
        attention=config.attention,
    )


class RaddPreTrainedModel(PreTrainedModel):
    config_class = RaddConfig
    base_model_prefix = "radd"
    _no_split_modules = ["Block"]

    def _init_weights(self, module: torch.nn.Module) -> None:
        """Nothing to do: radd's modules initialise themselves as the published models do."""


class RaddForMaskedLM(RaddPreTrainedModel):
    """Logits over every token id, the mask included, whose column is -inf (the model never predicts it)."""

    def __init__(self, config: RaddConfig):
        super().__init__(config)
        self.radd = RADD(network_config(config))  # noqa: F821
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> MaskedLMOutput:
        """input_ids (B, L), masked positions = mask_token_id → logits (B, L, vocab_size) in float32;
        with `labels` (B, L) (-100 where nothing is scored), the mean cross-entropy as `loss`."""
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("RADD attends to every position: pad with the EOS token instead of an attention mask")
        real = self.radd.logits(self.radd.trunk(input_ids)).float()  # (B, L, V), V = vocab_size - 1
        never = real.new_full((*real.shape[:-1], 1), float("-inf"))  # (B, L, 1): the mask token
        logits = torch.cat((real, never), dim=-1)  # (B, L, V + 1)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return MaskedLMOutput(loss=loss, logits=logits)
