"""`radd sample --model M`: draw text from any RADD checkpoint, or responses to prompts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from radd_cli.commands import prompt_io, sampling_io
from radd_cli.sampling import SamplingConfig


@sampling_io.generation_command
def sample(
    config: SamplingConfig,
    draw: sampling_io.DrawOptions,
    length: Annotated[
        Optional[int],
        typer.Option(
            "--length",
            min=1,
            help="Tokens per sample, a prompt's included (default: the model's; longer ones go window by window).",
        ),
    ] = None,
    prompt: Annotated[
        Optional[list[str]],
        typer.Option("--prompt", help="Answer this prompt: it opens every sample, the response follows (repeatable)."),
    ] = None,
    prompts: Annotated[
        Optional[Path], typer.Option("--prompts", help='Answer each prompt of a .jsonl ({"prompt": ...}) or .txt file.')
    ] = None,
    chat: Annotated[
        bool, typer.Option("--chat", help="Render each prompt as a user message with the tokenizer's chat template.")
    ] = False,
) -> None:
    """Sample text, or --num-samples responses to each prompt (trimmed at EOS). The same seed gives the same
    samples whatever --batch-size."""
    texts = prompt_io.read_prompts(prompt, prompts)
    loaded = draw.load()
    length = length if length is not None else loaded.model.config.length
    if texts:
        return prompt_io.answer(loaded, config, draw, texts, length, chat)
    request = draw.request(length)
    result, seconds = sampling_io.draw(loaded, config, request)
    sampling_io.report(loaded, config, request, result, seconds, draw.model, draw.output, free_positions=length)
