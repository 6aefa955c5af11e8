"""The straightforward diffusion sampler, as the published code does it: a reference, not fast."""

from __future__ import annotations

import torch
from torch import nn

from radd_cli.core.masking import uniform
from radd_cli.core.schedule import Schedule
from radd_cli.core.scoring import vocabulary
from radd_cli.sampling.engine import SampleResult, model_device, template_tokens
from radd_cli.sampling.nfe import move_probabilities
from radd_cli.sampling.strategy import Strategy, draw_categorical


def sample_all_positions(
    model: nn.Module,
    schedule: Schedule,
    *,
    num_samples: int,
    length: int,
    steps: int,
    method: str = "tweedie",
    strategy: Strategy = Strategy(),
    template: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> SampleResult:
    """At every step: call the network on the whole batch; at every masked position draw from the
    (V + 1)-way categorical "become v with probability r_k·p_v, stay masked with 1 − r_k".
    """
    vocab_size, mask_id = vocabulary(model)
    device = model_device(model)
    r = move_probabilities(schedule, steps, method).to(device)
    x = template_tokens(template, length, mask_id, vocab_size).to(device).repeat(num_samples, 1)
    with torch.inference_mode():
        for k in range(steps):
            masked = x == mask_id
            if not masked.any():
                continue
            probs = strategy.probabilities(model(x)[masked])  # (n, V)
            choices = torch.cat([probs * r[k], (1 - r[k]).expand(probs.shape[0], 1)], dim=-1)  # (n, V + 1)
            drawn = draw_categorical(choices, uniform(probs.shape[0], generator, x.device))
            x[masked] = torch.where(drawn < vocab_size, drawn, mask_id)
    return SampleResult(x.cpu(), torch.full((num_samples,), steps))
