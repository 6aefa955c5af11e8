"""Generation from a prompt (docs/fine-tuning.md): the prompt's tokens open the sequence as fixed
positions, the response is drawn at the free positions after it, with any sampler, and read up to its
first EOS (the samplers' `stop_at_eos`) and, when asked, up to the first stop string. `radd sample --prompt`, `radd eval --task`
and the lm-eval adapter all call `respond`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
from torch import nn

from radd_cli.core.schedule import Schedule
from radd_cli.errors import ConfigError
from radd_cli.io.tokenizer import Tokenizer
from radd_cli.sampling import SampleResult, SamplingConfig, check_results_fit, generate, model_length
from radd_cli.sampling.templates import check_text


@dataclass(frozen=True)
class Response:
    prompt: str
    text: str  # the response, trimmed
    prompt_ids: list[int]
    token_ids: list[int]  # the response's tokens, trimmed
    finish_reason: str  # "stop": it ended (EOS or a stop string); "length": it filled every free position
    seed: int
    nfe: int


def encode_prompt(prompt: str, tokenizer: Tokenizer, chat: bool = False) -> list[int]:
    """The prompt's tokens; with `chat`, the prompt is a user message rendered by the chat template."""
    check_text(prompt, "prompt")
    if not chat:
        return tokenizer.encode(prompt)
    if not getattr(tokenizer.hf, "chat_template", None):
        raise ConfigError(f"the tokenizer {tokenizer.name} has no chat template; leave it out", field="chat")
    text = tokenizer.hf.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer.encode(text)


def prompt_template(prompt_ids: Sequence[int], length: int, mask_id: int, model_length: int | None = None) -> torch.Tensor:
    """(length,) long: the prompt's tokens, then mask_id at every free position after them.

    A prompt that leaves no room is refused with the fix that works: a longer `length` only while the
    prompt fits the model (`model_length`, when known), since the model never sees more than that at once.
    """
    if len(prompt_ids) >= length:
        fits = model_length is None or len(prompt_ids) < model_length
        fix = (
            f"raise length to at least {len(prompt_ids) + 1}" + (f" (the model holds {model_length})" if model_length else "")
            if fits
            else f"shorten it to at most {model_length - 1} tokens: the model holds {model_length}"
        )
        raise ConfigError(
            f"the prompt is {len(prompt_ids)} tokens, leaving no room for a response in {length} positions; {fix}"
        )
    template = torch.full((length,), mask_id, dtype=torch.long)
    template[: len(prompt_ids)] = torch.as_tensor(list(prompt_ids), dtype=torch.long)
    return template


def trim_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """The text before the earliest of the stop strings, and whether one occurred."""
    cuts = [text.find(stop) for stop in stops if stop and stop in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def prompt_templates(
    prompt_ids: Sequence[Sequence[int]], length: int, mask_id: int, num_samples: int = 1, model_length: int | None = None
) -> torch.Tensor:
    """(P · num_samples, length): each prompt's template, repeated for its samples (prompt by prompt)."""
    check_results_fit(len(prompt_ids) * num_samples, length)  # before allocating them
    templates = torch.stack([prompt_template(ids, length, mask_id, model_length) for ids in prompt_ids])  # (P, L)
    return templates.repeat_interleave(num_samples, dim=0)


def read_responses(
    result: SampleResult,
    prompts: Sequence[str],
    prompt_ids: Sequence[Sequence[int]],
    tokenizer: Tokenizer,
    seeds: Sequence[int],
    stop: Sequence[str] = (),
) -> list[Response]:
    """The responses in sequences drawn from `prompt_templates(prompt_ids, ...)` with `stop_at_eos` (each
    kept up to the first end-of-text token it generated), cut at the first stop string."""
    per_prompt = len(result.tokens) // len(prompt_ids)
    responses = []
    for i, sequence in enumerate(result.sequences()):
        ids = list(prompt_ids[i // per_prompt])
        response = sequence[len(ids) :]
        text, stopped = trim_at_stop(tokenizer.decode(response), stop)
        if stopped:  # keep the tokens that make up the kept text
            response = tokenizer.encode(text) if text else []
        finish = "stop" if stopped or len(sequence) < result.tokens.shape[1] else "length"
        nfe = int(result.nfe_per_sample[i])
        responses.append(Response(prompts[i // per_prompt], text, ids, response, finish, seeds[i], nfe))
    return responses


def respond(
    model: nn.Module,
    schedule: Schedule,
    tokenizer: Tokenizer,
    config: SamplingConfig,
    prompts: Sequence[str],
    *,
    length: int,
    num_samples: int = 1,
    seed: int = 0,
    batch_size: int = 16,
    chat: bool = False,
    stop: Sequence[str] = (),
    prompt_ids: Sequence[Sequence[int]] | None = None,
    device: torch.device | str | None = None,
    progress: Callable[[float, int], None] | None = None,
    precision: str = "auto",
) -> list[Response]:
    """`num_samples` responses to each prompt, prompt by prompt; sample i overall uses seed + i.

    `prompt_ids` gives the prompts' tokens when they are already tokenized (then `prompts` is their text).
    `precision` is `generate`'s.
    """
    if prompt_ids is None:
        prompt_ids = [encode_prompt(prompt, tokenizer, chat) for prompt in prompts]
    templates = prompt_templates(prompt_ids, length, tokenizer.mask_id, num_samples, model_length(model))
    seeds = range(seed, seed + len(templates))
    result = generate(
        model,
        schedule,
        replace(config, stop_at_eos=True),
        num_samples=len(templates),
        length=length,
        template=templates,
        seeds=seeds,
        batch_size=batch_size,
        device=device,
        eos_id=tokenizer.eos_id,
        progress=progress,
        precision=precision,
    )
    return read_responses(result, prompts, prompt_ids, tokenizer, seeds, stop)
